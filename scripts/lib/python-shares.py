#!/usr/bin/env python3
"""Each function's share of testdata/python/work.py's CPU time: the program's own measure
against ember's samples. Given the run's timeline (work.py --timeline) and ember's timeline
of it (.fxprof.json), two more things:

Each sample against the phase the program was in at that moment by its own clock: the
function ember's sample shows (parse_payloads, render, handler itself, fib) against the phase
the timeline has at the sample's time. The Firefox file's times start at its first sample,
so the offset between the two clocks is the one that makes the most samples agree (searched
coarsely, then to the microsecond); printed: how many agree, and how far from the nearest
phase boundary the others lie. A sample's time is taken as its interrupt begins, and the
program's two clock reads at a boundary are microseconds from the call they bound, so a
sample's own interrupt (tens of microseconds with a Python walk) can fall between them.

Samplers replayed on the same timeline, which show how far any sampler's shares stray on
this run by chance alone:

- a perfect periodic sampler: one sample every PERIOD seconds of the thread's CPU time from
  a random start, each sample in exactly the phase that ran then (what ember's cpu-clock
  does, less anything ember could get wrong);
- a perfect random sampler: as many samples, each at a uniformly random moment.

Each replays 400 times (random starts); printed: the median worst difference of a replay,
and the share of replays whose worst difference is over 1 point.

    python-shares.py TRUTH FOLDED LABEL [TIMELINE PERIOD FXPROF]

TRUTH is work.py's output, FOLDED ember's folded stacks of the run, FXPROF its .fxprof.json.
"""
import bisect
import json
import random
import statistics
import sys

from profile_files import read_folded, read_truth

NAMES = ["handler", "parse_payloads", "render", "fib"]
REPLAYS = 400


def sampled_shares(folded):
    """Each function's share (%) of the samples in handler or fib, and their count."""
    hits, work = dict.fromkeys(NAMES, 0), 0
    for frames, n in read_folded(folded):
        names = {f.split(" (")[0] for f in frames if f.endswith("(work.py)")}
        if names & {"handler", "fib"}:
            work += n
            for k in NAMES:
                hits[k] += n * (k in names)
    return {k: 100 * hits[k] / max(work, 1) for k in NAMES}, work


def worst(shares, truth):
    return max(abs(shares[k] - truth[k]) for k in NAMES)


def timeline(path, wall):
    """The rounds of work.py's --timeline (each phase's start and end), in the thread's CPU
    time or (wall) CLOCK_MONOTONIC, and when each began."""
    columns = slice(6, 12) if wall else slice(0, 6)
    rounds = [tuple(map(float, line.split()[columns])) for line in open(path)]
    return rounds, [r[0] for r in rounds]


def round_at(rounds, starts, t):
    """The round running at t (the last one begun), or None before the first."""
    i = bisect.bisect_right(starts, t) - 1
    return rounds[i] if i >= 0 else None


def phase_in(r, t):
    """The innermost phase of round r running at t: parse_payloads or render (inside
    handler), handler itself, fib; None between them."""
    w0, p0, r0, r1, f0, f1 = r
    if p0 <= t < r0:
        return "parse_payloads"
    if r0 <= t < r1:
        return "render"
    if w0 <= t < f0:
        return "handler"
    if f0 <= t < f1:
        return "fib"
    return None


def replay(rounds, starts, moments):
    """The shares of samples taken at `moments`, each in the phase running then."""
    hits, work = dict.fromkeys(NAMES, 0), 0
    for t in moments:
        r = round_at(rounds, starts, t)
        phase = phase_in(r, t) if r else None
        if phase:
            work += 1
            hits[phase] += 1
            hits["handler"] += phase in ("parse_payloads", "render")
    return {k: 100 * hits[k] / max(work, 1) for k in NAMES}


