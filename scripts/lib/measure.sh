# What every measuring script in scripts/ shares; source it first:
#
#   . "$(dirname "$0")/lib/measure.sh"
#   measure_setup NAME         # ROOT, WORK (a temporary directory, removed at exit), EMBER
#                              # (this tree's release build, or $EMBER_BIN: another build)
#   need_perf                  # fail saying how to install perf when it is missing
#   workload NAME [CFLAGS...]  # testdata/NAME.c built into $WORK/NAME (-O2 -g, no frame pointers)
#   work_of FILE               # the work_seconds a workload printed into FILE
#   slowdown_table FILE TITLE  # medians of each profiler's slowdown against bare (see below)
#   choose_setups              # SETUPS ("name:..." entries) cut to the names matching $ONLY
#   setups_in_order N          # ORDER: SETUPS for round N (reversed every other round)
#
# Workloads print what they measured of themselves (work_seconds: the time their fixed amount
# of work took, cpu_seconds), so a script compares a run under a profiler with a bare run of
# the same round, never with a clock outside the workload.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

measure_setup() {
  WORK=$(mktemp -d "/tmp/ember-$1.XXXXXX")
  # shellcheck disable=SC2064 # WORK is fixed now
  trap "rm -rf '$WORK'" EXIT
  if [ -n "${EMBER_BIN:-}" ]; then
    EMBER=$EMBER_BIN
  else
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    EMBER="$ROOT/target/release/ember"
  fi
}

need_perf() {
  command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf" >&2; exit 1; }
}

workload() {
  local name=$1
  shift
  gcc -O2 -g -fomit-frame-pointer -I"$ROOT/testdata" "$@" -o "$WORK/$name" "$ROOT/testdata/$name.c"
}

work_of() { awk '/^work_seconds/ {print $2}' "$1"; }

# FILE has lines "NAME SECONDS", rounds in order, each round starting with "bare": prints
# each profiler's slowdown (its work time / the same round's bare one), median and
# interquartile range over the rounds.
slowdown_table() {
  python3 "$ROOT/scripts/lib/slowdown.py" "$@"
}

# Keep the SETUPS ("name:command…") whose names match the regex ONLY, where it is set.
choose_setups() {
  [ -n "${ONLY:-}" ] || return 0
  local chosen=() setup
  for setup in "${SETUPS[@]}"; do
    if [[ ${setup%%:*} =~ $ONLY ]]; then chosen+=("$setup"); fi
  done
  SETUPS=("${chosen[@]}")
}

# Every other round runs the setups in reverse, so that no setup always follows another.
setups_in_order() {
  ORDER=("${SETUPS[@]}")
  if [ $(($1 % 2)) = 0 ]; then
    ORDER=()
    local j
    for ((j = ${#SETUPS[@]} - 1; j >= 0; j--)); do ORDER+=("${SETUPS[j]}"); done
  fi
}
