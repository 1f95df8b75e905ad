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
# With BUILDS=1 a loop also compiles a crate with rustc -O (regex-syntax, from the lockfile)
# again and again: each window then names frames of rustc's large libraries.
#
#   [DISTINCT=1] [BUILDS=1] scripts/long-run.sh [SECS] [EVERY] [HZ]
#                                                # defaults: 600 s, 10-s windows, 99 Hz
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
builds=
if [ -n "${BUILDS:-}" ]; then
  src=$(cargo metadata --format-version 1 --manifest-path "$ROOT/Cargo.toml" | python3 -c '
import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "regex-syntax"]
print(os.path.dirname(pkgs[0]["manifest_path"]))')
  (
    while :; do
      rustc --edition 2021 --crate-type lib --crate-name regex_syntax -C opt-level=3 \
        --cfg 'feature="std"' --cfg 'feature="unicode"' --out-dir "$WORK/build" \
        "$src/src/lib.rs" >/dev/null 2>&1
    done
  ) &
  builds=$!
fi
trap 'kill $busy $churn $builds 2>/dev/null; rm -rf "$WORK"' EXIT

"$EMBER" record -a -v -F "$HZ" --every "$EVERY" -d "$SECS" -o "$WORK/w.folded" 2>"$WORK/err" &
ember=$!
: >"$WORK/rss"
: >"$WORK/anon"
# (The last window's end is the recording's: ember is finishing then.)
for ((t = EVERY; t < SECS; t += EVERY)); do
  sleep "$EVERY"
  awk '/^VmRSS/ {print $2}' "/proc/$ember/status" >>"$WORK/rss" 2>/dev/null || true
  awk '/^RssAnon/ {print $2}' "/proc/$ember/status" >>"$WORK/anon" 2>/dev/null || true
done
wait "$ember" || true
kill $churn $builds 2>/dev/null || true

windows=$(find "$WORK" -name 'w-*.folded' | wc -l)
summed=$(cat "$WORK"/w-*.folded | awk '{n += $NF} END {print n + 0}')
total=$(grep -o '^ember: [0-9]* samples' "$WORK/err" | awk '{print $2}')
echo "== ember record -a --every $EVERY -d $SECS at $HZ Hz, processes starting all the time${DISTINCT:+, each short one a new program}${BUILDS:+, rustc -O building all the time}"
echo "RSS (kB) at each window: $(tr '\n' ' ' <"$WORK/rss")"
echo "of which anonymous (kB): $(tr '\n' ' ' <"$WORK/anon")"
python3 - "$WORK/rss" "$WORK/anon" <<'EOF'
import statistics, sys
for name, path in (("RSS", sys.argv[1]), ("anonymous", sys.argv[2])):
    kb = [int(l) for l in open(path) if l.strip()]
    if len(kb) < 4:
        continue
    mid = len(kb) // 2
    first, second = kb[2:mid], kb[mid:]
    print(f"{name}: last window / the third {kb[-1] / kb[2]:.3f}, / the middle one "
          f"{kb[-1] / kb[mid]:.3f}; median of the second half / of the first (from the "
          f"third) {statistics.median(second) / statistics.median(first):.3f}; "
          f"most {max(kb) / 1024:.0f} MB")
EOF
echo "windows written: $windows of $(( (SECS + EVERY - 1) / EVERY ))"
echo "samples in the windows: $summed; in the summary: $total"
grep -E '^ember: [0-9]+ samples|lost|let go of|walked in the kernel:' "$WORK/err"
