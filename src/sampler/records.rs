//! Parsing of the records the kernel writes into a perf ring buffer.
//!
//! Everything here works on plain byte slices so it can be unit-tested and fuzzed without a
//! kernel. The layout of a `PERF_RECORD_SAMPLE` depends on the `sample_type` and the register
//! mask the events were opened with; [`SampleLayout`] carries both.

use perf_event_open_sys::bindings as b;

use crate::model::{
    CommEvent, Event, ForkEvent, KernelWalk, MmapEvent, PythonCode, SampleEvent, StackPart,
    SwitchEvent, WaitReason,
};
use crate::sampler::bpf::record::{
    HEADER_WORDS, MAGIC, MAX_KERNEL, PYTHON_FRAME_WORDS, PYTHON_MAX_NAMES, PYTHON_NAME_BYTES,
};

// The kernel's constants (perf-event-open-sys, generated from its headers): record kinds as
// they are; sample_type bits as u64 and
// header.misc bits as u16 below, the types records carry them in.
pub use b::{
    PERF_RECORD_COMM, PERF_RECORD_EXIT, PERF_RECORD_FORK, PERF_RECORD_LOST,
    PERF_RECORD_LOST_SAMPLES, PERF_RECORD_MMAP, PERF_RECORD_MMAP2, PERF_RECORD_SAMPLE,
    PERF_RECORD_SWITCH, PERF_RECORD_THROTTLE, PERF_RECORD_UNTHROTTLE,
};

pub use crate::arch::{UserRegs, USER_REGS_MASK};

/// ember's own record (outside the kernel's range of kinds): a sample of a thread that was
/// waiting, not running. Its body is a u64 reason ([`WaitReason::to_wire`]) followed by the
/// body of a `PERF_RECORD_SAMPLE`.
pub const EMBER_RECORD_OFF_CPU_SAMPLE: u32 = 0x4000_0001;
/// ember's own record: a `PERF_RECORD_SAMPLE` taken as its thread was switched out (the
/// context-switch event of wall-clock profiles); the sample reader relabels them.
pub const EMBER_RECORD_SWITCH_OUT_SAMPLE: u32 = 0x4000_0002;
/// ember's own record: more of the user stack of the sample that follows it (same thread and
/// time), for stacks deeper than one record holds (the ptrace backend copies whole stacks).
/// Its body is the bytes, continuing where the sample's copy (and the parts before) end,
/// then the `sample_id` trailer.
pub const EMBER_RECORD_STACK_PART: u32 = 0x4000_0003;
/// ember's own record: a `PERF_RECORD_SAMPLE` taken by the ptrace backend (which stops the
/// thread and copies its whole stack). Where perf events sample the same process too (one
/// taken over because its stacks outgrow perf's copies), these are the samples that count.
pub const EMBER_RECORD_PTRACE_SAMPLE: u32 = 0x4000_0004;
/// ember's own record: from its time on, the ptrace backend samples the process of its
/// `sample_id` trailer, and perf events' samples of that process are left out. No body.
pub const EMBER_RECORD_TAKEOVER: u32 = 0x4000_0005;
/// ember's own record: words of the user stack above the copy of the sample that follows it
/// (same thread and time), read at the same stop: where the outer frames are as the last
/// unwind of the thread read them, the ptrace backend copies the stack only up to them and
/// sends the words that unwind read there ([`super::stack_reads`]). Its body is
/// (address, value) pairs of u64s sorted by address, then the `sample_id` trailer.
pub const EMBER_RECORD_STACK_WORDS: u32 = 0x4000_0006;

/// ember's own record: process `pid` (of the `sample_id` trailer) runs CPython, whose
/// evaluation loop is at the u64 pair of its body (start, end).
pub const EMBER_RECORD_PYTHON_PROCESS: u32 = 0x4000_0007;
/// ember's own record: a Python code object ([`crate::model::PythonCode`]): u32 id, i32 first
/// line, u32 lengths of the qualified name, file name and line table, u32 0, then those
/// bytes, padded to 8, then the `sample_id` trailer.
pub const EMBER_RECORD_PYTHON_CODE: u32 = 0x4000_0008;
/// ember's own record: the Python stack of the sample that follows it (same thread and time):
/// see [`crate::model::PythonStack`]; then the `sample_id` trailer.
pub const EMBER_RECORD_PYTHON_STACK: u32 = 0x4000_0009;

/// ember's own record: a sample as ember's BPF program sent it, its stack walked in the
/// kernel (the samples of a ring whose sampling events run the program; see
/// [`crate::sampler::bpf::record`]).
pub const EMBER_RECORD_BPF_SAMPLE: u32 = 0x4000_000a;

/// How a [`WaitReason`] is written in an `EMBER_RECORD_OFF_CPU_SAMPLE`: the syscall number,
/// or one of these (far above any syscall number).
const WIRE_UNKNOWN: u64 = u64::MAX;
const WIRE_RUNNABLE: u64 = u64::MAX - 1;
const WIRE_PAGE_FAULT: u64 = u64::MAX - 2;

impl WaitReason {
    /// The reason as ember's off-CPU sample record carries it.
    pub fn to_wire(self) -> u64 {
        match self {
            WaitReason::Syscall(nr) => nr,
            WaitReason::Runnable => WIRE_RUNNABLE,
            WaitReason::PageFault => WIRE_PAGE_FAULT,
            WaitReason::Unknown => WIRE_UNKNOWN,
        }
    }

