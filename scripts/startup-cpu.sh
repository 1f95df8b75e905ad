#!/usr/bin/env bash
# What starting a recording costs ember in CPU: `ember record -- true` (a command that does
# nothing), its CPU time (user + system, ember and its helpers, from rusage), medians of
# RUNS, by default (the walk in the kernel: the BPF program verified and its maps made) and
# with --unwind user (perf events' copies). Where bpftool is installed, also how many
# instructions the kernel's verifier followed to accept the program. Needs root for the walk.
#
#   scripts/startup-cpu.sh [RUNS]      # default 7
. "$(dirname "$0")/lib/measure.sh"
RUNS=${1:-7}
measure_setup startup
python3 - "$EMBER" "$RUNS" "$WORK" <<'PY'
import resource, statistics, subprocess, sys
ember, runs, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def cpu_ms(extra):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([ember, "record", *extra, "-o", f"{work}/t.folded", "--", "true"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
res = {"default (walk in the kernel)": [], "--unwind user": []}
for _ in range(runs):
    res["default (walk in the kernel)"].append(cpu_ms([]))
    res["--unwind user"].append(cpu_ms(["--unwind", "user"]))
print(f"ember CPU to start and end `ember record -- true`, medians of {runs} (ms)")
for name, xs in res.items():
    print(f"  {name:30s} {statistics.median(xs):6.1f}   ({' '.join(f'{x:.0f}' for x in xs)})")
PY
if command -v bpftool >/dev/null && [ -d /sys/fs/bpf ]; then
  pin=/sys/fs/bpf/ember-startup-$$
  bpftool -d prog load "$ROOT/src/sampler/bpf/unwind.bpf.o" "$pin" type perf_event 2>&1 |
    grep -o 'processed [0-9]* insns' | sed 's/^/verifier: /'
  rm -f "$pin"
fi
