#!/usr/bin/env bash
# What `ember serve -a` costs a machine whose cores are all busy: one busy workload per CPU
# (testdata/shares.c), `ember serve -a` at each rate, a client asking for a profile every
# 10 s (as a scraper does); ember's own CPU time (its process and threads, from /proc) over
# SECS seconds after a 5-second start (reading /proc and building the rows), as a share of one
# core. Then `go tool pprof` of the endpoint against `ember record` of the same workload: the
# hottest functions' shares. Needs root (-a).
#
#   scripts/serve-cost.sh [SECS] [RATES...]      # defaults: 60 s, at 19 and 99 Hz
. "$(dirname "$0")/lib/measure.sh"
SECS=${1:-60}
shift || true
RATES=("$@")
[ ${#RATES[@]} -gt 0 ] || RATES=(19 99)
measure_setup serve
workload shares
CPUS=$(nproc)
busy=()
for _ in $(seq "$CPUS"); do
  "$WORK/shares" $((SECS * 3 + 120)) >/dev/null &
  busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT

# utime + stime of process $1 and all its threads, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== ember serve -a, $CPUS CPUs busy, ember's own CPU over $SECS s"
for hz in "${RATES[@]}"; do
  "$EMBER" serve -a -F "$hz" --listen 127.0.0.1:0 2>"$WORK/serve.err" &
  pid=$!
  sleep 5
  addr=$(grep -o 'http://[0-9.:]*' "$WORK/serve.err" | head -1)
  before=$(cpu_ticks "$pid")
  end=$((SECONDS + SECS))
  while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null "$addr/debug/pprof/profile?seconds=10" || true
  done
  after=$(cpu_ticks "$pid")
  kill -INT "$pid"
  wait "$pid" || true
  hz_ticks=$(getconf CLK_TCK)
  echo "$hz Hz: ember used $(echo "scale=3; 100 * ($after - $before) / $hz_ticks / $SECS" | bc) % of one core"
done

echo "== go tool pprof of the endpoint against ember record (999 Hz, 5 s; hottest functions' shares)"
"$EMBER" serve --listen 127.0.0.1:0 -- "$WORK/shares" 20 >/dev/null 2>"$WORK/serve.err" &
pid=$!
sleep 1
addr=$(grep -o 'http://[0-9.:]*' "$WORK/serve.err" | head -1)
HOME=$WORK go tool pprof -top -nodecount=5 -sample_index=samples \
  "$addr/debug/pprof/profile?seconds=5" 2>/dev/null | grep ' hot_' >"$WORK/served"
kill -INT "$pid"
wait "$pid" || true
"$EMBER" record -d 5 -o "$WORK/r.pb.gz" -- "$WORK/shares" 20 >/dev/null 2>&1 || true
HOME=$WORK go tool pprof -top -nodecount=5 -sample_index=samples "$WORK/r.pb.gz" 2>/dev/null |
  grep ' hot_' >"$WORK/recorded"
join -1 6 -2 6 <(sort -k6 "$WORK/served") <(sort -k6 "$WORK/recorded") |
  awk '{printf "%-12s served %6s  recorded %6s  difference %.2f points\n", $1, $3, $8, ($3 - $8 < 0 ? $8 - $3 : $3 - $8)}'
