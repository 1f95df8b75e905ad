//! A real terminal for the tests of what ember shows there: tmux, driven as a person would
//! (send-keys) and read back as they would see it (capture-pane).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A tmux server of its own running one shell command, killed when dropped.
///
/// Each has its own socket (`-L`): on the shared default server, one test's last
/// `kill-session` ends the server while another's `new-session` is connecting to it
/// ("server exited unexpectedly").
pub struct Tmux(String);

impl Tmux {
    pub fn start(command: &str) -> Tmux {
        Tmux::start_sized(command, 200, 20)
    }

    /// [`Tmux::start`] on a terminal of `width` columns and `height` lines.
    pub fn start_sized(command: &str, width: u32, height: u32) -> Tmux {
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ember-test-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("tmux")
            .args([
                "-L",
                &name,
                "new-session",
                "-d",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
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
    pub fn screen(&self) -> Vec<String> {
        let out = Command::new("tmux")
            .args(["-L", &self.0, "capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// Wait up to `secs` for a screen on which `test` holds; that screen.
    pub fn wait_for(&self, secs: u64, test: impl Fn(&[String]) -> bool) -> Vec<String> {
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
            .args(["-L", &self.0, "kill-server"])
            .status();
    }
}

impl Tmux {
    /// Type `keys` (tmux key names: `q`, `Enter`, `Escape`, `C-c`, `Space`).
    pub fn keys(&self, keys: &[&str]) {
        let ok = Command::new("tmux")
            .args(["-L", &self.0, "send-keys", "-t", &self.0])
            .args(keys)
            .status()
            .unwrap();
        assert!(ok.success(), "tmux send-keys {keys:?}");
    }
}
