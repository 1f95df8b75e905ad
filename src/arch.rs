//! What is particular to the processor, in one place: the registers a sample carries and how
//! perf and ptrace give them, the unwinder's types, and the syscall table. ember builds for
//! x86-64 only (lib.rs refuses other targets); a port adds a module beside `x86_64` here.

#[cfg(target_arch = "x86_64")]
mod x86_64 {
    use perf_event_open_sys::bindings as b;

    pub use framehop::x86_64::{
        CacheX86_64 as UnwindCache, UnwindRegsX86_64 as UnwindRegs, UnwinderX86_64 as Unwinder,
    };
    pub use syscalls::x86_64::Sysno;

    use super::UserRegs;

    /// The perf register numbers ember asks for in each sample (`sample_regs_user`): what a
    /// DWARF unwinder starts from.
    pub const PERF_REG_BP: u32 = b::PERF_REG_X86_BP;
    pub const PERF_REG_SP: u32 = b::PERF_REG_X86_SP;
    pub const PERF_REG_IP: u32 = b::PERF_REG_X86_IP;

    /// `restart_syscall`: what an interrupted sleep continues as.
    pub const RESTART_SYSCALL: u64 = Sysno::restart_syscall as u64;

    /// A stopped thread's registers as `PTRACE_GETREGS` fills them.
    pub type PtraceRegs = libc::user_regs_struct;

    /// What the unwinder needs of a stopped thread's registers, and the syscall it is in.
    pub fn from_ptrace(regs: &PtraceRegs) -> (UserRegs, Option<u64>) {
        let user = UserRegs {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
        };
        // orig_rax holds the syscall number while in one, -1 otherwise.
        let syscall = (regs.orig_rax as i64 >= 0).then_some(regs.orig_rax);
        (user, syscall)
    }

    /// The thread stopped at the end of a syscall that waits (a sleep, a poll, a futex wait):
    /// woken, or broken by the stop itself (the result is one of the kernel's "interrupted,
    /// restart me" codes or `EINTR`). It was asleep or just woken, not running, when
    /// interrupted: a CPU profile's sample does not belong here.
    pub fn stopped_after_a_wait(regs: &PtraceRegs) -> bool {
        // -ERESTARTSYS, -ERESTARTNOINTR, -ERESTARTNOHAND, -ENOIOCTLCMD, -ERESTART_RESTARTBLOCK.
        const RESTARTS: std::ops::RangeInclusive<i64> = -516..=-512;
        let result = regs.rax as i64;
        let broken = RESTARTS.contains(&result) || result == -i64::from(libc::EINTR);
        regs.orig_rax as i64 >= 0 && (broken || waits(regs.orig_rax, regs.rsi))
    }

    /// Syscall `nr` (with second argument `arg2`) is one a thread calls to wait.
    fn waits(nr: u64, arg2: u64) -> bool {
        const WAITS: [Sysno; 16] = [
            Sysno::nanosleep,
            Sysno::clock_nanosleep,
            Sysno::poll,
            Sysno::ppoll,
            Sysno::select,
            Sysno::pselect6,
            Sysno::epoll_wait,
            Sysno::epoll_pwait,
            Sysno::epoll_pwait2,
            Sysno::wait4,
            Sysno::waitid,
            Sysno::pause,
            Sysno::rt_sigsuspend,
            Sysno::rt_sigtimedwait,
            Sysno::restart_syscall,
            Sysno::futex_waitv,
        ];
        // FUTEX_WAIT, FUTEX_LOCK_PI, FUTEX_WAIT_BITSET, FUTEX_WAIT_REQUEUE_PI, FUTEX_LOCK_PI2
        // (without the PRIVATE and CLOCK_REALTIME flags); a wake does not wait.
        const FUTEX_WAITS: [u64; 5] = [0, 6, 9, 11, 13];
        if nr == Sysno::futex as u64 {
            return FUTEX_WAITS.contains(&(arg2 & 0x7f));
        }
        WAITS.iter().any(|&w| w as u64 == nr)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Registers stopped after syscall `nr` (-1: not in one) returned `result`.
        fn after(nr: i64, result: i64, arg2: u64) -> PtraceRegs {
            // SAFETY: user_regs_struct is plain integers; all zeros is a valid value.
            let mut regs: PtraceRegs = unsafe { std::mem::zeroed() };
            regs.orig_rax = nr as u64;
            regs.rax = result as u64;
            regs.rsi = arg2;
            regs
        }

        #[test]
        fn a_stop_after_a_wait_is_told_from_one_after_work() {
            let nr = |s: Sysno| s as i64;
            // Woken from a sleep, or its sleep broken by the stop (ERESTART_RESTARTBLOCK).
            assert!(stopped_after_a_wait(&after(
                nr(Sysno::clock_nanosleep),
                0,
                0
            )));
            assert!(stopped_after_a_wait(&after(nr(Sysno::nanosleep), -516, 0)));
            // A read broken by a signal: it was waiting.
            assert!(stopped_after_a_wait(&after(nr(Sysno::read), -4, 0)));
            // A futex wait (FUTEX_WAIT_BITSET | FUTEX_PRIVATE_FLAG) waits; a wake does not.
            assert!(stopped_after_a_wait(&after(nr(Sysno::futex), 0, 9 | 128)));
            assert!(!stopped_after_a_wait(&after(nr(Sysno::futex), 1, 1 | 128)));
            // A write that did its work; user code, not in a syscall at all.
            assert!(!stopped_after_a_wait(&after(nr(Sysno::write), 4096, 0)));
            assert!(!stopped_after_a_wait(&after(-1, -4, 0)));
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

/// User-space registers at the moment of a sample (what the unwinder starts from).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// The register mask ember asks perf for.
pub const USER_REGS_MASK: u64 = (1 << PERF_REG_BP) | (1 << PERF_REG_SP) | (1 << PERF_REG_IP);

impl UserRegs {
    /// Set the register perf numbers `reg` (others are ignored).
    pub fn set_perf_reg(&mut self, reg: u32, value: u64) {
        match reg {
            PERF_REG_BP => self.bp = value,
            PERF_REG_SP => self.sp = value,
            PERF_REG_IP => self.ip = value,
            _ => {}
        }
    }
}
