//! Command-line arguments, turned into plain option structs for the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::model::CallGraph;
use crate::output::report::SortBy;
use crate::output::{FoldOptions, Grouping, SvgOptions};
use crate::record::{
    DebugHooks, Listeners, NamingOptions, OutputOptions, ProcessFilter, RecordOptions,
    SamplingOptions, TargetOptions, DEFAULT_FREQUENCY, DEFAULT_STACK_SIZE,
};
use crate::sampler::bpf::{ForcedRefusal, WalkHooks};
use crate::sampler::perf::{KernelFrames, KernelWalk};
use crate::sampler::Backend;

#[derive(Parser, Debug)]
#[command(
    name = "ember",
    version,
    about = "A sampling CPU profiler for Linux that writes flamegraphs",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command and profile it and every thread and process it starts.
    ///
    /// Exits with the command's own exit status (128+N if a signal N killed it).
    Record(RecordArgs),
    /// Draw a flamegraph (or any other output) from a saved profile: folded stacks or pprof.
    Flamegraph(FlamegraphArgs),
    /// Compare two saved profiles: the functions whose share changed most (a table), a
    /// differential flamegraph (red where AFTER grew, blue where it shrank), and with
    /// --fail-over a gate for CI. Two tests.json rankings are compared test by test.
    Diff(DiffArgs),
    /// Print the hottest functions of a saved profile, with self and total shares.
    Report(ReportArgs),
    /// A live view of where a running program spends its time: the hottest functions,
    /// refreshed every second (keys: q quit, space pause, s sort, / filter, t thread,
    /// w wall-clock, c recent, Enter callers and callees, o write files).
    ///
    /// Without a terminal (stdout piped) the table is printed every interval; --once prints
    /// one table when sampling ends (-d, or the target's end).
    Top(TopArgs),
    /// Serve CPU profiles over HTTP as Go programs do (`GET /debug/pprof/profile?seconds=N`,
    /// a gzip'd pprof profile of the next N seconds), for `go tool pprof`, Parca and
    /// Grafana Alloy's `pyroscope.scrape`: of a command, running processes or, with -a, the
    /// whole machine. Runs until the command ends, -d, or Ctrl-C.
    Serve(ServeArgs),
    /// Print a shell's completions for ember, e.g.
    /// `ember completions bash > ~/.local/share/bash-completion/completions/ember`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages for ember and each of its commands (ember.1, ember-record.1, ...).
    Man {
        /// The directory to write them in, e.g. ~/.local/share/man/man1.
        #[arg(short = 'o', long = "output", value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

/// Write the completions of `shell` for ember's whole command line.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "ember", out);
}

/// Write a man page for ember and one for each command into `dir` (made if missing); the
/// paths written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let pages = std::iter::once(cmd.clone()).chain(cmd.get_subcommands().cloned());
    for page in pages.filter(|c| !c.is_hide_set()) {
        written.push(clap_mangen::Man::new(page).generate_to(dir)?);
    }
    Ok(written)
}

/// How the flamegraph SVG looks (shared by record, flamegraph and diff).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SvgArgs {
    /// Title of the flamegraph (default: the command line)
    #[arg(long)]
    pub title: Option<String>,
    /// Callers above, callees below: an icicle graph
    #[arg(long, conflicts_with = "reverse")]
    pub icicle: bool,
    /// Reverse the stacks: the hottest functions at the bottom, their callers above
    #[arg(long)]
    pub reverse: bool,
    /// Keep the stacks in input order instead of sorting them by name (a flame chart)
    #[arg(long)]
    pub flamechart: bool,
    /// Leave out frames narrower than PCT percent of the graph
    #[arg(long, value_name = "PCT")]
    pub min_width: Option<f64>,
    /// Colour palette: hot, mem, io, red, green, blue, aqua, yellow, purple, orange, rust,
    /// java, js, perl, python
    #[arg(long, value_name = "PALETTE")]
    pub colors: Option<String>,
}