    pub fn from_wire(v: u64) -> WaitReason {
        match v {
            WIRE_UNKNOWN => WaitReason::Unknown,
            WIRE_RUNNABLE => WaitReason::Runnable,
            WIRE_PAGE_FAULT => WaitReason::PageFault,
            nr => WaitReason::Syscall(nr),
        }
    }
}

pub const PERF_SAMPLE_IP: u64 = b::PERF_SAMPLE_IP as u64;
pub const PERF_SAMPLE_TID: u64 = b::PERF_SAMPLE_TID as u64;
pub const PERF_SAMPLE_TIME: u64 = b::PERF_SAMPLE_TIME as u64;
pub const PERF_SAMPLE_ADDR: u64 = b::PERF_SAMPLE_ADDR as u64;
pub const PERF_SAMPLE_ID: u64 = b::PERF_SAMPLE_ID as u64;
pub const PERF_SAMPLE_CPU: u64 = b::PERF_SAMPLE_CPU as u64;
pub const PERF_SAMPLE_PERIOD: u64 = b::PERF_SAMPLE_PERIOD as u64;
pub const PERF_SAMPLE_STREAM_ID: u64 = b::PERF_SAMPLE_STREAM_ID as u64;
pub const PERF_SAMPLE_CALLCHAIN: u64 = b::PERF_SAMPLE_CALLCHAIN as u64;
pub const PERF_SAMPLE_REGS_USER: u64 = b::PERF_SAMPLE_REGS_USER as u64;
pub const PERF_SAMPLE_STACK_USER: u64 = b::PERF_SAMPLE_STACK_USER as u64;
pub const PERF_SAMPLE_IDENTIFIER: u64 = b::PERF_SAMPLE_IDENTIFIER as u64;

pub const PERF_RECORD_MISC_CPUMODE_MASK: u16 = b::PERF_RECORD_MISC_CPUMODE_MASK as u16;
pub const PERF_RECORD_MISC_KERNEL: u16 = b::PERF_RECORD_MISC_KERNEL as u16;
pub const PERF_RECORD_MISC_COMM_EXEC: u16 = b::PERF_RECORD_MISC_COMM_EXEC as u16;
pub const PERF_RECORD_MISC_SWITCH_OUT: u16 = b::PERF_RECORD_MISC_SWITCH_OUT as u16;
pub const PERF_RECORD_MISC_SWITCH_OUT_PREEMPT: u16 = b::PERF_RECORD_MISC_SWITCH_OUT_PREEMPT as u16;
pub const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = b::PERF_RECORD_MISC_MMAP_BUILD_ID as u16;

/// How records are laid out, given the attributes the events were opened with.
#[derive(Clone, Copy, Debug)]
pub struct SampleLayout {
    pub sample_type: u64,
    pub regs_user_mask: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedRecord {
    #[error("perf record truncated: needed {needed} bytes at offset {offset}, record has {len}")]
    Truncated {
        needed: usize,
        offset: usize,
        len: usize,
    },
    #[error("perf record header says {size} bytes, which is too small")]
    BadSize { size: usize },
}

/// A bounds-checked little-endian reader over one record.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MalformedRecord> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(MalformedRecord::Truncated {
                needed: n,
                offset: self.pos,
                len: self.buf.len(),
            }),
        }
    }

    fn u64(&mut self) -> Result<u64, MalformedRecord> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn u32(&mut self) -> Result<u32, MalformedRecord> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u32_pair(&mut self) -> Result<(u32, u32), MalformedRecord> {
        Ok((self.u32()?, self.u32()?))
    }

    fn skip(&mut self, n: usize) -> Result<(), MalformedRecord> {
        self.take(n).map(|_| ())
    }
}

/// The fixed 8-byte header at the start of every record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: u32,
    pub misc: u16,
    pub size: u16,
}

impl RecordHeader {
    pub const SIZE: usize = 8;

    pub fn parse(b: &[u8]) -> Option<RecordHeader> {
        if b.len() < Self::SIZE {
            return None;
        }
        Some(RecordHeader {
            kind: u32::from_le_bytes(b[0..4].try_into().ok()?),
            misc: u16::from_le_bytes(b[4..6].try_into().ok()?),
            size: u16::from_le_bytes(b[6..8].try_into().ok()?),
        })
    }
}

/// The `sample_id` trailer that `sample_id_all` appends to non-sample records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SampleId {
    pid: u32,
    tid: u32,
    time: Option<u64>,
}

impl SampleLayout {
    /// The layout ember opens its events with: IP, TID, TIME, CPU, PERIOD and the callchain,
    /// plus user registers and the user stack copy when `stack_copies` (DWARF unwinding).
    pub const fn recorded(stack_copies: bool) -> SampleLayout {
        let base = PERF_SAMPLE_IP
            | PERF_SAMPLE_TID
            | PERF_SAMPLE_TIME
            | PERF_SAMPLE_CPU
            | PERF_SAMPLE_PERIOD
            | PERF_SAMPLE_CALLCHAIN;
        if stack_copies {
            SampleLayout {
                sample_type: base | PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER,
                regs_user_mask: USER_REGS_MASK,
            }
        } else {
            SampleLayout {
                sample_type: base,
                regs_user_mask: 0,
            }
        }
    }

    fn sample_id_size(&self) -> usize {
        let t = self.sample_type;
        [
            PERF_SAMPLE_TID,
            PERF_SAMPLE_TIME,
            PERF_SAMPLE_ID,
            PERF_SAMPLE_STREAM_ID,
            PERF_SAMPLE_CPU,
            PERF_SAMPLE_IDENTIFIER,
        ]
        .iter()
        .filter(|&&bit| t & bit != 0)
        .count()
            * 8
    }

