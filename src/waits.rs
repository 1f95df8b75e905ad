//! Wall-clock accounting of waiting threads on perf events (`--off-cpu`): a sample taken as a
//! thread is switched out stands for the time until it is switched in again, counted as that
//! many samples at the recording's frequency.

use std::collections::HashMap;

use crate::model::Frame;
use crate::model::RawFrame;
use crate::model::WaitReason;
use crate::profile::Profile;
use crate::symbolize::kernel::KernelSymbols;
use crate::symbolize::syscalls;

struct Waiting {
    pid: u32,
    /// Leaf first, starting with the `OffCpu` marker.
    frames: Vec<Frame>,
    since: u64,
}

/// Threads switched out and not yet back, and the time they wait.
pub struct Waits {
    frequency: u64,
    waiting: HashMap<u32, Waiting>,
    /// Per thread, the part of a sample period already waited (ns × Hz, below 1e9).
    carry: HashMap<u32, u64>,
    kernel: Option<KernelSymbols>,
    /// Kernel address → the syscall it belongs to, once looked up.
    reasons: HashMap<u64, Option<u64>>,
}

impl Waits {
    pub fn new(frequency: u64) -> Waits {
        Waits {
            frequency,
            waiting: HashMap::new(),
            carry: HashMap::new(),
            kernel: None,
            reasons: HashMap::new(),
        }
    }

    /// Why a switched-out thread waits, from the kernel part of its stack (leaf first): the
    /// first frame named like a syscall's entry (`__x64_sys_futex`, `__do_sys_...`,
    /// `ksys_read`); else the function `do_syscall_64` called, where the entry was a tail call
    /// (`kernel_wait4`, `do_epoll_wait`); else a page fault, if it is in one.
    pub fn reason(&mut self, raw: &[RawFrame]) -> WaitReason {
        let kernel = self.kernel.get_or_insert_with(KernelSymbols::load);
        let mut below_entry = None;
        let mut fault = false;
        for r in raw {
            let RawFrame::Kernel(addr) = *r else {
                continue;
            };
            let Some(name) = kernel.lookup(addr) else {
                continue;
            };
            let found = *self.reasons.entry(addr).or_insert_with(|| syscall_of(name));
            if let Some(nr) = found {
                return WaitReason::Syscall(nr);
            }
            match name {
                "do_syscall_64" => {
                    return below_entry
                        .and_then(implementation_of)
                        .map_or(WaitReason::Unknown, WaitReason::Syscall)
                }
                "exc_page_fault" => fault = true,
                _ => below_entry = Some(name),
            }
        }
        if fault {
            WaitReason::PageFault
        } else {
            WaitReason::Unknown
        }
    }

    /// `tid` was switched out at `time` with this stack (leaf first, marker first).
    pub fn switched_out(
        &mut self,
        profile: &mut Profile,
        pid: u32,
        tid: u32,
        frames: &[Frame],
        time: u64,
    ) {
        self.end(profile, tid, time);
        self.waiting.insert(
            tid,
            Waiting {
                pid,
                frames: frames.to_vec(),
                since: time,
            },
        );
    }

    /// The switch-out of `tid` was a preemption: it waits for a CPU, not for something.
    pub fn preempted(&mut self, tid: u32) {
        if let Some(w) = self.waiting.get_mut(&tid) {
            if let Some(Frame::OffCpu(reason)) = w.frames.first_mut() {
                *reason = WaitReason::Runnable;
            }
        }
    }

    /// `tid` runs again (or ended) at `time`: count its wait.
    pub fn end(&mut self, profile: &mut Profile, tid: u32, time: u64) {
        let Some(w) = self.waiting.remove(&tid) else {
            return;
        };
        let carry = self.carry.entry(tid).or_default();
        let total = u128::from(time.saturating_sub(w.since)) * u128::from(self.frequency)
            + u128::from(*carry);
        let count = (total / 1_000_000_000) as u64;
        *carry = (total % 1_000_000_000) as u64;
        if count > 0 {
            profile.add_timed_sample(w.since, (w.pid, tid), &w.frames, count);
        }
    }

    /// The recording ended at `time`: count every wait still going on.
    pub fn finish(&mut self, profile: &mut Profile, time: u64) {
        let tids: Vec<u32> = self.waiting.keys().copied().collect();
        for tid in tids {
            self.end(profile, tid, time);
        }
    }
}

/// The syscall a kernel function implements, judged by its name (`kernel_wait4`,
/// `do_epoll_wait`, `do_sys_poll`).
fn implementation_of(name: &str) -> Option<u64> {
    let name = name.split('.').next().unwrap_or(name);
    ["kernel_", "do_sys_", "do_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(syscalls::number)
}

/// The syscall a kernel function is the entry of, if it is one.
fn syscall_of(name: &str) -> Option<u64> {
    let name = name.split('.').next().unwrap_or(name);
    [
        "__x64_sys_",
        "__ia32_sys_",
        "__se_sys_",
        "__do_sys_",
        "ksys_",
    ]
    .iter()
    .find_map(|p| name.strip_prefix(p))
    .and_then(syscalls::number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_entries_by_name() {
        assert_eq!(syscall_of("__x64_sys_futex"), Some(202));
        assert_eq!(
            syscall_of("__do_sys_clock_nanosleep"),
            syscalls::number("clock_nanosleep")
        );
        assert_eq!(syscall_of("ksys_read"), Some(0));
        assert_eq!(syscall_of("__x64_sys_epoll_wait.cold"), Some(232));
        assert_eq!(syscall_of("schedule"), None);
        assert_eq!(syscall_of("__x64_sys_no_such_call"), None);
        assert_eq!(implementation_of("kernel_wait4"), Some(61));
        assert_eq!(implementation_of("do_epoll_wait"), Some(232));
        assert_eq!(implementation_of("do_wait"), None);
    }

    #[test]
    fn waits_count_at_the_frequency_with_carry() {
        let mut p = Profile::new();
        let mut w = Waits::new(1000);
        let frames = [Frame::OffCpu(WaitReason::Syscall(35)), Frame::Truncated];
        // 2.5 ms, then 2.5 ms: 2 samples, then 3 (the half carried).
        w.switched_out(&mut p, 1, 2, &frames, 1_000_000);
        w.end(&mut p, 2, 3_500_000);
        assert_eq!(p.total_samples(), 2);
        w.switched_out(&mut p, 1, 2, &frames, 4_000_000);
        w.preempted(2);
        w.finish(&mut p, 6_500_000);
        assert_eq!(p.total_samples(), 5);
        // Ended twice: counted once.
        w.end(&mut p, 2, 9_000_000);
        assert_eq!(p.total_samples(), 5);
    }
}
