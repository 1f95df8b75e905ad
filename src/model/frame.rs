//! Frames: what a stack is made of, as the unwinder gives them ([`RawFrame`]), placed in their
//! modules ([`Frame`]), and the kind every named frame is of ([`FrameKind`]).

/// Index of a module in the [`crate::modules::ModuleTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);

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
    /// A Python frame, in place of the native evaluation-loop frame that ran it: its code
    /// object (an id of the recording's, see [`crate::python::Codes`]) and source line.
    Python { code: u32, line: u32 },
    /// The rest of a Python stack, which could not be read (a chain that loops or points to
    /// memory that cannot be read).
    PythonCut,
}

/// One frame before symbolization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Frame {
    /// A code address in a module, as the module's ELF states it (SVMA), ready for lookup.
    Module { module: ModuleId, svma: u64 },
    /// A kernel code address.
    Kernel(u64),
    /// An address outside every file mapping of process `pid`: JIT code, anonymous memory or
    /// nothing known at all.
    Anon { pid: u32, addr: u64 },
    /// The stack went on beyond what could be unwound.
    Truncated,
    /// A Python function at a line: its code object's id (the recording's) and the line.
    Python { code: u32, line: u32 },
    /// Where a Python stack could not be read further.
    PythonCut,
    /// The thread was waiting, not running (wall-clock profiles): why. Always the leaf.
    OffCpu(WaitReason),
}

/// What kind of code a named frame stands for: every writer marks them its own way (folded's
/// `_[k]`, `_[i]`, `_[j]` suffixes, pprof's mappings, the Firefox Profiler's categories).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Machine code of a mapped file: an executable or a shared library.
    Native,
    /// A function the compiler inlined into the native frame below it (from DWARF).
    Inlined,
    /// Kernel code.
    Kernel,
    /// Code generated at run time, named by the process's perf map.
    Jit,
    /// A Python function, read from the interpreter's own frames.
    Python,
    /// A frame ember adds to say something about the stack: `[truncated]`, or why an off-CPU
    /// thread waited.
    Marker,
}

/// Why a sampled thread was not running (wall-clock profiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WaitReason {
    /// Waiting in this syscall (its number, [`crate::arch::Sysno`]).
    Syscall(u64),
    /// Not waiting for anything: preempted, runnable and waiting for a CPU.
    Runnable,
    /// Waiting for a page to be read in (a page fault), not in a syscall.
    PageFault,
    /// Waiting, in no syscall ember could name.
    Unknown,
}
