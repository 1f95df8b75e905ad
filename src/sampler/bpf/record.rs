//! The records ember's BPF program sends in place of its samples, through a BPF ring buffer
//! (see `unwind.bpf.c`): the reader frames each as an `EMBER_RECORD_BPF_SAMPLE` and
//! `crate::sampler::records` reads it.

/// "EMBRBPF5": the first word of every record.
pub const MAGIC: u64 = 0x3546_5042_5242_4d45;
/// Words before the user frames (which the kernel's follow), and the most kernel frames
/// (`HEADER_WORDS`, `MAX_KERNEL`).
pub const HEADER_WORDS: usize = 17;
pub const MAX_KERNEL: usize = 128;
/// Words per Python frame (`PY_FRAME_WORDS`): see [`crate::model::KernelWalk::python`].
pub const PYTHON_FRAME_WORDS: usize = 4;
/// Bytes of a code object's names sent after the Python frames (`struct name_block`): see
/// [`crate::model::KernelWalk::python_names`].
pub const PYTHON_NAME_BYTES: usize = 32 + PYTHON_NAME_FILE + PYTHON_NAME_QUAL;
/// Room for the file name and the qualified name in a name block (`NAME_FILE`, `NAME_QUAL`).
pub const PYTHON_NAME_FILE: usize = 256;
pub const PYTHON_NAME_QUAL: usize = 128;
/// The most name blocks of a record (`MAX_NAMES`).
pub const PYTHON_MAX_NAMES: usize = 16;
