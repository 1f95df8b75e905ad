#!/usr/bin/env bash
# How much ember slows the program it profiles, against perf, with enough rounds to tell
# differences of a percent apart: 2 busy threads (testdata/threads.c, a fixed amount of work,
# no frame pointers) at HZ, in rounds that alternate bare / ember / ember without the right
# to raise its reader's priority (root without CAP_SYS_NICE) / ember --unwind user (stacks
# walked in user space from copies; the default walks them in the kernel) / perf --call-graph fp /
# perf --call-graph dwarf. Slowdown = the workload's own work time / bare's, medians over
# the rounds, with the spread (interquartile range) of each.
#
#   scripts/slowdown.sh [ROUNDS] [HZ]      # default 15 rounds at 999 Hz (~5 minutes)
. "$(dirname "$0")/lib/measure.sh"
ROUNDS=${1:-15}
HZ=${2:-999}
need_perf
measure_setup slowdown
workload threads -pthread
prog=("$WORK/threads" 0 12000)
no_nice=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  no_nice=(setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice --)
fi

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
  "$EMBER" record --unwind user -F "$HZ" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  echo "ember-user-space-walk $(work_of "$WORK/o")" >>"$WORK/results"
  perf record -q -F "$HZ" --call-graph fp -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  echo "perf-fp $(work_of "$WORK/o")" >>"$WORK/results"
  perf record -q -F "$HZ" --call-graph dwarf -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
  echo "perf-dwarf $(work_of "$WORK/o")" >>"$WORK/results"
  echo "round $i of $ROUNDS done" >&2
done
slowdown_table "$WORK/results" "2 busy threads at $HZ Hz"
