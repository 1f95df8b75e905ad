//! What `ember record` is asked to do, and how it can fail.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::model::CallGraph;
use crate::output::{FoldOptions, OutputError, SvgOptions};
use crate::sampler::perf::{KernelFrames, KernelWalk, PerfError};
use crate::sampler::ptrace::PtraceError;
use crate::sampler::Backend;
use crate::target::TargetError;

/// Default sampling frequency: 999 Hz gives millisecond resolution at low overhead, and
/// being just off 1 kHz keeps it out of lockstep with timers that tick at round rates.
pub const DEFAULT_FREQUENCY: u64 = 999;
/// Default user-stack copy per sample: enough for ~1000 typical frames (samply uses 32000).
pub const DEFAULT_STACK_SIZE: u32 = 32768;

/// What `ember record` (and `ember top`, `cargo ember`) is asked to do, grouped by what each
/// part is for.
#[derive(Clone, Debug, Default)]
pub struct RecordOptions {
    /// What to profile, for how long, and which of its processes to keep.
    pub target: TargetOptions,
    /// How samples are taken.
    pub sampling: SamplingOptions,
    /// Where names come from.
    pub naming: NamingOptions,
    /// What is written, and what is said at the end.
    pub output: OutputOptions,
    /// What the user hears while recording: the library prints nothing, the binary does.
    pub listeners: Listeners,
    /// Hooks for tests and measurements, not for users.
    pub debug: DebugHooks,
}

/// What to profile.
#[derive(Clone, Debug, Default)]
pub struct TargetOptions {
    /// The command to launch; ignored when `pids` is not empty.
    pub command: Vec<String>,
    /// Running processes to attach to.
    pub pids: Vec<u32>,
    /// Every process on the machine (`-a`), while `command` runs where there is one.
    pub system: bool,
    /// Stop sampling after this long (the launched command runs on).
    pub duration: Option<std::time::Duration>,
    /// Under `sudo`: run the command as this (uid, gid) and give the outputs to them.
    pub run_as: Option<(u32, u32)>,
    /// Which processes to keep.
    pub filter: ProcessFilter,
    /// Thread names the kernel cut to 15 bytes → their full names (from `--list` of test
    /// binaries).
    pub thread_name_fixes: HashMap<String, String>,
}

/// How samples are taken.
#[derive(Clone, Debug)]
pub struct SamplingOptions {
    pub frequency: u64,
    /// Where samples come from.
    pub backend: Backend,
    pub call_graph: CallGraph,
    /// Bytes of user stack perf events copy per sample.
    pub stack_size: u32,
    /// Bytes of each CPU's perf ring buffer; `None` picks by privileges.
    pub buffer_size: Option<usize>,
    pub kernel: KernelFrames,
    /// Wall-clock profile: waiting threads are sampled too, their stacks ending in
    /// `[off-cpu] <syscall>`.
    pub off_cpu: bool,
    /// Whether to walk user stacks in the kernel at sample time (`crate::sampler::bpf`).
    pub kernel_walk: KernelWalk,
}

/// Where names come from.
#[derive(Clone, Debug)]
pub struct NamingOptions {
    /// Show inlined functions as frames of their own.
    pub inline: bool,
    /// Extra directories searched for separate debug files.
    pub debug_dirs: Vec<PathBuf>,
    /// Fetch missing debug info from the servers in `DEBUGINFOD_URLS`.
    pub debuginfod: bool,
}

/// What is written, and what is said at the end.
#[derive(Clone, Debug)]
pub struct OutputOptions {
    /// The files to write; each one's extension picks its format.
    pub outputs: Vec<PathBuf>,
    /// How stacks are rooted, and whether frames carry source lines.
    pub fold: FoldOptions,
    /// How the SVG looks; an empty title means "the command".
    pub svg: SvgOptions,
    /// Write every output each this long, as a window of its own (`--every`).
    pub every: Option<std::time::Duration>,
    /// Print the N hottest functions at the end.
    pub top: Option<usize>,
    /// Print the N roots (tests, processes, threads) with the most CPU time at the end
    /// (`cargo ember test`/`bench`).
    pub rank: Option<usize>,
    /// Open the SVG in a browser when done.
    pub open: bool,
    /// Say more in the summary: unique stacks, unwinding, time per phase.
    pub verbose: bool,
    /// Send each window's pprof to a Pyroscope server (`--push`).
    pub push: Option<super::push::PushTarget>,
}

/// Told what the user should know while recording.
#[derive(Clone, Debug)]
pub struct Listeners {
    /// Told what the user should know (the `ember` binary puts it on stderr): a fallback to
    /// ptrace, that sampling of attached processes has begun, that ember waits for a command
    /// after `-d`.
    pub notify: fn(&str),
    /// Told a status line about once a second while recording, and "" at the end (set where
    /// stderr is a terminal: the caller redraws one line).
    pub status: Option<fn(&str)>,
    /// Told as a download of debug info starts (set where stderr is a terminal).
    pub progress: Option<fn(&str)>,
}

/// Hooks for tests and measurements.
#[derive(Clone, Debug, Default)]
pub struct DebugHooks {
    /// The ptrace backend times its stops by ticks even where the threads' CPU clocks could
    /// (tests of the tick clock).
    pub ptrace_ticks: bool,
    /// The ptrace backend copies every stack whole, even where the outer frames are as the
    /// last unwind of the thread read them (measurements of that reuse).
    pub whole_copies: bool,
    /// Walk every sample again with the unwind tables alone and compare
    /// ([`crate::unwind_table::check`]).
    pub check_tables: bool,
    /// Make the kernel refuse the walk in the kernel, or give it less room for rows.
    pub walk_hooks: crate::sampler::bpf::WalkHooks,
    /// Sleep this long after each read of the buffers (tests of the loss path).
    pub reader_pause: Option<std::time::Duration>,
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

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            frequency: DEFAULT_FREQUENCY,
            backend: Backend::Auto,
            call_graph: CallGraph::Auto,
            stack_size: DEFAULT_STACK_SIZE,
            buffer_size: None,
            kernel: KernelFrames::Auto,
            off_cpu: false,
            kernel_walk: KernelWalk::Auto,
        }
    }
}

impl Default for NamingOptions {
    fn default() -> Self {
        NamingOptions {
            inline: true,
            debug_dirs: Vec::new(),
            debuginfod: true,
        }
    }
}

impl Default for OutputOptions {
    fn default() -> Self {
        OutputOptions {
            outputs: vec![PathBuf::from("flamegraph.svg")],
            fold: FoldOptions::default(),
            svg: SvgOptions::default(),
            every: None,
            top: None,
            rank: None,
            open: false,
            verbose: false,
            push: None,
        }
    }
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            notify: |_| {},
            status: None,
            progress: None,
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
    #[error(
        "-a samples every CPU with perf events, which the kernel refused ({error}; \
         kernel.perf_event_paranoid = {paranoid}): it needs root, CAP_PERFMON or paranoid -1 \
         or 0; run it with sudo"
    )]
    SystemRefused {
        error: std::io::Error,
        paranoid: String,
    },
    #[error("-a samples with perf events: it cannot be used with --backend ptrace")]
    SystemNeedsPerf,
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
            | RecordError::KernelNeedsPerf
            | RecordError::SystemNeedsPerf => 2,
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
