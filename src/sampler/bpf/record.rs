//! The records ember's BPF program sends in place of its samples: samples of a BPF output
//! event whose raw data is the walk (see `unwind.bpf.c`); `crate::sampler::records` reads
//! them.

use perf_event_open_sys as sys;

/// The output event's samples begin as ember's own do (ip, pid/tid, time, cpu, period), so
/// that their time is found where it is in every sample; then the raw data.
const SAMPLE_TYPE: u64 = (sys::bindings::PERF_SAMPLE_IP
    | sys::bindings::PERF_SAMPLE_TID
    | sys::bindings::PERF_SAMPLE_TIME
    | sys::bindings::PERF_SAMPLE_CPU
    | sys::bindings::PERF_SAMPLE_PERIOD
    | sys::bindings::PERF_SAMPLE_RAW) as u64;

/// "EMBRBPF4": the first word of every record.
pub const MAGIC: u64 = 0x3446_5042_5242_4d45;
/// Words before the user frames (which the kernel's follow), and the most kernel frames
/// (`HEADER_WORDS`, `MAX_KERNEL`).
pub const HEADER_WORDS: usize = 14;
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

/// The attributes of a BPF output event on one CPU, as ember's rings take them (the same
/// clock as its sampling events).
pub fn output_attr() -> sys::bindings::perf_event_attr {
    let mut a = sys::bindings::perf_event_attr {
        type_: sys::bindings::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config: u64::from(sys::bindings::PERF_COUNT_SW_BPF_OUTPUT),
        sample_type: SAMPLE_TYPE,
        ..Default::default()
    };
    a.__bindgen_anon_1.sample_period = 1;
    a.set_use_clockid(1);
    a.clockid = libc::CLOCK_MONOTONIC;
    a
}
