//! End-to-end: `ember record -- CMD` on real workloads, asserting on what it writes.

mod common;

use common::*;

/// The workload prints its own measured CPU shares; ember's self-time shares must agree
/// within 3 percentage points, with and without frame pointers, on both backends.
#[test]
fn time_shares_match_the_programs_own_measurement() {
    let _serial = serial();
    for (backend, build) in BACKENDS_AND_BUILDS {
        let exe = workload("shares", build);
        let dir = scratch();
        let folded = dir.path().join("out.folded");
        let out = record_ok(&[
            "-v",
            "--backend",
            backend,
            "-F",
            "999",
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "3.5",
        ]);
        let stacks = read_folded(&folded);
        let n = total(&stacks);
        assert!(n >= 3000, "{backend} {build:?}: only {n} samples");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let independent = match backend {
            "ptrace" => ptrace_independent_samples(&stderr).expect("ptrace -v line"),
            _ => n,
        };
        let truths = truths(&out.stdout);
        for (func, truth) in &truths {
            let (func, truth) = (func.as_str(), *truth);
            let measured = self_share(&stacks, func);
            eprintln!("{backend} {build:?} {func}: ember {measured:.2}% truth {truth:.2}%");
            // perf events take ~3,500 independent samples here (1 SD of a 60 % share: 0.8
            // points). ptrace may take fewer, weighted ones: on a busy machine a stop that
            // finds the thread waiting for a CPU is not sampled, and the sampled stops count
            // for its CPU time (`-v` says how many are independent).
            let floor = if backend == "ptrace" { 5.0 } else { 3.0 };
            let tolerance = share_tolerance(truth, independent, floor);
            assert!(
                (measured - truth).abs() <= tolerance,
                "{backend} {build:?} {func}: ember says {measured:.2}%, the program measured \
                 {truth:.2}% (allowed {tolerance:.1} points for {independent} independent \
                 samples)"
            );
        }
        assert_eq!(truths.len(), 3, "the workload printed no truth: {out:?}");
    }
}

#[test]
fn both_threads_are_sampled() {
    let _serial = serial();
    for build in BOTH {
        let exe = workload("threads", build);
        let dir = scratch();
        let folded = dir.path().join("t.folded");
        record_ok(&[
            "-o",
            folded.to_str().unwrap(),
            "--per-thread",
            "--",
            exe.to_str().unwrap(),
            "1",
        ]);
        let stacks = read_folded(&folded);
        let n = total(&stacks);
        for f in ["thread_a_hot", "thread_b_hot"] {
            let share = 100.0 * samples_with(&stacks, f) as f64 / n as f64;
            assert!(
                share > 35.0,
                "{build:?}: {f} has {share:.1}% of {n} samples"
            );
        }
        // --per-thread roots: comm-PID/TID, and the two hot functions on different threads.
        let root_of = |f: &str| {
            stacks
                .iter()
                .find(|s| user_leaf(s) == f)
                .map(|s| s.frames[0].clone())
                .unwrap()
        };
        let (a, b) = (root_of("thread_a_hot"), root_of("thread_b_hot"));
        assert!(a.contains('/') && b.contains('/'), "{a} {b}");
        assert_ne!(a, b);
    }
}

