//! Samplers: where stack samples and process events come from.
//!
//! Every backend produces records in the perf ring-buffer format (see [`records`]), so the
//! rest of the pipeline reads one format whatever the source.

pub mod bpf;
pub mod encode;
pub mod perf;
pub mod ptrace;
pub mod queue;
pub mod records;
pub mod relay;
pub mod takeover;

pub use queue::{RecordBatch, RecordQueue};
pub use records::SampleLayout;

/// Where samples come from (`--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// perf events, and ptrace where perf events are refused.
    #[default]
    Auto,
    Perf,
    Ptrace,
}

/// Which event ended up being used, for the summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedEvent {
    pub name: &'static str,
    pub kernel_included: bool,
}

/// What a sampler knows of the launched command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandState {
    /// The sampler does not wait for processes: ask the command itself.
    NotReaped,
    /// The sampler reaps the command (a tracer must) and it is still running.
    Running,
    /// The sampler reaped the command, which ended with this exit code (128+N for signal N).
    Exited(i32),
}

/// A source of records in the perf ring-buffer format: perf events or ptrace. `record` drives
/// either through this and never asks which one it has.
pub trait Sampler {
    /// How the records it produces are laid out.
    fn layout(&self) -> SampleLayout;

    /// Copy the records produced so far into `batch`; returns how many.
    fn drain(&mut self, batch: &mut RecordBatch) -> usize;

    /// Let time pass (up to `timeout_ms`) while sampling; returns early when there is work.
    fn wait(&mut self, timeout_ms: i32);

    /// Return from `wait` early also when `fd` is readable (someone has work for the reader).
    /// Samplers that wait for something else than file descriptors ignore it.
    fn wake_on(&mut self, _fd: std::os::fd::RawFd) {}

    /// Stop sampling: disable the events, or detach from every tracee. What was produced
    /// stays readable with `drain`.
    fn disable(&mut self);

    /// Start sampling where it was opened stopped (`-a`, so that nothing is taken before
    /// ember has read what runs). Samplers that start by themselves ignore it.
    fn enable(&mut self) {}

    /// What samples stand for (the event), for the summary and the SVG subtitle.
    fn event(&self) -> OpenedEvent;

    /// How sampling was set up and went, for `-v`.
    fn detail(&self) -> String;

    /// Things the user should know about how sampling went.
    fn notes(&self) -> &[String];

    /// The launched command as the sampler sees it: a tracer reaps it itself.
    fn command_state(&self) -> CommandState {
        CommandState::NotReaped
    }

    /// Whether records wait in kernel ring buffers that overflow when not read in time (the
    /// reader then prepares memory to copy them to before sampling starts).
    fn has_ring_buffers(&self) -> bool {
        false
    }

    /// Whether a process of its own reads the kernel's buffers ([`relay`]).
    fn relayed(&self) -> bool {
        false
    }

    /// Whether some samples are taken as threads switch out and stand for the time until they
    /// switch in (wall-clock profiles on perf events): the collector must count those as waits.
    fn samples_switches(&self) -> bool {
        false
    }

    /// The maps of the stack walk in the kernel, where it runs, for the collector to fill
    /// (once).
    fn take_bpf_maps(&mut self) -> Option<bpf::BpfMaps> {
        None
    }
}
