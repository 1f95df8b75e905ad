//! Following the tracees: what each ptrace stop means (an interrupt of ours, a new thread or
//! process, an exec, a signal, an exit) and resuming them.

use super::timer::TIMER_SIGNAL;
use super::*;
use crate::arch;

impl PtraceSampler {
    /// A tracee changed state (`status` from waitpid): it ended, or stopped for a reason.
    pub(super) fn on_status(&mut self, tid: u32, status: i32) {
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
                self.on_exit_event(tid, time);
                return;
            }
            libc::PTRACE_EVENT_STOP if sig != libc::SIGTRAP => {
                self.on_group_stop(tid);
                return;
            }
            // Our interrupt, a new tracee's first stop, or the end of a group-stop.
            libc::PTRACE_EVENT_STOP => {}
            // Its CPU clock's signal: sampled here, and not delivered.
            0 if sig == TIMER_SIGNAL && self.is_timer_stop(tid) => {
                self.sample_timer_stop(tid, time);
                return;
            }
            // A signal on its way to the tracee: deliver it.
            0 => deliver = sig,
            _ => {}
        }
        self.sample_at_stop(tid, deliver, time);
    }

    /// The thread is on its way out: its stack is the exit path, not where it worked. The
    /// credit its sampled stops had not spent yet counts where it was last sampled; CPU time
    /// it used since its last stop cannot be placed: say how much, rather than drop it
    /// silently.
    fn on_exit_event(&mut self, tid: u32, time: u64) {
        let period = self.interval_ns;
        let t = self.tracees.get_mut(&tid).expect("adopted");
        if t.pending.take().is_some() {
            self.pending -= 1;
        }
        let pid = t.pid;
        // A thread timed by its CPU clock was sampled for every period it ended (the rest of
        // the last one is not sampled, as with perf events).
        let (held, unseen) = if self.config.off_cpu || t.timed() {
            (0, 0)
        } else {
            t.samples_left_at_end(period)
        };
        let lost = if t.last_on_cpu.is_some() {
            self.count_at_last_sample(tid, held, time);
            u64::from(unseen)
        } else {
            u64::from(held + unseen)
        };
        if lost > 0 {
            // Reported as the kernel reports its losses, so the summary and the SVG count them.
            self.stats.unsampled += lost;
            self.push_with(time, |o| encode::lost(o, pid, tid, lost, time));
        }
        self.resume(tid, 0);
    }

    /// A group-stop (SIGSTOP, ^Z): stay stopped, as without ember, but keep hearing of the
    /// tracee.
    fn on_group_stop(&mut self, tid: u32) {
        let t = self.tracees.get_mut(&tid).expect("adopted");
        t.group_stopped = true;
        if t.pending.take().is_some() {
            self.pending -= 1;
        }
        if self.detached {
            self.resume(tid, 0);
        } else {
            calls::listen(tid);
        }
    }

    /// Any stop uses up a pending interrupt (the kernel clears it), so a thread waiting to be
    /// sampled is sampled at whichever stop comes first; then it is resumed, with `deliver`.
    fn sample_at_stop(&mut self, tid: u32, deliver: i32, time: u64) {
        let t = self.tracees.get_mut(&tid).expect("adopted");
        t.group_stopped = false;
        let Some(seen) = t.pending.take() else {
            self.resume(tid, deliver);
            return;
        };
        self.pending -= 1;
        let regs = calls::registers(tid);
        let n = match seen {
            Seen::Running if !self.config.off_cpu => {
                // One read of schedstat serves both questions.
                let stat = t.schedstat();
                let waited = t.waited_since_interrupt(stat);
                // Found `R` just woken from a wait (it stops at the wait's end as soon as it
                // gets a CPU, however briefly it waited for one), or found running and asleep
                // by the time the interrupt came: the stop's place is the wait, not where the
                // CPU time since the last stop went.
                let slept = regs.as_ref().is_some_and(arch::stopped_after_a_wait);
                let cpu = stat.map(|(cpu, _)| cpu);
                if self.detached {
                    // The last stop: the CPU time used since the thread's last sample is
                    // sampled here, where it is now, instead of being dropped.
                    t.samples_for_last_stop(cpu, self.interval_ns)
                } else if waited || slept {
                    self.stats.deferred += 1;
                    t.found_waiting_for_cpu += 1;
                    t.add_cpu_time(cpu, self.interval_ns);
                    0
                } else {
                    t.samples_for_stop(cpu, self.interval_ns)
                }
            }
            _ => 1 + std::mem::take(&mut t.ticks_waiting),
        };
        self.sample_and_resume(tid, regs, seen, n, deliver, time);
    }

    /// Copy the stack of stopped `tid` (its registers `regs`) when the stop counts for `n` > 0
    /// samples, resume it with `deliver`, then write the samples: the thread waits only for
    /// the copy. Whether a sample was written.
    pub(super) fn sample_and_resume(
        &mut self,
        tid: u32,
        regs: Option<arch::PtraceRegs>,
        seen: Seen,
        n: u32,
        deliver: i32,
        time: u64,
    ) -> bool {
        let captured = match regs {
            Some(regs) if n > 0 => Some(self.capture(tid, &regs, time)),
            _ => None,
        };
        self.resume(tid, deliver);
        let Some(captured) = captured else {
            return false;
        };
        self.emit(tid, seen, n, captured, time);
        true
    }

    /// Let a stopped thread go on with `sig` (0: none): resumed, or detached once ember is
    /// detaching. A thread killed meanwhile reports its exit through waitpid.
    pub(super) fn resume(&mut self, tid: u32, sig: i32) {
        calls::resume(tid, sig, self.detached);
    }

    /// A thread or process ember had not heard of: `parent` made it (clone/fork event), or
    /// its first stop came before its parent's event.
    pub(super) fn adopt(&mut self, tid: u32, parent: Option<u32>, time: u64) {
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
        self.start_timer(tid);
        if !self.procs.contains_key(&pid) {
            // A new process starts with a copy of its parent's address space.
            let copy = self.procs.get(&ppid).cloned().unwrap_or_default();
            self.procs.insert(pid, copy);
            if self.takeover {
                // Traced with its parent (a clone that is not a thread): ptrace's too.
                self.push_with(time, |o| encode::takeover(o, pid, time));
            }
        }
        self.announce(time, |o| encode::task(o, false, pid, ppid, tid, ptid, time));
    }

    pub(super) fn on_exec(&mut self, tid: u32, former: u32, time: u64) {
        let pid = self.tracees.get(&tid).map(|t| t.pid).unwrap_or(tid);
        // A perf event follows its thread through exec: the one that called it keeps its CPU
        // clock, under the id it has now (a non-leader takes the leader's).
        let kept = self
            .tracees
            .get_mut(&former)
            .filter(|_| former != tid)
            .and_then(|t| t.timer.take());
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
                self.announce(time, |o| encode::task(o, true, pid, pid, t, t, time));
            }
            self.forget(t);
        }
        if let Some(tr) = self.tracees.get_mut(&tid) {
            // A non-leader that exec'd took the leader's id: its files are the leader's now.
            tr.open(tid);
            if let Some(timer) = kept {
                if timer.send_to(tid).is_ok() {
                    tr.timer = Some(timer);
                }
            }
        }
        // The launched command was traced before its exec, untimed: its own code starts now.
        if self.tracees.get(&tid).is_some_and(|t| t.timer.is_none()) {
            self.start_timer(tid);
        }
        let name = linux::comm(pid, tid);
        self.announce(time, |o| encode::comm(o, pid, tid, &name, true, time));
        self.procs.insert(pid, TracedProcess::default());
        self.scan_maps(pid, time);
    }

    pub(super) fn forget(&mut self, tid: u32) {
        if let Some(t) = self.tracees.remove(&tid) {
            if t.pending.is_some() {
                self.pending -= 1;
            }
        }
    }

    pub(super) fn on_gone(&mut self, tid: u32, code: i32, time: u64) {
        if Some(tid) == self.root {
            self.root_exit = Some(code);
        }
        let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) else {
            return;
        };
        self.forget(tid);
        self.announce(time, |o| encode::task(o, true, pid, pid, tid, tid, time));
        if tid == pid {
            self.procs.remove(&pid);
        }
    }

    /// Read `/proc/PID/maps` and write the executable mappings not written yet.
    pub(super) fn scan_maps(&mut self, pid: u32, time: u64) {
        let Ok(maps) = crate::linux::maps(pid) else {
            return;
        };
        let mut new = Vec::new();
        let mut interpreters = Vec::new();
        let proc = self.procs.entry(pid).or_default();
        proc.scanned = time;
        let before = proc.written.len();
        proc.areas.clear();
        for line in maps.lines() {
            let Some(m) = parse_maps_line(line) else {
                continue;
            };
            proc.areas.push((m.start, m.end));
            if !m.executable {
                continue;
            }
            let ino = m.dev_ino.map(|d| d.2).unwrap_or(0);
            if proc.written.insert((m.start, m.end, m.offset, ino)) {
                proc.ranges.push((m.start, m.end));
                if proc.python.is_none() && crate::python::may_be_interpreter(m.path) {
                    interpreters.push(m.clone());
                }
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
            self.announce(time, |o| encode::mmap2(o, m));
        }
        for m in &interpreters {
            self.look_for_python(pid, m, time);
        }
    }
}
