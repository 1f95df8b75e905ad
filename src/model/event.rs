//! What samplers emit: samples and the process events that give them meaning, in the perf
//! ring-buffer's terms (both backends write that format; [`crate::sampler::records`] reads it).

use super::{UserRegs, WaitReason};

/// One sample: where a thread was and the raw material to unwind its stack.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SampleEvent<'a> {
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    pub cpu: u32,
    pub period: u64,
    pub ip: u64,
    /// The sample was taken while the thread ran in the kernel.
    pub kernel_mode: bool,
    /// Raw callchain (u64 entries with `PERF_CONTEXT_*` markers), or empty.
    pub callchain: &'a [u8],
    pub user_regs: Option<UserRegs>,
    /// The copy of the user stack starting at `user_regs.sp`.
    pub user_stack: &'a [u8],
    /// Words of the user stack above the copy, read at the same stop: (address, value) pairs
    /// of little-endian u64s, sorted by address (see [`stack_reads`]).
    pub stack_words: &'a [u8],
    /// The thread was waiting, not running (wall-clock profiles): why.
    pub off_cpu: Option<WaitReason>,
    /// Taken as the thread was switched out (wall-clock profiles on perf events): it stands
    /// for the time until the thread is switched in again.
    pub switched_out: bool,
    /// Taken by the ptrace backend, not by perf events.
    pub from_ptrace: bool,
    /// The thread's Python stack, read at the same stop (see [`PythonStack`]), or empty.
    pub python: &'a [u8],
    /// The user stack as ember's BPF program walked it at the sample, in the kernel.
    pub walked: Option<KernelWalk<'a>>,
}

/// A user stack walked in the kernel at sample time with the unwind tables' rows (see
/// `crate::sampler::bpf`). Where the walk handed over before the root, the sample's
/// `user_regs` and `user_stack` are the registers there and the stack from there, for the
/// DWARF unwinder to go on (or, in a check, the sample's own, to walk it both ways).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelWalk<'a> {
    /// Each frame's address as a DWARF unwinder looks it up (the sample's ip, then return
    /// addresses minus one): little-endian u64s.
    pub frames: &'a [u8],
    /// How it ended: `crate::unwind_table::walk::WalkEnd` as a number (0 root, 1 no row, 2 a
    /// rule it cannot follow, 3 unreadable, 4 depth).
    pub end: u64,
    /// The registers where it ended.
    pub at_end: UserRegs,
    /// The copy starts at the sample's stack pointer (a check), not where the walk ended.
    pub copy_at_sample: bool,
    /// The thread's Python frames, innermost first, as the program read them at the sample:
    /// four little-endian u64s each — the code object's address; the instruction offset
    /// (bits 0-30), [`KERNEL_PYTHON_ENTRY`] where a C-level call of the evaluation loop
    /// begins, and the code's first line (bits 32-63); the code's file name and qualified
    /// name (pointers, which tell the object apart from a later one at the same address).
    pub python: &'a [u8],
    /// How the Python walk ended: [`KERNEL_PYTHON_NONE`], `_WHOLE` or `_CUT`.
    pub python_end: u64,
    /// The names of short-lived code objects of these frames (module and class bodies and
    /// the frames they run) that the program had not sent before, as it read them at the
    /// sample (a module's body is freed once it has run): blocks of
    /// `crate::sampler::bpf::record::PYTHON_NAME_BYTES` — the code object's address, file
    /// name and qualified name pointers, the bytes of each name (bits 0-15 and 32-47; bits
    /// 16 and 48 where they are the name's last bytes only), then their text.
    pub python_names: &'a [u8],
}

impl KernelWalk<'_> {
    /// The walk's first frame (the sample's own address) alone, ended as one that could not
    /// be read on: for a walk made with mappings that no longer held.
    pub fn first_frame_only(self) -> Self {
        KernelWalk {
            frames: &self.frames[..self.frames.len().min(8)],
            end: KERNEL_WALK_UNREADABLE,
            ..self
        }
    }

    /// The walk ended where the rows did (no row, or a rule they cannot follow) and handed
    /// over there: the sample carries a copy of the stack from there.
    pub fn handed_over(&self) -> bool {
        matches!(self.end, KERNEL_WALK_NO_ROW | KERNEL_WALK_UNSUPPORTED)
    }

    /// The walk handed over at the sample's own address.
    pub fn handed_over_at_first_frame(&self) -> bool {
        self.frames.len() <= 8 && self.handed_over()
    }
}

