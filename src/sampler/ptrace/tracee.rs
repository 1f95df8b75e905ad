//! One traced thread: its open /proc files, its CPU-time accounting (how many samples a
//! stop counts for), and what it was last sampled waiting in.

use super::timer::CpuTimer;
use super::*;

/// How a thread was found before it was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Seen {
    Running,
    Waiting,
}

pub(super) struct Tracee {
    /// The process (thread group) it belongs to.
    pub(super) pid: u32,
    /// `/proc/PID/task/TID/stat`, `schedstat` and `syscall`, kept open: read on ticks.
    pub(super) stat: Option<File>,
    pub(super) schedstat: Option<File>,
    pub(super) syscall: Option<File>,
    /// Where it was last sampled waiting (off-CPU mode).
    pub(super) wait: Option<WaitSite>,
    /// `R` means running *or runnable*: threads sharing a core are all `R`. So that samples
    /// follow CPU time as perf's do, every period of CPU time a thread used (`cpu_ns`, read
    /// at each stop: exact, as a stop updates the kernel's count) adds to its `credit`, which
    /// its sampled stops spend (see [`Tracee::samples_for_stop`]). Whether to look at a
    /// thread at a tick (and stop it if `R`) is decided at random with probability `rate`:
    /// its share of a CPU over the last window, so that threads sharing a core are not all
    /// stopped (or even looked at) on every tick for nothing. (Random and per window, not by the CPU count per tick: the kernel updates that
    /// count at scheduler ticks and syscalls, and decisions taken from it would fall in step
    /// with those.)
    pub(super) cpu_ns: u64,
    pub(super) credit: i64,
    pub(super) rate: Option<f64>,
    /// The current window: when it began (monotonic ns), the CPU time then (ns), how often
    /// the thread was looked at since and how often it was found `R`.
    pub(super) window_start: u64,
    pub(super) window_cpu: u64,
    pub(super) looked: u32,
    pub(super) found_running: u32,
    /// Of the stops of the current window, how many came after a wait for a CPU (not
    /// sampled: see `delay_at_interrupt`).
    pub(super) found_waiting_for_cpu: u32,
    /// An interrupt was sent (at `interrupted_at`); the stop it causes is to be sampled as
    /// this.
    pub(super) pending: Option<Seen>,
    pub(super) interrupted_at: u64,
    /// Wall-clock ticks that passed while an interrupt was pending.
    pub(super) ticks_waiting: u32,
    /// Its time spent waiting for a CPU (`schedstat`'s run_delay) when it was interrupted.
    /// `R` is running or runnable; a runnable thread stops only once it gets a CPU again,
    /// where it was preempted. A thread whose time slice ran out is preempted where the
    /// kernel next looks at its run time, which is more often in a syscall that reads it
    /// (`clock_gettime` of a CPU clock) than anywhere else: sampling there put 9-28 % of a
    /// CPU-bound program in `clock_gettime` with two CPU hogs running (hot_sixty 45 % instead
    /// of 60 %). A stop after such a wait (longer than [`PREEMPTED_WAIT_NS`]) is not sampled:
    /// the CPU time it saw goes to the credit the thread's next sampled stops spend. (A short
    /// wait is ember's own tick on the thread's CPU, which preempts it from a timer
    /// interrupt: anywhere, so that stop counts.)
    pub(super) delay_at_interrupt: Option<u64>,
    /// The CPU it was on (or queued for) when last looked at, and the CPU ember's tick ran on
    /// when it was interrupted. A wait for a CPU that ember's tick did not cause (the thread
    /// queued elsewhere, behind another program) means it was preempted where its time slice
    /// ran out, however short the wait: its stop is not sampled either. (With a busy machine
    /// beside it, a workload that reads its CPU clock every few microseconds had 58-94 % of
    /// its ptrace samples there, 10 % by perf events.)
    pub(super) cpu_when_looked: Option<u32>,
    pub(super) interrupted_from: Option<(Option<u32>, u32)>,
    /// The syscall it was in at its last sampled stop (which interrupted it): if it waits
    /// next in `restart_syscall`, that is the one.
    pub(super) interrupted_syscall: Option<u64>,
    /// In a group-stop (SIGSTOP, ^Z): held with `PTRACE_LISTEN`, not sampled.
    pub(super) group_stopped: bool,
    /// Its last on-CPU sample. The credit left when the thread ends is counted here.
    pub(super) last_on_cpu: Option<LastSample>,
    /// The samples counted at that place so far.
    pub(super) last_weight: u64,
    /// Its own CPU clock, where perf events allow one: it is sampled at the stops its
    /// signals cause, not by ticks (see [`super::timer`]).
    pub(super) timer: Option<CpuTimer>,
}

