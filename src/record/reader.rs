//! Sampling until a stop reason: the reader thread copies what the sampler produced and hands
//! it to a processing thread that unwinds and aggregates, so a slow unwind (or a reader that
//! gets little CPU, when a target has a thousand runnable threads) never lets a ring buffer
//! overflow while there is memory to copy it to.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::collector::{Collector, LiveCounts};
use super::snapshot::{self, SnapshotPlan, Window};
use crate::sampler::{CommandState, RecordBatch, RecordQueue, Sampler};
use crate::target::{self, GatedChild};

/// What stopped sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// The launched command ended with this exit code.
    CommandExited(i32),
    /// Every attached process ended.
    TargetsExited,
    /// `-d` elapsed.
    Deadline,
    /// SIGINT/SIGTERM/SIGHUP to ember while attached.
    Signal,
    /// The live view was told to quit.
    Quit,
}

/// What is being profiled, while it runs.
pub(super) enum Live {
    Command(GatedChild),
    Pids(Vec<u32>),
}

impl Live {
    /// Pass a signal ember received on, or decide to stop.
    fn on_signal(&self, sig: Signal, from_process: bool) -> bool {
        match self {
            Live::Command(child) => {
                // ember keeps recording until the command ends, then writes everything.
                child.pass_on(sig, from_process);
                false
            }
            Live::Pids(_) => true,
        }
    }

    fn ended(&mut self, sampler: &dyn Sampler) -> Option<Stop> {
        match self {
            Live::Command(child) => match sampler.command_state() {
                CommandState::Running => None,
                CommandState::Exited(code) => {
                    child.reaped(code);
                    Some(Stop::CommandExited(code))
                }
                CommandState::NotReaped => child.try_wait().map(Stop::CommandExited),
            },
            Live::Pids(pids) => pids
                .iter()
                .all(|&p| !target::is_alive(p))
                .then_some(Stop::TargetsExited),
        }
    }

    /// The exit code ember ends with once sampling stopped for `stop`: the command's (waiting
    /// for it after `-d`, still passing signals on), or 0 after attaching.
    pub(super) fn exit_code(&mut self, stop: Stop, notify: fn(&str)) -> i32 {
        match (stop, self) {
            (Stop::CommandExited(code), _) => code,
            // Quitting a live view ends the command it launched.
            (Stop::Quit, Live::Command(child)) => {
                child.signal(Signal::SIGTERM);
                wait_forwarding_signals(child)
            }
            // `-d` ended sampling; the command runs on and its status is still ours.
            (_, Live::Command(child)) => {
                notify(
                    "sampling stopped after -d and the outputs are written; waiting for the \
                     command to end",
                );
                wait_forwarding_signals(child)
            }
            (_, Live::Pids(_)) => 0,
        }
    }
}

/// When to stop reading, besides the target ending or a signal.
pub(super) struct ReadPlan {
    pub deadline: Option<Instant>,
    /// Sleep this long after each read (tests of the loss path).
    pub pause: Option<Duration>,
    /// The live status line, where stderr is a terminal.
    pub status: Option<Status>,
    /// `--every`: write the outputs of each window this long and start the next.
    pub every: Option<Duration>,
    /// Set by a live view that was told to quit.
    pub quit: Option<Arc<AtomicBool>>,
}

/// Told a status line about once a second, and "" when sampling is over.
pub(super) struct Status {
    pub say: fn(&str),
    /// What Ctrl-C writes (the outputs), as the line names it.
    pub writes: String,
}

