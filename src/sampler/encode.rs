//! Writing records in the perf ring-buffer format, for backends that are not the kernel's
//! perf events (ptrace): what they observe is written as the records the kernel would have
//! written, laid out as [`SampleLayout::recorded`]`(true)`, so one parser, one unwinder and
//! one profile serve every backend.

use super::records::{
    SampleLayout, EMBER_RECORD_OFF_CPU_SAMPLE, EMBER_RECORD_PTRACE_SAMPLE,
    EMBER_RECORD_PYTHON_CODE, EMBER_RECORD_PYTHON_PROCESS, EMBER_RECORD_PYTHON_STACK,
    EMBER_RECORD_STACK_PART, EMBER_RECORD_STACK_WORDS, EMBER_RECORD_TAKEOVER, PERF_RECORD_COMM,
    PERF_RECORD_EXIT, PERF_RECORD_FORK, PERF_RECORD_LOST_SAMPLES, PERF_RECORD_MISC_COMM_EXEC,
    PERF_RECORD_MMAP2,
};
use crate::model::{UserRegs, WaitReason};

/// The layout of every record written here.
pub const LAYOUT: SampleLayout = SampleLayout::recorded(true);

/// `PERF_RECORD_MISC_USER`: the sample was taken in user space.
const MISC_USER: u16 = 2;
/// The largest record (the header's size field is a u16).
const MAX_RECORD: usize = 65528;

/// Appends records to a byte buffer; `finish` fixes each record's size in its header.
struct Rec<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Rec<'a> {
    fn begin(out: &'a mut Vec<u8>, kind: u32, misc: u16) -> Self {
        let start = out.len();
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&misc.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        Rec { out, start }
    }

    fn u64(&mut self, x: u64) -> &mut Self {
        self.out.extend_from_slice(&x.to_le_bytes());
        self
    }

    fn u32s(&mut self, a: u32, b: u32) -> &mut Self {
        self.out.extend_from_slice(&a.to_le_bytes());
        self.out.extend_from_slice(&b.to_le_bytes());
        self
    }

    /// A NUL-terminated string padded to 8 bytes.
    fn cstr(&mut self, s: &[u8]) -> &mut Self {
        let s = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
        self.out.extend_from_slice(s);
        let pad = 8 - s.len() % 8;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// The `sample_id` trailer of non-sample records: TID, TIME, CPU.
    fn sample_id(&mut self, pid: u32, tid: u32, time: u64) -> &mut Self {
        self.u32s(pid, tid).u64(time).u32s(0, 0)
    }

    fn finish(&mut self) {
        let size = self.out.len() - self.start;
        debug_assert!(
            size.is_multiple_of(8) && size <= MAX_RECORD,
            "record of {size} bytes"
        );
        self.out[self.start + 6..self.start + 8].copy_from_slice(&(size as u16).to_le_bytes());
    }
}

/// What a sampled thread looked like.
#[derive(Clone, Copy, Debug)]
pub struct Sample<'a> {
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    pub cpu: u32,
    pub regs: UserRegs,
    /// The kernel's part of the callchain, as the kernel writes it (empty: none).
    pub kernel: &'a [u64],
    /// The user stack from `regs.sp` up.
    pub stack: &'a [u8],
    /// Words of the stack above `stack`: (address, value), sorted by address.
    pub words: &'a [(u64, u64)],
    /// The thread was waiting rather than running: why.
    pub off_cpu: Option<WaitReason>,
}

/// The most stack a written sample can carry.
pub const MAX_STACK: usize = 65528 - 256;

/// Append a sample (or an off-CPU sample) with its kernel callchain, the registers a DWARF
/// unwinder needs and the stack copy (cut to [`MAX_STACK`]).
pub fn sample(out: &mut Vec<u8>, s: &Sample) {
    let stack = &s.stack[..s.stack.len().min(MAX_STACK) & !7];
    let kind = if s.off_cpu.is_some() {
        EMBER_RECORD_OFF_CPU_SAMPLE
    } else {
        EMBER_RECORD_PTRACE_SAMPLE
    };
    let mut r = Rec::begin(out, kind, MISC_USER);
    if let Some(reason) = s.off_cpu {
        r.u64(reason.to_wire());
    }
    r.u64(s.regs.ip)
        .u32s(s.pid, s.tid)
        .u64(s.time)
        .u32s(s.cpu, 0)
        .u64(1) // period
        .u64(s.kernel.len() as u64);
    for &entry in s.kernel {
        r.u64(entry);
    }
    r.u64(2) // regs abi: 64-bit
        // In the order of their perf register numbers: BP, SP, IP.
        .u64(s.regs.bp)
        .u64(s.regs.sp)
        .u64(s.regs.ip)
        .u64(stack.len() as u64);
    r.out.extend_from_slice(stack);
    r.u64(stack.len() as u64); // dyn_size
    r.finish();
}

