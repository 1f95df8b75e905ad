"""Python time split between the kernel and the interpreter, for ember's tests: read_zeros()
reads /dev/zero (its time is mostly the kernel's), count() adds numbers in Python. Each phase's
own CPU time is measured (time.thread_time), and so is the time inside the reads themselves:
the kernel's reading of /dev/zero, with the little the C call costs around it.

    python3 syscalls.py [SECONDS]

Prints "truth NAME PERCENT" for read_zeros and count (of the thread's CPU time in them) and
"truth reading PERCENT" (of the same time, the part inside the reads). The thread's own
user/system split (getrusage) is not used: the kernel splits it by which side its clock
ticks land on, and on a busy virtual machine that moved the system part by ten points.
"""
import os
import sys
import time


def read_zeros(fd):
    """Reads /dev/zero; returns the CPU time spent inside the reads."""
    inside = 0.0
    for _ in range(150):
        t0 = time.thread_time()
        os.read(fd, 1 << 18)
        inside += time.thread_time() - t0
    return inside


def count():
    total = 0
    for i in range(60000):
        total += i
    return total


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    fd = os.open("/dev/zero", os.O_RDONLY)
    spent = {"read_zeros": 0.0, "count": 0.0}
    reading = 0.0
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        t0 = time.thread_time()
        reading += read_zeros(fd)
        t1 = time.thread_time()
        count()
        t2 = time.thread_time()
        spent["read_zeros"] += t1 - t0
        spent["count"] += t2 - t1
    whole = spent["read_zeros"] + spent["count"]
    for name, t in spent.items():
        print(f"truth {name} {100 * t / whole:.2f}")
    print(f"truth reading {100 * reading / whole:.2f}")


main()
