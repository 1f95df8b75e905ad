"""A Python service's day in CPU time, for ember's tests: handler() parses JSON payloads and
renders them, fib() recurses, and each phase's own CPU time (time.thread_time) is measured and
printed as the truth the samples are checked against.

    python3 work.py [SECONDS] [--threads] [--rounds N] [--timeline FILE]

Prints "truth NAME PERCENT" for handler, parse_payloads, render and fib (of the CPU time of the
thread(s) doing the work), then "cpu_seconds X", "rounds N" (rounds of handler and fib done)
and "work_seconds X", the wall time the work took. With --rounds N it does exactly N rounds
(per thread) instead of running for SECONDS of its own CPU time: the wall time then grows with
all a profiler costs the program, in its threads (interrupts, work in the kernel at each
sample) as well as outside them (stops). With --timeline FILE (one thread only) it writes
each phase's start and end, a round a line: handler's start, parse's start, render's start,
render's end, fib's start, fib's end, in the thread's CPU time and then the same six in
CLOCK_MONOTONIC (scripts/lib/python-shares.py checks samples against it).
"""
import json
import sys
import threading
import time

PAYLOAD = json.dumps({"items": [{"id": i, "name": f"item-{i}", "tags": ["a", "b"] * 3}
                                for i in range(40)]})


# With --timeline: the monotonic time at each phase boundary, in order.
WALL = None


def now():
    """The thread's CPU time; with --timeline, the monotonic time is kept too."""
    t = time.thread_time()
    if WALL is not None:
        WALL.append(time.monotonic())
    return t


def parse_payloads(n):
    for _ in range(n):
        json.loads(PAYLOAD)


def render(n):
    out = []
    for i in range(n * 60):
        out.append(f"<li>{i}</li>")
    page = "".join(out)
    # Freed here, inside render: a local freed on return is freed after CPython (3.11.1 and
    # later) has unlinked the frame, which any reader of the frame chain then puts in the
    # caller, while the truth measured around the call counts it to render.
    del out
    return page


def handler(spent):
    t0 = now()
    parse_payloads(20)
    t1 = now()
    render(20)
    t2 = now()
    spent["parse_payloads"] += t1 - t0
    spent["render"] += t2 - t1
    return t0, t1, t2


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def work(seconds, spent, rounds=None, timeline=None):
    start = time.thread_time()
    done = 0
    while (done < rounds) if rounds is not None else (time.thread_time() - start < seconds):
        done += 1
        t0 = now()
        inner = handler(spent)
        t1 = now()
        fib(18)
        t2 = now()
        spent["handler"] += t1 - t0
        spent["fib"] += t2 - t1
        if timeline is not None:
            timeline.append((t0, *inner, t1, t2))
    spent["rounds"] = done


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    threads = "--threads" in sys.argv
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else None
    began = time.monotonic()
    spents = [dict.fromkeys(["handler", "parse_payloads", "render", "fib"], 0.0)
              for _ in range(2 if threads else 1)]
    if threads:
        ts = [threading.Thread(target=work, args=(seconds, s, rounds), name=f"worker-{i}")
              for i, s in enumerate(spents)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    else:
        global WALL
        timeline = [] if "--timeline" in sys.argv else None
        WALL = [] if timeline is not None else None
        work(seconds, spents[0], rounds, timeline)
        if timeline is not None:
            with open(sys.argv[sys.argv.index("--timeline") + 1], "w") as f:
                for i, r in enumerate(timeline):
                    f.write(" ".join(f"{t:.9f}" for t in (*r, *WALL[6 * i:6 * i + 6])) + "\n")
    done = sum(s.pop("rounds") for s in spents)
    total = {k: sum(s[k] for s in spents) for k in spents[0]}
    whole = total["handler"] + total["fib"]
    for name, t in total.items():
        print(f"truth {name} {100 * t / whole:.2f}")
    print(f"cpu_seconds {whole:.3f}")
    print(f"rounds {done}")
    print(f"work_seconds {time.monotonic() - began:.3f}")


if __name__ == "__main__":
    main()
