#!/usr/bin/env bash
# Target slowdown of ember's two backends, side by side in the same run: perf events vs ptrace,
# at 99 and 999 Hz, on one thread (testdata/shares.c) and on 50 threads (testdata/pool.c, each
# thread burning a little and sleeping 5 ms, 200 rounds). Runs alternate bare / perf / ptrace;
# slowdown = the workload's own work time under ember / bare. Prints medians.
#
#   scripts/backends.sh [RUNS]
set -euo pipefail
RUNS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/ember-backends.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
EMBER="$ROOT/target/release/ember"
gcc -O2 -g -fomit-frame-pointer -o "$WORK/shares" "$ROOT/testdata/shares.c"
gcc -O2 -g -fomit-frame-pointer -pthread -o "$WORK/pool" "$ROOT/testdata/pool.c"
work_of() { awk '/^work_seconds/ {print $2}' "$1"; }

: >"$WORK/results"
for i in $(seq "$RUNS"); do
  for load in "1 $WORK/shares 0 800" "50 $WORK/pool 50 0 200"; do
    set -- $load
    threads=$1; shift
    "$@" >"$WORK/out"
    echo "$threads bare - $(work_of "$WORK/out")" >>"$WORK/results"
    for hz in 99 999; do
      for backend in perf ptrace; do
        "$EMBER" record --backend "$backend" -F "$hz" -o "$WORK/x.folded" -- "$@" >"$WORK/out" 2>/dev/null
        echo "$threads $backend $hz $(work_of "$WORK/out")" >>"$WORK/results"
      done
    done
  done
  echo "run $i done" >&2
done

python3 - "$WORK/results" <<'PY'
import sys, statistics as st
vals = {}
for line in open(sys.argv[1]):
    threads, backend, hz, w = line.split()
    vals.setdefault((threads, backend, hz), []).append(float(w))
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
PY
