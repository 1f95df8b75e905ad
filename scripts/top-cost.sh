#!/usr/bin/env bash
# What does the live view cost? Attaches to testdata/threads.c (2 busy threads) at 999 Hz for
# SECS seconds, alternately with `ember record -p PID -d SECS` and with `ember top -p PID -d SECS`
# drawing its full-screen view in a real terminal (tmux, 160x40), ROUNDS rounds each, and prints
# per round and as medians: ember's own CPU time (user + system, from wait4) per 1,000 samples,
# samples, lost samples and peak RSS; then the ratio top / record of the medians. Both run the
# same release build on the same target in the same round.
#
#   scripts/top-cost.sh [ROUNDS] [SECS]      # default 5 rounds of 10 s
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-5}
SECS=${2:-10}
cd "$ROOT"
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install tmux)" >&2; exit 1; }
cargo build --quiet --release
work=$(mktemp -d)
session="ember-top-cost-$$"
target_pid=""
cleanup() {
  tmux kill-session -t "$session" 2>/dev/null || true
  [ -z "$target_pid" ] || kill "$target_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -g -pthread -Itestdata -o "$work/threads" testdata/threads.c
EMBER="$ROOT/target/release/ember"

# Run a command and write its CPU seconds and peak RSS (MB) to FILE: measure FILE CMD...
cat >"$work/measure.py" <<'EOF'
import os, sys
out, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
_, status, ru = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(f"{ru.ru_utime + ru.ru_stime:.3f} {ru.ru_maxrss / 1024:.1f}\n")
sys.exit(os.waitstatus_to_exitcode(status))
EOF

# record: the summary line says `ember: N samples (M lost)`.
run_record() {
  python3 "$work/measure.py" "$work/usage" "$EMBER" record -F 999 -p "$target_pid" -d "$SECS" \
    -o "$work/record.folded" 2>"$work/record.err" >/dev/null
  local line
  line=$(grep -E '^ember: [0-9]+ samples' "$work/record.err" | head -1)
  samples=$(sed -E 's/^ember: ([0-9]+) samples.*/\1/' <<<"$line")
  lost=$(sed -E 's/.*\(([0-9]+) lost\).*/\1/' <<<"$line")
}

# top: the view's header says `... · N samples · M lost · ...`; read once sampling ended.
run_top() {
  tmux new-session -d -x 160 -y 40 -s "$session" \
    "python3 $work/measure.py $work/usage $EMBER top -F 999 -p $target_pid -d $SECS; sleep 600"
  local screen=""
  for _ in $(seq $((SECS * 10 + 300))); do
    screen=$(tmux capture-pane -p -t "$session")
    grep -q 'sampling ended' <<<"$screen" && break
    sleep 0.1
  done
  samples=$(grep -oE '[0-9]+ samples ·' <<<"$screen" | head -1 | cut -d' ' -f1)
  lost=$(grep -oE '[0-9]+ lost' <<<"$screen" | head -1 | cut -d' ' -f1)
  tmux send-keys -t "$session" q
  for _ in $(seq 100); do
    [ -s "$work/usage" ] && break
    sleep 0.1
  done
  tmux kill-session -t "$session" 2>/dev/null || true
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

"$work/threads" 100000 >/dev/null &
target_pid=$!
sleep 1
printf '%-7s %5s %10s %8s %6s %11s %8s\n' way round "cpu s" samples lost "ms/1000" "rss MB"
for r in $(seq "$ROUNDS"); do
  for way in record top; do
    rm -f "$work/usage"
    "run_$way"
    read -r cpu rss <"$work/usage"
    per=$(awk -v c="$cpu" -v s="$samples" 'BEGIN {printf "%.2f", 1000 * c / (s / 1000)}')
    printf '%-7s %5s %10s %8s %6s %11s %8s\n' "$way" "$r" "$cpu" "$samples" "$lost" "$per" "$rss"
    echo "$per" >>"$work/$way.per"
    echo "$lost" >>"$work/$way.lost"
    echo "$rss" >>"$work/$way.rss"
  done
done
rec=$(median <"$work/record.per")
top=$(median <"$work/top.per")
echo
echo "medians of $ROUNDS rounds, 2 busy threads at 999 Hz for $SECS s:"
echo "  record: $rec ms of CPU per 1,000 samples, peak RSS $(median <"$work/record.rss") MB, lost $(awk '{s+=$1} END {print s}' "$work/record.lost") in all"
echo "  top:    $top ms of CPU per 1,000 samples, peak RSS $(median <"$work/top.rss") MB, lost $(awk '{s+=$1} END {print s}' "$work/top.lost") in all"
awk -v a="$top" -v b="$rec" 'BEGIN {printf "  top / record: %.2fx\n", a / b}'
