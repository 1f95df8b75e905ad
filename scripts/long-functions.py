#!/usr/bin/env python3
"""The functions in src/ longer than a limit (80 lines by default), longest first; exit 1 if any.

    scripts/long-functions.py [LIMIT]

A function is counted from its `fn` line to its closing brace; unit tests are left out.
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 80
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def braces(line):
    """The change in brace depth on a line, outside strings, chars and comments."""
    line = re.sub(r"//.*", "", line)
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.count("{") - line.count("}")


def functions(path):
    lines = path.read_text().split("\n")
    end_of_code = next((i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines))
    i = 0
    while i < end_of_code:
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, j, opened = 0, i, False
        while j < len(lines):
            depth += braces(lines[j])
            opened = opened or "{" in lines[j]
            if ";" in lines[j] and not opened:  # a declaration without a body
                break
            if opened and depth <= 0:
                yield m.group(7), i + 1, j - i + 1
                break
            j += 1
        i += 1


found = []
for path in sorted(SRC.rglob("*.rs")):
    for name, line, length in functions(path):
        if length > LIMIT:
            found.append((length, f"{path.relative_to(SRC.parent)}:{line}", name))
for length, where, name in sorted(found, reverse=True):
    print(f"{length:5} {where} {name}")
print(f"{len(found)} functions over {LIMIT} lines")
sys.exit(1 if found else 0)
