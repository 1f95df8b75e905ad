//! Turning a sample (registers, stack copy, kernel callchain) into a list of code addresses.
//!
//! DWARF CFI through framehop over the copied user stack (framehop falls back to frame
//! pointers where a module has no unwind info), the kernel's frame-pointer chain for
//! `--call-graph fp`, and in `auto` mode the kernel's chain spliced on where the copy ran out.

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::Unwinder;

use crate::process::Process;
use crate::sampler::records::{callchain_entries, PERF_CONTEXT_KERNEL, PERF_CONTEXT_MAX};
use crate::sampler::{CallGraph, SampleEvent};

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
    cache: CacheX86_64,
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
            cache: CacheX86_64::new(),
            user_chain: Vec::new(),
            stats: UnwindStats::default(),
        }
    }

    /// Unwind `sample` into `out` (cleared first), leaf first.
    pub fn unwind(&mut self, process: Option<&Process>, s: &SampleEvent, out: &mut Vec<RawFrame>) {
        out.clear();
        self.stats.samples += 1;
        // Split the kernel's callchain into its kernel and user parts.
        self.user_chain.clear();
        let mut in_user = false;
        let mut kernel_frames = 0;
        let mut chain_entries = 0;
        for addr in callchain_entries(s.callchain) {
            if addr < PERF_CONTEXT_MAX {
                chain_entries += 1;
            }
            if addr >= PERF_CONTEXT_MAX {
                in_user = addr != PERF_CONTEXT_KERNEL;
                continue;
            }
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

        let regs = match (self.mode, s.user_regs, process) {
            (CallGraph::Fp, _, _) | (_, None, _) | (_, _, None) => None,
            (_, Some(r), Some(p)) => Some((r, p)),
        };
        let Some((regs, process)) = regs else {
            // Frame-pointer chain from the kernel: first entry is the IP, then return
            // addresses.
            for (i, &a) in self.user_chain.iter().enumerate() {
                out.push(RawFrame::User(if i == 0 { a } else { a.wrapping_sub(1) }));
            }
            if self.user_chain.is_empty() && !s.kernel_mode && s.ip != 0 {
                out.push(RawFrame::User(s.ip));
            }
            if chain_entries >= self.max_stack && !self.user_chain.is_empty() {
                out.push(RawFrame::Truncated);
            }
            return;
        };

        let stack = s.user_stack;
        let sp = regs.sp;
        let mut ran_out = false;
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(sp).ok_or(())? as usize;
            match off.checked_add(8).and_then(|end| stack.get(off..end)) {
                Some(b) => Ok(u64::from_le_bytes(b.try_into().expect("8 bytes"))),
                None => {
                    if off >= stack.len() {
                        ran_out = true;
                    }
                    Err(())
                }
            }
        };
        let user_start = out.len();
        let mut last_raw = 0u64;
        {
            let mut it = process.unwinder.iter_frames(
                regs.ip,
                UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp),
                &mut self.cache,
                &mut read_stack,
            );
            // Guard against cycles in corrupt stacks.
            let mut depth = 0;
            loop {
                let frame = match it.next() {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => {
                        if std::env::var_os("EMBER_DEBUG_UNWIND").is_some() {
                            eprintln!("unwind error after 0x{last_raw:x}: {e:?}");
                        }
                        break;
                    }
                };
                depth += 1;
                if depth > 16384 {
                    break;
                }
                last_raw = frame.address();
                out.push(RawFrame::User(frame.address_for_lookup()));
            }
        }
        if ran_out {
            self.stats.truncated += 1;
            if self.mode == CallGraph::Auto && out.len() > user_start {
                // Find where the DWARF walk stopped in the frame-pointer chain and take the
                // chain's frames from there on.
                if let Some(pos) = self.user_chain.iter().position(|&a| a == last_raw) {
                    let rest = &self.user_chain[pos + 1..];
                    if !rest.is_empty() {
                        self.stats.spliced += 1;
                    }
                    out.extend(rest.iter().map(|&a| RawFrame::User(a.wrapping_sub(1))));
                    if chain_entries < self.max_stack {
                        // The frame-pointer chain reached the root.
                        return;
                    }
                }
            }
            out.push(RawFrame::Truncated);
        }
    }
}
