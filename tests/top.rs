//! End-to-end: `ember top`, used as a person would — in a real terminal (tmux: keys typed,
//! the screen read back) and with its output piped — on workloads that measure their own
//! shares.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::tmux::Tmux;
use common::*;

/// A row of the view or of the printed table: self %, total %, self samples, function.
#[derive(Debug)]
struct Row {
    self_pct: f64,
    total_pct: f64,
    function: String,
}

/// The table rows on a screen (or in printed text): lines after the `SELF%` heading that
/// start with two percentages.
fn rows(lines: &[String]) -> Vec<Row> {
    lines
        .iter()
        .skip_while(|l| !l.trim_start().starts_with("SELF%"))
        .skip(1)
        .map_while(|l| {
            let mut it = l.split_whitespace();
            let pct = |s: Option<&str>| s?.strip_suffix('%')?.parse::<f64>().ok();
            Some(Row {
                self_pct: pct(it.next())?,
                total_pct: pct(it.next())?,
                function: {
                    it.next()?;
                    it.next()?.to_string()
                },
            })
        })
        .collect()
}

/// The samples the header counts: `... · 2347 samples · ...` or `..., 2347 samples (`.
fn header_samples(lines: &[String]) -> u64 {
    lines
        .iter()
        .take(3)
        .find_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let i = words
                .iter()
                .position(|w| *w == "samples" || *w == "samples,")?;
            words.get(i.checked_sub(1)?)?.parse().ok()
        })
        .unwrap_or(0)
}

fn top_row(screen: &[String]) -> String {
    rows(screen)
        .first()
        .map(|r| r.function.clone())
        .unwrap_or_default()
}

/// Enough samples to tell the hot function, and the top row named (until its name is ready
/// a row shows its module and address: `shares+0x15a4`).
fn ready(screen: &[String]) -> bool {
    header_samples(screen) >= 200 && !top_row(screen).contains("+0x")
}

