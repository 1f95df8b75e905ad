//! The ptrace backend, for where perf events are refused (containers, hardened kernels) and
//! for wall-clock profiles.
//!
//! Every thread is seized once (`PTRACE_SEIZE`, which does not stop it) with options that
//! make the kernel attach new threads and children and report `exec`. On each tick, jittered
//! around 1/F so periodic work cannot fall in step with it, the threads to sample are chosen
//! by their state *before* they are touched (`/proc/PID/task/TID/stat`: `R` = on CPU; with
//! `--off-cpu` the waiting ones too), interrupted (`PTRACE_INTERRUPT`), their registers read
//! (`PTRACE_GETREGS`) and their stack copied (`process_vm_readv`), and resumed at once.
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
use super::{
    monotonic_ns as now_ns, CommandState, OpenedEvent, RecordBatch, SampleLayout, Sampler,
    UserRegs, WaitReason,
};
use crate::linux::{self, parse_maps_line};

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
    pub stack_size: u32,
    /// Sample waiting threads too (wall-clock profile).
    pub off_cpu: bool,
}

/// How a thread was found before it was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Running,
    Waiting,
}

struct Tracee {
    /// The process (thread group) it belongs to.
    pid: u32,
    /// `/proc/PID/task/TID/stat`, `schedstat` and `syscall`, kept open: read on ticks.
    stat: Option<File>,
    schedstat: Option<File>,
    syscall: Option<File>,
    /// Where it was last sampled waiting (off-CPU mode).
    wait: Option<WaitSite>,
    /// `R` means running *or runnable*: threads sharing a core are all `R`. So that samples
    /// follow CPU time as perf's do, a stopped thread counts one sample per period of CPU
    /// time it used since its last stop (`cpu_ns`, `credit`: exact, as a stop updates the
    /// kernel's count). Whether to look at a thread at a tick (and stop it if `R`) is decided
    /// at random with probability `rate`: its share of a CPU over the last window, so that
    /// threads sharing a core are not all stopped (or even looked at) on every tick for
    /// nothing. (Random and per window, not by the CPU count per tick: the kernel updates that
    /// count at scheduler ticks and syscalls, and decisions taken from it would fall in step
    /// with those.)
    cpu_ns: u64,
    credit: u64,
    rate: Option<f64>,
    /// The current window: when it began (monotonic ns), the CPU time then (ns), how often
    /// the thread was looked at since and how often it was found `R`.
    window_start: u64,
    window_cpu: u64,
    looked: u32,
    found_running: u32,
    /// An interrupt was sent (at `interrupted_at`); the stop it causes is to be sampled as
    /// this.
    pending: Option<Seen>,
    interrupted_at: u64,
    /// Wall-clock ticks that passed while an interrupt was pending.
    ticks_waiting: u32,
    /// Its time spent waiting for a CPU (`schedstat`'s run_delay) when it was interrupted.
    /// `R` is running or runnable; a runnable thread stops only once it gets a CPU again,
    /// where it was preempted. A thread whose time slice ran out is preempted where the
    /// kernel next looks at its run time, which is more often in a syscall that reads it
    /// (`clock_gettime` of a CPU clock) than anywhere else: sampling there put 9-28 % of a
    /// CPU-bound program in `clock_gettime` with two CPU hogs running (hot_sixty 45 % instead
    /// of 60 %). A stop after such a wait (longer than [`PREEMPTED_WAIT_NS`]) is not sampled;
    /// its CPU time goes to the thread's next stop. (A short wait is ember's own tick on the
    /// thread's CPU, which preempts it from a timer interrupt: anywhere, so that stop counts.)
    delay_at_interrupt: Option<u64>,
    /// In a group-stop (SIGSTOP, ^Z): held with `PTRACE_LISTEN`, not sampled.
    group_stopped: bool,
}

/// A thread as it was sampled waiting: registers at the syscall, and which syscall.
#[derive(Clone, Copy, Debug)]
struct WaitSite {
    regs: UserRegs,
    reason: WaitReason,
}

/// x86-64 `restart_syscall`: what an interrupted sleep continues as.
const RESTART_SYSCALL: u64 = 219;

