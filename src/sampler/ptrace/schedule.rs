//! The tick: which threads to look at and stop, chosen at random by their recent CPU share
//! before their state is read; in wall-clock mode, every thread, and waits sampled again
//! without a stop while they last.

use super::*;

impl PtraceSampler {
    /// One tick: interrupt the threads to sample, sample each as it stops, resume it.
    pub(super) fn tick(&mut self) {
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

    /// Sample a thread that still waits where it was last sampled waiting, without stopping
    /// it: its registers are the ones seen then; the stack is read afresh.
    pub(super) fn sample_still_waiting(&mut self, tid: u32, site: WaitSite, time: u64) {
        let n = read_stack(tid, site.regs.sp, &mut self.stack);
        self.stats.unstopped += 1;
        self.write_sample(tid, site.regs, n, Some(site.reason), 1, time);
    }
}