/// The processes running `exe`.
fn running(exe: &std::path::Path) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid: &u32| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
            })
            .collect();
        // A process just sent SIGTERM may take a moment to go.
        if pids.is_empty() || Instant::now() > deadline {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has(screen: &[String], text: &str) -> bool {
    screen.iter().any(|l| l.contains(text))
}

/// The screen once ember ended and the shell printed `EMBER-DONE` and then `stty -a`.
fn ended(tmux: &Tmux) -> Vec<String> {
    tmux.wait_for(30, |s| has(s, "EMBER-DONE") && has(s, "icanon"))
}

/// The terminal after ember ended: line editing and echo back on (`stty -a` printed by the
/// shell), the view's screen gone.
fn assert_terminal_restored(screen: &[String]) {
    let text = screen.join("\n");
    assert!(
        !has(screen, "SELF%"),
        "the view is still on screen:\n{text}"
    );
    let stty = screen
        .iter()
        .find(|l| l.contains("icanon"))
        .unwrap_or_else(|| panic!("no stty output:\n{text}"));
    assert!(
        !stty.contains("-icanon") && !stty.contains("-echo "),
        "the terminal was left raw: {stty}"
    );
}

#[test]
fn the_hot_function_is_on_top_and_every_key_does_what_it_says() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let command = format!(
        "cd {} && {EMBER} top --backend perf -- {} 60; echo EMBER-DONE; stty -a; sleep 60",
        dir.path().display(),
        exe.display()
    );
    let launched = Instant::now();
    let tmux = Tmux::start_sized(&command, 160, 30);

    // As soon as there is enough to tell, the hot function is the top row.
    let screen = tmux.wait_for(60, ready);
    eprintln!(
        "first screen with 200 samples after {:.1} s",
        launched.elapsed().as_secs_f64()
    );
    assert_eq!(top_row(&screen), "hot_sixty", "{}", screen.join("\n"));

    // s: sorted by total, the root functions (100 %) first; and back.
    // (Conditions on the whole screen: a capture can catch the terminal halfway through a
    // redraw.)
    tmux.keys(&["s"]);
    tmux.wait_for(10, |s| {
        has(s, "sorted by total") && rows(s).first().is_some_and(|r| r.total_pct > 99.0)
    });
    tmux.keys(&["s"]);
    tmux.wait_for(10, |s| {
        has(s, "sorted by self") && top_row(s) == "hot_sixty"
    });

    // /: only the functions whose name matches; Enter keeps the filter, Esc clears it.
    tmux.keys(&["/", "t", "h", "i", "r", "t", "y"]);
    tmux.wait_for(10, |s| {
        let names: Vec<String> = rows(s).into_iter().map(|r| r.function).collect();
        has(s, "filter: thirty_") && names == ["hot_thirty"]
    });
    tmux.keys(&["Enter"]);
    tmux.wait_for(10, |s| {
        has(s, "filter: thirty") && !has(s, "filter: thirty_")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for(10, |s| !has(s, "filter:") && top_row(s) == "hot_sixty");

    // space: the table stands still while sampling goes on (the header still counts).
    tmux.keys(&["Space"]);
    let paused = tmux.wait_for(10, |s| has(s, "PAUSED"));
    let later = tmux.wait_for(30, |s| header_samples(s) > header_samples(&paused) + 500);
    let self_samples = |s: &[String]| {
        s.iter()
            .find(|l| l.contains("hot_sixty"))
            .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
    };
    assert_eq!(
        self_samples(&paused),
        self_samples(&later),
        "{}",
        later.join("\n")
    );
    tmux.keys(&["Space"]);
    tmux.wait_for(10, |s| !has(s, "PAUSED"));

    // t: one thread, then all again; w: says it needs --off-cpu; c: the last seconds.
    tmux.keys(&["t"]);
    tmux.wait_for(10, |s| has(s, "thread shares_nofp") || has(s, "· thread "));
    tmux.keys(&["t"]);
    tmux.wait_for(10, |s| has(s, "all threads"));
    tmux.keys(&["w"]);
    tmux.wait_for(10, |s| has(s, "needs --off-cpu"));
    tmux.keys(&["c"]);
    tmux.wait_for(10, |s| has(s, "last 10 s") && top_row(s) == "hot_sixty");
    tmux.keys(&["c"]);
    tmux.wait_for(10, |s| has(s, "since start"));

    // Enter: who calls the top row and whom it calls.
    tmux.keys(&["Home", "Enter"]);
    tmux.wait_for(10, |s| {
        has(s, "callers of hot_sixty")
            && has(s, "callees of hot_sixty")
            && has(s, "main")
            && has(s, "[self]")
    });
    tmux.keys(&["Escape"]);
    tmux.wait_for(10, |s| has(s, "SELF%"));

    // o: the profile so far, written where the view says.
    tmux.keys(&["o"]);
    tmux.wait_for(10, |s| has(s, "wrote ember-top-1.svg, ember-top-1.folded"));
    let stacks = read_folded(&dir.path().join("ember-top-1.folded"));
    assert!(self_share(&stacks, "hot_sixty") > 30.0, "{stacks:?}");
    let svg = std::fs::read_to_string(dir.path().join("ember-top-1.svg")).unwrap();
    assert!(svg.contains("hot_sixty"));

    // q: the terminal as it was, the command ended.
    tmux.keys(&["q"]);
    assert_terminal_restored(&ended(&tmux));
    let left = running(&exe);
    assert!(
        left.is_empty(),
        "the command is still running after q: {left:?}"
    );
}

#[test]
fn quitting_leaves_an_attached_target_running_untraced() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    // ptrace quit with q, perf with Ctrl-C.
    for (backend, quit) in [("ptrace", "q"), ("perf", "C-c")] {
        let mut target = Killed::running(&exe);
        let pid = target.0.id();
        let command =
            format!("{EMBER} top --backend {backend} -p {pid}; echo EMBER-DONE; stty -a; sleep 60");
        let tmux = Tmux::start_sized(&command, 160, 30);
        // Sampling works (ptrace's samples come in bursts where the target got little CPU,
        // too few independent ones to rank by: the function is there, not necessarily first).
        let screen = tmux.wait_for(60, ready);
        assert!(
            rows(&screen).iter().any(|r| r.function == "hot_sixty"),
            "{backend}: {}",
            screen.join("\n")
        );
        tmux.keys(&[quit]);
        assert_terminal_restored(&ended(&tmux));
        target.assert_left_untraced(&format!("{backend} after {quit}"));
        let before = cpu_seconds(pid);
        wait_for_cpu(pid, before, 0.2);
        assert!(
            target.0.try_wait().unwrap().is_none(),
            "{backend}: the target ended"
        );
    }
}

/// A terminal that goes away (window closed, ssh dropped: the pane's processes get SIGHUP
/// and their terminal fails every read) ends the view as `q` does: ember goes, the attached
/// target runs on untraced. (ember used to spin at 100 % of a CPU on the failed reads.)
#[test]
fn closing_the_terminal_ends_the_view_and_leaves_the_target_untraced() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    for backend in BACKENDS {
        let mut target = Killed::running(&exe);
        let pid = target.0.id();
        let tmux = Tmux::start_sized(
            &format!("{EMBER} top --backend {backend} -p {pid}"),
            160,
            30,
        );
        tmux.wait_for(60, ready);
        let pattern = format!("top --backend {backend} -p {pid}");
        let ember_pids = || {
            let out = Command::new("pgrep")
                .args(["-f", &pattern])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert!(!ember_pids().is_empty(), "{backend}: ember top not found");
        drop(tmux);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ember_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let left = ember_pids();
        if !left.is_empty() {
            let _ = Command::new("kill").args(["-9", &left]).status();
            panic!("{backend}: ember top still runs 20 s after its terminal went away");
        }
        target.assert_left_untraced(backend);
        assert!(
            target.0.try_wait().unwrap().is_none(),
            "{backend}: the target ended"
        );
    }
}

/// A process the test started, killed when the test ends, passed or failed (the next test
/// counts workloads).
struct Killed(std::process::Child);

impl Killed {
    /// `exe` (a workload) running for 120 s of CPU.
    fn running(exe: &std::path::Path) -> Killed {
        Killed(
            Command::new(exe)
                .arg("120")
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// ember let it go: no tracer, not stopped (`what` says after what).
    fn assert_left_untraced(&self, what: &str) {
        let pid = self.0.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status.contains("TracerPid:\t0\n"),
            "{what}: still traced:\n{status}"
        );
        assert!(
            !matches!(process_state(pid), 'T' | 't'),
            "{what}: left stopped"
        );
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `SELF%` of each workload function in `table`, against the workload's own truth.
fn assert_shares_match(table: &[String], truth: &[(String, f64)], what: &str) {
    let samples = header_samples(table);
    let rows = rows(table);
    assert!(!truth.is_empty(), "{what}: the workload said nothing");
    for (name, expected) in truth {
        let row = rows
            .iter()
            .find(|r| &r.function == name)
            .unwrap_or_else(|| panic!("{what}: no row for {name}:\n{}", table.join("\n")));
        let tolerance = share_tolerance(*expected, samples, 3.0);
        assert!(
            (row.self_pct - expected).abs() <= tolerance,
            "{what}: {name} is {:.2} % of {samples} samples, the workload measured {expected:.2} % \
             (tolerance {tolerance:.2}):\n{}",
            row.self_pct,
            table.join("\n")
        );
    }
}

/// `ember top ARGS --backend perf -- EXE 2` with stdout piped, succeeded: its output, as
/// text and as lines (the workload's own `truth` lines among them).
fn top_piped(args: &[&str], exe: &std::path::Path) -> (std::process::Output, String, Vec<String>) {
    let out = Command::new(EMBER)
        .arg("top")
        .args(args)
        .args(["--backend", "perf", "--"])
        .arg(exe)
        .arg("2")
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stdout.lines().map(str::to_string).collect();
    (out, stdout, lines)
}

#[test]
fn piped_it_prints_a_table_every_second_and_the_last_matches_the_workload() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let (out, stdout, lines) = top_piped(&[], &exe);
    let tables: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("ember top — "))
        .collect();
    assert!(tables.len() >= 2, "one table only:\n{stdout}");
    assert!(!stdout.contains('\x1b'), "escape sequences in piped output");
    let last = &lines[*tables.last().unwrap()..];
    assert!(last[0].contains("sampling ended"), "{}", last[0]);
    assert_shares_match(last, &truths(&out.stdout), "piped");
}

#[test]
fn once_with_a_duration_prints_one_table_and_ends_the_command() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let mut child = Command::new(EMBER)
        .args(["top", "--once", "-d", "1", "--backend", "perf", "--"])
        .arg(&exe)
        .arg("60")
        .env_remove("DEBUGINFOD_URLS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(50);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < until,
            "ember top -d 1 did not end the 60 s command"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout.lines().map(str::to_string).collect();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("ember top — "))
            .count(),
        1,
        "{stdout}"
    );
    let samples = header_samples(&lines);
    assert!(samples > 0, "{stdout}");
    if samples >= 50 {
        assert_eq!(top_row(&lines), "hot_sixty", "{stdout}");
    }
}

