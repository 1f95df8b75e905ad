//! What a recording says when it is done: a value the caller prints (`Display`), and the SVG's
//! title and subtitle.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::profile::Metadata;
use crate::unwind::UnwindStats;

/// The end-of-recording summary: one line of counts, then what went wrong, then (with `-v`)
/// how it went; the hottest functions first with `--top`.
#[derive(Clone, Debug)]
pub struct Summary {
    pub samples: u64,
    pub lost: u64,
    pub processes: usize,
    pub threads: usize,
    pub duration: Duration,
    pub frequency: u64,
    pub event: String,
    pub kernel_included: bool,
    pub outputs: Vec<PathBuf>,
    /// `--every`: how many windows were written (`outputs` are the last one's).
    pub windows: Option<u32>,
    pub throttled: u64,
    pub warnings: Vec<String>,
    /// `-v`: how sampling and the steps after it went.
    pub verbose: Option<Verbose>,
    /// `--top N`: the table of the hottest functions.
    pub top: Option<String>,
    /// The roots with the most CPU time (`cargo ember test`: the tests).
    pub ranking: Option<String>,
    /// `--push`: how sending the windows went.
    pub pushed: Option<super::PushStats>,
}

/// What `-v` adds to the summary.
#[derive(Clone, Debug)]
pub struct Verbose {
    /// The backend's own account (buffers, or ptrace's counters).
    pub backend: String,
    pub unique_stacks: usize,
    pub unique_frames: usize,
    pub unwind: UnwindStats,
    /// The reader's nice value, where it could be raised.
    pub reader_nice: Option<i32>,
    pub short_slice: bool,
    /// A process of its own session read the ring buffers.
    pub relayed: bool,
    /// What was asked of debuginfod servers, one line each.
    pub debuginfod: Vec<String>,
    pub symbolize: Duration,
    pub write: Duration,
}

impl Summary {
    /// The counts of a finished profile.
    pub fn of(meta: &Metadata, samples: u64, outputs: &[PathBuf], kernel: bool) -> Summary {
        Summary {
            samples,
            lost: meta.lost,
            processes: meta.processes.len(),
            threads: meta.threads.len(),
            duration: meta.duration,
            frequency: meta.frequency,
            event: meta.event.clone(),
            kernel_included: kernel,
            outputs: outputs.to_vec(),
            windows: None,
            throttled: meta.throttled,
            warnings: meta.warnings.clone(),
            verbose: None,
            top: None,
            ranking: None,
            pushed: None,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ranking) = &self.ranking {
            f.write_str(ranking)?;
        }
        if let Some(top) = &self.top {
            f.write_str(top)?;
        }
        let files: Vec<String> = self
            .outputs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let wrote = match self.windows {
            Some(n) if n > 1 => format!("{n} windows, the last: "),
            _ => String::new(),
        };
        write!(
            f,
            "ember: {} samples ({} lost), {}, {}, {:.2} s at {} Hz ({}{}); wrote {wrote}{}",
            self.samples,
            self.lost,
            plural(self.processes, "process", "processes"),
            plural(self.threads, "thread", "threads"),
            self.duration.as_secs_f64(),
            self.frequency,
            self.event,
            if self.kernel_included {
                ""
            } else {
                ", user space only"
            },
            files.join(", ")
        )?;
        if self.throttled > 0 {
            write!(
                f,
                "\nember: the kernel throttled sampling {} times; lower -F",
                self.throttled
            )?;
        }
        if self.lost > 0 && !self.event.starts_with("ptrace") {
            f.write_str(
                "\nember: samples were lost: the ring buffers filled faster than ember read \
                 them; raise --buffer-size (as root, or with a larger \
                 kernel.perf_event_mlock_kb), or lower -F or --stack-size",
            )?;
        }
        for w in &self.warnings {
            write!(f, "\nember: warning: {w}")?;
        }
        if let Some(p) = &self.pushed {
            write!(f, "\nember: pushed {} windows", p.sent)?;
            if p.failed + p.dropped > 0 {
                write!(
                    f,
                    "; warning: {} could not be sent (the server refused them or did not \
                     answer for a minute) and {} were dropped (the queue was full)",
                    p.failed, p.dropped
                )?;
            }
        }
        if let Some(v) = &self.verbose {
            write!(f, "\n{v}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Verbose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "ember: {}", self.backend)?;
        write!(
            f,
            "ember: {} unique stacks, {} unique frames; unwinding: {} samples, {} stack copies \
             ran out ({} completed from the frame-pointer chain)",
            self.unique_stacks,
            self.unique_frames,
            self.unwind.samples,
            self.unwind.truncated,
            self.unwind.spliced,
        )?;
        if self.unwind.reused > 0 {
            write!(
                f,
                "; {} copies ended below unchanged outer frames, {} of them needing a word \
                 that was not read again",
                self.unwind.reused, self.unwind.reuse_missed
            )?;
        }
        writeln!(f)?;
        for line in &self.debuginfod {
            writeln!(f, "ember: debuginfod: {line}")?;
        }
        write!(
            f,
            "ember: reader priority: {}{}; after sampling: symbolize {:.3} s, write {:.3} s",
            match self.reader_nice {
                Some(n) => format!("nice {n}"),
                None => "not raised (needs root or CAP_SYS_NICE)".to_string(),
            },
            match (self.short_slice, self.relayed) {
                (true, true) => ", 0.1 ms time slice, in a process of its own session",
                (true, false) => ", 0.1 ms time slice",
                (false, true) => ", in a process of its own session",
                (false, false) => "",
            },
            self.symbolize.as_secs_f64(),
            self.write.as_secs_f64(),
        )
    }
}

/// The SVG's title (what was profiled) and subtitle (how).
pub fn svg_titles(m: &Metadata, samples: u64) -> (String, String) {
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
/// `1 thread`, `2 threads`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
