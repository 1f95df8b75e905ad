#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#
#   scripts/test.sh                 # set up (first run only does real work), then cargo test
#   scripts/test.sh --setup-only    # only install what the tests need
#   scripts/test.sh -- ARGS         # pass ARGS to `cargo test` (e.g. -- --test record)
#
# The end-to-end tests build C workloads (gcc, g++), cut debug info out of them (objcopy, xz),
# drop privileges (setpriv), find processes (pgrep), read our pprof files with `go tool pprof`,
# validate speedscope files against speedscope's published schema (Python jsonschema) and open
# the SVG in a real browser (Debian's chromium, driven by playwright-core under node).
# On Debian or Ubuntu everything comes from apt and npm; as a normal user apt runs through sudo.
# A test that cannot run here fails saying why, unless EMBER_TEST_SKIP names it (see README).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

setup_only=false
cargo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --setup-only) setup_only=true ;;
    --) shift; cargo_args=("$@"); break ;;
    *) echo "scripts/test.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift
done

# What the tests call, and the Debian package that brings it.
missing_packages() {
  local need=()
  command -v gcc >/dev/null || need+=(gcc libc6-dev)
  command -v g++ >/dev/null || need+=(g++)
  command -v objcopy >/dev/null || need+=(binutils)
  command -v xz >/dev/null || need+=(xz-utils)
  command -v setpriv >/dev/null || need+=(util-linux)
  command -v mount >/dev/null || need+=(mount)
  command -v pgrep >/dev/null || need+=(procps)
  command -v timeout >/dev/null || need+=(coreutils)
  [ -f /usr/include/linux/seccomp.h ] || need+=(linux-libc-dev)   # testdata/noperf.c
  command -v go >/dev/null || need+=(golang-go)                     # go tool pprof
  [ -x /usr/bin/chromium ] || need+=(chromium)                      # the SVG in a browser
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  command -v debuginfod >/dev/null || need+=(debuginfod)            # a debuginfod server
  command -v tmux >/dev/null || need+=(tmux)                        # a terminal for the status line
  # The BPF program's object is checked against its source (scripts/bpf.sh --check).
  command -v clang >/dev/null || need+=(clang)
  command -v llvm-strip >/dev/null || need+=(llvm)
  [ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
  # libc's separate debug file: compressed DWARF in 2,000 units (naming reads only some).
  dpkg-query -W -f '${Status}' libc6-dbg 2>/dev/null | grep -q "ok installed" ||
    need+=(libc6-dbg)
  # Python frames: Debian's python3.11 (the interpreter in the executable) and its shared
  # libpython3.11 with headers (tests build an interpreter that maps it).
  [ -x /usr/bin/python3.11 ] || need+=(python3.11)
  [ -f /usr/include/python3.11/Python.h ] || need+=(libpython3.11-dev)
  /usr/bin/python3.11 -c 'import pytest' 2>/dev/null || need+=(python3-pytest)   # --per-test
  # Debian's jsonschema, for Debian's python3 (pip refuses system-wide installs, PEP 668).
  /usr/bin/python3 -c 'import jsonschema' 2>/dev/null || need+=(python3-jsonschema)
  echo "${need[@]}"
}

install_packages() {
  local need
  need=$(missing_packages)
  [ -z "$need" ] && return 0
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "scripts/test.sh: the tests need these Debian packages: $need" >&2
      echo "  install them as root: apt-get install $need" >&2
      exit 1
    fi
    sudo=(sudo)
  fi
  if ! command -v apt-get >/dev/null; then
    echo "scripts/test.sh: not a Debian-like system; install the equivalents of: $need" >&2
    exit 1
  fi
  echo "scripts/test.sh: installing $need"
  # shellcheck disable=SC2086 # word splitting of the package list is wanted
  "${sudo[@]}" apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends $need >/dev/null
  need=$(missing_packages)
  if [ -n "$need" ]; then
    echo "scripts/test.sh: still missing after apt-get install: $need" >&2
    exit 1
  fi
}

# speedscope's published schema and playwright-core (drives Debian's chromium; no download).
install_node_modules() {
  local mark=tests/browser/node_modules/.ember-installed
  if [ -f "$mark" ] && [ "$mark" -nt tests/browser/package.json ]; then
    return 0
  fi
  npm install --prefix tests/browser --no-audit --no-fund --silent
  touch "$mark"
}

install_packages
install_node_modules
$setup_only && exit 0

# The end-to-end tests sample real processes with perf events; say plainly what the kernel allows.
echo "scripts/test.sh: kernel.perf_event_paranoid = $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown), running as uid $(id -u)"
export EMBER_TEST_PYTHON=/usr/bin/python3
exec cargo test --locked --no-fail-fast "${cargo_args[@]}"