    fn parse_sample_id(&self, rec: &[u8]) -> Result<SampleId, MalformedRecord> {
        let size = self.sample_id_size();
        let start = rec
            .len()
            .checked_sub(size)
            .ok_or(MalformedRecord::Truncated {
                needed: size,
                offset: 0,
                len: rec.len(),
            })?;
        if start < RecordHeader::SIZE {
            return Err(MalformedRecord::BadSize { size: rec.len() });
        }
        let mut c = Cursor::new(rec, start);
        let mut id = SampleId::default();
        if self.sample_type & PERF_SAMPLE_TID != 0 {
            (id.pid, id.tid) = c.u32_pair()?;
        }
        if self.sample_type & PERF_SAMPLE_TIME != 0 {
            id.time = Some(c.u64()?);
        }
        Ok(id)
    }

    /// The timestamp of a record, used to merge the per-CPU buffers in time order.
    /// Records without one sort first (they describe state, such as lost counts). (The BPF
    /// program's records come from its own ring, with their time: [`bpf_record_time`].)
    pub fn record_time(&self, rec: &[u8]) -> u64 {
        let Some(h) = RecordHeader::parse(rec) else {
            return 0;
        };
        if matches!(
            h.kind,
            PERF_RECORD_SAMPLE
                | EMBER_RECORD_OFF_CPU_SAMPLE
                | EMBER_RECORD_SWITCH_OUT_SAMPLE
                | EMBER_RECORD_PTRACE_SAMPLE
        ) {
            let start = if h.kind != EMBER_RECORD_OFF_CPU_SAMPLE {
                RecordHeader::SIZE
            } else {
                RecordHeader::SIZE + 8
            };
            let mut c = Cursor::new(rec, start);
            let t = self.sample_type;
            let r: Result<u64, MalformedRecord> = (|| {
                if t & PERF_SAMPLE_IDENTIFIER != 0 {
                    c.skip(8)?;
                }
                if t & PERF_SAMPLE_IP != 0 {
                    c.skip(8)?;
                }
                if t & PERF_SAMPLE_TID != 0 {
                    c.skip(8)?;
                }
                if t & PERF_SAMPLE_TIME != 0 {
                    return c.u64();
                }
                Ok(0)
            })();
            r.unwrap_or(0)
        } else {
            self.parse_sample_id(rec)
                .ok()
                .and_then(|id| id.time)
                .unwrap_or(0)
        }
    }

    /// Where the copy of the user stack lies in a sample record (`None` for other records
    /// and samples without a copy).
    pub fn stack_copy(&self, rec: &[u8]) -> Option<StackCopy> {
        let h = RecordHeader::parse(rec)?;
        if !matches!(
            h.kind,
            PERF_RECORD_SAMPLE | EMBER_RECORD_SWITCH_OUT_SAMPLE | EMBER_RECORD_PTRACE_SAMPLE
        ) || self.sample_type & PERF_SAMPLE_STACK_USER == 0
            || h.size as usize != rec.len()
        {
            return None;
        }
        let s = self.parse_sample(h, rec, RecordHeader::SIZE).ok()?;
        // Without a copy the stack is an empty slice from elsewhere.
        let data = (s.user_stack.as_ptr() as usize)
            .checked_sub(rec.as_ptr() as usize)
            .filter(|&d| d >= 8 && d <= rec.len())?;
        let size = u64::from_le_bytes(rec.get(data.checked_sub(8)?..data)?.try_into().ok()?);
        (size != 0).then_some(StackCopy {
            pid: s.pid,
            data,
            size: size as usize,
            used: s.user_stack.len(),
        })
    }

