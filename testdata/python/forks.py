"""Processes that run Python after the recording began, for ember's tests: the parent forks a
child (os.fork, as pre-fork servers do) and starts a multiprocessing worker; each burns CPU in
a function of its own name for SECONDS of its own CPU time.

    python3 forks.py [SECONDS]
"""
import multiprocessing
import os
import sys
import time


def burn(seconds):
    start = time.process_time()
    x = 0
    while time.process_time() - start < seconds:
        x += sum(i * i for i in range(200))
    return x


def forked_child(seconds):
    burn(seconds)


def pool_worker(seconds):
    burn(seconds)


def parent(seconds):
    burn(seconds)


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    time.sleep(0.2)
    pid = os.fork()
    if pid == 0:
        forked_child(seconds)
        os._exit(0)
    worker = multiprocessing.get_context("fork").Process(target=pool_worker, args=(seconds,))
    worker.start()
    parent(seconds)
    worker.join()
    os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