def replays(timeline_file, period, truth):
    """Worst differences of the periodic and the random sampler, REPLAYS each."""
    rounds, starts = timeline(timeline_file, wall=False)
    begin, end = rounds[0][0], rounds[-1][-1]
    count = int((end - begin) / period)
    rng = random.Random(1)
    periodic, uniform = [], []
    for _ in range(REPLAYS):
        phase = begin + rng.random() * period
        periodic.append(worst(replay(rounds, starts, (phase + k * period for k in range(count))), truth))
        moments = sorted(rng.uniform(begin, end) for _ in range(count))
        uniform.append(worst(replay(rounds, starts, moments), truth))
    return periodic, uniform


def sample_phases(fxprof):
    """(time in s from the first sample, phase) of each sample of the Firefox file's thread
    that is in one of work.py's phases."""
    thread = json.load(open(fxprof))["threads"][0]
    strings, stacks = thread["stringArray"], thread["stackTable"]
    frames, funcs = thread["frameTable"], thread["funcTable"]

    def phase(stack):
        names = set()
        while stack is not None:
            names.add(strings[funcs["name"][frames["func"][stacks["frame"][stack]]]])
            stack = stacks["prefix"][stack]
        for name in ("parse_payloads", "render", "handler", "fib"):
            if name in names:
                return name
        return None

    out, at = [], 0.0
    for delta, stack in zip(thread["samples"]["timeDeltas"], thread["samples"]["stack"]):
        at += delta / 1000
        p = phase(stack)
        if p:
            out.append((at, p))
    return out


def phase_at(walls, starts, t):
    """The phase running at monotonic time t, and how far t is from the round's nearest
    boundary."""
    r = round_at(walls, starts, t)
    if r is None:
        return None, float("inf")
    return phase_in(r, t), min(abs(t - b) for b in r)


def check_samples(timeline_file, fxprof):
    """How many samples show the phase the program was in, and the others' distances from a
    phase boundary (µs)."""
    walls, starts = timeline(timeline_file, wall=True)
    samples = sample_phases(fxprof)

    def agreeing(offset, which):
        return sum(phase_at(walls, starts, t + offset)[0] == p for t, p in which)

    coarse = samples[:: max(1, len(samples) // 200)]
    _, offset = max((agreeing(starts[0] - k * 2e-4, coarse), starts[0] - k * 2e-4) for k in range(10000))
    _, offset = max((agreeing(offset + k * 1e-6, samples), offset + k * 1e-6) for k in range(-300, 300))
    edges = []
    for t, p in samples:
        running, edge = phase_at(walls, starts, t + offset)
        if running != p:
            edges.append(edge * 1e6)
    return len(samples) - len(edges), len(samples), edges


def summary(name, worsts):
    over = 100 * sum(w > 1 for w in worsts) / len(worsts)
    return f"{name}: median worst {statistics.median(worsts):.2f}, over 1 point in {over:.0f} %"


def main():
    truth_file, folded, label = sys.argv[1:4]
    truth = read_truth(truth_file)
    shares, work = sampled_shares(folded)
    row = "  ".join(f"{k} {truth[k]:.1f}/{shares[k]:.1f}" for k in NAMES)
    print(f"{label:50.50} {row}  (truth/ember %, {work} samples; worst {worst(shares, truth):.2f} points)")
    if len(sys.argv) > 6:
        agree, total, edges = check_samples(sys.argv[4], sys.argv[6])
        median = statistics.median(edges) if edges else 0
        print(f"{'':50.50} each sample against the program's own timeline: {agree} of {total} "
              f"show the phase it was in; the other {len(edges)} lie {median:.0f} µs (median), "
              f"at most {max(edges, default=0):.0f} µs from a phase boundary")
        periodic, uniform = replays(sys.argv[4], float(sys.argv[5]), truth)
        mine = worst(shares, truth)
        rank = 100 * sum(w < mine for w in periodic) / len(periodic)
        print(f"{'':50.50} replayed on this run's timeline: {summary('periodic', periodic)}; "
              f"{summary('random', uniform)}; ember's worst is above {rank:.0f} % of the periodic replays'")


if __name__ == "__main__":
    main()
