//! End-to-end: one recording, every view — pprof read by `go tool pprof`, speedscope checked
//! against its published schema, the SVG driven in a real browser, re-rendering, diff, report.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Record the shares workload once into every format.
fn record_all(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let exe = workload("shares", Build::NoFramePointers);
    let (pb, folded, ss, svg) = (
        dir.join("p.pb.gz"),
        dir.join("p.folded"),
        dir.join("p.speedscope.json"),
        dir.join("p.svg"),
    );
    let mut args = vec![
        "-o",
        pb.to_str().unwrap(),
        "-o",
        folded.to_str().unwrap(),
        "-o",
        ss.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", exe.to_str().unwrap(), "1.5"]);
    record_ok(&args);
    (pb, folded, ss, svg)
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

#[test]
fn pprof_opens_in_go_tool_pprof_with_the_same_shares() {
    let _serial = serial();
    let dir = scratch();
    let (pb, folded, _, _) = record_all(dir.path(), &[]);
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-nodecount=10",
            "-sample_index=samples",
        ])
        .arg(&pb)
        .env("HOME", dir.path())
        .output()
        .expect("`go` must be installed for this test (scripts/test.sh installs it: apt-get install golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stacks = read_folded(&folded);
    for f in ["hot_sixty", "hot_thirty", "hot_ten"] {
        // "      flat  flat%   sum%        cum   cum%  name"
        let line = text
            .lines()
            .find(|l| l.split_whitespace().last() == Some(f))
            .unwrap_or_else(|| panic!("{f} not in pprof's top:\n{text}"));
        let flat: f64 = line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .trim_end_matches('%')
            .parse()
            .unwrap();
        // pprof's flat time is the leaf's, kernel frames included.
        let leaf: u64 = stacks
            .iter()
            .filter(|s| s.frames.last().map(String::as_str) == Some(f))
            .map(|s| s.count)
            .sum();
        let ours = 100.0 * leaf as f64 / total(&stacks) as f64;
        assert!(
            (flat - ours).abs() < 0.1,
            "{f}: pprof {flat}% vs folded {ours:.2}%"
        );
    }
    // pprof's first row is the hottest function.
    let first = text
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .nth(1)
        .unwrap();
    assert!(first.ends_with("hot_sixty"), "{text}");
}

#[test]
fn speedscope_file_validates_against_the_published_schema() {
    let _serial = serial();
    let schema = browser_dir().join("node_modules/speedscope/dist/release/file-format-schema.json");
    assert!(
        schema.exists(),
        "speedscope's schema is missing: run scripts/test.sh, which installs it (npm install --prefix tests/browser)"
    );
    let dir = scratch();
    let (_, _, ss, _) = record_all(dir.path(), &["--per-thread"]);
    let check = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
jsonschema.validate(doc, schema)
names = {f["name"] for f in doc["shared"]["frames"]}
assert "hot_sixty" in names, names
total = sum(sum(p["weights"]) for p in doc["profiles"])
print(total)
"#;
    let out = Command::new(python_with("jsonschema"))
        .args(["-c", check])
        .arg(&schema)
        .arg(&ss)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "speedscope file invalid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(total > 1000);
}

#[test]
fn svg_works_in_a_real_browser() {
    let _serial = serial();
    assert!(
        browser_dir().join("node_modules/playwright-core").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and playwright-core: run scripts/test.sh, \
         which installs both (apt-get install chromium; npm install --prefix tests/browser)"
    );
    let dir = scratch();
    let (_, _, _, svg) = record_all(dir.path(), &[]);
    // Kept as a test artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-flamegraph.png");
    let text = browser_driver(
        "flamegraph.mjs",
        &[svg.as_os_str(), os("hot_sixty"), shot.as_os_str()],
    );
    assert!(
        text.contains("\"errors\":[]"),
        "script errors in the page: {text}"
    );
    assert!(text.contains("\"found\":true"), "{text}");
    assert!(
        text.contains("\"unzoomVisible\":true"),
        "clicking a frame did not zoom: {text}"
    );
    assert!(
        text.contains("\"matched\":\"Matched: "),
        "search reported nothing: {text}"
    );
    assert!(
        !text.contains("\"highlighted\":0"),
        "search highlighted nothing: {text}"
    );
    assert!(shot.exists());
}

#[test]
fn pprof_round_trip_gives_the_same_folded_and_svg_stacks() {
    let _serial = serial();
    let dir = scratch();
    for grouping in [None, Some("--per-thread"), Some("--per-process")] {
        let extra: Vec<&str> = grouping.into_iter().collect();
        let (pb, folded, _, _) = record_all(dir.path(), &extra);
        let again = dir.path().join("again.folded");
        let mut args = vec![
            "flamegraph",
            pb.to_str().unwrap(),
            "-o",
            again.to_str().unwrap(),
        ];
        args.extend_from_slice(&extra);
        let out = ember(&args);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(&again).unwrap(),
            std::fs::read_to_string(&folded).unwrap(),
            "{grouping:?}"
        );
    }
    // Folded in, SVG out, from standard input too.
    let (_, folded, _, _) = record_all(dir.path(), &[]);
    let svg = dir.path().join("from-stdin.svg");
    let out = Command::new(EMBER)
        .args([
            "flamegraph",
            "-",
            "-o",
            svg.to_str().unwrap(),
            "--icicle",
            "--title",
            "T",
        ])
        .stdin(std::fs::File::open(&folded).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("hot_sixty"));
}