/// The most stack bytes one [`EMBER_RECORD_STACK_PART`] carries (the header and the
/// `sample_id` trailer take 32 of a record's bytes).
pub const MAX_STACK_PART: usize = MAX_RECORD - 32;

/// Append one part of the stack of the sample of `s` that follows (see
/// [`EMBER_RECORD_STACK_PART`]): `bytes`, at most [`MAX_STACK_PART`], a multiple of 8.
pub fn stack_part(out: &mut Vec<u8>, s: &Sample, bytes: &[u8]) {
    debug_assert!(bytes.len() <= MAX_STACK_PART && bytes.len().is_multiple_of(8));
    let mut r = Rec::begin(out, EMBER_RECORD_STACK_PART, MISC_USER);
    r.out.extend_from_slice(bytes);
    r.sample_id(s.pid, s.tid, s.time).finish();
}

/// The most words one [`EMBER_RECORD_STACK_WORDS`] carries.
pub const MAX_STACK_WORDS: usize = MAX_STACK_PART / 16;

/// Append words of the stack of the sample of `s` that follows, above its copy (see
/// [`EMBER_RECORD_STACK_WORDS`]): `words`, some of `s.words`, at most [`MAX_STACK_WORDS`].
pub fn stack_words(out: &mut Vec<u8>, s: &Sample, words: &[(u64, u64)]) {
    debug_assert!(words.len() <= MAX_STACK_WORDS);
    let mut r = Rec::begin(out, EMBER_RECORD_STACK_WORDS, MISC_USER);
    for &(addr, value) in words {
        r.u64(addr).u64(value);
    }
    r.sample_id(s.pid, s.tid, s.time).finish();
}

/// Append that process `pid` runs CPython with its evaluation loop at `eval` (see
/// [`EMBER_RECORD_PYTHON_PROCESS`]).
pub fn python_process(out: &mut Vec<u8>, pid: u32, eval: (u64, u64), time: u64) {
    let mut r = Rec::begin(out, EMBER_RECORD_PYTHON_PROCESS, MISC_USER);
    r.u64(eval.0).u64(eval.1);
    r.sample_id(pid, pid, time).finish();
}

/// Append a Python code object of process `pid` (see [`EMBER_RECORD_PYTHON_CODE`]); a line
/// table too long for one record is cut (its later lines are then unknown).
pub fn python_code(
    out: &mut Vec<u8>,
    pid: u32,
    id: u32,
    code: &crate::python::CodeInfo,
    time: u64,
) {
    let most = crate::python::MAX_STRING as usize;
    let name = &code.qualname.as_bytes()[..code.qualname.len().min(most)];
    let file = &code.filename.as_bytes()[..code.filename.len().min(most)];
    let room = MAX_RECORD - 64 - name.len() - file.len();
    let table = &code.linetable[..code.linetable.len().min(room)];
    let mut r = Rec::begin(out, EMBER_RECORD_PYTHON_CODE, MISC_USER);
    r.u32s(id, code.first_line as u32)
        .u32s(name.len() as u32, file.len() as u32)
        .u32s(table.len() as u32, 0);
    for bytes in [name, file, table] {
        r.out.extend_from_slice(bytes);
    }
    let pad = (8 - (name.len() + file.len() + table.len()) % 8) % 8;
    r.out.extend(std::iter::repeat_n(0u8, pad));
    r.sample_id(pid, pid, time).finish();
}

/// Append the Python stack of the sample of `s` that follows (see
/// [`EMBER_RECORD_PYTHON_STACK`]).
pub fn python_stack(out: &mut Vec<u8>, s: &Sample, walk: &crate::python::Walk) {
    let mut r = Rec::begin(out, EMBER_RECORD_PYTHON_STACK, MISC_USER);
    let flags = if walk.cut {
        crate::model::PYTHON_CUT
    } else {
        0
    };
    r.u32s(walk.frames.len() as u32, flags);
    for f in &walk.frames {
        let entry = if f.entry {
            crate::model::PYTHON_ENTRY
        } else {
            0
        };
        r.u32s(f.code, (f.offset & !crate::model::PYTHON_ENTRY) | entry);
    }
    r.sample_id(s.pid, s.tid, s.time).finish();
}

