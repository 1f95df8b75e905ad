//! Turning a sample (registers, stack copy, kernel callchain) into a list of code addresses.
//!
//! DWARF CFI through framehop over the copied user stack (framehop falls back to frame
//! pointers where a module has no unwind info), the kernel's frame-pointer chain for
//! `--call-graph fp`, and in `auto` mode the kernel's chain spliced on where the copy ran out.

use framehop::Unwinder;

use crate::arch::{UnwindCache, UnwindRegs};
use crate::process::Process;
use crate::sampler::records::{callchain_entries, PERF_CONTEXT_KERNEL, PERF_CONTEXT_MAX};
use crate::sampler::{CallGraph, SampleEvent, UserRegs};

/// The most frames one DWARF walk yields (a corrupt stack may loop).
const MAX_DEPTH: usize = 16384;

/// One unwound frame, leaf first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawFrame {
    /// A kernel code address.
    Kernel(u64),
    /// A user code address, already adjusted for lookup: return addresses minus one, so
    /// they fall inside the calling instruction.
    User(u64),
    /// The stack goes on beyond what could be unwound (copy ran out, or the kernel's chain hit
    /// `kernel.perf_event_max_stack`): said at the root end instead of passing the partial
    /// stack off as complete.
    Truncated,
}

/// Counters of how unwinding went, for the summary and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindStats {
    pub samples: u64,
    /// The DWARF walk ran out of copied stack.
    pub truncated: u64,
    /// ... and the kernel's frame-pointer chain supplied the rest.
    pub spliced: u64,
}

pub struct StackUnwinder {
    mode: CallGraph,
    /// The kernel's callchain limit (`kernel.perf_event_max_stack`).
    max_stack: usize,
    cache: UnwindCache,
    user_chain: Vec<u64>,
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
            stats: UnwindStats::default(),
        }
    }

    /// Unwind `sample` into `out` (cleared first), leaf first.
    pub fn unwind(&mut self, process: Option<&Process>, s: &SampleEvent, out: &mut Vec<RawFrame>) {
        out.clear();
        self.stats.samples += 1;
        let chain_entries = self.split_callchain(s, out);
        let regs = match (self.mode, s.user_regs, process) {
            (CallGraph::Fp, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(r), Some(p)) => Some((r, p)),
        };
        let Some((regs, process)) = regs else {
            return self.frame_pointer_chain(s, chain_entries, out);
        };
        let user_start = out.len();
        let (ran_out, last_raw) = self.walk_stack_copy(process, regs, s.user_stack, out);
        if ran_out {
            self.stats.truncated += 1;
            let complete = self.mode == CallGraph::Auto
                && out.len() > user_start
                && self.splice_chain(last_raw, chain_entries, out);
            if !complete {
                out.push(RawFrame::Truncated);
            }
        }
    }

    /// Put the kernel part of the sample's callchain into `out` and keep its user part in
    /// `self.user_chain`; returns how many addresses the chain has.
    fn split_callchain(&mut self, s: &SampleEvent, out: &mut Vec<RawFrame>) -> usize {
        self.user_chain.clear();
        let mut in_user = false;
        let mut kernel_frames = 0;
        let mut chain_entries = 0;
        for addr in callchain_entries(s.callchain) {
            if addr >= PERF_CONTEXT_MAX {
                in_user = addr != PERF_CONTEXT_KERNEL;
                continue;
            }
            chain_entries += 1;
            if in_user {
                self.user_chain.push(addr);
            } else {
                out.push(RawFrame::Kernel(addr));
                kernel_frames += 1;
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

    /// DWARF-unwind the copied user stack into `out`. Returns whether the walk ran out of
    /// copied stack, and the last frame's raw address.
    fn walk_stack_copy(
        &mut self,
        process: &Process,
        regs: UserRegs,
        stack: &[u8],
        out: &mut Vec<RawFrame>,
    ) -> (bool, u64) {
        let sp = regs.sp;
        let mut ran_out = false;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            match off.checked_add(8).and_then(|end| stack.get(off..end)) {
                Some(b) => Ok(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
                None => {
                    ran_out |= off >= stack.len();
                    Err(())
                }
            }
        };
        let mut last_raw = 0u64;
        let mut frames = process.unwinder.iter_frames(
            regs.ip,
            UnwindRegs::new(regs.ip, regs.sp, regs.bp),
            &mut self.cache,
            &mut read_stack,
        );
        // An unwind error ends the stack where it is; the depth limit guards against cycles
        // in corrupt stacks.
        for _ in 0..MAX_DEPTH {
            let Ok(Some(frame)) = frames.next() else {
                break;
            };
            last_raw = frame.address();
            out.push(RawFrame::User(frame.address_for_lookup()));
        }
        (ran_out, last_raw)
    }

    /// After the DWARF walk ran out at `last_raw`: find it in the frame-pointer chain and take
    /// the chain's frames from there on. Returns whether that reached the root.
    fn splice_chain(
        &mut self,
        last_raw: u64,
        chain_entries: usize,
        out: &mut Vec<RawFrame>,
    ) -> bool {
        let Some(pos) = self.user_chain.iter().position(|&a| a == last_raw) else {
            return false;
        };
        let rest = &self.user_chain[pos + 1..];
        if !rest.is_empty() {
            self.stats.spliced += 1;
        }
        out.extend(rest.iter().map(|&a| RawFrame::User(a.wrapping_sub(1))));
        // The chain reached the root unless the kernel's limit cut it.
        chain_entries < self.max_stack
    }
}
