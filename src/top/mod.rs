//! `ember top`: where a running program spends its time, now. A [`Session`] samples as
//! `ember record` does on a thread of its own ([`crate::record::watch`]), takes a window of
//! samples about every second, names new frames in the background ([`names`]) and answers the
//! view's questions ([`table`]); [`screen`] draws it on a terminal the caller owns.

pub mod names;
pub mod screen;
pub mod table;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};

use crate::output::OutputError;
use crate::profile::Profile;
use crate::record::{
    self, plural, Began, Feed, LiveEvent, LiveWindow, RecordError, RecordingCounts,
};
use crate::stacks::StackProfile;
use crate::symbolize::Symbols;
use names::Names;
use table::{Key, Neighbours, Scope, Table};

/// What `ember top` is asked to do.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// How to sample, and what (`outputs` are what `o` writes, numbered).
    pub record: record::RecordOptions,
    /// How often the view is refreshed.
    pub interval: Duration,
    /// How far back "recent" looks (`c` switches between it and everything).
    pub recent: Duration,
    /// For a server that runs for days (`ember serve`): keep no profile of everything since
    /// the start, and let go of the names of modules this many windows after the recording
    /// let go of them (`None`: keep both, as the live view does).
    pub forget_after: Option<u64>,
}

/// How the target stands, for the view's header.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub description: Vec<String>,
    pub backend: String,
    pub counts: RecordingCounts,
    /// Samples per second in the last window.
    pub rate: f64,
    /// The target's CPU use over the last window, in CPUs (1.0 = one CPU busy), as the
    /// kernel accounts it.
    pub cpus: f64,
    pub elapsed: Duration,
    /// Sampling is over: the target ended (with this exit code when launched), or `-d` passed.
    pub ended: Option<String>,
}

/// A live recording and what the view knows of it.
pub struct Session {
    opts: TopOptions,
    began: Began,
    started: Instant,
    events: Receiver<LiveEvent>,
    quit: Arc<AtomicBool>,
    sampling: Option<JoinHandle<Result<i32, RecordError>>>,
    exit: Option<Result<i32, RecordError>>,
    pub names: Names,
    /// Every sample since the start.
    total: Profile,
    /// The last windows, newest last, as far back as `recent`.
    recent: VecDeque<Profile>,
    header: Header,
    cpu: CpuUse,
    warnings: Vec<String>,
    /// Outputs written so far with [`Session::write`].
    written: u32,
    /// Windows taken so far.
    windows: u64,
    /// Modules whose names were let go of (`forget_after`).
    pub forgotten: usize,
}

impl Session {
    /// Start sampling; errors that keep it from starting (no such process, refused, a bad
    /// option) come back here.
    pub fn start(opts: TopOptions) -> Result<Session, RecordError> {
        let (tx, events) = mpsc::channel();
        let quit = Arc::new(AtomicBool::new(false));
        let feed = Feed {
            events: tx,
            quit: Arc::clone(&quit),
            every: opts.interval,
        };
        let sampling = spawn_sampling(opts.record.clone(), feed);
        let began = match events.recv() {
            Ok(LiveEvent::Began(b)) => b,
            // `watch` tells Began before sampling, or fails before it.
            _ => match sampling.join() {
                Ok(result) => return Err(result.expect_err("sampling failed before it began")),
                Err(panic) => std::panic::resume_unwind(panic),
            },
        };
        let names = Names::start(record::symbolize_options(&opts.record));
        Ok(Session {
            header: Header {
                description: began.description.clone(),
                backend: began.backend.clone(),
                ..Header::default()
            },
            cpu: CpuUse::new(&began.pids),
            began,
            started: Instant::now(),
            events,
            quit,
            sampling: Some(sampling),
            exit: None,
            names,
            total: Profile::new(),
            recent: VecDeque::new(),
            warnings: Vec::new(),
            written: 0,
            windows: 0,
            forgotten: 0,
            opts,
        })
    }

    /// Take what arrived, waiting up to `wait` for a window; true if the view should be drawn
    /// again (a window, new names, or the end of sampling).
    pub fn update(&mut self, wait: Duration) -> bool {
        let mut changed = match self.events.recv_timeout(wait) {
            Ok(e) => self.take(e),
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => self.ended(),
        };
        while let Ok(e) = self.events.try_recv() {
            changed |= self.take(e);
        }
        self.header.elapsed = self.started.elapsed();
        self.names.update() || changed
    }

