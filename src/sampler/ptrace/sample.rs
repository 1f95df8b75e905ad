//! Reading a stopped tracee: its registers and a copy of its stack, written as a perf sample
//! record.

use super::*;
use crate::arch;

impl PtraceSampler {
    /// A stopped thread's registers (read with [`calls::registers`]), and its whole stack
    /// (from the stack pointer to the end of its mapping) read into `self.stack`.
    pub(super) fn capture(
        &mut self,
        tid: u32,
        regs: &arch::PtraceRegs,
        time: u64,
    ) -> ((UserRegs, Option<u64>), usize) {
        let regs = arch::from_ptrace(regs);
        let n = self.read_whole_stack(tid, regs.0.sp, time);
        (regs, n)
    }

    /// Read the stack of `tid` from `sp` to the end of the mapping `sp` is in (at most
    /// [`MAX_WHOLE_STACK`]) into `self.stack`; how many bytes were read. `/proc/PID/maps` is
    /// read again (at `time`) when `sp` is in no mapping seen so far: a new thread's stack.
    pub(super) fn read_whole_stack(&mut self, tid: u32, sp: u64, time: u64) -> usize {
        let Some(pid) = self.tracees.get(&tid).map(|t| t.pid) else {
            return 0;
        };
        let end_of = |procs: &HashMap<u32, TracedProcess>| {
            let areas = &procs.get(&pid)?.areas;
            let i = areas
                .partition_point(|&(start, _)| start <= sp)
                .checked_sub(1)?;
            let (_, end) = areas[i];
            (sp < end).then_some(end)
        };
        let end = match end_of(&self.procs) {
            Some(end) => Some(end),
            None => {
                self.scan_maps(pid, time);
                end_of(&self.procs)
            }
        };
        // Without a mapping (it went away), as much as one sample record holds.
        let len = end.map_or(encode::MAX_STACK as u64, |end| end - sp);
        let len = (len as usize).min(MAX_WHOLE_STACK);
        if self.stack.len() < len {
            self.stack.resize(len, 0);
        }
        read_stack(tid, sp, &mut self.stack[..len])
    }

    /// Write the sample captured from `tid`, after reading the process's mappings again if
    /// they may have changed.
    pub(super) fn emit(
        &mut self,
        tid: u32,
        seen: Seen,
        count: u32,
        ((user, syscall), n): ((UserRegs, Option<u64>), usize),
        time: u64,
    ) {
        let Some(t) = self.tracees.get_mut(&tid) else {
            return;
        };
        let off_cpu = match seen {
            Seen::Running => None,
            Seen::Waiting => {
                let reason = match syscall {
                    // A wait ember interrupted before, resumed by the kernel: still the
                    // syscall it was.
                    Some(RESTART_SYSCALL) => t
                        .wait
                        .map(|w| w.reason)
                        .or(t.interrupted_syscall.map(WaitReason::Syscall))
                        .unwrap_or(WaitReason::Syscall(RESTART_SYSCALL)),
                    Some(nr) => WaitReason::Syscall(nr),
                    None => WaitReason::Unknown,
                };
                t.wait = Some(WaitSite { regs: user, reason });
                Some(reason)
            }
        };
        // Stopped inside a syscall: the kernel restarts it as restart_syscall, which is to
        // be named as this one.
        if syscall != Some(RESTART_SYSCALL) {
            t.interrupted_syscall = syscall;
        }
        // Kept for the credit left at the thread's end; a thread its CPU clock times has none.
        if off_cpu.is_none() && !t.timed() {
            let last = t.last_on_cpu.get_or_insert_with(|| (user, Vec::new()));
            t.last_weight = u64::from(count);
            last.0 = user;
            last.1.clear();
            last.1.extend_from_slice(&self.stack[..n]);
        }
        self.write_sample(tid, user, n, off_cpu, count, time);
    }

    /// `count` more samples of `tid` where it was last sampled on CPU (see
    /// `Tracee::last_on_cpu`), taken at `time`.
    pub(super) fn count_at_last_sample(&mut self, tid: u32, count: u32, time: u64) {
        let Some(t) = self.tracees.get_mut(&tid) else {
            return;
        };
        let Some((regs, stack)) = t.last_on_cpu.take() else {
            return;
        };
        let s = Sample {
            pid: t.pid,
            tid,
            time,
            cpu: 0,
            regs,
            stack: &stack,
            off_cpu: None,
        };
        for _ in 0..count {
            self.push_sample(&s);
        }
        self.stats.samples += u64::from(count);
        let Some(t) = self.tracees.get_mut(&tid) else {
            return;
        };
        // More samples at the same place: one observation that weighs more.
        let before = t.last_weight;
        t.last_weight += u64::from(count);
        self.stats.samples_squared += t.last_weight.pow(2) - before.pow(2);
        t.last_on_cpu = Some((regs, stack));
    }

    /// Write the records of one sample: the parts of its stack beyond what a sample record
    /// holds, then the sample (see `EMBER_RECORD_STACK_PART`).
    fn push_sample(&mut self, s: &Sample) {
        let held = s.stack.len().min(encode::MAX_STACK) & !7;
        for part in s.stack[held..s.stack.len() & !7].chunks(encode::MAX_STACK_PART) {
            self.push_with(s.time, |o| encode::stack_part(o, s, part));
        }
        self.push_with(s.time, |o| encode::sample(o, s));
    }

    /// Write a sample whose stack is the first `n` bytes of `self.stack`.
    pub(super) fn write_sample(
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
            self.push_sample(&s);
        }
        self.stack = stack;
        self.stats.samples += u64::from(count);
        self.stats.samples_squared += u64::from(count).pow(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stack_up_to_the_end_of_the_mapping() {
        let x = 0u64;
        let sp = &x as *const u64 as u64;
        let mut buf = vec![0u8; 4096];
        assert_eq!(read_stack(std::process::id(), sp, &mut buf), 4096);
        // Past the end of the address space: nothing.
        assert_eq!(read_stack(std::process::id(), u64::MAX - 8192, &mut buf), 0);
    }
}
