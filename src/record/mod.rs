//! `ember record`: the pipeline end to end, in steps that follow each other —
//! [`start`] checks what can be checked and opens the sampler on the target
//! ([`running`] holds it while it runs), [`start::Started::sample`] releases the command and
//! samples until a stop reason: the [`reader`] thread copies, the processing thread
//! ([`worker`]) hands records in time order to the [`collector`], which unwinds and
//! aggregates them. [`recording`] then takes the profile out and gives it its [`metadata`],
//! and it is symbolized and written ([`outputs`]); a [`Summary`] says what happened. While
//! sampling, [`snapshot`] writes `--every` windows and SIGUSR1 snapshots, or hands windows to
//! a live view ([`feed`], [`watch`]). Nothing here prints: what the user should hear while
//! recording goes through [`RecordOptions::notify`], the summary is a value.

mod collector;
mod early_files;
mod feed;
mod kernel_python;
mod kernel_walk;
mod metadata;
mod options;
mod outputs;
mod push;
mod python;
mod reader;
mod recording;
mod running;
mod snapshot;
mod start;
mod summary;
mod takeovers;
mod worker;

use std::time::Instant;

pub use collector::{Collector, CollectorSetup, RecordingCounts};
pub use feed::{Began, Feed, LiveEvent, LiveWindow};
pub use options::{
    DebugHooks, Listeners, NamingOptions, OutputOptions, ProcessFilter, RecordError, RecordOptions,
    SamplingOptions, TargetOptions, DEFAULT_FREQUENCY, DEFAULT_STACK_SIZE,
};
pub use outputs::window_path;
pub(crate) use outputs::{symbolize_options, write_outputs};
pub use push::{PushStats, PushTarget};
pub use summary::{plural, svg_titles, Summary, Verbose};

use crate::profile::Profile;
use crate::unwind::UnwindStats;
use outputs::{name_and_write, window_outputs};
use recording::Recording;
use running::Stop;

/// What a recording produced.
pub struct RecordOutcome {
    /// The command's exit code (128+N when killed by signal N); 0 after attaching.
    pub exit_code: i32,
    pub profile: Profile,
    pub unwind: UnwindStats,
    /// What to tell the user at the end.
    pub summary: Summary,
}

/// How long the windows still queued may take to be sent at the end.
const PUSH_FINISH: std::time::Duration = std::time::Duration::from_secs(10);

/// Run `opts.command` (or attach to `opts.pids`) under the profiler and write every output.
pub fn record(opts: &RecordOptions) -> Result<RecordOutcome, RecordError> {
    let mut sampled = start::start(opts)?.sample(opts, None)?;
    let pusher = sampled.collector.pusher.take();
    let mut recording = Recording::from(sampled, opts);
    let stopped = Instant::now();
    let outputs = window_outputs(&opts.output.outputs, recording.sampled.window);
    let written = name_and_write(
        &mut recording.profile,
        &recording.procs,
        (&recording.perf_maps, &recording.python_codes),
        opts,
        &outputs,
    )?;
    let mut summary = recording.summary(opts, &written.folded);
    if let Some(pusher) = pusher {
        let meta = &recording.profile.meta;
        if let (Some(body), Some(start)) = (written.pprof, meta.start) {
            pusher.push(
                body,
                snapshot::unix_span(start + meta.duration, meta.duration),
            );
        }
        summary.pushed = Some(pusher.finish(PUSH_FINISH));
    }
    if let Some(v) = &mut summary.verbose {
        v.debuginfod = written.debuginfod;
        v.symbolize = written.symbolized - stopped;
        v.write = written.symbolized.elapsed();
    }
    let exit_code = recording
        .sampled
        .running
        .exit_code(recording.sampled.stop, opts.listeners.notify);
    Ok(RecordOutcome {
        exit_code,
        profile: recording.profile,
        unwind: recording.sampled.unwind,
        summary,
    })
}

/// Sample as [`record`] does, handing each window to `feed` instead of writing files,
/// until the target ends, `-d` passes, a signal (attached) or the view says quit. Errors before
/// sampling begins come back here, before any [`LiveEvent`]. Returns the exit code ember ends
/// with: the command's where it ended by itself, else 0 (after attaching, or when ember ended
/// it: SIGTERM after `-d` or quitting).
pub fn watch(opts: &RecordOptions, feed: Feed) -> Result<i32, RecordError> {
    let started = start::start(opts)?;
    let _ = feed.events.send(LiveEvent::Began(started.began()));
    // The view says what matters; nothing is told on the terminal it draws on.
    let quiet = RecordOptions {
        listeners: Listeners {
            progress: opts.listeners.progress,
            ..Listeners::default()
        },
        ..opts.clone()
    };
    let mut sampled = started.sample(&quiet, Some(feed))?;
    // After `-d` a launched command is ended as on quitting, not waited for; its status is
    // then not ember's.
    match sampled.stop {
        Stop::Deadline | Stop::Quit => {
            sampled
                .running
                .exit_code(Stop::Quit, quiet.listeners.notify);
            Ok(0)
        }
        stop => Ok(sampled.running.exit_code(stop, quiet.listeners.notify)),
    }
}
