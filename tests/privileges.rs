//! End-to-end: ember without privileges. At `kernel.perf_event_paranoid` 2 an ordinary user
//! still gets a user-space profile of their own command; someone else's process is refused
//! with a message that says what to do.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::*;

/// Run ember as an unprivileged user: `nobody` via setpriv when the tests run as root,
/// as ourselves otherwise.
fn ember_unprivileged(args: &[&str]) -> Output {
    let mut cmd = if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", EMBER]);
        c
    } else {
        Command::new(EMBER)
    };
    cmd.args(args).output().expect("run ember unprivileged")
}

fn paranoid() -> i32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(2)
}

#[test]
fn unprivileged_user_profiles_their_own_command() {
    let _serial = serial();
    if paranoid() > 2 {
        panic!(
            "kernel.perf_event_paranoid is {} here: perf events are refused to unprivileged \
             users, so this test cannot run (set it to 2 or lower)",
            paranoid()
        );
    }
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let folded = dir.path().join("u.folded");
    let out = ember_unprivileged(&[
        "record",
        "-v",
        "-o",
        folded.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    if nix::unistd::geteuid().is_root() {
        // `nobody` cannot raise the reader's priority: a process of its own session reads.
        assert!(
            stderr.contains("read by a process of its own session"),
            "{stderr}"
        );
    }
    let stacks = read_folded(&folded);
    assert!(total(&stacks) > 800, "{stderr}");
    assert!(self_share(&stacks, "hot_sixty") > 50.0);
    // No kernel frames where an ordinary user may not see them (perf_event_paranoid 2; at 1
    // they are allowed, and another program may lower it meanwhile, as scripts/compare.sh
    // does for samply), and nothing was lost to small buffers.
    if paranoid() >= 2 {
        assert!(stacks
            .iter()
            .all(|s| s.frames.iter().all(|f| !f.ends_with("_[k]"))));
    }
    assert!(stderr.contains("(0 lost)"), "{stderr}");
}

/// The process that reads the ring buffers for an unprivileged ember, found among ember's
/// children: the one that leads a session of its own.
fn reader_process_of(ember: u32) -> u32 {
    for _ in 0..1000 {
        let children = std::fs::read_to_string(format!("/proc/{ember}/task/{ember}/children"))
            .unwrap_or_default();
        let leader = children.split_whitespace().find(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
            after.split_whitespace().nth(3) == Some(c)
        });
        if let Some(pid) = leader {
            return pid.parse().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("ember (pid {ember}) started no reader process in a session of its own");
}

#[test]
fn a_killed_reader_process_leaves_ember_reading_on_its_own() {
    let _serial = serial();
    if !runs_here(
        "a_killed_reader_process_leaves_ember_reading_on_its_own",
        nix::unistd::geteuid().is_root(),
        "this test runs ember as `nobody` through setpriv, which needs root",
    ) {
        return;
    }
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let folded = dir.path().join("k.folded");
    let ember = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", EMBER])
        .args(["record", "-v", "-o", folded.to_str().unwrap(), "--"])
        .args([exe.to_str().unwrap(), "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux)");
    let reader = reader_process_of(ember.id());
    std::thread::sleep(std::time::Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(reader as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = ember.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reader process"), "{stderr}");
    assert!(stderr.contains("ended early"), "{stderr}");
    // The workload ran 2 s of CPU time; ember kept sampling it after the reader died.
    let stacks = read_folded(&folded);
    assert_samples_cover_cpu(total(&stacks), 2.0, 999, "after the reader died");
    assert!(self_share(&stacks, "hot_sixty") > 50.0, "{stacks:?}");
}

#[test]
fn someone_elses_process_is_refused_with_what_to_do() {
    if !runs_here(
        "someone_elses_process_is_refused_with_what_to_do",
        nix::unistd::geteuid().is_root() || paranoid() >= 1,
        "at kernel.perf_event_paranoid 0 or below an unprivileged user may profile any process",
    ) {
        return;
    }
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = dir.path().join("x.svg");
    // PID 1 belongs to root.
    let out = ember_unprivileged(&["record", "-p", "1", "-d", "1", "-o", o.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needed in [
        "perf_event_paranoid",
        "sudo sysctl kernel.perf_event_paranoid=1",
        "CAP_PERFMON",
        "root",
    ] {
        assert!(stderr.contains(needed), "{needed:?} missing from: {stderr}");
    }
    assert!(!o.exists());
}

#[test]
fn kernel_flag_fails_instead_of_dropping_kernel_frames() {
    if !runs_here(
        "kernel_flag_fails_instead_of_dropping_kernel_frames",
        paranoid() >= 2,
        "kernel.perf_event_paranoid is below 2, so unprivileged kernel sampling is allowed: \
         nothing to refuse",
    ) {
        return;
    }
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = dir.path().join("k.folded");
    let out = ember_unprivileged(&[
        "record",
        "--kernel",
        "-o",
        o.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "0.2",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("perf_event_paranoid"));
    assert!(!o.exists());
}

#[test]
fn unprivileged_off_cpu_falls_back_to_ptrace() {
    let _serial = serial();
    if !runs_here(
        "unprivileged_off_cpu_falls_back_to_ptrace",
        paranoid() >= 2,
        "kernel.perf_event_paranoid is below 2, so perf events serve --off-cpu themselves",
    ) {
        return;
    }
    let exe = workload("offcpu", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let o = dir.path().join("w.folded");
    let run = |backend: &str| {
        ember_unprivileged(&[
            "record",
            "--backend",
            backend,
            "--off-cpu",
            "-o",
            o.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "1",
        ])
    };
    // perf events alone cannot see switches without kernel sampling: refused, saying so.
    assert_perf_refused(&run("perf"), "needs kernel sampling");
    // auto: ptrace, said once, and the waits are there.
    assert_fell_back(&run("auto"));
    let stacks = read_folded(&o);
    assert!(
        samples_with(&stacks, "[off-cpu] clock_nanosleep") > 200,
        "{stacks:?}"
    );
}

#[test]
fn unprivileged_runs_one_after_another_get_the_same_buffers() {
    let _serial = serial();
    if !runs_here(
        "unprivileged_runs_one_after_another_get_the_same_buffers",
        nix::unistd::geteuid().is_root(),
        "this test runs ember as `nobody` through setpriv, which needs root",
    ) {
        return;
    }
    // The kernel counts perf buffers against the user's locked memory for as long as the
    // user has a process: keep one, as a logged-in user has a shell.
    let mut user_alive = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sleep",
            "120",
        ])
        .spawn()
        .expect("setpriv (util-linux)");
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let folded = dir.path().join("b.folded");
    let sizes: Vec<String> = (0..3)
        .map(|_| {
            let out = ember_unprivileged(&[
                "record",
                "-v",
                "-o",
                folded.to_str().unwrap(),
                "--",
                exe.to_str().unwrap(),
                "0.2",
            ]);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{stderr}");
            let (_, rest) = stderr.split_once("ring buffers of ").expect(&stderr);
            rest.split(',').next().unwrap().to_string()
        })
        .collect();
    let _ = user_alive.kill();
    let _ = user_alive.wait();
    // Each run gives back all the locked memory it used (a relay process that mapped the
    // buffers a second time left half of it counted, so the next run got half the buffers).
    assert!(sizes.windows(2).all(|w| w[0] == w[1]), "{sizes:?}");
}

#[test]
fn unprivileged_attach_to_two_processes_samples_both() {
    let _serial = serial();
    if !runs_here(
        "unprivileged_attach_to_two_processes_samples_both",
        nix::unistd::geteuid().is_root(),
        "this test runs ember and its targets as `nobody` through setpriv, which needs root",
    ) {
        return;
    }
    const NOBODY: [&str; 4] = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let spawn = || {
        Command::new(NOBODY[0])
            .args(&NOBODY[1..])
            .args([exe.to_str().unwrap(), "30"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("setpriv (util-linux)")
    };
    let mut targets = [spawn(), spawn()];
    let pids: Vec<u32> = targets.iter().map(|t| t.id()).collect();
    // Attach once setpriv has become the workload (before, the process is root's).
    for &pid in &pids {
        while std::fs::read_link(format!("/proc/{pid}/exe"))
            .ok()
            .as_deref()
            != Some(&*exe)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let folded = dir.path().join("two.folded");
    let list = format!("{},{}", pids[0], pids[1]);
    let args = ["--per-process", "-p", &list, "-o", folded.to_str().unwrap()];
    // Two processes on each CPU's buffer: the second writes into the first's
    // (PERF_EVENT_IOC_SET_OUTPUT), which must survive the buffers' handover to the relay.
    let ember = attach_as(&NOBODY, &args);
    // Until each has used half a second of CPU (on a busy machine they may get little), then
    // Ctrl-C: every CPU second counted here was sampled (not so after -d: the targets run on
    // while ember writes its outputs).
    let cpu_before: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    for (&pid, &before) in pids.iter().zip(&cpu_before) {
        wait_for_cpu(pid, before, 0.5);
    }
    let cpu_after: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ember.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (status, stderr) = ember.finish();
    for t in &mut targets {
        let _ = t.kill();
        let _ = t.wait();
    }
    assert!(status.success(), "{stderr}");
    let stacks = read_folded(&folded);
    for (i, pid) in pids.iter().enumerate() {
        let suffix = format!("-{pid}");
        let n: u64 = stacks
            .iter()
            .filter(|s| s.frames[0].ends_with(&suffix))
            .map(|s| s.count)
            .sum();
        let what = format!("process {pid}: {stderr}");
        assert_samples_cover_cpu(n, cpu_after[i] - cpu_before[i], 999, &what);
    }
}

/// Without privileges the kernel refuses ember's BPF program: stacks are walked in user
/// space, as with `--unwind user`. Asked for by name (`--unwind kernel`), a warning says so
/// once; by default, only `-v` does.
#[test]
fn unprivileged_unwind_in_kernel_falls_back_to_user_space() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let folded = dir.path().join("u.folded");
    for (args, warned) in [
        (&["--unwind", "kernel"][..], true),
        (&[][..], false),
        (&["-v"][..], false),
    ] {
        let mut full = vec!["record", "-o", folded.to_str().unwrap()];
        full.extend_from_slice(args);
        full.extend(["--", exe.to_str().unwrap(), "1"]);
        let out = ember_unprivileged(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let said = if warned || args.contains(&"-v") { 1 } else { 0 };
        assert_eq!(
            stderr.matches("stacks are walked in user space").count(),
            said,
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.contains("warning"), warned, "{args:?}: {stderr}");
        let stacks = read_folded(&folded);
        assert!(self_share(&stacks, "hot_sixty") > 50.0, "{stderr}");
    }
}

/// Without privileges `-a` is refused before anything runs, saying what it needs.
#[test]
fn unprivileged_system_wide_recording_says_it_needs_root() {
    let _serial = serial();
    let dir = scratch();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = dir.path().join("ran");
    let folded = dir.path().join("a.folded");
    let out = ember_unprivileged(&[
        "record",
        "-a",
        "-o",
        folded.to_str().unwrap(),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("-a") && stderr.contains("sudo"), "{stderr}");
    assert!(!marker.exists(), "the command ran");
    assert!(!folded.exists());
}
