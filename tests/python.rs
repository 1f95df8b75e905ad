//! Python frames: CPython's own frames in every stack, in place of the evaluation loop's
//! native frames, checked against what the Python workloads measure of themselves. Both
//! kinds of interpreter build are run: Debian's python3.11, the interpreter linked into the
//! executable, and one that lives in the shared libpython3.11 (testdata/python/embed.c).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// Debian's python3.11: the interpreter is in the executable.
const STATIC_PYTHON: &str = "/usr/bin/python3.11";

/// Both interpreter builds: (what it is, the program).
fn interpreters() -> Vec<(&'static str, PathBuf)> {
    assert!(
        Path::new(STATIC_PYTHON).exists(),
        "{STATIC_PYTHON} is missing: apt-get install python3.11 (scripts/test.sh does)"
    );
    vec![
        ("python3.11 (static)", PathBuf::from(STATIC_PYTHON)),
        ("libpython3.11.so", shared_python()),
    ]
}

/// testdata/python/embed.c built against Debian's libpython3.11.so.
fn shared_python() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("python-shared-{}", std::process::id()));
    if !out.exists() {
        let status = Command::new("gcc")
            .args(["-O2", "-I/usr/include/python3.11", "-o"])
            .arg(&out)
            .arg(testdata("python/embed.c"))
            .arg("-lpython3.11")
            .status()
            .expect("gcc runs");
        assert!(
            status.success(),
            "building testdata/python/embed.c needs libpython3.11-dev (scripts/test.sh installs it)"
        );
    }
    out
}

fn script(name: &str) -> String {
    testdata(&format!("python/{name}")).display().to_string()
}

/// Record `python SCRIPT ARGS` (`run`: the script of testdata/python and its arguments) with
/// the default backend and `options`, into a folded file in `dir`: what ember printed, and the
/// stacks it wrote.
fn record_python(dir: &Path, options: &[&str], python: &str, run: &[&str]) -> (Output, Vec<Stack>) {
    let folded = dir.join(format!("{}.folded", run[0]));
    let (folded_path, script_path) = (folded.display().to_string(), script(run[0]));
    let mut args = vec!["--backend", "auto"];
    args.extend_from_slice(options);
    args.extend([
        "-o",
        folded_path.as_str(),
        "--",
        python,
        script_path.as_str(),
    ]);
    args.extend_from_slice(&run[1..]);
    let out = record_ok(&args);
    (out, read_folded(&folded))
}

/// The number `-v` printed just before `words` (after a space or a parenthesis).
fn count_before(stderr: &str, words: &str) -> Option<u64> {
    let before = stderr.split(words).next()?;
    before.rsplit([' ', '(']).next()?.parse().ok()
}

/// Each function's share of the samples in the work (those under handler or fib), counting a
/// stack once per function on it.
fn sampled_shares(stacks: &[Stack], file: &str) -> HashMap<String, f64> {
    let names = ["handler", "parse_payloads", "render", "fib"];
    let frame = |name: &str| format!("{name} ({file})");
    let on = |s: &Stack, name: &str| s.frames.iter().any(|f| *f == frame(name));
    let work: u64 = stacks
        .iter()
        .filter(|s| on(s, "handler") || on(s, "fib"))
        .map(|s| s.count)
        .sum();
    names
        .iter()
        .map(|&n| {
            let hits: u64 = stacks.iter().filter(|s| on(s, n)).map(|s| s.count).sum();
            (n.to_string(), 100.0 * hits as f64 / work.max(1) as f64)
        })
        .collect()
}

