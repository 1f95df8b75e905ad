#!/usr/bin/env python3
"""Slowdown of each profiler against the bare run of the same round (see measure.sh).

    slowdown.py RESULTS TITLE [MEASURE]

RESULTS has lines "NAME SECONDS" (MEASURE says what the seconds are: by default the time the
work took); each round starts with a "bare" line, followed by one line
per profiler. Prints, per profiler, the median of the rounds' ratios and their interquartile
range, then each profiler's excess over bare against the first profiler's, and each
profiler's measure against the first profiler's in the same round (the median of those
pairs with a 95 % confidence interval).
"""
import math
import statistics as st
import sys


def median_interval(values):
    """The median of VALUES and a 95 % confidence interval of it from their order (no
    assumption about their distribution): the ranks n/2 -+ 1.96 sqrt(n)/2."""
    v = sorted(values)
    n = len(v)
    half = 1.96 * n ** 0.5 / 2
    low = max(0, math.floor(n / 2 - half) - 1)
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return st.median(v), v[low], v[high]


def read_rounds(path):
    """Each round's measures by name, bare's first."""
    rounds, current = [], None
    for line in open(path):
        name, seconds = line.split()
        if name == "bare":
            current = {"bare": float(seconds)}
            rounds.append(current)
        elif current is not None:
            current[name] = float(seconds)
    return rounds


def print_against_bare(rounds, names, title, measure):
    print(f"{title}; {len(rounds)} alternating rounds; slowdown = {measure} / the round's bare run")
    print(f"{'profiler':24} {'median':>8} {'IQR':>17}")
    medians = {}
    for name in names:
        ratios = sorted(r[name] / r["bare"] for r in rounds if name in r)
        medians[name] = st.median(ratios)
        q = st.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"{name:24} x{medians[name]:.4f}  x{q[0]:.4f}-x{q[2]:.4f}")
    if len(names) > 1 and medians[names[0]] > 1.0005:
        first = names[0]
        for name in names[1:]:
            excess = (medians[name] - 1) / (medians[first] - 1)
            print(f"{name}'s excess / {first}'s: {excess:.2f}")


def print_pairs(rounds, names):
    """Each setup against the first in the same round: the bare runs' spread does not enter."""
    first = names[0]
    print(f"each against {first} in the same round (median of the pairs, 95 % interval):")
    for name in names[1:]:
        pairs = [r[name] / r[first] for r in rounds if name in r and first in r]
        mid, low, high = median_interval(pairs)
        print(f"{name + ' / ' + first:40} x{mid:.4f}  x{low:.4f}-x{high:.4f}")


def main():
    path, title = sys.argv[1], sys.argv[2]
    measure = sys.argv[3] if len(sys.argv) > 3 else "work time"
    rounds = read_rounds(path)
    names = [n for n in rounds[0] if n != "bare"] if rounds else []
    print_against_bare(rounds, names, title, measure)
    if len(names) > 1:
        print_pairs(rounds, names)


if __name__ == "__main__":
    main()
