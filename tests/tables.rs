//! The unwind tables an in-kernel walk is to use (rows built from `.eh_frame` alone): every
//! sample of real programs walked with them gives the DWARF unwinder's frames, or the same
//! frames as far as the rows go.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// The counts of the `-v` line of `--debug-check-tables`: (compared, same, same until the
/// rows ended, different).
fn check_counts(stderr: &str) -> (u64, u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("unwind tables:"))
        .unwrap_or_else(|| panic!("no unwind tables line in\n{stderr}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1], numbers[2], numbers[3])
}

/// The counts of the `-v` line of `--debug-check-tables` (`stderr`), asserting that more than
/// `at_least` samples were walked both ways and none differed (`what` names the run).
fn assert_none_differ(what: &str, stderr: &str, at_least: u64) -> (u64, u64, u64) {
    let (compared, same, early, different) = check_counts(stderr);
    assert!(
        compared > at_least,
        "{what}: {compared} samples compared\n{stderr}"
    );
    assert_eq!(different, 0, "{what}: stacks differ\n{stderr}");
    (compared, same, early)
}

/// The rows walked in user space (their twin in the kernel: below).
fn assert_tables_agree(what: &str, args: &[&str]) {
    let mut full = vec!["--debug-check-tables", "-v", "--unwind", "user"];
    full.extend_from_slice(args);
    let out = record_ok(&full);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (compared, same, early) = assert_none_differ(what, &stderr, 300);
    // Every function of these programs and of the C library has rows: the walks end
    // together nearly always.
    assert!(
        same * 100 >= compared * 99,
        "{what}: {same} of {compared} the same to the end ({early} ended early)\n{stderr}"
    );
}

#[test]
fn the_rows_alone_unwind_deep_c_stacks_as_dwarf_does() {
    let _serial = serial();
    let dir = scratch();
    let out = dir.path().join("out.folded");
    let out = out.to_str().unwrap();
    // 5,000 frames without frame pointers, whole at ptrace's stops.
    let recursion = workload("recursion", Build::NoFramePointers);
    assert_tables_agree(
        "recursion",
        &[
            "--backend",
            "ptrace",
            "-o",
            out,
            "--",
            recursion.to_str().unwrap(),
            "5000",
            "1",
        ],
    );
    // A 600 KiB frame.
    let bigframe = workload("bigframe", Build::NoFramePointers);
    assert_tables_agree(
        "bigframe",
        &[
            "--backend",
            "ptrace",
            "-o",
            out,
            "--",
            bigframe.to_str().unwrap(),
            "1",
        ],
    );
    // Two threads, stacks copied by perf events, and a system call every few microseconds
    // (samples in the C library's wrappers and the vDSO).
    let threads = workload("threads", Build::NoFramePointers);
    assert_tables_agree(
        "threads",
        &[
            "--backend",
            "perf",
            "-o",
            out,
            "--",
            threads.to_str().unwrap(),
            "1",
        ],
    );
    let callmix = workload("callmix", Build::NoFramePointers);
    assert_tables_agree(
        "callmix",
        &[
            "--backend",
            "perf",
            "-o",
            out,
            "--",
            callmix.to_str().unwrap(),
            "1",
        ],
    );
}

/// CPython's evaluation loop, its epilogues and its C extensions.
#[test]
fn the_rows_alone_unwind_the_python_interpreter_as_dwarf_does() {
    let _serial = serial();
    let dir = scratch();
    let out = dir.path().join("out.folded");
    let work = testdata("python/work.py");
    assert_tables_agree(
        "python3.11",
        &[
            "--backend",
            "auto",
            "-o",
            out.to_str().unwrap(),
            "--",
            "/usr/bin/python3.11",
            work.to_str().unwrap(),
            "1",
        ],
    );
}

/// The walk in the kernel (`--unwind kernel`, ember's BPF program) against the DWARF
/// unwinder on a copy of the same stack taken at the same sample: the same frames.
#[test]
fn the_walk_in_the_kernel_gives_the_dwarf_unwinders_frames() {
    let _serial = serial();
    let dir = scratch();
    let out = dir.path().join("out.folded");
    let out = out.to_str().unwrap();
    let kernel = ["--unwind", "kernel", "--backend", "perf", "-o", out, "--"];
    for (name, args) in [
        ("recursion", vec!["5000", "1"]),
        ("bigframe", vec!["1"]),
        ("threads", vec!["1"]),
        ("callmix", vec!["1"]),
    ] {
        let exe = workload(name, Build::NoFramePointers);
        let mut all: Vec<&str> = kernel.to_vec();
        all.push(exe.to_str().unwrap());
        all.extend(args.iter().copied());
        let (_, stderr) = record_kernel_walk(&all, true);
        assert_none_differ(name, &stderr, 300);
    }
}

/// Record with `--debug-check-tables` (`check`) and `-v`; fails where the kernel refused
/// the program, saying so.
fn record_kernel_walk(args: &[&str], check: bool) -> (std::process::Output, String) {
    let mut full = vec!["-v"];
    if check {
        full.push("--debug-check-tables");
    }
    full.extend_from_slice(args);
    let out = record_ok(&full);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stderr.contains("stacks walked in the kernel"),
        "the stacks were not walked in the kernel (BPF needs root, or CAP_BPF and \
         CAP_PERFMON, and a kernel with bpf_loop: 6.1 or later)\n{stderr}"
    );
    (out, stderr)
}

