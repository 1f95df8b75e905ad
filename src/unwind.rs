//! Turning a sample (registers, stack copy, kernel callchain) into a list of code addresses.
//!
//! DWARF CFI through framehop over the copied user stack (framehop falls back to frame
//! pointers where a module has no unwind info), the kernel's frame-pointer chain for
//! `--call-graph fp`, and in `auto` mode the kernel's chain spliced on where the copy ran out.
//! A ptrace sample may come with words of the stack beyond its copy, read at the same stop
//! ([`crate::model::stack_reads`]); what the unwind of a deep ptrace stack read is kept for
//! the next stop of its thread.

use framehop::{FrameAddress, Unwinder};

use crate::arch::{UnwindCache, UnwindRegs};
use crate::model::callchain::{self, ChainEntry};
use crate::model::stack_reads::{worth_reading, StackReads, MIN_REUSED_STACK};
use crate::model::{CallGraph, KernelWalk, RawFrame, SampleEvent, UserRegs, KERNEL_WALK_ROOT};
use crate::process::Process;

/// The most frames one DWARF walk yields (a corrupt stack may loop).
const MAX_DEPTH: usize = 16384;

/// How many of the DWARF walk's last frames the kernel's frame-pointer chain must repeat
/// before it is spliced on (see `StackUnwinder::splice_chain`).
const MIN_SPLICE_AGREEMENT: usize = 4;

/// Counters of how unwinding went, for the summary and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    pub samples: u64,
    /// The DWARF walk ran out of copied stack.
    pub truncated: u64,
    /// ... and the kernel's frame-pointer chain supplied the rest, up to the root.
    pub spliced: u64,
    /// ptrace samples whose copy ended below outer frames given as the words read there.
    pub reused: u64,
    /// ... of which the unwind needed a word it was not given (counted in `truncated` too).
    pub reuse_missed: u64,
    /// Samples whose stack was walked in the kernel (BPF) ...
    pub walked_in_kernel: u64,
    /// ... of which the walk handed over to DWARF before the root.
    pub handed_over: u64,
}

pub struct StackUnwinder {
    mode: CallGraph,
    /// The kernel's callchain limit (`kernel.perf_event_max_stack`).
    max_stack: usize,
    cache: UnwindCache,
    user_chain: Vec<u64>,
    /// What the last unwind read, when it was a deep ptrace stack's.
    reads: StackReads,
    /// ... and whether it reached the stack's root with every read it needed.
    reads_whole: bool,
    pub stats: UnwindStats,
}

impl StackUnwinder {
    pub fn new(mode: CallGraph) -> Self {
        StackUnwinder {
            mode,
            max_stack: crate::linux::read_sysctl("kernel.perf_event_max_stack")
                .and_then(|s| s.parse().ok())
                .unwrap_or(127),
            cache: UnwindCache::new(),
            user_chain: Vec::new(),
            reads: StackReads::default(),
            reads_whole: false,
            stats: UnwindStats::default(),
        }
    }

    /// What the last unwind read, if it was of a deep ptrace stack and reached its root: for
    /// the thread's next stop to copy less ([`crate::model::stack_reads`]).
    pub fn take_whole_reads(&mut self) -> Option<StackReads> {
        std::mem::take(&mut self.reads_whole).then(|| std::mem::take(&mut self.reads))
    }

