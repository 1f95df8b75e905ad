//! Command-line arguments, turned into plain option structs for the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::output::Grouping;
use crate::record::{RecordOptions, DEFAULT_FREQUENCY, DEFAULT_STACK_SIZE};
use crate::sampler::perf::KernelFrames;
use crate::sampler::CallGraph;

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

#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// Samples per second per thread
    #[arg(short = 'F', long = "freq", value_name = "HZ", default_value_t = DEFAULT_FREQUENCY)]
    pub frequency: u64,

    /// Output file; the extension picks the format (.svg, .folded, .collapsed). Repeatable.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,

    /// How to collect call stacks
    #[arg(long, value_enum, default_value_t = CallGraphArg::Auto)]
    pub call_graph: CallGraphArg,

    /// Bytes of user stack copied per sample for DWARF unwinding (max 65016)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_STACK_SIZE)]
    pub stack_size: u32,

    /// Root each stack at its process: `comm-PID`
    #[arg(long, conflicts_with = "per_thread")]
    pub per_process: bool,

    /// Root each stack at its thread: `comm-PID/TID`
    #[arg(long)]
    pub per_thread: bool,

    /// Fold inlined functions into their caller instead of showing them as frames
    #[arg(long)]
    pub no_inline: bool,

    /// Add the source line to each frame: `function (file.c:42)`
    #[arg(long)]
    pub lines: bool,

    /// Also look for separate debug files here (build-id and debuglink layouts). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,

    /// Leave kernel frames out (they are included when the kernel allows it)
    #[arg(long, conflicts_with = "kernel")]
    pub user_only: bool,

    /// Require kernel frames: fail instead of recording user space only when refused
    #[arg(long)]
    pub kernel: bool,

    /// Print more at the end: unique stacks and frames, unwinding, time per phase
    #[arg(short, long)]
    pub verbose: bool,

    /// Title of the flamegraph (default: the command line)
    #[arg(long)]
    pub title: Option<String>,

    /// Attach to running processes instead of launching one (repeatable, or `-p 12,34`)
    #[arg(short = 'p', long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,

    /// Stop sampling after SECS seconds (a launched command runs on; ember still exits with
    /// its status)
    #[arg(short = 'd', long = "duration", value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<std::time::Duration>,

    /// The command to run, after `--`
    #[arg(
        last = true,
        required_unless_present = "pids",
        conflicts_with = "pids",
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

fn parse_secs(s: &str) -> Result<std::time::Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s:?}: the duration must be more than 0 seconds"));
    }
    Ok(std::time::Duration::from_secs_f64(v))
}

impl RecordArgs {
    pub fn into_options(self) -> RecordOptions {
        RecordOptions {
            command: self.command,
            pids: self.pids,
            duration: self.duration,
            frequency: self.frequency,
            call_graph: match self.call_graph {
                CallGraphArg::Auto => CallGraph::Auto,
                CallGraphArg::Dwarf => CallGraph::Dwarf,
                CallGraphArg::Fp => CallGraph::Fp,
            },
            stack_size: self.stack_size,
            outputs: if self.outputs.is_empty() {
                vec![PathBuf::from("flamegraph.svg")]
            } else {
                self.outputs
            },
            grouping: if self.per_thread {
                Grouping::PerThread
            } else if self.per_process {
                Grouping::PerProcess
            } else {
                Grouping::ByName
            },
            kernel: if self.user_only {
                KernelFrames::Exclude
            } else if self.kernel {
                KernelFrames::Require
            } else {
                KernelFrames::Auto
            },
            inline: !self.no_inline,
            lines: self.lines,
            verbose: self.verbose,
            debug_dirs: self.debug_dir,
            title: self.title,
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
        let Command::Record(r) = cli.command;
        let o = r.into_options();
        assert_eq!(o.frequency, 99);
        assert_eq!(o.outputs.len(), 2);
        assert_eq!(o.command, vec!["ls", "-l"]);
        assert!(Cli::try_parse_from(["ember", "record"]).is_err());
        let cli = Cli::try_parse_from(["ember", "record", "-p", "12,34", "-p", "5", "-d", "1.5"])
            .unwrap();
        let Command::Record(r) = cli.command;
        let o = r.into_options();
        assert_eq!(o.pids, vec![12, 34, 5]);
        assert_eq!(o.duration, Some(std::time::Duration::from_millis(1500)));
        assert!(Cli::try_parse_from(["ember", "record", "-p", "1", "--", "ls"]).is_err());
        assert!(Cli::try_parse_from(["ember", "record", "-d", "0", "--", "ls"]).is_err());
    }
}