/// 5,000 frames, and 2,000 frames of 1 KiB, without frame pointers, default options: whole
/// stacks with no ptrace stop and no stack copy. (Samples taken before ember has told the kernel where the
/// program's files are mapped — its first tens of milliseconds — are cut.)
#[test]
fn deep_stacks_walked_in_the_kernel_are_whole_without_stops() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("deep.folded");
    let exe = workload("recursion", Build::NoFramePointers);
    for (depth, extra) in [("5000", None), ("2000", Some("kib"))] {
        // The default options.
        let mut args = vec![
            "--backend",
            "auto",
            "-o",
            folded.to_str().unwrap(),
            "--",
            exe.to_str().unwrap(),
            depth,
            "2",
        ];
        args.extend(extra);
        let (_, stderr) = record_kernel_walk(&args, false);
        assert!(!stderr.contains("taken over by ptrace"), "{stderr}");
        let stacks = read_folded(&folded);
        let all = total(&stacks);
        let deep = samples_deeper_than(&stacks, depth.parse().unwrap());
        assert!(
            deep * 10 >= all * 9,
            "{depth} frames{}: {deep} of {all} samples whole\n{stderr}",
            extra.map_or("", |_| " of 1 KiB")
        );
    }
}

/// Where the kernel refuses the program — the bpf system call refused by a seccomp filter
/// (as in Docker's default profile), the verifier rejecting it, the perf event refusing
/// it — stacks are walked as before it existed: perf events' copies, a deep process taken
/// over by ptrace, so 5,000 frames are still whole. By default `-v` says why; asked for by
/// name, a warning does.
#[test]
fn where_the_kernel_refuses_the_program_stacks_are_walked_as_before() {
    let _serial = serial();
    let dir = scratch();
    let nobpf = compile(
        "gcc",
        "noperf.c",
        dir.path(),
        "nobpf",
        &["-DREFUSED=__NR_bpf"],
    );
    let folded = dir.path().join("deep.folded");
    let exe = workload("recursion", Build::NoFramePointers);
    let cases: [(&[&str], &[&str], &str); 4] = [
        (
            &[nobpf.to_str().unwrap()],
            &[],
            "a seccomp filter is on ember's process",
        ),
        (
            &[],
            &["--debug-bpf-refusal", "verifier"],
            "verifier rejected",
        ),
        (&[], &["--debug-bpf-refusal", "attach"], "could not attach"),
        (
            &[],
            &["--debug-bpf-refusal", "attach", "--unwind", "kernel"],
            "could not attach",
        ),
    ];
    for (wrapper, args, why) in cases {
        let mut command = std::process::Command::new(wrapper.first().copied().unwrap_or(EMBER));
        if !wrapper.is_empty() {
            command.arg(EMBER);
        }
        let out = command
            .args(["record", "-v", "-o", folded.to_str().unwrap()])
            .args(args)
            .args(["--", exe.to_str().unwrap(), "5000", "1.5"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        let refused = format!("stacks are walked in user space: {why}");
        let said = stderr
            .lines()
            .find(|l| l.contains("stacks are walked in user space"));
        assert!(
            said.is_some_and(|l| l.contains(why)),
            "{refused}?\n{stderr}"
        );
        let warned = args.contains(&"kernel");
        assert_eq!(
            said.is_some_and(|l| l.starts_with("ember: warning")),
            warned,
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("taken over by ptrace"),
            "{args:?}: {stderr}"
        );
        let stacks = read_folded(&folded);
        let (all, deep) = (total(&stacks), samples_deeper_than(&stacks, 5000));
        assert!(
            deep * 10 >= all * 9,
            "{args:?}: {deep} of {all} samples whole\n{stderr}"
        );
    }
}

/// testdata/recursion.c built static without frame pointers as `rec_a` in `dir`, and a copy
/// of it as `rec_b` (another file: rows of its own).
fn two_static_programs(dir: &Path) -> (PathBuf, PathBuf) {
    let flags = ["-O2", "-g", "-static", "-fomit-frame-pointer"];
    let first = compile("gcc", "recursion.c", dir, "rec_a", &flags);
    let second = dir.join("rec_b");
    std::fs::copy(&first, &second).unwrap();
    (first, second)
}

/// The most rows the walk held, as `-v` says it.
fn rows_at_most(stderr: &str) -> u64 {
    let at = stderr.find(" rows at most").expect("-v's line on the walk");
    stderr[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

/// The rows of a program no process runs any more are given back, and the next program's
/// go there: with room for one and a half of them, a static program that runs another
/// (`exec`) has both walked whole in the kernel, none left out, no takeover.
#[test]
fn rows_of_programs_that_ended_make_room_for_the_next() {
    let _serial = serial();
    let dir = scratch();
    let (first, second) = two_static_programs(dir.path());
    let folded = dir.path().join("rows.folded");
    let (_, stderr) = record_kernel_walk(
        &[
            "-o",
            folded.to_str().unwrap(),
            "--",
            first.to_str().unwrap(),
            "3000",
            "0.3",
        ],
        false,
    );
    let room = (rows_at_most(&stderr) * 3 / 2).to_string();
    let (_, stderr) = record_kernel_walk(
        &[
            "--debug-bpf-rows",
            &room,
            "-o",
            folded.to_str().unwrap(),
            "--",
            first.to_str().unwrap(),
            "3000",
            "0.5",
            "flat",
            "then",
            second.to_str().unwrap(),
            "3000",
            "1",
        ],
        false,
    );
    assert!(stderr.contains(" 0 files left out for room"), "{stderr}");
    assert!(!stderr.contains("; 0 files' rows given back"), "{stderr}");
    assert!(!stderr.contains("taken over by ptrace"), "{stderr}");
    let stacks = read_folded(&folded);
    let (all, deep) = (total(&stacks), samples_deeper_than(&stacks, 3000));
    assert!(
        deep * 10 >= all * 8,
        "{deep} of {all} samples whole\n{stderr}"
    );
}

/// Two static programs of other builds (other code at the same addresses, other rules): one
/// built with frame pointers and -O0, one without and with -O2.
fn two_builds_at_one_address(dir: &Path) -> (PathBuf, PathBuf) {
    let fp = ["-O2", "-g", "-static", "-fno-omit-frame-pointer"];
    let nofp = ["-O2", "-g", "-static", "-fomit-frame-pointer"];
    (
        compile("gcc", "recursion.c", dir, "rec_fp", &fp),
        compile("gcc", "recursion.c", dir, "rec_nofp", &nofp),
    )
}

/// Samples taken after an `exec` but walked before ember told the program of it (with the
/// old program's mappings, here where the new program's code is) are not walked on with the
/// old program's rows: every sample is as the DWARF unwinder walks it.
#[test]
fn a_program_execd_where_the_last_one_was_is_not_walked_with_its_rows() {
    let _serial = serial();
    let dir = scratch();
    let (first, second) = two_builds_at_one_address(dir.path());
    let folded = dir.path().join("exec.folded");
    let (_, stderr) = record_kernel_walk(
        &[
            "-o",
            folded.to_str().unwrap(),
            "--",
            first.to_str().unwrap(),
            "50",
            "1",
            "flat",
            "then",
            second.to_str().unwrap(),
            "50",
            "1",
        ],
        true,
    );
    assert_none_differ("exec", &stderr, 500);
}

/// What the program remembers of a process's frames does not outlive its mappings: a
/// process runs the first build and execs the second, at the same addresses, while another
/// process runs the first build on (so its rows stay and the rows' generation does not
/// change until the second ends). Every sample is as the DWARF unwinder walks it.
#[test]
fn frames_remembered_of_a_process_do_not_answer_after_its_exec() {
    let _serial = serial();
    let dir = scratch();
    let (first, second) = two_builds_at_one_address(dir.path());
    let folded = dir.path().join("exec.folded");
    let (a, b) = (first.display(), second.display());
    let script = format!("{a} 50 2.5 & {a} 50 1 flat then {b} 50 1; wait");
    let args = ["-o", folded.to_str().unwrap(), "--", "sh", "-c", &script];
    let (_, stderr) = record_kernel_walk(&args, true);
    assert_none_differ("exec beside the first build", &stderr, 1000);
}

/// Rows for the shell with `first` running (`sh -c "FIRST ARGS"`) and half of `first`'s
/// again: room in which `first` and another program of its size do not fit at once.
fn room_for_one_and_a_half(folded: &Path, first: &Path, with_shell: &str, args: &[&str]) -> String {
    let rows_when = |args: &[&str]| -> u64 {
        let mut full = vec!["-o", folded.to_str().unwrap(), "--"];
        full.extend_from_slice(args);
        rows_at_most(&record_kernel_walk(&full, false).1)
    };
    let with_shell = rows_when(&["sh", "-c", with_shell]);
    let mut alone = vec![first.to_str().unwrap()];
    alone.extend_from_slice(args);
    (with_shell + rows_when(&alone) / 2).to_string()
}

/// `sh -c SCRIPT` recorded with room for `room` rows: its `-v` output.
fn record_in_room(room: &str, folded: &Path, script: &str, check: bool) -> String {
    let args = [
        "--debug-bpf-rows",
        room,
        "-o",
        folded.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ];
    record_kernel_walk(&args, check).1
}

/// Rows given back and taken by another file: what the program remembers finding in the
/// first file's rows does not answer for the second's. Two builds at one address run one
/// after the other with room for one of them: the second's rows go where the first's were,
/// and every sample walked in the kernel is as the DWARF unwinder walks it.
#[test]
fn rows_taken_by_another_file_are_not_remembered_as_the_first_files() {
    let _serial = serial();
    let dir = scratch();
    let (first, second) = two_builds_at_one_address(dir.path());
    let folded = dir.path().join("rows.folded");
    let (a, b) = (first.display(), second.display());
    let room = room_for_one_and_a_half(&folded, &first, &format!("{a} 50 0.2"), &["50", "0.2"]);
    let stderr = record_in_room(&room, &folded, &format!("{a} 50 1; {b} 50 1"), true);
    assert!(stderr.contains(" 0 files left out for room"), "{stderr}");
    assert!(!stderr.contains("; 0 files' rows given back"), "{stderr}");
    assert_none_differ("rows taken", &stderr, 500);
}

/// A file left out of the rows for room gets them once a program that ended gives its back:
/// with room for one and a half static programs, the second, started while the first runs,
/// does not fit; the first ends, and the second's rows are placed while it still runs —
/// without waiting for another process to end.
#[test]
fn a_program_left_out_for_room_gets_its_rows_when_room_is_given_back() {
    let _serial = serial();
    let dir = scratch();
    let (first, second) = two_static_programs(dir.path());
    let folded = dir.path().join("rows.folded");
    let (a, b) = (first.display(), second.display());
    // The shell, its libraries and the first program at once; the first program alone.
    let with_shell = format!("{a} 10 0.3 & sleep 0.1; wait");
    let room = room_for_one_and_a_half(&folded, &first, &with_shell, &["10", "0.2"]);
    let script = format!("{a} 10 0.3 & sleep 0.1; {b} 10 1.5; wait");
    let stderr = record_in_room(&room, &folded, &script, false);
    assert!(
        stderr.contains(" 1 files left out for room (1 of them placed later)"),
        "{stderr}"
    );
}

/// Code built without unwind tables (`-fno-asynchronous-unwind-tables -g`) has its CFI in
/// `.debug_frame` only (its `.eh_frame` holds the C runtime's start-up code): its rows come
/// from there, and 5,000 frames are walked whole in the kernel, with no takeover.
#[test]
fn code_without_unwind_tables_is_walked_from_its_debug_frame() {
    let _serial = serial();
    let dir = scratch();
    let flags = [
        "-O2",
        "-g",
        "-fomit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
    ];
    let exe = compile("gcc", "recursion.c", dir.path(), "rec_df", &flags);
    let folded = dir.path().join("df.folded");
    let args = [
        "-o",
        folded.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "5000",
        "1",
    ];
    let (_, stderr) = record_kernel_walk(&args, false);
    assert!(!stderr.contains("taken over by ptrace"), "{stderr}");
    let stacks = read_folded(&folded);
    let (all, deep) = (total(&stacks), samples_deeper_than(&stacks, 5000));
    assert!(
        deep * 10 >= all * 9,
        "{deep} of {all} samples whole\n{stderr}"
    );
}

/// Samples (counts) whose stacks hold more than `depth` frames, none cut.
fn samples_deeper_than(stacks: &[Stack], depth: usize) -> u64 {
    stacks
        .iter()
        .filter(|s| s.frames.len() > depth && !s.frames.iter().any(|f| f == "[truncated]"))
        .map(|s| s.count)
        .sum()
}

/// The adversary (testdata/flipflop.c: depth flipping between 3 and 100 frames of 1 KiB
/// every few microseconds, through two outer paths whose deep frames are alike), walked in
/// the kernel at each sample: every whole stack runs from `main` through the outer function
/// its leaf belongs to, and deep ones are whole without stops.
#[test]
fn stacks_walked_in_the_kernel_never_mix_two_paths() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("flip.folded");
    let exe = workload("flipflop", Build::NoFramePointers);
    let args = [
        "-o",
        folded.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1.5",
        "100",
    ];
    let (_, stderr) = record_kernel_walk(&args, false);
    let mut deep = 0;
    for s in &read_folded(&folded) {
        let user = user_frames(s);
        let Some(first) = user.iter().position(|f| *f == "descend") else {
            continue;
        };
        if user.contains(&"[truncated]") {
            continue;
        }
        let path = user[first - 1];
        assert!(
            matches!(path, "outer_a" | "outer_b") && user[first - 2] == "main",
            "a whole stack must come from main through an outer function: {}",
            user.join(";")
        );
        let wrong = if path == "outer_a" {
            "leaf_b"
        } else {
            "leaf_a"
        };
        assert_ne!(*user.last().unwrap(), wrong, "made up: {}", user.join(";"));
        if user.iter().filter(|f| **f == "descend").count() > 50 {
            deep += s.count;
        }
    }
    assert!(deep > 0, "no whole deep stack\n{stderr}");
}

/// Attached to a running program (`-p`): its mappings are told to the kernel before
/// sampling begins, so its deep stacks are whole from the first sample.
#[test]
fn attached_deep_stacks_are_walked_in_the_kernel() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("attach.folded");
    let exe = workload("recursion", Build::NoFramePointers);
    let mut child = std::process::Command::new(&exe)
        .args(["3000", "4"])
        .spawn()
        .expect("start the workload");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    let args = ["-p", &pid, "-d", "1.5", "-o", folded.to_str().unwrap()];
    let (_, stderr) = record_kernel_walk(&args, false);
    let _ = child.kill();
    let _ = child.wait();
    let stacks = read_folded(&folded);
    let (all, deep) = (total(&stacks), samples_deeper_than(&stacks, 3000));
    assert!(all > 300, "{all} samples\n{stderr}");
    assert!(
        deep * 100 >= all * 95,
        "{deep} of {all} samples whole\n{stderr}"
    );
}
