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

/// How many of the DWARF walk's last frames the kernel's frame-pointer chain must repeat
/// before it is spliced on (see `StackUnwinder::splice_chain`).
const MIN_SPLICE_AGREEMENT: usize = 4;

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
    /// ... and the kernel's frame-pointer chain supplied the rest, up to the root.
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
        let ran_out = self.walk_stack_copy(process, regs, s.user_stack, out);
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
    /// copied stack.
    fn walk_stack_copy(
        &mut self,
        process: &Process,
        regs: UserRegs,
        stack: &[u8],
        out: &mut Vec<RawFrame>,
    ) -> bool {
        let sp = regs.sp;
        let (mut ran_out, mut failed) = (false, false);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let bytes = addr
                .checked_sub(sp)
                .and_then(|off| stack.get(off as usize..(off as usize).checked_add(8)?));
            match bytes {
                Some(b) => Ok(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
                None => {
                    failed = true;
                    ran_out |= addr >= sp && addr - sp >= stack.len() as u64;
                    Err(())
                }
            }
        };
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
            out.push(RawFrame::User(frame.address_for_lookup()));
        }
        if failed {
            // framehop caches the rule it used for each address, and where a rule needs a
            // read that fails (the copy ran out, or the walk went wrong before) it falls back
            // to frame pointers and caches that instead: every later sample at that address,
            // with all the stack it needs, would then be unwound by frame pointers (made-up
            // frames in code without them). Start with an empty cache instead.
            self.cache = UnwindCache::new();
        }
        ran_out
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
