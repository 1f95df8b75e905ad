//! Python frames read by ember's BPF program at each sample ([`crate::sampler::bpf`]): the
//! CPython processes it is told of, and each sample's frames turned into the Python stack the
//! collector puts in place of the evaluation loop's native frames
//! ([`super::python::PythonFrames::splice`]). The program sends each frame's code object by
//! address with what tells it apart; the object is read from the process once, and taken
//! for a frame only while it is still the object the program saw. The names of a module's or
//! a class's body go with the first sample of it too: the body is freed as soon as it has
//! run, often before ember reads it.

use std::collections::HashMap;

use super::python::Recorded;
use crate::linux::memory::read_process;
use crate::model::{KernelWalk, KERNEL_PYTHON_CUT, KERNEL_PYTHON_ENTRY, KERNEL_PYTHON_NONE};
use crate::python::layout::{CurrentFrame, Entry, Layout};
use crate::python::{CodeInfo, Codes, InterpreterFile, Memory, SeenCode};
use crate::sampler::bpf::record::{PYTHON_NAME_BYTES, PYTHON_NAME_FILE};
use crate::sampler::bpf::{PythonEntry, PYTHON_NO_OFFSET, PYTHON_READ_MAX};

/// The memory of a running process.
pub(super) struct ProcessMemory(pub u32);

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        read_process(self.0, addr, buf)
    }
}

/// Code ids start here, apart from those the ptrace sampler gives (from 0).
const FIRST_ID: u32 = 1 << 30;

/// The Python processes whose frames the program reads, and their code objects.
pub(super) struct KernelPythons {
    procs: HashMap<u32, Reader>,
    /// Samples given Python frames read in the kernel.
    pub samples: u64,
    next_id: u32,
    /// The frames of the sample at hand.
    frames: Vec<Recorded>,
    /// Code objects named from what the program sent (gone from the process before ember
    /// read them).
    pub named_from_samples: u64,
    /// Samples that came with names.
    pub samples_with_names: u64,
}

/// One process: its layout, where its evaluation loop is, what the program was told, and
/// the code objects read so far.
#[derive(Clone)]
pub(super) struct Reader {
    layout: Layout,
    pub eval: (u64, u64),
    pub entry: PythonEntry,
    codes: Codes,
}

impl Default for KernelPythons {
    fn default() -> Self {
        KernelPythons {
            procs: HashMap::new(),
            samples: 0,
            next_id: FIRST_ID,
            frames: Vec::new(),
            named_from_samples: 0,
            samples_with_names: 0,
        }
    }
}

impl KernelPythons {
    /// How to read the interpreter `file` of process `pid`, mapped at `start` from file
    /// offset `pgoff`: `None` where its version's layout is unknown.
    pub(super) fn reader(
        pid: u32,
        file: &InterpreterFile,
        (start, pgoff): (u64, u64),
    ) -> Option<Reader> {
        let bias = file.bias(start, pgoff)?;
        let runtime = file.runtime.wrapping_add(bias);
        let layout = crate::python::layout_of(&ProcessMemory(pid), file.version, runtime)?;
        Some(Reader {
            layout,
            eval: (
                file.eval.0.wrapping_add(bias),
                file.eval.1.wrapping_add(bias),
            ),
            entry: program_entry(&layout, runtime)?,
            codes: Codes::default(),
        })
    }

    pub(super) fn add(&mut self, pid: u32, reader: Reader) {
        self.procs.insert(pid, reader);
    }

    pub(super) fn get(&self, pid: u32) -> Option<&Reader> {
        self.procs.get(&pid)
    }

