"""A program's start-up in CPU time, for ember's tests: it writes MODULES modules and imports
them one after the other; each module's body burns CPU time, half of it in its own body (and
a generator expression it runs) and half in the body of a class it defines. These code
objects are freed once the module has been imported: a profiler that names frames after the
fact finds nothing left to read.

    python3 imports.py [MODULES] [MILLISECONDS]

Each module's body and class body burn MILLISECONDS / 2 of the thread's CPU time each
(time.thread_time). Prints "truth module PERCENT" and "truth class PERCENT" (of the CPU time of
the imports), and "cpu_seconds X".
"""
import importlib
import os
import shutil
import sys
import tempfile
import time

BODY = """\
import time
_start = time.thread_time()
while time.thread_time() - _start < {half}:
    sum(i for i in range(50))
MODULE_SECONDS = time.thread_time() - _start


class Spin{i}:
    _start = time.thread_time()
    while time.thread_time() - _start < {half}:
        pass
    SECONDS = time.thread_time() - _start
"""


def main():
    modules = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    millis = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    where = tempfile.mkdtemp(prefix="ember-imports-")
    try:
        for i in range(modules):
            with open(os.path.join(where, f"startup_{i:03}.py"), "w") as f:
                f.write(BODY.format(half=millis / 2000.0, i=i))
        sys.path.insert(0, where)
        sys.dont_write_bytecode = True
        module_seconds = class_seconds = 0.0
        start = time.thread_time()
        for i in range(modules):
            m = importlib.import_module(f"startup_{i:03}")
            module_seconds += m.MODULE_SECONDS
            class_seconds += getattr(m, f"Spin{i}").SECONDS
        total = time.thread_time() - start
    finally:
        shutil.rmtree(where, ignore_errors=True)
    print(f"truth module {100.0 * module_seconds / total:.2f}")
    print(f"truth class {100.0 * class_seconds / total:.2f}")
    print(f"cpu_seconds {total:.4f}")


if __name__ == "__main__":
    main()
