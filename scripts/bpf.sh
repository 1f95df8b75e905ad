#!/usr/bin/env bash
# Build ember's BPF program (src/sampler/bpf/unwind.bpf.c) into the object kept next to it,
# which the library includes; `--check` fails if the kept object is not what the source
# builds to (CI runs it). Needs Debian's clang (-target bpf) and libbpf-dev's headers; the
# build is reproducible: paths relative to the repository (BTF line info names the source
# file), no DWARF (BTF only, which the loader needs).
#
#   scripts/bpf.sh [--check]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SRC=src/sampler/bpf/unwind.bpf.c
OBJ=src/sampler/bpf/unwind.bpf.o
out=$(mktemp /tmp/ember-bpf.XXXXXX.o)
trap 'rm -f "$out"' EXIT
clang -O2 -g -target bpf -D__TARGET_ARCH_x86 -I/usr/include/x86_64-linux-gnu \
  -fdebug-prefix-map="$ROOT"=. \
  -c "$SRC" -o "$out"
llvm-strip -g "$out" 2>/dev/null || llvm-strip-14 -g "$out"
if [ "${1:-}" = --check ]; then
  if ! cmp -s "$out" "$OBJ"; then
    echo "$OBJ is not what $SRC builds to: run scripts/bpf.sh and commit the object" >&2
    exit 1
  fi
  echo "$OBJ matches $SRC"
else
  cp "$out" "$OBJ"
  echo "wrote $OBJ ($(stat -c %s "$OBJ") bytes)"
fi