/// How often the status line is told again.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Record until the command ends (launch) or `-d` passes, a signal arrives or every target
/// ends (attach). This thread only reads; `processing` does the rest.
pub(super) fn sample_until(
    sampler: &mut dyn Sampler,
    processing: &mut Processing,
    live: &mut Live,
    plan: &ReadPlan,
) -> (Stop, Option<u32>) {
    let mut watermark = 0u64;
    let started = Instant::now();
    let mut status_at = started + STATUS_EVERY;
    let mut windows = plan.every.map(|every| (1u32, started + every));
    let stop = loop {
        if plan
            .quit
            .as_ref()
            .is_some_and(|q| q.load(Ordering::Relaxed))
        {
            break Stop::Quit;
        }
        if let Some(stop) = stop_reason(sampler, live, plan.deadline) {
            break stop;
        }
        if let Some((n, ends)) = &mut windows {
            if Instant::now() >= *ends {
                processing.snapshot(Window::now(Some(*n), true));
                *n += 1;
                // A reader kept from the CPU past several ends writes one window for them.
                while *ends <= Instant::now() {
                    *ends += plan.every.unwrap_or_default();
                }
            }
        }
        if target::take_snapshot_request() {
            processing.snapshot(Window::now(windows.map(|(n, _)| n), false));
        }
        if let Some(status) = &plan.status {
            if Instant::now() >= status_at {
                let counts = processing.counts();
                (status.say)(&status_line(started.elapsed(), counts, &status.writes));
                status_at += STATUS_EVERY;
            }
        }
        let now_ns = crate::linux::sched::monotonic_ns();
        if !processing.backlogged() {
            let mut batch = processing.batch();
            sampler.drain(&mut batch);
            // Every record up to the previous read's start is in now.
            processing.send(batch, watermark);
            watermark = now_ns;
        }
        let mut wait_ms = 100;
        if plan.status.is_some() {
            wait_ms = wait_ms.min(
                status_at
                    .saturating_duration_since(Instant::now())
                    .as_millis() as i32
                    + 1,
            );
        }
        for d in plan.deadline.iter().chain(windows.as_ref().map(|(_, e)| e)) {
            let left = d.saturating_duration_since(Instant::now()).as_millis();
            wait_ms = wait_ms.min(left as i32 + 1);
        }
        sampler.wait(wait_ms);
        if let Some(p) = plan.pause {
            std::thread::sleep(p);
        }
    };
    if let Some(status) = &plan.status {
        (status.say)("");
    }
    sampler.disable();
    let mut batch = RecordBatch::new();
    sampler.drain(&mut batch);
    processing.send(batch, u64::MAX);
    if plan.quit.is_some() {
        // A live view gets the last part too.
        processing.snapshot(Window::now(None, true));
    }
    (stop, windows.map(|(n, _)| n))
}

/// `12.0 s: 11,988 samples (0 lost), 2 threads, 1 process; Ctrl-C to stop and write x.svg`
fn status_line(elapsed: Duration, c: LiveCounts, writes: &str) -> String {
    format!(
        "{:.0} s: {} samples ({} lost), {} thread{}, {} process{}; Ctrl-C to stop and write {}",
        elapsed.as_secs_f64(),
        c.samples,
        c.lost,
        c.threads,
        if c.threads == 1 { "" } else { "s" },
        c.processes,
        if c.processes == 1 { "" } else { "es" },
        writes
    )
}

/// Why to stop now, if there is a reason.
fn stop_reason(sampler: &dyn Sampler, live: &mut Live, deadline: Option<Instant>) -> Option<Stop> {
    if let Some((sig, from_process)) = target::take_signal() {
        if live.on_signal(sig, from_process) {
            return Some(Stop::Signal);
        }
    }
    if let Some(stop) = live.ended(sampler) {
        return Some(stop);
    }
    deadline
        .is_some_and(|d| Instant::now() >= d)
        .then_some(Stop::Deadline)
}

