//! Helpers for the end-to-end tests: build the C workloads, run the real `ember`, read what
//! it wrote.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

pub mod tmux;

pub const EMBER: &str = env!("CARGO_BIN_EXE_ember");

/// Frame-pointer variants the workloads are built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Build {
    FramePointers,
    NoFramePointers,
}

pub const BOTH: [Build; 2] = [Build::FramePointers, Build::NoFramePointers];

/// The sampling backends.
pub const BACKENDS: [&str; 2] = ["perf", "ptrace"];

/// The ptrace backend with its stops timed by ticks, as where perf events are refused (by
/// default each thread's own CPU clock times them where perf events are allowed).
pub const PTRACE_TICKS: &str = "ptrace-ticks";

/// Both backends, and the ptrace backend timed by ticks.
pub const BACKENDS_AND_CLOCKS: [&str; 3] = ["perf", "ptrace", PTRACE_TICKS];

/// The arguments that choose `backend` (one of [`BACKENDS_AND_CLOCKS`]).
pub fn backend_args(backend: &str) -> Vec<&str> {
    match backend {
        PTRACE_TICKS => vec!["--backend", "ptrace", "--debug-ptrace-ticks"],
        b => vec!["--backend", b],
    }
}

/// Every sampling backend with every build: the same assertions must hold for each.
pub const BACKENDS_AND_BUILDS: [(&str, Build); 4] = [
    ("perf", Build::FramePointers),
    ("perf", Build::NoFramePointers),
    ("ptrace", Build::FramePointers),
    ("ptrace", Build::NoFramePointers),
];

static BUILT: Mutex<Option<HashMap<(String, Build), PathBuf>>> = Mutex::new(None);

