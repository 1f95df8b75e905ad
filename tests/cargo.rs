//! End-to-end: profiling test runs — `cargo ember test|bench` and `ember record --process ...
//! -- cargo test` on the small crate in testdata/rusttests.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

const CARGO_EMBER: &str = env!("CARGO_BIN_EXE_cargo-ember");

fn crate_dir() -> PathBuf {
    testdata("rusttests")
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rusttests-target")
}

/// `cargo ember ARGS` in testdata/rusttests, the way cargo runs the subcommand.
fn cargo_ember(args: &[&str], fail: bool) -> Output {
    cargo_ember_with(args, fail, None)
}

/// The same, with the test `slower` made half as slow again.
fn cargo_ember_with(args: &[&str], fail: bool, slower: Option<&str>) -> Output {
    let mut cmd = Command::new(CARGO_EMBER);
    cmd.arg("ember")
        .args(args)
        .arg("--target-dir")
        .arg(target_dir())
        .arg("--offline")
        .current_dir(crate_dir())
        .env("CARGO", env!("CARGO"))
        .env_remove("RUSTFLAGS");
    if fail {
        cmd.env("RUSTTESTS_FAIL", "1");
    } else {
        cmd.env_remove("RUSTTESTS_FAIL");
    }
    match slower {
        Some(t) => cmd.env("RUSTTESTS_SLOWER", t),
        None => cmd.env_remove("RUSTTESTS_SLOWER"),
    };
    cmd.output().expect("run cargo-ember")
}