    /// Unwind `sample` into `out` (cleared first), leaf first.
    pub fn unwind(&mut self, process: Option<&Process>, s: &SampleEvent, out: &mut Vec<RawFrame>) {
        out.clear();
        self.stats.samples += 1;
        let chain_entries = self.split_callchain(s, out);
        let mut first = Start::Sample;
        if let Some(walk) = s.walked.filter(|w| !w.copy_at_sample) {
            self.stats.walked_in_kernel += 1;
            match self.take_kernel_walk(&walk, s.user_stack.is_empty(), out) {
                Some(start) => first = start,
                None => return,
            }
        }
        let regs = match (self.mode, s.user_regs, process) {
            (CallGraph::Fp, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(r), Some(p)) => Some((r, p)),
        };
        let Some((regs, process)) = regs else {
            return self.frame_pointer_chain(s, chain_entries, out);
        };
        let user_start = out.len();
        let memory = StackMemory::new(regs.sp, s.user_stack, s.stack_words);
        let ran_out = self.walk_stack_copy(process, (regs, first), memory, s.from_ptrace, out);
        if ran_out {
            self.stats.truncated += 1;
            let complete = self.mode == CallGraph::Auto
                && out.len() > user_start
                && self.splice_chain(process, (user_start, chain_entries), out);
            if !complete {
                out.push(RawFrame::Truncated);
            }
        }
    }

    /// Put the frames of a walk made in the kernel into `out`. Where it reached the root (or
    /// was cut), that is all: `None`. Where it handed over, the DWARF walk goes on from its
    /// last frame over the copy taken there: how that frame is to be looked up (its last
    /// frame is taken out of `out`, the DWARF walk puts it back).
    fn take_kernel_walk(
        &mut self,
        walk: &KernelWalk,
        no_copy: bool,
        out: &mut Vec<RawFrame>,
    ) -> Option<Start> {
        let frames = walk
            .frames
            .chunks_exact(8)
            .map(|b| RawFrame::User(u64::from_le_bytes(b.try_into().expect("8 bytes"))));
        let n = walk.frames.len() / 8;
        out.extend(frames);
        let handed_over = walk.handed_over();
        if walk.end == KERNEL_WALK_ROOT {
            return None;
        }
        if !handed_over || no_copy || n == 0 {
            self.stats.truncated += 1;
            out.push(RawFrame::Truncated);
            return None;
        }
        self.stats.handed_over += 1;
        out.pop();
        Some(if n == 1 {
            Start::Sample
        } else {
            Start::ReturnAddress
        })
    }

    /// Put the kernel part of the sample's callchain into `out` and keep its user part in
    /// `self.user_chain`; returns how many addresses the chain has.
    fn split_callchain(&mut self, s: &SampleEvent, out: &mut Vec<RawFrame>) -> usize {
        self.user_chain.clear();
        let mut kernel_frames = 0;
        let mut chain_entries = 0;
        for entry in callchain::entries(s.callchain) {
            chain_entries += 1;
            match entry {
                ChainEntry::User(addr) => self.user_chain.push(addr),
                ChainEntry::Kernel(addr) => {
                    out.push(RawFrame::Kernel(addr));
                    kernel_frames += 1;
                }
            }
        }
        if kernel_frames == 0 && s.kernel_mode && s.ip != 0 {
            out.push(RawFrame::Kernel(s.ip));
        }
        chain_entries
    }

    /// The user frames of the kernel's frame-pointer chain: the first entry is the IP, then
    /// return addresses.
    fn frame_pointer_chain(&self, s: &SampleEvent, chain_entries: usize, out: &mut Vec<RawFrame>) {
        for (i, &a) in self.user_chain.iter().enumerate() {
            out.push(RawFrame::User(if i == 0 { a } else { a.wrapping_sub(1) }));
        }
        if self.user_chain.is_empty() && !s.kernel_mode && s.ip != 0 {
            out.push(RawFrame::User(s.ip));
        }
        if chain_entries >= self.max_stack && !self.user_chain.is_empty() {
            out.push(RawFrame::Truncated);
        }
    }

