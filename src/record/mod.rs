//! `ember record`: the pipeline end to end, in steps that follow each other —
//! [`start::start`] checks what can be checked and opens the sampler on the target,
//! [`start::Started::sample`] releases the command and reads until a stop reason (a reader
//! thread copies, a processing thread unwinds and aggregates), [`Recording::from`] gives the
//! profile its metadata and keeps the processes asked for, then the profile is symbolized and
//! written, and a [`Summary`] says what happened. Nothing here prints: what the user should
//! hear while recording goes through [`RecordOptions::notify`], the summary is a value.

mod collector;
mod live;
mod options;
mod reader;
mod snapshot;
mod start;
mod summary;
mod takeovers;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

pub use collector::{Collector, LiveCounts};
pub use live::{watch, Began, Feed, LiveEvent, LiveWindow};
pub use options::{
    ProcessFilter, RecordError, RecordOptions, DEFAULT_FREQUENCY, DEFAULT_STACK_SIZE,
};
pub use snapshot::window_path;
pub use summary::{plural, svg_titles, Summary, Verbose};

use crate::model::Frame;
use crate::modules::ModuleId;
use crate::output::{self, Folded, OutputError};
use crate::process::ProcessTable;
use crate::profile::Profile;
use crate::stacks::StackProfile;
use crate::symbolize::debuginfo::DebugDirs;
use crate::symbolize::debuginfod::Debuginfod;
use crate::symbolize::perfmap::PerfMap;
use crate::symbolize::{self, SymbolizeOptions};
use crate::unwind::UnwindStats;
use start::Sampled;

/// What a recording produced.
pub struct RecordOutcome {
    /// The command's exit code (128+N when killed by signal N); 0 after attaching.
    pub exit_code: i32,
    pub profile: Profile,
    pub unwind: UnwindStats,
    /// What to tell the user at the end.
    pub summary: Summary,
}

/// Run `opts.command` (or attach to `opts.pids`) under the profiler and write every output.
pub fn record(opts: &RecordOptions) -> Result<RecordOutcome, RecordError> {
    let sampled = start::start(opts)?.sample(opts, None)?;
    let mut recording = Recording::from(sampled, opts);
    let stopped = Instant::now();
    let symbols = symbolize::symbolize(
        &recording.profile,
        &recording.procs.modules,
        &recording.perf_maps,
        &symbolize_options(opts),
    );
    recording
        .profile
        .meta
        .warnings
        .extend(symbols.warnings.iter().cloned());
    let symbolized = Instant::now();
    let stacks =
        StackProfile::from_recording(&recording.profile, &symbols, &recording.procs.modules);
    let outputs = snapshot::window_outputs(&opts.outputs, recording.sampled.window);
    let folded = write_outputs(&stacks, opts, &outputs)?;
    let mut summary = recording.summary(opts, &folded);
    if let Some(v) = &mut summary.verbose {
        v.debuginfod = symbols.debuginfod.iter().map(|q| q.to_string()).collect();
        v.symbolize = symbolized - stopped;
        v.write = symbolized.elapsed();
    }
    let exit_code = recording
        .sampled
        .live
        .exit_code(recording.sampled.stop, opts.notify);
    Ok(RecordOutcome {
        exit_code,
        profile: recording.profile,
        unwind: recording.sampled.unwind,
        summary,
    })
}

/// How `opts` asks for names.
pub(crate) fn symbolize_options(opts: &RecordOptions) -> SymbolizeOptions {
    SymbolizeOptions {
        inline: opts.inline,
        debug_dirs: DebugDirs::new(&opts.debug_dirs),
        debuginfod: opts
            .debuginfod
            .then(|| Debuginfod::from_env(opts.progress))
            .flatten()
            .map(Arc::new),
        dwarf_cache: crate::symbolize::inflated::cache_dir(),
    }
}

/// A finished recording: the profile with its metadata, what it needs to be symbolized, and
/// how sampling went.
struct Recording {
    profile: Profile,
    procs: ProcessTable,
    perf_maps: HashMap<u32, PerfMap>,
    sampled: SamplingEnd,
}