/// A thread's last on-CPU sample: registers, the used part of the stack copy and the words
/// above it.
#[derive(Clone, Debug, Default)]
pub(super) struct LastSample {
    pub(super) regs: UserRegs,
    pub(super) stack: Vec<u8>,
    pub(super) words: Vec<(u64, u64)>,
    /// The thread's Python stack at that stop.
    pub(super) python: crate::python::Walk,
}

/// A thread as it was sampled waiting: registers at the syscall, and which syscall.
#[derive(Clone, Copy, Debug)]
pub(super) struct WaitSite {
    pub(super) regs: UserRegs,
    pub(super) reason: WaitReason,
}

/// A wait for a CPU longer than this between an interrupt and the stop means the thread was
/// preempted for its time slice, not by ember's tick (which takes tens of microseconds).
pub(super) const PREEMPTED_WAIT_NS: u64 = 1_000_000;

/// The most CPU time a thread's credit holds (stops after a wait for a CPU are not sampled,
/// so a busy thread on a crowded machine can go a while between sampled stops).
pub(super) const MAX_CREDIT_NS: u64 = 1_000_000_000;

/// A sampled stop spends one period of credit, and a backlog beyond that over this many
/// stops (see [`Tracee::samples_for_stop`]).
const BACKLOG_SPREAD: i64 = 4;