impl SvgArgs {
    pub fn into_options(self) -> SvgOptions {
        SvgOptions {
            title: self.title.unwrap_or_default(),
            subtitle: None,
            icicle: self.icicle,
            reverse: self.reverse,
            flamechart: self.flamechart,
            min_width: self.min_width,
            colors: self.colors,
        }
    }
}

/// How stacks are rooted and labelled (shared by record and flamegraph).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FoldArgs {
    /// Root each stack at its process: `comm-PID`
    #[arg(long, conflicts_with = "per_thread")]
    pub per_process: bool,
    /// Root each stack at its thread: `comm-PID/TID`
    #[arg(long, conflicts_with = "thread_names")]
    pub per_thread: bool,
    /// Root each stack at its thread's name alone: threads of one name share a tower (one
    /// tower per test under Rust's test harness)
    #[arg(long, conflicts_with = "per_process")]
    pub thread_names: bool,
    /// Root each stack at the Python test it is in (pytest, unittest): one tower per test,
    /// and with -o tests.json the tests ranked by CPU time
    #[arg(long, conflicts_with_all = ["per_process", "per_thread", "thread_names"])]
    pub per_test: bool,
    /// Add the source line to each frame: `function (file.c:42)`
    #[arg(long)]
    pub lines: bool,
}

