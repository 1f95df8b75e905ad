//! End-to-end: what ember shows in a terminal, tested in a real one (tmux): the live status
//! line while recording, drawn over in place and gone when the summary comes; and nothing of it
//! when stderr is not a terminal.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmux session running one shell command, killed when dropped.
struct Tmux(String);

impl Tmux {
    fn start(command: &str) -> Tmux {
        let name = format!("ember-test-{}", std::process::id());
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-x",
                "200",
                "-y",
                "20",
                "-s",
                &name,
                command,
            ])
            .status()
            .expect("tmux (Debian package tmux; scripts/test.sh installs it)");
        assert!(ok.success(), "tmux could not start");
        Tmux(name)
    }

    /// What the pane shows now, one string per line.
    fn screen(&self) -> Vec<String> {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Wait up to `secs` for a screen on which `test` holds; that screen.
    fn wait_for(&self, secs: u64, test: impl Fn(&[String]) -> bool) -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let screen = self.screen();
            if test(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "never seen; the screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

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
