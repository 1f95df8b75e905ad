//! The pipeline's shared types, its ground floor: what a sample is ([`event`]), what a stack
//! is made of ([`frame`]), how a raw callchain reads ([`callchain`]) and what an unwind read of
//! a stack ([`stack_reads`]). The sampler, the unwinder, the profile, the symbolizer and the
//! writers all use these; this module uses none of them (only the leaf [`crate::arch`], for registers).

pub mod callchain;
pub mod event;
pub mod frame;
pub mod stack_reads;

pub use crate::arch::UserRegs;
pub use event::{
    CommEvent, Event, ForkEvent, KernelWalk, MmapEvent, PythonCode, PythonStack, SampleEvent,
    StackPart, SwitchEvent, KERNEL_PYTHON_CUT, KERNEL_PYTHON_ENTRY, KERNEL_PYTHON_NONE,
    KERNEL_PYTHON_WHOLE, KERNEL_WALK_NO_ROW, KERNEL_WALK_ROOT, KERNEL_WALK_UNREADABLE,
    KERNEL_WALK_UNSUPPORTED, PYTHON_CUT, PYTHON_ENTRY,
};
pub use frame::{Frame, FrameKind, ModuleId, RawFrame, WaitReason};

/// How user-space stacks are collected and unwound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CallGraph {
    /// DWARF unwinding of stack copies, with the kernel's frame-pointer chain spliced in
    /// where the copy ran out.
    #[default]
    Auto,
    /// DWARF unwinding of stack copies only.
    Dwarf,
    /// The kernel's frame-pointer callchain only (cheapest; wrong for code without frame
    /// pointers).
    Fp,
}