#[test]
fn diff_shows_the_function_that_grew() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let (before, after, svg) = (
        dir.path().join("before.pb.gz"),
        dir.path().join("after.folded"),
        dir.path().join("diff.svg"),
    );
    record_ok(&[
        "-o",
        before.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1",
    ]);
    record_ok(&[
        "-o",
        after.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1",
        "0",
        "swap",
    ]);
    let out = ember(&[
        "diff",
        before.to_str().unwrap(),
        after.to_str().unwrap(),
        "-o",
        svg.to_str().unwrap(),
        "--normalize",
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&svg).unwrap();
    // inferno's differential titles: "name (N samples, P%; +D%)".
    let delta = |f: &str| -> f64 {
        let start = text
            .find(&format!("<title>{f} ("))
            .unwrap_or_else(|| panic!("{f} missing"));
        let t = &text[start..start + text[start..].find("</title>").unwrap()];
        let d = t.rsplit("; ").next().unwrap().trim_end_matches("%)");
        d.parse().unwrap()
    };
    assert!(delta("hot_ten") > 30.0, "hot_ten did not grow");
    assert!(delta("hot_sixty") < -30.0, "hot_sixty did not shrink");
}

#[test]
fn report_lists_the_hottest_functions() {
    let _serial = serial();
    let dir = scratch();
    let (pb, folded, _, _) = record_all(dir.path(), &[]);
    for input in [&pb, &folded] {
        let out = ember(&["report", input.to_str().unwrap(), "--top", "3"]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert!(rows[0].ends_with("hot_sixty"), "{text}");
        assert!(rows[1].ends_with("hot_thirty"), "{text}");
        assert!(rows[2].ends_with("hot_ten"), "{text}");
    }
    let out = ember(&[
        "report",
        folded.to_str().unwrap(),
        "--by",
        "total",
        "--top",
        "1",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    // By total, the top row is on (almost) every stack: main or one of its callers (a few
    // samples land in the dynamic loader before main).
    let row = text.lines().nth(2).unwrap_or_default();
    let total: f64 = row
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.trim_end_matches('%').parse().ok())
        .unwrap_or(0.0);
    assert!(total > 99.0, "{text}");
    // record --top prints the same table at the end.
    let exe = workload("shares", Build::NoFramePointers);
    let o = dir.path().join("t.folded");
    let out = record_ok(&[
        "--top",
        "2",
        "-o",
        o.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "0.5",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hot_sixty"));
    // Garbage in: a clear error.
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "this is not a profile\n").unwrap();
    let out = ember(&["report", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("neither a pprof profile"));
}

#[test]
fn open_says_where_the_file_is_without_a_display_and_uses_browser() {
    let _serial = serial();
    let dir = scratch();
    let (_, folded, _, _) = record_all(dir.path(), &[]);
    let svg = dir.path().join("o.svg");
    let out = Command::new(EMBER)
        .args([
            "flamegraph",
            folded.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
            "--open",
        ])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("BROWSER")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no display") && stderr.contains("o.svg"),
        "{stderr}"
    );

    // With $BROWSER set, that program gets the file.
    let marker = dir.path().join("opened");
    let browser = dir.path().join("fake-browser");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\necho \"$1\" > {}\n", marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(EMBER)
        .args([
            "flamegraph",
            folded.to_str().unwrap(),
            "-o",
            svg.to_str().unwrap(),
            "--open",
        ])
        .env("BROWSER", &browser)
        .output()
        .unwrap();
    assert!(out.status.success());
    for _ in 0..50 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let opened = std::fs::read_to_string(&marker).expect("the browser was not started");
    assert!(opened.trim().ends_with("o.svg"), "{opened}");
}

/// The highest rate up to 4,999 Hz the kernel allows here (it lowers its maximum when sample
/// interrupts take too long).
fn high_frequency() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .map_or(4999, |max: u64| max.min(4999))
}

#[test]
fn diff_gate_passes_unchanged_runs_and_fails_a_regression_naming_it_first() {
    let _serial = serial();
    let exe = workload("regress", Build::NoFramePointers);
    let dir = scratch();
    // About 10,000 samples a recording: a 40 % share then has a standard error of 0.5
    // points, and the difference of two such shares 0.7.
    let hz = high_frequency();
    let seconds = format!("{:.2}", 10_000.0 / hz as f64);
    let hz = hz.to_string();
    // Each recording with what the program measured of its own functions' shares.
    let record = |name: &str, slow: bool| -> (PathBuf, Vec<(String, f64)>) {
        let path = dir.path().join(name);
        let mut args = vec!["-F", &hz, "-o", path.to_str().unwrap(), "--"];
        args.extend([exe.to_str().unwrap(), &seconds]);
        if slow {
            args.push("slow");
        }
        let out = record_ok(&args);
        (path, truths(&out.stdout))
    };
    let json = dir.path().join("diff.json");
    let gate = |base: &Path, head: &Path| {
        ember(&[
            "diff",
            base.to_str().unwrap(),
            head.to_str().unwrap(),
            "-o",
            json.to_str().unwrap(),
            "--fail-over",
            "3",
        ])
    };
    // The same program recorded 11 times: 10 comparisons, none fails where the program's own
    // shares stayed within a point. (A shared machine can really change them: a neighbour
    // on the other hyperthread slows one loop more than another. Such a pair says nothing
    // about the gate, and too many of them fail the test.)
    let runs: Vec<_> = (0..11)
        .map(|i| record(&format!("base{i}.folded"), false))
        .collect();
    let mut compared = 0;
    for pair in runs.windows(2) {
        let moved = largest_change(&pair[0].1, &pair[1].1);
        if moved > 1.0 {
            eprintln!("the program's own shares moved by {moved:.2} points; pair skipped");
            continue;
        }
        compared += 1;
        let out = gate(&pair[0].0, &pair[1].0);
        assert_eq!(
            out.status.code(),
            Some(0),
            "an unchanged program (own shares within {moved:.2} points) failed the gate:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(compared >= 7, "only {compared} of 10 pairs ran the same");
    // tokenize 25 % slower (+5.2 points): fails, named first; parse, its caller, grew in total
    // but not in itself.
    let (slow, slow_truths) = record("slow.folded", true);
    assert!(
        largest_change(&runs[0].1, &slow_truths) > 4.0,
        "{slow_truths:?}"
    );
    let out = gate(&runs[0].0, &slow);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout
            .lines()
            .nth(2)
            .unwrap()
            .ends_with("tokenize  REGRESSED"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokenize"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["regressed"], true);
    let functions = v["functions"].as_array().unwrap();
    assert_eq!(functions[0]["name"], "tokenize");
    let parse = functions.iter().find(|f| f["name"] == "parse").unwrap();
    let pts = |f: &serde_json::Value, k: &str| f[k].as_f64().unwrap();
    assert!(pts(parse, "change_total_pts") > 3.0, "{parse}");
    assert!(pts(parse, "change_self_pts").abs() < 2.0, "{parse}");
    for field in [
        "base_self",
        "head_self",
        "base_total",
        "head_total",
        "base_total_pct",
        "head_total_pct",
        "base_self_pct",
        "head_self_pct",
        "standard_error_pts",
        "regressed",
    ] {
        assert!(parse.get(field).is_some(), "{field} missing from {parse}");
    }
}

/// The largest change, in points, between two runs' own shares of the same functions.
fn largest_change(base: &[(String, f64)], head: &[(String, f64)]) -> f64 {
    assert_eq!(base.len(), 3, "the workload printed {base:?}");
    base.iter()
        .zip(head)
        .map(|((_, b), (_, h))| (h - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn the_firefox_profiler_timeline_puts_each_phase_in_its_time() {
    let _serial = serial();
    let exe = workload("phases", Build::NoFramePointers);
    let dir = scratch();
    let timeline = dir.path().join("t.fxprof.json");
    let folded = dir.path().join("t.folded");
    let speedscope = dir.path().join("t.speedscope.json");
    record_ok(&[
        "-o",
        timeline.to_str().unwrap(),
        "-o",
        speedscope.to_str().unwrap(),
        "-o",
        folded.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    let thread = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap_or("").contains("phases"))
        .expect("a track for the workload's thread");
    // Each sample's leaf function and time, as the profiler reads them.
    let strings = thread["stringArray"].as_array().unwrap();
    let col = |table: &str, column: &str| thread[table][column].as_array().unwrap().clone();
    let (stack_frame, frame_func, func_name) = (
        col("stackTable", "frame"),
        col("frameTable", "func"),
        col("funcTable", "name"),
    );
    let leaf = |stack: usize| {
        let frame = stack_frame[stack].as_u64().unwrap() as usize;
        let func = frame_func[frame].as_u64().unwrap() as usize;
        strings[func_name[func].as_u64().unwrap() as usize]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut time = 0.0;
    let mut alpha = Vec::new();
    let mut beta = Vec::new();
    let samples = &thread["samples"];
    for (s, d) in samples["stack"]
        .as_array()
        .unwrap()
        .iter()
        .zip(samples["timeDeltas"].as_array().unwrap())
    {
        time += d.as_f64().unwrap();
        match s.as_u64().map(|s| leaf(s as usize)).as_deref() {
            Some("alpha") => alpha.push(time),
            Some("beta") => beta.push(time),
            _ => {}
        }
    }
    // Both phases are there, as many samples as the folded output has of each...
    for (f, times) in [("alpha", &alpha), ("beta", &beta)] {
        let in_folded: u64 = read_folded(&folded)
            .iter()
            .filter(|s| s.frames.last().is_some_and(|l| l == f))
            .map(|s| s.count)
            .sum();
        assert_eq!(times.len() as u64, in_folded, "{f}");
        assert!(times.len() > 400, "{f}: {} samples", times.len());
    }
    // ... and alpha's all come before beta's.
    let last_alpha = alpha.iter().cloned().fold(f64::MIN, f64::max);
    let first_beta = beta.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        last_alpha <= first_beta,
        "alpha until {last_alpha} ms, beta from {first_beta} ms"
    );

    // speedscope keeps the order too (its "Time Order" view): no alpha after the first beta.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&speedscope).unwrap()).unwrap();
    let names: Vec<&str> = v["shared"]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let profile = v["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str().unwrap_or("").contains("phases"))
        .unwrap();
    let leaves: Vec<&str> = profile["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| Some(names[s.as_array()?.last()?.as_u64()? as usize]))
        .collect();
    let beta_from = leaves.iter().position(|&l| l == "beta").unwrap();
    assert!(!leaves[beta_from..].contains(&"alpha"));

    // Cut by time: each half of the recording is its own phase. The share compared is the
    // total (the function on the stack): the self share also loses the phase's clock reads
    // in the kernel, which vary with the machine's syscall cost.
    let middle = format!("{:.3}", (last_alpha + first_beta) / 2000.0);
    let share_of = |args: &[&str], f: &str| -> f64 {
        let mut all = vec!["report", timeline.to_str().unwrap(), "--top", "5"];
        all.extend_from_slice(args);
        let out = ember(&all);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let row = text
            .lines()
            .find(|l| l.ends_with(&format!("  {f}")))
            .unwrap_or_else(|| panic!("{f} not in:\n{text}"));
        let total = row.split('%').nth(1).unwrap();
        total.trim().parse().unwrap()
    };
    assert!(share_of(&["--to", &middle], "alpha") >= 95.0);
    assert!(share_of(&["--from", &middle], "beta") >= 95.0);
    // A file that did not keep time cannot be cut, and says what to do.
    let out = ember(&["report", folded.to_str().unwrap(), "--from", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".fxprof.json"));
}

/// Run the headless-Chromium driver `tests/browser/SCRIPT` with `args`; what it printed, once
/// it succeeded.
fn browser_driver(script: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn speedscope_opens_the_file_in_a_real_browser() {
    let _serial = serial();
    assert!(
        browser_dir().join("node_modules/speedscope").exists()
            && Path::new("/usr/bin/chromium").exists(),
        "the browser test needs Debian's chromium and the speedscope app: run scripts/test.sh, \
         which installs both (apt-get install chromium; npm install --prefix tests/browser)"
    );
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let file = dir.path().join("s.speedscope.json");
    record_ok(&[
        "-o",
        file.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1",
    ]);
    // Kept as a test artifact.
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-speedscope.png");
    let text = browser_driver("speedscope.mjs", &[file.as_os_str(), shot.as_os_str()]);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("the driver's JSON");
    assert_eq!(v["errors"], serde_json::json!([]), "{text}");
    assert!(
        v["toolbar"].as_str().unwrap().contains("Time Order"),
        "{text}"
    );
    // The sandwich view's table: hot_sixty has the most self time, as the program measured.
    let sandwich = v["sandwich"].as_str().unwrap();
    let first = sandwich
        .lines()
        .skip_while(|l| !l.starts_with("Total"))
        .find(|l| l.starts_with('\t') && !l.trim().starts_with(|c: char| c.is_ascii_digit()));
    assert_eq!(first.map(str::trim), Some("hot_sixty"), "{sandwich}");
    assert!(shot.exists());
}

/// The markers of a Firefox Profiler thread track: (name, detail, start ms, end ms).
fn markers(thread: &serde_json::Value) -> Vec<(String, String, f64, Option<f64>)> {
    let strings = thread["stringArray"].as_array().unwrap();
    let m = &thread["markers"];
    let column = |c: &str| m[c].as_array().unwrap().clone();
    let (names, data, starts, ends) = (
        column("name"),
        column("data"),
        column("startTime"),
        column("endTime"),
    );
    (0..names.len())
        .map(|i| {
            let name = strings[names[i].as_u64().unwrap() as usize]
                .as_str()
                .unwrap();
            let detail = match &data[i]["detail"] {
                serde_json::Value::Number(n) => strings[n.as_u64().unwrap() as usize]
                    .as_str()
                    .unwrap()
                    .to_string(),
                v => v.as_str().unwrap_or("").to_string(),
            };
            (
                name.to_string(),
                detail,
                starts[i].as_f64().unwrap(),
                ends[i].as_f64(),
            )
        })
        .collect()
}

#[test]
fn the_firefox_profiler_timeline_marks_waits_and_process_lifetimes() {
    let _serial = serial();
    let exe = workload("offcpu", Build::NoFramePointers);
    let dir = scratch();
    let timeline = dir.path().join("w.fxprof.json");
    // Through a shell, so that ember sees the workload's process begin and end.
    let script = format!("{} 2; true", exe.display());
    let out = record_ok(&[
        "--off-cpu",
        "-o",
        timeline.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let truth = truths(&out.stdout);
    let snooze = truth.iter().find(|(f, _)| f == "snooze").unwrap().1;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&timeline).unwrap()).unwrap();
    let thread = v["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"].as_str().unwrap_or("").contains("offcpu"))
        .expect("a track for the workload");
    let marks = markers(thread);
    let at = |name: &str| {
        marks
            .iter()
            .find(|m| m.0 == name)
            .unwrap_or_else(|| panic!("no {name} marker in {marks:?}"))
            .2
    };
    let (start, exit) = (at("Process start"), at("Process exit"));
    assert!(exit - start > 1500.0, "lived {start}..{exit} ms");
    // The waits in nanosleep, as intervals: as much of the process's life as it measured.
    let slept: f64 = marks
        .iter()
        .filter(|m| m.0 == "Off-CPU" && m.1.contains("nanosleep"))
        .map(|m| m.3.expect("an interval") - m.2)
        .sum();
    let share = 100.0 * slept / (exit - start);
    assert!(
        (share - snooze).abs() < 15.0,
        "asleep {share:.1} % of its life by the markers, {snooze:.1} % by its own clock"
    );
    assert!(
        marks
            .iter()
            .all(|m| m.2 >= start - 1.0 && m.2 <= exit + 1.0),
        "{marks:?}"
    );
}