impl FoldArgs {
    pub fn options(&self) -> FoldOptions {
        FoldOptions {
            grouping: if self.per_test {
                Grouping::PerTest
            } else if self.per_thread {
                Grouping::PerThread
            } else if self.thread_names {
                Grouping::ThreadName
            } else if self.per_process {
                Grouping::PerProcess
            } else {
                Grouping::ByName
            },
            lines: self.lines,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct FlamegraphArgs {
    /// A saved profile: folded stacks, pprof or a .fxprof.json timeline (`-` reads standard
    /// input)
    pub input: PathBuf,
    /// Output file(s); the extension picks the format. Default: flamegraph.svg
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,
    #[command(flatten)]
    pub fold: FoldArgs,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub svg: SvgArgs,
    /// Open the SVG in a browser when it is written
    #[arg(long)]
    pub open: bool,
}

/// `--from SECS --to SECS`: a time range of a recording that kept time.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RangeArgs {
    /// Only samples from SECS seconds after the recording's start (a .fxprof.json input)
    #[arg(long, value_name = "SECS", value_parser = parse_offset)]
    pub from: Option<f64>,
    /// Only samples until SECS seconds after the recording's start (a .fxprof.json input)
    #[arg(long, value_name = "SECS", value_parser = parse_offset)]
    pub to: Option<f64>,
}

impl RangeArgs {
    pub fn range(&self) -> crate::load::TimeRange {
        crate::load::TimeRange {
            from: self.from,
            to: self.to,
        }
    }
}

fn parse_offset(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .strip_suffix('s')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v < 0.0 || !v.is_finite() {
        return Err(format!("{s:?}: a time from the start is 0 or more seconds"));
    }
    Ok(v)
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The profile before the change (folded or pprof; or a tests.json ranking)
    pub before: PathBuf,
    /// The profile after the change (folded or pprof; or a tests.json ranking)
    pub after: PathBuf,
    /// Output: the differential flamegraph (.svg) and/or the comparison as JSON (.json).
    /// Repeatable; default diff.svg
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,
    /// Fail (exit code 3) when a function's total share grew by more than PCT percentage
    /// points of all samples, and by more than sampling noise (3.5 standard errors)
    #[arg(long, value_name = "PCT")]
    pub fail_over: Option<f64>,
    /// With --fail-over: leave alone functions with fewer samples than N in both profiles
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub min_samples: u64,
    /// Rows of the table: the N largest changes of a function's total share, either sign
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Scale BEFORE to AFTER's total first, so a longer run does not paint everything red
    #[arg(long)]
    pub normalize: bool,
    #[command(flatten)]
    pub fold: FoldArgs,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub svg: SvgArgs,
    /// Open the SVG in a browser when it is written
    #[arg(long)]
    pub open: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SortArg {
    /// Time in the function itself
    #[value(name = "self")]
    SelfTime,
    /// Time in the function and everything it called
    Total,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A saved profile: folded stacks, pprof or a .fxprof.json timeline (`-` reads standard
    /// input)
    pub input: PathBuf,
    /// How many functions to show
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Order by self or total time
    #[arg(long, value_enum, default_value_t = SortArg::SelfTime)]
    pub by: SortArg,
    #[command(flatten)]
    pub range: RangeArgs,
}

impl SortArg {
    pub fn into_sort(self) -> SortBy {
        match self {
            SortArg::SelfTime => SortBy::SelfTime,
            SortArg::Total => SortBy::Total,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CallGraphArg {
    /// DWARF unwinding, plus the kernel's frame-pointer chain where the stack copy ran out
    Auto,
    /// DWARF unwinding of stack copies only
    Dwarf,
    /// Frame pointers only (cheapest; wrong for code built without them)
    Fp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UnwindArg {
    /// In the kernel where it allows ember's BPF program (root, or CAP_BPF and CAP_PERFMON),
    /// else in user space (said in -v)
    Auto,
    /// In the kernel at each sample, from tables built from each file's .eh_frame: no stack
    /// copies, no stops (where the kernel refuses, a warning says so)
    Kernel,
    /// In user space, from a copy of the stack taken at each sample
    User,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendArg {
    /// perf events, a process whose stacks outgrow their copies taken over by ptrace (whole
    /// stacks); ptrace where perf events are refused (containers, perf_event_paranoid 3)
    Auto,
    /// perf events only (lowest overhead, kernel frames)
    Perf,
    /// ptrace: interrupts each thread to sample it (works without perf events)
    Ptrace,
}

/// How to sample and name frames (shared by record and top).
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Samples per second per thread
    #[arg(short = 'F', long = "freq", value_name = "HZ", default_value_t = DEFAULT_FREQUENCY)]
    pub frequency: u64,

    /// Where samples come from
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// Where user stacks are walked on perf events
    #[arg(long, value_enum, default_value_t = UnwindArg::Auto)]
    pub unwind: UnwindArg,

    /// Wall-clock profile: sample waiting threads too; their stacks end in a frame that says
    /// what they wait in (`[off-cpu] futex`, `[off-cpu] read`, ...)
    #[arg(long)]
    pub off_cpu: bool,

    /// How to collect call stacks
    #[arg(long, value_enum, default_value_t = CallGraphArg::Auto)]
    pub call_graph: CallGraphArg,

    /// Fold inlined functions into their caller instead of showing them as frames
    #[arg(long)]
    pub no_inline: bool,

    /// Also look for separate debug files here (build-id and debuglink layouts). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,

    /// Do not fetch missing debug info from the servers in DEBUGINFOD_URLS
    #[arg(long)]
    pub no_debuginfod: bool,

    /// Leave kernel frames out (they are included when the kernel allows it)
    #[arg(long, conflicts_with = "kernel")]
    pub user_only: bool,

    /// Require kernel frames: fail instead of recording user space only when refused
    #[arg(long)]
    pub kernel: bool,

    /// For tests of the ptrace backend: time its stops by ticks even where each thread's CPU
    /// clock could time them
    #[arg(long, hide = true)]
    pub debug_ptrace_ticks: bool,

    /// For measurements of the ptrace backend: copy every stack whole, even where its outer
    /// frames are as the thread's last unwind read them
    #[arg(long, hide = true)]
    pub debug_whole_copies: bool,

    /// For tests of the unwind tables: walk every sample again with the rows built from
    /// .eh_frame alone, and say in -v how that compared with the DWARF unwinder
    #[arg(long, hide = true)]
    pub debug_check_tables: bool,

    /// For tests of the way back to the walk in user space: make the kernel refuse ember's
    /// BPF program (the verifier at load, or the perf event at attach)
    #[arg(long, hide = true, value_enum)]
    pub debug_bpf_refusal: Option<BpfRefusalArg>,

    /// For tests of the rows' room: the kernel holds this many rows for all files (8 bytes
    /// each) instead of 4 Mi
    #[arg(long, hide = true)]
    pub debug_bpf_rows: Option<u32>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BpfRefusalArg {
    Verifier,
    Attach,
}

/// What to profile: running processes, or a command to launch (shared by record and top).
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Attach to running processes instead of launching one (repeatable, or `-p 12,34`)
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Sample every process on the machine, those that start meanwhile too (root, or
    /// perf_event_paranoid ≤ 0); with a command, while it runs, else until -d or Ctrl-C
    #[arg(short = 'a', long = "all-cpus", conflicts_with = "pids")]
    pub system: bool,

    /// The command to run, after `--`
    #[arg(
        last = true,
        required_unless_present_any = ["pids", "system"],
        conflicts_with = "pids",
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Output file; the extension picks the format (.svg, .folded, .collapsed). Repeatable.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,

    /// Bytes of user stack copied per sample for DWARF unwinding (max 65016; perf events
    /// only: the ptrace backend copies whole stacks)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_SIZE)]
    pub stack_size: u32,

    /// Size of each CPU's perf ring buffer, e.g. 512K or 16M (rounded down to a power of two
    /// of pages). Default as root: a quarter of a second of samples, at most 16M (a second,
    /// at most 32M, where the reader's priority cannot be raised); what locked memory allows
    /// otherwise. Smaller buffers lose samples sooner (the loss is reported).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub buffer_size: Option<usize>,

    /// For tests of the loss path: sleep this long after each read of the buffers, so that
    /// they overflow
    #[arg(long, value_name = "MS", hide = true)]
    pub debug_reader_pause_ms: Option<u64>,

    #[command(flatten)]
    pub fold: FoldArgs,

    #[command(flatten)]
    pub svg: SvgArgs,

    /// Print the N hottest functions when done
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,

    /// Open the flamegraph in a browser when it is written
    #[arg(long)]
    pub open: bool,

    /// Under sudo, run the command as root too (by default it runs as the user who ran sudo,
    /// and the outputs are theirs)
    #[arg(long)]
    pub root: bool,

    /// Keep only processes whose name or executable path matches this regular expression
    /// (e.g. `--process 'deps/'` keeps test binaries and drops cargo and rustc)
    #[arg(long, value_name = "REGEX", value_parser = parse_regex)]
    pub process: Option<regex::Regex>,

    /// Print more at the end: unique stacks and frames, unwinding, time per phase
    #[arg(short, long)]
    pub verbose: bool,

    /// Stop sampling after SECS seconds (a launched command runs on; ember still exits with
    /// its status)
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<std::time::Duration>,

    /// Write every output each SECS seconds as a window of its own, numbered: the number
    /// goes where an -o name has the letter n in braces, else `-N` before its extension
    /// (web.svg → web-1.svg, web-2.svg, ...); each window starts empty, so memory stays flat
    /// over long recordings
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub every: Option<std::time::Duration>,

    /// Send each window's pprof to a Grafana Pyroscope server's /ingest (e.g.
    /// http://pyroscope:4040); windows are --every long, 10 s unless given
    #[arg(long, value_name = "URL")]
    pub push: Option<String>,

    /// The application name pushed, with labels: `NAME.cpu{key=value,...}` (default: the
    /// command's name, or `machine` with -a, with the host name as a label)
    #[arg(long, value_name = "NAME", requires = "push")]
    pub push_name: Option<String>,

    #[command(flatten)]
    pub target: TargetArgs,
}

/// `COMMAND.cpu{hostname=HOST}`: what Pyroscope lists a pushed recording as by default.
fn default_push_name(command: &[String], system: bool) -> String {
    let app = match command.first() {
        Some(c) if !system => c.rsplit('/').next().unwrap_or(c).to_string(),
        _ => "machine".to_string(),
    };
    let host = crate::linux::read_sysctl("kernel.hostname").unwrap_or_default();
    format!("{app}.cpu{{hostname={host}}}")
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Where to listen: loopback unless told otherwise; any other address needs --token
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:6060")]
    pub listen: std::net::SocketAddr,

    /// Clients must send `Authorization: Bearer TOKEN` (required off loopback)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "EMBER_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Stop serving after SECS seconds (a launched command is then ended)
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<std::time::Duration>,

    #[command(flatten)]
    pub target: TargetArgs,
}

impl ServeArgs {
    pub fn into_options(self) -> crate::serve::ServeOptions {
        let (listen, token) = (self.listen, self.token);
        let top = TopArgs {
            sampling: self.sampling,
            duration: self.duration,
            once: false,
            // One-second windows; the last minute kept (a request adds up the windows that
            // begin after it).
            interval: std::time::Duration::from_secs(1),
            recent: std::time::Duration::from_secs(60),
            rows: 0,
            outputs: Vec::new(),
            per_thread: false,
            target: self.target,
        };
        crate::serve::ServeOptions {
            session: top.into_options(),
            listen,
            token,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub sampling: SamplingArgs,

    /// Stop sampling after SECS seconds (a launched command is then ended)
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<std::time::Duration>,

    /// Print one table when sampling ends (after -d, or when the target ends) and exit
    #[arg(long)]
    pub once: bool,

    /// Refresh the view every SECS seconds
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "1")]
    pub interval: std::time::Duration,

    /// What "recent" (the `c` key) covers: the last SECS seconds
    #[arg(long, value_name = "SECS", value_parser = parse_secs, default_value = "10")]
    pub recent: std::time::Duration,

    /// Rows of the printed table (without a terminal, and with --once)
    #[arg(short = 'n', long, value_name = "N", default_value_t = 25)]
    pub rows: usize,

    /// What the `o` key writes, numbered (ember-top-1.svg, ...); the extension picks the
    /// format. Repeatable. Default: ember-top.svg and ember-top.folded
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,

    /// A row per thread and function
    #[arg(long)]
    pub per_thread: bool,

    #[command(flatten)]
    pub target: TargetArgs,
}

impl TopArgs {
    pub fn into_options(self) -> crate::top::TopOptions {
        let outputs = if self.outputs.is_empty() {
            vec![
                PathBuf::from("ember-top.svg"),
                PathBuf::from("ember-top.folded"),
            ]
        } else {
            self.outputs
        };
        let record = RecordArgs {
            sampling: self.sampling,
            outputs,
            stack_size: DEFAULT_STACK_SIZE,
            buffer_size: None,
            debug_reader_pause_ms: None,
            fold: FoldArgs {
                per_thread: self.per_thread,
                ..FoldArgs::default()
            },
            svg: SvgArgs::default(),
            top: None,
            open: false,
            root: false,
            process: None,
            verbose: false,
            target: self.target,
            duration: self.duration,
            every: None,
            push: None,
            push_name: None,
        };
        crate::top::TopOptions {
            record: record.into_options(),
            interval: self.interval,
            recent: self.recent,
            forget_after: None,
        }
    }
}

fn parse_regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| e.to_string())
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .strip_suffix('s')
        .unwrap_or(s)
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s:?}: the duration must be more than 0 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

/// A size in bytes with an optional K, M or G suffix (powers of 1024).
fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{s:?}: give bytes, or a number with K, M or G")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?}: give bytes, or a number with K, M or G"))?;
    match n.checked_shl(shift) {
        Some(v) if v > 0 && v >> shift == n => Ok(v),
        _ => Err(format!(
            "{s:?}: the size must be more than 0 and fit in memory"
        )),
    }
}

impl SamplingArgs {
    /// How samples are taken, at `stack_size` and `buffer_size`.
    fn options(&self, stack_size: u32, buffer_size: Option<usize>) -> SamplingOptions {
        SamplingOptions {
            frequency: self.frequency,
            backend: match self.backend {
                BackendArg::Auto => Backend::Auto,
                BackendArg::Perf => Backend::Perf,
                BackendArg::Ptrace => Backend::Ptrace,
            },
            call_graph: match self.call_graph {
                CallGraphArg::Auto => CallGraph::Auto,
                CallGraphArg::Dwarf => CallGraph::Dwarf,
                CallGraphArg::Fp => CallGraph::Fp,
            },
            stack_size,
            buffer_size,
            kernel: if self.user_only {
                KernelFrames::Exclude
            } else if self.kernel {
                KernelFrames::Require
            } else {
                KernelFrames::Auto
            },
            off_cpu: self.off_cpu,
            kernel_walk: match self.unwind {
                UnwindArg::Auto => KernelWalk::Auto,
                UnwindArg::Kernel => KernelWalk::On,
                UnwindArg::User => KernelWalk::Off,
            },
        }
    }

    fn naming(&self) -> NamingOptions {
        NamingOptions {
            inline: !self.no_inline,
            debug_dirs: self.debug_dir.clone(),
            debuginfod: !self.no_debuginfod,
        }
    }

    fn debug_hooks(&self, reader_pause_ms: Option<u64>) -> DebugHooks {
        DebugHooks {
            ptrace_ticks: self.debug_ptrace_ticks,
            whole_copies: self.debug_whole_copies,
            check_tables: self.debug_check_tables,
            walk_hooks: WalkHooks {
                refusal: self.debug_bpf_refusal.map(|r| match r {
                    BpfRefusalArg::Verifier => ForcedRefusal::Verifier,
                    BpfRefusalArg::Attach => ForcedRefusal::Attach,
                }),
                rows: self.debug_bpf_rows,
            },
            reader_pause: reader_pause_ms.map(std::time::Duration::from_millis),
        }
    }
}

impl RecordArgs {
    pub fn into_options(self) -> RecordOptions {
        let push = self.push.clone().map(|url| crate::record::PushTarget {
            url,
            name: self
                .push_name
                .clone()
                .unwrap_or_else(|| default_push_name(&self.target.command, self.target.system)),
        });
        let sampling = &self.sampling;
        RecordOptions {
            target: TargetOptions {
                command: self.target.command,
                pids: self.target.pids,
                system: self.target.system,
                duration: self.duration,
                run_as: if self.root {
                    None
                } else {
                    crate::target::sudo_invoker()
                },
                filter: ProcessFilter {
                    regex: self.process,
                    executables: Vec::new(),
                },
                thread_name_fixes: Default::default(),
            },
            sampling: sampling.options(self.stack_size, self.buffer_size),
            naming: sampling.naming(),
            output: OutputOptions {
                outputs: if self.outputs.is_empty() {
                    vec![PathBuf::from("flamegraph.svg")]
                } else {
                    self.outputs
                },
                fold: self.fold.options(),
                svg: self.svg.into_options(),
                // Pushed windows are 10 s unless told otherwise (Pyroscope's agents push so).
                every: self.every.or(self
                    .push
                    .as_ref()
                    .map(|_| std::time::Duration::from_secs(10))),
                top: self.top,
                // Python tests ranked at the end, as `cargo ember test` ranks Rust's.
                rank: self.fold.per_test.then(|| self.top.unwrap_or(10)),
                open: self.open,
                verbose: self.verbose,
                push,
            },
            listeners: Listeners::default(),
            debug: sampling.debug_hooks(self.debug_reader_pause_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_record() {
        let cli = Cli::try_parse_from([
            "ember", "record", "-F", "99", "-o", "a.svg", "-o", "b.folded", "--", "ls", "-l",
        ])
        .unwrap();
        let Command::Record(r) = cli.command else {
            panic!()
        };
        let o = r.into_options();
        assert_eq!(o.sampling.frequency, 99);
        assert_eq!(o.output.outputs.len(), 2);
        assert_eq!(o.target.command, vec!["ls", "-l"]);
        assert!(Cli::try_parse_from(["ember", "record"]).is_err());
        let cli = Cli::try_parse_from(["ember", "record", "-p", "12,34", "-p", "5", "-d", "1.5"])
            .unwrap();
        let Command::Record(r) = cli.command else {
            panic!()
        };
        let o = r.into_options();
        assert_eq!(o.target.pids, vec![12, 34, 5]);
        assert_eq!(
            o.target.duration,
            Some(std::time::Duration::from_millis(1500))
        );
        assert!(Cli::try_parse_from(["ember", "record", "-p", "1", "--", "ls"]).is_err());
        assert!(Cli::try_parse_from(["ember", "record", "-d", "0", "--", "ls"]).is_err());
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("K").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
