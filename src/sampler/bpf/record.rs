//! The records ember's BPF program sends in place of its samples: samples of a BPF output
//! event whose raw data is the walk (see `unwind.bpf.c`), read into a [`SampleEvent`] with
//! its [`KernelWalk`].

use perf_event_open_sys as sys;

use crate::model::{KernelWalk, SampleEvent, UserRegs};
use crate::sampler::records::MalformedRecord;

/// The output event's samples begin as ember's own do (ip, pid/tid, time, cpu, period), so
/// that their time is found where it is in every sample; then the raw data.
const SAMPLE_TYPE: u64 = (sys::bindings::PERF_SAMPLE_IP
    | sys::bindings::PERF_SAMPLE_TID
    | sys::bindings::PERF_SAMPLE_TIME
    | sys::bindings::PERF_SAMPLE_CPU
    | sys::bindings::PERF_SAMPLE_PERIOD
    | sys::bindings::PERF_SAMPLE_RAW) as u64;

/// "EMBRBPF1": the first word of every record.
const MAGIC: u64 = 0x3146_5042_5242_4d45;
/// Words before the kernel frames, and the room for them (`HEADER_WORDS`, `MAX_KERNEL`).
const HEADER_WORDS: usize = 12;
const MAX_KERNEL: usize = 128;

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

/// Read one record (a sample of the output event, `rec` with its header).
pub fn parse(rec: &[u8]) -> Result<SampleEvent<'_>, MalformedRecord> {
    let word = |at: usize| -> Result<u64, MalformedRecord> {
        rec.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or(MalformedRecord::Truncated {
                needed: 8,
                offset: at,
                len: rec.len(),
            })
    };
    // Header (8), ip, pid/tid, time, cpu, period, then the raw data's size (u32).
    let pid_tid = word(16)?;
    let (time, cpu) = (word(24)?, word(32)? as u32);
    let raw_size = (word(48)? & 0xffff_ffff) as usize;
    let raw = rec
        .get(52..52 + raw_size)
        .ok_or(MalformedRecord::Truncated {
            needed: raw_size,
            offset: 52,
            len: rec.len(),
        })?;
    let w = |i: usize| word(52 + 8 * i);
    if w(0)? != MAGIC {
        return Err(MalformedRecord::BadSize { size: rec.len() });
    }
    let (nkernel, nuser) = (w(1)? as usize, w(2)? as usize);
    let regs = |i: usize| -> Result<UserRegs, MalformedRecord> {
        Ok(UserRegs {
            ip: w(i)?,
            sp: w(i + 1)?,
            bp: w(i + 2)?,
        })
    };
    let (at_end, copy_len, copy_at_sample) = (regs(4)?, w(7)? as usize, w(8)? != 0);
    let sample_regs = regs(9)?;
    let frames_at = 8 * (HEADER_WORDS + MAX_KERNEL);
    let part = |from: usize, len: usize| {
        raw.get(from..from + len).ok_or(MalformedRecord::Truncated {
            needed: len,
            offset: 52 + from,
            len: rec.len(),
        })
    };
    let kernel = part(8 * HEADER_WORDS, 8 * nkernel.min(MAX_KERNEL))?;
    let frames = part(frames_at, 8 * nuser)?;
    let copy = part(frames_at + 8 * nuser, copy_len)?;
    Ok(SampleEvent {
        pid: pid_tid as u32,
        tid: (pid_tid >> 32) as u32,
        time,
        cpu,
        period: 1,
        ip: sample_regs.ip,
        callchain: kernel,
        user_regs: Some(if copy_at_sample { sample_regs } else { at_end }),
        user_stack: copy,
        walked: Some(KernelWalk {
            frames,
            end: w(3)?,
            at_end,
            copy_at_sample,
        }),
        ..SampleEvent::default()
    })
}
