#!/usr/bin/env bash
# Is the suite green every time? Runs the README's test command (scripts/test.sh) RUNS times
# in a fresh clone of this repository's HEAD, cleaned of everything untracked (installed node
# modules, outputs) before each run; the cargo target directory is kept outside the clone, so
# only the first run builds. The last HOG_RUNS runs have a CPU hog busy on every core. Prints
# one line per run and a tally; the logs stay in WORK (default /tmp/ember-repeat).
#
#   scripts/repeat-tests.sh [RUNS] [HOG_RUNS]      # default 20 runs, 5 with hogs
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-20}
HOG_RUNS=${2:-5}
WORK=${WORK:-/tmp/ember-repeat}
mkdir -p "$WORK"
export CARGO_TARGET_DIR="$WORK/target"
commit=$(git -C "$ROOT" rev-parse --short HEAD)
pass=0
hogs=()
stop_hogs() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null || true; hogs=(); }
trap stop_hogs EXIT
clone="$WORK/clone"
rm -rf "$clone"
git clone -q "$ROOT" "$clone"
for i in $(seq "$RUNS"); do
  git -C "$clone" clean -xdfq
  with=""
  if [ "$i" -gt $((RUNS - HOG_RUNS)) ]; then
    for _ in $(seq "$(nproc)"); do
      sh -c 'while :; do :; done' &
      hogs+=($!)
    done
    with=" with $(nproc) CPU hogs"
  fi
  start=$(date +%s)
  if "$clone/scripts/test.sh" >"$WORK/run-$i.log" 2>&1; then
    result=green
    pass=$((pass + 1))
  else
    result="RED ($(grep -E '^test .* FAILED|^    [a-z_]+$' "$WORK/run-$i.log" | sort -u | tr '\n' ' '))"
  fi
  stop_hogs
  echo "run $i of $RUNS ($commit$with): $result in $(($(date +%s) - start)) s"
done
echo "$pass of $RUNS runs green"
