//! The system calls the ptrace backend makes, in one place: through nix where nix wraps them,
//! raw libc where it does not — `PTRACE_LISTEN` and `sigtimedwait` have no nix wrapper, and
//! resuming with a signal, or reading a wait status, must carry any signal number (nix's
//! `Signal` has no real-time signals, which a tracee may stop for and must get back).

use std::io;

use nix::sys::ptrace::{self, Options};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;

use crate::arch;

fn pid(tid: u32) -> Pid {
    Pid::from_raw(tid as i32)
}

/// The events every tracee reports: new threads (attached by the kernel), and with
/// `children` new processes too, `exec`, and exit.
fn options(children: bool) -> Options {
    let threads =
        Options::PTRACE_O_TRACECLONE | Options::PTRACE_O_TRACEEXEC | Options::PTRACE_O_TRACEEXIT;
    if children {
        threads | Options::PTRACE_O_TRACEFORK | Options::PTRACE_O_TRACEVFORK
    } else {
        threads
    }
}

/// Trace `tid` without stopping it, and with `children` the processes it starts.
pub(super) fn seize(tid: u32, children: bool) -> io::Result<()> {
    ptrace::seize(pid(tid), options(children)).map_err(io::Error::from)
}

/// Make a tracee stop soon (it reports the stop through waitpid).
pub(super) fn interrupt(tid: u32) -> bool {
    ptrace::interrupt(pid(tid)).is_ok()
}

/// A stopped tracee's registers.
pub(super) fn registers(tid: u32) -> Option<arch::PtraceRegs> {
    ptrace::getregs(pid(tid)).ok()
}

/// The message of the ptrace event a tracee stopped for (a new thread's id, ...).
pub(super) fn event_msg(tid: u32) -> u64 {
    ptrace::getevent(pid(tid)).map_or(0, |m| m as u64)
}

/// Let a stopped tracee go on, delivering `sig` (0: none); with `detach`, no longer traced.
pub(super) fn resume(tid: u32, sig: i32, detach: bool) {
    let request = if detach {
        libc::PTRACE_DETACH
    } else {
        libc::PTRACE_CONT
    };
    // SAFETY: CONT and DETACH take integer arguments.
    unsafe { libc::ptrace(request, tid as libc::pid_t, 0, sig as usize) };
}

/// Hold a tracee in its group-stop (SIGSTOP, ^Z) while still hearing of its events.
pub(super) fn listen(tid: u32) {
    // SAFETY: LISTEN takes integer arguments.
    unsafe { libc::ptrace(libc::PTRACE_LISTEN, tid as libc::pid_t, 0, 0) };
}

/// The next tracee state change that is ready, without blocking: `Ok(None)` when none is,
/// `Err` when no traced thread is left.
pub(super) fn next_status() -> io::Result<Option<(u32, i32)>> {
    let mut status = 0;
    // SAFETY: waitpid with a valid status pointer.
    let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
    match tid {
        t if t < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        t => Ok(Some((t as u32, status))),
    }
}

/// Pieces one `process_vm_readv` takes at most (the kernel's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Copy up to `buf.len()` bytes of a thread's stack from `sp` up; returns how many could be
/// read (the copy stops at the first unmapped page).
pub(super) fn read_stack(tid: u32, sp: u64, buf: &mut [u8]) -> usize {
    const PAGE: u64 = 4096;
    let end = sp.saturating_add(buf.len() as u64);
    // One piece per page, so the copy ends at the first page that is not mapped.
    let mut remote = Vec::with_capacity(buf.len() / PAGE as usize + 2);
    let mut at = sp;
    while at < end {
        let stop = ((at / PAGE) + 1) * PAGE;
        let stop = stop.min(end);
        remote.push(RemoteIoVec {
            base: at as usize,
            len: (stop - at) as usize,
        });
        at = stop;
    }
    // More than 4 MiB of stack is more pieces than one call takes.
    let mut read = 0;
    for chunk in remote.chunks(IOV_MAX) {
        let len: usize = chunk.iter().map(|r| r.len).sum();
        let mut local = [io::IoSliceMut::new(&mut buf[read..read + len])];
        let n = process_vm_readv(pid(tid), &mut local, chunk).unwrap_or(0);
        read += n;
        if n < len {
            break;
        }
    }
    read
}

/// Read the `pieces` (start, bytes) of a thread's memory into `buf`, back to back; whether
/// every piece could be read whole.
pub(super) fn read_pieces(tid: u32, pieces: &[(u64, usize)], buf: &mut Vec<u8>) -> bool {
    let total: usize = pieces.iter().map(|p| p.1).sum();
    buf.clear();
    buf.resize(total, 0);
    let mut at = 0;
    for chunk in pieces.chunks(IOV_MAX) {
        let remote: Vec<RemoteIoVec> = chunk
            .iter()
            .map(|&(base, len)| RemoteIoVec {
                base: base as usize,
                len,
            })
            .collect();
        let len: usize = chunk.iter().map(|p| p.1).sum();
        let mut local = [io::IoSliceMut::new(&mut buf[at..at + len])];
        if process_vm_readv(pid(tid), &mut local, &remote).ok() != Some(len) {
            return false;
        }
        at += len;
    }
    true
}

/// The most stack a ptrace sample copies: the usual limit of a main thread's stack.
pub(super) const MAX_WHOLE_STACK: usize = 8 << 20;

/// SIGCHLD as it was before [`take_sigchld`].
pub(super) struct SavedSigchld {
    action: SigAction,
    mask: SigSet,
}

extern "C" fn nothing(_: libc::c_int) {}

/// Stops of tracees are announced by SIGCHLD (a handler without `SA_NOCLDSTOP`, which would
/// hide ptrace stops); it is blocked in this thread and waited for with [`wait_sigchld`].
pub(super) fn take_sigchld() -> SavedSigchld {
    let act = SigAction::new(
        SigHandler::Handler(nothing),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing.
    let action = unsafe { signal::sigaction(Signal::SIGCHLD, &act) }.unwrap_or(act);
    let mut mask = SigSet::empty();
    let _ = signal::pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&SigSet::from(Signal::SIGCHLD)),
        Some(&mut mask),
    );
    SavedSigchld { action, mask }
}

/// Put back what [`take_sigchld`] changed.
pub(super) fn give_back_sigchld(saved: &SavedSigchld) {
    // SAFETY: restoring the handler that was installed before.
    let _ = unsafe { signal::sigaction(Signal::SIGCHLD, &saved.action) };
    let _ = signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved.mask), None);
}

/// Wait up to `ns` for SIGCHLD (blocked in this thread). False when another signal came.
pub(super) fn wait_sigchld(ns: u64) -> bool {
    let set = SigSet::from(Signal::SIGCHLD);
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid signal set and timespec; no siginfo wanted.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    !(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR))
}
