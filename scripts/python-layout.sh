#!/usr/bin/env bash
# The offsets of src/python/layout.rs for an installed CPython, from its own headers: compiles
# scripts/python-layout.c against PREFIX/include/pythonX.Y (with Py_BUILD_CORE, for the
# internal structures) and runs it.
#
#   scripts/python-layout.sh PREFIX VERSION     # e.g. /usr 3.11, or ~/.pyenv/versions/3.12.1 3.12
set -euo pipefail
PREFIX=$1
VERSION=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
gcc -I"$PREFIX/include/python$VERSION" -o "$out" "$ROOT/scripts/python-layout.c"
"$out"
