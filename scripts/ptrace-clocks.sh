#!/usr/bin/env bash
# Where do the samples of a syscall-heavy loop land? testdata/callmix.c calls compute() and a
# cheap system call in turn (one every ~1.4 µs) and prints compute()'s true share of its CPU
# time. For each round this prints that truth and compute()'s share of the samples from perf
# events, ptrace stops timed by the thread's own CPU clock (the default where perf events are
# allowed), and ptrace stops timed by ticks (what is left where they are refused).
#
#   scripts/ptrace-clocks.sh [ROUNDS]      # default 3
. "$(dirname "$0")/lib/measure.sh"
ROUNDS=${1:-3}
measure_setup clocks
workload callmix

share() {
  python3 - "$1" <<'PY'
import sys
hit = total = 0
for line in open(sys.argv[1]):
    stack, count = line.rsplit(" ", 1)
    user = [f for f in stack.split(";") if not f.endswith("_[k]")]
    total += int(count)
    hit += int(count) if user[-1] == "compute" else 0
print(f"{100 * hit / max(total, 1):5.1f} % of {total:5d}")
PY
}

printf '%-28s %-8s %s\n' "sampler" "truth" "compute()'s share of the samples"
for r in $(seq "$ROUNDS"); do
  for mode in "perf events:--backend perf" \
              "ptrace, CPU clocks:--backend ptrace" \
              "ptrace, ticks:--backend ptrace --debug-ptrace-ticks"; do
    name=${mode%%:*}
    # shellcheck disable=SC2086
    truth=$("$EMBER" record ${mode#*:} -o "$WORK/x.folded" -- "$WORK/callmix" 1.5 2>/dev/null |
      awk '/^truth compute/ {print $3}')
    printf '%-28s %-8s %s\n' "$name" "$truth %" "$(share "$WORK/x.folded")"
  done
done