    /// DWARF-unwind the user stack in `memory` into `out`. Returns whether the walk ran out
    /// of it. What a deep ptrace stack's walk read is kept (`reads`).
    fn walk_stack_copy(
        &mut self,
        process: &Process,
        (regs, first): (UserRegs, Start),
        mut memory: StackMemory,
        from_ptrace: bool,
        out: &mut Vec<RawFrame>,
    ) -> bool {
        self.reads.clear();
        self.reads_whole = false;
        let record = from_ptrace && memory.extent() >= MIN_REUSED_STACK;
        if !memory.words.is_empty() {
            self.stats.reused += 1;
        }
        let mut unwind_regs = UnwindRegs::new(regs.ip, regs.sp, regs.bp);
        let mut address = match first {
            Start::Sample => FrameAddress::InstructionPointer(regs.ip),
            Start::ReturnAddress => match FrameAddress::from_return_address(regs.ip) {
                Some(a) => a,
                None => return false,
            },
        };
        out.push(RawFrame::User(address.address_for_lookup()));
        // An unwind error ends the stack where it is; the depth limit guards against cycles
        // in corrupt stacks.
        let mut root = false;
        for _ in 1..MAX_DEPTH {
            if record {
                self.reads.step(unwind_regs.sp());
            }
            let mut reads = record.then_some(&mut self.reads);
            let mut read = |addr| memory.read(addr, reads.as_deref_mut());
            let next = process.unwinder.unwind_frame(
                address,
                &mut unwind_regs,
                &mut self.cache,
                &mut read,
            );
            match next.map(|ra| ra.map(FrameAddress::from_return_address)) {
                Ok(Some(Some(ra))) => address = ra,
                Ok(None) => {
                    root = true;
                    break;
                }
                Ok(Some(None)) | Err(_) => break,
            }
            out.push(RawFrame::User(address.address_for_lookup()));
        }
        if memory.failed {
            // framehop caches the rule it used for each address, and where a rule needs a
            // read that fails (the copy ran out, or the walk went wrong before) it falls back
            // to frame pointers and caches that instead: every later sample at that address,
            // with all the stack it needs, would then be unwound by frame pointers (made-up
            // frames in code without them). Start with an empty cache instead.
            self.cache = UnwindCache::new();
        }
        if memory.ran_out && !memory.words.is_empty() {
            self.stats.reuse_missed += 1;
        }
        // Kept only where reading the words again may beat copying the stack (as many
        // pieces as words at most).
        let worth = worth_reading(self.reads.len(), memory.extent());
        self.reads_whole = record && root && !memory.failed && worth;
        memory.ran_out
    }

    /// After the DWARF walk (user frames `out[user_start..]`) ran out: take the frames of
    /// the kernel's frame-pointer chain beyond it. Returns whether that reached the root.
    ///
    /// In code built without frame pointers the kernel's chain follows whatever `rbp` holds
    /// and is made up. So the chain is taken only where it is a true frame-pointer chain as
    /// far as the DWARF walk can tell: its return addresses are the walk's, every one, in
    /// order (at least [`MIN_SPLICE_AGREEMENT`] of them; the chain may lack the walk's first
    /// one or two, where the sample was in a function that had not set up its frame or keeps
    /// none), and every frame it adds is in a mapping of code.
    fn splice_chain(
        &mut self,
        process: &Process,
        (user_start, chain_entries): (usize, usize),
        out: &mut Vec<RawFrame>,
    ) -> bool {
        // Return addresses: the chain's after its first entry (the sample's ip), the walk's
        // after its first frame (minus one, for lookup).
        let chain = self.user_chain.get(1..).unwrap_or_default();
        let walked = &out[user_start + 1..];
        let same = |expected: &[RawFrame]| {
            expected.len() >= MIN_SPLICE_AGREEMENT
                && chain.len() >= expected.len()
                && expected
                    .iter()
                    .zip(chain)
                    .all(|(&w, &c)| w == RawFrame::User(c.wrapping_sub(1)))
        };
        let Some(agreed) = (0..=2)
            .filter_map(|skipped| walked.get(skipped..))
            .find(|&expected| same(expected))
            .map(<[RawFrame]>::len)
        else {
            return false;
        };
        let rest = &chain[agreed..];
        if !rest.iter().all(|&a| process.mapping(a).is_some()) {
            return false;
        }
        out.extend(rest.iter().map(|&a| RawFrame::User(a.wrapping_sub(1))));
        // The chain reached the root unless the kernel's limit cut it.
        let complete = chain_entries < self.max_stack;
        if complete {
            self.stats.spliced += 1;
        }
        complete
    }
}