impl Tracee {
    /// A thread ember starts to follow; `from_start` when it was just created (its CPU time
    /// so far is to be sampled), not when attaching to it (its past is not).
    pub(super) fn new(pid: u32, tid: u32, from_start: bool) -> Tracee {
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
            found_waiting_for_cpu: 0,
            pending: None,
            interrupted_at: 0,
            ticks_waiting: 0,
            delay_at_interrupt: None,
            cpu_when_looked: None,
            interrupted_from: None,
            interrupted_syscall: None,
            group_stopped: false,
            last_on_cpu: None,
            last_weight: 0,
            timer: None,
        };
        t.open(tid);
        if !from_start {
            t.cpu_ns = t.cpu_time().unwrap_or(0);
            t.window_cpu = t.cpu_ns;
        }
        t
    }

    /// Add the CPU time used since the last stop to the credit (`cpu`: the thread's CPU time
    /// now, from schedstat; `None` without it).
    pub(super) fn add_cpu_time(&mut self, cpu: Option<u64>, period: u64) {
        let Some(cpu) = cpu else {
            return;
        };
        let cap = MAX_CREDIT_NS.max(period) as i64;
        self.credit = (self.credit + cpu.saturating_sub(self.cpu_ns) as i64).min(cap);
        self.cpu_ns = cpu;
    }

    /// How many samples a sampled on-CPU stop counts for (`cpu` as for
    /// [`Tracee::add_cpu_time`]; without schedstat, one).
    ///
    /// Each counts about the same: one period of credit, plus a share of any backlog spread
    /// over the next [`BACKLOG_SPREAD`] stops, and none when the thread's stops came faster
    /// than its CPU time. A stop must not count for the CPU time since the previous one: on a
    /// crowded machine that depends on where the stop is (just after the thread was given a
    /// CPU again, which happens at the places it is preempted at, little time has passed),
    /// and with two CPU hogs on two cores it put 64 % of a program in the function that
    /// measured 60 % of its time, 24 % in the one that measured 30 %.
    pub(super) fn samples_for_stop(&mut self, cpu: Option<u64>, period: u64) -> u32 {
        if cpu.is_none() {
            return 1;
        }
        self.add_cpu_time(cpu, period);
        let p = period as i64;
        let n = if self.credit < -p / 2 {
            0
        } else {
            1 + (self.credit - p).max(0) / (BACKLOG_SPREAD * p)
        };
        self.credit -= n * p;
        n as u32
    }

    /// What the thread's last stop before ember detaches counts for: all its credit (`cpu` as
    /// for [`Tracee::add_cpu_time`]; without schedstat, one).
    pub(super) fn samples_for_last_stop(&mut self, cpu: Option<u64>, period: u64) -> u32 {
        if cpu.is_none() {
            return 1;
        }
        self.add_cpu_time(cpu, period);
        let n = self.credit.max(0) / period as i64;
        self.credit -= n * period as i64;
        n as u32
    }

    /// At the thread's end: the samples its credit still holds (CPU time sampled by stops
    /// that had not spent it yet) and the CPU time it used since its last stop, which no stop
    /// saw, in samples.
    pub(super) fn samples_left_at_end(&mut self, period: u64) -> (u32, u32) {
        let p = period as i64;
        let held = self.credit.max(0);
        let since = self
            .cpu_time()
            .map_or(0, |cpu| cpu.saturating_sub(self.cpu_ns));
        self.credit = 0;
        (
            (held / p) as u32,
            ((held % p) as u64 + since).div_euclid(period) as u32,
        )
    }

    /// From now on sampled by ticks (its CPU clock's signals do not come): the CPU time it
    /// used since its clock last stopped it (`unsampled`, ns) is theirs to sample, as a
    /// backlog.
    pub(super) fn start_ticking(&mut self, unsampled: u64) {
        self.cpu_ns = self.cpu_time().unwrap_or(0);
        self.window_cpu = self.cpu_ns;
        self.credit = unsampled.min(MAX_CREDIT_NS) as i64;
    }

    /// Sampled at the stops its CPU clock causes, not by ticks.
    pub(super) fn timed(&self) -> bool {
        self.timer.as_ref().is_some_and(|t| !t.retired)
    }

    pub(super) fn open(&mut self, tid: u32) {
        let dir = crate::linux::task_dir(self.pid, tid);
        self.stat = File::open(format!("{dir}/stat")).ok();
        self.schedstat = File::open(format!("{dir}/schedstat")).ok();
        self.syscall = File::open(format!("{dir}/syscall")).ok();
        self.wait = None;
    }

    /// The user stack pointer and program counter of the syscall the thread is blocked in,
    /// from `/proc/PID/task/TID/syscall` (readable without stopping the thread).
    pub(super) fn syscall_site(&self) -> Option<(u64, u64)> {
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
    pub(super) fn cpu_time(&self) -> Option<u64> {
        self.schedstat().map(|(cpu, _)| cpu)
    }

    /// (CPU time, time spent runnable waiting for a CPU) so far (ns), from `schedstat`.
    pub(super) fn schedstat(&self) -> Option<(u64, u64)> {
        let mut buf = [0u8; 128];
        let n = self.schedstat.as_ref()?.read_at(&mut buf, 0).ok()?;
        let s = std::str::from_utf8(&buf[..n]).ok()?;
        let mut f = s.split_whitespace().map(|v| v.parse().ok());
        Some((f.next()??, f.next()??))
    }

    /// The thread waited for a CPU between its interrupt and this stop (`now`: its
    /// schedstat at the stop) for another reason than ember's own tick: it was runnable, not
    /// running, when interrupted (see `delay_at_interrupt`, `interrupted_from`).
    pub(super) fn waited_since_interrupt(&mut self, now: Option<(u64, u64)>) -> bool {
        let Some(before) = self.delay_at_interrupt.take() else {
            return false;
        };
        let from = self.interrupted_from.take();
        let Some((_, delay)) = now else {
            return false;
        };
        let waited = delay.saturating_sub(before);
        let behind_ember = from.is_some_and(|(its, ours)| its == Some(ours));
        waited > PREEMPTED_WAIT_NS || (waited > 0 && !behind_ember)
    }
}