/// What is left of sampling once the profile is taken out.
struct SamplingEnd {
    live: reader::Live,
    stop: reader::Stop,
    unwind: UnwindStats,
    event: crate::sampler::OpenedEvent,
    detail: String,
    reader: start::ReaderSetup,
    /// `--every`: the number of the last window.
    window: Option<u32>,
    /// Samples of the windows written before it.
    earlier_windows: u64,
    /// Samples the kernel lost in those windows.
    earlier_lost: u64,
}

impl Recording {
    /// The profile of `sampled` with its metadata (what was profiled, processes, threads,
    /// warnings), keeping only the processes `opts.filter` keeps.
    fn from(sampled: Sampled, opts: &RecordOptions) -> Recording {
        let Sampled {
            mut collector,
            live,
            stop,
            duration,
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
        };
        fill_metadata(&mut profile, &procs, opts, about);
        Recording {
            profile,
            procs,
            perf_maps,
            sampled: SamplingEnd {
                live,
                stop,
                unwind: unwinder.stats,
                event,
                detail,
                reader,
                window,
                earlier_windows: collector_earlier,
                earlier_lost,
            },
        }
    }

    fn summary(&self, opts: &RecordOptions, folded: &Folded) -> Summary {
        let p = &self.profile;
        let s = &self.sampled;
        let outputs = snapshot::window_outputs(&opts.outputs, s.window);
        let mut summary = Summary::of(
            &p.meta,
            p.total_samples() + s.earlier_windows,
            &outputs,
            s.event.kernel_included,
        );
        summary.lost += s.earlier_lost;
        if opts.verbose {
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
        if let Some(n) = opts.rank {
            let mut table = Vec::new();
            let freq = p.meta.frequency;
            let _ = output::ranking::write_table(folded, freq, n, &mut table);
            summary.ranking = Some(String::from_utf8_lossy(&table).into_owned());
        }
        if let Some(n) = opts.top {
            let mut table = Vec::new();
            let _ = output::report::write(folded, n, output::report::SortBy::SelfTime, &mut table);
            summary.top = Some(String::from_utf8_lossy(&table).into_owned());
        }
        summary
    }
}

/// What a profile's metadata says about the recording it comes from.
struct About {
    description: Vec<String>,
    event: &'static str,
    /// When it began, by the wall clock.
    start: Option<std::time::SystemTime>,
    duration: std::time::Duration,
    parse_errors: u64,
    /// Processes were taken over by ptrace because their stacks outgrew perf events' copies.
    taken_over: bool,
}

/// Give `profile` its metadata (what was profiled, processes, threads, warnings), keeping only
/// the processes `opts.filter` keeps.
fn fill_metadata(profile: &mut Profile, procs: &ProcessTable, opts: &RecordOptions, about: About) {
    let meta = &mut profile.meta;
    meta.command = about.description;
    meta.frequency = opts.frequency;
    meta.event = about.event.to_string();
    meta.duration = about.duration;
    meta.start = about.start;
    describe_processes(profile, procs, opts);
    if !opts.filter.is_empty() {
        keep_filtered(profile, procs, opts);
    }
    // After filtering: a file that could not be read matters only where it was sampled.
    warn_about_inputs(profile, procs, about.parse_errors);
    warn_about_cut_stacks(profile, about.event.starts_with("ptrace"), about.taken_over);
}

/// Stacks cut short at the root end (`[truncated]`) hang off a tower of their own instead
/// of under their callers: where more than 1 % of the samples are, say so and what helps.
fn warn_about_cut_stacks(profile: &mut Profile, ptrace: bool, taken_over: bool) {
    let total = profile.total_samples();
    let cut = profile.samples_rooted_at(Frame::Truncated);
    if cut * 100 <= total {
        return;
    }
    let help = if ptrace {
        "the stack was deeper than the 8 MiB ember copies, or not in a mapping of its own"
    } else if taken_over {
        "perf events copy at most --stack-size bytes of stack per sample, and these were taken \
         before ptrace took their process over (it copies whole stacks; see -v)"
    } else {
        "perf events copy at most --stack-size bytes of stack per sample (65016 at most), too \
         few for these deep stacks without frame pointers; --backend ptrace copies whole \
         stacks, at a higher cost per sample"
    };
    profile.meta.warnings.push(format!(
        "{:.0} % of the samples ({cut}) have stacks cut short before their thread's first \
         frame, shown under [truncated]: {help}",
        100.0 * cut as f64 / total as f64
    ));
}

/// Names of processes, executables and threads (with names the kernel cut mapped back).
fn describe_processes(profile: &mut Profile, procs: &ProcessTable, opts: &RecordOptions) {
    let meta = &mut profile.meta;
    for p in procs.processes() {
        meta.processes.insert(p.pid, p.name.clone());
        if let Some(exe) = &p.exe {
            meta.executables.insert(p.pid, exe.clone());
        }
    }
    for (&tid, t) in procs.threads() {
        let name = opts
            .thread_name_fixes
            .get(&t.name)
            .cloned()
            .unwrap_or_else(|| t.name.clone());
        meta.threads.insert(tid, (t.pid, name));
    }
}

/// Records that could not be read, and files that could not be opened that the profile has
/// samples in (once each, saying what it means for the profile). A process that was left out
/// (`--process`, `cargo ember`'s filter) or a file never sampled needs no names.
fn warn_about_inputs(profile: &mut Profile, procs: &ProcessTable, parse_errors: u64) {
    if parse_errors > 0 {
        profile.meta.warnings.push(format!(
            "{parse_errors} malformed perf records were skipped"
        ));
    }
    let mut samples_in: HashMap<ModuleId, u64> = HashMap::new();
    for (_, _, frames, count) in profile.stacks() {
        let mut seen = HashSet::new();
        for f in frames {
            if let Frame::Module { module, .. } = profile.frames()[f as usize] {
                if seen.insert(module) {
                    *samples_in.entry(module).or_default() += count;
                }
            }
        }
    }
    for (id, m) in procs.modules.iter() {
        let (Some(e), Some(n)) = (&m.error, samples_in.get(&id)) else {
            continue;
        };
        if m.path.starts_with('/') {
            profile.meta.warnings.push(format!(
                "{}: {e}; the {n} samples in it show its frames as {}+0xADDR",
                m.path,
                m.short_name()
            ));
        }
    }
}

/// Keep only the processes `opts.filter` keeps.
fn keep_filtered(profile: &mut Profile, procs: &ProcessTable, opts: &RecordOptions) {
    let keep: HashSet<u32> = procs
        .processes()
        .filter(|p| opts.filter.keeps(&p.name, p.exe.as_deref()))
        .map(|p| p.pid)
        .collect();
    let before = profile.total_samples();
    profile.retain_processes(|pid| keep.contains(&pid));
    let meta = &mut profile.meta;
    meta.processes.retain(|pid, _| keep.contains(pid));
    meta.threads.retain(|_, (pid, _)| keep.contains(pid));
    let threads = &meta.threads;
    meta.lifetimes.retain(|tid, _| threads.contains_key(tid));
    if profile.total_samples() == 0 && before > 0 {
        profile.meta.warnings.push(format!(
            "no process matched the filter; {before} samples of other processes were left out"
        ));
    }
}

/// Write `stacks` to every path of `outputs`, in the format its extension says.
pub(crate) fn write_outputs(
    stacks: &StackProfile,
    opts: &RecordOptions,
    outputs: &[std::path::PathBuf],
) -> Result<Folded, OutputError> {
    let folded = output::folded::fold(stacks, opts.fold);
    let mut svg = opts.svg.clone();
    let (title, subtitle) = svg_titles(&stacks.meta, stacks.total_samples());
    if svg.title.is_empty() {
        svg.title = title;
    }
    svg.subtitle = Some(subtitle);
    let r = output::Rendered {
        profile: Some(stacks),
        folded: &folded,
        svg: &svg,
    };
    for path in outputs {
        output::write_output(path, &r)?;
        if let Some((uid, gid)) = opts.run_as {
            // Files in the user's directories belong to the user, not to root.
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }
    Ok(folded)
}
