//! End-to-end: the ptrace backend (where perf events are refused) and wall-clock profiles.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Self-time share of the stacks that pass through `func` anywhere.
fn inclusive_share(stacks: &[Stack], func: &str) -> f64 {
    100.0 * samples_with(stacks, func) as f64 / total(stacks).max(1) as f64
}

#[test]
fn cpu_profile_sees_only_the_burner_and_off_cpu_sees_the_sleeper_too() {
    let _serial = serial();
    let exe = workload("offcpu", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("o.folded");
    let f = folded.to_str().unwrap();
    for backend in BACKENDS {
        record_ok(&[
            "--backend",
            backend,
            "-o",
            f,
            "--",
            exe.to_str().unwrap(),
            "2",
        ]);
        let stacks = read_folded(&folded);
        let burn = inclusive_share(&stacks, "burn");
        eprintln!("{backend} CPU mode: burn {burn:.1}% of {}", total(&stacks));
        assert!(
            burn > 95.0,
            "{backend}: burn has {burn:.1}% of on-CPU samples"
        );
        assert!(!stacks
            .iter()
            .any(|s| s.frames.iter().any(|f| f.starts_with("[off-cpu]"))));
    }

    for backend in BACKENDS {
        let out = record_ok(&[
            "--backend",
            backend,
            "--off-cpu",
            "-o",
            f,
            "--",
            exe.to_str().unwrap(),
            "3",
        ]);
        let stacks = read_folded(&folded);
        let truth = truths(&out.stdout);
        assert_eq!(truth.len(), 2, "{}", String::from_utf8_lossy(&out.stdout));
        for (func, percent) in truth {
            let measured = inclusive_share(&stacks, &func);
            eprintln!("{backend} off-cpu {func}: ember {measured:.1}% truth {percent:.1}%");
            assert!(
                (measured - percent).abs() <= 5.0,
                "{backend} {func}: ember says {measured:.1}% of wall time, the program \
                 measured {percent:.1}%"
            );
        }
        // The sleeping stacks end in a frame that says what they wait in. (Samples of the
        // sleeper that are not waits at all — running, or under ptrace runnable and waiting
        // for a CPU, which counts as running — are checked by the shares above.)
        let sleeping: Vec<&Stack> = stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f == "snooze"))
            .filter(|s| s.frames.last().is_some_and(|f| f.starts_with("[off-cpu] ")))
            .collect();
        let marked: u64 = sleeping
            .iter()
            .filter(|s| {
                s.frames
                    .last()
                    .is_some_and(|f| f.starts_with("[off-cpu] ") && f.ends_with("nanosleep"))
            })
            .map(|s| s.count)
            .sum();
        let all: u64 = sleeping.iter().map(|s| s.count).sum();
        assert!(
            marked as f64 >= 0.95 * all as f64,
            "{backend}: {marked} of {all} sleeping samples end in [off-cpu] ...nanosleep: \
             {sleeping:?}"
        );
    }
}

/// A 50-thread process, killed when the test ends however it ends.
struct Pool(Child);

