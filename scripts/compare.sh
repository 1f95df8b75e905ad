#!/usr/bin/env bash
# ember against perf (+ perf script + inferno) and, when installed, samply — the same
# workloads, runs alternating, medians and ratios; writes BENCHMARKS.md.
#
#   scripts/compare.sh                 # full: 3 runs, 10 s and 60 s recordings
#   RUNS=5 LONG=30 scripts/compare.sh  # more runs, shorter "long" recording
#   QUICK=1 scripts/compare.sh         # a smoke run (1 run, short recordings)
#
# Installs inferno and samply with `cargo install` if missing (SAMPLY=0 leaves samply out): they
# are tools of this script, never dependencies of ember's build. Needs perf, gcc, python3, GNU
# time.
. "$(dirname "$0")/lib/measure.sh"
RUNS=${RUNS:-3}
SHORT=${SHORT:-10}
LONG=${LONG:-60}
LONG_RUNS=${LONG_RUNS:-2}
if [ "${QUICK:-0}" = 1 ]; then RUNS=1; SHORT=3; LONG=6; LONG_RUNS=1; fi
OUT=${OUT:-$ROOT/BENCHMARKS.md}
measure_setup compare

say() { echo "compare: $*" >&2; }

# --- tools -------------------------------------------------------------------------------
need_perf
[ -x /usr/bin/time ] || { say "GNU time is missing: apt-get install time"; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v inferno-flamegraph >/dev/null; then
  say "installing inferno (cargo install inferno)"
  cargo install --quiet --locked inferno
fi
HAVE_SAMPLY=0
if [ "${SAMPLY:-1}" = 1 ] && ! command -v samply >/dev/null; then
  say "installing samply (cargo install samply)"
  cargo install --quiet --locked samply || true
fi
[ "${SAMPLY:-1}" = 1 ] && command -v samply >/dev/null && HAVE_SAMPLY=1
# samply refuses to run above kernel.perf_event_paranoid 1, even as root: lower it for this
# script (root only) and put it back when it ends.
PARANOID=$(cat /proc/sys/kernel/perf_event_paranoid)
if [ "$HAVE_SAMPLY" = 1 ] && [ "$PARANOID" -gt 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo 1 >/proc/sys/kernel/perf_event_paranoid
    trap 'echo "$PARANOID" >/proc/sys/kernel/perf_event_paranoid; rm -rf "$WORK"' EXIT
  else
    say "samply needs kernel.perf_event_paranoid <= 1 (it is $PARANOID): leaving samply out"
    HAVE_SAMPLY=0
  fi
fi

say "building ember (release) and the workloads"
workload shares
workload threads -pthread

R="$WORK/results"   # lines: key value
: >"$R"
rec() { echo "$1 $2" >>"$R"; }
field() { awk -v k="$1" '$1 == k {print $2}' "$2" | tail -1; }
now_ns() { date +%s%N; }

# A fixed amount of work: ~2 s bare, one and two threads.
W1=(0 700)          # shares SECONDS ROUNDS
W2=(0 12000)        # threads SECONDS ROUNDS

# --- A: target slowdown --------------------------------------------------------------------
for hz in 99 999 4999; do
  for w in 1 2; do
    if [ "$w" = 1 ]; then prog=("$WORK/shares" "${W1[@]}"); else prog=("$WORK/threads" "${W2[@]}"); fi
    for i in $(seq "$RUNS"); do
      "${prog[@]}" >"$WORK/o" 2>/dev/null
      rec "slow_${hz}_${w}_bare_wall" "$(field work_seconds "$WORK/o")"
      rec "slow_${hz}_${w}_bare_cpu" "$(field cpu_seconds "$WORK/o")"

      "$EMBER" record -F "$hz" -o "$WORK/e.svg" -- "${prog[@]}" >"$WORK/o" 2>"$WORK/e.err"
      rec "slow_${hz}_${w}_ember_wall" "$(field work_seconds "$WORK/o")"
      rec "slow_${hz}_${w}_ember_cpu" "$(field cpu_seconds "$WORK/o")"

      perf record -q -F "$hz" --call-graph dwarf -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
      rec "slow_${hz}_${w}_perfdwarf_wall" "$(field work_seconds "$WORK/o")"
      rec "slow_${hz}_${w}_perfdwarf_cpu" "$(field cpu_seconds "$WORK/o")"

      perf record -q -F "$hz" --call-graph fp -o "$WORK/p.data" -- "${prog[@]}" >"$WORK/o" 2>/dev/null
      rec "slow_${hz}_${w}_perffp_wall" "$(field work_seconds "$WORK/o")"
      rec "slow_${hz}_${w}_perffp_cpu" "$(field cpu_seconds "$WORK/o")"

      if [ "$HAVE_SAMPLY" = 1 ]; then
        samply record --save-only -r "$hz" -o "$WORK/s.json.gz" -- "${prog[@]}" >"$WORK/o" 2>/dev/null || true
        rec "slow_${hz}_${w}_samply_wall" "$(field work_seconds "$WORK/o")"
        rec "slow_${hz}_${w}_samply_cpu" "$(field cpu_seconds "$WORK/o")"
      fi
    done
    say "slowdown at $hz Hz, $w thread(s): done"
  done
done

# --- B: from target exit to SVG, RSS, samples vs expected -----------------------------------
# The workload prints when it ended (end_ns); "post" is from then to the SVG on disk.
post_run() { # name secs [hz]
  local name=$1 secs=$2 hz=${3:-999} split
  # ember: recording and SVG in one command. Its own CPU split at the target's exit.
  split=$(/usr/bin/time -f "%M %U %S" -o "$WORK/t" python3 "$ROOT/scripts/profiler-cpu.py" "$WORK/o" -- "$EMBER" record -F "$hz" -o "$WORK/e.svg" -- "$WORK/threads" "$secs")
  local done_ns; done_ns=$(now_ns)
  cp "$WORK/o.err" "$WORK/e.err"
  rec "during_${name}_ember" "${split% *}"
  rec "after_${name}_ember" "${split#* }"
  local end; end=$(field end_ns "$WORK/o")
  rec "post_${name}_ember" "$(echo "($done_ns - $end) / 1000000000" | bc -l)"
  rec "rss_${name}_ember" "$(awk '{print $1}' "$WORK/t")"
  # (GNU time's CPU would count the helper's polling too.)
  rec "cpu_${name}_ember" "$(echo "$(field cpu_seconds "$WORK/o") $split" | awk '{print $1 + $2 + $3}')"
  rec "target_cpu_${name}_ember" "$(field cpu_seconds "$WORK/o")"
  rec "samples_${name}_ember" "$(grep -o '[0-9]* samples (' "$WORK/e.err" | head -1 | awk '{print $1}')"
  rec "lost_${name}_ember" "$(grep -o '([0-9]* lost)' "$WORK/e.err" | head -1 | tr -dc 0-9)"

  # perf record --call-graph dwarf, then perf script | inferno-collapse-perf | inferno-flamegraph
  split=$(/usr/bin/time -f "%M %U %S" -o "$WORK/t1" python3 "$ROOT/scripts/profiler-cpu.py" "$WORK/o" -- perf record -q -F "$hz" --call-graph dwarf -o "$WORK/p.data" -- "$WORK/threads" "$secs")
  end=$(field end_ns "$WORK/o")
  rec "during_${name}_perf" "${split% *}"
  rec "after_record_${name}_perf" "${split#* }"
  /usr/bin/time -f "%M %U %S" -o "$WORK/t2" sh -c "perf script -i '$WORK/p.data' 2>/dev/null > '$WORK/p.txt'"
  /usr/bin/time -f "%M %U %S" -o "$WORK/t3" sh -c "inferno-collapse-perf < '$WORK/p.txt' > '$WORK/p.folded'"
  /usr/bin/time -f "%M %U %S" -o "$WORK/t4" sh -c "inferno-flamegraph < '$WORK/p.folded' > '$WORK/p.svg'"
  done_ns=$(now_ns)
  rec "post_${name}_perf" "$(echo "($done_ns - $end) / 1000000000" | bc -l)"
  rec "rss_${name}_perf" "$(cat "$WORK/t1" "$WORK/t2" "$WORK/t3" "$WORK/t4" | awk '{if ($1 > m) m = $1} END {print m}')"
  rec "cpu_${name}_perf" "$(cat "$WORK/t2" "$WORK/t3" "$WORK/t4" | awk -v t="$(field cpu_seconds "$WORK/o")" -v s="$split" '{c += $2 + $3} END {split(s, p, " "); print c + t + p[1] + p[2]}')"
  rec "target_cpu_${name}_perf" "$(field cpu_seconds "$WORK/o")"
  rec "samples_${name}_perf" "$(grep -c ' cpu-clock' "$WORK/p.txt" || true)"

  # samply: records and saves its profile; it names frames later, in the browser.
  if [ "$HAVE_SAMPLY" = 1 ]; then
    split=$(python3 "$ROOT/scripts/profiler-cpu.py" "$WORK/o" -- samply record --save-only -r "$hz" -o "$WORK/s.json.gz" -- "$WORK/threads" "$secs")
    rec "during_${name}_samply" "${split% *}"
    rec "after_${name}_samply" "${split#* }"
    rec "samples_${name}_samply" "$(python3 - "$WORK/s.json.gz" <<'PY'
import gzip, json, sys
p = json.load(gzip.open(sys.argv[1]))
def count(s):
    return s.get("length") or len(s.get("stack", s.get("data", [])))
print(sum(count(t["samples"]) for t in p.get("threads", [])))
PY
)"
  fi
}
for i in $(seq "$RUNS"); do post_run short "$SHORT"; done
say "$SHORT s recordings: done"
for i in $(seq "$LONG_RUNS"); do post_run long "$LONG"; done
say "$LONG s recordings: done"
for i in $(seq "$RUNS"); do post_run fast "$SHORT" 4999; done
say "$SHORT s recordings at 4999 Hz: done"

# --- C: loss at 10 kHz on two busy threads ---------------------------------------------------
"$EMBER" record -F 10000 -o "$WORK/e.svg" -- "$WORK/threads" 3 >"$WORK/o" 2>"$WORK/e.err" || true
rec "k10_samples" "$(grep -o '[0-9]* samples (' "$WORK/e.err" | head -1 | awk '{print $1}')"
rec "k10_lost" "$(grep -o '([0-9]* lost)' "$WORK/e.err" | head -1 | tr -dc 0-9)"
rec "k10_cpu" "$(field cpu_seconds "$WORK/o")"
grep -q "LOST\|lost" "$WORK/e.svg" && rec k10_svg_says_lost 1 || rec k10_svg_says_lost 0

python3 - "$R" "$OUT" "$RUNS" "$SHORT" "$LONG" "$LONG_RUNS" "$HAVE_SAMPLY" <<'PY'
import sys, statistics as st, subprocess, platform, datetime, os
res, out, runs, short, long_, long_runs, samply = sys.argv[1:]
vals = {}
for line in open(res):
    parts = line.split()
    if len(parts) == 2 and parts[1] not in ("", "nan"):
        try:
            vals.setdefault(parts[0], []).append(float(parts[1]))
        except ValueError:
            pass
med = lambda k: st.median(vals[k]) if k in vals else float("nan")
def cpu_model():
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
L = []
L.append("# Benchmarks: ember against perf" + (" and samply" if samply == "1" else ""))
L.append("")
L.append(f"Written by `scripts/compare.sh` on {datetime.date.today()} — {os.cpu_count()} CPUs "
         f"({cpu_model()}), Linux {platform.release()}, perf_event_paranoid "
         f"{open('/proc/sys/kernel/perf_event_paranoid').read().strip()}. Medians of {runs} "
         f"alternating runs ({long_runs} for the {long_} s recordings). Ratios are ember / peer "
         "from the same run; this machine is noisy, so read the ratios, not the absolute times.")
L.append("")
L.append("## Target slowdown (work time under the profiler / bare, fixed work)")
L.append("")
tools = ["ember", "perfdwarf", "perffp"] + (["samply"] if samply == "1" else [])
names = {"ember": "ember (auto: DWARF)", "perfdwarf": "perf --call-graph dwarf", "perffp": "perf --call-graph fp", "samply": "samply"}
L.append("| Hz | threads | " + " | ".join(f"{names[t]} wall / cpu" for t in tools) + " | ember excess / perf dwarf excess (wall) |")
L.append("|---|---|" + "---|" * len(tools) + "---|")
for hz in (99, 999, 4999):
    for w in (1, 2):
        b_w, b_c = med(f"slow_{hz}_{w}_bare_wall"), med(f"slow_{hz}_{w}_bare_cpu")
        cells = []
        for t in tools:
            cells.append(f"×{med(f'slow_{hz}_{w}_{t}_wall') / b_w:.4f} / ×{med(f'slow_{hz}_{w}_{t}_cpu') / b_c:.4f}")
        e = med(f"slow_{hz}_{w}_ember_wall") / b_w - 1
        p = med(f"slow_{hz}_{w}_perfdwarf_wall") / b_w - 1
        ratio = f"{e / p:.2f}" if p > 0.001 else "n/a (perf within noise)"
        L.append(f"| {hz} | {w} | " + " | ".join(cells) + f" | {ratio} |")
L.append("")
L.append("## From target exit to SVG written, 2 busy threads at 999 Hz")
L.append("")
L.append("| recording | ember | perf record + perf script + inferno | ratio | profiler CPU ember / perf pipeline | peak RSS ember / perf pipeline |")
L.append("|---|---|---|---|---|---|")
for name, secs in (("short", short), ("long", long_)):
    e, p = med(f"post_{name}_ember"), med(f"post_{name}_perf")
    ec = med(f"cpu_{name}_ember") - med(f"target_cpu_{name}_ember")
    pc = med(f"cpu_{name}_perf") - med(f"target_cpu_{name}_perf")
    er, pr = med(f"rss_{name}_ember") / 1024, med(f"rss_{name}_perf") / 1024
    L.append(f"| {secs} s | {e:.2f} s | {p:.2f} s | {e / p:.3f} | {ec:.2f} s / {pc:.2f} s | {er:.0f} MB / {pr:.0f} MB |")
L.append("")
L.append("Profiler CPU is the CPU time of the whole pipeline minus the target's own. ember's RSS is "
         "measured by GNU time over ember and its child (the target is small).")
L.append("")
L.append("## Profiler CPU per 1,000 samples, 2 busy threads")
L.append("")
L.append("While the target ran (its own threads' CPU when the target's last line appeared, "
         "`scripts/profiler-cpu.py`) and after it exited (the rest). perf's \"after\" is "
         "perf record's own plus perf script and inferno; samply's is saving its profile "
         "(it names frames later, in the browser, so naming is not in its figures). The split "
         "is read every 5 ms and where each profiler does its work differs (samply unwinds as it "
         "records, perf afterwards), so the last column compares them in all.")
L.append("")
peers = ["perf"] + (["samply"] if samply == "1" else [])
pname = {"perf": "perf dwarf pipeline", "samply": "samply --save-only"}
L.append("| Hz | recording | ember while / after | " + " | ".join(f"{pname[t]} while / after" for t in peers) + " | ember / " + " / ".join(pname[t] for t in peers) + " (while) | ember / " + " / ".join(pname[t] for t in peers) + " (in all) |")
L.append("|---|---|---|" + "---|" * len(peers) + "---|---|")
for name, secs, hz in (("short", short, 999), ("long", long_, 999), ("fast", short, 4999)):
    def per_k(tool):
        n = med(f"samples_{name}_{tool}") / 1000
        d = med(f"during_{name}_{tool}") / n
        if tool == "perf":
            a = (med(f"cpu_{name}_perf") - med(f"target_cpu_{name}_perf") - med(f"during_{name}_perf")) / n
        else:
            a = med(f"after_{name}_{tool}") / n
        return d, a
    e = per_k("ember")
    cells = [f"{1000 * e[0]:.1f} / {1000 * e[1]:.1f} ms"]
    ratios, totals = [], []
    for t in peers:
        d, a = per_k(t)
        cells.append(f"{1000 * d:.1f} / {1000 * a:.1f} ms")
        ratios.append(f"{e[0] / d:.2f}" if d > 0 else "n/a")
        totals.append(f"{(e[0] + e[1]) / (d + a):.2f}" if d + a > 0 else "n/a")
    L.append(f"| {hz} | {secs} s | " + " | ".join(cells) + " | " + " / ".join(ratios)
             + " | " + " / ".join(totals) + " |")
L.append("")
L.append("## Samples recorded against expected (999 Hz × target CPU time)")
L.append("")
L.append("| recording | ember samples / expected | ember lost | perf samples / expected |")
L.append("|---|---|---|---|")
for name, secs in (("short", short), ("long", long_)):
    ee = med(f"samples_{name}_ember") / (999 * med(f"target_cpu_{name}_ember"))
    pe = med(f"samples_{name}_perf") / (999 * med(f"target_cpu_{name}_perf"))
    L.append(f"| {secs} s | {ee:.3f} | {med(f'lost_{name}_ember'):.0f} | {pe:.3f} |")
L.append("")
k_s, k_l, k_c = med("k10_samples"), med("k10_lost"), med("k10_cpu")
L.append(f"At 10 kHz on two busy threads (3 s each): ember recorded {k_s:.0f} samples of "
         f"{10000 * k_c:.0f} expected, {k_l:.0f} lost (reported in the summary"
         + (" and the SVG subtitle" if med("k10_svg_says_lost") >= 1 or k_l == 0 else "") + ").")
L.append("")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
say "wrote $OUT"
