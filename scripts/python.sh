#!/usr/bin/env bash
# Python frames, measured: testdata/python/work.py (handler -> parse_payloads -> json, render,
# fib) measures each function's share of its own CPU time (time.thread_time); ember records it
# at HZ and this prints each function's share of the samples against that truth, per
# interpreter build, each sample also checked against the program's own timeline and the
# shares set beside samplers replayed on that timeline (scripts/lib/python-shares.py): what
# chance alone makes of the shares in that run. Then start-up: testdata/python/imports.py
# measures the share of its imports spent in module and class bodies (freed once they have
# run), recorded by ember and py-spy (scripts/lib/startup-shares.py). Then the slowdown of
# work.py, side by side in alternating rounds: bare, ember (Python + native + kernel frames),
# py-spy (default, and --native): the wall time a fixed amount of work took (the rounds a bare
# run does in SECONDS of CPU; it prints work_seconds) against the round's bare run. py-spy
# comes from PyPI into a virtual environment of this script's own (never a dependency of
# ember); PYSPY=0 leaves it out.
#
#   scripts/python.sh [ROUNDS] [SECONDS] [HZ]     # defaults: 3 rounds of 3 s at 999 Hz
. "$(dirname "$0")/lib/measure.sh"
ROUNDS=${1:-3}
SECS=${2:-3}
HZ=${3:-999}
measure_setup python
WORKLOAD="$ROOT/testdata/python/work.py"

# The interpreter builds: Debian's (linked into the executable), one linked to the shared
# libpython3.11 (testdata/python/embed.c), and pyenv's when installed.
pythons=(/usr/bin/python3.11)
gcc -O2 -I/usr/include/python3.11 -o "$WORK/python-shared" "$ROOT/testdata/python/embed.c" -lpython3.11
pythons+=("$WORK/python-shared")
for v in "$HOME"/.pyenv/versions/3.1[123].*/bin/python3.1[123]; do
  [ -x "$v" ] && pythons+=("$v")
done

if [ "${PYSPY:-1}" = 1 ]; then
  python3 -m venv "$WORK/venv" >/dev/null && "$WORK/venv/bin/pip" install --quiet py-spy
  PYSPY_BIN="$WORK/venv/bin/py-spy"
fi

echo "== each function's share of the work: the program's own measure, and ember's samples ($HZ Hz, $SECS s)"
for py in "${pythons[@]}"; do
  "$EMBER" record -F "$HZ" -o "$WORK/w.folded" -o "$WORK/w.fxprof.json" -- \
    "$py" "$WORKLOAD" "$SECS" --timeline "$WORK/timeline" >"$WORK/truth" 2>/dev/null
  python3 "$ROOT/scripts/lib/python-shares.py" "$WORK/truth" "$WORK/w.folded" "$py" \
    "$WORK/timeline" "$(python3 -c "print(1 / $HZ)")" "$WORK/w.fxprof.json"
done

STARTUP="$ROOT/testdata/python/imports.py"
echo "== start-up: 60 modules imported, each burning CPU in its body and in its class's body ($STARTUP, $HZ Hz)"
for py in "${pythons[@]}"; do
  echo "$py"
  "$EMBER" record -F "$HZ" -o "$WORK/s.folded" -- "$py" "$STARTUP" >"$WORK/s.truth" 2>/dev/null
  python3 "$ROOT/scripts/lib/startup-shares.py" "$WORK/s.truth" "$WORK/s.folded" ember
  [ -z "${PYSPY_BIN:-}" ] && continue
  rm -f "$WORK/s.raw"
  "$PYSPY_BIN" record -r "$HZ" -f raw -o "$WORK/s.raw" -- "$py" "$STARTUP" >"$WORK/s.truth" 2>/dev/null
  if [ -s "$WORK/s.raw" ]; then
    python3 "$ROOT/scripts/lib/startup-shares.py" "$WORK/s.truth" "$WORK/s.raw" py-spy
  else
    echo "    py-spy: no profile of this build"
  fi
done

# A fixed amount of work (the rounds a bare run does in SECS of CPU), so that the wall time
# counts what sampling costs inside the program's threads too, not only its stops.
/usr/bin/python3.11 "$WORKLOAD" "$SECS" >"$WORK/o"
N=$(awk '$1 == "rounds" {print $2}' "$WORK/o")
echo "== slowdown of /usr/bin/python3.11 work.py --rounds $N (the work a bare run does in $SECS s of CPU; its wall time against the round's bare run)"
: >"$WORK/results"
for i in $(seq "$ROUNDS"); do
  /usr/bin/python3.11 "$WORKLOAD" "$SECS" --rounds "$N" >"$WORK/o"
  echo "bare $(work_of "$WORK/o")" >>"$WORK/results"
  for who in ember py-spy py-spy-native; do
    [ "$who" != ember ] && [ -z "${PYSPY_BIN:-}" ] && continue
    case $who in
      ember) cmd=("$EMBER" record -F "$HZ" -o "$WORK/e.svg" --) ;;
      py-spy) cmd=("$PYSPY_BIN" record -r "$HZ" -o "$WORK/p.svg" --) ;;
      py-spy-native) cmd=("$PYSPY_BIN" record -r "$HZ" --native -o "$WORK/n.svg" --) ;;
    esac
    "${cmd[@]}" /usr/bin/python3.11 "$WORKLOAD" "$SECS" --rounds "$N" >"$WORK/o" 2>/dev/null
    echo "$who $(work_of "$WORK/o")" >>"$WORK/results"
  done
  echo "round $i of $ROUNDS done" >&2
done
slowdown_table "$WORK/results" "work.py: $N rounds at $HZ Hz, the wall time the work took"
