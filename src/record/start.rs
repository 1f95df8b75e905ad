//! Starting a recording: everything that can be checked is checked before the command starts,
//! then the sampler is opened (launching the command, or attaching), and sampling runs until a
//! stop reason.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::collector::{Collector, CollectorSetup};
use super::feed::{Began, Feed, WindowSender};
use super::push::Pusher;
use super::reader::{sample_until, ReadPlan, Status};
use super::running::{Running, Stop};
use super::snapshot::SnapshotPlan;
use super::worker::Processing;
use super::{RecordError, RecordOptions};
use crate::linux::{self, sched};
use crate::model::stack_reads::KnownStacks;
use crate::model::CallGraph;
use crate::output;
use crate::sampler::perf::{KernelFrames, KernelWalk, PerfConfig, PerfError, PerfSampler};
use crate::sampler::ptrace::{PtraceConfig, PtraceError, PtraceSampler};
use crate::sampler::takeover::{Requests, TakeoverSampler};
use crate::sampler::{self, relay, Backend, OpenedEvent, Sampler};
use crate::target::{self, GatedChild};

/// A sampler running on its target, the command not released yet.
pub(super) struct Started {
    sampler: Box<dyn Sampler>,
    /// The reader's nice value, where it could be raised.
    nice: Option<i32>,
    /// Its nice value before, given back once sampling is over.
    user_nice: Option<i32>,
    running: Running,
    collector: Collector,
    /// What is profiled: the command line, or `name (pid N)` of each attached process.
    description: Vec<String>,
}

/// How the reader thread was set up, for `-v`.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReaderSetup {
    /// The nice value it was raised to, where allowed.
    pub nice: Option<i32>,
    /// The scheduler took its request for a short time slice.
    pub short_slice: bool,
    /// The ring buffers are read by a process of its own (the priority could not be raised).
    pub relayed: bool,
}

/// Sampling over: the collector holds every record's contribution.
pub(super) struct Sampled {
    pub collector: Collector,
    pub running: Running,
    pub stop: Stop,
    pub duration: Duration,
    pub event: OpenedEvent,
    pub detail: String,
    pub description: Vec<String>,
    /// When the recording (or its last window) began, by the wall clock.
    pub start: Option<SystemTime>,
    pub reader: ReaderSetup,
    /// `--every`: the number of the last window (the earlier ones are written).
    pub window: Option<u32>,
    /// How long the whole recording lasted (`duration` is its last window's, with `--every`).
    pub whole: Duration,
}

/// Check what can be checked, open the sampler and get the target ready.
pub(super) fn start(opts: &RecordOptions) -> Result<Started, RecordError> {
    check(opts)?;
    // Before any sampler: the ptrace backend then takes SIGCHLD over for itself.
    target::install_signal_handlers();
    let known_stacks = KnownStacks::new();
    let (mut perf_config, ptrace_config) = configs(opts, known_stacks.clone());
    let user_nice = sched::thread_nice();
    let (opened, nice, running) = if opts.target.system {
        open_system(opts, &mut perf_config)?
    } else if opts.target.pids.is_empty() {
        let child = GatedChild::spawn_as(&opts.target.command, opts.target.run_as)?;
        // After the fork, so the command runs at the user's priority.
        let nice = sched::raise_reader_priority();
        perf_config.reader_raised = nice.is_some();
        // On error `child` is dropped unreleased: the command never runs.
        let opened = open_sampler(
            opts,
            nice.is_none(),
            || PerfSampler::for_launch(child.pid(), &perf_config),
            || PtraceSampler::for_launch(child.pid(), &ptrace_config),
        )?;
        (opened, nice, Running::Command(child))
    } else {
        let nice = sched::raise_reader_priority();
        perf_config.reader_raised = nice.is_some();
        let opened = open_sampler(
            opts,
            nice.is_none(),
            || PerfSampler::for_attach(&opts.target.pids, &perf_config),
            || PtraceSampler::for_attach(&opts.target.pids, &ptrace_config),
        )?;
        (opened, nice, Running::Pids(opts.target.pids.clone()))
    };
    let root = match &running {
        Running::Command(child) => Some(child.pid()),
        Running::Pids(_) | Running::System => None,
    };
    let (mut sampler, takeovers) = with_takeover(opts, opened, (root, &ptrace_config));
    let mut collector = Collector::new(CollectorSetup {
        layout: sampler.layout(),
        call_graph: opts.sampling.call_graph,
        known_stacks: (!opts.debug.whole_copies).then_some(known_stacks),
        takeovers,
        waits_at: sampler
            .samples_switches()
            .then_some(opts.sampling.frequency),
        check_tables: opts.debug.check_tables,
        bpf_maps: sampler.take_bpf_maps(),
    });
    if opts.target.system {
        collector.procs.read_containers = true;
        // Read first, then sample (a process not read yet has no rows for the walk in the
        // kernel: its samples would carry stack copies), then read those that started
        // meanwhile.
        seed_system(&mut collector);
        sampler.enable();
        seed_system(&mut collector);
    }
    let description = match &running {
        Running::Command(_) => opts.target.command.clone(),
        Running::Pids(pids) => seed_attached(&mut collector, pids),
        Running::System => vec!["every process".to_string()],
    };
    Ok(Started {
        sampler,
        nice,
        user_nice,
        running,
        collector,
        description,
    })
}

