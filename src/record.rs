//! `ember record`: the pipeline end to end — launch, sample, unwind, aggregate, symbolize,
//! write.

use std::path::PathBuf;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::output::{self, FoldOptions, Folded, OutputError, SvgOptions};
use crate::process::ProcessTable;
use crate::profile::{Frame, Profile};
use crate::sampler::perf::{KernelFrames, PerfConfig, PerfError, PerfSampler};
use crate::sampler::ptrace::{PtraceConfig, PtraceError, PtraceSampler};
use crate::sampler::{Backend, CallGraph, Event, RecordBatch, RecordQueue, SampleLayout, Sampler};
use crate::stacks::StackProfile;
use crate::symbolize::debuginfo::DebugDirs;
use crate::symbolize::perfmap::PerfMap;
use crate::symbolize::{self, SymbolizeOptions};
use crate::target::{self, GatedChild, TargetError};
use crate::unwind::{RawFrame, StackUnwinder, UnwindStats};
use crate::waits::Waits;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

/// Default sampling frequency: 999 Hz gives millisecond resolution at low overhead, and
/// being just off 1 kHz keeps it out of lockstep with timers that tick at round rates.
pub const DEFAULT_FREQUENCY: u64 = 999;
/// Default user-stack copy per sample: enough for ~1000 typical frames (samply uses 32000).
pub const DEFAULT_STACK_SIZE: u32 = 32768;

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// The command to launch; ignored when `pids` is not empty.
    pub command: Vec<String>,
    /// Running processes to attach to.
    pub pids: Vec<u32>,
    /// Stop sampling after this long (the launched command runs on).
    pub duration: Option<std::time::Duration>,
    pub frequency: u64,
    pub call_graph: CallGraph,
    pub stack_size: u32,
    pub outputs: Vec<PathBuf>,
    /// How stacks are rooted, and whether frames carry source lines.
    pub fold: FoldOptions,
    pub kernel: KernelFrames,
    pub inline: bool,
    /// Say more in the summary: unique stacks, unwinding, time per phase.
    pub verbose: bool,
    /// Extra directories searched for separate debug files.
    pub debug_dirs: Vec<PathBuf>,
    /// How the SVG looks; an empty title means "the command".
    pub svg: SvgOptions,
    /// Print the N hottest functions at the end.
    pub top: Option<usize>,
    /// Open the SVG in a browser when done.
    pub open: bool,
    /// Which processes to keep.
    pub filter: ProcessFilter,
    /// Under `sudo`: run the command as this (uid, gid) and give the outputs to them.
    pub run_as: Option<(u32, u32)>,
    /// Thread names the kernel cut to 15 bytes → their full names (from `--list` of test
    /// binaries).
    pub thread_name_fixes: HashMap<String, String>,
    /// Where samples come from.
    pub backend: Backend,
    /// Wall-clock profile: waiting threads are sampled too, their stacks ending in
    /// `[off-cpu] <syscall>`.
    pub off_cpu: bool,
    /// Bytes of each CPU's perf ring buffer; `None` picks by privileges.
    pub buffer_size: Option<usize>,
    /// Sleep this long after each read of the buffers (tests of the loss path).
    pub reader_pause: Option<std::time::Duration>,
    /// Told, once sampling of attached processes has begun, what is sampled (the library
    /// prints nothing; the `ember` binary puts it on stderr).
    pub on_sampling: Option<fn(&str)>,
}

/// Which processes' samples to keep: all, or those whose name or executable matches.
#[derive(Clone, Debug, Default)]
pub struct ProcessFilter {
    pub regex: Option<regex::Regex>,
    /// Executables to keep (compared after canonicalizing).
    pub executables: Vec<PathBuf>,
}

impl ProcessFilter {
    pub fn is_empty(&self) -> bool {
        self.regex.is_none() && self.executables.is_empty()
    }

