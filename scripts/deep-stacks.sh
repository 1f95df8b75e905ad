#!/usr/bin/env bash
# Are the stacks of a big real program complete and named? Profiles rustc -O compiling a
# real crate (regex-syntax, from this repository's lockfile), with each way of walking stacks:
# perf events' stack copies (default 32 KiB, and the most they allow), ptrace (whole stacks;
# each stop copies the stack up to the outer frames that are as the thread's last unwind read
# them, and once more copying every stack whole), user space with a process whose stacks
# outgrow the copies taken over by ptrace (`--unwind user`), and the default (walked in the
# kernel at each sample), also on a rustc started during the recording; and samply where it
# is installed (`cargo install samply`; its cost and its sample count, its stacks not checked). For rustc's samples it prints: how many reach their thread's
# root (no `[truncated]`), how many frames are named (not `module+0xADDR`, `[unknown]` or
# `[anon]`), the compile's wall time against a bare one in the same run, and where ptrace
# samples, the MB of stack it copied against what copying every stack whole would have.
#
#   scripts/deep-stacks.sh [HZ] [ROUNDS]      # defaults: 999 Hz, 3 rounds
#   ONLY='copies|walked|samply' scripts/deep-stacks.sh 999 5   # the setups whose names match
#                                             # (a regex), and no check of the tables
#
# Every other round runs the setups in reverse order. Each setup is also set against the
# kernel's walk in the same round (wall time and rustc's CPU: the pairs' median and a 95 %
# confidence interval of it).
#
# Also per setup: the profiler's own CPU per 1,000 samples (everything's CPU time less rustc's), and
# rustc's CPU time against the bare build's (what sampling costs the compile itself).
# Last, the unwind tables (rows from .eh_frame alone, for an in-kernel walk) checked against
# the DWARF unwinder on every sample of one more build.
# Needs /usr/bin/time (Debian's package time).
. "$(dirname "$0")/lib/measure.sh"
HZ=${1:-999}
ROUNDS=${2:-3}
measure_setup deep
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

# One release build of the crate from scratch, run under "$@"; prints its wall time (s), the
# CPU time (s) of everything ("$@" and rustc) and of rustc alone.
build() {
  rm -rf "$WORK/out"
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -o "$WORK/all-cpu" -f "%U %S" "$@" \
    /usr/bin/time -o "$WORK/rustc-cpu" -f "%U %S" \
    rustc --edition 2021 --crate-type lib --crate-name regex_syntax -C opt-level=3 \
    "${cfgs[@]}" --out-dir "$WORK/out" "$src/src/lib.rs" >/dev/null 2>"$WORK/build-err" ||
    { cat "$WORK/build-err" >&2; exit 1; }
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $(awk '{print $1 + $2}' "$WORK/all-cpu")" \
    "$(awk '{print $1 + $2}' "$WORK/rustc-cpu")"
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
print(f"{samples} {100 * whole / samples:.2f} % {100 * named / max(frames, 1):.3f} %", end="")
EOF
}

# name:ember's arguments[:seconds rustc starts after, under a shell: a process started in
# the middle of a recording]
SETUPS=("perf, copies:--backend perf --unwind user"
  "perf, 65016 B copies:--backend perf --unwind user --stack-size 65016"
  "ptrace:--backend ptrace" "ptrace, every copy whole:--backend ptrace --debug-whole-copies"
  "user space, takeover:--unwind user"
  "default (walked in the kernel):"
  "default, rustc started 0.3 s in::0.3")
if command -v samply >/dev/null; then
  # samply refuses to run above kernel.perf_event_paranoid 1, even as root: lowered while
  # this runs, then put back.
  PARANOID=$(cat /proc/sys/kernel/perf_event_paranoid)
  if [ "$PARANOID" -le 1 ] || echo 1 2>/dev/null >/proc/sys/kernel/perf_event_paranoid; then
    trap 'echo "$PARANOID" >/proc/sys/kernel/perf_event_paranoid; rm -rf "$WORK"' EXIT
    SETUPS+=("samply:samply")
  else
    echo "samply needs kernel.perf_event_paranoid <= 1 (it is $PARANOID): leaving it out" >&2
  fi
fi
choose_setups

