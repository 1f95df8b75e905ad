//! The ptrace backend: whole stacks at any depth (each sample stops the thread and copies all
//! of its stack), wall-clock profiles, and sampling where perf events are refused (containers,
//! hardened kernels).
//!
//! Every thread is seized once (`PTRACE_SEIZE`, which does not stop it) with options that
//! make the kernel attach new threads and children and report `exec`. In a CPU profile, where
//! perf events are allowed, each thread's own CPU clock stops it at the end of every period
//! ([`timer`]): it is sampled there, exactly where perf events would sample it. Elsewhere,
//! and for wall-clock profiles, ticks choose whom to stop: on each tick, jittered
//! around 1/F so periodic work cannot fall in step with it, the threads to sample are chosen
//! by their state *before* they are touched (`/proc/PID/task/TID/stat`: `R` = on CPU; with
//! `--off-cpu` the waiting ones too), interrupted (`PTRACE_INTERRUPT`), their registers read
//! (`PTRACE_GETREGS`) and their whole stack copied (`process_vm_readv`, to the end of the
//! mapping the stack pointer is in; what one sample record cannot hold follows in stack-part
//! records), and resumed at once.
//! What is seen is written as perf records ([`super::encode`]) so the same parser, unwinder
//! and profile serve both backends.
//!
//! Stopping detaches every tracee and leaves it running. If ember is killed with SIGKILL the
//! kernel detaches them (tracees of a dead tracer are detached and resumed).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::encode::{self, Mmap, Sample};
use super::{CommandState, OpenedEvent, RecordBatch, SampleLayout, Sampler};
use crate::linux::sched::monotonic_ns as now_ns;
use crate::linux::{self, parse_maps_line};
use crate::model::{UserRegs, WaitReason};

mod calls;
mod clocks;
mod python;
mod sample;
mod schedule;
mod stops;
mod timer;
mod tracee;

use crate::arch::RESTART_SYSCALL;
use crate::model::stack_reads::KnownStacks;
use calls::{event_msg, read_pieces, read_stack, seize, SavedSigchld, MAX_WHOLE_STACK};
use tracee::{
    status_number, thread_state, thread_state_and_cpu, LastSample, Seen, Tracee, WaitSite,
};

#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    #[error(
        "ptrace refused for process {pid} ({source}). ember needs to be the process's parent, \
         its owner with kernel.yama.ptrace_scope 0, or root (CAP_SYS_PTRACE); in a container \
         run it with --cap-add=SYS_PTRACE"
    )]
    Refused { pid: u32, source: io::Error },
    #[error(
        "process {pid} is already traced by process {tracer} (a debugger or strace?); a thread \
         can have one tracer only: detach that one first, or use --backend perf"
    )]
    AlreadyTraced { pid: u32, tracer: u32 },
    #[error("could not trace process {pid}: {source}")]
    Seize { pid: u32, source: io::Error },
}

/// What to sample and how.
#[derive(Clone, Debug)]
pub struct PtraceConfig {
    pub frequency: u64,
    /// Sample waiting threads too (wall-clock profile).
    pub off_cpu: bool,
    /// Time the stops of a CPU profile by each thread's own CPU clock where perf events allow
    /// it (see [`timer`]); false: by ticks, as where they do not.
    pub cpu_timers: bool,
    /// Record the kernel's frames of each stop where its thread's clock counts kernel time
    /// (privileges; see [`timer`]).
    pub kernel_frames: bool,
    /// Where the collector leaves what it read of each deep stack, so that a stop copies
    /// only the part of the stack that changed ([`super::stack_reads`]).
    pub known_stacks: KnownStacks,
}