    pub fn keeps(&self, name: &str, exe: Option<&str>) -> bool {
        if self.is_empty() {
            return true;
        }
        if let Some(r) = &self.regex {
            if r.is_match(name) || exe.is_some_and(|e| r.is_match(e)) {
                return true;
            }
        }
        let Some(exe) = exe else { return false };
        let canon = std::fs::canonicalize(exe).unwrap_or_else(|_| PathBuf::from(exe));
        self.executables
            .iter()
            .any(|e| *e == canon || e.as_path() == std::path::Path::new(exe))
    }
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions {
            command: Vec::new(),
            pids: Vec::new(),
            duration: None,
            frequency: DEFAULT_FREQUENCY,
            call_graph: CallGraph::Auto,
            stack_size: DEFAULT_STACK_SIZE,
            outputs: vec![PathBuf::from("flamegraph.svg")],
            fold: FoldOptions::default(),
            kernel: KernelFrames::Auto,
            inline: true,
            verbose: false,
            debug_dirs: Vec::new(),
            svg: SvgOptions::default(),
            top: None,
            open: false,
            filter: ProcessFilter::default(),
            run_as: None,
            thread_name_fixes: HashMap::new(),
            backend: Backend::Auto,
            off_cpu: false,
            buffer_size: None,
            reader_pause: None,
            on_sampling: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// An `-o` found unwritable before anything started.
    #[error(transparent)]
    BadOutput(OutputError),
    /// Writing an output failed at the end (disk full, ...).
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Perf(#[from] PerfError),
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    #[error("--kernel needs perf events: the ptrace backend sees user space only")]
    KernelNeedsPerf,
    #[error("{perf}\nThe fallback to ptrace failed too: {ptrace}")]
    BothRefused {
        perf: PerfError,
        ptrace: PtraceError,
    },
    #[error("-F must be at least 1")]
    ZeroFrequency,
}

impl RecordError {
    /// The exit code ember ends with: 2 for what the user can fix in the command line (a bad
    /// `-o`, PID or command), 1 for failures while running.
    pub fn exit_code(&self) -> i32 {
        match self {
            RecordError::BadOutput(_)
            | RecordError::ZeroFrequency
            | RecordError::KernelNeedsPerf => 2,
            RecordError::Target(
                TargetError::NotFound(_)
                | TargetError::NoCommand
                | TargetError::NoSuchProcess(_)
                | TargetError::KernelThread(_)
                | TargetError::Myself
                | TargetError::Exited(_),
            ) => 2,
            _ => 1,
        }
    }
}

/// What a recording produced.
pub struct RecordOutcome {
    /// The command's exit code (128+N when killed by signal N).
    pub exit_code: i32,
    pub profile: Profile,
    pub unwind: UnwindStats,
    /// One line for the terminal.
    pub summary: String,
}

/// Turns records into profile samples, keeping the process table current: the work done
/// per record while recording (parse, unwind, aggregate). Public so benches can drive it with
/// captured records.
pub struct Collector {
    layout: SampleLayout,
    procs: ProcessTable,
    unwinder: StackUnwinder,
    profile: Profile,
    raw: Vec<RawFrame>,
    frames: Vec<Frame>,
    parse_errors: u64,
    /// JIT maps (`/tmp/perf-PID.map`) of processes, read when they exit or at the end.
    perf_maps: HashMap<u32, PerfMap>,
    /// Wall-clock accounting of switched-out threads (perf events with `--off-cpu`).
    waits: Option<Waits>,
}

impl Collector {
    pub fn new(layout: SampleLayout, call_graph: CallGraph) -> Collector {
        Collector {
            layout,
            procs: ProcessTable::new(),
            unwinder: StackUnwinder::new(call_graph),
            profile: Profile::new(),
            raw: Vec::new(),
            frames: Vec::new(),
            parse_errors: 0,
            perf_maps: HashMap::new(),
            waits: None,
        }
    }

    /// Count samples taken at switch-out as waits until switch-in, at `frequency` per second.
    pub fn count_waits(&mut self, frequency: u64) {
        self.waits = Some(Waits::new(frequency));
    }

    /// The recording ended at `time`: count the waits still going on.
    pub fn finish(&mut self, time: u64) {
        if let Some(w) = &mut self.waits {
            w.finish(&mut self.profile, time);
        }
    }

    /// The profile so far.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// How unwinding went so far.
    pub fn unwind_stats(&self) -> UnwindStats {
        self.unwinder.stats
    }

    /// Process one raw perf record.
    pub fn handle(&mut self, rec: &[u8]) {
        let ev = match self.layout.parse(rec) {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(_) => {
                self.parse_errors += 1;
                return;
            }
        };
        match ev {
            Event::Sample(s) => {
                self.procs.touch_thread(s.pid, s.tid);
                let proc = self.procs.get(s.pid);
                self.unwinder.unwind(proc, &s, &mut self.raw);
                self.frames.clear();
                if let Some(reason) = s.off_cpu {
                    self.frames.push(Frame::OffCpu(reason));
                }
                if s.switched_out {
                    let Some(waits) = &mut self.waits else {
                        return;
                    };
                    // The kernel part says what it waits for; the marker replaces it.
                    self.frames.push(Frame::OffCpu(waits.reason(&self.raw)));
                    self.raw.retain(|r| !matches!(r, RawFrame::Kernel(_)));
                } else if let Some(waits) = &mut self.waits {
                    // Sampled running: any wait it was in is over.
                    waits.end(&mut self.profile, s.tid, s.time);
                }
                for &r in &self.raw {
                    self.frames.push(match r {
                        RawFrame::Kernel(a) => Frame::Kernel(a),
                        RawFrame::Truncated => Frame::Truncated,
                        RawFrame::User(a) => match proc.and_then(|p| p.resolve(a)) {
                            Some(res) if !self.procs.modules.get(res.module).is_anonymous() => {
                                Frame::Module {
                                    module: res.module,
                                    svma: self
                                        .procs
                                        .modules
                                        .get(res.module)
                                        .offset_to_svma(res.file_offset),
                                }
                            }
                            _ => Frame::Anon {
                                pid: s.pid,
                                addr: a,
                            },
                        },
                    });
                }
                match &mut self.waits {
                    Some(waits) if s.switched_out => {
                        waits.switched_out(&mut self.profile, s.pid, s.tid, &self.frames, s.time)
                    }
                    _ => self.profile.add_sample(s.pid, s.tid, &self.frames, 1),
                }
            }
            Event::Switch(sw) => {
                if let Some(waits) = &mut self.waits {
                    match (sw.out, sw.preempted) {
                        (true, true) => waits.preempted(sw.tid),
                        (true, false) => {}
                        (false, _) => waits.end(&mut self.profile, sw.tid, sw.time),
                    }
                }
            }
            Event::Mmap(m) => {
                if m.executable {
                    let name = String::from_utf8_lossy(m.filename);
                    self.procs
                        .on_mmap(m.pid, m.start, m.len, m.pgoff, m.dev_ino, &name);
                }
            }
            Event::Comm(c) => {
                let name = String::from_utf8_lossy(c.name);
                self.procs.on_comm(c.pid, c.tid, &name, c.exec);
            }
            Event::Fork(f) => self.procs.on_fork(f.pid, f.ppid, f.tid),
            Event::Exit(f) => {
                if let Some(waits) = &mut self.waits {
                    waits.end(&mut self.profile, f.tid, f.time);
                }
                self.procs.on_exit(f.pid, f.tid);
                if f.pid == f.tid {
                    // Read its JIT map while it is still there.
                    self.load_perf_map(f.pid);
                }
            }
            Event::Lost(n) => self.profile.meta.lost += n,
            Event::Throttle => self.profile.meta.throttled += 1,
            Event::Unthrottle => {}
        }
    }
}

impl Collector {
    fn load_perf_map(&mut self, pid: u32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.perf_maps.entry(pid) {
            if let Some(m) = PerfMap::load(pid) {
                e.insert(m);
            }
        }
    }
}

/// What stopped sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// The launched command ended with this exit code.
    CommandExited(i32),
    /// Every attached process ended.
    TargetsExited,
    /// `-d` elapsed.
    Deadline,
    /// SIGINT/SIGTERM/SIGHUP to ember while attached.
    Signal,
}

/// What is being profiled, while it runs.
enum Live {
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