#[test]
fn python_functions_take_the_cpu_shares_the_program_measured_on_both_builds() {
    let _serial = serial();
    let dir = scratch();
    for (build, python) in interpreters() {
        let python = python.to_str().unwrap();
        let (out, stacks) = record_python(dir.path(), &["-v"], python, &["work.py", "2"]);
        // Read in the kernel at each sample: no ptrace stop.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let read_in_kernel = count_before(&stderr, " read in the kernel");
        assert!(
            read_in_kernel.is_some_and(|n| n > 1000) && !stderr.contains("taken over"),
            "{build}: Python frames not read in the kernel\n{stderr}"
        );
        // The program sends the names of a module's body (the main module's is in every
        // stack) with its first sample, not again.
        let with_names = count_before(&stderr, " samples brought the names");
        assert!(
            with_names.is_some_and(|n| n * 20 < read_in_kernel.unwrap()),
            "{build}: names sent with too many samples\n{stderr}"
        );
        let truth = truths(&out.stdout);
        let sampled = sampled_shares(&stacks, "work.py");
        // About 2,000 samples: a 40 % share has a standard error of 1.1 points.
        for (name, want) in &truth {
            let got = sampled[name.as_str()];
            assert!(
                (got - want).abs() < 4.0,
                "{build}: {name} has {got:.1} % of the samples, measured {want:.1} %\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Python called from C (json's decoder in the C scanner) sits on the Python frames
        // that called it, with the module-qualified names of its functions.
        let json = samples_with(&stacks, "JSONDecoder.raw_decode (decoder.py)");
        assert!(json > 0, "{build}: no json decoder frames");
        // The evaluation loop's own frames are replaced where they ran Python code.
        let work = total(&stacks);
        let eval = samples_with(&stacks, "_PyEval_EvalFrameDefault");
        assert!(
            eval * 50 < work,
            "{build}: {eval} of {work} samples still show _PyEval_EvalFrameDefault"
        );
    }
}

/// Kernel frames sit on the Python frames that made the system call, as with perf events:
/// reading /dev/zero shows the driver on top of `os.read` on top of `read_zeros`, and the
/// kernel's share of the work follows what the thread measured of its own kernel time.
#[test]
fn kernel_frames_sit_on_the_python_frames_that_made_the_system_call() {
    let _serial = serial();
    let dir = scratch();
    let (out, stacks) = record_python(dir.path(), &[], STATIC_PYTHON, &["syscalls.py", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let truth: HashMap<String, f64> = truths(&out.stdout).into_iter().collect();
    let kernel = |s: &Stack| s.frames.iter().any(|f| f.ends_with("_[k]"));
    let on = |s: &Stack, name: &str| s.frames.iter().any(|f| f == name);
    let (read, count) = ("read_zeros (syscalls.py)", "count (syscalls.py)");
    let sum = |keep: &dyn Fn(&Stack) -> bool| -> u64 {
        stacks.iter().filter(|s| keep(s)).map(|s| s.count).sum()
    };
    let work = sum(&|s| on(s, read) || on(s, count));
    assert!(work > 500, "{work} samples of the work\n{stderr}");
    let in_kernel = sum(&|s| (on(s, read) || on(s, count)) && kernel(s));
    assert!(
        in_kernel > 0,
        "no kernel frames in a Python process: ember needs root (or \
         kernel.perf_event_paranoid <= 1) for them\n{stderr}"
    );
    // On the read path, in the order of the calls: the Python function, the C function
    // that reads, the kernel's read of /dev/zero on top.
    let reading = sum(&|s| {
        let at = |name: &str| s.frames.iter().position(|f| f == name);
        matches!(
            (at(read), at("_Py_read"), at("read_zero_[k]")),
            (Some(a), Some(b), Some(c)) if a < b && b < c
        )
    });
    assert!(
        reading * 2 > in_kernel,
        "{reading} of {in_kernel} samples in the kernel read /dev/zero under read_zeros\n{stderr}"
    );
    // Adding numbers in Python makes no system calls: no kernel frames there.
    let counting_in_kernel = sum(&|s| on(s, count) && kernel(s));
    assert!(
        counting_in_kernel * 50 <= sum(&|s| on(s, count)),
        "{counting_in_kernel} samples of count() have kernel frames"
    );
    // The samples in the kernel take the share of the time the thread measured inside its
    // reads (which also holds the C call around each system call: a point or two).
    let (got, want) = (100.0 * in_kernel as f64 / work as f64, truth["reading"]);
    assert!(
        (got - want).abs() < 8.0,
        "{got:.1} % of the samples are in the kernel, the thread measured {want:.1} % \
         inside its reads\n{stderr}"
    );
}

#[test]
fn each_python_thread_has_its_own_python_stack() {
    let _serial = serial();
    let dir = scratch();
    let run = ["work.py", "1", "--threads"];
    let (_, stacks) = record_python(dir.path(), &["--per-thread"], STATIC_PYTHON, &run);
    // Roots are `comm-PID/TID`: the workers are the threads that are not the main one.
    let mut workers: Vec<String> = stacks
        .iter()
        .map(|s| s.frames[0].clone())
        .filter(|root| {
            let (pid, tid) = root.rsplit_once('-').unwrap().1.split_once('/').unwrap();
            pid != tid
        })
        .collect();
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 2, "{workers:?}");
    for worker in &workers {
        let mine: Vec<Stack> = stacks
            .iter()
            .filter(|s| s.frames[0] == *worker)
            .cloned()
            .collect();
        let with_work = samples_with(&mine, "work (work.py)");
        assert!(
            with_work * 10 > total(&mine) * 9,
            "{worker}: {with_work} of {} samples in work()",
            total(&mine)
        );
        // A thread's stack starts where the thread does, not in the main thread's frames.
        assert_eq!(samples_with(&mine, "main (work.py)"), 0, "{worker}");
    }
}

#[test]
fn processes_forked_after_recording_began_have_python_frames() {
    let _serial = serial();
    let dir = scratch();
    let run = ["forks.py", "0.5"];
    let (_, stacks) = record_python(dir.path(), &["--per-process"], STATIC_PYTHON, &run);
    let root_of = |func: &str| -> Vec<String> {
        let mut roots: Vec<String> = stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f == func))
            .map(|s| s.frames[0].clone())
            .collect();
        roots.sort();
        roots.dedup();
        roots
    };
    let parent = root_of("parent (forks.py)");
    let forked = root_of("forked_child (forks.py)");
    let worker = root_of("pool_worker (forks.py)");
    for (what, roots) in [("parent", &parent), ("fork", &forked), ("worker", &worker)] {
        assert_eq!(roots.len(), 1, "{what}: {roots:?}");
        let func = format!("{what}'s burn");
        let n = samples_with(
            &stacks
                .iter()
                .filter(|s| s.frames[0] == roots[0])
                .cloned()
                .collect::<Vec<_>>(),
            "burn (forks.py)",
        );
        assert!(n > 100, "{func}: {n} samples");
    }
    assert!(parent[0] != forked[0] && forked[0] != worker[0]);
}

#[test]
fn attaching_to_a_running_interpreter_reads_its_python_frames() {
    let _serial = serial();
    let dir = scratch();
    let mut child = Command::new(STATIC_PYTHON)
        .args([script("work.py").as_str(), "30"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    while cpu_seconds(child.id()) < 0.3 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let folded = dir.path().join("attach.folded");
    let pid = child.id().to_string();
    let out = ember(&[
        "record",
        "-p",
        &pid,
        "-d",
        "1.5",
        "-o",
        folded.to_str().unwrap(),
    ]);
    let _ = child.kill();
    let _ = child.wait();
    assert!(out.status.success(), "{out:?}");
    let stacks = read_folded(&folded);
    let work = samples_with(&stacks, "work (work.py)");
    assert!(
        work * 10 > total(&stacks) * 9,
        "{work} of {} samples in work()\n{}",
        total(&stacks),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(samples_with(&stacks, "fib (work.py)") > 0);
}

#[test]
fn a_waiting_python_thread_shows_the_line_that_waits() {
    let _serial = serial();
    let dir = scratch();
    let options = ["--off-cpu", "--per-thread", "--lines"];
    let (_, stacks) = record_python(dir.path(), &options, STATIC_PYTHON, &["waits.py", "1"]);
    // The sleeper's thread: the one whose stacks run sleeper().
    let in_sleeper = |s: &Stack| s.frames.iter().any(|f| f.starts_with("sleeper (waits.py:"));
    let thread = &stacks
        .iter()
        .find(|s| in_sleeper(s))
        .expect("no sleeper")
        .frames[0];
    let sleeping: Vec<&Stack> = stacks.iter().filter(|s| s.frames[0] == *thread).collect();
    let waiting: u64 = sleeping
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f.starts_with("[off-cpu]")))
        .filter(|s| in_sleeper(s))
        .map(|s| s.count)
        .sum();
    let all: u64 = sleeping.iter().map(|s| s.count).sum();
    assert!(
        waiting * 10 > all * 8,
        "{waiting} of {all} samples of the sleeper wait in sleeper()"
    );
    // The line is the call that waits: time.sleep's.
    let text = std::fs::read_to_string(testdata("python/waits.py")).unwrap();
    let sleep_line = text
        .lines()
        .position(|l| l.contains("time.sleep(0.05)"))
        .unwrap()
        + 1;
    let at = format!("sleeper (waits.py:{sleep_line})");
    let on_line: Vec<Stack> = sleeping.iter().map(|s| (*s).clone()).collect();
    assert!(
        samples_with(&on_line, &at) * 10 > all * 8,
        "not mostly at {at}"
    );
}

#[test]
fn a_frame_chain_that_loops_or_points_nowhere_ends_in_a_marked_frame() {
    let _serial = serial();
    let dir = scratch();
    for mode in ["loop", "unmapped"] {
        let run = ["corrupt.py", mode, "1"];
        let (out, stacks) = record_python(dir.path(), &["-v"], STATIC_PYTHON, &run);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let spinning: Vec<&Stack> = stacks
            .iter()
            .filter(|s| s.frames.iter().any(|f| f == "spin (corrupt.py)"))
            .collect();
        let n: u64 = spinning.iter().map(|s| s.count).sum();
        assert!(n > 500, "{mode}: {n} samples in spin()\n{stderr}");
        for s in &spinning {
            // The frame read once, the rest marked, nothing made up from the bad pointer.
            let spins = s
                .frames
                .iter()
                .filter(|f| *f == "spin (corrupt.py)")
                .count();
            assert_eq!(spins, 1, "{mode}: {:?}", s.frames);
            let at = s
                .frames
                .iter()
                .position(|f| f == "spin (corrupt.py)")
                .unwrap();
            assert_eq!(s.frames[at - 1], "[python: unreadable frames]", "{mode}");
            assert!(!s.frames.iter().any(|f| f == "main (corrupt.py)"), "{mode}");
        }
        assert!(
            stderr.contains("could not be read to its end"),
            "{mode}: -v does not count them\n{stderr}"
        );
    }
}

/// A module's body and a class's body run once, at import, and their code objects are freed
/// as soon as they have run — often before ember reads a sample of them. Start-up time is
/// named as the program measured it, not cut.
#[test]
fn module_and_class_bodies_run_at_import_are_named() {
    let _serial = serial();
    let dir = scratch();
    for (build, python) in interpreters() {
        let python = python.to_str().unwrap();
        let run = ["imports.py", "60", "10"];
        let (out, stacks) = record_python(dir.path(), &["-v"], python, &run);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A cut stack has lost its outer Python frames (main's among them).
        let cut_mark = "[python: unreadable frames]";
        let imports: Vec<Stack> = stacks
            .iter()
            .filter(|s| {
                s.frames
                    .iter()
                    .any(|f| f == "main (imports.py)" || f == cut_mark)
            })
            .cloned()
            .collect();
        let n = total(&imports);
        assert!(n > 300, "{build}: {n} samples of the imports\n{stderr}");
        let cut = samples_with(&imports, cut_mark);
        assert!(
            cut * 50 <= n,
            "{build}: {cut} of {n} samples of the imports cut\n{stderr}"
        );
        let share = |is: &dyn Fn(&str) -> bool| {
            let hits: u64 = imports
                .iter()
                .filter(|s| s.frames.iter().any(|f| is(f)))
                .map(|s| s.count)
                .sum();
            100.0 * hits as f64 / n as f64
        };
        // The class body runs within the module's: the module's frame is under both.
        let truth: HashMap<String, f64> = truths(&out.stdout).into_iter().collect();
        let (module, class) = (truth["module"] + truth["class"], truth["class"]);
        let in_module = share(&|f| f.starts_with("<module> (startup_"));
        let in_class = share(&|f| f.starts_with("Spin") && f.contains(" (startup_"));
        // About 600 samples: a share near 50 % has a standard error of 2 points.
        for (what, got, want) in [("module", in_module, module), ("class", in_class, class)] {
            assert!(
                (got - want).abs() < 8.0,
                "{build}: {what} bodies have {got:.1} % of the samples, measured {want:.1} %"
            );
        }
    }
}

#[test]
fn per_test_roots_each_pytest_test_and_ranks_them_by_cpu_time() {
    let _serial = serial();
    let dir = scratch();
    let (folded, json) = (
        dir.path().join("tests.folded"),
        dir.path().join("tests.json"),
    );
    let out = ember(&[
        "record",
        "--per-test",
        "-o",
        folded.to_str().unwrap(),
        "-o",
        json.to_str().unwrap(),
        "--",
        STATIC_PYTHON,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        &script("test_budget.py"),
    ]);
    assert!(
        out.status.success(),
        "pytest under ember failed (scripts/test.sh installs python3-pytest): {out:?}"
    );
    // The budgets: 0.6, 0.2 and 0.4 s of CPU.
    let tests = [
        ("test_slow_parse (test_budget.py)", 0.6),
        ("TestRender.test_render_page (test_budget.py)", 0.4),
        ("test_quick_check (test_budget.py)", 0.2),
    ];
    let stacks = read_folded(&folded);
    let in_test = |name: &str| -> u64 {
        stacks
            .iter()
            .filter(|s| s.frames[0] == name)
            .map(|s| s.count)
            .sum()
    };
    let all: u64 = tests.iter().map(|(n, _)| in_test(n)).sum();
    for (name, budget) in tests {
        let share = 100.0 * in_test(name) as f64 / all as f64;
        let want = 100.0 * budget / 1.2;
        assert!(
            (share - want).abs() < 5.0,
            "{name}: {share:.1} % of the tests' samples, its budget is {want:.1} %"
        );
        // The tower starts at the test: pytest's machinery is not on it.
        assert!(stacks
            .iter()
            .filter(|s| s.frames[0] == name)
            .all(|s| s.frames[1..]
                .iter()
                .all(|f| !f.contains("pytest_pyfunc_call"))));
    }
    // The ranking, most CPU first, with what `ember diff` gates on.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ranked: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .filter(|n| n.starts_with("test") || n.starts_with("TestRender"))
        .collect();
    let names: Vec<&str> = tests.iter().map(|(n, _)| *n).collect();
    assert_eq!(ranked, names);
    assert!(String::from_utf8_lossy(&out.stderr).contains("test_slow_parse (test_budget.py)"));
}

#[test]
fn stacks_of_two_paths_taken_in_turn_never_mix() {
    let _serial = serial();
    let dir = scratch();
    let run = ["flipflop.py", "1.5"];
    let (_, stacks) = record_python(dir.path(), &[], STATIC_PYTHON, &run);
    let has = |s: &Stack, f: &str| s.frames.iter().any(|x| x == f);
    let (mut a, mut b, mut wrong) = (0, 0, Vec::new());
    for s in &stacks {
        let (on_a, on_b) = (
            has(s, "path_a (flipflop.py)"),
            has(s, "path_b (flipflop.py)"),
        );
        let (leaf_a, leaf_b) = (
            has(s, "leaf_a (flipflop.py)"),
            has(s, "leaf_b (flipflop.py)"),
        );
        let path_a_whole = has(s, "a1 (flipflop.py)") && has(s, "a2 (flipflop.py)");
        if leaf_a {
            a += s.count;
            if on_b || !on_a || !path_a_whole {
                wrong.push(s.frames.join(";"));
            }
        }
        if leaf_b {
            b += s.count;
            if on_a || !on_b || has(s, "a1 (flipflop.py)") {
                wrong.push(s.frames.join(";"));
            }
        }
    }
    assert!(a > 100 && b > 100, "{a} samples in leaf_a, {b} in leaf_b");
    assert!(
        wrong.is_empty(),
        "{} mixed stacks, e.g. {}",
        wrong.len(),
        wrong[0]
    );
}

#[test]
fn python_frames_survive_every_output_and_a_pprof_round_trip() {
    let _serial = serial();
    let dir = scratch();
    let path = |name: &str| dir.path().join(name).display().to_string();
    record_ok(&[
        "--backend",
        "auto",
        "-o",
        &path("p.folded"),
        "-o",
        &path("p.pb.gz"),
        "-o",
        &path("p.speedscope.json"),
        "-o",
        &path("p.fxprof.json"),
        "--",
        STATIC_PYTHON,
        &script("work.py"),
        "0.5",
    ]);
    // Drawn again from the pprof file: the same stacks, Python frames with their files.
    let out = ember(&["flamegraph", &path("p.pb.gz"), "-o", &path("again.folded")]);
    assert!(out.status.success(), "{out:?}");
    let sorted = |p: &str| {
        let mut lines: Vec<String> = std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&path("p.folded")), sorted(&path("again.folded")));
    assert!(
        samples_with(
            &read_folded(Path::new(&path("again.folded"))),
            "fib (work.py)"
        ) > 0
    );
    for file in ["p.speedscope.json", "p.fxprof.json"] {
        let text = std::fs::read_to_string(path(file)).unwrap();
        assert!(
            text.contains("parse_payloads"),
            "{file} has no Python names"
        );
    }
}

#[test]
fn ember_top_lists_python_functions_with_their_files() {
    let _serial = serial();
    let out = ember(&[
        "top",
        "--once",
        "-d",
        "1.5",
        "--",
        STATIC_PYTHON,
        &script("work.py"),
        "2",
    ]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let fib = table
        .lines()
        .find(|l| l.contains(" fib ") && l.contains("[python]"))
        .unwrap_or_else(|| panic!("no fib row:\n{table}"));
    assert!(fib.contains("work.py:"), "{fib}");
}
