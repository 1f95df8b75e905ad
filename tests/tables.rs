//! The unwind tables an in-kernel walk is to use (rows built from `.eh_frame` alone): every
//! sample of real programs walked with them gives the DWARF unwinder's frames, or the same
//! frames as far as the rows go.

mod common;

use common::*;

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

fn assert_tables_agree(what: &str, args: &[&str]) {
    let mut full = vec!["--debug-check-tables", "-v"];
    full.extend_from_slice(args);
    let out = record_ok(&full);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (compared, same, early, different) = check_counts(&stderr);
    assert!(
        compared > 300,
        "{what}: {compared} samples compared\n{stderr}"
    );
    assert_eq!(different, 0, "{what}: stacks differ\n{stderr}");
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
