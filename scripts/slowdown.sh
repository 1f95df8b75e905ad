#!/usr/bin/env bash
# How much ember slows the program it profiles, against perf, with enough rounds to tell
# differences of a percent apart: 2 busy threads (testdata/threads.c, a fixed amount of work,
# no frame pointers) at HZ, in rounds that alternate bare / ember / ember without the right
# to raise its reader's priority (root without CAP_SYS_NICE) / perf --call-graph fp /
# perf --call-graph dwarf. Slowdown = the workload's own work time / bare's, medians over
# the rounds, with the spread (interquartile range) of each.
#
#   scripts/slowdown.sh [ROUNDS] [HZ]      # default 15 rounds at 999 Hz (~5 minutes)
set -euo pipefail
ROUNDS=${1:-15}
HZ=${2:-999}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/ember-slowdown.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
EMBER="$ROOT/target/release/ember"
gcc -O2 -g -fomit-frame-pointer -pthread -o "$WORK/threads" "$ROOT/testdata/threads.c"
prog=("$WORK/threads" 0 12000)
no_nice=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  no_nice=(setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice --)
fi

work_of() { awk '/^work_seconds/ {print $2}' "$1"; }
: >"$WORK/results"
for i in $(seq "$ROUNDS"); do
  "${prog[@]}" >"$WORK/o"
  echo "bare $(work_of "$WORK/o")" >>"$WORK/results"
  "$EMBER" record -F "$HZ" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  echo "ember $(work_of "$WORK/o")" >>"$WORK/results"
  if [ ${#no_nice[@]} -gt 0 ]; then
    "${no_nice[@]}" "$EMBER" record -F "$HZ" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
    echo "ember-no-priority $(work_of "$WORK/o")" >>"$WORK/results"
  fi
  perf record -q -F "$HZ" --call-graph fp -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  echo "perf-fp $(work_of "$WORK/o")" >>"$WORK/results"
  perf record -q -F "$HZ" --call-graph dwarf -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  echo "perf-dwarf $(work_of "$WORK/o")" >>"$WORK/results"
  echo "round $i of $ROUNDS done" >&2
done

python3 - "$WORK/results" "$ROUNDS" "$HZ" <<'EOF'
import statistics as st, sys
res, rounds, hz = sys.argv[1:]
times = {}
for line in open(res):
    name, t = line.split()
    times.setdefault(name, []).append(float(t))
bare = times.pop("bare")
print(f"2 busy threads at {hz} Hz, {rounds} alternating rounds; slowdown = work time / bare")
print(f"{'profiler':22} {'median':>8} {'IQR':>17}")
b = st.median(bare)
for name, ts in times.items():
    # Each round against the bare run of the same round.
    ratios = sorted(t / b0 for t, b0 in zip(ts, bare))
    q = st.quantiles(ratios, n=4)
    print(f"{name:22} x{st.median(ratios):.4f}  x{q[0]:.4f}-x{q[2]:.4f}")
e = st.median(sorted(t / b0 for t, b0 in zip(times["ember"], bare)))
f = st.median(sorted(t / b0 for t, b0 in zip(times["perf-fp"], bare)))
print(f"ember's excess / perf fp's: {(e - 1) / (f - 1):.2f}" if f > 1.0005 else "perf fp within noise")
EOF
