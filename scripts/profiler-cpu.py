#!/usr/bin/env python3
"""Run a profiler that records a workload from testdata/ (report.h prints `end_ns` and
`cpu_seconds` when it ends) and split the profiler's own CPU time in two: while the workload
ran, and after it ended (symbolizing, writing). Used by scripts/compare.sh.

    profiler-cpu.py OUT -- PROFILER ARGS...   (the profiler's arguments name the workload)

The command's stdout (the workload's report) goes to OUT, its stderr to OUT.err. Prints
`during after` in seconds: `during` is the CPU time of the profiler's threads when the
workload's report appeared (looked for every 5 ms); `after` is the rest of what the profiler
used, that is everything the command used (its rusage, the reaped workload included) minus
`during` and the workload's own CPU time (its report's `cpu_seconds`).
"""
import os
import subprocess
import sys
import time


def threads_cpu(pid):
    """CPU time (s) of every thread of process `pid` now, from schedstat (ns)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    except OSError:
        return None
    return total / 1e9


def field(path, key):
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return parts[1]
    except OSError:
        pass
    return None


def main():
    out, sep, *cmd = sys.argv[1:]
    assert sep == "--", __doc__
    with open(out, "w") as stdout, open(out + ".err", "w") as stderr:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
        during = None
        while proc.poll() is None:
            if during is None and field(out, "end_ns") is not None:
                during = threads_cpu(proc.pid)
            time.sleep(0.005)
    # poll() reaped it: what this script's reaped children used is what the command used.
    usage = os.times()
    used = usage.children_user + usage.children_system
    target = float(field(out, "cpu_seconds") or 0)
    if during is None:
        during = used - target
    print(f"{during:.4f} {max(used - target - during, 0):.4f}")


if __name__ == "__main__":
    main()