/// The three tests burn 1.2, 0.8 and 0.4 s of CPU: the ranking at the end and the JSON list
/// them in that order, with CPU seconds near those.
fn assert_tests_ranked(stderr: &str, json: &std::path::Path) {
    let tests = [
        "alpha_test_burns_cpu_for_a_while",
        "beta_test_burns_cpu_for_a_while",
        "gamma_test_burns_cpu_for_a_while",
    ];
    let position = |t: &str| {
        stderr
            .lines()
            .position(|l| l.contains(t) && l.contains('%'))
            .unwrap_or_else(|| panic!("{t} is not in the ranking:\n{stderr}"))
    };
    assert!(position(tests[0]) < position(tests[1]), "{stderr}");
    assert!(position(tests[1]) < position(tests[2]), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let row = |t: &str| rows.iter().position(|r| r["name"] == t).unwrap();
    assert!(row(tests[0]) < row(tests[1]) && row(tests[1]) < row(tests[2]));
    for (t, cpu) in tests.iter().zip([1.2, 0.8, 0.4]) {
        let r = &rows[row(t)];
        let measured = r["cpu_seconds"].as_f64().unwrap();
        assert!(
            (measured - cpu).abs() < 0.25 * cpu,
            "{t}: {measured} s of CPU, burnt {cpu} s"
        );
        for field in ["share_pct", "samples", "hottest", "hottest_self_samples"] {
            assert!(r.get(field).is_some(), "{field} missing: {r}");
        }
        assert!(!r["hottest"].as_str().unwrap().is_empty(), "{r}");
    }
}

#[test]
fn cargo_ember_test_gives_each_test_its_own_tower() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("tests.folded");
    let json = dir.path().join("tests.json");
    let out = cargo_ember(
        &[
            "test",
            "-o",
            folded.to_str().unwrap(),
            "-o",
            json.to_str().unwrap(),
        ],
        false,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_tests_ranked(&stderr, &json);
    // The doctest's binary was run and deleted; it is left out, and nothing is said about it.
    assert!(!stderr.contains("rust_out"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let stacks = read_folded(&folded);
    for (test, func) in [
        ("alpha_test_burns_cpu_for_a_while", "rusttests::alpha_hot"),
        ("beta_test_burns_cpu_for_a_while", "rusttests::beta_hot"),
        ("gamma_test_burns_cpu_for_a_while", "rusttests::gamma_hot"),
    ] {
        // The full test name (the kernel keeps 15 bytes of it) roots its own function.
        let under: u64 = stacks
            .iter()
            .filter(|s| s.frames[0] == test && s.frames.iter().any(|f| f == func))
            .map(|s| s.count)
            .sum();
        assert!(
            under > 200,
            "{func} under {test}: {under} samples\n{stderr}"
        );
        let elsewhere: u64 = stacks
            .iter()
            .filter(|s| s.frames[0] != test && s.frames.iter().any(|f| f == func))
            .map(|s| s.count)
            .sum();
        assert_eq!(elsewhere, 0, "{func} outside {test}");
    }
    // cargo and rustc are not in the picture.
    assert!(!stacks
        .iter()
        .any(|s| s.frames[0] == "cargo" || s.frames[0].starts_with("rustc")));
}

#[test]
fn failing_test_makes_cargo_ember_fail() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("fail.folded");
    let out = cargo_ember(&["test", "-o", folded.to_str().unwrap()], true);
    assert_eq!(
        out.status.code(),
        Some(101),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The profile is written all the same.
    assert!(total(&read_folded(&folded)) > 0);
}

#[test]
fn record_with_process_filter_leaves_cargo_and_rustc_out() {
    let _serial = serial();
    // Build first so the recording is of the test run.
    let st = Command::new(env!("CARGO"))
        .args(["test", "--no-run", "--offline", "--quiet", "--target-dir"])
        .arg(target_dir())
        .current_dir(crate_dir())
        .env_remove("RUSTFLAGS")
        .status()
        .unwrap();
    assert!(st.success());
    let dir = scratch();
    let folded = dir.path().join("filtered.folded");
    let out = Command::new(EMBER)
        .args(["record", "--process", "/deps/", "--per-process", "-o"])
        .arg(&folded)
        .args(["--", env!("CARGO"), "test", "--offline", "--target-dir"])
        .arg(target_dir())
        .current_dir(crate_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTTESTS_FAIL")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stacks = read_folded(&folded);
    assert!(samples_with(&stacks, "rusttests::alpha_hot") > 200);
    for s in &stacks {
        let root = &s.frames[0];
        assert!(
            root.starts_with("burn-") || root.starts_with("rusttests-"),
            "a process other than the test binaries: {root}"
        );
    }
}

#[test]
fn cargo_ember_bench_profiles_a_harness_false_bench() {
    let _serial = serial();
    let dir = scratch();
    let folded = dir.path().join("bench.folded");
    let out = cargo_ember(&["bench", "-o", folded.to_str().unwrap()], false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stacks = read_folded(&folded);
    let n = samples_with(&stacks, "rusttests::bench_hot_loop");
    assert!(n > 500, "bench_hot_loop: {n} samples");
}

#[test]
fn two_test_rankings_compared_test_by_test_name_the_slower_test() {
    let _serial = serial();
    let dir = scratch();
    let run = |name: &str, slower: Option<&str>| {
        let json = dir.path().join(name);
        let out = cargo_ember_with(&["test", "-o", json.to_str().unwrap()], false, slower);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json
    };
    let (base, again, slow) = (
        run("base.json", None),
        run("again.json", None),
        run("slow.json", Some("beta")),
    );
    let diff = |head: &std::path::Path| {
        ember(&[
            "diff",
            base.to_str().unwrap(),
            head.to_str().unwrap(),
            "--fail-over",
            "20",
        ])
    };
    // The same tests again: no test is slower beyond noise.
    let out = diff(&again);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // beta burns 1.2 s instead of 0.8 (+50 %): it fails the gate, first in the table.
    let out = diff(&slow);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let first = stdout.lines().nth(1).unwrap();
    assert!(
        first.ends_with("beta_test_burns_cpu_for_a_while"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("beta_test_burns_cpu_for_a_while"),
        "{stderr}"
    );
    assert!(!stderr.contains("alpha_test"), "{stderr}");
}
