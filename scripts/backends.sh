#!/usr/bin/env bash
# Target slowdown of ember's two backends, side by side in the same run: perf events vs ptrace,
# at 99 and 999 Hz, on one thread (testdata/shares.c) and on 50 threads (testdata/pool.c, each
# thread burning a little and sleeping 5 ms, 200 rounds). Runs alternate bare / perf / ptrace;
# slowdown = the workload's own work time under ember / bare. Prints medians, and what one
# ptrace stop costs the target: (work time under ptrace - bare) / threads interrupted (from -v).
#
#   scripts/backends.sh [RUNS]
. "$(dirname "$0")/lib/measure.sh"
RUNS=${1:-5}
measure_setup backends
workload shares
workload pool -pthread

: >"$WORK/results"
for i in $(seq "$RUNS"); do
  for load in "1 $WORK/shares 0 800" "50 $WORK/pool 50 0 200"; do
    set -- $load
    threads=$1; shift
    "$@" >"$WORK/out"
    echo "$threads bare - $(work_of "$WORK/out") 0" >>"$WORK/results"
    for hz in 99 999; do
      for backend in perf ptrace; do
        "$EMBER" record -v --backend "$backend" -F "$hz" -o "$WORK/x.folded" -- "$@" >"$WORK/out" 2>"$WORK/err"
        stops=$(sed -nE 's/.* ([0-9]+) threads interrupted.*/\1/p' "$WORK/err")
        echo "$threads $backend $hz $(work_of "$WORK/out") ${stops:-0}" >>"$WORK/results"
      done
    done
  done
  echo "run $i done" >&2
done

python3 - "$WORK/results" <<'PY'
import sys, statistics as st
vals, stops = {}, {}
for line in open(sys.argv[1]):
    threads, backend, hz, w, n = line.split()
    vals.setdefault((threads, backend, hz), []).append(float(w))
    stops.setdefault((threads, backend, hz), []).append(int(n))
m = {k: st.median(v) for k, v in vals.items()}
runs = len(vals[("1", "bare", "-")])
print(f"target slowdown (work time under ember / bare), medians of {runs} alternating runs")
print(f"{'threads':>7} {'Hz':>5} {'perf':>8} {'ptrace':>8}  ptrace excess / perf excess")
for threads in ("1", "50"):
    bare = m[(threads, "bare", "-")]
    for hz in ("99", "999"):
        p = m[(threads, "perf", hz)] / bare
        t = m[(threads, "ptrace", hz)] / bare
        ratio = (t - 1) / (p - 1) if p - 1 > 0.001 else float("nan")
        print(f"{threads:>7} {hz:>5} x{p:.4f} x{t:.4f}  {ratio:.1f}")
print("target time per ptrace stop: (median work under ptrace - median bare) / median stops")
for threads in ("1", "50"):
    for hz in ("99", "999"):
        n = st.median(stops[(threads, "ptrace", hz)])
        extra = m[(threads, "ptrace", hz)] - m[(threads, "bare", "-")]
        if n > 0:
            print(f"{threads:>7} {hz:>5} {1e6 * extra / n:6.1f} us over {n:.0f} stops")
PY
