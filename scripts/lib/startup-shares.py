"""Start-up time by its own measure and by a profiler's samples (called by scripts/python.sh).

    startup-shares.py TRUTH FOLDED WHO

TRUTH is what testdata/python/imports.py printed (the share of the imports' CPU time spent in
the modules' bodies and in their classes' bodies), FOLDED a profiler's collapsed stacks of the
same run (ember's folded output, or py-spy's `--format raw`). Prints, for the samples of the
imports (under main, or cut before reaching it): how many there are, the share whose stack
holds a module's body (a class body runs inside its module's) and a class's body, against the
program's measure, and how many were cut (a Python frame that could not be named).
"""
import sys

from profile_files import read_folded, read_truth

CUT = "[python: unreadable frames]"


def is_main(frame):
    return frame.startswith("main (") and "imports.py" in frame


def is_module(frame):
    return frame.startswith("<module> (") and "startup_" in frame


def is_class(frame):
    return frame.startswith("Spin") and "startup_" in frame


def main():
    truth_path, folded, who = sys.argv[1:4]
    truth = read_truth(truth_path)
    imports = [(f, n) for f, n in read_folded(folded) if any(is_main(x) or x == CUT for x in f)]
    total = sum(n for _, n in imports) or 1

    def share(test):
        return 100.0 * sum(n for f, n in imports if any(test(x) for x in f)) / total

    module, klass = truth["module"] + truth["class"], truth["class"]
    cut = sum(n for f, n in imports if CUT in f)
    print(f"  {who:>8}: {total} samples of the imports; in a module's body "
          f"{share(is_module):5.1f} % (measured {module:.1f}), in a class's body "
          f"{share(is_class):5.1f} % (measured {klass:.1f}); cut {cut} "
          f"({100.0 * cut / total:.1f} %)")


if __name__ == "__main__":
    main()
