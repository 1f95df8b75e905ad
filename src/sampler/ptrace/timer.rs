//! Stops timed by each thread's own CPU clock, where perf events are allowed.
//!
//! Every traced thread gets a perf event of its own that counts its CPU time (`task-clock`,
//! no ring buffer) and, at the end of each period of it, has the kernel send the thread
//! itself a signal (`fcntl` `F_SETOWN_EX` to the thread, `F_SETSIG`, `O_ASYNC`; rr times its
//! tracees the same way). The signal is raised in the timer interrupt that ends the period,
//! on the thread's own CPU, and the thread stops for it (a signal-delivery-stop) on its way
//! back to user space: where it was when the period ended, as a perf sample is. ember samples
//! it there and resumes it without the signal. So the stops need no choosing and no credit:
//! one per period of CPU time, at places as unbiased as perf's, and the whole stack is read.
//!
//! The signal is `SIGURG`, which is ignored unless a program asks for it: should one reach a
//! thread ember no longer traces (ember killed between the signal and the stop), nothing
//! happens to it. (Programs that handle `SIGURG`, such as Go's runtime, tolerate one more.)
//! A thread that blocks the signal is never stopped by it: it is found at a tick (its CPU
//! clock runs on with no stop) and sampled by ticks from then on.
//!
//! Where the clock counts kernel time, it also records the kernel's callchain at the end of
//! each period into a one-page ring buffer of its own, read at the stop. Those are the
//! sample's kernel frames, exactly: the signal is delivered on the thread's first return to
//! user space after the period ended, so every period that ended since the last stop ended
//! either in user space (no kernel frames) or within the kernel entry the stop ends, whose
//! user-space side — registers and stack — is what the stop reads.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use perf_event_open_sys as sys;

use crate::sampler::perf;
use crate::sampler::records::{RecordHeader, PERF_RECORD_SAMPLE, PERF_SAMPLE_CALLCHAIN};

/// The signal a thread's timer sends it.
pub(super) const TIMER_SIGNAL: i32 = libc::SIGURG;

/// Linux ABI the libc crate does not have for glibc targets (`<fcntl.h>`, `<signal.h>`):
/// which signal a descriptor's owner gets, the owner as one thread, and the signal's code.
const F_SETSIG: libc::c_int = 10;
const F_SETOWN_EX: libc::c_int = 15;
const F_OWNER_TID: libc::c_int = 0;
const POLL_IN: libc::c_int = 1;

/// The shortest period the kernel times (shorter ones are made this long).
const MIN_PERIOD_NS: u64 = 10_000;

/// A thread's CPU clock, counting periods of its CPU time and signalling it at each.
pub(super) struct CpuTimer {
    fd: OwnedFd,
    /// Where it records the kernel callchain at the end of each period (kernel time counted,
    /// kernel frames wanted, and the buffer could be mapped).
    chains: Option<perf::RingBuffer>,
    /// The period it signals at now (jittered around the nominal one at every stop).
    period: u64,
    /// Its count (CPU time, ns) when that period began.
    armed_at: u64,
    /// CPU time (ns) counted since the last stop and not yet sampled (less than a period).
    owed: u64,
    /// Kernel time is counted and signalled too (the kernel allows it).
    kernel: bool,
    /// Signals off (the thread blocks them; ticks sample it instead).
    pub(super) retired: bool,
}

