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
#   ONLY='ember$|perf-fp' scripts/slowdown.sh 80   # the setups whose names match (a regex)
#
# Every other round runs the setups in reverse order. After each table, each setup's measure
# against the first setup's in the same round (the pairs' median, with a 95 % confidence
# interval of that median): a direct comparison, free of the bare runs' own spread.
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

# Each setup: a name and its command (the workload follows). ONLY (a regex) keeps the setups
# whose names match; bare runs in every round.
SETUPS=(
  "ember:$EMBER record -F $HZ -o $WORK/e.svg --"
  "ember-user-space-walk:$EMBER record --unwind user -F $HZ -o $WORK/e.svg --"
  "perf-fp:perf record -q -F $HZ --call-graph fp -o $WORK/p.data --"
  "perf-dwarf:perf record -q -F $HZ --call-graph dwarf -o $WORK/p.data --"
  "perf-no-stacks:perf record -q -F $HZ -o $WORK/p.data --"
)
if [ ${#no_nice[@]} -gt 0 ]; then
  SETUPS=("${SETUPS[0]}" "ember-no-priority:${no_nice[*]} $EMBER record -F $HZ -o $WORK/e.svg --"
    "${SETUPS[@]:1}")
fi
choose_setups

: >"$WORK/results"
: >"$WORK/cpu"
for i in $(seq "$ROUNDS"); do
  "${prog[@]}" >"$WORK/o"
  record_run bare
  setups_in_order "$i"
  for setup in "${ORDER[@]}"; do
    read -r -a cmd <<<"${setup#*:}"
    "${cmd[@]}" "${prog[@]}" >"$WORK/o" 2>/dev/null
    record_run "${setup%%:*}"
  done
  echo "round $i of $ROUNDS done" >&2
done
slowdown_table "$WORK/results" "2 busy threads at $HZ Hz"
echo
slowdown_table "$WORK/cpu" "2 busy threads at $HZ Hz" "the workload's CPU time"
