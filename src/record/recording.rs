//! A finished recording: the profile taken out of the collector with its metadata, what
//! symbolizing it needs, and the summary of how sampling went.

use std::collections::HashMap;

use super::metadata::{fill_metadata, About};
use super::outputs::window_outputs;
use super::running::{Running, Stop};
use super::start::{ReaderSetup, Sampled};
use super::summary::{Summary, Verbose};
use super::{Collector, RecordOptions};
use crate::output::{self, Folded};
use crate::process::ProcessTable;
use crate::profile::Profile;
use crate::python::CodeInfo;
use crate::sampler::OpenedEvent;
use crate::symbolize::perfmap::PerfMap;
use crate::unwind::UnwindStats;

/// A finished recording: the profile with its metadata, what it needs to be symbolized, and
/// how sampling went.
pub(super) struct Recording {
    pub profile: Profile,
    pub procs: ProcessTable,
    pub perf_maps: HashMap<u32, PerfMap>,
    /// The Python code objects the profile's Python frames name, by id.
    pub python_codes: HashMap<u32, CodeInfo>,
    pub sampled: SamplingEnd,
}

/// What is left of sampling once the profile is taken out.
pub(super) struct SamplingEnd {
    pub running: Running,
    pub stop: Stop,
    pub unwind: UnwindStats,
    event: OpenedEvent,
    detail: String,
    reader: ReaderSetup,
    /// `--every`: the number of the last window.
    pub window: Option<u32>,
    /// How long the whole recording lasted.
    whole: std::time::Duration,
    /// Samples of the windows written before it.
    earlier_windows: u64,
    /// Samples the kernel lost in those windows.
    earlier_lost: u64,
}

impl Recording {
    /// The profile of `sampled` with its metadata (what was profiled, processes, threads,
    /// warnings), keeping only the processes `opts.filter` keeps.
    pub(super) fn from(sampled: Sampled, opts: &RecordOptions) -> Recording {
        let Sampled {
            mut collector,
            running,
            stop,
            duration,
            whole,
            start,
            event,
            detail,
            description,
            reader,
            window,
        } = sampled;
        let pids: Vec<u32> = collector.procs.processes().map(|p| p.pid).collect();
        for pid in pids {
            collector.load_perf_map(pid);
        }
        let Collector {
            procs,
            unwinder,
            mut profile,
            parse_errors,
            perf_maps,
            python,
            earlier_windows: collector_earlier,
            earlier_lost,
            takeovers,
            ..
        } = collector;
        let about = About {
            description,
            event: event.name,
            start,
            duration,
            parse_errors,
            taken_over: takeovers.any(),
            walked_in_kernel: unwinder.stats.walked_in_kernel > 0,
        };
        fill_metadata(&mut profile, &procs, opts, about);
        Recording {
            profile,
            procs,
            perf_maps,
            python_codes: python.codes,
            sampled: SamplingEnd {
                running,
                stop,
                unwind: unwinder.stats,
                event,
                detail,
                reader,
                window,
                whole,
                earlier_windows: collector_earlier,
                earlier_lost,
            },
        }
    }

    pub(super) fn summary(&self, opts: &RecordOptions, folded: &Folded) -> Summary {
        let p = &self.profile;
        let s = &self.sampled;
        let outputs = window_outputs(&opts.output.outputs, s.window);
        let mut summary = Summary::of(
            &p.meta,
            p.total_samples() + s.earlier_windows,
            &outputs,
            s.event.kernel_included,
        );
        summary.lost = summary.lost.saturating_add(s.earlier_lost);
        // The counts are the whole recording's: so is the time they were taken in.
        summary.duration = s.whole;
        summary.windows = s.window;
        if opts.output.verbose {
            summary.verbose = Some(Verbose {
                backend: s.detail.clone(),
                unique_stacks: p.unique_stacks(),
                unique_frames: p.frames().len(),
                unwind: s.unwind,
                reader_nice: s.reader.nice,
                short_slice: s.reader.short_slice,
                relayed: s.reader.relayed,
                debuginfod: Vec::new(),
                symbolize: Default::default(),
                write: Default::default(),
            });
        }
        if let Some(n) = opts.output.rank {
            let mut table = Vec::new();
            let freq = p.meta.frequency;
            let _ = output::ranking::write_table(folded, freq, n, &mut table);
            summary.ranking = Some(String::from_utf8_lossy(&table).into_owned());
        }
        if let Some(n) = opts.output.top {
            let mut table = Vec::new();
            let _ = output::report::write(folded, n, output::report::SortBy::SelfTime, &mut table);
            summary.top = Some(String::from_utf8_lossy(&table).into_owned());
        }
        summary
    }
}