/// One mapping of a file (or pseudo-file) into a process.
#[derive(Clone, Copy, Debug)]
pub struct Mmap<'a> {
    pub pid: u32,
    pub start: u64,
    pub len: u64,
    pub pgoff: u64,
    pub dev_ino: Option<(u32, u32, u64)>,
    /// `PROT_*` bits.
    pub prot: u32,
    pub filename: &'a [u8],
    pub time: u64,
}

pub fn mmap2(out: &mut Vec<u8>, m: &Mmap) {
    let (maj, min, ino) = m.dev_ino.unwrap_or((0, 0, 0));
    let mut r = Rec::begin(out, PERF_RECORD_MMAP2, MISC_USER);
    r.u32s(m.pid, m.pid)
        .u64(m.start)
        .u64(m.len)
        .u64(m.pgoff)
        .u32s(maj, min)
        .u64(ino)
        .u64(0) // ino_generation
        .u32s(m.prot, 0) // prot, flags
        .cstr(&m.filename[..m.filename.len().min(4096)])
        .sample_id(m.pid, m.pid, m.time)
        .finish();
}

/// A thread's name: set at `exec` (`exec` true) or by the program.
pub fn comm(out: &mut Vec<u8>, pid: u32, tid: u32, name: &[u8], exec: bool, time: u64) {
    let misc = if exec { PERF_RECORD_MISC_COMM_EXEC } else { 0 };
    Rec::begin(out, PERF_RECORD_COMM, misc)
        .u32s(pid, tid)
        .cstr(&name[..name.len().min(256)])
        .sample_id(pid, tid, time)
        .finish();
}

/// Samples that could not be taken (`PERF_RECORD_LOST_SAMPLES`), as the kernel reports its
/// own losses.
pub fn lost(out: &mut Vec<u8>, pid: u32, tid: u32, count: u64, time: u64) {
    Rec::begin(out, PERF_RECORD_LOST_SAMPLES, 0)
        .u64(count)
        .sample_id(pid, tid, time)
        .finish();
}

/// From `time` on, process `pid` is sampled by ptrace (see [`EMBER_RECORD_TAKEOVER`]).
pub fn takeover(out: &mut Vec<u8>, pid: u32, time: u64) {
    Rec::begin(out, EMBER_RECORD_TAKEOVER, 0)
        .sample_id(pid, pid, time)
        .finish();
}