/// Where a DWARF walk starts: at the sample's instruction, or — going on from a walk made in
/// the kernel — at a return address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Sample,
    ReturnAddress,
}

/// The memory an unwind may read: the copy of the stack from the stack pointer up, and
/// words above it given one by one (`(address, value)` pairs of little-endian u64s, sorted
/// by address), read at the same stop.
pub(crate) struct StackMemory<'a> {
    sp: u64,
    copy: &'a [u8],
    words: &'a [u8],
    /// A read failed...
    failed: bool,
    /// ... and it was above the copy, where the stack goes on.
    ran_out: bool,
}

impl<'a> StackMemory<'a> {
    pub(crate) fn new(sp: u64, copy: &'a [u8], words: &'a [u8]) -> StackMemory<'a> {
        StackMemory {
            sp,
            copy,
            words: &words[..words.len() / 16 * 16],
            failed: false,
            ran_out: false,
        }
    }

    /// How far above the stack pointer the memory given reaches.
    fn extent(&self) -> u64 {
        let last_word = self.words.len().checked_sub(16).map_or(0, |i| {
            word(&self.words[i..])
                .saturating_add(8)
                .saturating_sub(self.sp)
        });
        last_word.max(self.copy.len() as u64)
    }

    /// The word at `addr`, noted in `reads` if given.
    pub(crate) fn read(&mut self, addr: u64, reads: Option<&mut StackReads>) -> Result<u64, ()> {
        let in_copy = addr
            .checked_sub(self.sp)
            .and_then(|off| self.copy.get(off as usize..(off as usize).checked_add(8)?));
        match in_copy.map(word).or_else(|| self.given(addr)) {
            Some(v) => {
                if let Some(reads) = reads {
                    reads.read(addr, v);
                }
                Ok(v)
            }
            None => {
                self.failed = true;
                self.ran_out |= addr >= self.sp && addr - self.sp >= self.copy.len() as u64;
                Err(())
            }
        }
    }

    /// The word given for `addr`, if any.
    fn given(&self, addr: u64) -> Option<u64> {
        let entries = self.words.len() / 16;
        let (mut lo, mut hi) = (0, entries);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match word(&self.words[mid * 16..]).cmp(&addr) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(word(&self.words[mid * 16 + 8..])),
            }
        }
        None
    }
}

/// The little-endian u64 at the start of `b` (at least 8 bytes).
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(words: &[(u64, u64)]) -> Vec<u8> {
        words
            .iter()
            .flat_map(|&(a, v)| a.to_le_bytes().into_iter().chain(v.to_le_bytes()))
            .collect()
    }

    #[test]
    fn memory_is_the_copy_then_the_words_given_and_nothing_else() {
        let copy: Vec<u8> = (1..=4u64).flat_map(u64::to_le_bytes).collect();
        let words = pairs(&[(0x2000, 77), (0x3000, 88), (0x4000, 99)]);
        let mut m = StackMemory::new(0x1000, &copy, &words);
        assert_eq!(m.extent(), 0x3008);
        let mut reads = StackReads::default();
        reads.step(0x1000);
        assert_eq!(m.read(0x1008, Some(&mut reads)), Ok(2));
        assert_eq!(m.read(0x3000, Some(&mut reads)), Ok(88));
        assert!(!m.failed);
        // Below the stack pointer: not there, but not where the stack goes on either.
        assert_eq!(m.read(0xff8, None), Err(()));
        assert!(m.failed && !m.ran_out);
        // Above the copy, no word given: the stack goes on there.
        assert_eq!(m.read(0x2008, None), Err(()));
        assert!(m.ran_out);
        assert_eq!(reads.pieces(0x1000), Some(vec![(0x1008, 8), (0x3000, 8)]));
    }
}