/// Everything that can be checked before the command starts.
fn check(opts: &RecordOptions) -> Result<(), RecordError> {
    if opts.sampling.frequency == 0 {
        return Err(RecordError::ZeroFrequency);
    }
    if opts.target.system && opts.sampling.backend == Backend::Ptrace {
        return Err(RecordError::SystemNeedsPerf);
    }
    for o in &opts.output.outputs {
        output::check_writable(o).map_err(RecordError::BadOutput)?;
    }
    for &pid in &opts.target.pids {
        target::check_attachable(pid)?;
    }
    Ok(())
}

/// How to set up each backend; the ptrace backend finds what the collector read of deep
/// stacks in `known_stacks`.
fn configs(opts: &RecordOptions, known_stacks: KnownStacks) -> (PerfConfig, PtraceConfig) {
    let perf = PerfConfig {
        frequency: opts.sampling.frequency,
        call_graph: opts.sampling.call_graph,
        stack_size: opts.sampling.stack_size,
        kernel: opts.sampling.kernel,
        off_cpu: opts.sampling.off_cpu,
        buffer_size: opts.sampling.buffer_size,
        // Known once the priority is raised, before the sampler opens.
        reader_raised: false,
        kernel_walk: match (opts.sampling.kernel_walk, opts.debug.check_tables) {
            (KernelWalk::Off, _) => KernelWalk::Off,
            (_, true) => KernelWalk::Check,
            (walk, false) => walk,
        },
        walk_hooks: opts.debug.walk_hooks,
    };
    let ptrace = PtraceConfig {
        frequency: opts.sampling.frequency,
        off_cpu: opts.sampling.off_cpu,
        cpu_timers: !opts.debug.ptrace_ticks,
        kernel_frames: opts.sampling.kernel != KernelFrames::Exclude,
        known_stacks,
    };
    (perf, ptrace)
}

/// Perf events on every CPU for every process (`-a`), and the command, where there is one,
/// spawned and waiting to be released. No ptrace: ember stops no process it was not given.
fn open_system(
    opts: &RecordOptions,
    perf_config: &mut PerfConfig,
) -> Result<(Opened, Option<i32>, Running), RecordError> {
    let child = match opts.target.command.is_empty() {
        true => None,
        false => Some(GatedChild::spawn_as(
            &opts.target.command,
            opts.target.run_as,
        )?),
    };
    let nice = sched::raise_reader_priority();
    perf_config.reader_raised = nice.is_some();
    let perf = PerfSampler::for_system(perf_config).map_err(|e| match e {
        PerfError::Refused {
            error, paranoid, ..
        } => RecordError::SystemRefused { error, paranoid },
        e => e.into(),
    })?;
    let running = child.map_or(Running::System, Running::Command);
    Ok((
        (read_perf(perf, nice.is_none()), Backend::Perf),
        nice,
        running,
    ))
}