    fn take(&mut self, event: LiveEvent) -> bool {
        let LiveEvent::Window(w) = event else {
            return false;
        };
        self.add_window(*w);
        true
    }

    fn add_window(&mut self, w: LiveWindow) {
        let LiveWindow {
            profile,
            new_modules,
            new_python,
            gone_modules,
            counts,
            duration,
        } = w;
        self.windows += 1;
        self.names.ask((new_modules, new_python), profile.frames());
        self.names.gone(&gone_modules);
        match self.opts.forget_after {
            Some(windows) => self.forgotten += self.names.forget_gone(windows),
            None => merge_into(&mut self.total, &profile),
        }
        for warning in &profile.meta.warnings {
            if !self.warnings.contains(warning) {
                self.warnings.push(warning.clone());
            }
        }
        self.header.counts = counts;
        self.header.rate = profile.total_samples() as f64 / duration.as_secs_f64().max(1e-3);
        self.cpu.pids.extend(profile.meta.processes.keys().copied());
        // Once every process is gone, the last reading stands.
        if let Some(cpus) = self.cpu.measure() {
            self.header.cpus = cpus;
        }
        self.recent.push_back(profile);
        let keep = (self.opts.recent.as_secs_f64() / self.opts.interval.as_secs_f64())
            .ceil()
            .max(1.0) as usize;
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }

    /// Sampling ended: keep its result for [`Session::finish`].
    fn ended(&mut self) -> bool {
        let Some(handle) = self.sampling.take() else {
            return false;
        };
        let result = match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        self.header.ended = Some(match &result {
            Ok(code) if *code != 0 => format!("sampling ended; the command exited with {code}"),
            Ok(_) => "sampling ended".to_string(),
            Err(e) => format!("sampling failed: {e}"),
        });
        self.exit = Some(result);
        true
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Windows taken so far.
    pub fn windows(&self) -> u64 {
        self.windows
    }

    /// Whether rows are per thread and function (`--per-thread`).
    pub fn per_thread(&self) -> bool {
        self.opts.record.output.fold.grouping == crate::output::Grouping::PerThread
    }

    /// Wait up to `limit` for the names asked for so far.
    pub fn wait_for_names(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        while self.names.pending() > 0 && Instant::now() < until {
            if !self.names.update() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The header and the first `rows` functions by self samples, as plain text.
    pub fn write_text(&self, rows: usize, mut out: impl std::io::Write) -> std::io::Result<()> {
        let h = &self.header;
        writeln!(
            out,
            "ember top — {}: {:.1} s, {} samples ({} lost), {}, {}, target uses {:.2} CPUs{}",
            h.description.join(" "),
            h.elapsed.as_secs_f64(),
            h.counts.samples,
            h.counts.lost,
            plural(h.counts.threads, "thread", "threads"),
            plural(h.counts.processes, "process", "processes"),
            h.cpus,
            h.ended
                .as_ref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        )?;
        let scope = Scope {
            per_thread: self.per_thread(),
            ..Scope::default()
        };
        let mut t = self.table(&scope, false);
        t.sort(crate::output::report::SortBy::SelfTime);
        t.write_text("", rows, &mut out)?;
        writeln!(out)
    }

    /// Warnings of the recording and of symbolization, once each.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.warnings.iter().chain(&self.names.warnings)
    }

    /// Whether the recording samples waiting threads too (`--off-cpu`).
    pub fn off_cpu(&self) -> bool {
        self.opts.record.sampling.off_cpu
    }

    /// How far back "recent" looks.
    pub fn recent_span(&self) -> Duration {
        self.opts.recent
    }

    /// Every thread seen: tid → (pid, name).
    pub fn threads(&self) -> &BTreeMap<u32, (u32, String)> {
        &self.total.meta.threads
    }

    fn profiles(&self, recent: bool) -> Vec<&Profile> {
        if recent {
            self.recent.iter().collect()
        } else {
            vec![&self.total]
        }
    }

    /// The functions of every sample (or of the recent windows) in `scope`, unsorted.
    pub fn table(&self, scope: &Scope, recent: bool) -> Table {
        table::functions(&self.profiles(recent), &self.names, scope)
    }

    /// The callers and callees of `key`.
    pub fn neighbours(&self, scope: &Scope, recent: bool, key: &Key) -> Neighbours {
        table::neighbours(&self.profiles(recent), &self.names, scope, key)
    }

    /// Write every sample so far to the outputs `o` writes (numbered: `ember-top-1.svg`, ...),
    /// with the names known now; returns the files written.
    pub fn write(&mut self) -> Result<Vec<PathBuf>, OutputError> {
        self.written += 1;
        let paths: Vec<PathBuf> = self
            .opts
            .record
            .output
            .outputs
            .iter()
            .map(|p| record::window_path(p, self.written))
            .collect();
        let stacks = self.named(self.total.clone(), self.started.elapsed());
        record::write_outputs(&stacks, &self.opts.record, &paths)?;
        Ok(paths)
    }

    /// `profile` (windows of this session's), `duration` long, with its frames named as far
    /// as names have arrived.
    pub fn named(&self, mut profile: Profile, duration: Duration) -> StackProfile {
        let meta = &mut profile.meta;
        meta.command = self.began.description.clone();
        meta.frequency = self.opts.record.sampling.frequency;
        meta.event = self.began.event.to_string();
        meta.duration = duration;
        let symbols = Symbols {
            frames: self.names.symbol_frames(profile.frames()),
            ..Symbols::default()
        };
        StackProfile::from_recording(&profile, &symbols, &self.names.modules)
    }

    /// The last `n` windows taken, oldest first (as many as "recent" keeps).
    pub fn last_windows(&self, n: usize) -> impl Iterator<Item = &Profile> {
        self.recent.iter().skip(self.recent.len().saturating_sub(n))
    }

    /// Whether sampling is over.
    pub fn sampling_over(&self) -> bool {
        self.exit.is_some()
    }

    /// Stop sampling (a launched command is sent SIGTERM) and wait for it; the exit code
    /// ember ends with.
    pub fn finish(mut self) -> Result<i32, RecordError> {
        self.quit.store(true, Ordering::Relaxed);
        while self.exit.is_none() {
            self.update(Duration::from_millis(100));
        }
        self.exit.take().unwrap_or(Ok(0))
    }
}

/// Add every sample of `window` to `total` (not its timeline: the view has no use for it),
/// and what it knows of processes and threads.
pub fn merge_into(total: &mut Profile, window: &Profile) {
    let mut leaf_first = Vec::new();
    for (pid, tid, node, count) in window.stack_nodes() {
        window.leaf_first(node, &mut leaf_first);
        total.add_sample(pid, tid, &leaf_first, count);
    }
    let meta = &mut total.meta;
    meta.lost += window.meta.lost;
    meta.processes
        .extend(window.meta.processes.iter().map(|(k, v)| (*k, v.clone())));
    meta.threads
        .extend(window.meta.threads.iter().map(|(k, v)| (*k, v.clone())));
    meta.executables
        .extend(window.meta.executables.iter().map(|(k, v)| (*k, v.clone())));
}

/// Run [`record::watch`] on a thread of its own. The signals ember handles (Ctrl-C outside a
/// full-screen view, SIGCHLD for ptrace) go to the sampling side, not to the calling thread.
fn spawn_sampling(opts: record::RecordOptions, feed: Feed) -> JoinHandle<Result<i32, RecordError>> {
    let mut handled = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
        Signal::SIGUSR1,
    ] {
        handled.add(s);
    }
    // Blocked here before the thread starts, so that it is never delivered to this one.
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled), None);
    std::thread::Builder::new()
        .name("ember-sample".into())
        .spawn(move || {
            let _ =
                nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled), None);
            record::watch(&opts, feed)
        })
        .expect("spawn the sampling thread")
}

/// The CPU time the target's processes use, as the kernel accounts it.
struct CpuUse {
    pids: std::collections::BTreeSet<u32>,
    last: HashMap<u32, f64>,
    at: Instant,
}

impl CpuUse {
    fn new(pids: &[u32]) -> CpuUse {
        let mut c = CpuUse {
            pids: pids.iter().copied().collect(),
            last: HashMap::new(),
            at: Instant::now(),
        };
        c.measure();
        c
    }

    /// CPUs used since the last call, by the processes alive at both; `None` when none is.
    fn measure(&mut self) -> Option<f64> {
        let now = Instant::now();
        let span = (now - self.at).as_secs_f64().max(1e-3);
        self.at = now;
        let mut used = 0.0;
        let mut seen = HashMap::new();
        for &pid in &self.pids {
            let Some(secs) = crate::linux::cpu_seconds(pid) else {
                continue;
            };
            if let Some(before) = self.last.get(&pid) {
                used += (secs - before).max(0.0);
            }
            seen.insert(pid, secs);
        }
        self.pids.retain(|p| seen.contains_key(p));
        let alive = !seen.is_empty();
        self.last = seen;
        alive.then_some(used / span)
    }
}