    /// Parse one whole record (header included). Unknown record kinds give `Ok(None)`.
    pub fn parse<'a>(&self, rec: &'a [u8]) -> Result<Option<Event<'a>>, MalformedRecord> {
        let h = RecordHeader::parse(rec).ok_or(MalformedRecord::BadSize { size: rec.len() })?;
        if (h.size as usize) < RecordHeader::SIZE || h.size as usize > rec.len() {
            return Err(MalformedRecord::BadSize {
                size: h.size as usize,
            });
        }
        let rec = &rec[..h.size as usize];
        let mut c = Cursor::new(rec, RecordHeader::SIZE);
        let ev = match h.kind {
            PERF_RECORD_SAMPLE => Event::Sample(self.parse_sample(h, rec, RecordHeader::SIZE)?),
            EMBER_RECORD_SWITCH_OUT_SAMPLE => {
                let mut s = self.parse_sample(h, rec, RecordHeader::SIZE)?;
                s.switched_out = true;
                Event::Sample(s)
            }
            EMBER_RECORD_BPF_SAMPLE => Event::Sample(parse_bpf_sample(rec)?),
            EMBER_RECORD_PTRACE_SAMPLE => {
                let mut s = self.parse_sample(h, rec, RecordHeader::SIZE)?;
                s.from_ptrace = true;
                Event::Sample(s)
            }
            EMBER_RECORD_OFF_CPU_SAMPLE => {
                let reason = c.u64()?;
                let mut s = self.parse_sample(h, rec, RecordHeader::SIZE + 8)?;
                s.off_cpu = Some(WaitReason::from_wire(reason));
                s.from_ptrace = true;
                Event::Sample(s)
            }
            EMBER_RECORD_TAKEOVER => {
                let id = self.parse_sample_id(rec)?;
                Event::TakenOver {
                    pid: id.pid,
                    time: id.time.unwrap_or(0),
                }
            }
            EMBER_RECORD_STACK_PART => Event::StackPart(self.parse_stack_part(rec)?),
            EMBER_RECORD_STACK_WORDS => Event::StackWords(self.parse_stack_part(rec)?),
            EMBER_RECORD_PYTHON_STACK => Event::PythonStack(self.parse_stack_part(rec)?),
            EMBER_RECORD_PYTHON_PROCESS => {
                let id = self.parse_sample_id(rec)?;
                Event::PythonProcess {
                    pid: id.pid,
                    eval: (c.u64()?, c.u64()?),
                }
            }
            EMBER_RECORD_PYTHON_CODE => Event::PythonCode(self.parse_python_code(rec)?),
            PERF_RECORD_SWITCH => Event::Switch(self.parse_switch(h, rec)?),
            PERF_RECORD_MMAP | PERF_RECORD_MMAP2 => Event::Mmap(self.parse_mmap(h, rec)?),
            PERF_RECORD_COMM => {
                let (pid, tid) = c.u32_pair()?;
                Event::Comm(CommEvent {
                    pid,
                    tid,
                    name: self.name_before_sample_id(rec, c.pos),
                    exec: h.misc & PERF_RECORD_MISC_COMM_EXEC != 0,
                })
            }
            PERF_RECORD_FORK => Event::Fork(parse_fork(&mut c)?),
            PERF_RECORD_EXIT => Event::Exit(parse_fork(&mut c)?),
            PERF_RECORD_LOST => {
                c.skip(8)?; // id
                Event::Lost(c.u64()?)
            }
            PERF_RECORD_LOST_SAMPLES => Event::Lost(c.u64()?),
            PERF_RECORD_THROTTLE => Event::Throttle,
            PERF_RECORD_UNTHROTTLE => Event::Unthrottle,
            _ => return Ok(None),
        };
        Ok(Some(ev))
    }

    /// The body of a stack part or stack words record, with the thread and time it is for.
    fn parse_stack_part<'a>(&self, rec: &'a [u8]) -> Result<StackPart<'a>, MalformedRecord> {
        let id = self.parse_sample_id(rec)?;
        let end = rec.len() - self.sample_id_size();
        Ok(StackPart {
            tid: id.tid,
            time: id.time.unwrap_or(0),
            bytes: &rec[RecordHeader::SIZE..end],
        })
    }

    fn parse_python_code<'a>(&self, rec: &'a [u8]) -> Result<PythonCode<'a>, MalformedRecord> {
        let pid = self.parse_sample_id(rec)?.pid;
        let end = rec.len() - self.sample_id_size();
        let mut c = Cursor::new(&rec[..end], RecordHeader::SIZE);
        let (id, first_line) = c.u32_pair()?;
        let (qualname, filename) = c.u32_pair()?;
        let (linetable, _) = c.u32_pair()?;
        Ok(PythonCode {
            pid,
            id,
            first_line: first_line as i32,
            qualname: c.take(qualname as usize)?,
            filename: c.take(filename as usize)?,
            linetable: c.take(linetable as usize)?,
        })
    }

    fn parse_switch(&self, h: RecordHeader, rec: &[u8]) -> Result<SwitchEvent, MalformedRecord> {
        let id = self.parse_sample_id(rec)?;
        Ok(SwitchEvent {
            pid: id.pid,
            tid: id.tid,
            time: id.time.unwrap_or(0),
            out: h.misc & PERF_RECORD_MISC_SWITCH_OUT != 0,
            preempted: h.misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT != 0,
        })
    }

    fn parse_mmap<'a>(
        &self,
        h: RecordHeader,
        rec: &'a [u8],
    ) -> Result<MmapEvent<'a>, MalformedRecord> {
        let mut c = Cursor::new(rec, RecordHeader::SIZE);
        let (pid, tid) = c.u32_pair()?;
        let start = c.u64()?;
        let len = c.u64()?;
        let pgoff = c.u64()?;
        let (mut dev_ino, mut prot) = (None, None);
        if h.kind == PERF_RECORD_MMAP2 {
            if h.misc & PERF_RECORD_MISC_MMAP_BUILD_ID == 0 {
                let (maj, min) = c.u32_pair()?;
                let ino = c.u64()?;
                dev_ino = Some((maj, min, ino));
                c.skip(8)?; // ino_generation
            } else {
                c.skip(24)?;
            }
            prot = Some(c.u32()?);
            c.skip(4)?; // flags
        }
        Ok(MmapEvent {
            pid,
            tid,
            start,
            len,
            pgoff,
            dev_ino,
            // PROT_EXEC = 4; plain MMAP records are only sent for executable maps.
            executable: prot.is_none_or(|p| p & 4 != 0),
            filename: self.name_before_sample_id(rec, c.pos),
            time: self.parse_sample_id(rec)?.time.unwrap_or(0),
        })
    }

    /// The NUL-terminated name from `pos` to the `sample_id` trailer.
    fn name_before_sample_id<'a>(&self, rec: &'a [u8], pos: usize) -> &'a [u8] {
        let end = rec.len().saturating_sub(self.sample_id_size()).max(pos);
        cstr(&rec[pos..end])
    }

    fn parse_sample<'a>(
        &self,
        h: RecordHeader,
        rec: &'a [u8],
        start: usize,
    ) -> Result<SampleEvent<'a>, MalformedRecord> {
        let t = self.sample_type;
        let mut c = Cursor::new(rec, start);
        let mut s = SampleEvent {
            kernel_mode: h.misc & PERF_RECORD_MISC_CPUMODE_MASK == PERF_RECORD_MISC_KERNEL,
            ..SampleEvent::default()
        };
        if t & PERF_SAMPLE_IDENTIFIER != 0 {
            c.skip(8)?;
        }
        if t & PERF_SAMPLE_IP != 0 {
            s.ip = c.u64()?;
        }
        if t & PERF_SAMPLE_TID != 0 {
            (s.pid, s.tid) = c.u32_pair()?;
        }
        if t & PERF_SAMPLE_TIME != 0 {
            s.time = c.u64()?;
        }
        if t & PERF_SAMPLE_ADDR != 0 {
            c.skip(8)?;
        }
        if t & PERF_SAMPLE_ID != 0 {
            c.skip(8)?;
        }
        if t & PERF_SAMPLE_STREAM_ID != 0 {
            c.skip(8)?;
        }
        if t & PERF_SAMPLE_CPU != 0 {
            s.cpu = c.u32()?;
            c.skip(4)?;
        }
        if t & PERF_SAMPLE_PERIOD != 0 {
            s.period = c.u64()?;
        }
        self.parse_sample_stack(&mut c, &mut s)?;
        Ok(s)
    }

    /// The stack part of a sample: callchain, user registers and the copy of the user stack.
    fn parse_sample_stack<'a>(
        &self,
        c: &mut Cursor<'a>,
        s: &mut SampleEvent<'a>,
    ) -> Result<(), MalformedRecord> {
        let t = self.sample_type;
        if t & PERF_SAMPLE_CALLCHAIN != 0 {
            let nr = c.u64()? as usize;
            let bytes = c.take(
                nr.checked_mul(8)
                    .ok_or(MalformedRecord::BadSize { size: nr })?,
            )?;
            s.callchain = bytes;
        }
        if t & PERF_SAMPLE_REGS_USER != 0 {
            let abi = c.u64()?;
            if abi != 0 {
                let mut regs = UserRegs::default();
                for bit in 0..64u32 {
                    if self.regs_user_mask & (1u64 << bit) != 0 {
                        regs.set_perf_reg(bit, c.u64()?);
                    }
                }
                s.user_regs = Some(regs);
            }
        }
        if t & PERF_SAMPLE_STACK_USER != 0 {
            let size = c.u64()? as usize;
            if size != 0 {
                let data = c.take(size)?;
                let dyn_size = c.u64()? as usize;
                s.user_stack = &data[..dyn_size.min(size)];
            }
        }
        Ok(())
    }
}