#[derive(Clone, Default)]
struct TracedProcess {
    /// Executable mappings already written: (start, end, offset, inode).
    written: HashSet<(u64, u64, u64, u64)>,
    /// Their address ranges, to notice code that appeared since (dlopen, JIT).
    ranges: Vec<(u64, u64)>,
    /// When `/proc/PID/maps` was last read (monotonic ns).
    scanned: u64,
    /// How long until it is read again: short after a change (a program starting loads its
    /// libraries), doubling up to [`RESCAN_NS`] while nothing changes.
    gap: u64,
}

/// A wait for a CPU longer than this between an interrupt and the stop means the thread was
/// preempted for its time slice, not by ember's tick (which takes tens of microseconds).
const PREEMPTED_WAIT_NS: u64 = 1_000_000;

/// The most CPU time one stop of a thread is counted for (stops after a wait for a CPU are
/// not sampled, so a busy thread on a crowded machine can go a while between sampled stops).
const MAX_CREDIT_NS: u64 = 1_000_000_000;

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
    /// Stops not sampled because the thread was waiting for a CPU when interrupted: it
    /// stopped where it had been preempted, a biased place (see `Tracee::delay_at_interrupt`);
    /// its CPU time counts at its next stop.
    pub deferred: u64,
    /// Samples due for CPU time used by threads after their last stop, found when they
    /// exited: time that could not be placed on a stack.
    pub unsampled: u64,
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
    interval_ns: u64,
    next_tick: u64,
    rng: u64,
    pending: usize,
    old_mask: libc::sigset_t,
    old_chld: libc::sigaction,
    detached: bool,
    pub stats: PtraceStats,
    pub notes: Vec<String>,
}

const OPTIONS: libc::c_int = libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACEEXIT;

/// How long to wait for the stop an interrupt causes before giving up on it.
const STOP_TIMEOUT_NS: u64 = 1_000_000_000;
/// How often the mappings of a sampled process are read again at most (after a change the
/// gap starts at the minimum and doubles; code outside every known mapping gets the minimum).
const RESCAN_NS: u64 = 100_000_000;
const MIN_RESCAN_NS: u64 = 1_000_000;
/// How often each thread's stop rate is worked out again.
const WINDOW_NS: u64 = 50_000_000;

