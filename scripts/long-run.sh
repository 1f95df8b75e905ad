#!/usr/bin/env bash
# A long `ember record -a --every` on a machine where processes start and end all the time,
# accelerated: windows of EVERY seconds for SECS seconds (default 600 s in 10-s windows: 60
# windows, as 60 windows of a 2-hour run at --every 120), while a loop starts several short
# processes a second (shells, and testdata/shares.c for 50 ms of CPU) and one busy workload
# runs throughout. Prints ember's RSS at each window, the RSS of the last window against the
# third (after warming up), whether every window was written, and whether the windows add up
# to the summary's count. Needs root (-a).
#
# With DISTINCT=1 each short process runs a program never seen before (a copy of shares,
# changed by a byte and deleted after), as on a machine that builds and runs new binaries
# all day: ember must let go of each once no process maps it.
#
#   [DISTINCT=1] scripts/long-run.sh [SECS] [EVERY] [HZ]   # defaults: 600 s, 10-s windows, 99 Hz
. "$(dirname "$0")/lib/measure.sh"
SECS=${1:-600}
EVERY=${2:-10}
HZ=${3:-99}
measure_setup longrun
workload shares
"$WORK/shares" $((SECS + 60)) >/dev/null &
busy=$!
(
  n=0
  while :; do
    sh -c ':'
    /bin/true
    if [ -n "${DISTINCT:-}" ]; then
      n=$((n + 1))
      cp "$WORK/shares" "$WORK/new-$n" && printf '%s' "$n" >>"$WORK/new-$n"
      "$WORK/new-$n" 0.05 >/dev/null
      rm -f "$WORK/new-$n"
    else
      "$WORK/shares" 0.05 >/dev/null
    fi
    sleep 0.1
  done
) &
churn=$!
trap 'kill $busy $churn 2>/dev/null; rm -rf "$WORK"' EXIT

"$EMBER" record -a -v -F "$HZ" --every "$EVERY" -d "$SECS" -o "$WORK/w.folded" 2>"$WORK/err" &
ember=$!
: >"$WORK/rss"
# (The last window's end is the recording's: ember is finishing then.)
for ((t = EVERY; t < SECS; t += EVERY)); do
  sleep "$EVERY"
  awk '/^VmRSS/ {print $2}' "/proc/$ember/status" >>"$WORK/rss" 2>/dev/null || true
done
wait "$ember" || true
kill $churn 2>/dev/null || true

windows=$(find "$WORK" -name 'w-*.folded' | wc -l)
summed=$(cat "$WORK"/w-*.folded | awk '{n += $NF} END {print n + 0}')
total=$(grep -o '^ember: [0-9]* samples' "$WORK/err" | awk '{print $2}')
echo "== ember record -a --every $EVERY -d $SECS at $HZ Hz, processes starting all the time${DISTINCT:+, each short one a new program}"
echo "RSS (kB) at each window: $(tr '\n' ' ' <"$WORK/rss")"
python3 - "$WORK/rss" <<'EOF'
import sys
rss = [int(l) for l in open(sys.argv[1]) if l.strip()]
if len(rss) >= 4:
    mid = len(rss) // 2
    print(f"RSS at the last window / the third: {rss[-1] / rss[2]:.3f}; "
          f"/ the middle one: {rss[-1] / rss[mid]:.3f}")
EOF
echo "windows written: $windows of $(( (SECS + EVERY - 1) / EVERY ))"
echo "samples in the windows: $summed; in the summary: $total"
grep -E '^ember: [0-9]+ samples|lost|let go of|walked in the kernel:' "$WORK/err"
