//! Reading a stopped tracee: its registers and a copy of its stack, written as a perf sample
//! record.

use super::*;
use crate::arch;
use crate::model::stack_reads::{worth_reading, Gathered, MIN_REUSED_STACK};
use crate::python::Walk;

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
        self.read_python(tid, time);
        (regs, n)
    }

    /// Read the stack of `tid` from `sp` to the end of the mapping `sp` is in (at most
    /// [`MAX_WHOLE_STACK`]) into `self.stack`; how many bytes were read. `/proc/PID/maps` is
    /// read again (at `time`) when `sp` is in no mapping seen so far: a new thread's stack.
    /// Where the outer frames of a deep stack are as its thread's last unwind read them, the
    /// copy ends below them and `self.words` holds the words read there (see
    /// [`super::super::stack_reads`]); otherwise `self.words` is empty.
    pub(super) fn read_whole_stack(&mut self, tid: u32, sp: u64, time: u64) -> usize {
        self.words.clear();
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
        let whole = end.map_or(encode::MAX_STACK as u64, |end| end - sp);
        let whole = (whole as usize).min(MAX_WHOLE_STACK);
        let len = match self.outer_words(tid, sp, sp + whole as u64) {
            Some(boundary) => (boundary - sp) as usize,
            None => whole,
        };
        if self.stack.len() < len {
            self.stack.resize(len, 0);
        }
        let n = read_stack(tid, sp, &mut self.stack[..len]);
        if n < len {
            // The copy ended early: the words above it do not go on from it.
            self.words.clear();
        }
        self.stats.stack_bytes += n as u64;
        self.stats.whole_stack_bytes += if self.words.is_empty() { n } else { whole } as u64;
        self.stats.reused += u64::from(!self.words.is_empty());
        n
    }

    /// Where the copy of the stack of stopped `tid` (from `sp` to `end`) may end: at the
    /// innermost frame from which outward every word the thread's last whole unwind read is
    /// unchanged, read again now; those words are put in `self.words`.
    fn outer_words(&mut self, tid: u32, sp: u64, end: u64) -> Option<u64> {
        if end - sp < MIN_REUSED_STACK {
            return None;
        }
        let known = self.config.known_stacks.get(tid)?;
        let pieces = known.pieces(sp)?;
        if !worth_reading(pieces.len(), end - sp) {
            return None;
        }
        if pieces
            .last()
            .is_some_and(|&(start, len)| start + len as u64 > end)
        {
            return None;
        }
        let mut bytes = std::mem::take(&mut self.gathered);
        let reuse = read_pieces(tid, &pieces, &mut bytes)
            .then(|| {
                let live = Gathered::new(&pieces, &bytes);
                known.reuse(sp, |addr| live.word(addr))
            })
            .flatten();
        self.gathered = bytes;
        let reuse = reuse?;
        self.words = reuse.words;
        Some(reuse.boundary)
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
            let last = t.last_on_cpu.get_or_insert_with(LastSample::default);
            t.last_weight = u64::from(count);
            last.regs = user;
            last.stack.clear();
            last.stack.extend_from_slice(&self.stack[..n]);
            last.words.clear();
            last.words.extend_from_slice(&self.words);
            last.python.clone_from(&self.python);
        }
        self.write_sample(tid, user, n, off_cpu, count, time);
    }

    /// `count` more samples of `tid` where it was last sampled on CPU (see
    /// `Tracee::last_on_cpu`), taken at `time`.
    pub(super) fn count_at_last_sample(&mut self, tid: u32, count: u32, time: u64) {
        let Some(t) = self.tracees.get_mut(&tid) else {
            return;
        };
        let Some(last) = t.last_on_cpu.take() else {
            return;
        };
        let s = Sample {
            pid: t.pid,
            tid,
            time,
            cpu: 0,
            regs: last.regs,
            kernel: &[],
            stack: &last.stack,
            words: &last.words,
            off_cpu: None,
        };
        for _ in 0..count {
            self.push_sample(&s, &last.python);
        }
        self.stats.samples += u64::from(count);
        let Some(t) = self.tracees.get_mut(&tid) else {
            return;
        };
        // More samples at the same place: one observation that weighs more.
        let before = t.last_weight;
        t.last_weight += u64::from(count);
        self.stats.samples_squared += t.last_weight.pow(2) - before.pow(2);
        t.last_on_cpu = Some(last);
    }

    /// Write the records of one sample: the words of its stack above the copy, the parts of
    /// the copy beyond what a sample record holds, then the sample (see
    /// `EMBER_RECORD_STACK_WORDS`, `EMBER_RECORD_STACK_PART`).
    fn push_sample(&mut self, s: &Sample, python: &Walk) {
        if python::has_frames(python) {
            self.push_with(s.time, |o| encode::python_stack(o, s, python));
        }
        for words in s.words.chunks(encode::MAX_STACK_WORDS) {
            self.push_with(s.time, |o| encode::stack_words(o, s, words));
        }
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
        let words = std::mem::take(&mut self.words);
        let python = std::mem::take(&mut self.python);
        let chains = std::mem::take(&mut self.kernel_chains);
        // A thread due several samples (it was not caught running for a while, or its clock
        // counted several periods) gets them all here: one record each, the same but for
        // the kernel frames of the period each stands for.
        for i in 0..count {
            let s = Sample {
                pid,
                tid,
                time,
                cpu: 0,
                regs,
                kernel: chains.for_sample(i, count),
                stack: &stack[..n],
                words: &words,
                off_cpu,
            };
            self.push_sample(&s, &python);
        }
        self.stack = stack;
        self.words = words;
        self.python = python;
        self.kernel_chains = chains;
        self.kernel_chains.clear();
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
        // More than one system call's 1,024 pages: all of it.
        let big: Vec<u8> = (0..6 << 20).map(|i| (i % 251) as u8).collect();
        let mut copy = vec![0u8; big.len()];
        let at = big.as_ptr() as u64;
        assert_eq!(read_stack(std::process::id(), at, &mut copy), big.len());
        assert!(copy == big);
    }

    #[test]
    fn reads_pieces_back_to_back_over_many_system_calls() {
        let words: Vec<u64> = (0..3000).collect();
        let base = words.as_ptr() as u64;
        // Every other word: 1,500 pieces, two calls.
        let pieces: Vec<(u64, usize)> = (0..1500).map(|i| (base + 16 * i, 8)).collect();
        let mut buf = Vec::new();
        assert!(read_pieces(std::process::id(), &pieces, &mut buf));
        let got: Vec<u64> = buf
            .chunks(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(got, (0..3000).step_by(2).collect::<Vec<u64>>());
        assert!(!read_pieces(std::process::id(), &[(8, 8)], &mut buf));
    }
}