/// Wait for the command after sampling stopped, still passing signals on.
fn wait_forwarding_signals(child: &mut GatedChild) -> i32 {
    loop {
        if let Some((sig, from_process)) = target::take_signal() {
            child.pass_on(sig, from_process);
        }
        if let Some(code) = child.try_wait() {
            return code;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records read but not processed yet, in bytes, above which the reader stops reading (the
/// kernel then counts what it cannot write as lost) instead of using memory without end.
const MAX_UNPROCESSED_BYTES: usize = 1 << 30;

/// What the processing thread is handed, in order.
enum Work {
    /// Records read, and the watermark up to which every record is in.
    Batch(RecordBatch, u64),
    /// Write the outputs now.
    Snapshot(Window),
}

/// The processing thread's state.
struct Worker {
    collector: Collector,
    queue: RecordQueue,
    spent: mpsc::Sender<RecordBatch>,
    backlog: Arc<AtomicUsize>,
    counts: Arc<std::sync::Mutex<LiveCounts>>,
    snapshots: Option<SnapshotPlan>,
    watermark: u64,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Work>) -> Collector {
        // SIGCHLD is the reader's: a sampler that traces threads waits for it there (and
        // one that takes processes over starts doing so only after this thread started).
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&nix::sys::signal::SigSet::from(Signal::SIGCHLD)),
            None,
        );
        for work in rx {
            match work {
                Work::Batch(batch, watermark) => self.take(batch, watermark),
                Work::Snapshot(window) => self.snapshot(window),
            }
        }
        let collector = &mut self.collector;
        self.queue.drain_all(|r| collector.handle(r));
        self.collector
    }

    fn take(&mut self, batch: RecordBatch, watermark: u64) {
        self.backlog.fetch_sub(batch.size(), Ordering::Relaxed);
        self.queue.add(batch);
        let collector = &mut self.collector;
        self.queue.drain_until(watermark, |r| collector.handle(r));
        self.watermark = watermark;
        if let Ok(mut c) = self.counts.lock() {
            *c = self.collector.counts();
        }
        for b in self.queue.take_spent() {
            let _ = self.spent.send(b);
        }
    }

    /// Write what is in up to the last watermark (records held back for time order go to
    /// the next one).
    fn snapshot(&mut self, window: Window) {
        let Some(plan) = &mut self.snapshots else {
            return;
        };
        match snapshot::write(&mut self.collector, plan, window) {
            Ok(_) => {}
            Err(e) => self
                .collector
                .warn([format!("a snapshot could not be written: {e}")]),
        }
    }
}

/// Batches the reader starts with, and the memory of each, touched before sampling starts:
/// reading into fresh pages costs page faults in the very thread that must not fall behind
/// (measured: a 15 MB read took 156 ms into fresh memory while a thousand threads ran).
/// 8 MiB in all: `scripts/manythreads.sh 8` lost nothing with it in 48 of 48 runs (each way
/// and build), and 12 of 12 more as root (64 MiB, then 16 before: a small program's
/// recording peaked at 72, then 46-58 MB of RSS; 15 MB now). Samples are copied without
/// the unused part of their stack copy, so a batch holds a few hundred.
const READY_BATCHES: usize = 4;
const READY_BATCH_BYTES: usize = 2 << 20;

/// The thread that turns records into the profile ([`Collector::handle`]), fed batches in
/// the order they were read, each with the watermark up to which every record is in. Batches
/// it is done with go back to the reader to be filled again.
pub(super) struct Processing {
    tx: mpsc::Sender<Work>,
    spent: mpsc::Receiver<RecordBatch>,
    /// Batches with memory touched before sampling started.
    ready: Vec<RecordBatch>,
    /// Bytes sent and not yet taken up.
    backlog: Arc<AtomicUsize>,
    /// The counts as of the last batch processed.
    counts: Arc<std::sync::Mutex<LiveCounts>>,
    thread: std::thread::JoinHandle<Collector>,
}

impl Processing {
    /// Start the processing thread (at the calling thread's priority). With `ring_buffers`
    /// (the sampler's records sit in kernel buffers that overflow if not read in time) the
    /// reader gets batches with memory touched now; otherwise it allocates as it goes.
    pub(super) fn start(
        collector: Collector,
        ring_buffers: bool,
        snapshots: Option<SnapshotPlan>,
    ) -> Processing {
        let (tx, rx) = mpsc::channel::<Work>();
        let (spent_tx, spent) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let counts = Arc::new(std::sync::Mutex::new(LiveCounts::default()));
        let worker = Worker {
            collector,
            queue: RecordQueue::new(),
            spent: spent_tx,
            backlog: Arc::clone(&backlog),
            counts: Arc::clone(&counts),
            snapshots,
            watermark: 0,
        };
        let thread = std::thread::Builder::new()
            .name("ember-process".into())
            .spawn(move || worker.run(rx))
            .expect("spawn the processing thread");
        Processing {
            tx,
            spent,
            ready: (0..if ring_buffers { READY_BATCHES } else { 0 })
                .map(|_| RecordBatch::with_memory(READY_BATCH_BYTES))
                .collect(),
            backlog,
            counts,
            thread,
        }
    }

    /// Write every output from what is recorded so far (after everything sent before).
    fn snapshot(&self, window: Window) {
        let _ = self.tx.send(Work::Snapshot(window));
    }

    /// An empty batch to read into, with memory already used when there is one.
    fn batch(&mut self) -> RecordBatch {
        self.spent
            .try_recv()
            .ok()
            .or_else(|| self.ready.pop())
            .unwrap_or_default()
    }

    fn counts(&self) -> LiveCounts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    fn backlogged(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) > MAX_UNPROCESSED_BYTES
    }

    fn send(&self, batch: RecordBatch, watermark: u64) {
        self.backlog.fetch_add(batch.size(), Ordering::Relaxed);
        // The receiver lives until `finish`.
        let _ = self.tx.send(Work::Batch(batch, watermark));
    }

    /// Wait until everything sent is processed; the collector with the whole profile.
    pub(super) fn finish(self) -> Collector {
        drop(self.tx);
        match self.thread.join() {
            Ok(c) => c,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