    fn ended(&mut self, sampler: &Sampler) -> Option<Stop> {
        match self {
            Live::Command(child) => match sampler {
                // The tracer reaps the command; waiting here would take its ptrace stops.
                Sampler::Ptrace(s) if s.tracing() || s.root_exit().is_some() => {
                    let code = s.root_exit()?;
                    child.reaped(code);
                    Some(Stop::CommandExited(code))
                }
                _ => child.try_wait().map(Stop::CommandExited),
            },
            Live::Pids(pids) => pids
                .iter()
                .all(|&p| !target::is_alive(p))
                .then_some(Stop::TargetsExited),
        }
    }
}

/// Record until the command ends (launch) or `-d` passes, a signal arrives or every target
/// ends (attach). This thread only reads: it copies what the sampler produced and hands it to
/// a [`Processing`] thread that unwinds and aggregates, so a slow unwind (or a reader that
/// gets little CPU, when a target has a thousand runnable threads) never lets a ring buffer
/// overflow while there is memory to copy it to.
fn sample_until(
    sampler: &mut Sampler,
    processing: &mut Processing,
    live: &mut Live,
    deadline: Option<Instant>,
    pause: Option<std::time::Duration>,
) -> Stop {
    let mut watermark = 0u64;
    let stop = loop {
        if let Some((sig, from_process)) = target::take_signal() {
            if live.on_signal(sig, from_process) {
                break Stop::Signal;
            }
        }
        if let Some(stop) = live.ended(sampler) {
            break stop;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break Stop::Deadline;
        }
        let now_ns = crate::sampler::monotonic_ns();
        if !processing.backlogged() {
            let mut batch = processing.batch();
            sampler.drain(&mut batch);
            // Every record up to the previous read's start is in now.
            processing.send(batch, watermark);
            watermark = now_ns;
        }
        let mut wait_ms = 100;
        if let Some(d) = deadline {
            wait_ms = wait_ms.min(d.saturating_duration_since(now).as_millis() as i32 + 1);
        }
        sampler.wait(wait_ms);
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
    };
    sampler.disable();
    let mut batch = RecordBatch::new();
    sampler.drain(&mut batch);
    processing.send(batch, u64::MAX);
    stop
}

/// Records read but not processed yet, in bytes, above which the reader stops reading (the
/// kernel then counts what it cannot write as lost) instead of using memory without end.
const MAX_UNPROCESSED_BYTES: usize = 1 << 30;

/// The thread that turns records into the profile ([`Collector::handle`]), fed batches in
/// the order they were read, each with the watermark up to which every record is in. Batches
/// it is done with go back to the reader to be filled again.
struct Processing {
    tx: mpsc::Sender<(RecordBatch, u64)>,
    spent: mpsc::Receiver<RecordBatch>,
    /// Batches with memory touched before sampling started.
    ready: Vec<RecordBatch>,
    /// Bytes sent and not yet taken up.
    backlog: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Collector>,
}

impl Processing {
    fn start(mut collector: Collector) -> Processing {
        let (tx, rx) = mpsc::channel::<(RecordBatch, u64)>();
        let (spent_tx, spent) = mpsc::channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        let taken = Arc::clone(&backlog);
        let thread = std::thread::Builder::new()
            .name("ember-process".into())
            .spawn(move || {
                let mut queue = RecordQueue::new();
                for (batch, watermark) in rx {
                    taken.fetch_sub(batch.size(), Ordering::Relaxed);
                    queue.add(batch);
                    queue.drain_until(watermark, |r| collector.handle(r));
                    for b in queue.take_spent() {
                        let _ = spent_tx.send(b);
                    }
                }
                queue.drain_all(|r| collector.handle(r));
                collector
            })
            .expect("spawn the processing thread");
        Processing {
            tx,
            spent,
            ready: (0..8).map(|_| RecordBatch::with_memory(8 << 20)).collect(),
            backlog,
            thread,
        }
    }