#[derive(Clone, Default)]
struct TracedProcess {
    /// Executable mappings already written: (start, end, offset, inode).
    written: HashSet<(u64, u64, u64, u64)>,
    /// Their address ranges, to notice code that appeared since (dlopen, JIT).
    ranges: Vec<(u64, u64)>,
    /// Every mapping's address range as of the last read, in order: where a thread's stack
    /// ends (its copy goes to the end of the mapping its stack pointer is in).
    areas: Vec<(u64, u64)>,
    /// When `/proc/PID/maps` was last read (monotonic ns).
    scanned: u64,
    /// How long until it is read again: short after a change (a program starting loads its
    /// libraries), doubling up to [`RESCAN_NS`] while nothing changes.
    gap: u64,
    /// The CPython interpreter the process runs, where ember can read its frames.
    python: Option<crate::python::Interpreter>,
}

/// Counters for the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct PtraceStats {
    pub ticks: u64,
    pub samples: u64,
    /// Threads stopped to be sampled.
    pub interrupts: u64,
    /// Waiting threads sampled again without a stop (still in the same wait).
    pub unstopped: u64,
    /// Interrupts whose stop did not come in time.
    pub missed: u64,
    /// Stops not sampled because the thread was not running when interrupted: waiting for a
    /// CPU (it stopped where it had been preempted, a biased place: see
    /// `Tracee::delay_at_interrupt`) or asleep, or just woken, in a syscall that waits
    /// (`arch::stopped_after_a_wait`). Its CPU time adds to the credit of the thread's
    /// sampled stops (`Tracee::samples_for_stop`).
    pub deferred: u64,
    /// The sum of the squares of the samples each stack was written with: a stack written
    /// `n` times at once is one observation, not `n`, and
    /// samples² / this is how many independent ones the profile holds.
    pub samples_squared: u64,
    /// Samples due for CPU time used by threads after their last stop, found when they
    /// exited: time that could not be placed on a stack.
    pub unsampled: u64,
    /// Stack copies that ended below outer frames as the thread's last unwind read them
    /// (the words read there stand for the rest).
    pub reused: u64,
    /// Bytes of stack copied, and what copying each stack whole would have taken.
    pub stack_bytes: u64,
    pub whole_stack_bytes: u64,
    /// Stops caused by the threads' own CPU clocks (see [`timer`]).
    pub timer_stops: u64,
    /// Threads whose CPU clock signals never came (they block it): sampled by ticks instead.
    pub timers_blocked: u64,
}

/// Whether the threads' own CPU clocks time the stops (see [`timer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clocks {
    /// Not asked for (wall clock, or ticks wanted), or refused by the kernel.
    Off,
    /// Asked for; whether the kernel allows them (and with kernel time) is known at the first.
    Untried,
    /// Working; `kernel`: kernel time is counted and signalled too.
    On { kernel: bool },
}

pub struct PtraceSampler {
    config: PtraceConfig,
    tracees: HashMap<u32, Tracee>,
    procs: HashMap<u32, TracedProcess>,
    /// The launched command, whose exit ends the recording.
    root: Option<u32>,
    root_exit: Option<i32>,
    /// Records written since the last drain: bytes, and (time, start, len) of each.
    out: Vec<u8>,
    entries: Vec<(u64, usize, usize)>,
    stack: Vec<u8>,
    /// Words of the stack above `stack`'s copy (see [`PtraceSampler::read_whole_stack`]).
    words: Vec<(u64, u64)>,
    /// The words a stop read again, back to back.
    gathered: Vec<u8>,
    interval_ns: u64,
    next_tick: u64,
    rng: u64,
    pending: usize,
    /// SIGCHLD as it was before sampling, while ember waits for it itself.
    sigchld: Option<SavedSigchld>,
    detached: bool,
    clocks: Clocks,
    /// Every thread has a CPU clock of its own: ticks only look after them.
    all_timed: bool,
    /// When the clocks were last looked after (monotonic ns).
    looked_after: u64,
    /// Sampling processes that perf events follow too ([`super::takeover`]): their threads,
    /// names and mappings are told by perf events; only samples are written here, and the
    /// processes they start are left to perf events.
    takeover: bool,
    pub stats: PtraceStats,
    pub notes: Vec<String>,
    /// The Python stack of the thread stopped last (see [`python`]).
    python: crate::python::Walk,
    /// The kernel callchains of the stop being sampled ([`timer::KernelChains`]).
    kernel_chains: timer::KernelChains,
    /// The id the next Python code object seen gets.
    python_ids: u32,
    /// Files that may be interpreters, looked at once each (forked workers map the same
    /// one): by path and inode, what [`crate::python::find`] made of them.
    python_files: HashMap<(String, u64), Option<crate::python::InterpreterFile>>,
}

