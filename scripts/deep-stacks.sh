#!/usr/bin/env bash
# Are the stacks of a big real program complete and named? Profiles rustc -O compiling a
# real crate (regex-syntax, from this repository's lockfile), with each backend: perf events (default 32 KiB
# stack copies, and the most they allow), ptrace (whole stacks), and the default (perf events,
# with a process whose stacks outgrow the copies taken over by ptrace). For rustc's samples it
# prints: how many reach their thread's root (no `[truncated]`), how many frames are named
# (not `module+0xADDR`, `[unknown]` or `[anon]`), and the compile's wall time against a bare
# one in the same run.
#
#   scripts/deep-stacks.sh [HZ]      # default 999
set -euo pipefail
HZ=${1:-999}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/ember-deep.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
EMBER="$ROOT/target/release/ember"
cargo fetch --quiet --manifest-path "$ROOT/Cargo.toml"
src=$(cargo metadata --format-version 1 --manifest-path "$ROOT/Cargo.toml" | python3 -c '
import json, os, sys
pkgs = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "regex-syntax"]
print(os.path.dirname(pkgs[0]["manifest_path"]))')
version=$(basename "$src")
# Its default features, as cargo would pass them (rustc is called directly: cargo would need
# the crates.io index to resolve the crate's optional dependencies).
features=(std unicode unicode-age unicode-bool unicode-case unicode-gencat unicode-perl
  unicode-script unicode-segment)
cfgs=()
for f in "${features[@]}"; do cfgs+=(--cfg "feature=\"$f\""); done

# One release build of the crate from scratch, run under "$@"; prints its wall time (s).
build() {
  rm -rf "$WORK/out"
  local start end
  start=$(date +%s.%N)
  "$@" rustc --edition 2021 --crate-type lib --crate-name regex_syntax -C opt-level=3 \
    "${cfgs[@]}" --out-dir "$WORK/out" "$src/src/lib.rs" >/dev/null 2>"$WORK/build-err" ||
    { cat "$WORK/build-err" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

# rustc's samples in a folded file: reaching the root, named frames.
measure() {
  python3 - "$1" <<'EOF'
import re, sys
samples = whole = frames = named = 0
unnamed = re.compile(r"\+0x[0-9a-f]+$|^\[unknown\]$|^\[anon\]")
for line in open(sys.argv[1]):
    stack, n = line.rstrip("\n").rsplit(" ", 1)
    fs = stack.split(";")
    if not fs[0].startswith("rustc"):
        continue
    n = int(n)
    samples += n
    whole += n * ("[truncated]" not in fs)
    fs = [f for f in fs[1:] if f != "[truncated]"]
    frames += n * len(fs)
    named += n * sum(1 for f in fs if not unnamed.search(f))
print(f"{samples:8d} {100 * whole / samples:9.2f} % {100 * named / max(frames, 1):9.3f} %", end="")
EOF
}

echo "rustc -O building $version, $HZ Hz, $(nproc) CPUs"
bare=$(build)
printf '%-28s %8s %11s %11s %10s\n' "profiler" samples "whole" "named" "slowdown"
for setup in "perf:--backend perf" "perf, 65016 B copies:--backend perf --stack-size 65016" \
  "ptrace:--backend ptrace" "default (auto, takeover):--backend auto"; do
  name=${setup%%:*}
  args=${setup#*:}
  # shellcheck disable=SC2086
  t=$(build "$EMBER" record -F "$HZ" $args -o "$WORK/out.folded" --)
  printf '%-28s ' "$name"
  measure "$WORK/out.folded"
  printf ' %9.2fx\n' "$(echo "$t / $bare" | bc -l)"
done
