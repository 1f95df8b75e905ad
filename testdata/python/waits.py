"""A thread that waits and one that works, for ember's wall-clock tests: sleeper() sleeps in
time.sleep, spinner() burns CPU, each for SECONDS of wall time.

    python3 waits.py [SECONDS]
"""
import sys
import threading
import time


def sleeper(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)


def spinner(seconds):
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    t = threading.Thread(target=sleeper, args=(seconds,), name="sleeper")
    t.start()
    spinner(seconds)
    t.join()


if __name__ == "__main__":
    main()