/// A thread or process started (`exit` false) or ended.
pub fn task(out: &mut Vec<u8>, exit: bool, pid: u32, ppid: u32, tid: u32, ptid: u32, time: u64) {
    let kind = if exit {
        PERF_RECORD_EXIT
    } else {
        PERF_RECORD_FORK
    };
    Rec::begin(out, kind, 0)
        .u32s(pid, ppid)
        .u32s(tid, ptid)
        .u64(time)
        .sample_id(pid, tid, time)
        .finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WaitReason;
    use crate::model::{CommEvent, Event, ForkEvent};

    /// A sample of thread 6 of process 5 at time 77.
    fn sample_with<'a>(stack: &'a [u8], words: &'a [(u64, u64)]) -> Sample<'a> {
        Sample {
            pid: 5,
            tid: 6,
            time: 77,
            cpu: 0,
            regs: UserRegs::default(),
            kernel: &[],
            stack,
            words,
            off_cpu: None,
        }
    }

    #[test]
    fn a_stack_part_parses_back_with_its_thread_and_time() {
        let stack: Vec<u8> = (0..=255u8).cycle().take(MAX_STACK_PART).collect();
        let s = sample_with(&stack, &[]);
        let mut out = Vec::new();
        stack_part(&mut out, &s, &stack);
        assert_eq!(out.len(), MAX_RECORD);
        assert_eq!(LAYOUT.record_time(&out), 77);
        match LAYOUT.parse(&out) {
            Ok(Some(Event::StackPart(p))) => {
                assert_eq!((p.tid, p.time), (6, 77));
                assert_eq!(p.bytes, &stack[..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stack_words_parse_back_with_their_thread_and_time() {
        let words: Vec<(u64, u64)> = (0..MAX_STACK_WORDS as u64).map(|i| (8 * i, !i)).collect();
        let s = sample_with(&[], &words);
        let mut out = Vec::new();
        stack_words(&mut out, &s, &words);
        match LAYOUT.parse(&out) {
            Ok(Some(Event::StackWords(p))) => {
                assert_eq!((p.tid, p.time), (6, 77));
                let pairs: Vec<u64> = p
                    .bytes
                    .chunks(8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                assert_eq!(pairs.len(), 2 * words.len());
                assert_eq!((pairs[2], pairs[3]), words[1]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn written_records_parse_back() {
        let mut out = Vec::new();
        let stack: Vec<u8> = (0..100u8).collect();
        let regs = UserRegs {
            ip: 0x401000,
            sp: 0x7ff0_0000,
            bp: 0x7ff0_0100,
        };
        let kernel = [
            crate::model::callchain::PERF_CONTEXT_KERNEL,
            0xffff_ffff_8100_0010,
        ];
        let s = Sample {
            pid: 5,
            tid: 6,
            time: 77,
            cpu: 1,
            regs,
            kernel: &kernel,
            stack: &stack,
            words: &[],
            off_cpu: None,
        };
        sample(&mut out, &s);
        assert_eq!(LAYOUT.record_time(&out), 77);
        let Some(Event::Sample(p)) = LAYOUT.parse(&out).unwrap() else {
            panic!("not a sample")
        };
        assert_eq!((p.pid, p.tid, p.time, p.cpu, p.ip), (5, 6, 77, 1, 0x401000));
        assert_eq!(p.user_regs, Some(regs));
        let chain: Vec<_> = crate::model::callchain::entries(p.callchain).collect();
        assert_eq!(
            chain,
            [crate::model::callchain::ChainEntry::Kernel(
                0xffff_ffff_8100_0010
            )]
        );
        // Cut to whole words.
        assert_eq!(p.user_stack, &stack[..96]);
        assert_eq!(p.off_cpu, None);
        assert!(p.from_ptrace);
        assert!(LAYOUT.stack_copy(&out).is_some());

        out.clear();
        sample(
            &mut out,
            &Sample {
                off_cpu: Some(WaitReason::Unknown),
                ..s
            },
        );
        assert_eq!(LAYOUT.record_time(&out), 77);
        let Some(Event::Sample(p)) = LAYOUT.parse(&out).unwrap() else {
            panic!("not a sample")
        };
        assert_eq!(p.off_cpu, Some(WaitReason::Unknown));
        assert_eq!(p.user_stack, &stack[..96]);

        out.clear();
        takeover(&mut out, 9, 1234);
        assert_eq!(LAYOUT.record_time(&out), 1234);
        assert_eq!(
            LAYOUT.parse(&out).unwrap(),
            Some(Event::TakenOver { pid: 9, time: 1234 })
        );

        out.clear();
        mmap2(
            &mut out,
            &Mmap {
                pid: 9,
                start: 0x1000,
                len: 0x2000,
                pgoff: 0x3000,
                dev_ino: Some((8, 1, 42)),
                prot: 5,
                filename: b"/usr/lib/libx.so",
                time: 3,
            },
        );
        assert_eq!(LAYOUT.record_time(&out), 3);
        let Some(Event::Mmap(m)) = LAYOUT.parse(&out).unwrap() else {
            panic!("not an mmap")
        };
        assert_eq!(
            (m.pid, m.start, m.len, m.pgoff),
            (9, 0x1000, 0x2000, 0x3000)
        );
        assert_eq!(m.dev_ino, Some((8, 1, 42)));
        assert!(m.executable);
        assert_eq!(m.filename, b"/usr/lib/libx.so");

        out.clear();
        comm(&mut out, 9, 10, b"worker", true, 4);
        assert_eq!(
            LAYOUT.parse(&out).unwrap(),
            Some(Event::Comm(CommEvent {
                pid: 9,
                tid: 10,
                name: b"worker",
                exec: true
            }))
        );

        out.clear();
        task(&mut out, true, 9, 1, 10, 9, 5);
        let f = ForkEvent {
            pid: 9,
            ppid: 1,
            tid: 10,
            ptid: 9,
            time: 5,
        };
        assert_eq!(LAYOUT.parse(&out).unwrap(), Some(Event::Exit(f)));
        assert_eq!(LAYOUT.record_time(&out), 5);

        out.clear();
        lost(&mut out, 9, 10, 3, 6);
        assert_eq!(LAYOUT.parse(&out).unwrap(), Some(Event::Lost(3)));
        assert_eq!(LAYOUT.record_time(&out), 6);
    }
}