/// [`KernelWalk::end`]: `crate::unwind_table::walk::WalkEnd` as the BPF program numbers it.
pub const KERNEL_WALK_ROOT: u64 = 0;
pub const KERNEL_WALK_NO_ROW: u64 = 1;
pub const KERNEL_WALK_UNSUPPORTED: u64 = 2;
pub const KERNEL_WALK_UNREADABLE: u64 = 3;

/// See [`KernelWalk::python`].
pub const KERNEL_PYTHON_ENTRY: u64 = 1 << 31;
pub const KERNEL_PYTHON_NONE: u64 = 0;
pub const KERNEL_PYTHON_WHOLE: u64 = 1;
pub const KERNEL_PYTHON_CUT: u64 = 2;

/// Stack bytes of the sample of `tid` at `time` that come after what the sample holds (or,
/// in [`Event::StackWords`], words of its stack above the copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackPart<'a> {
    pub tid: u32,
    pub time: u64,
    pub bytes: &'a [u8],
}

/// A thread switched in or out (`PERF_RECORD_SWITCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchEvent {
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    pub out: bool,
    /// Switched out while still runnable.
    pub preempted: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmapEvent<'a> {
    pub pid: u32,
    pub tid: u32,
    pub start: u64,
    pub len: u64,
    pub pgoff: u64,
    /// (major, minor, inode) of the mapped file, when the kernel sent them.
    pub dev_ino: Option<(u32, u32, u64)>,
    pub executable: bool,
    pub filename: &'a [u8],
    pub time: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommEvent<'a> {
    pub pid: u32,
    pub tid: u32,
    pub name: &'a [u8],
    /// The name changed because the process called `exec`.
    pub exec: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForkEvent {
    pub pid: u32,
    pub ppid: u32,
    pub tid: u32,
    pub ptid: u32,
    pub time: u64,
}

/// A code object of a Python process, as the sampler read it once: what names its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonCode<'a> {
    pub pid: u32,
    /// The id its frames carry (unique in the recording).
    pub id: u32,
    pub first_line: i32,
    pub qualname: &'a [u8],
    pub filename: &'a [u8],
    /// `co_linetable`: where each instruction's line is.
    pub linetable: &'a [u8],
}

/// The Python stack of the thread's next sample, innermost frame first: u32 pairs (code id,
/// instruction offset with [`PYTHON_ENTRY`] set on the first frame of each C-level call of the
/// evaluation loop), after a u32 count and u32 flags ([`PYTHON_CUT`]).
pub type PythonStack<'a> = StackPart<'a>;

/// In a Python stack's frame: a C-level call of the evaluation loop begins with this frame.
pub const PYTHON_ENTRY: u32 = 1 << 31;
/// In a Python stack's flags: the chain of frames went on but could not be read.
pub const PYTHON_CUT: u32 = 1;

/// What the samplers emit, in time order once merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Sample(SampleEvent<'a>),
    Mmap(MmapEvent<'a>),
    Comm(CommEvent<'a>),
    Fork(ForkEvent),
    Exit(ForkEvent),
    /// Records the kernel dropped because a ring buffer was full.
    Lost(u64),
    Switch(SwitchEvent),
    /// More of the stack of the thread's next sample.
    StackPart(StackPart<'a>),
    /// Words of the stack of the thread's next sample above its copy.
    StackWords(StackPart<'a>),
    /// From `time` on, process `pid` is sampled by ptrace: perf events' samples of it do
    /// not count (see [`takeover`]).
    TakenOver {
        pid: u32,
        time: u64,
    },
    /// Process `pid` runs CPython: its evaluation loop is at these addresses.
    PythonProcess {
        pid: u32,
        eval: (u64, u64),
    },
    PythonCode(PythonCode<'a>),
    /// The Python stack of the thread's next sample.
    PythonStack(PythonStack<'a>),
    /// The kernel lowered the sampling rate because sampling took too long.
    Throttle,
    Unthrottle,
}