/// How long to wait for the stop an interrupt causes before giving up on it.
const STOP_TIMEOUT_NS: u64 = 1_000_000_000;
/// How often the mappings of a sampled process are read again at most (after a change the
/// gap starts at the minimum and doubles; code outside every known mapping gets the minimum).
const RESCAN_NS: u64 = 100_000_000;
const MIN_RESCAN_NS: u64 = 1_000_000;
/// How often each thread's stop rate is worked out again.
const WINDOW_NS: u64 = 50_000_000;
/// How often the threads' CPU clocks are looked after: signals that do not come.
const LOOK_AFTER_CLOCKS_NS: u64 = 100_000_000;
/// A clock that counted this many periods since its thread's last stop is looked at closer.
const OVERDUE_PERIODS: u64 = 20;

impl PtraceSampler {
    fn new(config: &PtraceConfig) -> PtraceSampler {
        let freq = config.frequency.max(1);
        let mut s = PtraceSampler {
            config: config.clone(),
            tracees: HashMap::new(),
            procs: HashMap::new(),
            root: None,
            root_exit: None,
            out: Vec::new(),
            entries: Vec::new(),
            stack: Vec::new(),
            words: Vec::new(),
            gathered: Vec::new(),
            interval_ns: 1_000_000_000 / freq,
            next_tick: 0,
            rng: now_ns() | 1,
            pending: 0,
            sigchld: None,
            detached: false,
            clocks: if config.cpu_timers && !config.off_cpu {
                Clocks::Untried
            } else {
                Clocks::Off
            },
            all_timed: false,
            looked_after: 0,
            takeover: false,
            stats: PtraceStats::default(),
            notes: Vec::new(),
            python: Default::default(),
            kernel_chains: Default::default(),
            python_ids: 0,
            python_files: HashMap::new(),
        };
        s.take_sigchld();
        // Wake up on time: the default 50 µs timer slack is 5 % of a 1 kHz period.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        s.next_tick = now_ns() + s.jittered_interval();
        s
    }

    fn take_sigchld(&mut self) {
        self.sigchld = Some(calls::take_sigchld());
    }

    fn give_back_sigchld(&mut self) {
        if let Some(saved) = self.sigchld.take() {
            calls::give_back_sigchld(&saved);
        }
    }

    /// Trace a launched command that has not called `exec` yet; sampling starts at its exec.
    pub fn for_launch(pid: u32, config: &PtraceConfig) -> Result<PtraceSampler, PtraceError> {
        seize(pid, true).map_err(|e| refusal(pid, e))?;
        let mut s = PtraceSampler::new(config);
        s.root = Some(pid);
        s.tracees.insert(pid, Tracee::new(pid, pid, true));
        s.procs.insert(pid, TracedProcess::default());
        Ok(s)
    }

    /// Trace every thread of the running processes `pids`, and start sampling.
    pub fn for_attach(pids: &[u32], config: &PtraceConfig) -> Result<PtraceSampler, PtraceError> {
        let mut s = PtraceSampler::new(config);
        let time = now_ns();
        for &pid in pids {
            if let Err(e) = s.seize_threads(pid, time) {
                s.detach_all();
                return Err(e);
            }
            s.procs.insert(pid, TracedProcess::default());
            s.scan_maps(pid, time);
        }
        Ok(s)
    }

