//! The profiled command: launched gated (it waits on a pipe until sampling is armed), its
//! signals and its exit status.

use std::ffi::{CString, OsStr};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no command given: pass one after `--`, e.g. `ember record -- ./my-program args`")]
    NoCommand,
    #[error("command not found: {0:?} (not a file, and not in any directory of $PATH)")]
    NotFound(String),
    #[error("cannot run {path:?}: {source}")]
    Exec {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not start the command: {0}")]
    Spawn(std::io::Error),
    #[error("no such process: {0} (check the PID with `ps -p {0}`)")]
    NoSuchProcess(u32),
    #[error("process {0} is a kernel thread: it has no user space to profile")]
    KernelThread(u32),
    #[error("process {0} has already exited")]
    Exited(u32),
    #[error("ember cannot profile itself; pass the PID of another process")]
    Myself,
}

/// The user who ran `sudo ember ...`: (uid, gid) from `SUDO_UID`/`SUDO_GID` when ember runs as
/// root under sudo.
pub fn sudo_invoker() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid: u32 = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid: u32 = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

/// Is the process still running (not gone, not a zombie)?
pub fn is_alive(pid: u32) -> bool {
    matches!(crate::linux::proc_state(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Check that `pid` names a process ember can attach to, with a message that says why not.
pub fn check_attachable(pid: u32) -> Result<(), TargetError> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    if pid == std::process::id() {
        return Err(TargetError::Myself);
    }
    match crate::linux::proc_state(pid) {
        None => Err(TargetError::NoSuchProcess(pid)),
        Some((_, flags)) if flags & PF_KTHREAD != 0 => Err(TargetError::KernelThread(pid)),
        Some(('Z' | 'X', _)) => Err(TargetError::Exited(pid)),
        Some(_) => Ok(()),
    }
}

/// Find `program` the way `execvp` would, so a typo is reported before anything starts.
pub fn resolve_program(program: &str) -> Result<PathBuf, TargetError> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        if !p.exists() {
            return Err(TargetError::NotFound(program.to_string()));
        }
        if !is_exec(&p) {
            return Err(TargetError::Exec {
                path: p,
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_exec(p))
        .ok_or_else(|| TargetError::NotFound(program.to_string()))
}

fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A launched command, stopped before `exec` until [`GatedChild::release`].
pub struct GatedChild {
    pid: Pid,
    gate: Option<OwnedFd>,
    exec_error: OwnedFd,
    path: PathBuf,
    /// The exit code, once the child was reaped.
    exit: Option<i32>,
}

/// The exit code a process that ended with `status` stands for, as a shell gives it: its exit
/// status, or 128+N when signal N killed it. `None` while it has not ended.
pub fn exit_code(status: &WaitStatus) -> Option<i32> {
    match *status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

impl GatedChild {
    /// Fork a child that waits on a pipe, then execs `argv` (resolved through `$PATH`).
    pub fn spawn(argv: &[String]) -> Result<GatedChild, TargetError> {
        Self::spawn_as(argv, None)
    }

    /// Like [`GatedChild::spawn`], running the command as `user` = (uid, gid) when given (the
    /// user who ran `sudo ember ...`).
    pub fn spawn_as(argv: &[String], user: Option<(u32, u32)>) -> Result<GatedChild, TargetError> {
        let program = argv.first().ok_or(TargetError::NoCommand)?;
        let path = resolve_program(program)?;
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| TargetError::NotFound(program.clone()))?;
        let c_args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(OsStr::new(a).as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| TargetError::NotFound(program.clone()))?;
        let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
        c_argv.push(std::ptr::null());

        let (gate_r, gate_w) = pipe_cloexec().map_err(TargetError::Spawn)?;
        let (err_r, err_w) = pipe_cloexec().map_err(TargetError::Spawn)?;
        // SAFETY: between fork and exec the child only calls async-signal-safe functions
        // (read, write, execv, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(TargetError::Spawn(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            unsafe {
                let mut b = 0u8;
                let n = libc::read(gate_r.as_raw_fd(), &mut b as *mut u8 as *mut _, 1);
                if n != 1 {
                    // ember gave up before releasing us: never run the command unsampled.
                    libc::_exit(127);
                }
                if let Some((uid, gid)) = user {
                    let groups = [gid];
                    if libc::setgroups(1, groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        let errno = nix::errno::Errno::last_raw();
                        libc::write(
                            err_w.as_raw_fd(),
                            errno.to_le_bytes().as_ptr() as *const _,
                            4,
                        );
                        libc::_exit(127);
                    }
                }
                libc::execv(c_path.as_ptr(), c_argv.as_ptr());
                let errno = nix::errno::Errno::last_raw();
                let bytes = errno.to_le_bytes();
                libc::write(err_w.as_raw_fd(), bytes.as_ptr() as *const _, 4);
                libc::_exit(127);
            }
        }
        drop(gate_r);
        drop(err_w);
        Ok(GatedChild {
            pid: Pid::from_raw(pid),
            gate: Some(gate_w),
            exec_error: err_r,
            path,
            exit: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Let the child exec. Fails if `exec` itself failed.
    pub fn release(&mut self) -> Result<(), TargetError> {
        let gate = self.gate.take().expect("released once");
        let mut f = std::fs::File::from(gate);
        use std::io::Write;
        f.write_all(&[1]).map_err(TargetError::Spawn)?;
        drop(f);
        // The error pipe closes on a successful exec (CLOEXEC) or carries errno.
        let mut buf = [0u8; 4];
        let mut r = std::fs::File::from(self.exec_error.try_clone().map_err(TargetError::Spawn)?);
        match r.read(&mut buf) {
            Ok(4) => {
                let _ = self.wait();
                Err(TargetError::Exec {
                    path: self.path.clone(),
                    source: std::io::Error::from_raw_os_error(i32::from_le_bytes(buf)),
                })
            }
            _ => Ok(()),
        }
    }

    /// The exit code if the child has ended (without blocking): its status, or 128+N when
    /// killed by signal N.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.exit.is_some() {
            return self.exit;
        }
        self.exit = match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => exit_code(&status),
            Err(_) => Some(1),
        };
        self.exit
    }

    /// The child was reaped elsewhere (by the ptrace backend, its tracer) with this code.
    pub fn reaped(&mut self, code: i32) {
        self.exit = Some(code);
    }

    /// Block until the child ends.
    pub fn wait(&mut self) -> i32 {
        loop {
            if let Some(code) = self.exit {
                return code;
            }
            self.exit = match waitpid(self.pid, None) {
                Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => {
                    exit_code(&status)
                }
                // Traced by ember's ptrace backend and stopped (at its exit, say): let it go
                // on, with the signal it stopped for, or this wait never ends.
                Ok(WaitStatus::Stopped(_, sig)) => {
                    let _ = nix::sys::ptrace::cont(self.pid, sig);
                    None
                }
                Ok(WaitStatus::PtraceEvent(..)) => {
                    let _ = nix::sys::ptrace::cont(self.pid, None);
                    None
                }
                Ok(_) | Err(nix::errno::Errno::EINTR) => None,
                Err(_) => Some(1),
            };
        }
    }

    /// Pass on a signal ember received: a Ctrl-C from the terminal already reached the command
    /// (same process group), anything sent to ember alone is forwarded.
    pub fn pass_on(&self, sig: Signal, from_process: bool) {
        if sig != Signal::SIGINT || from_process {
            self.signal(sig);
        }
    }

    pub fn signal(&self, sig: Signal) {
        if self.exit.is_none() {
            let _ = signal::kill(self.pid, sig);
        }
    }
}

impl Drop for GatedChild {
    fn drop(&mut self) {
        // Never released: the child is still blocked before `exec`, so killing it ends it
        // without the command ever running. (Closing the gate alone is not enough when another
        // fork holds a copy of its write end.)
        if self.gate.take().is_some() {
            let _ = signal::kill(self.pid, Signal::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Signals ember received and has not handled yet (signal number, or 0), and whether the
/// sender was the terminal (a Ctrl-C the command also received) or a process.
static PENDING_SIGNAL: AtomicI32 = AtomicI32::new(0);
static PENDING_FROM_USER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let code = unsafe { info.as_ref().map(|i| i.si_code).unwrap_or(0) };
    PENDING_FROM_USER.store(i32::from(code <= 0), Ordering::SeqCst);
    PENDING_SIGNAL.store(sig, Ordering::SeqCst);
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// `kill -USR1 <ember>` asks for the outputs now; the recording goes on.
static SNAPSHOT_REQUESTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    SNAPSHOT_REQUESTED.store(1, Ordering::SeqCst);
}

/// Whether SIGUSR1 came since the last call.
pub fn take_snapshot_request() -> bool {
    SNAPSHOT_REQUESTED.swap(0, Ordering::SeqCst) != 0
}

/// Catch SIGINT, SIGTERM and SIGHUP (so ember can still write its outputs) and SIGCHLD (so
/// waiting wakes up when the command ends). Handlers, not SIG_IGN, so the command starts with
/// default dispositions after `exec`.
pub fn install_signal_handlers() {
    let act = SigAction::new(
        SigHandler::SigAction(on_signal),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    let chld = SigAction::new(
        SigHandler::Handler(on_sigchld),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handlers only store to atomics.
    unsafe {
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            let _ = signal::sigaction(s, &act);
        }
        let _ = signal::sigaction(Signal::SIGCHLD, &chld);
        let usr1 = SigAction::new(
            SigHandler::Handler(on_sigusr1),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let _ = signal::sigaction(Signal::SIGUSR1, &usr1);
    }
}

/// Has ember received a signal that [`take_signal`] has not taken yet?
pub fn signal_pending() -> bool {
    PENDING_SIGNAL.load(Ordering::SeqCst) != 0
}

/// A signal ember received since the last call: (signal, sent by a process rather than the
/// terminal).
pub fn take_signal() -> Option<(Signal, bool)> {
    let s = PENDING_SIGNAL.swap(0, Ordering::SeqCst);
    if s == 0 {
        return None;
    }
    let from_user = PENDING_FROM_USER.load(Ordering::SeqCst) != 0;
    Signal::try_from(s).ok().map(|sig| (sig, from_user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachable_processes() {
        assert!(matches!(
            check_attachable(std::process::id()),
            Err(TargetError::Myself)
        ));
        assert!(matches!(
            check_attachable(u32::MAX - 1),
            Err(TargetError::NoSuchProcess(_))
        ));
        // kthreadd is pid 2 on Linux.
        assert!(matches!(
            check_attachable(2),
            Err(TargetError::KernelThread(2))
        ));
        assert!(check_attachable(1).is_ok());
        assert!(is_alive(std::process::id()));
    }

    #[test]
    fn resolves_through_path() {
        assert!(resolve_program("sh").unwrap().is_absolute());
        assert!(matches!(
            resolve_program("definitely-not-a-command-xyz"),
            Err(TargetError::NotFound(_))
        ));
        assert!(matches!(
            resolve_program("./no/such/file"),
            Err(TargetError::NotFound(_))
        ));
    }

    #[test]
    fn gated_child_runs_only_when_released() {
        let mut c = GatedChild::spawn(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        c.release().unwrap();
        assert_eq!(c.wait(), 7);

        let mut c = GatedChild::spawn(&["sh".into(), "-c".into(), "kill -9 $$".into()]).unwrap();
        c.release().unwrap();
        assert_eq!(c.wait(), 137);

        // Dropped without release: the command never runs.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let c = GatedChild::spawn(&[
            "sh".into(),
            "-c".into(),
            format!("touch {}", marker.display()),
        ])
        .unwrap();
        drop(c);
        assert!(!marker.exists());
    }
}
