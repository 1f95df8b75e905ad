//! End-to-end: `ember record -p PID` against running processes.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A running workload, killed and reaped when the test ends however it ends.
struct Target(Child);

impl Target {
    fn start(name: &str, args: &[&str]) -> Target {
        let exe = workload(name, Build::NoFramePointers);
        let child = Command::new(exe)
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start workload");
        // Let it reach its hot loop.
        std::thread::sleep(Duration::from_millis(300));
        Target(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn pid_str(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The target is running normally: not stopped or traced, and still using CPU.
fn assert_unharmed(pid: u32) {
    let (state, cpu0) = (process_state(pid), cpu_seconds(pid));
    assert!(
        state == 'R' || state == 'S',
        "target is in state {state} after ember ended"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("TracerPid:\t0"),
        "target is traced: {status}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let cpu1 = cpu_seconds(pid);
    assert!(cpu1 > cpu0, "target's CPU time stopped growing");
}

#[test]
fn attach_to_a_two_thread_process() {
    let _serial = serial();
    let t = Target::start("threads", &["60"]);
    let dir = scratch();
    let folded = dir.path().join("a.folded");
    let svg = dir.path().join("a.svg");
    let pid = t.pid_str();
    let ember = attach(&[
        "--backend",
        "perf",
        "-p",
        &pid,
        "--per-thread",
        "-o",
        folded.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ]);
    let tids = thread_ids(t.pid());
    let before: Vec<f64> = tids
        .iter()
        .map(|&t2| thread_cpu_seconds(t.pid(), t2))
        .collect();
    // Until the threads have used 2 s of CPU between them (not a fixed time: on a busy machine
    // they may get little), then Ctrl-C: every CPU second counted here was sampled.
    wait_for_cpu(t.pid(), cpu_seconds(t.pid()), 2.0);
    let used: Vec<f64> = tids
        .iter()
        .zip(&before)
        .map(|(&t2, b)| thread_cpu_seconds(t.pid(), t2) - b)
        .collect();
    let cpu: f64 = used.iter().sum();
    kill(Pid::from_raw(ember.pid() as i32), Signal::SIGINT).unwrap();
    let (status, stderr) = ember.finish();
    assert!(status.success(), "{stderr}");
    let stacks = read_folded(&folded);
    let n = total(&stacks);
    // Two busy threads at 999 Hz, as far as the machine let them run.
    assert_samples_cover_cpu(n, cpu, 999, "two threads attached for 2 s");
    for f in ["thread_a_hot", "thread_b_hot"] {
        assert!(samples_with(&stacks, f) > 0, "{f} missing");
    }
    // Each thread's share of the samples is its share of the CPU time (as /proc counted it).
    for (tid, used) in tids.iter().zip(&used) {
        let root = format!("/{tid}");
        let mine: u64 = stacks
            .iter()
            .filter(|s| s.frames[0].ends_with(&root))
            .map(|s| s.count)
            .sum();
        let (share, truth) = (100.0 * mine as f64 / n as f64, 100.0 * used / cpu);
        assert!(
            (share - truth).abs() < 10.0,
            "thread {tid}: {share:.1}% of samples, {truth:.1}% of the CPU time"
        );
    }
    // Each thread's samples are rooted at its own comm-PID/TID.
    let roots: std::collections::BTreeSet<&str> =
        stacks.iter().map(|s| s.frames[0].as_str()).collect();
    assert!(roots.len() >= 2, "{roots:?}");
    assert!(roots.iter().all(|r| r.contains(&format!("-{}/", t.pid()))));
    assert!(stderr.contains("wrote"), "{stderr}");
    assert_unharmed(t.pid());
}

#[test]
fn recording_ends_when_the_target_exits() {
    let _serial = serial();
    // Two threads burning 0.7 s of CPU each: the process ends after about a second.
    let mut t = Target::start("threads", &["0.7"]);
    let dir = scratch();
    let folded = dir.path().join("e.folded");
    let pid = t.pid_str();
    let ember = attach(&["-p", &pid, "-d", "60", "-o", folded.to_str().unwrap()]);
    t.0.wait().unwrap();
    let exited = Instant::now();
    let (status, stderr) = ember.finish();
    let took = exited.elapsed();
    assert_eq!(status.code(), Some(0), "{stderr}");
    // ember looks every 100 ms; writing the outputs takes the rest.
    assert!(
        took < Duration::from_secs(5),
        "ember ran {took:?} after the target ended"
    );
    let stacks = read_folded(&folded);
    assert!(samples_with(&stacks, "thread_a_hot") > 0);
}

#[test]
fn attach_to_two_processes_told_apart_per_process() {
    let _serial = serial();
    let a = Target::start("shares", &["60"]);
    let b = Target::start("threads", &["60"]);
    let dir = scratch();
    let folded = dir.path().join("two.folded");
    let pids = format!("{},{}", a.pid(), b.pid());
    let ember = attach(&[
        "--backend",
        "perf",
        "-p",
        &pids,
        "--per-process",
        "-o",
        folded.to_str().unwrap(),
    ]);
    // Until each target has used half a second of CPU (not a fixed time: on a busy machine
    // they may get little), then Ctrl-C.
    let (a0, b0) = (cpu_seconds(a.pid()), cpu_seconds(b.pid()));
    wait_for_cpu(a.pid(), a0, 0.5);
    wait_for_cpu(b.pid(), b0, 0.5);
    let (cpu_a, cpu_b) = (cpu_seconds(a.pid()) - a0, cpu_seconds(b.pid()) - b0);
    kill(Pid::from_raw(ember.pid() as i32), Signal::SIGINT).unwrap();
    let (status, stderr) = ember.finish();
    assert!(status.success(), "{stderr}");
    let stacks = read_folded(&folded);
    // Roots are comm-PID.
    let root_a = format!("-{}", a.pid());
    let root_b = format!("-{}", b.pid());
    let under = |root: &str, f: &str| {
        stacks
            .iter()
            .filter(|s| s.frames[0].ends_with(root) && s.frames.iter().any(|x| x == f))
            .map(|s| s.count)
            .sum::<u64>()
    };
    assert_samples_cover_cpu(under(&root_a, "main"), cpu_a, 999, "shares");
    assert_samples_cover_cpu(under(&root_b, "start_thread"), cpu_b, 999, "threads");
    assert!(under(&root_a, "hot_sixty") > 0, "{root_a} missing");
    assert!(under(&root_b, "thread_a_hot") > 0, "{root_b} missing");
    assert_eq!(under(&root_a, "thread_a_hot"), 0);
    assert_eq!(under(&root_b, "hot_sixty"), 0);
}

#[test]
fn sigint_and_sigterm_stop_an_attached_recording_cleanly() {
    let _serial = serial();
    for (backend, sig) in [
        ("perf", Signal::SIGINT),
        ("perf", Signal::SIGTERM),
        ("perf", Signal::SIGHUP),
        ("ptrace", Signal::SIGINT),
        ("ptrace", Signal::SIGTERM),
    ] {
        let t = Target::start("shares", &["60"]);
        let dir = scratch();
        let (folded, svg) = (dir.path().join("s.folded"), dir.path().join("s.svg"));
        let pid = t.pid_str();
        let ember = attach(&[
            "--backend",
            backend,
            "-p",
            &pid,
            "-o",
            folded.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
        ]);
        let cpu0 = cpu_seconds(t.pid());
        wait_for_cpu(t.pid(), cpu0, 0.5);
        let cpu = cpu_seconds(t.pid()) - cpu0;
        let sent = Instant::now();
        kill(Pid::from_raw(ember.pid() as i32), sig).unwrap();
        let (status, stderr) = ember.finish();
        eprintln!(
            "{backend} {sig:?} -> outputs written in {:?}",
            sent.elapsed()
        );
        assert_eq!(status.code(), Some(0), "{backend} {sig:?}: {stderr}");
        assert_outputs_whole(&svg, &folded, cpu, &format!("{backend} {sig:?}"));
        assert_unharmed(t.pid());
    }
}

#[test]
fn sigkill_to_ember_leaves_the_target_and_old_outputs_alone() {
    let _serial = serial();
    // With ptrace, the kernel detaches the tracees of a tracer that dies (README).
    for backend in BACKENDS {
        let t = Target::start("shares", &["60"]);
        let dir = scratch();
        let svg = dir.path().join("old.svg");
        std::fs::write(&svg, "previous file").unwrap();
        let mut ember = Command::new(EMBER)
            .args(["record", "--backend", backend, "-p", &t.pid_str(), "-o"])
            .arg(&svg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1000));
        ember.kill().unwrap();
        ember.wait().unwrap();
        assert_eq!(std::fs::read_to_string(&svg).unwrap(), "previous file");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{backend}: leftover files: {names:?}");
        assert_unharmed(t.pid());
    }
}

#[test]
fn bad_pid_and_bad_output_are_usage_errors() {
    let _serial = serial();
    let dir = scratch();
    let o = dir.path().join("x.svg");
    // A PID that cannot exist (above pid_max).
    let out = ember(&["record", "-p", "99999999", "-o", o.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no such process"), "{stderr}");
    assert!(!o.exists());

    let t = Target::start("shares", &["60"]);
    let bad = dir.path().join("missing-dir/x.svg");
    let out = ember(&["record", "-p", &t.pid_str(), "-o", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!bad.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Kernel threads and ember itself are refused with a reason.
    let out = ember(&["record", "-p", "2", "-o", o.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernel thread"));
}
