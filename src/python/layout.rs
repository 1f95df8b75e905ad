//! Where CPython keeps what ember reads, per version: one entry of [`LAYOUTS`] per
//! `major.minor` (x86-64). The numbers come from the interpreter's own headers:
//! `scripts/python-layout.sh PREFIX` compiles `scripts/python-layout.c` against an installed
//! Python's internal headers and prints the entry for it.

/// Offsets (bytes) into CPython's runtime structures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// `_PyRuntime.interpreters.head`.
    pub runtime_interpreters_head: u64,
    /// `PyInterpreterState.threads.head`.
    pub interp_threads_head: u64,
    /// `PyThreadState.next`.
    pub tstate_next: u64,
    /// `PyThreadState.native_thread_id` (the thread's TID).
    pub tstate_native_thread_id: u64,
    /// How the thread's innermost frame is found.
    pub current_frame: CurrentFrame,
    /// `_PyInterpreterFrame.f_code`.
    pub frame_code: u64,
    /// `_PyInterpreterFrame.previous`.
    pub frame_previous: u64,
    /// `_PyInterpreterFrame.prev_instr`: the instruction last run (a `_Py_CODEUNIT *`).
    pub frame_prev_instr: u64,
    /// How a frame says that a C-level call of the evaluation loop begins with it.
    pub entry: Entry,
    /// `_PyInterpreterFrame.owner`.
    pub frame_owner: u64,
    /// The bytes of a frame read at once (every field above lies within them).
    pub frame_size: usize,
    /// `PyCodeObject.co_filename`, `co_name`, `co_qualname`, `co_linetable`.
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    /// `PyCodeObject.co_firstlineno` (an int).
    pub code_firstlineno: u64,
    /// `PyCodeObject.co_code_adaptive`: where the instructions begin.
    pub code_instructions: u64,
    /// `sizeof(PyASCIIObject)` and `sizeof(PyCompactUnicodeObject)`: where the characters of
    /// a compact ASCII string and of another compact string begin.
    pub unicode_ascii_data: u64,
    pub unicode_compact_data: u64,
}

/// Where a thread state points to its innermost frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurrentFrame {
    /// `tstate->cframe->current_frame` (3.11, 3.12): the offsets of `cframe` in the thread
    /// state and of `current_frame` in it.
    ThroughCFrame { cframe: u64, current_frame: u64 },
}

/// How the frames of one C-level call of the evaluation loop are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// 3.11: a byte of the frame is set in the first frame of each call (the outermost of
    /// the frames that call runs).
    IsEntryByte(u64),
    /// 3.12: each call pushes a frame owned by the C stack (`owner == FRAME_OWNED_BY_CSTACK`)
    /// before its first Python frame; such frames run no Python code.
    CStackOwner,
}

/// `FRAME_OWNED_BY_CSTACK` (3.12).
pub const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// The layouts ember knows, by (major, minor).
pub const LAYOUTS: &[((u8, u8), Layout)] = &[
    (
        (3, 11),
        Layout {
            runtime_interpreters_head: 40,
            interp_threads_head: 16,
            tstate_next: 8,
            tstate_native_thread_id: 160,
            current_frame: CurrentFrame::ThroughCFrame {
                cframe: 56,
                current_frame: 8,
            },
            frame_code: 32,
            frame_previous: 48,
            frame_prev_instr: 56,
            entry: Entry::IsEntryByte(68),
            frame_owner: 69,
            frame_size: 72,
            code_filename: 112,
            code_name: 120,
            code_qualname: 128,
            code_linetable: 136,
            code_firstlineno: 72,
            code_instructions: 184,
            unicode_ascii_data: 48,
            unicode_compact_data: 72,
        },
    ),
    (
        (3, 12),
        Layout {
            runtime_interpreters_head: 40,
            interp_threads_head: 72,
            tstate_next: 8,
            tstate_native_thread_id: 144,
            current_frame: CurrentFrame::ThroughCFrame {
                cframe: 56,
                current_frame: 0,
            },
            frame_code: 0,
            frame_previous: 8,
            frame_prev_instr: 56,
            entry: Entry::CStackOwner,
            frame_owner: 70,
            frame_size: 72,
            code_filename: 112,
            code_name: 120,
            code_qualname: 128,
            code_linetable: 136,
            code_firstlineno: 68,
            code_instructions: 192,
            unicode_ascii_data: 40,
            unicode_compact_data: 56,
        },
    ),
];

/// The layout of CPython `major.minor`, if ember knows it.
pub fn layout(major: u8, minor: u8) -> Option<&'static Layout> {
    LAYOUTS
        .iter()
        .find(|(v, _)| *v == (major, minor))
        .map(|(_, l)| l)
}

/// The version `Py_Version` (`PY_VERSION_HEX`) names: (major, minor).
pub fn version_of(hex: u32) -> (u8, u8) {
    ((hex >> 24) as u8, (hex >> 16) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_from_py_version() {
        assert_eq!(version_of(0x030b07f0), (3, 11));
        assert_eq!(version_of(0x030c01f0), (3, 12));
        assert!(layout(3, 11).is_some());
        assert!(layout(3, 9).is_none());
    }

    #[test]
    fn every_field_a_frame_read_needs_lies_in_it() {
        for (_, l) in LAYOUTS {
            for off in [l.frame_code, l.frame_previous, l.frame_prev_instr] {
                assert!(off as usize + 8 <= l.frame_size);
            }
            assert!((l.frame_owner as usize) < l.frame_size);
        }
    }
}
