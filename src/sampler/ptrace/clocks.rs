//! How the sampler uses the threads' own CPU clocks ([`super::timer`]): each thread gets one
//! (where the kernel allows it), its stops are sampled, and the clocks are looked after —
//! a thread that blocks the signal is handed to ticks.

use std::io;

use super::timer::{CpuTimer, TIMER_SIGNAL};
use super::tracee::Seen;
use super::{
    calls, now_ns, xorshift, Clocks, PtraceSampler, LOOK_AFTER_CLOCKS_NS, OVERDUE_PERIODS,
};

impl PtraceSampler {
    /// Give `tid` a CPU clock of its own where one is wanted and the kernel allows it; a
    /// thread without one is sampled by ticks.
    pub(super) fn start_timer(&mut self, tid: u32) {
        if self.detached {
            return;
        }
        let period = self.interval_ns;
        let chains = self.config.kernel_frames;
        let started = match self.clocks {
            Clocks::Off => None,
            Clocks::On { kernel } => Some(CpuTimer::start(tid, period, kernel, chains)),
            // Kernel time too where allowed (root, or perf_event_paranoid 1 and lower).
            Clocks::Untried => Some(CpuTimer::start(tid, period, true, chains).or_else(|e| {
                if is_refusal(&e) {
                    CpuTimer::start(tid, period, false, false)
                } else {
                    Err(e)
                }
            })),
        };
        match started {
            Some(Ok(timer)) => {
                self.clocks = Clocks::On {
                    kernel: timer.counts_kernel(),
                };
                if let Some(t) = self.tracees.get_mut(&tid) {
                    t.timer = Some(timer);
                }
            }
            Some(Err(e)) => {
                // Ticks sample it, from the next one.
                self.all_timed = false;
                self.next_tick = self.next_tick.min(now_ns());
                // Refused (perf events not allowed): ticks for every thread, as `-v` says.
                // Otherwise (the thread is gone, ember is out of descriptors) for this one.
                if self.clocks == Clocks::Untried && is_refusal(&e) {
                    self.clocks = Clocks::Off;
                }
            }
            None => self.all_timed = false,
        }
    }

    /// Whether `tid`, stopped for [`TIMER_SIGNAL`], was sent it by its CPU clock.
    pub(super) fn is_timer_stop(&self, tid: u32) -> bool {
        let Some(timer) = self.tracees.get(&tid).and_then(|t| t.timer.as_ref()) else {
            return false;
        };
        nix::sys::ptrace::getsiginfo(nix::unistd::Pid::from_raw(tid as i32))
            .is_ok_and(|info| timer.sent(&info))
    }

    /// A stop its CPU clock caused: sample the thread where it is, resume it without the
    /// signal. (Any stop uses up an interrupt sent meanwhile: ember's, when detaching.)
    pub(super) fn sample_timer_stop(&mut self, tid: u32, time: u64) {
        let draw = (xorshift(&mut self.rng) >> 11) as f64 / (1u64 << 53) as f64;
        let t = self.tracees.get_mut(&tid).expect("adopted");
        t.group_stopped = false;
        if t.pending.take().is_some() {
            self.pending -= 1;
        }
        let timer = t.timer.as_mut().expect("checked");
        if timer.retired || self.detached {
            self.resume(tid, 0);
            return;
        }
        let n = timer.samples_at_stop(self.interval_ns, draw);
        timer.take_kernel_chains(&mut self.kernel_chains);
        let regs = calls::registers(tid);
        if self.sample_and_resume(tid, regs, Seen::Running, n, 0, time) {
            self.stats.timer_stops += 1;
        }
    }

    /// At ticks, now and then: start the clocks of threads that have none (those attached
    /// to: theirs start with sampling, at the first tick; those whose clock could not start
    /// before); and a thread whose clock counts on without stopping it blocks the signal (or,
    /// where only user time is signalled, works in the kernel): if it blocks it, ticks sample
    /// it from now on. Notes whether every thread is timed.
    pub(super) fn look_after_clocks(&mut self) {
        let now = now_ns();
        if self.clocks == Clocks::Off || now < self.looked_after + LOOK_AFTER_CLOCKS_NS {
            return;
        }
        self.looked_after = now;
        let untimed: Vec<u32> = self
            .tracees
            .iter()
            .filter(|(_, t)| t.timer.is_none())
            .map(|(&tid, _)| tid)
            .collect();
        for tid in untimed {
            self.start_timer(tid);
        }
        let mut all = self.clocks != Clocks::Off;
        for (&tid, t) in self.tracees.iter_mut() {
            if !t.timed() {
                all = false;
                continue;
            }
            let timer = t.timer.as_mut().expect("timed");
            if timer.overdue(OVERDUE_PERIODS) && blocks_timer_signal(tid) {
                let unsampled = timer.since_last_stop();
                timer.retire();
                t.start_ticking(unsampled);
                self.stats.timers_blocked += 1;
                all = false;
            }
        }
        self.all_timed = all;
    }
}

/// Whether a clock could not be started because the kernel refuses it (not because the
/// thread is gone or ember is out of descriptors).
fn is_refusal(e: &io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::ESRCH) | Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOMEM)
    )
}

/// Whether thread `tid` blocks [`TIMER_SIGNAL`] (`SigBlk` of its status).
fn blocks_timer_signal(tid: u32) -> bool {
    crate::linux::status_field(&tid.to_string(), "SigBlk")
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (TIMER_SIGNAL - 1)) != 0)
}