    /// An empty batch to read into, with memory already used when there is one.
    fn batch(&mut self) -> RecordBatch {
        self.spent
            .try_recv()
            .ok()
            .or_else(|| self.ready.pop())
            .unwrap_or_default()
    }

    fn backlogged(&self) -> bool {
        self.backlog.load(Ordering::Relaxed) > MAX_UNPROCESSED_BYTES
    }

    fn send(&self, batch: RecordBatch, watermark: u64) {
        self.backlog.fetch_add(batch.size(), Ordering::Relaxed);
        // The receiver lives until `finish`.
        let _ = self.tx.send((batch, watermark));
    }

    /// Wait until everything sent is processed; the collector with the whole profile.
    fn finish(self) -> Collector {
        drop(self.tx);
        match self.thread.join() {
            Ok(c) => c,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Open the sampler `opts.backend` asks for; `auto` falls back to ptrace, saying so once,
/// when perf events are refused.
fn open_sampler(
    opts: &RecordOptions,
    perf: impl FnOnce() -> Result<PerfSampler, PerfError>,
    ptrace: impl FnOnce() -> Result<PtraceSampler, PtraceError>,
) -> Result<Sampler, RecordError> {
    let kernel_required = opts.kernel == KernelFrames::Require;
    match opts.backend {
        Backend::Perf => Ok(Sampler::Perf(perf()?)),
        Backend::Ptrace if kernel_required => Err(RecordError::KernelNeedsPerf),
        Backend::Ptrace => Ok(Sampler::Ptrace(Box::new(ptrace()?))),
        // Kernel frames required: no fallback that cannot give them.
        Backend::Auto if kernel_required => Ok(Sampler::Perf(perf()?)),
        Backend::Auto => match perf() {
            Ok(s) => Ok(Sampler::Perf(s)),
            Err(refused @ (PerfError::Refused { .. } | PerfError::OffCpuNeedsKernel)) => {
                let reason = match &refused {
                    PerfError::Refused {
                        error, paranoid, ..
                    } => format!(
                        "perf events are refused here ({error}; kernel.perf_event_paranoid = \
                         {paranoid})"
                    ),
                    _ => "--off-cpu on perf events needs kernel sampling, refused here".to_string(),
                };
                eprintln!(
                    "ember: {reason}, so sampling falls back to ptrace (--backend ptrace): each \
                     sample stops the thread for a moment, so expect more overhead, and no \
                     kernel frames"
                );
                match ptrace() {
                    Ok(s) => Ok(Sampler::Ptrace(Box::new(s))),
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

/// Run `opts.command` (or attach to `opts.pids`) under the profiler and write every output.
pub fn record(opts: &RecordOptions) -> Result<RecordOutcome, RecordError> {
    if opts.frequency == 0 {
        return Err(RecordError::ZeroFrequency);
    }
    // Everything that can be checked is checked before the command starts.
    for o in &opts.outputs {
        output::check_writable(o).map_err(RecordError::BadOutput)?;
    }
    for &pid in &opts.pids {
        target::check_attachable(pid)?;
    }
    let perf_config = PerfConfig {
        frequency: opts.frequency,
        call_graph: opts.call_graph,
        stack_size: opts.stack_size,
        kernel: opts.kernel,
        off_cpu: opts.off_cpu,
        buffer_size: opts.buffer_size,
    };
    let mut collector = Collector::new(
        SampleLayout {
            sample_type: 0,
            regs_user_mask: 0,
        },
        opts.call_graph,
    );
    // Before any sampler: the ptrace backend then takes SIGCHLD over for itself.
    target::install_signal_handlers();
    let ptrace_config = PtraceConfig {
        frequency: opts.frequency,
        stack_size: opts.stack_size,
        off_cpu: opts.off_cpu,
    };
    let (mut sampler, mut live, description) = if opts.pids.is_empty() {
        let child = GatedChild::spawn_as(&opts.command, opts.run_as)?;
        // On error `child` is dropped unreleased: the command never runs.
        let sampler = open_sampler(
            opts,
            || PerfSampler::for_launch(child.pid(), &perf_config),
            || PtraceSampler::for_launch(child.pid(), &ptrace_config),
        )?;
        (sampler, Live::Command(child), opts.command.clone())
    } else {
        let sampler = open_sampler(
            opts,
            || PerfSampler::for_attach(&opts.pids, &perf_config),
            || PtraceSampler::for_attach(&opts.pids, &ptrace_config),
        )?;
        let mut description = Vec::new();
        for &pid in &opts.pids {
            // Modules already loaded: from /proc, before any record is processed.
            if let Err(e) = collector.procs.seed_from_proc(pid) {
                collector
                    .profile
                    .meta
                    .warnings
                    .push(format!("could not read /proc/{pid}: {e}"));
            }
            let name = collector
                .procs
                .get(pid)
                .map(|p| p.name.clone())
                .unwrap_or_default();
            description.push(format!("{name} (pid {pid})"));
        }
        (sampler, Live::Pids(opts.pids.clone()), description)
    };
    collector.layout = sampler.layout();
    if opts.off_cpu && matches!(sampler, Sampler::Perf(_)) {
        collector.count_waits(opts.frequency);
    }
    collector
        .profile
        .meta
        .warnings
        .extend(sampler.notes().iter().cloned());
    let notes_taken = sampler.notes().len();
    // Started before the reader's priority is raised: unwinding runs at the user's priority.
    let mut processing = Processing::start(collector);
    // After the fork above, so the command runs at the user's priority.
    let reader_nice = crate::sampler::raise_reader_priority();
    let short_slice = crate::sampler::request_short_slice();
    let started = Instant::now();
    if let Live::Command(child) = &mut live {
        if let Err(e) = child.release() {
            processing.finish();
            return Err(e.into());
        }
    }
    if let (Live::Pids(_), Some(tell)) = (&live, opts.on_sampling) {
        tell(&sampling_line(&description, opts));
    }
    let deadline = opts.duration.map(|d| started + d);
    let stop = sample_until(
        &mut sampler,
        &mut processing,
        &mut live,
        deadline,
        opts.reader_pause,
    );
    let ended_ns = crate::sampler::monotonic_ns();
    let mut collector = processing.finish();
    collector.finish(ended_ns);
    let duration = started.elapsed();
    let event = sampler.event();
    // What the backend learnt while sampling and detaching (sample_until disabled it).
    collector
        .profile
        .meta
        .warnings
        .extend(sampler.notes().iter().skip(notes_taken).cloned());
    let backend_detail = sampler.detail();
    drop(sampler);
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
        ..
    } = collector;
    let meta = &mut profile.meta;
    meta.command = description;
    meta.frequency = opts.frequency;
    meta.event = event.name.to_string();
    meta.duration = duration;
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
    if parse_errors > 0 {
        meta.warnings.push(format!(
            "{parse_errors} malformed perf records were skipped"
        ));
    }
    for (_, m) in procs.modules.iter() {
        if let Some(e) = &m.error {
            if m.path.starts_with('/') {
                meta.warnings.push(format!("{}: {e}", m.path));
            }
        }
    }

    if !opts.filter.is_empty() {
        let keep: std::collections::HashSet<u32> = procs
            .processes()
            .filter(|p| opts.filter.keeps(&p.name, p.exe.as_deref()))
            .map(|p| p.pid)
            .collect();
        let before = profile.total_samples();
        profile.retain_processes(|pid| keep.contains(&pid));
        let meta = &mut profile.meta;
        meta.processes.retain(|pid, _| keep.contains(pid));
        meta.threads.retain(|_, (pid, _)| keep.contains(pid));
        if profile.total_samples() == 0 && before > 0 {
            profile.meta.warnings.push(format!(
                "no process matched the filter; {before} samples of other processes were left out"
            ));
        }
    }
    let stopped = Instant::now();
    let symbols = symbolize::symbolize(
        &profile,
        &procs.modules,
        &perf_maps,
        &SymbolizeOptions {
            inline: opts.inline,
            debug_dirs: DebugDirs::new(&opts.debug_dirs),
        },
    );
    profile
        .meta
        .warnings
        .extend(symbols.warnings.iter().cloned());
    let symbolized = Instant::now();
    let stacks = StackProfile::from_recording(&profile, &symbols, &procs.modules);
    let folded = write_outputs(&stacks, opts)?;
    let mut summary = summarize(&profile, &opts.outputs, event.kernel_included);
    if opts.verbose {
        summary.push_str(&format!("\nember: {backend_detail}"));
        summary.push_str(&format!(
            "\nember: {} unique stacks, {} unique frames; unwinding: {} samples, {} stack copies \
             ran out ({} completed from the frame-pointer chain)\n\
             ember: reader priority: {}{}; after sampling: symbolize {:.3} s, write {:.3} s",
            profile.unique_stacks(),
            profile.frames().len(),
            unwinder.stats.samples,
            unwinder.stats.truncated,
            unwinder.stats.spliced,
            match reader_nice {
                Some(n) => format!("nice {n}"),
                None => "not raised (needs root or CAP_SYS_NICE)".to_string(),
            },
            if short_slice {
                ", 0.1 ms time slice"
            } else {
                ""
            },
            (symbolized - stopped).as_secs_f64(),
            symbolized.elapsed().as_secs_f64(),
        ));
    }
    let exit_code = match (stop, &mut live) {
        (Stop::CommandExited(code), _) => code,
        // `-d` ended sampling; the command runs on and its status is still ours.
        (_, Live::Command(child)) => {
            eprintln!(
                "ember: sampling stopped after -d and the outputs are written; waiting for the \
                 command to end"
            );
            wait_forwarding_signals(child)
        }
        (_, Live::Pids(_)) => 0,
    };
    if let Some(n) = opts.top {
        let mut table = Vec::new();
        let _ = output::report::write(&folded, n, output::report::SortBy::SelfTime, &mut table);
        summary = format!("{}{summary}", String::from_utf8_lossy(&table));
    }
    Ok(RecordOutcome {
        exit_code,
        profile,
        unwind: unwinder.stats,
        summary,
    })
}

/// What an attached recording samples and how it ends, said as it begins.
fn sampling_line(targets: &[String], opts: &RecordOptions) -> String {
    let until = match opts.duration {
        Some(d) => format!("for {:.1} s (or Ctrl-C)", d.as_secs_f64()),
        None => "until Ctrl-C or the end of the process".to_string(),
    };
    format!(
        "sampling {} at {} Hz {until}",
        targets.join(", "),
        opts.frequency
    )
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
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The SVG's title (what was profiled) and subtitle (how).
pub fn svg_titles(m: &crate::profile::Metadata, samples: u64) -> (String, String) {
    let title = m.command.join(" ");
    let mut subtitle = format!(
        "{} samples at {} Hz ({}) over {:.2} s",
        samples,
        m.frequency,
        m.event,
        m.duration.as_secs_f64()
    );
    if m.lost > 0 {
        subtitle.push_str(&format!(", {} LOST", m.lost));
    }
    if m.throttled > 0 {
        subtitle.push_str(&format!(", throttled {} times", m.throttled));
    }
    (title, subtitle)
}

fn write_outputs(stacks: &StackProfile, opts: &RecordOptions) -> Result<Folded, OutputError> {
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
    for path in &opts.outputs {
        output::write_output(path, &r)?;
        if let Some((uid, gid)) = opts.run_as {
            // Files in the user's directories belong to the user, not to root.
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }
    Ok(folded)
}

fn summarize(profile: &Profile, outputs: &[PathBuf], kernel: bool) -> String {
    let m = &profile.meta;
    let files: Vec<String> = outputs.iter().map(|p| p.display().to_string()).collect();
    let mut s = format!(
        "ember: {} samples ({} lost), {} processes, {} threads, {:.2} s at {} Hz ({}{}); wrote {}",
        profile.total_samples(),
        m.lost,
        m.processes.len(),
        m.threads.len(),
        m.duration.as_secs_f64(),
        m.frequency,
        m.event,
        if kernel { "" } else { ", user space only" },
        files.join(", ")
    );
    if m.throttled > 0 {
        s.push_str(&format!(
            "\nember: the kernel throttled sampling {} times; lower -F",
            m.throttled
        ));
    }
    if m.lost > 0 && !m.event.starts_with("ptrace") {
        s.push_str(
            "\nember: samples were lost: the ring buffers filled faster than ember read them; \
             raise --buffer-size (as root, or with a larger kernel.perf_event_mlock_kb), or \
             lower -F or --stack-size",
        );
    }
    for w in &m.warnings {
        s.push_str(&format!("\nember: warning: {w}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::encode;
    use crate::sampler::UserRegs;

    fn sample(pid: u32, tid: u32, time: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let stack = [0u8; 64];
        encode::sample(
            &mut out,
            &encode::Sample {
                pid,
                tid,
                time,
                cpu: 0,
                regs: UserRegs {
                    ip: 0x401000,
                    sp: 0x7ff0_0000,
                    bp: 0,
                },
                stack: &stack,
                off_cpu: None,
            },
        );
        out
    }

    /// The records that would have named a process and its threads (FORK, COMM, MMAP) were
    /// lost: its samples still count, under the process they belong to, named by its PID.
    #[test]
    fn samples_of_processes_whose_records_were_lost_land_under_their_pid() {
        let mut c = Collector::new(encode::LAYOUT, CallGraph::Dwarf);
        let mut lost = Vec::new();
        encode::lost(&mut lost, 42, 42, 7, 1);
        c.handle(&lost);
        c.handle(&sample(42, 43, 2));
        c.handle(&sample(42, 44, 3));
        c.handle(&sample(42, 43, 4));
        assert_eq!(c.profile.meta.lost, 7);
        assert_eq!(c.profile.total_samples(), 3);
        let stacks = c.profile.stacks();
        assert!(stacks.iter().all(|&(pid, _, _, _)| pid == 42));
        assert_eq!(c.procs.get(42).map(|p| p.name.as_str()), Some("pid-42"));
        assert_eq!(c.procs.thread(44).map(|t| t.pid), Some(42));
    }

    /// Garbage instead of a record is counted and skipped, never a crash.
    #[test]
    fn truncated_records_are_counted_not_fatal() {
        let mut c = Collector::new(encode::LAYOUT, CallGraph::Dwarf);
        let s = sample(1, 1, 1);
        for cut in [8, 16, s.len() / 2] {
            c.handle(&s[..cut]);
        }
        assert_eq!(c.profile.total_samples(), 0);
        assert!(c.parse_errors >= 2, "{}", c.parse_errors);
    }
}