#[test]
fn forked_and_execed_children_and_grandchildren_are_followed() {
    let _serial = serial();
    for (backend, build) in BACKENDS_AND_BUILDS {
        let exe = workload("forker", build);
        let dir = scratch();
        let folded = dir.path().join("f.folded");
        let out = record_ok(&[
            "--backend",
            backend,
            "-o",
            folded.to_str().unwrap(),
            "--per-process",
            "--",
            exe.to_str().unwrap(),
        ]);
        let stacks = read_folded(&folded);
        let mut roots = std::collections::BTreeSet::new();
        for f in [
            "parent_burn",
            "child_one_burn",
            "child_two_burn",
            "grandchild_burn",
        ] {
            let with: Vec<&Stack> = stacks
                .iter()
                .filter(|s| s.frames.iter().any(|x| x == f))
                .collect();
            let n: u64 = with.iter().map(|s| s.count).sum();
            // Each burns 0.3-0.5 s of CPU: ~300-500 samples at 999 Hz.
            assert!(n > 150, "{backend} {build:?}: {f} has {n} samples");
            // ... and is unwound all the way to main.
            assert!(with.iter().all(|s| s.frames.iter().any(|x| x == "main")));
            roots.insert(with[0].frames[0].clone());
        }
        assert_eq!(
            roots.len(),
            4,
            "{backend}: four processes, four roots: {roots:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("4 processes"), "{stderr}");
    }
}

/// Every one of the 200 recursion frames is between main and the leaf, in both builds.
#[test]
fn deep_recursion_is_unwound_completely() {
    let _serial = serial();
    for (backend, build) in BACKENDS_AND_BUILDS {
        let exe = workload("recursion", build);
        let dir = scratch();
        let folded = dir.path().join("r.folded");
        record_ok(&[
            "--backend",
            backend,
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "200",
            "1",
        ]);
        let stacks = read_folded(&folded);
        let leaf_samples: Vec<&Stack> = stacks
            .iter()
            .filter(|s| user_leaf(s) == "leaf_burn")
            .collect();
        let n: u64 = leaf_samples.iter().map(|s| s.count).sum();
        assert!(
            n as f64 > 0.9 * total(&stacks) as f64,
            "{backend} {build:?}: leaf_burn has {n} of {} samples",
            total(&stacks)
        );
        for s in &leaf_samples {
            let main = s.frames.iter().position(|f| f == "main");
            let leaf = s.frames.iter().rposition(|f| f == "leaf_burn").unwrap();
            let main =
                main.unwrap_or_else(|| panic!("{backend} {build:?}: no main in {:?}", s.frames));
            let between = &s.frames[main + 1..leaf];
            assert_eq!(between.len(), 200, "{backend} {build:?}: {:?}", s.frames);
            assert!(between.iter().all(|f| f == "recurse"), "{between:?}");
        }
    }
}

#[test]
fn inlined_function_is_its_own_frame() {
    let _serial = serial();
    for build in BOTH {
        let exe = workload("inline", build);
        let dir = scratch();
        let folded = dir.path().join("i.folded");
        record_ok(&[
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "1",
        ]);
        let stacks = read_folded(&folded);
        let share = self_share(&stacks, "inlined_hot_[i]");
        assert!(share > 80.0, "{build:?}: inlined_hot has {share:.1}%");
        let s = stacks
            .iter()
            .find(|s| user_leaf(s) == "inlined_hot_[i]")
            .unwrap();
        let n = s.frames.len();
        assert_eq!(s.frames[n - 2], "caller_of_inline", "{:?}", s.frames);

        // --no-inline folds it into its caller.
        record_ok(&[
            "--no-inline",
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            "0.5",
        ]);
        let stacks = read_folded(&folded);
        assert!(self_share(&stacks, "caller_of_inline") > 80.0);
        assert_eq!(samples_with(&stacks, "inlined_hot_[i]"), 0);
    }
}

#[test]
fn exit_status_is_passed_through() {
    let _serial = serial();
    let dir = scratch();
    let o = dir.path().join("x.folded");
    let o = o.to_str().unwrap();
    let out = ember(&["record", "-o", o, "--", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = ember(&["record", "-o", o, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let out = ember(&["record", "-o", o, "--", "true"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The output exists even when the command failed.
    assert!(std::path::Path::new(o).exists());
}

#[test]
fn the_command_keeps_the_users_priority() {
    // ember raises its own reader's priority (as root); the command must not inherit that.
    let _serial = serial();
    let dir = scratch();
    let o = dir.path().join("x.folded");
    let out = ember(&["record", "-v", "-o", o.to_str().unwrap(), "--", "nice"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // SAFETY: getpriority has no preconditions.
    let ours = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        ours.to_string(),
        "{stderr}"
    );
    if nix::unistd::geteuid().is_root() {
        assert!(
            stderr.contains(&format!("reader priority: nice {}", (ours - 20).max(-20))),
            "{stderr}"
        );
    }
}

#[test]
fn svg_is_well_formed_xml_with_the_function_names() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let svg = dir.path().join("flame.svg");
    record_ok(&[
        "-o",
        svg.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "0.5",
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    let mut reader = quick_xml::Reader::from_str(&text);
    let mut elements = 0;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(quick_xml::events::Event::Start(_)) => elements += 1,
            Ok(_) => {}
            Err(e) => panic!(
                "SVG is not well-formed XML at {}: {e}",
                reader.buffer_position()
            ),
        }
    }
    assert!(elements > 10);
    for f in ["hot_sixty", "hot_thirty", "hot_ten", "main"] {
        assert!(text.contains(f), "{f} missing from the SVG");
    }
    assert!(text.contains("samples at 999 Hz"), "subtitle missing");
}

#[test]
fn unwritable_output_fails_before_the_command_runs() {
    let _serial = serial();
    let dir = scratch();
    let marker = dir.path().join("ran");
    let cmd = format!("touch {}", marker.display());
    for bad in [
        dir.path().join("no/such/dir/x.svg"),
        dir.path().to_path_buf().join("."),
        dir.path().join("x.unknownformat"),
    ] {
        let out = ember(&[
            "record",
            "-o",
            bad.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &cmd,
        ]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ember: error"), "{stderr}");
        assert!(
            !marker.exists(),
            "the command ran despite the bad -o {bad:?}"
        );
    }
}

#[test]
fn missing_command_is_a_clear_error() {
    let _serial = serial();
    let out = ember(&["record", "--", "no-such-command-ember-test"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("command not found"), "{stderr}");
}

/// `-d` in launch mode stops sampling and writes the outputs, but the command runs on and its
/// exit status is still ember's.
#[test]
fn duration_stops_sampling_but_not_the_command() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let folded = dir.path().join("d.folded");
    let script = format!("{} 1.5 >/dev/null; exit 3", exe.display());
    let started = std::time::Instant::now();
    let out = ember(&[
        "record",
        "-d",
        "0.5",
        "-o",
        folded.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1400));
    let n = total(&read_folded(&folded));
    // Half a second of samples at most (one thread cannot use more CPU than that in 0.5 s;
    // a little over for the start), not the whole run's 1,500; on a busy machine fewer.
    assert!((1..=650).contains(&n), "{n} samples");
}

/// The kernel's frame-pointer chain stops at kernel.perf_event_max_stack (127): such stacks
/// say `[truncated]` at the root instead of passing for complete ones.
#[test]
fn cut_stacks_are_marked_truncated() {
    let _serial = serial();
    let exe = workload("recursion", Build::FramePointers);
    let dir = scratch();
    let stacks = record_folded(
        dir.path(),
        &["--call-graph", "fp"],
        &[exe.to_str().unwrap(), "200", "0.5"],
    );
    let leaf: Vec<&Stack> = stacks
        .iter()
        .filter(|s| user_leaf(s) == "leaf_burn")
        .collect();
    assert!(!leaf.is_empty());
    for s in &leaf {
        assert_eq!(s.frames[1], "[truncated]", "{:?}", &s.frames[..3]);
        assert!(!s.frames.iter().any(|f| f == "main"));
    }
    // Complete stacks carry no marker.
    let full = record_folded(dir.path(), &[], &[exe.to_str().unwrap(), "200", "0.5"]);
    assert!(!full
        .iter()
        .any(|s| s.frames.iter().any(|f| f == "[truncated]")));
}

#[test]
fn every_window_is_written_and_the_windows_add_up_to_the_whole() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let template = dir.path().join("w-{n}.folded");
    let pprof = dir.path().join("w-{n}.pb.gz");
    let out = record_ok(&[
        "--every",
        "1",
        "-o",
        template.to_str().unwrap(),
        "-o",
        pprof.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "3.5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 3.5 s of CPU take at least 3.5 s: at least four windows, numbered from 1 without a gap.
    let windows: Vec<u64> = (1..)
        .map(|n| dir.path().join(format!("w-{n}.folded")))
        .take_while(|p| p.exists())
        .map(|p| total(&read_folded(&p)))
        .collect();
    assert!(windows.len() >= 4, "{windows:?}\n{stderr}");
    let last = format!("w-{}.folded", windows.len());
    assert!(stderr.contains(&last), "{stderr}");
    let whole = summary_count(&stderr, "samples");
    assert_eq!(windows.iter().sum::<u64>(), whole, "{windows:?}\n{stderr}");
    // The summary's time is the whole recording's, as its count is: 3.5 s of CPU take at
    // least 3.5 s.
    assert!(
        stderr.contains(&format!("wrote {} windows, the last: ", windows.len())),
        "{stderr}"
    );
    let seconds: f64 = stderr
        .split(" s at ")
        .next()
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {stderr}"));
    assert!(seconds >= 3.4, "{seconds} s\n{stderr}");
    assert_samples_cover_cpu(whole, 3.5, 999, "all windows");
    // Each window's pprof says when it began and how long it lasted (what continuous
    // profilers ingest): one after the other, without gaps or overlaps.
    let meta: Vec<ember::profile::Metadata> = (1..=windows.len())
        .map(|n| {
            let bytes = std::fs::read(dir.path().join(format!("w-{n}.pb.gz"))).unwrap();
            ember::output::pprof::read(&bytes).unwrap().meta
        })
        .collect();
    for pair in meta.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let end_of_a = a.start.expect("time_nanos") + a.duration;
        let gap = b
            .start
            .expect("time_nanos")
            .duration_since(end_of_a)
            .unwrap_or_else(|e| e.duration());
        assert!(
            gap.as_millis() < 50,
            "windows {a:?} and {b:?} are {gap:?} apart"
        );
    }
}

/// Programs that ended are named in their windows, then let go of: a recording of hours
/// on a machine that runs ever new programs holds the files of what runs now.
#[test]
fn programs_that_ended_are_named_in_their_window_then_let_go_of() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let template = dir.path().join("w-{n}.folded");
    // Three programs never seen before, one after the other, each deleted once it ended.
    let script = format!(
        "for i in 1 2 3; do cp {exe} {d}/new$i && {d}/new$i 0.6 && rm {d}/new$i; done",
        exe = exe.display(),
        d = dir.path().display()
    );
    let out = record_ok(&[
        "-v",
        "--every",
        "1",
        "-o",
        template.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let let_go: u64 = stderr
        .split(" files let go of after their windows")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no files let go of\n{stderr}"));
    assert!(let_go >= 2, "{stderr}");
    let windows: Vec<Vec<Stack>> = (1..)
        .map(|n| dir.path().join(format!("w-{n}.folded")))
        .take_while(|p| p.exists())
        .map(|p| read_folded(&p))
        .collect();
    let all: Vec<Stack> = windows.concat();
    // Every program's functions are named, in whichever window they ran.
    let unnamed: Vec<&Stack> = all
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f.starts_with("new") && f.contains("+0x"))
        })
        .collect();
    assert!(unnamed.is_empty(), "{unnamed:?}\n{stderr}");
    assert!(
        samples_with(&all, "hot_sixty") * 2 > total(&all),
        "{stderr}"
    );
}

#[test]
fn sigusr1_writes_the_outputs_now_and_recording_goes_on() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let (folded, svg) = (dir.path().join("snap.folded"), dir.path().join("snap.svg"));
    let mut ember = std::process::Command::new(EMBER)
        .args(["record", "--backend", "perf", "-o"])
        .arg(&folded)
        .arg("-o")
        .arg(&svg)
        .arg("--")
        .arg(&exe)
        .arg("4")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let target = child_of(ember.id());
    while cpu_seconds(target) < 0.5 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(ember.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(folded.exists() && svg.exists()) {
        assert!(std::time::Instant::now() < until, "no snapshot was written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Whole files (written atomically), while the recording goes on.
    let snapshot = total(&read_folded(&folded));
    assert!(snapshot > 0);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_end().ends_with("</svg>") && text.contains("hot_sixty"));
    assert!(
        ember.try_wait().unwrap().is_none(),
        "ember ended before the snapshot"
    );
    let out = ember.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let whole = total(&read_folded(&folded));
    assert!(
        whole > snapshot,
        "the final outputs ({whole}) hold no more than the snapshot"
    );
    assert_samples_cover_cpu(whole, 4.0, 999, "after the snapshot");
}
