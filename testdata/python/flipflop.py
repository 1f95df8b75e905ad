"""Two call paths taken in turn many times a millisecond, for ember's tests: path_a() goes two
calls deeper than path_b(), and each path's leaf is named after it. A sampler that pieced a
stack together from two moments would put one path's leaf under the other's frames.

    python3 flipflop.py [SECONDS]
"""
import sys
import time


def leaf_a(n):
    return sum(range(n))


def a2(n):
    return leaf_a(n)


def a1(n):
    return a2(n)


def path_a(n):
    return a1(n)


def leaf_b(n):
    return sum(range(n))


def path_b(n):
    return leaf_b(n)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        for _ in range(50):
            path_a(20)
            path_b(20)


if __name__ == "__main__":
    main()
