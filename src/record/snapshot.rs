//! Outputs written while recording goes on: on `kill -USR1` (everything so far, or so far in
//! the current window) and at the end of each `--every` window (that window, numbered, after
//! which the profile starts again empty so memory stays flat over hours); or, for a live view,
//! each window handed to it. Written by the
//! processing thread, which owns the profile: the reader goes on reading meanwhile and what it
//! reads waits in memory.

use std::time::{Duration, Instant, SystemTime};

use super::collector::Collector;
use super::feed::WindowSender;
use super::metadata::{fill_metadata, About};
use super::outputs::{name_and_write, window_outputs};
use super::push::Pusher;
use super::RecordOptions;
use crate::model::ModuleId;
use crate::output::OutputError;
use crate::profile::Profile;

/// Which outputs to write, as of when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Window {
    /// The window's number (`--every`), which names its files; `None` without windows.
    pub n: Option<u32>,
    /// Start the next window empty afterwards.
    pub reset: bool,
    /// When the reader asked for it (monotonic, and by the wall clock): where the window ends,
    /// however late the processing thread gets to it.
    pub at: (Instant, SystemTime),
}

impl Window {
    /// Asked for now.
    pub fn now(n: Option<u32>, reset: bool) -> Window {
        Window {
            n,
            reset,
            at: (Instant::now(), SystemTime::now()),
        }
    }
}

/// What every snapshot of a recording shares.
pub(super) struct SnapshotPlan {
    pub opts: RecordOptions,
    /// What is profiled (the command line, or the attached processes).
    pub description: Vec<String>,
    pub event: &'static str,
    /// When the current window (or the recording) began.
    pub since: Instant,
    /// A live view takes the windows instead of files.
    pub feed: Option<WindowSender>,
    /// Where each window is pushed (`--push`).
    pub pusher: Option<Pusher>,
}

/// Write every output from what `collector` holds now (or, for a live view, hand it over);
/// with `window.reset` the profile starts again empty.
pub(super) fn write(
    collector: &mut Collector,
    plan: &mut SnapshotPlan,
    window: Window,
) -> Result<(), OutputError> {
    let (mut profile, duration) = take_window(collector, plan, window);
    // (`duration` is the window's; the next begins where it ends.)
    if let Some(feed) = &mut plan.feed {
        feed.send(profile, duration, collector);
        // The view holds its own copies of the modules handed over.
        let gone = forget_ended(collector, window);
        feed.gone(gone);
        return Ok(());
    }
    let pids: Vec<u32> = collector.procs.processes().map(|p| p.pid).collect();
    for pid in pids {
        collector.load_perf_map(pid);
    }
    let outputs = window_outputs(&plan.opts.output.outputs, window.n);
    let written = name_and_write(
        &mut profile,
        &collector.procs,
        (&collector.perf_maps, &collector.python.codes),
        &plan.opts,
        &outputs,
    )?;
    if let (Some(pusher), Some(body)) = (&plan.pusher, written.pprof) {
        pusher.push(body, unix_span(window.at.1, duration));
    }
    forget_ended(collector, window);
    Ok(())
}

/// After a window that starts the next one empty (written, or handed over), forget the
/// processes that ended — their samples are in that window — and let go of the files no
/// process maps any more, so that memory stays flat however many processes and programs
/// come and go over hours. Returns the modules let go of.
fn forget_ended(collector: &mut Collector, window: Window) -> Vec<ModuleId> {
    if !window.reset {
        return Vec::new();
    }
    for pid in collector.procs.forget_ended() {
        collector.perf_maps.remove(&pid);
    }
    let gone = collector.procs.forget_unmapped_files();
    collector.forgotten_files += gone.len();
    crate::linux::memory::give_back_free_memory();
    gone
}

/// The Unix seconds a window `duration` long that ended at `end` began and ended.
pub(super) fn unix_span(end: SystemTime, duration: Duration) -> (u64, u64) {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    (secs(end.checked_sub(duration).unwrap_or(end)), secs(end))
}

/// The profile so far (taken out with `window.reset`, copied otherwise) with its metadata, and
/// how long it covers.
fn take_window(
    collector: &mut Collector,
    plan: &mut SnapshotPlan,
    window: Window,
) -> (Profile, Duration) {
    let mut profile = if window.reset {
        std::mem::take(&mut collector.profile)
    } else {
        collector.profile.clone()
    };
    // The window ends when the reader asked for it; the next begins at the same instant.
    let (now, wall) = window.at;
    let duration = now.saturating_duration_since(plan.since);
    let about = About {
        description: plan.description.clone(),
        event: plan.event,
        start: wall.checked_sub(duration),
        duration,
        parse_errors: collector.parse_errors,
        taken_over: collector.takeovers.any(),
        walked_in_kernel: collector.unwind_stats().walked_in_kernel > 0,
    };
    if window.reset {
        plan.since = now;
        collector.window_began = Some(now);
        collector.earlier_windows += profile.total_samples();
        collector.earlier_lost = collector.earlier_lost.saturating_add(profile.meta.lost);
    }
    fill_metadata(&mut profile, &collector.procs, &plan.opts, about);
    (profile, duration)
}
