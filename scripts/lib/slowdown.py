#!/usr/bin/env python3
"""Slowdown of each profiler against the bare run of the same round (see measure.sh).

    slowdown.py RESULTS TITLE [MEASURE]

RESULTS has lines "NAME SECONDS" (MEASURE says what the seconds are: by default the time the
work took); each round starts with a "bare" line, followed by one line
per profiler. Prints, per profiler, the median of the rounds' ratios and their interquartile
range, then each profiler's excess over bare against the first profiler's.
"""
import statistics as st
import sys

path, title = sys.argv[1], sys.argv[2]
measure = sys.argv[3] if len(sys.argv) > 3 else "work time"
rounds, current = [], None
for line in open(path):
    name, seconds = line.split()
    if name == "bare":
        current = {"bare": float(seconds)}
        rounds.append(current)
    elif current is not None:
        current[name] = float(seconds)
names = [n for n in rounds[0] if n != "bare"] if rounds else []
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
        print(f"{name}'s excess / {first}'s: {(medians[name] - 1) / (medians[first] - 1):.2f}")
