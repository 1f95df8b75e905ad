#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo fuzz / libFuzzer) of every parser of outside input:
# perf records, saved profiles (folded, pprof), /proc maps + JIT perf maps + kallsyms, and ELF
# files symbolized from arbitrary bytes.
#
#   scripts/fuzz.sh [SECONDS]     # each target for SECONDS (default 60), new inputs kept
#   scripts/fuzz.sh --ci          # each target for a fixed number of runs with a fixed seed:
#                                 # deterministic, so it fails only for a real regression
#
# Seed corpora live in testdata/fuzz/TARGET/. A crash leaves its input in
# fuzz/artifacts/TARGET/; make it a regression test (tests/garbage.rs) when fixing it.
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP lets the one stable toolchain here use them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT/fuzz"
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install --quiet --locked cargo-fuzz
MODE=${1:-60}
cargo fuzz build --sanitizer address 2>&1 | tail -1
status=0
for t in perf_records saved_profiles text_maps elf_symbolize; do
  work="$ROOT/fuzz/corpus/$t"
  mkdir -p "$work"
  if [ "$MODE" = "--ci" ]; then
    args=(-seed=1 -runs=30000)
  else
    args=(-max_total_time="$MODE")
  fi
  echo "fuzz: $t (${args[*]})"
  if ! cargo fuzz run --sanitizer address "$t" "$work" "$ROOT/testdata/fuzz/$t" -- "${args[@]}" 2>"$work.log"; then
    echo "fuzz: $t FAILED; see $work.log and fuzz/artifacts/$t/" >&2
    tail -30 "$work.log" >&2
    status=1
  else
    grep -E "^Done" "$work.log" || true
  fi
done
exit $status