/// The state letter of a thread from its open `stat` file.
pub(super) fn thread_state(stat: &File, buf: &mut [u8; 512]) -> Option<u8> {
    stat_from_state(stat, buf)?.first().copied()
}

/// The state letter of a thread from its open `stat` file, and, when it is `R`, the CPU it
/// last ran on (or is queued for).
pub(super) fn thread_state_and_cpu(stat: &File, buf: &mut [u8; 512]) -> Option<(u8, Option<u32>)> {
    let fields = stat_from_state(stat, buf)?;
    let state = *fields.first()?;
    // `processor` is field 39; the state is field 3.
    let cpu = (state == b'R')
        .then(|| std::str::from_utf8(fields).ok())
        .flatten()
        .and_then(|rest| rest.split_ascii_whitespace().nth(39 - 3))
        .and_then(|f| f.parse().ok());
    Some((state, cpu))
}

/// A thread's `stat` line (read into `buf`) from its state field on.
fn stat_from_state<'a>(stat: &File, buf: &'a mut [u8; 512]) -> Option<&'a [u8]> {
    let n = stat.read_at(buf, 0).ok()?;
    let s = &buf[..n];
    // The name is in parentheses and may contain anything: the state follows the last ')'.
    let close = s.iter().rposition(|&c| c == b')')?;
    s.get(close + 2..)
}

/// A numeric field of `/proc/TID/status` (`Tgid`, `PPid`, `TracerPid`).
pub(super) fn status_number(tid: u32, field: &str) -> Option<u32> {
    linux::status_field(&tid.to_string(), field)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_counts_about_one_sample_whatever_the_time_since_the_last() {
        let me = std::process::id();
        let mut t = Tracee::new(me, me, true);
        let period = 1_000;
        // Stops that come faster than the CPU time: one sample each, until the credit runs
        // out; then none.
        let counts: Vec<u32> = [300, 500, 600, 700]
            .iter()
            .map(|&cpu| t.samples_for_stop(Some(cpu), period))
            .collect();
        assert_eq!(counts, [1, 1, 0, 0]);
        // A backlog (stops not sampled) is spread over the next stops, not paid at once.
        t.add_cpu_time(Some(10_700), period);
        let counts: Vec<u32> = (1..=8)
            .map(|i| t.samples_for_stop(Some(10_700 + i * period), period))
            .collect();
        assert_eq!(counts, [3, 2, 2, 2, 1, 1, 1, 1]);
        // Every period of the 18.7 used is counted, or still held for the thread's end or
        // the last stop before ember detaches.
        assert_eq!(counts.iter().sum::<u32>() + 2 + t.credit as u32 / 1000, 18);
        assert_eq!(t.samples_for_last_stop(Some(18_700 + 1_000), period), 4);
    }

    #[test]
    fn thread_state_follows_the_last_parenthesis() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("stat");
        std::fs::write(&p, b"123 (a) b) (c) S 1 2 3").unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(thread_state(&f, &mut [0; 512]), Some(b'S'));
        // This thread's own: running, on some CPU.
        let me = File::open("/proc/thread-self/stat").unwrap();
        let (state, cpu) = thread_state_and_cpu(&me, &mut [0; 512]).unwrap();
        assert_eq!(state, b'R');
        let cpus = std::thread::available_parallelism().unwrap().get() as u32;
        assert!(cpu.is_some_and(|c| c < cpus.max(1024)), "{cpu:?}");
    }
}