    /// Trace nothing yet: processes that perf events sample are taken over one by one with
    /// [`PtraceSampler::take_over`]. `root`: the launched command, which the sampler reaps
    /// once it waits for tracees (waiting for it elsewhere would take their stops).
    pub fn for_takeover(root: Option<u32>, config: &PtraceConfig) -> PtraceSampler {
        let mut s = PtraceSampler::new(config);
        s.root = root;
        s.takeover = true;
        s
    }

    /// Sample every thread of process `pid` from now on, each timed by its own CPU clock,
    /// and write the record from whose time on perf events' samples of it are left out
    /// (also when only some of its threads could be seized: the others' are not doubled).
    pub fn take_over(&mut self, pid: u32) -> Result<(), PtraceError> {
        let time = now_ns();
        let seized = self.seize_threads(pid, time);
        if self.tracees.values().any(|t| t.pid == pid) {
            self.procs.insert(pid, TracedProcess::default());
            self.scan_maps(pid, time);
            let time = now_ns();
            self.push_with(time, |o| encode::takeover(o, pid, time));
        }
        seized
    }

    /// Seize every thread of `pid`: those started meanwhile by a seized thread are attached
    /// by the kernel, the others are found by listing again until the list stands still.
    /// Taking over, each gets its CPU clock at once; attaching, at the first tick.
    fn seize_threads(&mut self, pid: u32, time: u64) -> Result<(), PtraceError> {
        let mut first = true;
        loop {
            let tids =
                linux::list_threads(pid).map_err(|e| PtraceError::Seize { pid, source: e })?;
            let new: Vec<u32> = tids
                .into_iter()
                .filter(|t| !self.tracees.contains_key(t))
                .collect();
            if new.is_empty() {
                return Ok(());
            }
            for tid in new {
                match seize(tid, !self.takeover) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) && !first => continue,
                    Err(e) => return Err(refusal(pid, e)),
                }
                first = false;
                self.tracees.insert(tid, Tracee::new(pid, tid, false));
                if self.takeover {
                    self.start_timer(tid);
                }
                let name = linux::comm(pid, tid);
                self.announce(time, |o| encode::comm(o, pid, tid, &name, false, time));
            }
        }
    }

    /// Uniform in [interval/2, 3*interval/2): mean 1/F.
    fn jittered_interval(&mut self) -> u64 {
        self.interval_ns / 2 + xorshift(&mut self.rng) % self.interval_ns.max(1)
    }

    fn push_with(&mut self, time: u64, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.out.len();
        write(&mut self.out);
        self.entries.push((time, start, self.out.len() - start));
    }

    /// Write a record of what happened to a process (a thread, a name, a mapping), unless
    /// perf events tell it (taking over).
    fn announce(&mut self, time: u64, write: impl FnOnce(&mut Vec<u8>)) {
        if !self.takeover {
            self.push_with(time, write);
        }
    }

    /// Whether process `pid` is traced.
    pub fn traces(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Whether any thread is traced (and sampling goes on): waiting then handles their stops.
    pub fn following(&self) -> bool {
        !self.detached && !self.tracees.is_empty() && self.root_exit.is_none()
    }

    /// Sample on every tick and follow the tracees for up to `timeout_ms`; returns early when
    /// the launched command ends, every tracee is gone, or ember gets a signal.
    fn follow(&mut self, timeout_ms: i32) {
        if self.detached {
            std::thread::sleep(std::time::Duration::from_millis(timeout_ms.max(0) as u64));
            return;
        }
        let end = now_ns() + timeout_ms.max(0) as u64 * 1_000_000;
        loop {
            self.reap();
            if self.root_exit.is_some()
                || self.tracees.is_empty()
                || crate::target::signal_pending()
            {
                return;
            }
            let now = now_ns();
            if now >= self.next_tick {
                // No busy-polling for the stops just caused: it shortens them, but measured
                // here it skewed where the samples landed (hot_sixty 51 % against a true 60 %
                // in testdata/shares.c), so ember sleeps until SIGCHLD instead.
                self.tick();
                let now = now_ns();
                // Keep to the schedule (a late tick is followed by an early one) so that wake-up
                // latency does not thin the samples out; only when ticks cannot keep up at
                // all (too many threads for -F) are they skipped. Where every thread has a
                // CPU clock of its own, ticks only look after the clocks.
                if self.all_timed {
                    self.next_tick = now + LOOK_AFTER_CLOCKS_NS;
                    continue;
                }
                self.next_tick += self.jittered_interval();
                if self.next_tick + 10 * self.interval_ns < now {
                    self.next_tick = now + self.jittered_interval();
                }
                continue;
            }
            if now >= end {
                return;
            }
            if !calls::wait_sigchld(self.next_tick.min(end) - now) {
                return;
            }
        }
    }

    /// Handle every state change of the tracees that is ready, without blocking.
    fn reap(&mut self) {
        loop {
            let (tid, status) = match calls::next_status() {
                Ok(Some(changed)) => changed,
                Ok(None) => return,
                Err(_) => {
                    // No traced thread is left at all (gone, or reaped elsewhere).
                    self.tracees.clear();
                    self.pending = 0;
                    return;
                }
            };
            self.on_status(tid, status);
            if self.detached && libc::WIFSTOPPED(status) {
                // Detaching: the thread was let go at this stop.
                self.forget(tid);
            }
        }
    }

    fn detach_all(&mut self) {
        self.detached = true;
        // A tracee must be in a ptrace-stop to be detached: interrupt each; every stop is then
        // handled as while sampling, except that the thread is detached instead of resumed
        // (with the signal it stopped for, if any). New threads that appear meanwhile stop
        // on their own when the kernel attaches them, and are detached the same way.
        let give_up = now_ns() + 2 * STOP_TIMEOUT_NS;
        let mut gone = Vec::new();
        let mut pending = 0;
        for (&tid, t) in self.tracees.iter_mut() {
            // No more signals; one on its way is still known as the clock's at the stop.
            let timed = t.timed();
            if let Some(timer) = t.timer.as_mut() {
                timer.retire();
            }
            if !calls::interrupt(tid) {
                gone.push(tid);
            } else if !self.config.off_cpu && !timed && t.pending.is_none() {
                // The CPU time used since the thread's last sample is sampled at this stop,
                // where it is now, instead of being dropped.
                t.pending = Some(Seen::Running);
                pending += 1;
            }
        }
        self.pending += pending;
        // Threads that are gone (or were reaped elsewhere) cannot be interrupted.
        for tid in gone {
            self.forget(tid);
        }
        while !self.tracees.is_empty() && now_ns() < give_up {
            self.reap();
            if !self.tracees.is_empty() {
                calls::wait_sigchld(5_000_000);
            }
        }
        if !self.tracees.is_empty() {
            self.notes.push(format!(
                "{} threads did not stop to be detached; they are detached when ember exits",
                self.tracees.len()
            ));
        }
        if self.stats.unsampled > 0 {
            self.notes.push(format!(
                "{} samples' worth of CPU time was used by threads that ended before ember \
                 stopped them again (short-lived threads; ptrace samples a thread by stopping \
                 it); it is counted as lost",
                self.stats.unsampled
            ));
        }
        if self.stats.missed > 0 {
            self.notes.push(format!(
                "{} interrupted threads did not stop in time and were not sampled",
                self.stats.missed
            ));
        }
        self.tracees.clear();
        self.pending = 0;
        self.give_back_sigchld();
    }
}