fn ptrace(req: libc::c_uint, tid: u32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: the requests used here take integer arguments or a pointer to memory we own.
    let r = unsafe { libc::ptrace(req, tid as libc::pid_t, addr, data) };
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn seize(tid: u32) -> io::Result<()> {
    ptrace(libc::PTRACE_SEIZE, tid, 0, OPTIONS as usize).map(|_| ())
}

fn event_msg(tid: u32) -> u64 {
    let mut msg: libc::c_ulong = 0;
    let _ = ptrace(
        libc::PTRACE_GETEVENTMSG,
        tid,
        0,
        &mut msg as *mut libc::c_ulong as usize,
    );
    msg as u64
}

/// The state letter of a thread from its open `stat` file.
fn thread_state(stat: &File, buf: &mut [u8; 512]) -> Option<u8> {
    let n = stat.read_at(buf, 0).ok()?;
    let s = &buf[..n];
    // The name is in parentheses and may contain anything: the state follows the last ')'.
    let close = s.iter().rposition(|&c| c == b')')?;
    s.get(close + 2).copied()
}

/// A numeric field of `/proc/TID/status` (`Tgid`, `PPid`, `TracerPid`).
fn status_number(tid: u32, field: &str) -> Option<u32> {
    linux::status_field(&tid.to_string(), field)?.parse().ok()
}

impl PtraceSampler {
    fn new(config: &PtraceConfig) -> PtraceSampler {
        let freq = config.frequency.max(1);
        // SAFETY: zeroed sigset/sigaction are valid "empty" values, filled in by the calls.
        let (old_mask, old_chld) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let mut s = PtraceSampler {
            config: config.clone(),
            tracees: HashMap::new(),
            procs: HashMap::new(),
            root: None,
            root_exit: None,
            out: Vec::new(),
            entries: Vec::new(),
            stack: vec![0; (config.stack_size as usize).min(encode::MAX_STACK)],
            interval_ns: 1_000_000_000 / freq,
            next_tick: 0,
            rng: now_ns() | 1,
            pending: 0,
            old_mask,
            old_chld,
            detached: false,
            stats: PtraceStats::default(),
            notes: Vec::new(),
        };
        s.take_sigchld();
        // Wake up on time: the default 50 µs timer slack is 5 % of a 1 kHz period.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1, 0, 0, 0) };
        s.next_tick = now_ns() + s.jittered_interval();
        s
    }

    /// Stops of tracees are announced by SIGCHLD (a handler without `SA_NOCLDSTOP`, which
    /// would hide ptrace stops); it is blocked here and waited for with `sigtimedwait`.
    fn take_sigchld(&mut self) {
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: plain libc signal calls on valid, owned structures; the handler does nothing.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = nothing as *const () as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(libc::SIGCHLD, &act, &mut self.old_chld);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGCHLD);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut self.old_mask);
        }
    }

    fn give_back_sigchld(&mut self) {
        // SAFETY: restoring what take_sigchld saved.
        unsafe {
            libc::sigaction(libc::SIGCHLD, &self.old_chld, std::ptr::null_mut());
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut());
        }
    }

    /// Trace a launched command that has not called `exec` yet; sampling starts at its exec.
    pub fn for_launch(pid: u32, config: &PtraceConfig) -> Result<PtraceSampler, PtraceError> {
        seize(pid).map_err(|e| refusal(pid, e))?;
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
            // Threads started meanwhile by a seized thread are attached by the kernel; the
            // others are found by listing again until the list stands still.
            let mut first = true;
            loop {
                let tids =
                    linux::list_threads(pid).map_err(|e| PtraceError::Seize { pid, source: e })?;
                let new: Vec<u32> = tids
                    .into_iter()
                    .filter(|t| !s.tracees.contains_key(t))
                    .collect();
                if new.is_empty() {
                    break;
                }
                for tid in new {
                    match seize(tid) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::ESRCH) && !first => continue,
                        Err(e) => {
                            s.detach_all();
                            return Err(refusal(pid, e));
                        }
                    }
                    first = false;
                    s.tracees.insert(tid, Tracee::new(pid, tid, false));
                    let name = linux::comm(pid, tid);
                    s.push_with(time, |o| encode::comm(o, pid, tid, &name, false, time));
                }
            }
            s.procs.insert(pid, TracedProcess::default());
            s.scan_maps(pid, time);
        }
        Ok(s)
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
                // all (too many threads for -F) are they skipped.
                self.next_tick += self.jittered_interval();
                if self.next_tick + 10 * self.interval_ns < now {
                    self.next_tick = now + self.jittered_interval();
                }
                continue;
            }
            if now >= end {
                return;
            }
            if !wait_sigchld(self.next_tick.min(end) - now) {
                return;
            }
        }
    }

    /// Handle every state change of the tracees that is ready, without blocking.
    fn reap(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
            if tid < 0 {
                // No traced thread is left at all (gone, or reaped elsewhere).
                self.tracees.clear();
                self.pending = 0;
                return;
            }
            if tid == 0 {
                return;
            }
            self.on_status(tid as u32, status);
            if self.detached && libc::WIFSTOPPED(status) {
                // Detaching: the thread was let go at this stop.
                self.forget(tid as u32);
            }
        }
    }

    fn on_status(&mut self, tid: u32, status: i32) {
        let time = now_ns();
        let ended =
            nix::sys::wait::WaitStatus::from_raw(nix::unistd::Pid::from_raw(tid as i32), status)
                .ok()
                .and_then(|s| crate::target::exit_code(&s));
        if let Some(code) = ended {
            self.on_gone(tid, code, time);
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        if !self.tracees.contains_key(&tid) {
            self.adopt(tid, None, time);
        }
        let sig = libc::WSTOPSIG(status);
        // The signal to deliver when resuming: only a signal-delivery-stop has one.
        let mut deliver = 0;
        match status >> 16 {
            libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                let new = event_msg(tid) as u32;
                if new != 0 && !self.tracees.contains_key(&new) {
                    self.adopt(new, Some(tid), time);
                }
            }
            libc::PTRACE_EVENT_EXEC => {
                let former = event_msg(tid) as u32;
                self.on_exec(tid, former, time);
            }
            libc::PTRACE_EVENT_EXIT => {
                // The thread is on its way out: its stack is the exit path, not where it
                // worked. CPU time it used since its last sample cannot be placed; say how
                // much, rather than drop it silently.
                let period = self.interval_ns;
                let t = self.tracees.get_mut(&tid).expect("adopted");
                if t.pending.take().is_some() {
                    self.pending -= 1;
                }
                let pid = t.pid;
                let lost = if self.config.off_cpu {
                    0
                } else {
                    u64::from(t.samples_due(period))
                };
                if lost > 0 {
                    // Reported as the kernel reports its losses, so the summary and the SVG
                    // count them.
                    self.stats.unsampled += lost;
                    self.push_with(time, |o| encode::lost(o, pid, tid, lost, time));
                }
                self.resume(tid, 0);
                return;
            }
            libc::PTRACE_EVENT_STOP if sig != libc::SIGTRAP => {
                // A group-stop (SIGSTOP, ^Z): stay stopped, as without ember, but keep
                // hearing of the tracee.
                let t = self.tracees.get_mut(&tid).expect("adopted");
                t.group_stopped = true;
                if t.pending.take().is_some() {
                    self.pending -= 1;
                }
                if self.detached {
                    self.resume(tid, 0);
                } else {
                    let _ = ptrace(libc::PTRACE_LISTEN, tid, 0, 0);
                }
                return;
            }
            // Our interrupt, a new tracee's first stop, or the end of a group-stop.
            libc::PTRACE_EVENT_STOP => {}
            // A signal on its way to the tracee: deliver it.
            0 => deliver = sig,
            _ => {}
        }
        // Any stop uses up a pending interrupt (the kernel clears it), so a thread waiting to
        // be sampled is sampled at whichever stop comes first.
        let t = self.tracees.get_mut(&tid).expect("adopted");
        t.group_stopped = false;
        match t.pending.take() {
            Some(seen) => {
                self.pending -= 1;
                let n = match seen {
                    Seen::Running if !self.config.off_cpu => {
                        if !self.detached && t.waited_since_interrupt() {
                            self.stats.deferred += 1;
                            0
                        } else {
                            t.samples_due(self.interval_ns)
                        }
                    }
                    _ => 1 + std::mem::take(&mut t.ticks_waiting),
                };
                // Resume before writing the record: the thread waits only for the copy.
                let regs = if n > 0 { self.capture(tid) } else { None };
                self.resume(tid, deliver);
                if let Some(regs) = regs {
                    self.emit(tid, seen, n, regs, time);
                }
            }
            None => self.resume(tid, deliver),
        }
    }

    /// Let a stopped thread go on with `sig` (0: none): resumed, or detached once ember is
    /// detaching. A thread killed meanwhile reports its exit through waitpid.
    fn resume(&mut self, tid: u32, sig: i32) {
        let request = if self.detached {
            libc::PTRACE_DETACH
        } else {
            libc::PTRACE_CONT
        };
        let _ = ptrace(request, tid, 0, sig as usize);
    }

    /// A thread or process ember had not heard of: `parent` made it (clone/fork event), or
    /// its first stop came before its parent's event.
    fn adopt(&mut self, tid: u32, parent: Option<u32>, time: u64) {
        let parent_pid = parent.and_then(|p| self.tracees.get(&p)).map(|t| t.pid);
        let pid = status_number(tid, "Tgid").or(parent_pid).unwrap_or(tid);
        let (ppid, ptid) = if Some(pid) == parent_pid {
            (pid, parent.unwrap_or(pid))
        } else {
            let ppid = parent_pid
                .or_else(|| status_number(tid, "PPid"))
                .unwrap_or(0);
            (ppid, parent.unwrap_or(ppid))
        };
        self.tracees.insert(tid, Tracee::new(pid, tid, true));
        if !self.procs.contains_key(&pid) {
            // A new process starts with a copy of its parent's address space.
            let copy = self.procs.get(&ppid).cloned().unwrap_or_default();
            self.procs.insert(pid, copy);
        }
        self.push_with(time, |o| encode::task(o, false, pid, ppid, tid, ptid, time));
    }

    fn on_exec(&mut self, tid: u32, former: u32, time: u64) {
        let pid = self.tracees.get(&tid).map(|t| t.pid).unwrap_or(tid);
        // Every other thread of the old program is gone; a non-leader that exec'd now has
        // the leader's id.
        let others: Vec<u32> = self
            .tracees
            .iter()
            .filter(|(&t, tr)| tr.pid == pid && t != tid)
            .map(|(&t, _)| t)
            .collect();
        for t in others {
            if t != former {
                self.push_with(time, |o| encode::task(o, true, pid, pid, t, t, time));
            }
            self.forget(t);
        }
        if let Some(tr) = self.tracees.get_mut(&tid) {
            // A non-leader that exec'd took the leader's id: its files are the leader's now.
            tr.open(tid);
        }
        let name = linux::comm(pid, tid);
        self.push_with(time, |o| encode::comm(o, pid, tid, &name, true, time));
        self.procs.insert(pid, TracedProcess::default());
        self.scan_maps(pid, time);
    }

    fn forget(&mut self, tid: u32) {
        if let Some(t) = self.tracees.remove(&tid) {
            if t.pending.is_some() {
                self.pending -= 1;
            }
        }
    }

    fn on_gone(&mut self, tid: u32, code: i32, time: u64) {
        if Some(tid) == self.root {
            self.root_exit = Some(code);
        }
        let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) else {
            return;
        };
        self.forget(tid);
        self.push_with(time, |o| encode::task(o, true, pid, pid, tid, tid, time));
        if tid == pid {
            self.procs.remove(&pid);
        }
    }

    /// Read `/proc/PID/maps` and write the executable mappings not written yet.
    fn scan_maps(&mut self, pid: u32, time: u64) {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        let mut new = Vec::new();
        let proc = self.procs.entry(pid).or_default();
        proc.scanned = time;
        let before = proc.written.len();
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else {
                continue;
            };
            if !m.executable {
                continue;
            }
            let ino = m.dev_ino.map(|d| d.2).unwrap_or(0);
            if proc.written.insert((m.start, m.end, m.offset, ino)) {
                proc.ranges.push((m.start, m.end));
                new.push(Mmap {
                    pid,
                    start: m.start,
                    len: m.end - m.start,
                    pgoff: m.offset,
                    dev_ino: m.dev_ino,
                    prot: (libc::PROT_READ | libc::PROT_EXEC) as u32,
                    filename: m.path.as_bytes(),
                    time,
                });
            }
        }
        proc.gap = if proc.written.len() > before {
            MIN_RESCAN_NS
        } else {
            (proc.gap * 2).clamp(MIN_RESCAN_NS, RESCAN_NS)
        };
        for m in &new {
            self.push_with(time, |o| encode::mmap2(o, m));
        }
    }

    /// One tick: interrupt the threads to sample, sample each as it stops, resume it.
    fn tick(&mut self) {
        self.stats.ticks += 1;
        let mut buf = [0u8; 512];
        let mut chosen = Vec::new();
        let mut still_waiting = Vec::new();
        let now = now_ns();
        for (&tid, t) in self.tracees.iter_mut() {
            if t.pending.is_some() && now > t.interrupted_at + STOP_TIMEOUT_NS {
                // Never stopped (it cannot, e.g. stuck in the kernel): give up on this one;
                // its stop, if it comes, only resumes it.
                t.pending = None;
                self.pending -= 1;
                self.stats.missed += 1;
            }
            if t.pending.is_some() && self.config.off_cpu {
                // Its last interrupt has not stopped it yet: this tick counts when it does,
                // so slow stops do not thin out the samples of running threads.
                t.ticks_waiting += 1;
            }
            if t.group_stopped || t.pending.is_some() {
                continue;
            }
            if self.config.off_cpu {
                let Some(state) = t.stat.as_ref().and_then(|f| thread_state(f, &mut buf)) else {
                    continue;
                };
                // Wall clock: every thread, every tick, whatever it does.
                match state {
                    b'R' => {
                        t.wait = None;
                        chosen.push((tid, Seen::Running));
                    }
                    b'S' | b'D' | b'I' => match (t.wait, t.syscall_site()) {
                        // Still in the wait it was sampled in (same syscall site, same stack
                        // pointer): sample it again without interrupting it. A waiting thread
                        // is then stopped once per wait, not once per tick.
                        (Some(w), Some((sp, pc)))
                            if sp == w.regs.sp && pc.abs_diff(w.regs.ip) <= 2 =>
                        {
                            still_waiting.push((tid, w));
                        }
                        _ => chosen.push((tid, Seen::Waiting)),
                    },
                    _ => {}
                }
                continue;
            }
            if now >= t.window_start + WINDOW_NS {
                // Without schedstat (no CONFIG_SCHED_INFO) the rate stays 1: state alone.
                if let Some(cpu) = t.cpu_time() {
                    let share =
                        cpu.saturating_sub(t.window_cpu) as f64 / (now - t.window_start) as f64;
                    // A thread looked at is stopped only when `R`: divide by how often it
                    // was found so, to stop it about once per period of CPU it uses.
                    let found_running = f64::from(t.found_running + 1) / f64::from(t.looked + 1);
                    // At least a little, so a thread that starts to run is noticed before
                    // the next window.
                    t.rate = Some((share / found_running).clamp(0.02, 1.0));
                    t.window_cpu = cpu;
                }
                t.window_start = now;
                t.looked = 0;
                t.found_running = 0;
            }
            // Chosen first, looked at second: only the chosen threads' state is read, so a
            // tick costs about as many reads as there are cores busy, not one per thread.
            // New threads are chosen at every tick until their rate is known: a thread that
            // lives for a few milliseconds must not end unsampled.
            let r = (xorshift(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
            if r >= t.rate.unwrap_or(1.0) {
                continue;
            }
            t.looked += 1;
            if t.stat.as_ref().and_then(|f| thread_state(f, &mut buf)) == Some(b'R') {
                t.found_running += 1;
                chosen.push((tid, Seen::Running));
            }
        }
        for (tid, site) in still_waiting {
            self.sample_still_waiting(tid, site, now);
        }
        for (tid, seen) in chosen {
            if let Some(t) = self.tracees.get_mut(&tid) {
                t.delay_at_interrupt = t.schedstat().map(|(_, delay)| delay);
            }
            if ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).is_ok() {
                if let Some(t) = self.tracees.get_mut(&tid) {
                    t.pending = Some(seen);
                    t.ticks_waiting = 0;
                    self.pending += 1;
                    t.interrupted_at = now;
                    self.stats.interrupts += 1;
                }
            }
        }
        // The stops come when they come: a runnable thread that waits for a CPU traps only
        // once it gets one, and ticks must not wait for that.
    }

    /// Read a stopped thread's registers, and its stack into `self.stack`.
    fn capture(&mut self, tid: u32) -> Option<(libc::user_regs_struct, usize)> {
        // SAFETY: user_regs_struct is plain data; GETREGS fills it.
        let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        ptrace(
            libc::PTRACE_GETREGS,
            tid,
            0,
            &mut regs as *mut libc::user_regs_struct as usize,
        )
        .ok()?;
        let n = read_stack(tid, regs.rsp, &mut self.stack);
        Some((regs, n))
    }

    /// Write the sample captured from `tid`, after reading the process's mappings again if
    /// they may have changed.
    fn emit(
        &mut self,
        tid: u32,
        seen: Seen,
        count: u32,
        (regs, n): (libc::user_regs_struct, usize),
        time: u64,
    ) {
        let user = UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        };
        let off_cpu = match seen {
            Seen::Running => None,
            Seen::Waiting => {
                // orig_rax holds the syscall number while in one, -1 otherwise.
                let mut reason = if (regs.orig_rax as i64) < 0 {
                    WaitReason::Unknown
                } else {
                    WaitReason::Syscall(regs.orig_rax)
                };
                let Some(t) = self.tracees.get_mut(&tid) else {
                    return;
                };
                if reason == WaitReason::Syscall(RESTART_SYSCALL) {
                    // A wait ember interrupted before, resumed by the kernel: still the
                    // syscall it was.
                    if let Some(w) = &t.wait {
                        reason = w.reason;
                    }
                }
                t.wait = Some(WaitSite { regs: user, reason });
                Some(reason)
            }
        };
        self.write_sample(tid, user, n, off_cpu, count, time);
    }

    /// Sample a thread that still waits where it was last sampled waiting, without stopping
    /// it: its registers are the ones seen then; the stack is read afresh.
    fn sample_still_waiting(&mut self, tid: u32, site: WaitSite, time: u64) {
        let n = read_stack(tid, site.regs.sp, &mut self.stack);
        self.stats.unstopped += 1;
        self.write_sample(tid, site.regs, n, Some(site.reason), 1, time);
    }

    /// Write a sample whose stack is the first `n` bytes of `self.stack`.
    fn write_sample(
        &mut self,
        tid: u32,
        regs: UserRegs,
        n: usize,
        off_cpu: Option<WaitReason>,
        count: u32,
        time: u64,
    ) {
        let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) else {
            return;
        };
        // Libraries come and go (the loader, dlopen, JIT): look again now and then, and at
        // once when the thread runs code outside every mapping seen so far.
        let due = self.procs.get(&pid).is_none_or(|p| {
            let known = p.ranges.iter().any(|&(s, e)| regs.ip >= s && regs.ip < e);
            time >= p.scanned + if known { p.gap } else { MIN_RESCAN_NS }
        });
        if due {
            self.scan_maps(pid, time);
        }
        let stack = std::mem::take(&mut self.stack);
        let s = Sample {
            pid,
            tid,
            time,
            cpu: 0,
            regs,
            stack: &stack[..n],
            off_cpu,
        };
        // A thread due several samples (it was not caught running for a while) gets them
        // all here: copies of one record.
        for _ in 0..count {
            self.push_with(time, |o| encode::sample(o, &s));
        }
        self.stack = stack;
        self.stats.samples += u64::from(count);
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
            if ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).is_err() {
                gone.push(tid);
            } else if !self.config.off_cpu && t.pending.is_none() {
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
                wait_sigchld(5_000_000);
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
            kernel_included: false,
        }
    }

    /// The ptrace backend's counters.
    fn detail(&self) -> String {
        let s = &self.stats;
        format!(
            "ptrace: {} ticks, {} threads interrupted ({} found waiting for a CPU, sampled \
             at a later stop), {} waiting threads sampled without a stop, {} samples",
            s.ticks, s.interrupts, s.deferred, s.unstopped, s.samples
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

impl Tracee {
    /// A thread ember starts to follow; `from_start` when it was just created (its CPU time
    /// so far is to be sampled), not when attaching to it (its past is not).
    fn new(pid: u32, tid: u32, from_start: bool) -> Tracee {
        let mut t = Tracee {
            pid,
            stat: None,
            schedstat: None,
            syscall: None,
            wait: None,
            cpu_ns: 0,
            credit: 0,
            rate: None,
            window_start: now_ns(),
            window_cpu: 0,
            looked: 0,
            found_running: 0,
            pending: None,
            interrupted_at: 0,
            ticks_waiting: 0,
            delay_at_interrupt: None,
            group_stopped: false,
        };
        t.open(tid);
        if !from_start {
            t.cpu_ns = t.cpu_time().unwrap_or(0);
            t.window_cpu = t.cpu_ns;
        }
        t
    }

    /// How many on-CPU samples a stop of this thread counts for: one per period of CPU time
    /// used since the last stop. Without schedstat (a kernel without CONFIG_SCHED_INFO), one.
    fn samples_due(&mut self, period: u64) -> u32 {
        let Some(cpu) = self.cpu_time() else {
            return 1;
        };
        // Capped at a second's worth, so one stack never takes more than that at once.
        self.credit =
            (self.credit + cpu.saturating_sub(self.cpu_ns)).min(MAX_CREDIT_NS.max(period));
        self.cpu_ns = cpu;
        let n = self.credit / period;
        self.credit -= n * period;
        n as u32
    }

    fn open(&mut self, tid: u32) {
        let dir = format!("/proc/{}/task/{tid}", self.pid);
        self.stat = File::open(format!("{dir}/stat")).ok();
        self.schedstat = File::open(format!("{dir}/schedstat")).ok();
        self.syscall = File::open(format!("{dir}/syscall")).ok();
        self.wait = None;
    }

    /// The user stack pointer and program counter of the syscall the thread is blocked in,
    /// from `/proc/PID/task/TID/syscall` (readable without stopping the thread).
    fn syscall_site(&self) -> Option<(u64, u64)> {
        let mut buf = [0u8; 256];
        let n = self.syscall.as_ref()?.read_at(&mut buf, 0).ok()?;
        let s = std::str::from_utf8(&buf[..n]).ok()?;
        // "NR ARG1 .. ARG6 SP PC" while blocked in a syscall; "running" or "-1 SP PC" else.
        let f: Vec<&str> = s.split_whitespace().collect();
        if f.len() != 9 {
            return None;
        }
        let hex = |x: &str| u64::from_str_radix(x.trim_start_matches("0x"), 16).ok();
        Some((hex(f[7])?, hex(f[8])?))
    }

    /// CPU time used so far (ns), from `schedstat`.
    fn cpu_time(&self) -> Option<u64> {
        self.schedstat().map(|(cpu, _)| cpu)
    }

    /// (CPU time, time spent runnable waiting for a CPU) so far (ns), from `schedstat`.
    fn schedstat(&self) -> Option<(u64, u64)> {
        let mut buf = [0u8; 128];
        let n = self.schedstat.as_ref()?.read_at(&mut buf, 0).ok()?;
        let s = std::str::from_utf8(&buf[..n]).ok()?;
        let mut f = s.split_whitespace().map(|v| v.parse().ok());
        Some((f.next()??, f.next()??))
    }

    /// The thread waited for a CPU between its interrupt and this stop: it was runnable, not
    /// running, when interrupted (see `delay_at_interrupt`).
    fn waited_since_interrupt(&mut self) -> bool {
        let Some(before) = self.delay_at_interrupt.take() else {
            return false;
        };
        self.schedstat()
            .is_some_and(|(_, delay)| delay.saturating_sub(before) > PREEMPTED_WAIT_NS)
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

/// Wait up to `ns` for SIGCHLD (blocked in this thread). False when another signal came.
fn wait_sigchld(ns: u64) -> bool {
    // SAFETY: plain libc calls on valid, owned structures.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let ts = libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        let r = libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        !(r < 0 && *libc::__errno_location() == libc::EINTR)
    }
}

/// Copy up to `buf.len()` bytes of a thread's stack from `sp` up; returns how many could be
/// read (the copy stops at the first unmapped page).
fn read_stack(tid: u32, sp: u64, buf: &mut [u8]) -> usize {
    const PAGE: u64 = 4096;
    let len = buf.len() as u64;
    let mut remote = Vec::with_capacity((len / PAGE + 2) as usize);
    let mut at = sp;
    let end = sp.saturating_add(len);
    while at < end {
        let next = ((at / PAGE) + 1) * PAGE;
        let stop = next.min(end);
        remote.push(libc::iovec {
            iov_base: at as *mut libc::c_void,
            iov_len: (stop - at) as usize,
        });
        at = stop;
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local points to `buf`, which is valid for writes of its length; the remote
    // ranges are only read by the kernel, which checks them.
    let n = unsafe {
        libc::process_vm_readv(
            tid as libc::pid_t,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_state_follows_the_last_parenthesis() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stat");
        std::fs::write(&p, b"123 (a) b) (c) S 1 2 3").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(thread_state(&f, &mut [0; 512]), Some(b'S'));
    }

    #[test]
    fn reads_its_own_stack_up_to_the_end_of_the_mapping() {
        let x = 0u64;
        let sp = &x as *const u64 as u64;
        let mut buf = vec![0u8; 4096];
        assert_eq!(read_stack(std::process::id(), sp, &mut buf), 4096);
        // Past the end of the address space: nothing.
        assert_eq!(read_stack(std::process::id(), u64::MAX - 8192, &mut buf), 0);
    }

    #[test]
    fn ticks_are_jittered_around_the_period() {
        let mut s = PtraceSampler::new(&PtraceConfig {
            frequency: 1000,
            stack_size: 1024,
            off_cpu: false,
        });
        let v: Vec<u64> = (0..1000).map(|_| s.jittered_interval()).collect();
        assert!(v.iter().all(|&i| (500_000..1_500_000).contains(&i)));
        let mean = v.iter().sum::<u64>() / v.len() as u64;
        assert!((900_000..1_100_000).contains(&mean), "{mean}");
        assert!(v.windows(2).any(|w| w[0] != w[1]));
        s.disable();
    }
}
