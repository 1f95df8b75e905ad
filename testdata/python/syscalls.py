"""Python time split between the kernel and the interpreter, for ember's tests: read_zeros()
reads /dev/zero (its time is mostly the kernel's), count() adds numbers in Python. Each phase's
own CPU time is measured (time.thread_time), and so is the thread's time in the kernel
(getrusage of the thread), printed as the truth the samples are checked against.

    python3 syscalls.py [SECONDS]

Prints "truth NAME PERCENT" for read_zeros and count (of the thread's CPU time in them) and
"truth kernel PERCENT" (of the same time, the part spent in the kernel).
"""
import os
import resource
import sys
import time


def read_zeros(fd):
    for _ in range(150):
        os.read(fd, 1 << 18)


def count():
    total = 0
    for i in range(60000):
        total += i
    return total


def thread_times():
    r = resource.getrusage(resource.RUSAGE_THREAD)
    return r.ru_utime, r.ru_stime


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    fd = os.open("/dev/zero", os.O_RDONLY)
    spent = {"read_zeros": 0.0, "count": 0.0}
    user0, sys0 = thread_times()
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        t0 = time.thread_time()
        read_zeros(fd)
        t1 = time.thread_time()
        count()
        t2 = time.thread_time()
        spent["read_zeros"] += t1 - t0
        spent["count"] += t2 - t1
    user1, sys1 = thread_times()
    whole = spent["read_zeros"] + spent["count"]
    for name, t in spent.items():
        print(f"truth {name} {100 * t / whole:.2f}")
    kernel = sys1 - sys0
    print(f"truth kernel {100 * kernel / ((user1 - user0) + kernel):.2f}")


main()