impl Sampler for PtraceSampler {
    fn layout(&self) -> SampleLayout {
        encode::LAYOUT
    }

    fn event(&self) -> OpenedEvent {
        OpenedEvent {
            name: if self.config.off_cpu {
                "ptrace, wall clock"
            } else {
                "ptrace"
            },
            // Kernel frames come with the stops timed by CPU clocks that count kernel time.
            kernel_included: self.config.kernel_frames
                && self.clocks == Clocks::On { kernel: true },
        }
    }

    /// The ptrace backend's counters.
    fn detail(&self) -> String {
        let s = &self.stats;
        let independent = (s.samples as f64).powi(2) / s.samples_squared.max(1) as f64;
        let clocks = match self.clocks {
            Clocks::On { kernel: true } => "stops timed by each thread's CPU clock",
            Clocks::On { kernel: false } => {
                "stops timed by each thread's CPU clock in user space (the kernel's part is \
                 not sampled without privileges)"
            }
            _ => "stops timed by ticks",
        };
        let blocked = if s.timers_blocked > 0 {
            format!(
                " ({} threads block the clock's signal: timed by ticks)",
                s.timers_blocked
            )
        } else {
            String::new()
        };
        let reused = if s.stack_bytes > 0 {
            format!(
                "; {} stack copies ended below outer frames as their last unwind read them \
                 ({:.1} of {:.1} MB of stack copied)",
                s.reused,
                s.stack_bytes as f64 / 1e6,
                s.whole_stack_bytes as f64 / 1e6
            )
        } else {
            String::new()
        };
        format!(
            "ptrace: {clocks}{blocked}; {} stops by CPU clocks, {} ticks, {} threads \
             interrupted ({} found waiting for a CPU, not sampled), {} waiting threads \
             sampled without a stop, {} samples ({:.0} independent){reused}",
            s.timer_stops, s.ticks, s.interrupts, s.deferred, s.unstopped, s.samples, independent
        )
    }

