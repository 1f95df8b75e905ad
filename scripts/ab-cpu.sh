#!/usr/bin/env bash
# ember's own CPU per 1,000 samples at two revisions, side by side: each revision built
# (release) in a worktree of its own, then rounds that alternate between them, each recording
# testdata/threads.c (2 busy threads, shallow stacks) at 999 Hz. ember's CPU is split at the
# workload's exit by scripts/profiler-cpu.py: while it ran, and after (naming, writing).
# Prints the medians and B/A.
#
#   scripts/ab-cpu.sh REV_A REV_B [ROUNDS] [SECONDS]     # defaults: 5 rounds of 5 s
#   ARGS="--backend perf" scripts/ab-cpu.sh ...          # more arguments for ember record
#
# Rounds on this kind of machine vary by ±20 % and more (the VM's speed drifts): use many.
# Running both revisions at once (a workload each) is no cure: the same revision on both
# sides came out 1.5x apart, always the one started second.
set -euo pipefail
A=$1
B=$2
ROUNDS=${3:-5}
SECS=${4:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/ember-ab.XXXXXX)
trap 'git -C "$ROOT" worktree remove --force "$WORK/a" 2>/dev/null; git -C "$ROOT" worktree remove --force "$WORK/b" 2>/dev/null; rm -rf "$WORK"' EXIT

# Each revision's build is kept (target/ab/COMMIT) for the next run.
for side in a b; do
  rev=$A
  [ "$side" = b ] && rev=$B
  commit=$(git -C "$ROOT" rev-parse "$rev")
  git -C "$ROOT" worktree add --detach --quiet "$WORK/$side" "$commit"
  CARGO_TARGET_DIR="$ROOT/target/ab/$commit" cargo build --release --quiet \
    --manifest-path "$WORK/$side/Cargo.toml"
  ln -s "$ROOT/target/ab/$commit" "$WORK/target-$side"
done
gcc -O2 -g -pthread -o "$WORK/threads" "$ROOT/testdata/threads.c"

# One recording by side $1; appends "during_ms_per_1000 after_ms_per_1000" to $WORK/res-$1.
round() {
  local split samples
  # shellcheck disable=SC2086 # ARGS are words for ember
  split=$(python3 "$ROOT/scripts/profiler-cpu.py" "$WORK/o-$1" -- \
    "$WORK/target-$1/release/ember" record -F 999 ${ARGS:-} -o "$WORK/out-$1.folded" -- \
    "$WORK/threads" "$SECS")
  samples=$(grep -o '[0-9]* samples (' "$WORK/o-$1.err" | head -1 | awk '{print $1}')
  echo "$split $samples" | awk '{printf "%.3f %.3f\n", 1e6 * $1 / $3, 1e6 * $2 / $3}' >>"$WORK/res-$1"
}

for ((r = 1; r <= ROUNDS; r++)); do
  round a
  round b
done

python3 - "$WORK/res-a" "$WORK/res-b" "$A" "$B" "$ROUNDS" "$SECS" <<'EOF'
import statistics, sys
def load(p):
    rows = [tuple(map(float, l.split())) for l in open(p)]
    return [r[0] for r in rows], [r[1] for r in rows]
a, b = load(sys.argv[1]), load(sys.argv[2])
print(f"ember CPU per 1,000 samples, 2 busy threads, 999 Hz, {sys.argv[5]} alternating rounds of {sys.argv[6]} s (medians, ms)")
print(f"{'':12s} {'A ' + sys.argv[3][:10]:>16s} {'B ' + sys.argv[4][:10]:>16s} {'B/A':>6s}")
for name, i in (("while running", 0), ("after exit", 1)):
    ma, mb = statistics.median(a[i]), statistics.median(b[i])
    print(f"{name:12s} {ma:16.2f} {mb:16.2f} {mb / ma:6.2f}")
for name, i in (("while running", 0), ("after exit", 1)):
    ratios = [y / x for x, y in zip(a[i], b[i])]
    print(f"{name:12s} B/A of each round: median {statistics.median(ratios):.3f};",
          " ".join(f"{r:.2f}" for r in ratios))
for name, i in (("while running", 0), ("after exit", 1)):
    print(f"  {name}, each round: A", " ".join(f"{x:.2f}" for x in a[i]))
    print(f"  {name}, each round: B", " ".join(f"{x:.2f}" for x in b[i]))
EOF
