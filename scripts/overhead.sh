#!/usr/bin/env bash
# Target slowdown and time-to-output: ember vs `perf record --call-graph dwarf` (+ perf script,
# + inferno when installed), measured alternately in the same run on the same workload.
#
#   scripts/overhead.sh [RUNS] [ROUNDS] [HZ]
#
# The workload (testdata/shares.c, no frame pointers) does a fixed amount of work and prints
# how long the work took ("work_seconds"); slowdown = that time under a profiler / bare.
# Prints medians and ratios. Needs gcc, perf; inferno is optional (cargo install inferno).
set -euo pipefail
RUNS=${1:-5}
ROUNDS=${2:-1000}
HZ=${3:-999}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/ember-overhead.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
EMBER="$ROOT/target/release/ember"
gcc -O2 -g -fomit-frame-pointer -o "$WORK/shares" "$ROOT/testdata/shares.c"
HAVE_INFERNO=0
command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null && HAVE_INFERNO=1

now() { date +%s.%N; }
work_of() { awk '/^work_seconds/ {print $2}' "$1"; }

: >"$WORK/results"
for i in $(seq "$RUNS"); do
  # bare
  "$WORK/shares" 0 "$ROUNDS" >"$WORK/bare.out"
  echo "bare_work $(work_of "$WORK/bare.out")" >>"$WORK/results"

  # ember: recording and the SVG in one command; "post" = from target exit to SVG written
  t0=$(now)
  "$EMBER" record -F "$HZ" -o "$WORK/ember.svg" -- "$WORK/shares" 0 "$ROUNDS" >"$WORK/ember.out" 2>"$WORK/ember.err"
  t1=$(now)
  w=$(work_of "$WORK/ember.out")
  echo "ember_work $w" >>"$WORK/results"
  echo "ember_total $(echo "$t1 - $t0" | bc)" >>"$WORK/results"

  # perf record --call-graph dwarf, then perf script (+ inferno) to get to an SVG
  t0=$(now)
  perf record -q -F "$HZ" --call-graph dwarf -o "$WORK/perf.data" -- "$WORK/shares" 0 "$ROUNDS" >"$WORK/perf.out" 2>/dev/null
  t1=$(now)
  if [ "$HAVE_INFERNO" = 1 ]; then
    perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph >"$WORK/perf.svg"
  else
    perf script -i "$WORK/perf.data" >"$WORK/perf.script" 2>/dev/null
  fi
  t2=$(now)
  echo "perf_work $(work_of "$WORK/perf.out")" >>"$WORK/results"
  echo "perf_total $(echo "$t2 - $t0" | bc)" >>"$WORK/results"
  echo "run $i done" >&2
done

python3 - "$WORK/results" "$HAVE_INFERNO" "$HZ" <<'PY'
import sys, statistics as st
vals = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    vals.setdefault(k, []).append(float(v))
m = {k: st.median(v) for k, v in vals.items()}
hz = sys.argv[3]
post = "perf script | inferno" if sys.argv[2] == "1" else "perf script (text only; inferno not installed)"
print(f"workload: testdata/shares.c, no frame pointers, {hz} Hz, medians of {len(vals['bare_work'])} runs")
print(f"bare work time                      {m['bare_work']:.3f} s")
print(f"ember: target work time             {m['ember_work']:.3f} s  slowdown x{m['ember_work']/m['bare_work']:.4f}")
print(f"perf dwarf: target work time        {m['perf_work']:.3f} s  slowdown x{m['perf_work']/m['bare_work']:.4f}")
print(f"slowdown ratio ember/perf           {(m['ember_work']/m['bare_work']-1)/max(m['perf_work']/m['bare_work']-1,1e-9):.2f} (of the excess over bare)")
print(f"ember record -> SVG, end to end     {m['ember_total']:.3f} s")
print(f"perf record + {post}: {m['perf_total']:.3f} s")
print(f"end-to-end ratio ember/perf         {m['ember_total']/m['perf_total']:.3f}")
PY
