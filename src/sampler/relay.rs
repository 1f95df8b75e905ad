//! A reader in a process of its own, for when ember cannot raise its reader's priority.
//!
//! Without root or `CAP_SYS_NICE` the thread that empties the perf ring buffers runs at the
//! target's priority, and a target with a thousand runnable threads keeps it off the CPU for
//! hundreds of milliseconds: the ring buffers, small without privileges (locked memory is
//! scarce), overflow. Where autogroups apply (`kernel.sched_autogroup_enabled`, processes in
//! the root cgroup) the scheduler shares the CPU between sessions first, so a reader in a
//! session of its own runs as soon as it wakes however many threads the target has. ember
//! forks such a reader before it starts any thread of its own: the child inherits the mappings
//! of the same ring buffers, moves their records into a large buffer shared with ember (ordinary memory, not
//! locked) and signals each delivery on a pipe; ember reads them from there at its own pace.
//! Where the shared buffer is too full to take everything the ring buffers may hold, the
//! child leaves them alone and the kernel counts what it drops, as it does without a relay.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::perf::PerfSampler;
use super::{OpenedEvent, RecordBatch, SampleLayout, Sampler};

/// The shared buffer holds at least this much, and eight times the ring buffers' total.
const MIN_SHARED_BYTES: usize = 64 << 20;

/// Per record in the shared buffer: its length (u32, `u32::MAX` for "continue at the start"),
/// four bytes of padding and its timestamp; then the record, padded to 8 bytes.
const ENTRY_HEADER: usize = 16;
const WRAP: u32 = u32::MAX;

/// Offsets in the control page before the data: what the writer and the reader own.
const HEAD: usize = 0;
const TAIL: usize = 64;
const STOP: usize = 128;
const CONTROL: usize = 4096;

/// A byte ring in memory shared with a forked child: one process writes records, the other
/// reads them. Positions count bytes from the start and only grow.
struct SharedRing {
    base: NonNull<u8>,
    map_len: usize,
    capacity: usize,
}

// SAFETY: the mapping is owned by this struct; the atomics in it order every access.
unsafe impl Send for SharedRing {}

impl SharedRing {
    /// A ring of `capacity` bytes (a multiple of 8), its pages touched now so that writing
    /// into it later costs no page faults.
    fn new(capacity: usize) -> io::Result<SharedRing> {
        let map_len = CONTROL + capacity;
        // SAFETY: an anonymous shared mapping with no address hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p as *mut u8).expect("mmap returned null");
        for off in (0..map_len).step_by(4096) {
            // SAFETY: inside the mapping just made.
            unsafe { base.as_ptr().add(off).write_volatile(0) };
        }
        Ok(SharedRing {
            base,
            map_len,
            capacity,
        })
    }

    fn counter(&self, at: usize) -> &AtomicU64 {
        // SAFETY: the control page is mapped as long as self and 8-byte aligned at `at`.
        unsafe { &*(self.base.as_ptr().add(at) as *const AtomicU64) }
    }

    fn data(&self, off: usize) -> *mut u8 {
        debug_assert!(off < self.capacity);
        // SAFETY: inside the data area.
        unsafe { self.base.as_ptr().add(CONTROL + off) }
    }

    /// Bytes free for the writer.
    fn free(&self) -> usize {
        let used =
            self.counter(HEAD).load(Ordering::Relaxed) - self.counter(TAIL).load(Ordering::Acquire);
        self.capacity - used as usize
    }

    /// Writer: add a record; false (and nothing written) when it does not fit.
    fn write(&self, time: u64, rec: &[u8]) -> bool {
        let need = ENTRY_HEADER + rec.len().next_multiple_of(8);
        let head = self.counter(HEAD).load(Ordering::Relaxed);
        let off = (head % self.capacity as u64) as usize;
        let to_end = self.capacity - off;
        let skip = if to_end < need { to_end } else { 0 };
        if self.free() < skip + need {
            return false;
        }
        let start = if skip > 0 { 0 } else { off };
        // SAFETY: the reader does not look at bytes past HEAD, and these are free (checked).
        unsafe {
            if skip > 0 {
                (self.data(off) as *mut u32).write(WRAP);
            }
            let at = self.data(start);
            (at as *mut u32).write(rec.len() as u32);
            (at.add(8) as *mut u64).write(time);
            std::ptr::copy_nonoverlapping(rec.as_ptr(), at.add(ENTRY_HEADER), rec.len());
        }
        self.counter(HEAD)
            .store(head + (skip + need) as u64, Ordering::Release);
        true
    }

