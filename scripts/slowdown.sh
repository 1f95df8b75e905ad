#!/usr/bin/env bash
# How much ember slows the program it profiles, against perf, with enough rounds to tell
# differences of a percent apart: 2 busy threads (testdata/threads.c, a fixed amount of work,
# no frame pointers) at HZ, in rounds that alternate bare / ember / ember without the right
# to raise its reader's priority (root without CAP_SYS_NICE) / ember --unwind user (stacks
# walked in user space from copies; the default walks them in the kernel) / perf --call-graph fp /
# perf --call-graph dwarf / perf with no call graph (the sampling interrupt alone: no profiler
# can cost less). Slowdown = the workload's own work time / bare's, medians over the rounds,
# with the spread (interquartile range) of each; then the same for the CPU time the workload's
# threads used for the work (what each sample costs in the workload's own time — interrupt,
# walk, output — without the time the profiler's process takes from it).
#
#   scripts/slowdown.sh [ROUNDS] [HZ]      # default 15 rounds at 999 Hz (~5 minutes)
. "$(dirname "$0")/lib/measure.sh"
ROUNDS=${1:-15}
HZ=${2:-999}
need_perf
measure_setup slowdown
workload threads -pthread
prog=("$WORK/threads" 0 12000)
# One line per run in each of the results: the work time, and the workload's CPU time.
record_run() {
  echo "$1 $(work_of "$WORK/o")" >>"$WORK/results"
  echo "$1 $(awk '/^cpu_seconds/ {print $2}' "$WORK/o")" >>"$WORK/cpu"
}
no_nice=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  no_nice=(setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice --)
fi

: >"$WORK/results"
: >"$WORK/cpu"
for i in $(seq "$ROUNDS"); do
  "${prog[@]}" >"$WORK/o"
  record_run bare
  "$EMBER" record -F "$HZ" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  record_run ember
  if [ ${#no_nice[@]} -gt 0 ]; then
    "${no_nice[@]}" "$EMBER" record -F "$HZ" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
    record_run ember-no-priority
  fi
  "$EMBER" record --unwind user -F "$HZ" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  record_run ember-user-space-walk
  perf record -q -F "$HZ" --call-graph fp -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  record_run perf-fp
  perf record -q -F "$HZ" --call-graph dwarf -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  record_run perf-dwarf
  perf record -q -F "$HZ" -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  record_run perf-no-stacks
  echo "round $i of $ROUNDS done" >&2
done
slowdown_table "$WORK/results" "2 busy threads at $HZ Hz"
echo
slowdown_table "$WORK/cpu" "2 busy threads at $HZ Hz" "the workload's CPU time"
