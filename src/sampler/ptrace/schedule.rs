//! The tick: which threads to look at and stop, chosen at random by their recent CPU share
//! before their state is read; in wall-clock mode, every thread, and waits sampled again
//! without a stop while they last.

use super::*;

impl PtraceSampler {
    /// One tick: choose the threads to sample and interrupt them; each is sampled as it
    /// stops (the stops come when they come: a runnable thread that waits for a CPU traps
    /// only once it gets one, and ticks must not wait for that).
    pub(super) fn tick(&mut self) {
        self.stats.ticks += 1;
        self.look_after_clocks();
        let mut buf = [0u8; 512];
        let mut chosen = Vec::new();
        let mut still_waiting = Vec::new();
        let now = now_ns();
        for (&tid, t) in self.tracees.iter_mut() {
            // Its own CPU clock stops it.
            if t.timed() {
                continue;
            }
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
            let choice = if self.config.off_cpu {
                t.wall_clock_choice(&mut buf)
            } else {
                t.cpu_choice(now, &mut self.rng, &mut buf)
            };
            match choice {
                Choice::Stop(seen) => chosen.push((tid, seen)),
                Choice::SampleWithoutStop(site) => still_waiting.push((tid, site)),
                Choice::Skip => {}
            }
        }
        for (tid, site) in still_waiting {
            self.sample_still_waiting(tid, site, now);
        }
        for (tid, seen) in chosen {
            self.interrupt(tid, seen, now);
        }
    }

    /// Interrupt `tid` to sample it, as `seen`, at its next stop.
    fn interrupt(&mut self, tid: u32, seen: Seen, now: u64) {
        if let Some(t) = self.tracees.get_mut(&tid) {
            t.delay_at_interrupt = t.schedstat().map(|(_, delay)| delay);
            // SAFETY: sched_getcpu has no preconditions.
            let ours = unsafe { libc::sched_getcpu() };
            t.interrupted_from = u32::try_from(ours)
                .ok()
                .map(|ours| (t.cpu_when_looked.take(), ours));
        }
        if calls::interrupt(tid) {
            if let Some(t) = self.tracees.get_mut(&tid) {
                t.pending = Some(seen);
                t.ticks_waiting = 0;
                self.pending += 1;
                t.interrupted_at = now;
                self.stats.interrupts += 1;
            }
        }
    }

    /// Sample a thread that still waits where it was last sampled waiting, without stopping
    /// it: its registers are the ones seen then; the stack is read afresh.
    pub(super) fn sample_still_waiting(&mut self, tid: u32, site: WaitSite, time: u64) {
        let n = self.read_whole_stack(tid, site.regs.sp, time);
        // Blocked where it was, the thread runs no Python code either: its frames are as
        // they were, read afresh.
        self.read_python(tid, time);
        self.stats.unstopped += 1;
        self.write_sample(tid, site.regs, n, Some(site.reason), 1, time);
    }
}

/// What a tick does with one thread.
enum Choice {
    Stop(Seen),
    /// Still in the wait it was last sampled in: sample it again as it was.
    SampleWithoutStop(WaitSite),
    Skip,
}

impl Tracee {
    /// Wall clock: every thread, every tick, whatever it does.
    fn wall_clock_choice(&mut self, buf: &mut [u8; 512]) -> Choice {
        let Some(state) = self.stat.as_ref().and_then(|f| thread_state(f, buf)) else {
            return Choice::Skip;
        };
        match state {
            b'R' => {
                self.wait = None;
                Choice::Stop(Seen::Running)
            }
            b'S' | b'D' | b'I' => match (self.wait, self.syscall_site()) {
                // Still in the wait it was sampled in (same syscall site, same stack pointer):
                // sample it again without interrupting it. A waiting thread is then stopped
                // once per wait, not once per tick.
                (Some(w), Some((sp, pc))) if sp == w.regs.sp && pc.abs_diff(w.regs.ip) <= 2 => {
                    Choice::SampleWithoutStop(w)
                }
                _ => Choice::Stop(Seen::Waiting),
            },
            _ => Choice::Skip,
        }
    }

    /// CPU time: chosen first, looked at second. Whether to look is drawn at random with the
    /// thread's rate, so a tick costs about as many reads as there are cores busy, not one
    /// per thread; a thread looked at is stopped if it is `R`.
    fn cpu_choice(&mut self, now: u64, rng: &mut u64, buf: &mut [u8; 512]) -> Choice {
        if now >= self.window_start + WINDOW_NS {
            self.new_window(now);
        }
        // New threads are chosen at every tick until their rate is known: a thread that lives
        // for a few milliseconds must not end unsampled.
        let r = (xorshift(rng) >> 11) as f64 / (1u64 << 53) as f64;
        if r >= self.rate.unwrap_or(1.0) {
            return Choice::Skip;
        }
        self.looked += 1;
        let Some((b'R', cpu)) = self
            .stat
            .as_ref()
            .and_then(|f| thread_state_and_cpu(f, buf))
        else {
            return Choice::Skip;
        };
        self.cpu_when_looked = cpu;
        self.found_running += 1;
        Choice::Stop(Seen::Running)
    }

    /// A new window: the rate at which to look at the thread, from the last one.
    fn new_window(&mut self, now: u64) {
        // Without schedstat (no CONFIG_SCHED_INFO) the rate stays 1: state alone.
        if let Some(cpu) = self.cpu_time() {
            let share =
                cpu.saturating_sub(self.window_cpu) as f64 / (now - self.window_start) as f64;
            // A thread looked at is stopped only when `R`: divide by how often it was found
            // so, to stop it about once per period of CPU it uses.
            let found_running = f64::from(self.found_running + 1) / f64::from(self.looked + 1);
            // `R` is also runnable: on a crowded machine many stops come after a wait for a
            // CPU and are not sampled. Look more often, so that about one sampled stop still
            // comes per period of CPU time (fewer, each counting for more CPU time, make a
            // profile that leans towards the places the thread is preempted at).
            // (A stop may come in the window after its interrupt's: at most all of them.)
            let sampled = self
                .found_running
                .saturating_sub(self.found_waiting_for_cpu);
            let on_cpu = f64::from(sampled + 1) / f64::from(self.found_running + 1);
            // At least a little, so a thread that starts to run is noticed before the next
            // window.
            self.rate = Some((share / (found_running * on_cpu)).clamp(0.02, 1.0));
            self.window_cpu = cpu;
        }
        self.window_start = now;
        self.looked = 0;
        self.found_running = 0;
        self.found_waiting_for_cpu = 0;
    }
}