    /// Reader: move every record written so far into `batch`; returns how many.
    fn read_into(&self, batch: &mut RecordBatch) -> usize {
        let head = self.counter(HEAD).load(Ordering::Acquire);
        let mut tail = self.counter(TAIL).load(Ordering::Relaxed);
        let mut n = 0;
        while tail < head {
            let off = (tail % self.capacity as u64) as usize;
            // SAFETY: the writer published everything before HEAD (Acquire above).
            let len = unsafe { (self.data(off) as *const u32).read() };
            if len == WRAP {
                tail += (self.capacity - off) as u64;
                continue;
            }
            let len = len as usize;
            // SAFETY: as above; a record lies whole inside the data area.
            let (time, rec) = unsafe {
                let at = self.data(off);
                let time = (at.add(8) as *const u64).read();
                (time, std::slice::from_raw_parts(at.add(ENTRY_HEADER), len))
            };
            batch.push(time, rec, &[]);
            tail += (ENTRY_HEADER + len.next_multiple_of(8)) as u64;
            n += 1;
        }
        self.counter(TAIL).store(tail, Ordering::Release);
        n
    }

    fn request_stop(&self) {
        self.counter(STOP).store(1, Ordering::Release);
    }

    fn stop_requested(&self) -> bool {
        self.counter(STOP).load(Ordering::Acquire) != 0
    }
}

impl Drop for SharedRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr() as *mut _, self.map_len) };
    }
}

/// Why the relay could not start; the caller then reads the ring buffers itself.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("ember already runs other threads, and only a single-threaded process may fork")]
    Threads,
    #[error("could not set up the reader process: {0}")]
    Setup(#[from] io::Error),
    #[error("could not fork the reader process: {0}")]
    Fork(#[from] nix::Error),
}

/// Perf events whose ring buffers a child process in its own session empties.
pub struct RelayedSampler {
    perf: PerfSampler,
    ring: SharedRing,
    /// The reader process, until it has ended and been reaped.
    helper: Option<Pid>,
    helper_pid: Pid,
    /// Readable when the helper delivered records; end of file once it is gone.
    wake: OwnedFd,
    /// Records taken while the helper finished, handed out by the next `drain`.
    stopping: RecordBatch,
    notes: Vec<String>,
    /// More descriptors that end a wait when readable (see [`Sampler::wake_on`]).
    wake_fds: Vec<RawFd>,
}

/// Fork the reader process for `perf`. Call it before ember starts any thread. On error the
/// sampler comes back untouched, to be read in this process.
///
/// One process maps the ring buffers at a time: two mappings of a perf buffer each count
/// against the user's locked memory and the kernel gives back only one when the last goes,
/// and perf mappings are not inherited across `fork`. So this process reads what is there,
/// unmaps them, and the child maps them; events that count already (attached) are paused
/// meanwhile, so nothing is taken while no one maps them.
pub fn start(mut perf: PerfSampler) -> Result<RelayedSampler, Box<(PerfSampler, RelayError)>> {
    if crate::linux::status_field("self", "Threads").as_deref() != Some("1") {
        return Err(Box::new((perf, RelayError::Threads)));
    }
    let capacity = MIN_SHARED_BYTES.max(8 * perf.buffer_bytes());
    let ring = match SharedRing::new(capacity) {
        Ok(r) => r,
        Err(e) => return Err(Box::new((perf, e.into()))),
    };
    let (wake, wake_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
        Ok(p) => p,
        Err(e) => return Err(Box::new((perf, RelayError::Fork(e)))),
    };
    let running = perf.running();
    if running {
        perf.disable();
    }
    let mut early = RecordBatch::new();
    perf.drain(&mut early);
    perf.unmap_buffers();
    let parent = nix::unistd::getpid();
    // SAFETY: this process has one thread (checked above), so the child may run any code.
    let helper = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                helper_main(perf, ring, wake_w, parent).is_ok()
            }));
            // SAFETY: leave without running the parent's destructors (they own the command).
            unsafe { libc::_exit(if matches!(ok, Ok(true)) { 0 } else { 1 }) }
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return Err(Box::new((take_back(perf, running), RelayError::Fork(e)))),
    };
    drop(wake_w);
    if !helper_ready(&wake) {
        let _ = signal::kill(helper, Signal::SIGKILL);
        let status = waitpid(helper, None).ok();
        let why = io::Error::other(format!("it did not start ({})", describe(status)));
        return Err(Box::new((take_back(perf, running), why.into())));
    }
    if running {
        perf.enable();
    }
    let notes = perf.notes.clone();
    Ok(RelayedSampler {
        perf,
        ring,
        helper: Some(helper),
        helper_pid: helper,
        wake,
        stopping: early,
        notes,
        wake_fds: Vec::new(),
    })
}