/// Every process running as sampling begins that is not known yet, read from /proc (later
/// ones come as records).
fn seed_system(collector: &mut Collector) {
    for pid in linux::list_processes().unwrap_or_default() {
        // Kernel threads have no mappings; a process may end while it is read.
        if collector.procs.get(pid).is_none() && collector.procs.seed_from_proc(pid).is_ok() {
            collector.seeded(pid);
        }
    }
}

/// Modules the attached processes loaded already, from /proc, before any record is processed;
/// returns `name (pid N)` for each.
fn seed_attached(collector: &mut Collector, pids: &[u32]) -> Vec<String> {
    let mut description = Vec::new();
    for &pid in pids {
        match collector.procs.seed_from_proc(pid) {
            Ok(()) => collector.seeded(pid),
            Err(e) => collector.warn([format!("could not read /proc/{pid}: {e}")]),
        }
        let name = collector
            .procs
            .get(pid)
            .map(|p| p.name.clone())
            .unwrap_or_default();
        description.push(format!("{name} (pid {pid})"));
    }
    description
}

/// A sampler as opened, and which backend it is (perf events or ptrace).
type Opened = (Box<dyn Sampler>, Backend);

/// Open the sampler `opts.backend` asks for; `auto` falls back to ptrace, saying so once,
/// when perf events are refused. With `relay`, perf events are read by a process of their
/// own ([`relay`]).
fn open_sampler(
    opts: &RecordOptions,
    relay: bool,
    perf: impl FnOnce() -> Result<PerfSampler, PerfError>,
    ptrace: impl FnOnce() -> Result<PtraceSampler, PtraceError>,
) -> Result<Opened, RecordError> {
    let kernel_required = opts.sampling.kernel == KernelFrames::Require;
    let perf = || perf().map(|s| (read_perf(s, relay), Backend::Perf));
    let ptrace = || ptrace().map(|s| (Box::new(s) as Box<dyn Sampler>, Backend::Ptrace));
    match opts.sampling.backend {
        Backend::Perf => Ok(perf()?),
        Backend::Ptrace if kernel_required => Err(RecordError::KernelNeedsPerf),
        Backend::Ptrace => Ok(ptrace()?),
        // Kernel frames required: no fallback that cannot give them.
        Backend::Auto if kernel_required => Ok(perf()?),
        Backend::Auto => match perf() {
            Ok(s) => Ok(s),
            Err(refused @ (PerfError::Refused { .. } | PerfError::OffCpuNeedsKernel)) => {
                (opts.listeners.notify)(&format!(
                    "{}, so sampling falls back to ptrace (--backend ptrace): each sample stops \
                     the thread for a moment, so expect more overhead, and no kernel frames",
                    refusal(&refused)
                ));
                match ptrace() {
                    Ok(s) => Ok(s),
                    Err(e) => Err(RecordError::BothRefused {
                        perf: refused,
                        ptrace: e,
                    }),
                }
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Where `auto` samples with perf events and unwinds their stack copies (and kernel frames
/// are not required), processes that run Python are taken over by ptrace, whose stops read
/// their Python frames ([`sampler::takeover`], configured by `ptrace`); in a CPU profile so
/// are those whose stacks outgrow the copies. The collector asks for them through the
/// requests returned, with whether deep stacks count. `root`: the launched command.
fn with_takeover(
    opts: &RecordOptions,
    (sampler, backend): Opened,
    (root, ptrace): (Option<u32>, &PtraceConfig),
) -> (Box<dyn Sampler>, Option<(Requests, bool)>) {
    let wanted = opts.sampling.backend == Backend::Auto
        && !opts.target.system
        && backend == Backend::Perf
        && opts.sampling.call_graph != CallGraph::Fp
        && opts.sampling.kernel != KernelFrames::Require;
    if !wanted {
        return (sampler, None);
    }
    let requests = Requests::new();
    // The command (or the processes attached to) starts now: its stacks are judged soon.
    requests.watch(sampler::takeover::WATCH_START_NS);
    let sampler = TakeoverSampler::new(sampler, ptrace, root, requests.clone());
    // A wall-clock profile keeps deep stacks on perf events: ptrace's wall clock stops
    // every thread at every tick.
    (Box::new(sampler), Some((requests, !opts.sampling.off_cpu)))
}

/// Perf events read here, or by a process of their own session with `relay` (where that
/// cannot be set up, here after all, with a note saying why).
fn read_perf(perf: PerfSampler, relay: bool) -> Box<dyn Sampler> {
    if !relay {
        return Box::new(perf);
    }
    match relay::start(perf) {
        Ok(relayed) => Box::new(relayed),
        Err(refused) => {
            let (mut perf, e) = *refused;
            perf.notes.push(format!(
                "the ring buffers are read by ember's own process ({e}): a target with many \
                 busy threads may make it lose samples"
            ));
            Box::new(perf)
        }
    }
}

/// Why perf events cannot be used, in a few words.
fn refusal(refused: &PerfError) -> String {
    match refused {
        PerfError::Refused {
            error, paranoid, ..
        } => format!(
            "perf events are refused here ({error}; kernel.perf_event_paranoid = {paranoid})"
        ),
        _ => "--off-cpu on perf events needs kernel sampling, refused here".to_string(),
    }
}

impl Started {
    /// What a live view is told as sampling begins.
    pub(super) fn began(&self) -> Began {
        Began {
            description: self.description.clone(),
            backend: self.sampler.detail(),
            event: self.sampler.event().name,
            pids: match &self.running {
                Running::Command(child) => vec![child.pid()],
                Running::Pids(pids) => pids.clone(),
                Running::System => Vec::new(),
            },
        }
    }

    /// Release the command (when launching) and sample until a stop reason. With `feed`, each
    /// window goes to a live view instead of `--every` files.
    pub(super) fn sample(
        self,
        opts: &RecordOptions,
        feed: Option<Feed>,
    ) -> Result<Sampled, RecordError> {
        let Started {
            mut sampler,
            nice,
            user_nice,
            mut running,
            mut collector,
            description,
        } = self;
        let notes_taken = sampler.notes().len();
        collector.warn(sampler.notes().iter().cloned());
        let early = Arc::new(crate::modules::EarlyFiles::default());
        collector.procs.modules.open_early_from(Arc::clone(&early));
        let (every, quit) = match &feed {
            Some(f) => (Some(f.every), Some(f.quit.clone())),
            None => (opts.output.every, None),
        };
        let snapshots = SnapshotPlan {
            opts: opts.clone(),
            description: description.clone(),
            event: sampler.event().name,
            since: Instant::now(),
            pusher: match (&feed, &opts.output.push) {
                (None, Some(target)) => {
                    Some(Pusher::start(target.clone(), opts.sampling.frequency))
                }
                _ => None,
            },
            feed: feed.map(|f| WindowSender::new(f.events)),
        };
        // Started after the priority was raised, so it shares it (a new thread inherits it):
        // it opens each mapped file while its process lives, and a process that exits before
        // its mmap is processed leaves a deleted binary that can no longer be opened.
        let mut processing =
            Processing::start(collector, sampler.has_ring_buffers(), Some(snapshots));
        let reader = ReaderSetup {
            nice,
            short_slice: sched::request_short_slice(),
            relayed: sampler.relayed(),
        };
        let started = Instant::now();
        if let Err(e) = release(&mut running, opts, &description) {
            processing.finish();
            return Err(e);
        }
        let mut plan = read_plan(opts, started, every, quit);
        plan.early = Some(early);
        let (stop, window) = sample_until(sampler.as_mut(), &mut processing, &mut running, &plan);
        let ended = (Instant::now(), SystemTime::now());
        if let Some(n) = user_nice {
            sched::reset_thread_priority(n);
        }
        let ended_ns = sched::monotonic_ns();
        let mut collector = processing.finish();
        collector.finish(ended_ns);
        // What the backend learnt while sampling and detaching (sample_until disabled it).
        collector.warn(sampler.notes().iter().skip(notes_taken).cloned());
        let detail = detail(sampler.as_ref(), &collector);
        // With windows, the last one began when the one before it was taken.
        let window_began = collector.window_began.unwrap_or(started);
        let duration = ended.0.saturating_duration_since(window_began);
        Ok(Sampled {
            collector,
            running,
            stop,
            window,
            duration,
            whole: ended.0.saturating_duration_since(started),
            start: ended.1.checked_sub(duration),
            event: sampler.event(),
            detail,
            description,
            reader,
        })
    }
}

/// Let a launched command run, or say what an attached recording samples.
fn release(
    running: &mut Running,
    opts: &RecordOptions,
    description: &[String],
) -> Result<(), RecordError> {
    match running {
        Running::Command(child) => child.release().map_err(RecordError::from),
        Running::Pids(_) | Running::System => {
            (opts.listeners.notify)(&sampling_line(description, opts));
            Ok(())
        }
    }
}

/// When the reader stops, what it says meanwhile and when it asks for windows.
fn read_plan(
    opts: &RecordOptions,
    started: Instant,
    every: Option<Duration>,
    quit: Option<Arc<AtomicBool>>,
) -> ReadPlan {
    ReadPlan {
        deadline: opts.target.duration.map(|d| started + d),
        pause: opts.debug.reader_pause,
        status: opts.listeners.status.map(|say| Status {
            say,
            writes: outputs_named(&opts.output.outputs),
        }),
        every,
        quit,
        early: None,
    }
}

/// How sampling was set up and went, for `-v`.
fn detail(sampler: &dyn Sampler, collector: &Collector) -> String {
    let mut detail = sampler.detail();
    if collector.takeovers.left_out > 0 {
        detail += &format!(
            "; {} samples of perf events left out (their processes were taken over)",
            collector.takeovers.left_out
        );
    }
    let python = &collector.python;
    if python.samples > 0 {
        let k = &collector.kernel_pythons;
        detail += &format!(
            "\nember: python: {} samples with Python frames ({} read in the kernel at the \
             sample, the others at ptrace's stops), {} of them with a frame chain that could \
             not be read to its end; {} samples brought the names of short-lived code (module \
             and class bodies and what they run), {} code objects named so (gone before ember \
             could read them)",
            python.samples, k.samples, python.cut, k.samples_with_names, k.named_from_samples
        );
    }
    if let Some(k) = &collector.kernel_walk {
        detail += &format!("\nember: {}", k.describe());
    }
    if collector.forgotten_files > 0 {
        detail += &format!(
            "\nember: windows: {} files let go of after their windows (no process mapped them \
             any more)",
            collector.forgotten_files
        );
    }
    if let Some(check) = &collector.table_check {
        detail += &format!("\nember: {}", check.stats);
    }
    detail
}

/// The outputs, as the status line names them.
fn outputs_named(outputs: &[std::path::PathBuf]) -> String {
    let names: Vec<String> = outputs.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// What an attached recording samples and how it ends, said as it begins.
fn sampling_line(targets: &[String], opts: &RecordOptions) -> String {
    let until = match opts.target.duration {
        Some(d) => format!("for {:.1} s (or Ctrl-C)", d.as_secs_f64()),
        None => "until Ctrl-C or the end of the process".to_string(),
    };
    format!(
        "sampling {} at {} Hz {until}",
        targets.join(", "),
        opts.sampling.frequency
    )
}