    /// Process `pid` ended, or ran `exec`.
    pub(super) fn ended(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// The Python stack of sample `walk` of process `pid`, innermost frame first, and whether
    /// it went on past them; code objects read for the first time are given to `new_code`
    /// with their ids. `None` where the thread runs no Python.
    pub(super) fn stack(
        &mut self,
        pid: u32,
        walk: &KernelWalk,
        new_code: &mut dyn FnMut(u32, CodeInfo),
    ) -> Option<(&[Recorded], bool)> {
        let reader = self.procs.get_mut(&pid)?;
        if walk.python_end == KERNEL_PYTHON_NONE {
            return None;
        }
        let mem = ProcessMemory(pid);
        self.frames.clear();
        let mut cut = walk.python_end == KERNEL_PYTHON_CUT;
        for f in walk.python.chunks_exact(32) {
            let word = |i: usize| u64::from_le_bytes(f[8 * i..8 * i + 8].try_into().unwrap());
            let (code, packed) = (word(0), word(1));
            let seen = SeenCode {
                filename: word(2),
                qualname: word(3),
                first_line: (packed >> 32) as i32,
            };
            let sent = sent_names(walk.python_names, code, seen);
            let (id, from_sent) =
                reader.code_id(&mem, (code, seen), sent, new_code, &mut self.next_id);
            self.named_from_samples += u64::from(from_sent);
            let Some(id) = id else {
                // Gone, or another object at its address: the frames from here out are not
                // named rather than named wrong.
                cut = true;
                break;
            };
            let offset = (packed & (KERNEL_PYTHON_ENTRY - 1)) as u32;
            self.frames
                .push((id, offset, packed & KERNEL_PYTHON_ENTRY != 0));
        }
        self.samples += 1;
        self.samples_with_names += u64::from(!walk.python_names.is_empty());
        Some((&self.frames, cut))
    }
}

impl Reader {
    /// The id of code object `object` (its address and what the program saw of it), read
    /// from the process; where it is gone, named by what the program `sent` of it (true).
    fn code_id(
        &mut self,
        mem: &dyn Memory,
        object: (u64, SeenCode),
        sent: Option<CodeInfo>,
        new_code: &mut dyn FnMut(u32, CodeInfo),
        next_id: &mut u32,
    ) -> (Option<u32>, bool) {
        let layout = &self.layout;
        let read = self
            .codes
            .id_if_same(mem, layout, object, new_code, next_id);
        match (read, sent) {
            (None, Some(info)) => {
                let id = self.codes.id_of_named(object, info, new_code, next_id);
                (Some(id), true)
            }
            (read, _) => (read, false),
        }
    }
}

/// What the program sent of code object `code` (as `seen`) with a sample, among `blocks`.
fn sent_names(blocks: &[u8], code: u64, seen: SeenCode) -> Option<CodeInfo> {
    blocks.chunks_exact(PYTHON_NAME_BYTES).find_map(|b| {
        let word = |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
        if (word(0), word(1), word(2)) != (code, seen.filename, seen.qualname) {
            return None;
        }
        let lens = word(3);
        let file = name_text(&b[32..32 + PYTHON_NAME_FILE], lens)?;
        let qual = name_text(&b[32 + PYTHON_NAME_FILE..], lens >> 32)?;
        Some(CodeInfo {
            qualname: qual,
            filename: file,
            first_line: seen.first_line,
            linetable: Vec::new(),
        })
    })
}

/// A name sent in `room`, of the length and flag in the low bits of `len`; "…" begins one of
/// which only the last bytes came.
fn name_text(room: &[u8], len: u64) -> Option<String> {
    let text = room.get(..(len & 0xffff) as usize)?;
    let text = String::from_utf8_lossy(text);
    Some(if len & (1 << 16) != 0 {
        format!("…{text}")
    } else {
        text.into_owned()
    })
}

/// What the program is told of an interpreter of `layout` whose runtime state is at
/// `runtime`; `None` where an offset does not fit its fields.
fn program_entry(l: &Layout, runtime: u64) -> Option<PythonEntry> {
    let o = |v: u64| u32::try_from(v).ok();
    let (cframe, current_frame) = match l.current_frame {
        CurrentFrame::ThroughCFrame {
            cframe,
            current_frame,
        } => (o(cframe)?, o(current_frame)?),
        CurrentFrame::Direct(at) => (PYTHON_NO_OFFSET, o(at)?),
    };
    // The code object's fields the program reads, read at once (an int read as a word, the
    // next field's bytes with it).
    let code_fields = [
        l.code_firstlineno,
        l.code_filename,
        l.code_qualname,
        l.code_flags,
    ];
    let code_from = *code_fields.iter().min()?;
    let code_size = code_fields.iter().max()? + 8 - code_from;
    let fits = |size: u64| {
        (size <= u64::from(PYTHON_READ_MAX))
            .then(|| o(size))
            .flatten()
    };
    Some(PythonEntry {
        runtime,
        interpreters_head: o(l.runtime_interpreters_head)?,
        threads_head: o(l.interp_threads_head)?,
        tstate_next: o(l.tstate_next)?,
        tstate_tid: o(l.tstate_native_thread_id)?,
        cframe,
        current_frame,
        frame_code: o(l.frame_code)?,
        frame_previous: o(l.frame_previous)?,
        frame_prev_instr: o(l.frame_prev_instr)?,
        frame_owner: o(l.frame_owner)?,
        entry_byte: match l.entry {
            Entry::IsEntryByte(at) => o(at)?,
            Entry::CStackOwner => PYTHON_NO_OFFSET,
        },
        code_instructions: o(l.code_instructions)?,
        code_firstlineno: o(l.code_firstlineno)?,
        code_filename: o(l.code_filename)?,
        code_qualname: o(l.code_qualname)?,
        frame_size: fits(l.frame_size as u64)?,
        code_from: o(code_from)?,
        code_size: fits(code_size)?,
        str_data: o(l.unicode_ascii_data)?,
        code_flags: o(l.code_flags)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_layout_fits_the_programs_fields() {
        for (_, l) in crate::python::layout::LAYOUTS {
            let e = program_entry(l, 0x1000).unwrap();
            assert_eq!(e.runtime, 0x1000);
            assert_eq!(e.frame_code as u64, l.frame_code);
            // Each field the program takes from its two reads lies within them.
            for off in [e.frame_code, e.frame_previous, e.frame_prev_instr] {
                assert!(off + 8 <= e.frame_size);
            }
            assert!(e.frame_owner < e.frame_size && e.frame_size <= PYTHON_READ_MAX);
            let code_fields = [
                e.code_firstlineno,
                e.code_filename,
                e.code_qualname,
                e.code_flags,
            ];
            for off in code_fields {
                assert!(off >= e.code_from && off + 8 <= e.code_from + e.code_size);
            }
            assert!(e.code_size <= PYTHON_READ_MAX);
        }
    }

    /// A name block as the program sends it for code object `code`.
    fn block(code: u64, seen: SeenCode, file: &str, qual: &str, tail: bool) -> Vec<u8> {
        let mut b = vec![0u8; PYTHON_NAME_BYTES];
        let lens = file.len() as u64 | u64::from(tail) << 16 | (qual.len() as u64) << 32;
        for (i, w) in [code, seen.filename, seen.qualname, lens]
            .iter()
            .enumerate()
        {
            b[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
        }
        b[32..32 + file.len()].copy_from_slice(file.as_bytes());
        let q = 32 + PYTHON_NAME_FILE;
        b[q..q + qual.len()].copy_from_slice(qual.as_bytes());
        b
    }

    #[test]
    fn names_sent_are_taken_for_the_object_they_came_with_only() {
        let seen = SeenCode {
            filename: 0x10,
            qualname: 0x20,
            first_line: 3,
        };
        let mut blocks = block(0x1000, seen, "/srv/app/settings.py", "<module>", false);
        blocks.extend(block(0x2000, seen, "rc/app/models.py", "Model", true));
        let info = sent_names(&blocks, 0x1000, seen).unwrap();
        assert_eq!(
            (info.filename.as_str(), info.qualname.as_str()),
            ("/srv/app/settings.py", "<module>")
        );
        assert_eq!((info.first_line, info.linetable.len()), (3, 0));
        // Only the last bytes of a longer name came.
        let info = sent_names(&blocks, 0x2000, seen).unwrap();
        assert_eq!(info.filename, "…rc/app/models.py");
        // Another object at the address (other names), or another address: nothing.
        let other = SeenCode {
            qualname: 0x30,
            ..seen
        };
        assert!(sent_names(&blocks, 0x1000, other).is_none());
        assert!(sent_names(&blocks, 0x3000, seen).is_none());
    }

    #[test]
    fn a_sample_without_python_gives_an_empty_stack() {
        let mut k = KernelPythons::default();
        let walk = KernelWalk::default();
        assert!(k.stack(1, &walk, &mut |_, _| {}).is_none());
    }
}