/// Compile `testdata/NAME.c` with gcc `-O2 -g` and the given frame-pointer flag (once per
/// test process) and return the executable's path.
pub fn workload(name: &str, build: Build) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(&(name.to_string(), build)) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.c"));
    let (flag, suffix) = match build {
        Build::FramePointers => ("-fno-omit-frame-pointer", "fp"),
        Build::NoFramePointers => ("-fomit-frame-pointer", "nofp"),
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{name}_{suffix}_{}", std::process::id()));
    let status = Command::new("gcc")
        .args(["-O2", "-g", flag, "-pthread", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc must be installed to build the test workloads (apt-get install gcc)");
    assert!(status.success(), "gcc failed on {}", src.display());
    map.insert((name.to_string(), build), out.clone());
    out
}

/// A fresh directory for one test's outputs.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ember-test-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// Run `ember ARGS` and return its output. Servers named in the environment are not asked
/// for debug info (a test that wants one names it).
pub fn ember(args: &[&str]) -> Output {
    Command::new(EMBER)
        .args(args)
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .expect("run ember")
}

/// Run `ember record ARGS` and fail with ember's own words when it did not succeed. A
/// machine that refuses perf events fails here with ember's message saying so.
pub fn record_ok(args: &[&str]) -> Output {
    let mut full = vec!["record"];
    if !args.contains(&"--backend") {
        // Not `auto`: a machine that refuses perf events must fail these tests, not pass
        // them on the ptrace fallback.
        full.extend_from_slice(&["--backend", "perf"]);
    }
    full.extend_from_slice(args);
    let out = ember(&full);
    assert!(
        out.status.success(),
        "ember {:?} failed ({:?}).\nstdout:\n{}\nstderr:\n{}\n(if perf events are refused here, \
         these tests cannot run: see ember's message above)",
        full,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One folded line: frames root first, and the count.
#[derive(Clone, Debug)]
pub struct Stack {
    pub frames: Vec<String>,
    pub count: u64,
}

pub fn read_folded(path: &Path) -> Vec<Stack> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            let (stack, count) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad folded line {l:?}"));
            Stack {
                frames: stack.split(';').map(str::to_string).collect(),
                count: count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad count in {l:?}")),
            }
        })
        .collect()
}

pub fn total(stacks: &[Stack]) -> u64 {
    stacks.iter().map(|s| s.count).sum()
}

/// The innermost user-space frame (kernel frames `_[k]` stripped from the top).
pub fn user_leaf(s: &Stack) -> &str {
    s.frames
        .iter()
        .rev()
        .find(|f| !f.ends_with("_[k]"))
        .map(String::as_str)
        .unwrap_or("")
}

/// The frames of `s` that are not the kernel's, root first.
pub fn user_frames(s: &Stack) -> Vec<&str> {
    s.frames
        .iter()
        .map(String::as_str)
        .filter(|f| !f.ends_with("_[k]"))
        .collect()
}

/// Percentage of samples whose innermost user frame is `func` (self time).
pub fn self_share(stacks: &[Stack], func: &str) -> f64 {
    let hits: u64 = stacks
        .iter()
        .filter(|s| user_leaf(s) == func)
        .map(|s| s.count)
        .sum();
    100.0 * hits as f64 / total(stacks) as f64
}

/// Samples whose stack contains `func` anywhere.
pub fn samples_with(stacks: &[Stack], func: &str) -> u64 {
    stacks
        .iter()
        .filter(|s| s.frames.iter().any(|f| f == func))
        .map(|s| s.count)
        .sum()
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Hold this while a test runs CPU-bound workloads whose sample counts it checks: two cores
/// shared by several spinning tests would starve them.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Run a build or file tool and fail the test with its output if it fails.
pub fn run_tool(program: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ember record -o DIR/out.folded ARGS -- CMD...` and the stacks it wrote.
pub fn record_folded(dir: &Path, args: &[&str], cmd: &[&str]) -> Vec<Stack> {
    let folded = dir.join("out.folded");
    let mut full = vec!["-o", folded.to_str().unwrap()];
    full.extend_from_slice(args);
    full.push("--");
    full.extend_from_slice(cmd);
    record_ok(&full);
    read_folded(&folded)
}

pub fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// Compile testdata/`src` with `compiler -O2 -g` (plus `extra`) into `dir/out`.
pub fn compile(compiler: &str, src: &str, dir: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let exe = dir.join(out);
    let source = testdata(src);
    let mut args = vec![os("-O2"), os("-g"), os("-o"), os(&exe), os(&source)];
    args.extend(extra.iter().map(os));
    run_tool(compiler, &args);
    exe
}

/// A count from ember's summary line: `summary_count(stderr, "threads")`.
pub fn summary_count(stderr: &str, what: &str) -> u64 {
    stderr
        .split(&format!(" {what}"))
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `--backend perf` was refused: exit 1, with a message saying `why` and pointing to
/// `--backend ptrace`.
pub fn assert_perf_refused(out: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(why), "{why:?} missing from: {stderr}");
    assert!(stderr.contains("--backend ptrace"), "{stderr}");
}

/// `--backend auto` fell back to ptrace, said so exactly once, and succeeded. Returns stderr.
pub fn assert_fell_back(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.matches("falls back to ptrace").count(),
        1,
        "{stderr}"
    );
    stderr
}

/// A Python interpreter that can import `module`: `$EMBER_TEST_PYTHON` (scripts/test.sh points
/// it at Debian's python3, which has Debian's `python3-MODULE`), else `python3` on PATH.
pub fn python_with(module: &str) -> String {
    let candidates: Vec<String> = std::env::var("EMBER_TEST_PYTHON")
        .into_iter()
        .chain(["/usr/bin/python3".to_string(), "python3".to_string()])
        .collect();
    for python in &candidates {
        let ok = Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return python.clone();
        }
    }
    panic!(
        "no Python here can import {module} (tried {candidates:?}): run scripts/test.sh, which \
         installs Debian's python3-{module}"
    )
}

/// Whether the test `name` can run here. When `possible` is false the test fails with `why`,
/// unless `EMBER_TEST_SKIP` (comma-separated test names) names it: then it says it is skipped
/// and returns false, so the caller returns. A test never passes silently for want of a
/// machine that allows it.
pub fn runs_here(name: &str, possible: bool, why: &str) -> bool {
    if possible {
        return true;
    }
    let skip = std::env::var("EMBER_TEST_SKIP").unwrap_or_default();
    if skip.split(',').any(|s| s.trim() == name) {
        eprintln!("SKIPPED {name} (EMBER_TEST_SKIP): {why}");
        return false;
    }
    panic!("{name} cannot run here: {why}. Run it where it can, or name it in EMBER_TEST_SKIP to skip it on purpose");
}

/// CPU time (user + system, every thread) process `pid` has used so far, in seconds, from
/// /proc/PID/stat; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU time thread `tid` of process `pid` has used so far, in seconds; 0 once it is gone.
pub fn thread_cpu_seconds(pid: u32, tid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/task/{tid}/stat"))
}

/// The thread ids of process `pid`.
pub fn thread_ids(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some(close) = s.rfind(')') else {
        return 0.0;
    };
    let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// The first child of process `pid` (the command ember launched), waiting up to 10 s for it.
pub fn child_of(pid: u32) -> u32 {
    for _ in 0..1000 {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            return c.parse().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("process {pid} started no child");
}

/// `samples` taken at `hz` stand for at least half of the `cpu` seconds the target used while
/// it was sampled (it measured them itself, or /proc did): holds however busy the machine is,
/// since a target that gets less CPU is also sampled less. `cpu` must be large enough to tell.
pub fn assert_samples_cover_cpu(samples: u64, cpu: f64, hz: u64, what: &str) {
    assert!(
        cpu >= 0.1,
        "{what}: the target got only {cpu:.3} s of CPU, too little to check sampling against"
    );
    let expected = cpu * hz as f64;
    assert!(
        samples as f64 >= 0.5 * expected,
        "{what}: {samples} samples for {cpu:.2} s of the target's CPU time at {hz} Hz \
         (expected about {expected:.0})"
    );
}

/// `ember record ARGS` attached to running processes, in the background.
pub struct Attached {
    pub child: std::process::Child,
    stderr: std::thread::JoinHandle<String>,
}

/// Start `ember record ARGS` (which attach with `-p`) and return once ember says it is
/// sampling, so what the target does from then on is what is sampled.
pub fn attach(args: &[&str]) -> Attached {
    attach_as(&[], args)
}

/// [`attach`], with ember run through `prefix` (e.g. setpriv and its options).
pub fn attach_as(prefix: &[&str], args: &[&str]) -> Attached {
    use std::io::BufRead;
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(EMBER);
            c
        }
        None => Command::new(EMBER),
    };
    let mut child = cmd
        .arg("record")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ember");
    let stderr = child.stderr.take().expect("piped");
    let (said, sampling) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("ember: sampling ") {
                let _ = said.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if sampling
        .recv_timeout(std::time::Duration::from_secs(120))
        .is_err()
    {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "ember {args:?} never said it was sampling:\n{}",
            reader.join().unwrap_or_default()
        );
    }
    Attached {
        child,
        stderr: reader,
    }
}

impl Attached {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for ember to end: its exit status and everything it said.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().expect("wait for ember");
        (status, self.stderr.join().unwrap_or_default())
    }
}

/// How far a share of samples may stray from the truth by chance: 3.5 standard deviations of a
/// share `percent` estimated from `n` independent samples, and at least `floor` points.
pub fn share_tolerance(percent: f64, n: u64, floor: f64) -> f64 {
    let p = percent / 100.0;
    let sd = 100.0 * (p * (1.0 - p) / n.max(1) as f64).sqrt();
    (3.5 * sd).max(floor)
}

/// The ptrace backend's independent samples, from its `-v` line: a stack it wrote several
/// times at once (CPU time since the thread's previous stop) is one observation that weighs
/// more, so these, not the samples, set the error.
pub fn ptrace_independent_samples(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.starts_with("ember: ptrace: "))?;
    let (before, _) = line.split_once(" independent)")?;
    before.rsplit_once(" (")?.1.parse().ok()
}

/// Check each function's self share in `stacks` against the truth the workload printed on
/// `stdout`, within [`share_tolerance`] for `n` independent samples (at least `floor` points);
/// returns how many truths it printed.
pub fn assert_shares_match_truths(
    stacks: &[Stack],
    stdout: &[u8],
    n: u64,
    floor: f64,
    what: &str,
) -> usize {
    let truths = truths(stdout);
    for (func, truth) in &truths {
        let share = self_share(stacks, func);
        let tolerance = share_tolerance(*truth, n, floor);
        eprintln!("{what} {func}: {share:.1}% of samples, truth {truth:.1}%");
        assert!(
            (share - truth).abs() < tolerance,
            "{what} {func}: {share:.1}% of samples, the program measured {truth:.1}% \
             (allowed {tolerance:.1} points for {n} independent samples)"
        );
    }
    truths.len()
}

/// The program's own `truth NAME PERCENT` lines (the workloads measure their shares).
pub fn truths(stdout: &[u8]) -> Vec<(String, f64)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "truth").then_some(())?;
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The state letter of process `pid` (`R`, `S`, `T`, ...), from /proc/PID/stat.
pub fn process_state(pid: u32) -> char {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 1..];
    rest.trim_start().chars().next().unwrap()
}

/// The outputs of a recording of `shares` are whole, and their samples cover the `cpu`
/// seconds the workload used while it was sampled.
pub fn assert_outputs_whole(svg: &Path, folded: &Path, cpu: f64, what: &str) {
    let stacks = read_folded(folded);
    assert_samples_cover_cpu(total(&stacks), cpu, 999, what);
    assert!(
        samples_with(&stacks, "hot_sixty") > 0,
        "{what}: no hot_sixty"
    );
    let text = std::fs::read_to_string(svg).unwrap();
    assert!(
        text.trim_end().ends_with("</svg>"),
        "{what}: the SVG is incomplete"
    );
    assert!(text.contains("hot_sixty"));
}

/// Busy loops on every core, killed when dropped: a machine where the target must share.
pub struct CpuHogs(Vec<std::process::Child>);

impl CpuHogs {
    pub fn start() -> CpuHogs {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuHogs(
            (0..n)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .spawn()
                        .expect("sh")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Build testdata/shares.c with debug info and an explicit build id.
pub fn build_shares(dir: &Path) -> PathBuf {
    compile("gcc", "shares.c", dir, "shares", &["-Wl,--build-id=sha1"])
}

pub fn split_debug(full: &Path, debug: &Path, stripped: &Path) {
    run_tool("objcopy", &[os("--only-keep-debug"), os(full), os(debug)]);
    std::fs::copy(full, stripped).unwrap();
    run_tool("strip", &[os("--strip-all"), os(stripped)]);
}

/// Frame labels (with source lines) that carry at least 1 % of the samples, by function.
pub fn hot_labels(stacks: &[Stack]) -> std::collections::BTreeSet<String> {
    let n = total(stacks);
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for s in stacks {
        for f in &s.frames[1..] {
            if f.starts_with("hot_") || f.starts_with("main") {
                *counts.entry(f.clone()).or_default() += s.count;
            }
        }
    }
    counts
        .into_iter()
        .filter(|(_, c)| *c * 100 >= n)
        .map(|(f, _)| f)
        .collect()
}

pub fn assert_named_with_lines(stacks: &[Stack], what: &str) {
    for f in ["hot_sixty", "hot_thirty", "hot_ten"] {
        let line = stacks
            .iter()
            .flat_map(|s| s.frames.iter())
            .find(|x| x.starts_with(&format!("{f} (shares.c:")));
        assert!(line.is_some(), "{what}: {f} has no name with a source line");
    }
}

/// The build id of the ELF file at `path`, in hex.
pub fn build_id_of(path: &Path) -> String {
    use object::Object;
    let data = std::fs::read(path).unwrap();
    let id = object::File::parse(&*data)
        .unwrap()
        .build_id()
        .unwrap()
        .unwrap()
        .to_vec();
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Wait until process `pid` has used `secs` of CPU time more than `since` seconds: on a busy
/// machine a target can get little CPU for a while, and a test that waits a fixed time may
/// find it has done nothing to sample. Panics after two minutes.
pub fn wait_for_cpu(pid: u32, since: f64, secs: f64) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while cpu_seconds(pid) - since < secs {
        assert!(
            std::time::Instant::now() < until,
            "process {pid} got less than {secs} s of CPU in two minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
