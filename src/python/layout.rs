//! Where CPython keeps what ember reads, per version: one entry of [`LAYOUTS`] per
//! `major.minor` (x86-64) up to 3.12. The numbers come from the interpreter's own headers:
//! `scripts/python-layout.sh PREFIX VERSION` compiles `scripts/python-layout.c` against an
//! installed Python's internal headers and prints them. From 3.13 on the interpreter
//! publishes them itself, at the start of its runtime state (`_Py_DebugOffsets`), and they
//! are read from the process ([`from_debug_offsets`]).

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
    /// `PyCodeObject.co_flags` (an int): a module's or a class's body lacks
    /// [`CO_NEWLOCALS`].
    pub code_flags: u64,
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
    /// `tstate->current_frame` (3.13).
    Direct(u64),
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

/// `CO_NEWLOCALS`: a code object that runs in a namespace of its own (a function's), not in
/// a module's or a class's (their bodies, freed once they have run).
pub const CO_NEWLOCALS: u32 = 0x2;

/// `PyCodeObject.co_flags` in every version ember knows: after the object's head (24 bytes)
/// and `co_consts`, `co_names`, `co_exceptiontable` (`_Py_DebugOffsets` does not give it).
const CODE_FLAGS: u64 = 48;

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
            code_flags: CODE_FLAGS,
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
            code_flags: CODE_FLAGS,
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

/// The first bytes of `_Py_DebugOffsets`.
const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// How many u64 words of `_Py_DebugOffsets` (3.13) [`from_debug_offsets`] reads.
pub const DEBUG_OFFSETS_WORDS: usize = 71;

/// The layout a CPython 3.13 publishes in `_Py_DebugOffsets` (the first `DEBUG_OFFSETS_WORDS`
/// words of its runtime state); `None` for anything else (a later version lays the offsets
/// out differently, and is not guessed at).
pub fn from_debug_offsets(words: &[u64]) -> Option<Layout> {
    if words.len() < DEBUG_OFFSETS_WORDS || words[0].to_le_bytes() != *DEBUG_COOKIE {
        return None;
    }
    // version, then free_threaded: a free-threaded build keeps its frames elsewhere.
    if version_of(words[1] as u32) != (3, 13) || words[2] != 0 {
        return None;
    }
    let w = |i: usize| words[i];
    // Word indices of the 3.13 struct: runtime_state at 3, interpreter_state at 6,
    // thread_state at 19, interpreter_frame at 28, code_object at 34, unicode_object at 67.
    let frame_fields = [w(29), w(30), w(31), w(33)];
    let frame_size = frame_fields.iter().max()? + 8;
    Some(Layout {
        runtime_interpreters_head: w(5),
        interp_threads_head: w(9),
        tstate_next: w(21),
        tstate_native_thread_id: w(25),
        current_frame: CurrentFrame::Direct(w(23)),
        frame_code: w(30),
        frame_previous: w(29),
        frame_prev_instr: w(31),
        entry: Entry::CStackOwner,
        frame_owner: w(33),
        frame_size: usize::try_from(frame_size).ok().filter(|&s| s <= 1024)?,
        code_filename: w(35),
        code_name: w(36),
        code_qualname: w(37),
        code_linetable: w(38),
        code_firstlineno: w(39),
        code_flags: CODE_FLAGS,
        code_instructions: w(43).min(256),
        unicode_ascii_data: w(70),
        // PyCompactUnicodeObject: the ASCII object, then utf8_length and utf8.
        unicode_compact_data: w(70) + 16,
    })
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
    fn a_published_layout_is_read_and_anything_else_refused() {
        let mut words = vec![0u64; DEBUG_OFFSETS_WORDS];
        words[0] = u64::from_le_bytes(*DEBUG_COOKIE);
        words[1] = 0x030d00f0;
        (words[29], words[30], words[31], words[33]) = (8, 0, 56, 70);
        (words[23], words[25], words[70]) = (72, 160, 40);
        let l = from_debug_offsets(&words).unwrap();
        assert_eq!(l.current_frame, CurrentFrame::Direct(72));
        assert_eq!((l.frame_size, l.unicode_compact_data), (78, 56));
        words[1] = 0x030e00f0; // 3.14 lays them out otherwise
        assert_eq!(from_debug_offsets(&words), None);
        words[1] = 0x030d00f0;
        words[2] = 1; // free-threaded
        assert_eq!(from_debug_offsets(&words), None);
        words[2] = 0;
        words[0] = 0;
        assert_eq!(from_debug_offsets(&words), None);
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