/// The sampler read in this process again after the relay could not start.
fn take_back(mut perf: PerfSampler, running: bool) -> PerfSampler {
    if let Err(e) = perf.map_buffers() {
        perf.notes.push(format!(
            "the perf ring buffers could not be mapped again ({e}): samples are lost"
        ));
    }
    if running {
        perf.enable();
    }
    perf
}

/// Wait for the helper's first byte: it mapped the buffers and reads them. A signal that
/// interrupts the wait is not an answer; a machine so busy that the helper takes half a minute
/// to start is.
fn helper_ready(wake: &OwnedFd) -> bool {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut fds = [PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(1000u16)) {
            Ok(n) if n > 0 => break,
            Ok(_) | Err(nix::Error::EINTR) if std::time::Instant::now() < until => continue,
            _ => return false,
        }
    }
    let mut byte = [0u8; 1];
    nix::unistd::read(wake, &mut byte) == Ok(1)
}

extern "C" fn on_wake(_: libc::c_int) {}

/// The reader process: a session of its own, the ring buffers mapped again, then move
/// records until ember asks it to stop and the buffers are empty.
fn helper_main(
    mut perf: PerfSampler,
    ring: SharedRing,
    wake: OwnedFd,
    parent: Pid,
) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        return Ok(()); // ember is already gone
    }
    nix::unistd::setsid()?;
    let mut keep = perf.raw_fds();
    keep.extend([0, 1, 2, wake.as_raw_fd()]);
    close_all_but(&keep);
    perf.map_buffers()?;
    // SIGUSR1 interrupts the wait for records when ember asks the helper to stop.
    let act = SigAction::new(
        SigHandler::Handler(on_wake),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing.
    unsafe { signal::sigaction(Signal::SIGUSR1, &act) }?;
    crate::linux::sched::request_short_slice();
    // Tell ember the buffers are mapped here.
    nix::unistd::write(&wake, &[1u8]).map_err(io::Error::from)?;
    move_records(&mut perf, &ring, wake.as_raw_fd());
    Ok(())
}

/// Move records from the ring buffers to the shared ring until a stop is asked and nothing
/// is left.
fn move_records(perf: &mut PerfSampler, ring: &SharedRing, wake: RawFd) {
    // A record takes at most three times its size in the ring (16 bytes of entry header on
    // records of 24 bytes or more) plus the rest of a lap.
    let room = 3 * perf.buffer_bytes() + (64 << 10);
    let mut batch = RecordBatch::with_memory(perf.buffer_bytes().min(16 << 20));
    loop {
        let stopping = ring.stop_requested();
        if ring.free() < room {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        batch.clear();
        let moved = perf.drain(&mut batch);
        for (time, rec) in batch.records() {
            let written = ring.write(time, rec);
            debug_assert!(written, "room was checked");
        }
        if moved > 0 {
            // SAFETY: writing one byte from a valid buffer; a full pipe already says it.
            unsafe { libc::write(wake, [1u8].as_ptr() as *const _, 1) };
        } else if stopping {
            return;
        }
        if !stopping {
            perf.wait(100);
        }
    }
}

/// Close every descriptor but `keep` (the command's gate and the like belong to ember).
fn close_all_but(keep: &[RawFd]) {
    let Ok(open) = crate::linux::own_fds() else {
        return;
    };
    // The sampler's perf events and BPF objects (maps, program, and the BTF the loader
    // keeps) stay: the BPF program's ring of records is read and waited on here, and the
    // sampler closes them all when dropped (closing one twice aborts a debug build).
    let ours = |fd: &RawFd| {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|l| {
            let l = l.to_string_lossy();
            l.starts_with("anon_inode:bpf")
                || l == "anon_inode:btf"
                || l == "anon_inode:[perf_event]"
        })
    };
    for fd in open
        .into_iter()
        .filter(|fd| !keep.contains(fd) && !ours(fd))
    {
        // SAFETY: closing descriptors this process does not use.
        unsafe { libc::close(fd) };
    }
}

impl RelayedSampler {
    /// The helper ended: reap it, say so if it failed, and read the ring buffers here.
    fn helper_gone(&mut self, status: Option<WaitStatus>) {
        let Some(pid) = self.helper.take() else {
            return;
        };
        let status = status.or_else(|| waitpid(pid, None).ok());
        if !matches!(status, Some(WaitStatus::Exited(_, 0))) {
            let _ = self.perf.map_buffers();
            self.notes.push(format!(
                "ember's reader process (pid {pid}) ended early ({}): the records it had taken \
                 and those in the ring buffers then are missing, and ember read the ring \
                 buffers itself from then on",
                describe(status)
            ));
        }
    }