/// Where a sample's copy of the user stack lies in its record: the kernel reserves the whole
/// requested size in every record, but only the first `used` bytes (its `dyn_size`) hold the
/// stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackCopy {
    /// The process sampled.
    pub pid: u32,
    /// Offset of the copy's first byte (its size field is the 8 bytes before).
    data: usize,
    size: usize,
    used: usize,
}

impl StackCopy {
    /// The stack filled the copy: it may go on beyond it.
    pub fn is_full(&self) -> bool {
        self.used == self.size
    }

    /// Bytes the record loses when the unused part of the copy is left out.
    pub fn unused(&self) -> usize {
        self.size - self.used
    }

    /// Append `rec` to `out` without the unused part of its stack copy: the header's size and
    /// the copy's size field say the new lengths, so the record parses to the same sample.
    pub fn write_compacted(&self, rec: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        let new_len = rec.len() - self.unused();
        out.extend_from_slice(&rec[..self.data - 8]);
        out.extend_from_slice(&(self.used as u64).to_le_bytes());
        out.extend_from_slice(&rec[self.data..self.data + self.used]);
        out.extend_from_slice(&rec[self.data + self.size..]);
        out[start + 6..start + 8].copy_from_slice(&(new_len as u16).to_le_bytes());
    }
}

/// The body of a FORK or EXIT record.
fn parse_fork(c: &mut Cursor) -> Result<ForkEvent, MalformedRecord> {
    let (pid, ppid) = c.u32_pair()?;
    let (tid, ptid) = c.u32_pair()?;
    Ok(ForkEvent {
        pid,
        ppid,
        tid,
        ptid,
        time: c.u64()?,
    })
}

