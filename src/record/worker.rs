//! The processing thread: it takes the batches the reader copied, in the order read, puts
//! their records in time order ([`RecordQueue`]) and hands them to the [`Collector`]; batches
//! it is done with go back to the reader to be filled again. It also writes the snapshots
//! (`--every` windows, SIGUSR1) the reader asks for, since it owns the profile.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use nix::sys::signal::Signal;

use super::collector::{Collector, RecordingCounts};
use super::snapshot::{self, SnapshotPlan, Window};
use crate::sampler::{RecordBatch, RecordQueue};

/// Records read but not processed yet, in bytes, above which the reader stops reading (the
/// kernel then counts what it cannot write as lost) instead of using memory without end.
const MAX_UNPROCESSED_BYTES: usize = 1 << 30;

/// What the processing thread is handed, in order.
enum Work {
    /// Records read, and the watermark up to which every record is in.
    Batch(RecordBatch, u64),
    /// Write the outputs now.
    Snapshot(Window),
    /// Unwind rows were built for the walk in the kernel: place them.
    RowsBuilt,
    /// Nothing more comes (the row builder's sender lives on, so the channel stays open).
    Finish,
}

/// The processing thread's state.
struct Worker {
    collector: Collector,
    queue: RecordQueue,
    spent: mpsc::Sender<RecordBatch>,
    backlog: Arc<AtomicUsize>,
    counts: Arc<std::sync::Mutex<RecordingCounts>>,
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
        while let Ok(work) = rx.recv() {
            match work {
                Work::Batch(batch, watermark) => self.take(batch, watermark),
                Work::Snapshot(window) => self.snapshot(window),
                Work::RowsBuilt => self.collector.place_built_rows(),
                Work::Finish => break,
            }
        }
        let collector = &mut self.collector;
        self.queue.drain_all(|r| collector.handle(r));
        // The last window is pushed with the outputs at the end.
        self.collector.pusher = self.snapshots.and_then(|plan| plan.pusher);
        self.collector
    }

    fn take(&mut self, batch: RecordBatch, watermark: u64) {
        self.backlog.fetch_sub(batch.size(), Ordering::Relaxed);
        self.queue.add(batch);
        let collector = &mut self.collector;
        self.queue.drain_until(watermark, |r| collector.handle(r));
        collector.after_batch();
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
/// reading into fresh pages costs page faults in the very thread that must not fall behind,
/// while a thousand threads of the target compete for the CPU. 8 MiB in all: enough for the
/// first reads of `scripts/manythreads.sh` (which counts what is lost), little enough that a
/// small program's recording stays small. Samples are copied without the unused part of
/// their stack copy, so a batch holds a few hundred.
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
    counts: Arc<std::sync::Mutex<RecordingCounts>>,
    thread: std::thread::JoinHandle<Collector>,
}

impl Processing {
    /// Start the processing thread (at the calling thread's priority). With `ring_buffers`
    /// (the sampler's records sit in kernel buffers that overflow if not read in time) the
    /// reader gets batches with memory touched now; otherwise it allocates as it goes.
    pub(super) fn start(
        mut collector: Collector,
        ring_buffers: bool,
        snapshots: Option<SnapshotPlan>,
    ) -> Processing {
        let (tx, rx) = mpsc::channel::<Work>();
        let rows_built = tx.clone();
        collector.when_rows_built(Box::new(move || {
            let _ = rows_built.send(Work::RowsBuilt);
        }));
        let (spent_tx, spent) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let counts = Arc::new(std::sync::Mutex::new(RecordingCounts::default()));
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
    pub(super) fn snapshot(&self, window: Window) {
        let _ = self.tx.send(Work::Snapshot(window));
    }

    /// An empty batch to read into, with memory already used when there is one.
    pub(super) fn batch(&mut self) -> RecordBatch {
        self.spent
            .try_recv()
            .ok()
            .or_else(|| self.ready.pop())
            .unwrap_or_default()
    }

    pub(super) fn counts(&self) -> RecordingCounts {
        self.counts.lock().map(|c| *c).unwrap_or_default()
    }

    pub(super) fn backlogged(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) > MAX_UNPROCESSED_BYTES
    }

    pub(super) fn send(&self, batch: RecordBatch, watermark: u64) {
        self.backlog.fetch_add(batch.size(), Ordering::Relaxed);
        // The receiver lives until `finish`.
        let _ = self.tx.send(Work::Batch(batch, watermark));
    }

    /// Wait until everything sent is processed; the collector with the whole profile.
    pub(super) fn finish(self) -> Collector {
        let _ = self.tx.send(Work::Finish);
        drop(self.tx);
        match self.thread.join() {
            Ok(c) => c,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