#[test]
fn once_on_a_whole_run_matches_the_workloads_own_shares() {
    let _serial = serial();
    let exe = workload("shares", Build::FramePointers);
    let (out, stdout, lines) = top_piped(&["--once"], &exe);
    let table = lines
        .iter()
        .position(|l| l.starts_with("ember top — "))
        .unwrap_or_else(|| panic!("no table:\n{stdout}"));
    assert_shares_match(&lines[table..], &truths(&out.stdout), "--once");
}

#[test]
fn w_switches_to_wall_clock_where_waiting_threads_count() {
    let _serial = serial();
    let exe = workload("offcpu", Build::NoFramePointers);
    let command = format!(
        "{EMBER} top --backend perf --off-cpu -- {} 60; echo EMBER-DONE; sleep 60",
        exe.display()
    );
    let tmux = Tmux::start_sized(&command, 160, 30);
    // CPU view: burn() runs, snooze() waits and is not CPU time.
    let screen = tmux.wait_for(60, ready);
    assert_eq!(top_row(&screen), "burn", "{}", screen.join("\n"));
    assert!(!has(&screen, "[off-cpu]"), "{}", screen.join("\n"));
    // Wall-clock: the wait shows, under snooze.
    tmux.keys(&["w"]);
    // (Names come from a thread of their own: on a busy machine the first wall-clock
    // screens may still show snooze's caller by address.)
    let screen = tmux.wait_for(20, |s| {
        has(s, "wall-clock ·")
            && has(s, "[off-cpu]")
            && rows(s).iter().any(|r| r.function == "snooze")
    });
    let snooze = rows(&screen)
        .into_iter()
        .find(|r| r.function == "snooze")
        .unwrap_or_else(|| panic!("no snooze row:\n{}", screen.join("\n")));
    assert!(snooze.total_pct > 20.0, "{}", screen.join("\n"));
    tmux.keys(&["q"]);
    tmux.wait_for(30, |s| has(s, "EMBER-DONE"));
}
