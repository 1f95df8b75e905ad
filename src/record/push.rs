//! `--push URL`: each window's pprof sent to a Grafana Pyroscope server's `/ingest`
//! (`name=APP.cpu{labels}`, `from`, `until`, `format=pprof`, `sampleRate`), from a thread of
//! its own. A slow or dead server never slows sampling: windows wait in a bounded queue, each
//! is tried again with backoff for a while, and what cannot be sent or queued is counted and
//! said at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where windows go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushTarget {
    /// The server, e.g. `http://pyroscope:4040` (`/ingest` is added).
    pub url: String,
    /// The application name with its labels, e.g. `myapp.cpu{host=web-1}`.
    pub name: String,
}

/// Windows waiting to be sent, at most.
const QUEUE: usize = 16;
/// How long one window is tried again before it is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// One window's profile and when it began and ended (Unix seconds).
struct PushWindow {
    body: Vec<u8>,
    from: u64,
    until: u64,
}

/// How pushing went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushStats {
    pub sent: u64,
    /// Given up after retrying, or refused by the server.
    pub failed: u64,
    /// Not queued: the queue was full (the server too slow or gone).
    pub dropped: u64,
}

/// The sending thread and its queue.
pub(super) struct Pusher {
    queue: Option<SyncSender<PushWindow>>,
    thread: Option<JoinHandle<PushStats>>,
    dropped: Arc<AtomicU64>,
    /// Set to stop retrying (the recording is over and the time to finish has passed).
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Pusher {
    pub(super) fn start(target: PushTarget, rate: u64) -> Pusher {
        let (queue, windows) = mpsc::sync_channel(QUEUE);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ember-push".into())
            .spawn(move || send_all(&target, rate, windows, &stopping))
            .ok();
        Pusher {
            queue: Some(queue),
            thread,
            dropped: Arc::default(),
            stop,
        }
    }

    /// Queue a window (gzip'd pprof) that began at `from` and ended at `until`.
    pub(super) fn push(&self, body: Vec<u8>, (from, until): (u64, u64)) {
        let w = PushWindow { body, from, until };
        if let Some(q) = &self.queue {
            if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = q.try_send(w) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Send what is queued, for at most `within`; how it all went.
    pub(super) fn finish(mut self, within: Duration) -> PushStats {
        drop(self.queue.take());
        let until = Instant::now() + within;
        let Some(thread) = self.thread.take() else {
            return PushStats::default();
        };
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        let mut stats = thread.join().unwrap_or_default();
        stats.dropped += self.dropped.load(Ordering::Relaxed);
        stats
    }
}

/// Send every window as it comes, each tried again with backoff until it is sent, refused,
/// or `GIVE_UP_AFTER` has passed (or `stop` is set).
fn send_all(
    target: &PushTarget,
    rate: u64,
    windows: Receiver<PushWindow>,
    stop: &std::sync::atomic::AtomicBool,
) -> PushStats {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .user_agent(format!("ember/{}", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut stats = PushStats::default();
    for w in windows {
        let began = Instant::now();
        let mut backoff = Duration::from_millis(250);
        loop {
            match send(&agent, target, rate, &w) {
                Ok(true) => {
                    stats.sent += 1;
                    break;
                }
                // Refused (4xx): trying again would be refused again.
                Ok(false) => {
                    stats.failed += 1;
                    break;
                }
                Err(()) if began.elapsed() > GIVE_UP_AFTER || stop.load(Ordering::Relaxed) => {
                    stats.failed += 1;
                    break;
                }
                Err(()) => {
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
            }
        }
    }
    stats
}

/// One attempt: `Ok(true)` sent, `Ok(false)` refused for good, `Err` worth another try (no
/// answer, a 5xx or 429).
fn send(agent: &ureq::Agent, target: &PushTarget, rate: u64, w: &PushWindow) -> Result<bool, ()> {
    let url = format!("{}/ingest", target.url.trim_end_matches('/'));
    let response = agent
        .post(&url)
        .query("name", &target.name)
        .query("from", w.from.to_string())
        .query("until", w.until.to_string())
        .query("format", "pprof")
        .query("sampleRate", rate.to_string())
        .query("spyName", "ember")
        .header("Content-Type", "application/octet-stream")
        .send(&w.body[..])
        .map_err(|_| ())?;
    match response.status().as_u16() {
        200..=299 => Ok(true),
        429 | 500..=599 => Err(()),
        _ => Ok(false),
    }
}
