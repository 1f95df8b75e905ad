//! The reader: sampling until a stop reason, this thread only copying what the sampler
//! produced and handing it to the processing thread ([`super::worker`]) that unwinds and
//! aggregates, so a slow unwind (or a reader that gets little CPU, when a target has a thousand
//! runnable threads) never lets a ring buffer overflow while there is memory to copy it to.
//! It also asks for the `--every` windows and SIGUSR1 snapshots and keeps the status line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::collector::RecordingCounts;
use super::early_files::EarlyOpener;
use super::running::{Running, Stop};
use super::snapshot::Window;
use super::worker::Processing;
use crate::sampler::{RecordBatch, Sampler};
use crate::target;

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
    /// Where files are opened as soon as they are seen mapped.
    pub early: Option<Arc<crate::modules::EarlyFiles>>,
}

/// Told a status line about once a second, and "" when sampling is over.
pub(super) struct Status {
    pub say: fn(&str),
    /// What Ctrl-C writes (the outputs), as the line names it.
    pub writes: String,
}

/// The wait after a read that met executable mappings.
const MAPPED_WAIT_MS: i32 = 2;

/// How often the status line is told again.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Record until the command ends (launch) or `-d` passes, a signal arrives or every target
/// ends (attach). This thread only reads; `processing` does the rest.
pub(super) fn sample_until(
    sampler: &mut dyn Sampler,
    processing: &mut Processing,
    running: &mut Running,
    plan: &ReadPlan,
) -> (Stop, Option<u32>) {
    let mut watermark = 0u64;
    let started = Instant::now();
    let mut status_at = started + STATUS_EVERY;
    let mut windows = plan.every.map(|every| (1u32, started + every));
    let layout = sampler.layout();
    let mut early = plan
        .early
        .as_ref()
        .map(|files| EarlyOpener::new(Arc::clone(files), layout));
    let stop = loop {
        if plan
            .quit
            .as_ref()
            .is_some_and(|q| q.load(Ordering::Relaxed))
        {
            break Stop::Quit;
        }
        if let Some(stop) = stop_reason(sampler, running, plan.deadline) {
            break stop;
        }
        ask_for_snapshots(processing, &mut windows, plan.every);
        if let Some(status) = &plan.status {
            if Instant::now() >= status_at {
                let counts = processing.counts();
                (status.say)(&status_line(started.elapsed(), counts, &status.writes));
                status_at += STATUS_EVERY;
            }
        }
        let now_ns = crate::linux::sched::monotonic_ns();
        let mut mapped = 0;
        if !processing.backlogged() {
            let mut batch = processing.batch();
            sampler.drain(&mut batch);
            if let Some(early) = &mut early {
                mapped = early.scan(&batch);
            }
            // Every record up to the previous read's start is in now.
            processing.send(batch, watermark);
            watermark = now_ns;
        }
        let mut wait_ms = wait_ms(plan, status_at, windows.as_ref().map(|(_, ends)| *ends));
        if mapped > 0 {
            // Files were just mapped: read again soon, so that the watermark passes their
            // records and the walk in the kernel has the process's mappings (and the
            // interpreter found) within milliseconds of its start, not a wait later.
            wait_ms = wait_ms.min(MAPPED_WAIT_MS);
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

/// Ask the processing thread for the `--every` window that ended (`windows`: the number
/// and end of the current one) and for the snapshot SIGUSR1 asked for.
fn ask_for_snapshots(
    processing: &Processing,
    windows: &mut Option<(u32, Instant)>,
    every: Option<Duration>,
) {
    if let Some((n, ends)) = windows {
        if Instant::now() >= *ends {
            processing.snapshot(Window::now(Some(*n), true));
            *n += 1;
            // A reader kept from the CPU past several ends writes one window for them.
            while *ends <= Instant::now() {
                *ends += every.unwrap_or_default();
            }
        }
    }
    if target::take_snapshot_request() {
        processing.snapshot(Window::now(windows.map(|(n, _)| n), false));
    }
}

/// How long the reader may wait for records before it has something else to do: tell the
/// status line, stop at the deadline, end a window.
fn wait_ms(plan: &ReadPlan, status_at: Instant, window_ends: Option<Instant>) -> i32 {
    let mut wait_ms = 100;
    let status = plan.status.as_ref().map(|_| status_at);
    for d in status.iter().chain(&plan.deadline).chain(&window_ends) {
        let left = d.saturating_duration_since(Instant::now()).as_millis();
        wait_ms = wait_ms.min(left as i32 + 1);
    }
    wait_ms
}

/// `12.0 s: 11,988 samples (0 lost), 2 threads, 1 process; Ctrl-C to stop and write x.svg`
fn status_line(elapsed: Duration, c: RecordingCounts, writes: &str) -> String {
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
fn stop_reason(
    sampler: &dyn Sampler,
    running: &mut Running,
    deadline: Option<Instant>,
) -> Option<Stop> {
    if let Some((sig, from_process)) = target::take_signal() {
        if running.on_signal(sig, from_process) {
            return Some(Stop::Signal);
        }
    }
    if let Some(stop) = running.ended(sampler) {
        return Some(stop);
    }
    deadline
        .is_some_and(|d| Instant::now() >= d)
        .then_some(Stop::Deadline)
}