    /// Take the pipe's wake-up bytes; true when the helper closed it.
    fn take_wakeups(&self) -> bool {
        let mut buf = [0u8; 256];
        loop {
            match nix::unistd::read(&self.wake, &mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// How a process ended, in words.
fn describe(status: Option<WaitStatus>) -> String {
    match status {
        Some(WaitStatus::Exited(_, code)) => format!("exit code {code}"),
        Some(WaitStatus::Signaled(_, sig, _)) => format!("killed by {sig}"),
        other => format!("{other:?}"),
    }
}

impl Sampler for RelayedSampler {
    fn layout(&self) -> SampleLayout {
        self.perf.layout()
    }

    fn drain(&mut self, batch: &mut RecordBatch) -> usize {
        let mut n = self.stopping.len();
        for (time, rec) in self.stopping.records() {
            batch.push(time, rec, &[]);
        }
        self.stopping.clear();
        n += self.ring.read_into(batch);
        if self.helper.is_none() {
            n += self.perf.drain(batch);
        }
        n
    }

    fn wait(&mut self, timeout_ms: i32) {
        if self.helper.is_none() {
            return self.perf.wait(timeout_ms);
        }
        // SAFETY: whoever gave these descriptors keeps them open while sampling.
        let extra = self
            .wake_fds
            .iter()
            .map(|&fd| unsafe { BorrowedFd::borrow_raw(fd) });
        let mut fds: Vec<PollFd> = std::iter::once(self.wake.as_fd())
            .chain(extra)
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        let timeout = PollTimeout::try_from(timeout_ms.max(0)).unwrap_or(PollTimeout::MAX);
        let _ = poll(&mut fds, timeout);
        if self.take_wakeups() {
            self.helper_gone(None);
        }
    }

    fn wake_on(&mut self, fd: RawFd) {
        self.wake_fds.push(fd);
        self.perf.wake_on(fd);
    }

    fn disable(&mut self) {
        self.perf.disable();
        let Some(pid) = self.helper else {
            return;
        };
        self.ring.request_stop();
        let _ = signal::kill(pid, Signal::SIGUSR1);
        // The helper empties the ring buffers into the shared one, which must not fill up
        // meanwhile: take records out until it has ended.
        let status = loop {
            self.ring.read_into(&mut self.stopping);
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {
                    let mut fds = [PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
                    let _ = poll(&mut fds, PollTimeout::from(10u8));
                    self.take_wakeups();
                }
                status => break status.ok(),
            }
        };
        self.ring.read_into(&mut self.stopping);
        self.helper_gone(status);
    }

    fn event(&self) -> OpenedEvent {
        self.perf.event()
    }

    fn detail(&self) -> String {
        format!(
            "{}; read by a process of its own session (pid {})",
            self.perf.detail(),
            self.helper_pid
        )
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }

    fn samples_switches(&self) -> bool {
        self.perf.samples_switches()
    }

    fn enable(&mut self) {
        self.perf.enable();
    }

    /// The maps stay with this process (the collector's): the helper only reads the rings.
    fn take_bpf_maps(&mut self) -> Option<super::bpf::BpfMaps> {
        self.perf.take_bpf_maps()
    }

    fn relayed(&self) -> bool {
        true
    }
}

impl Drop for RelayedSampler {
    fn drop(&mut self) {
        if let Some(pid) = self.helper.take() {
            let _ = signal::kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_out_in_order_across_laps_and_a_full_ring_refuses() {
        let ring = SharedRing::new(256).unwrap();
        let mut out = RecordBatch::new();
        let mut seen = Vec::new();
        for i in 0..100u64 {
            let rec = vec![i as u8; 8 + (i as usize % 5) * 8];
            assert!(ring.write(i, &rec), "record {i}");
            if i % 3 == 2 {
                ring.read_into(&mut out);
                seen.extend(out.records().map(|(t, r)| (t, r.to_vec())));
                out.clear();
            }
        }
        ring.read_into(&mut out);
        seen.extend(out.records().map(|(t, r)| (t, r.to_vec())));
        assert_eq!(seen.len(), 100);
        for (i, (t, r)) in seen.iter().enumerate() {
            assert_eq!((*t, r.len()), (i as u64, 8 + (i % 5) * 8));
            assert!(r.iter().all(|&b| b == i as u8));
        }
        let mut n = 0;
        while ring.write(n, &[7u8; 40]) {
            n += 1;
        }
        assert!(n >= 3, "{n} records of 56 bytes in 256");
        assert!(ring.free() < 2 * 56);
        assert_eq!(ring.read_into(&mut out), n as usize);
        assert!(ring.write(0, &[7u8; 40]));
    }

    #[test]
    fn a_stop_request_is_seen() {
        let ring = SharedRing::new(64).unwrap();
        assert!(!ring.stop_requested());
        ring.request_stop();
        assert!(ring.stop_requested());
    }
}