impl CpuTimer {
    /// Start one for `tid`, signalling it every `period` ns of its CPU time; `kernel`: also
    /// in the kernel (refused without privileges at `perf_event_paranoid` 2), and then with
    /// the kernel's callchains where `chains` asks for them.
    pub(super) fn start(tid: u32, period: u64, kernel: bool, chains: bool) -> io::Result<CpuTimer> {
        let chains = kernel && chains;
        let mut attr = sys::bindings::perf_event_attr {
            type_: sys::bindings::PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
            config: u64::from(sys::bindings::PERF_COUNT_SW_TASK_CLOCK),
            ..Default::default()
        };
        attr.__bindgen_anon_1.sample_period = period;
        attr.set_disabled(1);
        attr.set_exclude_hv(1);
        attr.set_exclude_kernel(u64::from(!kernel));
        if chains {
            attr.sample_type = PERF_SAMPLE_CALLCHAIN;
            // The user part comes from the stop; only the kernel's is recorded.
            attr.set_exclude_callchain_user(1);
            // No wakeups but the signal, which every period sends anyway.
            attr.set_watermark(1);
            attr.__bindgen_anon_2.wakeup_watermark = u32::MAX;
        }
        // On whatever CPU the thread runs.
        let fd = perf::open_one(&mut attr, tid, -1)?;
        // Without its buffer (out of locked memory) the clock still times the stops.
        let chains = chains
            .then(|| perf::RingBuffer::map(fd.as_raw_fd(), 1).ok())
            .flatten();
        let timer = CpuTimer {
            fd,
            chains,
            period,
            armed_at: 0,
            owed: 0,
            kernel,
            retired: false,
        };
        // The signal is chosen before signals are switched on: the default, SIGIO, would
        // end the program.
        timer.send_to(tid)?;
        fcntl(timer.raw(), F_SETSIG, TIMER_SIGNAL)?;
        fcntl(timer.raw(), libc::F_SETFL, libc::O_ASYNC)?;
        // SAFETY: an ioctl without a pointer argument on our descriptor.
        if unsafe { sys::ioctls::ENABLE(timer.raw(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(timer)
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Kernel time is counted and signalled too.
    pub(super) fn counts_kernel(&self) -> bool {
        self.kernel
    }

    /// Move the kernel callchains recorded since the last stop into `out` (cleared first).
    pub(super) fn take_kernel_chains(&mut self, out: &mut KernelChains) {
        out.clear();
        if let Some(ring) = &mut self.chains {
            ring.each_record(|rec| out.push_record(rec));
        }
    }

    /// Signal thread `tid` (again: a thread that calls `exec` takes its leader's id).
    pub(super) fn send_to(&self, tid: u32) -> io::Result<()> {
        // struct f_owner_ex: the kind of owner, and its id (pid_t is an int).
        let owner: [libc::c_int; 2] = [F_OWNER_TID, tid as libc::c_int];
        // SAFETY: F_SETOWN_EX reads one struct f_owner_ex, two ints.
        if unsafe { libc::fcntl(self.raw(), F_SETOWN_EX, owner.as_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Whether a stop for [`TIMER_SIGNAL`] with this `info` is this timer's, not a signal
    /// sent to the program by someone else (to be delivered).
    pub(super) fn sent(&self, info: &libc::siginfo_t) -> bool {
        info.si_code == POLL_IN && sigpoll_fd(info) == self.raw()
    }

    /// At one of its stops: the samples it counts for, and the timer armed again for a
    /// period drawn in [p/2, 3p/2) (`draw`: uniform in [0, 1)) so that periodic work cannot
    /// fall in step with it.
    ///
    /// Where kernel time is counted, a stop counts every nominal period of CPU time since the
    /// last one, the rest carried over (so some stops count none, some two): a thread busy in
    /// the kernel for several periods gets one signal (they do not queue) and stops at the end
    /// of the syscall, for all of them. Otherwise a stop is one sample. Either way the next
    /// period is shortened by how far the last one ran over (the interrupt's latency, the
    /// signal's delivery), so that the stops stay about one per period of CPU time.
    pub(super) fn samples_at_stop(&mut self, nominal: u64, draw: f64) -> u32 {
        let count = self.count();
        let elapsed = count.map_or(self.period, |c| c.saturating_sub(self.armed_at));
        let n = if self.kernel {
            let nominal = nominal.max(1);
            self.owed += elapsed;
            let n = self.owed / nominal;
            self.owed -= n * nominal;
            n
        } else {
            1
        };
        // Only a stop at the end of one period ran over it by the latency; bounded, so the
        // next period stays a period.
        let over = if elapsed < 2 * self.period {
            elapsed.saturating_sub(self.period).min(nominal / 4)
        } else {
            0
        };
        let next = nominal / 2 + (nominal as f64 * draw) as u64;
        let mut period = next.saturating_sub(over).max(MIN_PERIOD_NS);
        // SAFETY: PERF_EVENT_IOC_PERIOD reads a u64 from the pointer it is given (the
        // binding's argument type is the pointer's integer value).
        if unsafe { sys::ioctls::PERIOD(self.raw(), &mut period as *mut u64 as u64) } == 0 {
            self.period = period;
        }
        self.armed_at = count.unwrap_or(self.armed_at);
        n.min(u64::from(u32::MAX)) as u32
    }

    /// The thread's CPU time so far (ns), as the timer counts it.
    pub(super) fn count(&self) -> Option<u64> {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer.
        let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
        (n == 8).then(|| u64::from_ne_bytes(buf))
    }

    /// CPU time (ns) the thread used since its last stop.
    pub(super) fn since_last_stop(&self) -> u64 {
        self.count().map_or(0, |c| c.saturating_sub(self.armed_at))
    }

    /// Whether it has counted more than `periods` periods since its last stop: signals that
    /// do not arrive (blocked by the thread).
    pub(super) fn overdue(&self, periods: u64) -> bool {
        self.since_last_stop() > periods * self.period
    }

    /// No more signals (the thread is sampled by ticks, or ember is letting it go); the
    /// descriptor stays open so that a signal already on its way is still known as ours.
    pub(super) fn retire(&mut self) {
        // SAFETY: an ioctl without a pointer argument on our descriptor.
        unsafe { sys::ioctls::DISABLE(self.raw(), 0) };
        self.retired = true;
    }
}

/// The kernel callchains of the periods that ended since a thread's last stop, oldest
/// first, each as the kernel writes it (`PERF_CONTEXT_KERNEL`, then addresses; empty where the
/// period ended in user space).
#[derive(Default)]
pub(super) struct KernelChains {
    entries: Vec<u64>,
    /// Where each chain ends in `entries`.
    ends: Vec<usize>,
}

impl KernelChains {
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.ends.clear();
    }

    /// Add the chain of one record of a clock's buffer (a sample with only a callchain;
    /// anything else, such as a count of records lost to a full buffer, is passed over).
    fn push_record(&mut self, rec: &[u8]) {
        let word = |i: usize| {
            rec.get(i..i + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        let Some(h) = RecordHeader::parse(rec) else {
            return;
        };
        let Some(nr) = word(RecordHeader::SIZE) else {
            return;
        };
        if h.kind != PERF_RECORD_SAMPLE || rec.len() < RecordHeader::SIZE + 8 * (1 + nr as usize) {
            return;
        }
        let at = RecordHeader::SIZE + 8;
        self.entries
            .extend((0..nr as usize).filter_map(|i| word(at + 8 * i)));
        self.ends.push(self.entries.len());
    }

    /// The chain for the `i`th of `n` samples counted at one stop: the recorded chains
    /// spread evenly over them (each stands for one period of the same kernel entry); none
    /// where nothing was recorded.
    pub(super) fn for_sample(&self, i: u32, n: u32) -> &[u64] {
        let k = self.ends.len();
        if k == 0 || n == 0 {
            return &[];
        }
        let j = (i as usize * k / n as usize).min(k - 1);
        let start = if j == 0 { 0 } else { self.ends[j - 1] };
        &self.entries[start..self.ends[j]]
    }
}

fn fcntl(fd: RawFd, cmd: libc::c_int, arg: libc::c_int) -> io::Result<()> {
    // SAFETY: these fcntl commands take an integer.
    if unsafe { libc::fcntl(fd, cmd, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `si_fd` of a SIGPOLL-style siginfo (the libc crate has no accessor): on 64-bit Linux,
/// after signo, errno, code and padding (four ints), a `long si_band`, then `int si_fd`.
fn sigpoll_fd(info: &libc::siginfo_t) -> RawFd {
    const AT: usize = 4 * std::mem::size_of::<libc::c_int>() + std::mem::size_of::<libc::c_long>();
    const _: () = assert!(AT + 4 <= std::mem::size_of::<libc::siginfo_t>());
    // SAFETY: inside the siginfo_t (checked above), read unaligned.
    unsafe {
        std::ptr::read_unaligned(
            (info as *const libc::siginfo_t as *const u8).add(AT) as *const libc::c_int
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the clock's buffer holds it: a sample with only a callchain.
    fn chain_record(chain: &[u64]) -> Vec<u8> {
        let size = (RecordHeader::SIZE + 8 * (1 + chain.len())) as u16;
        let mut rec = PERF_RECORD_SAMPLE.to_ne_bytes().to_vec();
        rec.extend(0u16.to_ne_bytes());
        rec.extend(size.to_ne_bytes());
        rec.extend((chain.len() as u64).to_ne_bytes());
        for &e in chain {
            rec.extend(e.to_ne_bytes());
        }
        rec
    }

    #[test]
    fn recorded_chains_are_spread_over_the_samples_of_a_stop() {
        let mut chains = KernelChains::default();
        assert_eq!(chains.for_sample(0, 3), &[] as &[u64]);
        chains.push_record(&chain_record(&[1, 2]));
        chains.push_record(&chain_record(&[]));
        chains.push_record(&chain_record(&[3]));
        // Lost records and cut ones are passed over.
        let mut lost = chain_record(&[7]);
        lost[..4].copy_from_slice(&crate::sampler::records::PERF_RECORD_LOST.to_ne_bytes());
        chains.push_record(&lost);
        chains.push_record(&chain_record(&[4, 5])[..20]);
        // Three chains over six samples: two each, in order.
        let got: Vec<&[u64]> = (0..6).map(|i| chains.for_sample(i, 6)).collect();
        assert_eq!(got, [&[1, 2][..], &[1, 2], &[], &[], &[3], &[3]]);
        // Over one sample: the first.
        assert_eq!(chains.for_sample(0, 1), &[1, 2]);
        chains.clear();
        assert_eq!(chains.for_sample(0, 1), &[] as &[u64]);
    }

    /// On this very thread: the timer signals it (blocked here, so it is taken with
    /// sigtimedwait), the siginfo is recognized, and its count is CPU time.
    #[test]
    fn a_thread_is_signalled_after_each_period_of_its_cpu_time() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: plain signal-mask calls on a local set.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, TIMER_SIGNAL);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let timer = match CpuTimer::start(tid, 2_000_000, false, false) {
            Ok(t) => t,
            Err(e) => panic!(
                "could not open a task-clock perf event on this thread ({e}); perf events \
                 are refused here (kernel.perf_event_paranoid?)"
            ),
        };
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut spins = 0u64;
        let got = loop {
            spins = spins.wrapping_add(std::hint::black_box(1));
            // SAFETY: valid set, siginfo and timespec.
            if unsafe { libc::sigtimedwait(&set, &mut info, &ts) } == TIMER_SIGNAL {
                break true;
            }
            if timer.count().unwrap_or(0) > 2_000_000_000 {
                break false;
            }
        };
        assert!(got, "no signal after 2 s of this thread's CPU time");
        assert!(timer.sent(&info), "the signal is not known as the timer's");
        assert!(timer.count().unwrap() >= 2_000_000);
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
}
