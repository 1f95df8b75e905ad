#!/usr/bin/env bash
# Does ember lose samples while a thousand threads start? Runs `ember record -- manythreads 1000`
# (testdata/manythreads.c: 1,000 threads of ~3 ms of CPU each, on whatever cores there are)
# RUNS times in each of these ways and prints, per way, how many runs lost nothing, the most
# samples lost in one run, and the fewest threads seen (1001 when none is missed):
#   root          as root: the reader runs at nice -20, ring buffers hold ~1/4 s of samples
#   no-sys-nice   root without CAP_SYS_NICE: the reader cannot raise its priority
#   nobody        an ordinary user (uid 65534): no priority rights, locked memory limited
# each with the release and the debug build.
#
#   scripts/manythreads.sh [RUNS]      # default 20
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-20}
cd "$ROOT"
cargo build --quiet --release
cargo build --quiet
work=$(mktemp -d)
chmod 777 "$work"
trap 'rm -rf "$work"' EXIT
gcc -O2 -g -pthread -o "$work/manythreads" testdata/manythreads.c
cp target/release/ember "$work/ember-release"
cp target/debug/ember "$work/ember-debug"

run_as() {
  case "$1" in
    root) shift; "$@" ;;
    no-sys-nice) shift; setpriv --inh-caps=-sys_nice --bounding-set=-sys_nice "$@" ;;
    nobody) shift; setpriv --reuid=65534 --regid=65534 --clear-groups "$@" ;;
  esac
}

printf '%-12s %-8s %14s %14s %13s\n' way build "runs, 0 lost" "most lost" "min threads"
for way in root no-sys-nice nobody; do
  for build in release debug; do
    clean=0 most=0 minthreads=999999
    for _ in $(seq "$RUNS"); do
      line=$(run_as "$way" "$work/ember-$build" record -o "$work/out.folded" -- \
        "$work/manythreads" 1000 2>&1 | grep -E '^ember: [0-9]+ samples' || true)
      lost=$(sed -E 's/.*\(([0-9]+) lost\).*/\1/' <<<"$line")
      threads=$(sed -E 's/.* ([0-9]+) threads.*/\1/' <<<"$line")
      [[ "$lost" =~ ^[0-9]+$ ]] || { echo "unexpected summary: $line" >&2; exit 1; }
      [ "$lost" = 0 ] && clean=$((clean + 1))
      [ "$lost" -gt "$most" ] && most=$lost
      [ "$threads" -lt "$minthreads" ] && minthreads=$threads
    done
    printf '%-12s %-8s %14s %14s %13s\n' "$way" "$build" "$clean/$RUNS" "$most" "$minthreads"
  done
done
