//! Samplers: where stack samples and process events come from.
//!
//! Every backend produces records in the perf ring-buffer format (see [`records`]), so the
//! rest of the pipeline reads one format whatever the source.

pub mod encode;
pub mod perf;
pub mod ptrace;
pub mod queue;
pub mod records;
pub mod relay;
pub mod takeover;

pub use queue::{RecordBatch, RecordQueue};
pub use records::SampleLayout;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock every backend stamps its records with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How far the thread that reads the buffers is raised above the target's priority.
pub const READER_PRIORITY_BOOST: i32 = 20;

/// Raise the calling thread's priority (nice value, a per-thread attribute on Linux) by
/// [`READER_PRIORITY_BOOST`] where allowed (root or `CAP_SYS_NICE`). A target with a thousand
/// runnable threads on a few cores otherwise starves the reader of CPU for hundreds of
/// milliseconds and the ring buffers overflow: at nice 0 the reader's fair share is 1/500 of
/// a core, at -10 about 2 %, at -20 about 15 % (weights 1024, 9548, 88761 against 500 threads
/// of 1024 per core) — and reading, unwinding and aggregating 2,000 samples a second needs a
/// few percent of a core (more in a debug build). Raising it only once the buffers are found
/// filling up comes too late (the starved reader does not get to look); raising it from the
/// start cost nothing measurable (perf backend, one busy thread, 999 Hz: x1.0225 without,
/// x1.0211 with, 6 alternating runs). Call it after the command was forked, so the
/// command keeps the user's priority, and [`reset_thread_priority`] once sampling is over.
/// Returns the new nice value, or `None` when refused.
pub fn raise_reader_priority() -> Option<i32> {
    // SAFETY: getpriority/setpriority have no memory-safety preconditions; errno is cleared
    // first because -1 is a valid nice value.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        if current == -1 && *libc::__errno_location() != 0 {
            return None;
        }
        let wanted = (current - READER_PRIORITY_BOOST).max(-20);
        if wanted >= current {
            return Some(current);
        }
        (libc::setpriority(libc::PRIO_PROCESS, 0, wanted) == 0).then_some(wanted)
    }
}

/// The time slice the reader asks for: the shortest the kernel takes (0.1 ms).
const READER_SLICE_NS: u64 = 100_000;

/// Ask the scheduler to run the calling thread soon after it wakes, by giving it a short time
/// slice (`sched_attr.sched_runtime` for `SCHED_OTHER`, Linux 6.12 and later, allowed without
/// privileges). EEVDF picks the eligible thread with the earliest virtual deadline, and a
/// thread's deadline is its slice away: with 0.1 ms instead of the default ~3 ms, the reader
/// woken by a filling ring buffer goes ahead of a thousand runnable threads of the target
/// (new threads even start with half a default slice), as long as it has not used more than
/// its fair share of the CPU. Keeps the current nice value. False where the kernel refuses.
pub fn request_short_slice() -> bool {
    // SAFETY: getpriority has no preconditions; errno is cleared first because -1 is valid.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, 0)
    };
    // SAFETY: sched_attr is plain data; zero is a valid value for every field.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    attr.sched_nice = nice;
    attr.sched_runtime = READER_SLICE_NS;
    // SAFETY: attr is a valid sched_attr of the size given; pid 0 is the calling thread.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        ) == 0
    }
}

/// The calling thread's nice value (`None` where the kernel does not say).
pub fn thread_nice() -> Option<i32> {
    // SAFETY: getpriority has no preconditions; errno is cleared first because -1 is valid.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        (nice != -1 || *libc::__errno_location() == 0).then_some(nice)
    }
}

/// Give the calling thread back nice value `nice` and the default time slice, once sampling
/// is over: symbolizing and writing need no priority, and at nice -20 they would crowd out
/// everything else on the machine (the profiled command, if it runs on, among them).
pub fn reset_thread_priority(nice: i32) {
    // SAFETY: sched_attr is plain data; zero is a valid value for every field.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    attr.sched_nice = nice;
    // SAFETY: attr is a valid sched_attr of the size given; pid 0 is the calling thread.
    let ok = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        ) == 0
    };
    if !ok {
        // Kernels without sched_setattr's slice: the nice value alone.
        // SAFETY: as in raise_reader_priority.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    }
}

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
}
