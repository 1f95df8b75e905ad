//! End-to-end: what ember shows in a terminal, tested in a real one (tmux): the live status
//! line while recording, drawn over in place and gone when the summary comes; and nothing of it
//! when stderr is not a terminal.

mod common;

use common::tmux::Tmux;
use common::*;

#[test]
fn the_status_line_is_live_in_a_terminal_and_absent_in_a_pipe() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let svg = dir.path().join("live.svg");
    let command = format!(
        "{EMBER} record --backend perf -o {} -- {} 3 > /dev/null; echo EMBER-DONE; sleep 60",
        svg.display(),
        exe.display()
    );
    let tmux = Tmux::start(&command);
    // While recording: one line, counting.
    let status = |screen: &[String]| {
        screen
            .iter()
            .filter(|l| l.contains("Ctrl-C to stop and write"))
            .count()
    };
    let screen = tmux.wait_for(30, |s| {
        s.iter()
            .any(|l| l.contains("Ctrl-C to stop and write") && !l.contains(" 0 samples"))
    });
    assert_eq!(status(&screen), 1, "{}", screen.join("\n"));
    assert!(screen
        .iter()
        .any(|l| l.contains(&svg.display().to_string())));
    // Done: the summary, and the status line is gone from the screen.
    let screen = tmux.wait_for(60, |s| s.iter().any(|l| l == "EMBER-DONE"));
    assert_eq!(status(&screen), 0, "{}", screen.join("\n"));
    assert!(
        screen
            .iter()
            .any(|l| l.starts_with("ember: ") && l.contains(" samples (0 lost)")),
        "{}",
        screen.join("\n")
    );

    // Not a terminal: not a word of it.
    let out = record_ok(&[
        "-o",
        svg.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
        "1.5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Ctrl-C to stop"), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr}");
}
