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