    /// Move the records written so far into `batch`.
    fn drain(&mut self, batch: &mut RecordBatch) -> usize {
        for &(time, start, len) in &self.entries {
            batch.push(time, &self.out[start..start + len], &[]);
        }
        let n = self.entries.len();
        self.entries.clear();
        self.out.clear();
        n
    }

    fn wait(&mut self, timeout_ms: i32) {
        self.follow(timeout_ms)
    }

    /// Detach from every tracee, leaving it running (or stopped, if it was in a group-stop).
    fn disable(&mut self) {
        if !self.detached {
            self.detach_all();
        }
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The tracer reaps the command: waiting for it elsewhere would take its ptrace stops.
    fn command_state(&self) -> CommandState {
        match self.root_exit {
            Some(code) => CommandState::Exited(code),
            None if !self.tracees.is_empty() => CommandState::Running,
            None => CommandState::NotReaped,
        }
    }
}

impl Drop for PtraceSampler {
    fn drop(&mut self) {
        // Also on a panic: never leave a thread stopped.
        self.disable();
    }
}

fn refusal(pid: u32, e: io::Error) -> PtraceError {
    if let Some(tracer) = status_number(pid, "TracerPid").filter(|&t| t != 0) {
        return PtraceError::AlreadyTraced { pid, tracer };
    }
    if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
        PtraceError::Refused { pid, source: e }
    } else {
        PtraceError::Seize { pid, source: e }
    }
}

/// xorshift64: fast, and plenty for choosing tick lengths and which threads to stop.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_jittered_around_the_period() {
        let mut s = PtraceSampler::new(&PtraceConfig {
            frequency: 1000,
            off_cpu: false,
            cpu_timers: true,
            kernel_frames: true,
            known_stacks: KnownStacks::new(),
        });
        let v: Vec<u64> = (0..1000).map(|_| s.jittered_interval()).collect();
        assert!(v.iter().all(|&i| (500_000..1_500_000).contains(&i)));
        let mean = v.iter().sum::<u64>() / v.len() as u64;
        assert!((900_000..1_100_000).contains(&mean), "{mean}");
        assert!(v.windows(2).any(|w| w[0] != w[1]));
        s.disable();
    }
}