impl Pool {
    fn start() -> Pool {
        let exe = workload("pool", Build::NoFramePointers);
        let child = Command::new(exe)
            .arg("50")
            .stdout(Stdio::null())
            .spawn()
            .expect("start pool");
        std::thread::sleep(Duration::from_millis(300));
        Pool(child)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every thread of `pid` is neither stopped nor traced.
fn assert_all_threads_free(pid: u32) {
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tasks.len(), 51);
    for t in tasks {
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(field("TracerPid:"), "0", "{}: {status}", t.display());
        let state = field("State:");
        assert!(
            state.starts_with('R') || state.starts_with('S'),
            "{}: state {state}",
            t.display()
        );
    }
}

#[test]
fn attach_to_fifty_threads_samples_each_and_detaches_cleanly() {
    let _serial = serial();
    let pool = Pool::start();
    let pid = pool.0.id().to_string();
    let dir = scratch();
    let folded = dir.path().join("p.folded");
    let f = folded.to_str().unwrap();
    // 3 s at 99 Hz, one tower per thread.
    let record = |mode: &[&str]| {
        let mut args = vec!["--backend", "ptrace", "-F", "99", "-d", "3", "--per-thread"];
        args.extend_from_slice(mode);
        args.extend_from_slice(&["-p", &pid, "-o", f]);
        record_ok(&args)
    };
    // CPU mode: the 50 workers run (the main thread only waits).
    let out = record(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stacks = read_folded(&folded);
    let threads: std::collections::BTreeSet<&str> =
        stacks.iter().map(|s| s.frames[0].as_str()).collect();
    assert!(
        threads.len() >= 50,
        "{} threads sampled: {stderr}",
        threads.len()
    );
    assert!(samples_with(&stacks, "pool_work") > 0);
    assert_all_threads_free(pool.0.id());

    // Wall clock: every thread, the waiting main thread too, on every tick.
    record(&["--off-cpu"]);
    let stacks = read_folded(&folded);
    let mut per_thread: std::collections::BTreeMap<&str, u64> = Default::default();
    for s in &stacks {
        *per_thread.entry(s.frames[0].as_str()).or_default() += s.count;
    }
    assert_eq!(per_thread.len(), 51, "{per_thread:?}");
    // About 3 s x 99 Hz each (ticks skip when ember cannot keep up; say so if they do).
    assert!(per_thread.values().all(|&n| n > 150), "{per_thread:?}");
    assert!(stacks
        .iter()
        .any(|s| s.frames.last().is_some_and(|f| f == "[off-cpu] pause")));
    assert_all_threads_free(pool.0.id());
}

#[test]
fn a_process_traced_by_someone_else_is_refused_with_who() {
    let _serial = serial();
    let pool = Pool::start();
    let pid = pool.0.id().to_string();
    let dir = scratch();
    let o = dir.path().join("t.folded");
    // The first ember holds the process; a second one cannot trace it too.
    let first = Command::new(EMBER)
        .args([
            "record",
            "--backend",
            "ptrace",
            "-F",
            "99",
            "-d",
            "3",
            "-p",
            &pid,
            "-o",
        ])
        .arg(&o)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = ember(&[
        "record",
        "--backend",
        "ptrace",
        "-d",
        "1",
        "-p",
        &pid,
        "-o",
        o.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("already traced by process {}", first.id())),
        "{stderr}"
    );
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_all_threads_free(pool.0.id());
}

#[test]
fn auto_falls_back_to_ptrace_where_seccomp_refuses_perf_events() {
    let _serial = serial();
    let dir = scratch();
    let noperf = compile("gcc", "noperf.c", dir.path(), "noperf", &[]);
    let exe = workload("shares", Build::NoFramePointers);
    let folded = dir.path().join("n.folded");
    let run = |backend: &str| {
        Command::new(&noperf)
            .args([EMBER, "record", "--backend", backend, "-o"])
            .arg(&folded)
            .args(["--", exe.to_str().unwrap(), "1.5"])
            .output()
            .unwrap()
    };
    // perf alone: refused, with the reason.
    assert_perf_refused(&run("perf"), "seccomp");
    assert!(!folded.exists());
    // auto: says so once and profiles anyway.
    let out = run("auto");
    let stderr = assert_fell_back(&out);
    assert!(stderr.contains("(ptrace"), "{stderr}");
    let stacks = read_folded(&folded);
    assert!(total(&stacks) > 1000, "{stderr}");
    let sixty = self_share(&stacks, "hot_sixty");
    let truth = truths(&out.stdout)
        .into_iter()
        .find_map(|(f, p)| (f == "hot_sixty").then_some(p))
        .expect("the workload's truth");
    assert!(
        (sixty - truth).abs() < 5.0,
        "hot_sixty {sixty:.1}%, truth {truth:.1}%"
    );
}

#[test]
fn statuses_crashes_and_job_control_under_ptrace() {
    let _serial = serial();
    let dir = scratch();
    let o = dir.path().join("x.folded");
    let o = o.to_str().unwrap();
    let run = |script: &str| {
        ember(&[
            "record",
            "--backend",
            "ptrace",
            "-o",
            o,
            "--",
            "sh",
            "-c",
            script,
        ])
    };
    assert_eq!(run("exit 7").status.code(), Some(7));
    // The signal reaches the command (ember passes it on at the signal-delivery stop).
    assert_eq!(run("kill -SEGV $$").status.code(), Some(139));
    assert_eq!(run("kill -ABRT $$").status.code(), Some(134));
    // A command the kernel cannot exec: a clear error, at once (the traced child that failed
    // to exec is let go, not waited for forever).
    let script = dir.path().join("no-shebang");
    std::fs::write(&script, "echo hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("timeout")
        .args(["20", EMBER, "record", "--backend", "ptrace", "-o", o, "--"])
        .arg(&script)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Exec format error"), "{stderr}");
    // A stop and continue (job control) works as without ember.
    let child = Command::new(EMBER)
        .args(["record", "--backend", "ptrace", "-o", o, "--"])
        .args(["sh", "-c", "kill -STOP $$; exit 3"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let sh = Command::new("pgrep")
        .args(["-f", "kill -STOP"])
        .output()
        .unwrap();
    let sh: Vec<i32> = String::from_utf8_lossy(&sh.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|&p| p != child.id() as i32)
        .collect();
    assert_eq!(sh.len(), 1, "{sh:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sh[0]),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
}

/// 5,000 frames of recursion without frame pointers (about 160 KiB of stack, more than twice
/// what a perf sample can carry). The ptrace backend stops the thread, so it copies its whole
/// stack, however deep: every sample unwinds from the leaf to main with nothing cut. Perf
/// events' copies hold at most 64 KiB: each sample is cut where its copy ends and shown so
/// (`[truncated]` at the root, every frame below it a true one), and the user is told what
/// helps. (Copies are what perf events give where ember's BPF program does not walk the
/// stacks in the kernel: `--unwind user`; tests/tables.rs tests that walk.)
#[test]
fn stacks_of_any_depth_are_whole_on_ptrace_and_cut_and_said_so_on_perf_events() {
    let _serial = serial();
    let exe = workload("recursion", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("deep.folded");
    for backend in BACKENDS {
        let args = ["-v", "--unwind", "user", "--backend", backend, "-o"];
        let run = [
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "5000",
            "1",
        ];
        let out = record_ok(&[&args[..], &run].concat());
        let stacks = read_folded(&folded);
        let at_leaf: Vec<&Stack> = stacks
            .iter()
            .filter(|s| user_leaf(s) == "leaf_burn")
            .collect();
        let n: u64 = at_leaf.iter().map(|s| s.count).sum();
        assert!(n as f64 > 0.9 * total(&stacks) as f64, "{backend}: {n}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for s in at_leaf {
            let user = user_frames(s);
            let recursion = user.iter().filter(|f| **f == "recurse").count();
            let cut = user.iter().position(|f| *f == "[truncated]");
            if backend == "ptrace" {
                assert_eq!((recursion, cut), (5000, None), "{:?}", &user[..4]);
                assert!(user.contains(&"main"), "{:?}", &user[..4]);
                continue;
            }
            // Under the cut: the recursion's frames, then its leaf, nothing made up.
            let cut = cut.unwrap_or_else(|| panic!("not cut: {:?}", &user[..4]));
            let (leaf, calls) = user[cut + 1..].split_last().unwrap();
            assert_eq!(*leaf, "leaf_burn");
            assert!(calls.len() > 100 && calls.iter().all(|f| *f == "recurse"));
        }
        if backend == "ptrace" {
            assert!(stderr.contains(" 0 stack copies ran out"), "{stderr}");
            assert!(!stderr.contains("cut short"), "{stderr}");
        } else {
            assert!(
                stderr.contains("have stacks cut short") && stderr.contains("--backend ptrace"),
                "{stderr}"
            );
        }
    }
}

/// A frame bigger than any copy perf events take (testdata/bigframe.c: 600 KiB of locals
/// between the work and `main`): every sample stops at that frame and says so
/// (`[truncated]`). None may end there silently as if it were whole — the unwinder's cache
/// once kept the frame-pointer guess it fell back on where the copy ran out, and used it for
/// every later sample there.
#[test]
fn a_frame_bigger_than_any_copy_is_cut_and_said_so_on_perf_events() {
    let _serial = serial();
    let exe = workload("bigframe", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("big.folded");
    let o = folded.to_str().unwrap();
    record_ok(&[
        "--unwind",
        "user",
        "--backend",
        "perf",
        "-o",
        o,
        "--",
        exe.to_str().unwrap(),
        "1",
    ]);
    let stacks = read_folded(&folded);
    assert!(samples_with(&stacks, "hold") as f64 > 0.9 * total(&stacks) as f64);
    for s in stacks.iter().filter(|s| user_frames(s).contains(&"hold")) {
        let user = user_frames(s);
        assert_eq!(user[1], "[truncated]", "not said to be cut: {:?}", s.frames);
    }
}

/// A deep stack that stays as it is (testdata/bigframe.c: `hold`'s 600 KiB of locals under
/// the work) is not copied whole at every stop: once the thread's stack was unwound, the
/// ptrace backend copies it only up to the outer frames whose words that unwind read are
/// unchanged, and sends those words. Every stack is still whole, from `main`; `-v` says how
/// many copies ended early and how much was copied.
#[test]
fn a_deep_steady_stack_is_copied_only_up_to_its_unchanged_frames_and_unwound_whole() {
    let _serial = serial();
    let exe = workload("bigframe", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("big.folded");
    let args = ["-v", "--backend", "ptrace", "-o", folded.to_str().unwrap()];
    let out = record_ok(&[&args[..], &["--", exe.to_str().unwrap(), "1.5"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stops = summary_count(&stderr, "stops by CPU clocks") + summary_count(&stderr, "ticks");
    let early = summary_count(&stderr, "stack copies ended below outer frames");
    let copied: Vec<f64> = stderr
        .split(" MB of stack copied")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .map(|s| s.split(" of ").filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    eprintln!("{early} of {stops} stops copied in part, {copied:?} MB");
    // The first stops come before any unwind of the thread (a read of the buffers or two).
    assert!(
        2 * early > stops,
        "{early} of {stops} copies ended early:\n{stderr}"
    );
    assert!(
        copied.len() == 2 && 4.0 * copied[0] < copied[1],
        "copied / whole MB {copied:?}:\n{stderr}"
    );
    assert!(
        stderr.contains(" 0 stack copies ran out")
            && stderr.contains(", 0 of them needing a word that was not read again"),
        "{stderr}"
    );
    let stacks = read_folded(&folded);
    let burn: Vec<&Stack> = stacks.iter().filter(|s| user_leaf(s) == "burn").collect();
    assert!(
        burn.iter().map(|s| s.count).sum::<u64>() as f64 > 0.9 * total(&stacks) as f64,
        "{stacks:?}"
    );
    for s in burn {
        assert!(
            user_frames(s).ends_with(&["main", "hold", "burn"]),
            "{:?}",
            s.frames
        );
    }
}

/// Where stacks are unwound from perf events' copies (`--unwind user`, or where BPF is
/// refused), `--backend auto` takes the process of testdata/bigframe.c over by ptrace after
/// its first cut stacks, and from then on its stacks are whole, from `main`. Launched here through
/// a shell that ember does not trace (ptrace then waits for ember's children): ember still
/// ends with the shell's exit code.
#[test]
fn by_default_a_frame_bigger_than_any_copy_is_whole_once_taken_over() {
    let _serial = serial();
    let exe = workload("bigframe", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("big.folded");
    let script = format!("{} 1.5; exit 7", exe.display());
    let o = folded.to_str().unwrap();
    let args = [
        "record", "-v", "--unwind", "user", "-o", o, "--", "sh", "-c", &script,
    ];
    let out = ember(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("taken over by ptrace") && stderr.contains("bigframe_nofp"),
        "{stderr}"
    );
    let stacks = read_folded(&folded);
    let (mut whole, mut cut) = (0, 0);
    for s in stacks.iter().filter(|s| user_leaf(s) == "burn") {
        let user = user_frames(s);
        if user[1] == "[truncated]" {
            assert_eq!(&user[2..], ["hold", "burn"], "{:?}", s.frames);
            cut += s.count;
        } else {
            assert!(user.ends_with(&["main", "hold", "burn"]), "{:?}", s.frames);
            whole += s.count;
        }
    }
    // Cut: only what was sampled before the takeover (a read or two of the ring buffers).
    assert!(whole > 3 * cut, "{whole} whole, {cut} cut:\n{stderr}");
}

/// The samples at `leaf_burn` whose stacks are whole (every one of `depth` frames of
/// `frame`, from `main`; any other whole stack fails) and those cut.
fn whole_and_cut_recursions(stacks: &[Stack], frame: &str, depth: usize) -> (u64, u64) {
    let (mut whole, mut cut) = (0, 0);
    for s in stacks.iter().filter(|s| user_leaf(s) == "leaf_burn") {
        let user = user_frames(s);
        if user.contains(&"[truncated]") {
            cut += s.count;
        } else {
            let recursion = user.iter().filter(|f| **f == frame).count();
            assert_eq!(recursion, depth, "{:?}", &user[..4]);
            assert!(user.contains(&"main"), "{:?}", &user[..4]);
            whole += s.count;
        }
    }
    (whole, cut)
}

/// Where stacks are unwound from perf events' copies (`--unwind user`, or where BPF is
/// refused), a process whose stacks outgrow them (recursion 5,000 deep without frame
/// pointers) is taken over by ptrace: `-v` names it, perf events' samples of it
/// are left out from then on, and its stacks are whole, every one of the 5,000 frames from
/// `main` to the leaf.
#[test]
fn by_default_deep_recursion_is_taken_over_by_ptrace_and_whole_from_then_on() {
    let _serial = serial();
    let exe = workload("recursion", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("deep.folded");
    let args = ["-v", "--unwind", "user", "--backend", "auto", "-o"];
    let run = [
        folded.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "5000",
        "1.5",
    ];
    let out = record_ok(&[&args[..], &run].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("taken over by ptrace") && stderr.contains("left out"),
        "{stderr}"
    );
    let stacks = read_folded(&folded);
    let (whole, cut) = whole_and_cut_recursions(&stacks, "recurse", 5000);
    assert!(whole > 3 * cut, "{whole} whole, {cut} cut:\n{stderr}");
    assert!(
        whole as f64 > 0.5 * total(&stacks) as f64,
        "{whole} of {}",
        total(&stacks)
    );
}

/// 5,000 frames of 1 KiB each, without frame pointers: 5 MB of stack, more pages than one
/// system call reads and more frames' words than one record of them holds. Whole on ptrace,
/// and by default once the process is taken over; no copy runs out on ptrace.
#[test]
fn recursion_through_five_megabytes_of_stack_is_whole_on_ptrace_and_by_default() {
    let _serial = serial();
    let exe = workload("recursion", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("kib.folded");
    for backend in ["ptrace", "auto"] {
        let args = ["-v", "--backend", backend, "-o", folded.to_str().unwrap()];
        let run = ["--", exe.to_str().unwrap(), "5000", "1", "kib"];
        let out = record_ok(&[&args[..], &run].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stacks = read_folded(&folded);
        let (whole, cut) = whole_and_cut_recursions(&stacks, "recurse_kib", 5000);
        eprintln!("{backend}: {whole} whole, {cut} cut");
        assert!(whole > 0, "{backend}: none whole:\n{stderr}");
        if backend == "ptrace" {
            assert!(
                cut == 0 && stderr.contains(" 0 stack copies ran out"),
                "{cut} cut:\n{stderr}"
            );
        } else {
            assert!(whole > 3 * cut, "{whole} whole, {cut} cut:\n{stderr}");
        }
    }
}

/// With every core busy a thread just woken from a sleep waits for a CPU, and a ptrace stop
/// asked for meanwhile comes at the sleep's end, the first place it runs: the CPU time it
/// burned before the sleep must still count where it was burned, not in `nanosleep`.
#[test]
fn a_cpu_profile_puts_nothing_in_sleeps_with_every_core_busy() {
    let _serial = serial();
    let exe = workload("offcpu", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("busy.folded");
    let _hogs = CpuHogs::start();
    for backend in BACKENDS_AND_CLOCKS {
        let args = [
            &backend_args(backend)[..],
            &["-o", folded.to_str().unwrap()],
        ]
        .concat();
        record_ok(&[&args[..], &["--", exe.to_str().unwrap(), "2"]].concat());
        let stacks = read_folded(&folded);
        // What snooze() does besides sleeping takes nanoseconds of every 10 ms. Perf events
        // (and ptrace stops timed by the thread's CPU clock, a perf event too) put a little
        // more there, and rightly so by their clock: a thread's cpu-clock timer stops while
        // it waits and is armed again when it runs, so a period that was nearly over when the
        // thread went to sleep ends in the way back from the sleep (finish_task_switch,
        // rseq's return work): up to 1.2 % here.
        let allowed = if backend == PTRACE_TICKS { 1.0 } else { 3.0 };
        let asleep = inclusive_share(&stacks, "snooze");
        let there: Vec<String> = stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f == "snooze"))
            .map(|s| format!("{} {}", s.frames.join(";"), s.count))
            .collect();
        assert!(
            asleep < allowed,
            "{backend}: {asleep:.1}% of on-CPU samples in snooze with every core busy:\n{}",
            there.join("\n")
        );
    }
}

/// With a busy loop on every core the target is preempted for its time slice where the
/// kernel next reads its run time — often inside `clock_gettime` — and a ptrace stop there
/// would put that CPU time in the syscall: the shares must still match the program's own.
#[test]
fn cpu_shares_hold_with_every_core_busy() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let _hogs = CpuHogs::start();
    for backend in BACKENDS_AND_CLOCKS {
        let dir = scratch();
        let folded = dir.path().join("busy.folded");
        let run = [
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "1.5",
        ];
        let out = record_ok(&[&["-v"], &backend_args(backend)[..], &run].concat());
        let stacks = read_folded(&folded);
        assert_samples_cover_cpu(total(&stacks), 1.5, 999, backend);
        // perf: every sample independent; ptrace: says how many of its samples are.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let n = match ptrace_independent_samples(&stderr) {
            Some(n) => n,
            None if backend == "perf" => total(&stacks),
            None => panic!("ptrace -v did not say how many samples are independent: {stderr}"),
        };
        assert_shares_match_truths(&stacks, &out.stdout, n, 3.0, backend);
    }
}

/// The adversary of stack completion (testdata/flipflop.c): depth flipping between 3 and 100
/// frames of 1 KiB every few microseconds, through two outer paths whose deep frames are
/// alike. No stack may be made up: each is either cut (`[truncated]` at the root, counted
/// in `-v`) or whole, from `main` through the outer function its leaf belongs to. Whole deep
/// stacks come from ptrace (it copies whole stacks) and, with frame pointers, from perf
/// events (the kernel's frame-pointer chain goes on where the copy ran out); perf events
/// without frame pointers must cut them, whatever the chain the kernel made up from `rbp`.
#[test]
fn no_stack_is_made_up_when_depth_and_path_flip_every_few_microseconds() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("flip.folded");
    // And auto: perf events, the process taken over by ptrace once its stacks are cut. Perf
    // events' copies, unwound in user space (the walk in the kernel: tests/tables.rs).
    let auto = [("auto", Build::NoFramePointers)];
    for (backend, build) in BACKENDS_AND_BUILDS.into_iter().chain(auto) {
        let exe = workload("flipflop", build);
        let args = ["-v", "--unwind", "user", "--backend", backend, "-o"];
        let args = [&args[..], &[folded.to_str().unwrap()]].concat();
        let run = ["--", exe.to_str().unwrap(), "1.5", "100"];
        let out = record_ok(&[&args[..], &run].concat());
        let stacks = read_folded(&folded);
        let (mut cut, mut deep) = (0, 0);
        for s in &stacks {
            let user = user_frames(s);
            let Some(first) = user.iter().position(|f| *f == "descend") else {
                continue;
            };
            if user.contains(&"[truncated]") {
                cut += s.count;
                continue;
            }
            let path = user[first - 1];
            assert!(
                matches!(path, "outer_a" | "outer_b") && user[first - 2] == "main",
                "{backend} {build:?}: a whole stack must come from main through an outer \
                 function: {}",
                user.join(";")
            );
            let leaf = *user.last().unwrap();
            let wrong = match path {
                "outer_a" => "leaf_b",
                _ => "leaf_a",
            };
            assert_ne!(
                leaf,
                wrong,
                "{backend} {build:?}: made up: {}",
                user.join(";")
            );
            // descend(100, ..) down to descend(0, ..): 101 frames at most.
            let depth = user.iter().filter(|f| **f == "descend").count();
            assert!(
                depth <= 101,
                "{backend} {build:?}: {depth} frames of descend"
            );
            if depth > 50 {
                deep += s.count;
            }
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ran_out = stderr
            .split(" stack copies ran out (")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .expect("-v says how many copies ran out");
        eprintln!("{backend} {build:?}: {cut} cut, {deep} whole and deep, {ran_out} ran out");
        // Every cut stack is counted (a copy that ran out may still have been completed).
        assert!(
            cut <= ran_out,
            "{backend}: {cut} cut, {ran_out} counted\n{stderr}"
        );
        match (backend, build) {
            ("perf", Build::NoFramePointers) => {
                assert!(cut > 0 && deep == 0, "{cut} cut, {deep} deep")
            }
            ("perf", _) => assert!(deep > 0, "frame pointers: {cut} cut, {deep} deep"),
            ("auto", _) => assert!(
                deep > 0 && stderr.contains("taken over by ptrace"),
                "auto: {cut} cut, {deep} deep\n{stderr}"
            ),
            _ => assert!(
                cut == 0 && deep > 0,
                "ptrace {build:?}: {cut} cut, {deep} deep"
            ),
        }
    }
}

/// A loop that makes a cheap system call every microsecond or so (testdata/callmix.c, which
/// measures compute()'s share of its CPU time itself). Perf events, and ptrace stops timed by
/// the thread's own CPU clock, must put that share where the program measured it. (Stops
/// timed by ticks cannot here: an interrupt from another CPU takes effect at the thread's next
/// return from the kernel, nearly always the end of a system call in this loop. They are
/// what is left where perf events are refused, and `-v` says which clock timed the stops.)
#[test]
fn stops_timed_by_cpu_clocks_land_where_the_time_goes_between_frequent_system_calls() {
    let _serial = serial();
    let exe = workload("callmix", Build::NoFramePointers);
    for backend in BACKENDS {
        let dir = scratch();
        let folded = dir.path().join("mix.folded");
        let out = record_ok(&[
            "-v",
            "--backend",
            backend,
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "1.5",
        ]);
        let stacks = read_folded(&folded);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if backend == "ptrace" {
            assert!(
                stderr.contains("stops timed by each thread's CPU clock"),
                "the threads' CPU clocks did not time the ptrace stops (perf events refused \
                 here?):\n{stderr}"
            );
        }
        let n = ptrace_independent_samples(&stderr).unwrap_or_else(|| total(&stacks));
        // At least 5 points: the program's truth is an estimate (the calls' cost is measured
        // apart from them), which sampling by the CPU clock — perf's own `perf record` too —
        // puts 1 to 3 points lower than its samples do. Stops drawn to the ends of the system
        // calls (ticks) give compute() under 1 % of the samples, not ~84 %.
        let truths = assert_shares_match_truths(&stacks, &out.stdout, n, 5.0, backend);
        assert_eq!(truths, 1, "the workload printed no truth: {out:?}");
    }
}

/// A program that blocks SIGURG (here inherited through exec from the launcher, which blocks
/// it) never stops for its CPU clock's signal: ember finds that (the clock runs on without
/// stops), says so, and samples it by ticks instead. The shares still hold.
#[test]
fn a_thread_that_blocks_the_clock_signal_is_sampled_by_ticks() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("blocked.folded");
    let python = python_with("signal");
    let block = "import os, signal, sys\n\
                 signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGURG])\n\
                 os.execv(sys.argv[1], sys.argv[1:])";
    let out = record_ok(&[
        "-v",
        "--backend",
        "ptrace",
        "-o",
        folded.to_str().unwrap(),
        "--",
        &python,
        "-c",
        block,
        exe.to_str().unwrap(),
        "1.5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(1 threads block the clock's signal: timed by ticks)"),
        "{stderr}"
    );
    // The launcher's own samples (before its exec) are not the workload's.
    let stacks: Vec<Stack> = read_folded(&folded)
        .into_iter()
        .filter(|s| s.frames[0].starts_with("shares"))
        .collect();
    assert_samples_cover_cpu(total(&stacks), 1.5, 999, "ptrace");
    let n = ptrace_independent_samples(&stderr).expect("ptrace -v line");
    let truths = assert_shares_match_truths(&stacks, &out.stdout, n, 5.0, "blocked");
    assert_eq!(truths, 3, "the workload printed no truth: {out:?}");
}
