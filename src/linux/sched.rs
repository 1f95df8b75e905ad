//! The clock every record is stamped with, and the scheduling of ember's own threads: the
//! reader of the ring buffers runs at a raised priority with a short time slice where allowed,
//! and gives both back once sampling is over.

use nix::errno::Errno;

/// `CLOCK_MONOTONIC` in nanoseconds: the clock every backend stamps its records with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How far the thread that reads the buffers is raised above the target's priority.
pub const READER_PRIORITY_BOOST: i32 = 20;

/// The time slice the reader asks for: the shortest the kernel takes (0.1 ms).
const READER_SLICE_NS: u64 = 100_000;

/// The calling thread's nice value (a per-thread attribute on Linux); `None` where the kernel
/// does not say.
pub fn thread_nice() -> Option<i32> {
    // -1 is a valid nice value: only errno tells a failure apart.
    Errno::clear();
    // SAFETY: getpriority has no memory-safety preconditions.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    (nice != -1 || Errno::last_raw() == 0).then_some(nice)
}

/// Raise the calling thread's priority by [`READER_PRIORITY_BOOST`] where allowed (root or
/// `CAP_SYS_NICE`). A target with a thousand runnable threads on a few cores otherwise
/// starves the reader of CPU for hundreds of milliseconds and the ring buffers overflow: at
/// nice 0 the reader's fair share is 1/500 of a core, at -20 about 15 % (weights 1024 and
/// 88761 against 500 threads of 1024 per core), and reading, unwinding and aggregating 2,000
/// samples a second needs a few percent of a core. Raising it only once the buffers are found
/// filling up comes too late (the starved reader does not get to look). Call it after the
/// command was forked, so the command keeps the user's priority, and
/// [`reset_thread_priority`] once sampling is over. Returns the new nice value, or `None`
/// when refused.
pub fn raise_reader_priority() -> Option<i32> {
    let current = thread_nice()?;
    let wanted = (current - READER_PRIORITY_BOOST).max(-20);
    if wanted >= current {
        return Some(current);
    }
    // SAFETY: setpriority has no memory-safety preconditions.
    (unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, wanted) } == 0).then_some(wanted)
}

/// Ask the scheduler to run the calling thread soon after it wakes, by giving it a short time
/// slice (`sched_attr.sched_runtime` for `SCHED_OTHER`, Linux 6.12 and later, allowed without
/// privileges). EEVDF picks the eligible thread with the earliest virtual deadline, and a
/// thread's deadline is its slice away: with 0.1 ms instead of the default ~3 ms, the reader
/// woken by a filling ring buffer goes ahead of a thousand runnable threads of the target,
/// as long as it has not used more than its fair share of the CPU. Keeps the current nice
/// value. False where the kernel refuses.
pub fn request_short_slice() -> bool {
    set_sched_attr(thread_nice().unwrap_or(0), READER_SLICE_NS)
}

/// Give the calling thread back nice value `nice` and the default time slice, once sampling
/// is over: symbolizing and writing need no priority, and at nice -20 they would crowd out
/// everything else on the machine (the profiled command, if it runs on, among them).
pub fn reset_thread_priority(nice: i32) {
    if !set_sched_attr(nice, 0) {
        // Kernels without sched_setattr's slice: the nice value alone.
        // SAFETY: setpriority has no memory-safety preconditions.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    }
}

/// `sched_setattr` of the calling thread: `SCHED_OTHER` at `nice`, with a time slice of
/// `runtime_ns` (0: the kernel's default).
fn set_sched_attr(nice: i32, runtime_ns: u64) -> bool {
    // SAFETY: sched_attr is plain data; zero is a valid value for every field.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    attr.sched_nice = nice;
    attr.sched_runtime = runtime_ns;
    // SAFETY: attr is a valid sched_attr of the size given; pid 0 is the calling thread.
    unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nice_value_of_this_thread_is_known() {
        let nice = thread_nice().expect("getpriority answers for the calling thread");
        assert!((-20..=19).contains(&nice));
    }
}