echo "rustc -O building $version, $HZ Hz, $(nproc) CPUs, $ROUNDS rounds (medians)"
# Each round: a bare build, then one under each setup; the slowdown is against that round's.
for ((r = 1; r <= ROUNDS; r++)); do
  read -r bare _ bare_cpu <<<"$(build)"
  setups_in_order "$r"
  for setup in "${ORDER[@]}"; do
    IFS=: read -r name args delay <<<"$setup"
    if [ "$args" = samply ]; then
      # Its stacks are not checked (its profile is not folded stacks): its cost, and its
      # samples counted in its profile (Gecko format) for its CPU per sample.
      read -r t all rustc <<<"$(build samply record --save-only --rate "$HZ" \
        -o "$WORK/samply.json.gz" --)"
      n=$(python3 -c '
import gzip, json, sys
def count(p):
    return sum(t["samples"]["length"] for t in p.get("threads", [])) + sum(
        count(c) for c in p.get("processes", []))
print(count(json.load(gzip.open(sys.argv[1]))))' "$WORK/samply.json.gz")
      echo "$name|$n nan % nan %|$(echo "$t / $bare" | bc -l)|-|$(echo "$all - $rustc" | bc -l) $(
        echo "$rustc / $bare_cpu" | bc -l)" >>"$WORK/rows"
      continue
    elif [ -n "$delay" ]; then
      # shellcheck disable=SC2086,SC2016 # $args are words; "$@" is the shell's own
      read -r t all rustc <<<"$(build "$EMBER" record -v -F "$HZ" $args \
        -o "$WORK/out.folded" -- sh -c "sleep $delay; "'exec "$@"' sh)"
      t=$(echo "$t - $delay" | bc -l)
    else
      # shellcheck disable=SC2086
      read -r t all rustc <<<"$(build "$EMBER" record -v -F "$HZ" $args -o "$WORK/out.folded" --)"
    fi
    copied=$(grep -o '([0-9.]* of [0-9.]* MB of stack copied)' "$WORK/build-err" | tr -d '()' |
      awk '{print $1, $3}' || true)
    echo "$name|$(measure "$WORK/out.folded")|$(echo "$t / $bare" | bc -l)|${copied:--}|$(
      echo "$all - $rustc" | bc -l) $(echo "$rustc / $bare_cpu" | bc -l)" >>"$WORK/rows"
  done
done

python3 - "$WORK/rows" "$ROOT/scripts/lib" <<'EOF2'
import statistics, sys
sys.path.insert(0, sys.argv[2])
from slowdown import median_interval
rows = {}
for line in open(sys.argv[1]):
    name, counts, ratio, copied, cpu = line.rstrip("\n").split("|")
    ember_cpu, rustc_cpu = map(float, cpu.split())
    counts = counts.split()
    rows.setdefault(name, []).append({
        "samples": int(counts[0]), "whole": float(counts[1]), "named": float(counts[3]),
        "slowdown": float(ratio), "copied": copied.split(),
        "ember_ms": 1e6 * ember_cpu / max(int(counts[0]), 1), "rustc_cpu": rustc_cpu})
med = statistics.median
print(f"{'profiler':32s} {'samples':>7s} {'whole':>9s} {'named':>9s} {'slowdown':>8s} "
      f"{'rustc CPU':>9s} {'own ms':>8s}  stack MB copied / whole")
print(f"{'':32s} {'':7s} {'':9s} {'':9s} {'':8s} {'x bare':>9s} {'/1k smp':>8s}")
for name, runs in rows.items():
    m = lambda k: med([r[k] for r in runs])
    copied = [r["copied"] for r in runs if len(r["copied"]) == 2]
    mb = (f"{med([float(c[0]) for c in copied]):.0f} / {med([float(c[1]) for c in copied]):.0f}"
          if copied else "-")
    print(f"{name:32s} {m('samples'):7.0f} {m('whole'):7.2f} % {m('named'):7.3f} % "
          f"{m('slowdown'):7.2f}x {m('rustc_cpu'):8.2f}x {m('ember_ms'):8.0f}  {mb}")
print("slowdown per round:", "; ".join(
    f"{name}: " + " ".join(f"{r['slowdown']:.2f}" for r in runs) for name, runs in rows.items()))
# Each setup against the kernel's walk in the same round (the n-th run of each is round n's):
# its wall time and rustc's CPU time over the walk's, free of the bare builds' own spread.
walked = rows.get("default (walked in the kernel)")
if walked and len(rows) > 1:
    print("against the kernel's walk in the same round (median of the pairs, 95 % interval):")
    for name, runs in rows.items():
        if runs is walked:
            continue
        line = f"  {name:32s}"
        for key, what in (("slowdown", "wall"), ("rustc_cpu", "rustc CPU")):
            mid, low, high = median_interval(
                [r[key] / w[key] for r, w in zip(runs, walked)])
            line += f"  {what} x{mid:.3f} (x{low:.3f}-x{high:.3f})"
        print(line)
EOF2

# The unwind tables (rows from .eh_frame alone) checked against the DWARF unwinder on every
# sample of two more builds: walked by their user-space twin, and in the kernel.
[ -z "${ONLY:-}" ] || exit 0
for how in user kernel; do
  build "$EMBER" record -v --unwind "$how" --debug-check-tables -F "$HZ" \
    -o "$WORK/out.folded" -- >/dev/null
  echo "--unwind $how:"
  grep -A2 'unwind tables:' "$WORK/build-err" | sed 's/^ember: /  /'
done