fn cstr(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// A record of ember's BPF program (`raw`, as read from its ring) framed as an
/// `EMBER_RECORD_BPF_SAMPLE` at the end of `out`; false (nothing written) if it is too long
/// for a record's 16-bit size.
pub fn frame_bpf_sample(raw: &[u8], out: &mut Vec<u8>) -> bool {
    let Ok(size) = u16::try_from(RecordHeader::SIZE + raw.len()) else {
        return false;
    };
    out.extend_from_slice(&EMBER_RECORD_BPF_SAMPLE.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(raw);
    true
}

/// A count of `lost` samples framed as a `PERF_RECORD_LOST_SAMPLES` at the end of `out`.
pub fn frame_lost_samples(lost: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&PERF_RECORD_LOST_SAMPLES.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(&lost.to_le_bytes());
}

/// The time a record of ember's BPF program (`raw`, as the program sent it) was taken: its
/// header's word 14.
pub fn bpf_record_time(raw: &[u8]) -> Option<u64> {
    raw.get(8 * 14..8 * 15)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
}

/// Read a sample of ember's BPF program (`rec`: a header, then the record as the program
/// sent it; see [`crate::sampler::bpf::record`]).
fn parse_bpf_sample(rec: &[u8]) -> Result<SampleEvent<'_>, MalformedRecord> {
    let raw = &rec[RecordHeader::SIZE.min(rec.len())..];
    let w = |i: usize| -> Result<u64, MalformedRecord> {
        raw.get(8 * i..8 * i + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .ok_or(MalformedRecord::Truncated {
                needed: 8,
                offset: RecordHeader::SIZE + 8 * i,
                len: rec.len(),
            })
    };
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
    // The copy's length, and where it starts in the raw data (after the frames).
    let (at_end, copy_at_sample, copy) = (regs(4)?, w(8)? != 0, w(7)?);
    let (copy_len, copy_at) = ((copy & 0xffff_ffff) as usize, (copy >> 32) as usize);
    let sample_regs = regs(9)?;
    let (nkernel, frames_at) = (nkernel.min(MAX_KERNEL), 8 * HEADER_WORDS);
    let part = |from: usize, len: usize| {
        raw.get(from..from.saturating_add(len))
            .ok_or(MalformedRecord::Truncated {
                needed: len,
                offset: RecordHeader::SIZE.saturating_add(from),
                len: rec.len(),
            })
    };
    let user_len = nuser.saturating_mul(8);
    let frames = part(frames_at, user_len)?;
    let kernel_at = frames_at.saturating_add(user_len);
    let kernel = part(kernel_at, 8 * nkernel)?;
    // How the Python walk ended, and from bit 8 how many name blocks follow its frames.
    let (npython, python_end) = (w(12)? as usize, w(13)? & 0xff);
    let nnames = ((w(13)? >> 8) as usize).min(PYTHON_MAX_NAMES);
    let python_at = kernel_at + 8 * nkernel;
    let python_len = npython.saturating_mul(8 * PYTHON_FRAME_WORDS);
    let python = part(python_at, python_len)?;
    let python_names = part(python_at + python_len, nnames * PYTHON_NAME_BYTES)?;
    let copy = part(copy_at.min(raw.len()), copy_len)?;
    // The process and thread as the kernel's bpf_get_current_pid_tgid gives them.
    let (time, pid_tid, cpu) = (w(14)?, w(15)?, w(16)? as u32);
    Ok(SampleEvent {
        pid: (pid_tid >> 32) as u32,
        tid: pid_tid as u32,
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
            python,
            python_end,
            python_names,
        }),
        ..SampleEvent::default()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record as ember's BPF program sends it: two user frames, one kernel frame, one
    /// Python frame, no copy.
    #[test]
    fn a_bpf_record_reads_back_with_its_walk() {
        let mut raw: Vec<u64> = vec![
            MAGIC, 1, 2, 0, 0x401002, 0x7ff0, 0, 0, 0, 0x401000, 0x7fe0, 7, 1, 1,
        ];
        raw.extend([0x401000, 0x402001, 0xffff_ffff_8100_0000]);
        raw.extend([0x7f00_0000, (12u64 << 32) | 3, 0x7f00_1000, 0x7f00_2000]);
        let mut rec = bpf_record(&raw);
        let Some(Event::Sample(s)) = SampleLayout::recorded(true).parse(&rec).unwrap() else {
            panic!("not a sample");
        };
        assert_eq!((s.pid, s.tid, s.time, s.cpu), (5, 6, 77, 1));
        let walk = s.walked.unwrap();
        assert_eq!(walk.frames.len(), 16);
        assert_eq!(walk.end, 0);
        assert_eq!(s.callchain, &0xffff_ffff_8100_0000u64.to_le_bytes());
        assert!(s.user_stack.is_empty());
        assert_eq!(s.user_regs.unwrap().sp, 0x7ff0);
        assert_eq!((walk.python.len(), walk.python_end), (32, 1));
        assert_eq!(walk.python[..8], 0x7f00_0000u64.to_le_bytes());
        assert!(walk.python_names.is_empty());
        assert_eq!(bpf_record_time(&rec[8..]), Some(77));
        // Not the program's: refused.
        rec[8] ^= 1;
        assert!(SampleLayout::recorded(true).parse(&rec).is_err());
    }

    /// The names of a code object follow the Python frames, counted from bit 8 of the word
    /// that says how the Python walk ended.
    #[test]
    fn a_bpf_record_brings_the_names_after_the_python_frames() {
        let mut raw: Vec<u64> = vec![MAGIC, 0, 1, 0, 0, 0, 0, 0, 0, 0x401000, 0, 0, 1, 1 << 8 | 2];
        raw.push(0x401000);
        raw.extend([0x7f00_0000, 3, 0x7f00_1000, 0x7f00_2000]);
        let mut block = vec![0u64; PYTHON_NAME_BYTES / 8];
        block[..4].copy_from_slice(&[0x7f00_0000, 0x7f00_1000, 0x7f00_2000, 5 | 8 << 32]);
        raw.extend(&block);
        let rec = bpf_record(&raw);
        let Some(Event::Sample(s)) = SampleLayout::recorded(true).parse(&rec).unwrap() else {
            panic!("not a sample");
        };
        let walk = s.walked.unwrap();
        assert_eq!(walk.python_end, 2);
        assert_eq!(walk.python_names.len(), PYTHON_NAME_BYTES);
        assert_eq!(walk.python_names[24..32], (5u64 | 8 << 32).to_le_bytes());
        // A count of blocks the record does not hold: refused, not read past its end.
        let mut short = raw.clone();
        short[13] = 2 << 8 | 2;
        assert!(SampleLayout::recorded(true)
            .parse(&bpf_record(&short))
            .is_err());
    }

    /// A sample of ember's BPF program as the reader frames it: `raw` is the program's
    /// record without the header's last three words, which say pid 5, tid 6, at 77 on CPU 1.
    fn bpf_record(raw: &[u64]) -> Vec<u8> {
        let mut words = raw[..14].to_vec();
        words.extend([77, 5 << 32 | 6, 1]);
        words.extend(&raw[14..]);
        let raw: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut rec = Vec::new();
        assert!(frame_bpf_sample(&raw, &mut rec));
        rec
    }

    /// A walk that ended at a frame without rows: the stack from there follows its frames.
    #[test]
    fn a_bpf_records_stack_copy_follows_its_frames() {
        let copy_at = 8 * (HEADER_WORDS as u64 + 2);
        let mut raw: Vec<u64> = vec![
            MAGIC,
            0,
            2,
            1,
            0x402001,
            0x7ff8,
            0,
            16 | (copy_at << 32),
            0,
            0x401000,
            0x7fe0,
            7,
            0,
            0,
        ];
        raw.extend([0x401000, 0x402001, 0xaaaa, 0xbbbb]);
        let rec = bpf_record(&raw);
        let Some(Event::Sample(s)) = SampleLayout::recorded(true).parse(&rec).unwrap() else {
            panic!("not a sample");
        };
        let walk = s.walked.unwrap();
        assert_eq!(walk.frames.len(), 16);
        assert_eq!(s.user_stack.len(), 16);
        assert_eq!(s.user_stack[..8], 0xaaaau64.to_le_bytes());
        // Registers where the walk ended, for the unwinder to go on from.
        assert_eq!(s.user_regs.unwrap().sp, 0x7ff8);
    }

    const LAYOUT: SampleLayout = SampleLayout::recorded(true);

    fn header(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&misc.to_le_bytes());
        v.extend_from_slice(&((body.len() + 8) as u16).to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn sample_id(pid: u32, tid: u32, time: u64, cpu: u32) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [pid, tid] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.extend_from_slice(&time.to_le_bytes());
        v.extend_from_slice(&cpu.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v
    }

    fn sample_bytes() -> Vec<u8> {
        let mut b = Vec::new();
        let push = |b: &mut Vec<u8>, x: u64| b.extend_from_slice(&x.to_le_bytes());
        push(&mut b, 0x401000); // ip
        b.extend_from_slice(&10u32.to_le_bytes());
        b.extend_from_slice(&11u32.to_le_bytes());
        push(&mut b, 12345); // time
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        push(&mut b, 1000); // period
        push(&mut b, 3); // callchain nr
        push(&mut b, crate::model::callchain::PERF_CONTEXT_USER);
        push(&mut b, 0x401000);
        push(&mut b, 0x402000);
        push(&mut b, 2); // abi 64
        push(&mut b, 0x7ff0); // bp
        push(&mut b, 0x7fe0); // sp
        push(&mut b, 0x401000); // ip
        push(&mut b, 16); // stack size
        b.extend_from_slice(&[0xaa; 16]);
        push(&mut b, 8); // dyn size
        header(PERF_RECORD_SAMPLE, 2, &b)
    }

    #[test]
    fn parses_a_full_sample() {
        let rec = sample_bytes();
        assert_eq!(LAYOUT.record_time(&rec), 12345);
        let Some(Event::Sample(s)) = LAYOUT.parse(&rec).unwrap() else {
            panic!("not a sample")
        };
        assert_eq!((s.pid, s.tid, s.cpu, s.period), (10, 11, 1, 1000));
        assert_eq!(s.ip, 0x401000);
        assert!(!s.kernel_mode);
        let chain: Vec<u64> = crate::model::callchain::raw_entries(s.callchain).collect();
        assert_eq!(
            chain,
            vec![
                crate::model::callchain::PERF_CONTEXT_USER,
                0x401000,
                0x402000
            ]
        );
        assert_eq!(
            s.user_regs,
            Some(UserRegs {
                ip: 0x401000,
                sp: 0x7fe0,
                bp: 0x7ff0
            })
        );
        assert_eq!(s.user_stack, &[0xaa; 8]);
    }

    #[test]
    fn a_compacted_sample_keeps_only_the_used_stack_and_parses_the_same() {
        let rec = sample_bytes();
        let copy = LAYOUT.stack_copy(&rec).expect("a stack copy");
        assert_eq!(copy.unused(), 8);
        let mut out = vec![0xee; 3];
        copy.write_compacted(&rec, &mut out);
        let compact = &out[3..];
        assert_eq!(compact.len(), rec.len() - 8);
        assert_eq!(LAYOUT.parse(compact).unwrap(), LAYOUT.parse(&rec).unwrap());
        assert_eq!(LAYOUT.stack_copy(compact).map(|c| c.unused()), Some(0));
        let lost = header(PERF_RECORD_LOST, 0, &[0; 16]);
        assert_eq!(LAYOUT.stack_copy(&lost), None);
        // A sample without a stack copy (size 0, no dyn_size).
        let mut no_copy = sample_bytes();
        let at = no_copy.len() - 8 - 16 - 8;
        no_copy.truncate(at);
        no_copy.extend_from_slice(&0u64.to_le_bytes());
        let len = no_copy.len() as u16;
        no_copy[6..8].copy_from_slice(&len.to_le_bytes());
        assert!(LAYOUT.parse(&no_copy).unwrap().is_some());
        assert_eq!(LAYOUT.stack_copy(&no_copy), None);
    }

    #[test]
    fn every_truncation_of_a_sample_is_an_error_not_a_panic() {
        let rec = sample_bytes();
        for len in 0..rec.len() {
            let mut r = rec[..len].to_vec();
            if len >= 8 {
                r[6..8].copy_from_slice(&(len as u16).to_le_bytes());
            }
            assert!(LAYOUT.parse(&r).is_err(), "len {len}");
        }
    }

    /// An MMAP2 record of `name` (r-x) mapped by pid 5, tid 6 at 0x5000..0x6000, file
    /// offset 0x2000, at time 99, as [`SampleLayout::recorded`]`(true)` reads it.
    pub(crate) fn mmap2_record(name: &str, (maj, min, ino): (u32, u32, u64)) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&5u32.to_le_bytes());
        body.extend_from_slice(&6u32.to_le_bytes());
        for x in [0x5000u64, 0x1000, 0x2000] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        body.extend_from_slice(&maj.to_le_bytes());
        body.extend_from_slice(&min.to_le_bytes());
        body.extend_from_slice(&ino.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes()); // ino gen
        body.extend_from_slice(&5u32.to_le_bytes()); // prot r-x
        body.extend_from_slice(&2u32.to_le_bytes()); // flags
        body.extend_from_slice(name.as_bytes());
        body.resize((body.len() + 1).next_multiple_of(8), 0);
        body.extend_from_slice(&sample_id(5, 6, 99, 0));
        header(PERF_RECORD_MMAP2, 2, &body)
    }

    #[test]
    fn parses_mmap2_comm_fork_lost() {
        let rec = mmap2_record("/usr/bin/x", (8, 1, 77));
        assert_eq!(LAYOUT.record_time(&rec), 99);
        let Some(Event::Mmap(m)) = LAYOUT.parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.pid, m.start, m.len, m.pgoff),
            (5, 0x5000, 0x1000, 0x2000)
        );
        assert_eq!(m.dev_ino, Some((8, 1, 77)));
        assert!(m.executable);
        assert_eq!(m.filename, b"/usr/bin/x");

        let mut body = Vec::new();
        body.extend_from_slice(&5u32.to_le_bytes());
        body.extend_from_slice(&5u32.to_le_bytes());
        body.extend_from_slice(b"worker\0\0");
        body.extend_from_slice(&sample_id(5, 5, 100, 0));
        let rec = header(PERF_RECORD_COMM, PERF_RECORD_MISC_COMM_EXEC, &body);
        let Some(Event::Comm(cm)) = LAYOUT.parse(&rec).unwrap() else {
            panic!()
        };
        assert_eq!(cm.name, b"worker");
        assert!(cm.exec);

        let mut body = Vec::new();
        for x in [7u32, 5, 8, 5] {
            body.extend_from_slice(&x.to_le_bytes());
        }
        body.extend_from_slice(&101u64.to_le_bytes());
        body.extend_from_slice(&sample_id(7, 8, 101, 0));
        let rec = header(PERF_RECORD_FORK, 0, &body);
        assert_eq!(
            LAYOUT.parse(&rec).unwrap(),
            Some(Event::Fork(ForkEvent {
                pid: 7,
                ppid: 5,
                tid: 8,
                ptid: 5,
                time: 101
            }))
        );

        let mut body = Vec::new();
        body.extend_from_slice(&1u64.to_le_bytes());
        body.extend_from_slice(&42u64.to_le_bytes());
        body.extend_from_slice(&sample_id(0, 0, 102, 0));
        let rec = header(PERF_RECORD_LOST, 0, &body);
        assert_eq!(LAYOUT.parse(&rec).unwrap(), Some(Event::Lost(42)));
    }

    #[test]
    fn switch_records_and_relabeled_samples() {
        let out = header(
            PERF_RECORD_SWITCH,
            PERF_RECORD_MISC_SWITCH_OUT | PERF_RECORD_MISC_SWITCH_OUT_PREEMPT,
            &sample_id(5, 6, 77, 1),
        );
        assert_eq!(LAYOUT.record_time(&out), 77);
        assert_eq!(
            LAYOUT.parse(&out).unwrap(),
            Some(Event::Switch(SwitchEvent {
                pid: 5,
                tid: 6,
                time: 77,
                out: true,
                preempted: true
            }))
        );
        let back_in = header(PERF_RECORD_SWITCH, 0, &sample_id(5, 6, 78, 1));
        let Some(Event::Switch(s)) = LAYOUT.parse(&back_in).unwrap() else {
            panic!()
        };
        assert!(!s.out && !s.preempted);

        // A sample the reader relabeled as taken at a switch-out parses as a sample.
        let mut rec = sample_bytes();
        rec[0..4].copy_from_slice(&EMBER_RECORD_SWITCH_OUT_SAMPLE.to_le_bytes());
        assert_eq!(LAYOUT.record_time(&rec), 12345);
        let Some(Event::Sample(s)) = LAYOUT.parse(&rec).unwrap() else {
            panic!()
        };
        assert!(s.switched_out);
        assert_eq!(s.user_stack, &[0xaa; 8]);
        // Cut anywhere: an error, never a panic.
        for len in 8..rec.len() {
            let mut r = rec[..len].to_vec();
            r[6..8].copy_from_slice(&(len as u16).to_le_bytes());
            assert!(LAYOUT.parse(&r).is_err(), "len {len}");
        }
    }

    #[test]
    fn unknown_kinds_are_skipped() {
        let rec = header(200, 0, &sample_id(0, 0, 1, 0));
        assert_eq!(LAYOUT.parse(&rec).unwrap(), None);
    }
}
