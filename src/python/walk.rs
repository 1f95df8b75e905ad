//! Reading a stopped thread's Python stack out of its process's memory: its thread state,
//! the chain of frames from the innermost out, and each frame's code object (named once and
//! kept while it stays the same object).
//!
//! Nothing read is trusted: a chain that loops, points to memory that cannot be read or is
//! longer than [`MAX_FRAMES`] ends the walk, and the stack says so ([`Walk::cut`]) rather
//! than being made up.

use std::collections::HashMap;

use super::layout::{CurrentFrame, Entry, Layout, FRAME_OWNED_BY_CSTACK};

/// Reads the memory of one process.
pub trait Memory {
    /// Fill `buf` from address `addr`; false if any of it cannot be read.
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool;

    fn u64_at(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// The most frames of one thread's Python stack that are read.
pub const MAX_FRAMES: usize = 4096;
/// The most thread states of one interpreter looked through for a thread.
const MAX_THREADS: usize = 65536;
/// The longest name or file name read, and the longest line table.
pub const MAX_STRING: u64 = 4096;
const MAX_LINETABLE: u64 = 1 << 20;

/// One frame of a Python stack: which code object (its id, see [`Codes`]), the instruction
/// it runs (code units from the start), and whether a C-level call of the evaluation loop
/// begins with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyFrame {
    pub code: u32,
    pub offset: u32,
    pub entry: bool,
}

/// A code object as read once: what names its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    pub qualname: String,
    pub filename: String,
    pub first_line: i32,
    pub linetable: Vec<u8>,
}

/// A Python stack read from a thread, innermost frame first.
#[derive(Clone, Debug, Default)]
pub struct Walk {
    pub frames: Vec<PyFrame>,
    /// The chain went on but could not be followed (unreadable, looping, too long, or a code
    /// object that could not be read).
    pub cut: bool,
}

/// The code objects of one process seen so far, each with the id its frames carry: an
/// address names the same object only while that object lives, so each is kept with the
/// fields that tell it apart ([`Signature`]) and gets a new id when they change.
#[derive(Clone, Default)]
pub struct Codes {
    by_address: HashMap<u64, (Signature, u32)>,
}

/// The pointers and first line of a code object: another object at the same address differs
/// in them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Signature {
    filename: u64,
    qualname: u64,
    linetable: u64,
    first_line: i32,
}

/// Where one process's interpreter is, and what is known of its threads and code.
#[derive(Clone)]
pub struct Interpreter {
    pub layout: Layout,
    /// The address of `_PyRuntime` in the process.
    pub runtime: u64,
    /// Thread id → its thread state, as found last.
    tstates: HashMap<u32, u64>,
    pub codes: Codes,
    /// The frames of the walk going on, to see a chain that loops.
    visited: std::collections::HashSet<u64>,
}

impl Interpreter {
    pub fn new(layout: Layout, runtime: u64) -> Interpreter {
        Interpreter {
            layout,
            runtime,
            tstates: HashMap::new(),
            codes: Codes::default(),
            visited: Default::default(),
        }
    }

    /// The Python stack of thread `tid` (stopped) into `walk`; code objects not seen before
    /// are named through `new_code` with the id their frames carry. A thread that runs no
    /// Python code gets an empty stack.
    pub fn walk(
        &mut self,
        mem: &dyn Memory,
        tid: u32,
        walk: &mut Walk,
        new_code: &mut dyn FnMut(u32, CodeInfo),
        next_id: &mut u32,
    ) {
        walk.frames.clear();
        walk.cut = false;
        let Some(tstate) = self.tstate(mem, tid) else {
            return;
        };
        let l = self.layout;
        let frame = match l.current_frame {
            CurrentFrame::ThroughCFrame {
                cframe,
                current_frame,
            } => mem
                .u64_at(tstate.wrapping_add(cframe))
                .filter(|&c| c != 0)
                .and_then(|c| mem.u64_at(c.wrapping_add(current_frame))),
            CurrentFrame::Direct(at) => mem.u64_at(tstate.wrapping_add(at)),
        };
        let Some(mut frame) = frame else {
            walk.cut = true;
            return;
        };
        let mut buf = vec![0u8; l.frame_size];
        let word = |b: &[u8], off: u64| {
            u64::from_le_bytes(
                b[off as usize..off as usize + 8]
                    .try_into()
                    .expect("8 bytes"),
            )
        };
        self.visited.clear();
        while frame != 0 {
            let again = !self.visited.insert(frame);
            if again || self.visited.len() > MAX_FRAMES || !mem.read(frame, &mut buf) {
                walk.cut = true;
                return;
            }
            let code = word(&buf, l.frame_code);
            let prev_instr = word(&buf, l.frame_prev_instr);
            let previous = word(&buf, l.frame_previous);
            let owner = buf[l.frame_owner as usize];
            frame = previous;
            let entry = match l.entry {
                Entry::IsEntryByte(off) => buf[off as usize] != 0,
                Entry::CStackOwner => {
                    if owner == FRAME_OWNED_BY_CSTACK {
                        // Marks where the call that ran the frames inside it began.
                        if let Some(last) = walk.frames.last_mut() {
                            last.entry = true;
                        }
                        continue;
                    }
                    false
                }
            };
            let Some(id) = self.codes.id(mem, &l, code, new_code, next_id) else {
                walk.cut = true;
                return;
            };
            let start = code.wrapping_add(l.code_instructions);
            let offset = prev_instr.checked_sub(start).map_or(0, |b| (b / 2) as u32);
            walk.frames.push(PyFrame {
                code: id,
                offset,
                entry,
            });
        }
    }

    /// The thread state of `tid`: the one found last if it still belongs to `tid`, else
    /// looked up in the interpreters' lists.
    fn tstate(&mut self, mem: &dyn Memory, tid: u32) -> Option<u64> {
        let l = self.layout;
        let is_tid =
            |t: u64| mem.u64_at(t.wrapping_add(l.tstate_native_thread_id)) == Some(u64::from(tid));
        if let Some(&t) = self.tstates.get(&tid) {
            if is_tid(t) {
                return Some(t);
            }
            self.tstates.remove(&tid);
        }
        let mut interp = mem.u64_at(self.runtime.wrapping_add(l.runtime_interpreters_head))?;
        // Interpreters are few; each lists its threads.
        for _ in 0..64 {
            if interp == 0 {
                return None;
            }
            let mut t = mem.u64_at(interp.wrapping_add(l.interp_threads_head))?;
            for _ in 0..MAX_THREADS {
                if t == 0 {
                    break;
                }
                if is_tid(t) {
                    self.tstates.insert(tid, t);
                    return Some(t);
                }
                t = mem.u64_at(t.wrapping_add(l.tstate_next))?;
            }
            // PyInterpreterState.next is its first field.
            interp = mem.u64_at(interp)?;
        }
        None
    }
}

/// What a reader that saw a code object elsewhere (ember's BPF program, at the sample) says
/// of it: its file name and qualified name (pointers) and first line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeenCode {
    pub filename: u64,
    pub qualname: u64,
    pub first_line: i32,
}

impl Codes {
    /// The id of the code object at `addr` (read now, when new), if it is still the object
    /// `seen` describes; `None` if it cannot be read or another object took its place.
    pub fn id_if_same(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        (addr, seen): (u64, SeenCode),
        new_code: &mut dyn FnMut(u32, CodeInfo),
        next_id: &mut u32,
    ) -> Option<u32> {
        let same = |sig: &Signature| {
            sig.filename == seen.filename
                && sig.qualname == seen.qualname
                && sig.first_line == seen.first_line
        };
        // Known, and seen as it was read: the same object (nothing to read, so its frames
        // are named after the process has ended too).
        if let Some((sig, id)) = self.by_address.get(&addr) {
            if same(sig) {
                return Some(*id);
            }
        }
        let id = self.id(mem, l, addr, new_code, next_id)?;
        let (sig, _) = self.by_address.get(&addr)?;
        same(sig).then_some(id)
    }

    /// The id of code object `addr` as `seen` at a sample, named by `info` (what was read of
    /// it then: the object may be gone since).
    pub fn id_of_named(
        &mut self,
        (addr, seen): (u64, SeenCode),
        info: CodeInfo,
        new_code: &mut dyn FnMut(u32, CodeInfo),
        next_id: &mut u32,
    ) -> u32 {
        let sig = Signature {
            filename: seen.filename,
            qualname: seen.qualname,
            linetable: 0,
            first_line: seen.first_line,
        };
        self.known_id(addr, sig)
            .unwrap_or_else(|| self.add(addr, sig, info, new_code, next_id))
    }

    /// The id of the object at `addr` if it is the one `sig` describes.
    fn known_id(&self, addr: u64, sig: Signature) -> Option<u32> {
        let &(known, id) = self.by_address.get(&addr)?;
        (known == sig).then_some(id)
    }

    /// A new id for the object at `addr` (`sig`), named by `info`.
    fn add(
        &mut self,
        addr: u64,
        sig: Signature,
        info: CodeInfo,
        new_code: &mut dyn FnMut(u32, CodeInfo),
        next_id: &mut u32,
    ) -> u32 {
        let id = *next_id;
        *next_id += 1;
        self.by_address.insert(addr, (sig, id));
        new_code(id, info);
        id
    }

    /// The id of the code object at `addr`, reading it when it is new (or another object
    /// took the address since).
    fn id(
        &mut self,
        mem: &dyn Memory,
        l: &Layout,
        addr: u64,
        new_code: &mut dyn FnMut(u32, CodeInfo),
        next_id: &mut u32,
    ) -> Option<u32> {
        let mut head = [0u8; 256];
        let len = (l.code_instructions as usize).min(head.len());
        if addr == 0 || !mem.read(addr, &mut head[..len]) {
            return None;
        }
        let word =
            |off: u64| u64::from_le_bytes(head[off as usize..off as usize + 8].try_into().unwrap());
        let first_line = i32::from_le_bytes(
            head[l.code_firstlineno as usize..l.code_firstlineno as usize + 4]
                .try_into()
                .unwrap(),
        );
        let sig = Signature {
            filename: word(l.code_filename),
            qualname: word(l.code_qualname),
            linetable: word(l.code_linetable),
            first_line,
        };
        if let Some(id) = self.known_id(addr, sig) {
            return Some(id);
        }
        let info = CodeInfo {
            qualname: read_str(mem, l, sig.qualname)
                .or_else(|| read_str(mem, l, word(l.code_name)))?,
            filename: read_str(mem, l, sig.filename)?,
            first_line,
            linetable: read_bytes(mem, sig.linetable)?,
        };
        Some(self.add(addr, sig, info, new_code, next_id))
    }
}

/// A `str` object's text (compact strings, as code objects' names and file names are).
fn read_str(mem: &dyn Memory, l: &Layout, addr: u64) -> Option<String> {
    if addr == 0 {
        return None;
    }
    let length = mem.u64_at(addr.wrapping_add(16))?;
    let mut state = [0u8; 4];
    if length > MAX_STRING || !mem.read(addr.wrapping_add(32), &mut state) {
        return None;
    }
    let state = u32::from_le_bytes(state);
    let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1);
    if compact == 0 {
        return None;
    }
    let (data, width) = if ascii == 1 {
        (addr.wrapping_add(l.unicode_ascii_data), 1)
    } else {
        (addr.wrapping_add(l.unicode_compact_data), kind as u64)
    };
    if !matches!(width, 1 | 2 | 4) {
        return None;
    }
    let mut bytes = vec![0u8; (length * width) as usize];
    if !mem.read(data, &mut bytes) {
        return None;
    }
    Some(match width {
        1 => bytes.iter().map(|&b| char::from(b)).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_le_bytes([c[0], c[1]]))).unwrap_or('?'))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_le_bytes(c.try_into().unwrap())).unwrap_or('?'))
            .collect(),
    })
}

/// A `bytes` object's contents.
fn read_bytes(mem: &dyn Memory, addr: u64) -> Option<Vec<u8>> {
    let size = mem.u64_at(addr.checked_add(16)?)?;
    if size > MAX_LINETABLE {
        return None;
    }
    let mut bytes = vec![0u8; size as usize];
    mem.read(addr.wrapping_add(32), &mut bytes).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::layout::layout;

    /// Memory made of a few regions: (address, bytes).
    #[derive(Default)]
    struct Fake(Vec<(u64, Vec<u8>)>);

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
            for (at, bytes) in &self.0 {
                if addr >= *at && addr + buf.len() as u64 <= at + bytes.len() as u64 {
                    let i = (addr - at) as usize;
                    buf.copy_from_slice(&bytes[i..i + buf.len()]);
                    return true;
                }
            }
            false
        }
    }

    impl Fake {
        fn put(&mut self, addr: u64, bytes: Vec<u8>) {
            self.0.push((addr, bytes));
        }

        fn word(&mut self, addr: u64, value: u64) {
            self.put(addr, value.to_le_bytes().to_vec());
        }

        /// A compact ASCII str object.
        fn str(&mut self, addr: u64, l: &Layout, text: &str) {
            let mut obj = vec![0u8; l.unicode_ascii_data as usize];
            obj[16..24].copy_from_slice(&(text.len() as u64).to_le_bytes());
            obj[32..36].copy_from_slice(&((1u32 << 5) | (1 << 6) | (1 << 2)).to_le_bytes());
            obj.extend_from_slice(text.as_bytes());
            self.put(addr, obj);
        }

        /// A code object named `name` with an empty line table.
        fn code(&mut self, addr: u64, l: &Layout, name: &str) {
            let mut obj = vec![0u8; l.code_instructions as usize];
            for (off, value) in [
                (l.code_filename, addr + 0x1000),
                (l.code_name, addr + 0x2000),
                (l.code_qualname, addr + 0x2000),
                (l.code_linetable, addr + 0x3000),
            ] {
                obj[off as usize..off as usize + 8].copy_from_slice(&value.to_le_bytes());
            }
            self.put(addr, obj);
            self.str(addr + 0x1000, l, "app.py");
            self.str(addr + 0x2000, l, name);
            self.put(addr + 0x3000, vec![0u8; 32]);
        }

        /// A 3.11 frame running `code`, called from `previous`.
        fn frame(&mut self, addr: u64, l: &Layout, code: u64, previous: u64) {
            let mut f = vec![0u8; l.frame_size];
            f[l.frame_code as usize..][..8].copy_from_slice(&code.to_le_bytes());
            f[l.frame_previous as usize..][..8].copy_from_slice(&previous.to_le_bytes());
            self.put(addr, f);
        }
    }

    /// A 3.11 process whose thread 42 runs frames at `first` (runtime at 0x100000).
    fn process(first: u64) -> (Fake, &'static Layout) {
        let l = layout(3, 11).unwrap();
        let mut m = Fake::default();
        let (runtime, interp, tstate, cframe) = (0x100000, 0x200000, 0x300000, 0x400000);
        m.word(runtime + l.runtime_interpreters_head, interp);
        m.word(interp, 0);
        m.word(interp + l.interp_threads_head, tstate);
        m.word(tstate + l.tstate_next, 0);
        m.word(tstate + l.tstate_native_thread_id, 42);
        let CurrentFrame::ThroughCFrame {
            cframe: at,
            current_frame,
        } = l.current_frame
        else {
            unreachable!("3.11 finds its frame through cframe")
        };
        m.word(tstate + at, cframe);
        m.word(cframe + current_frame, first);
        (m, l)
    }

    fn walk(m: &Fake, l: &'static Layout) -> (Walk, Vec<String>) {
        let mut interp = Interpreter::new(*l, 0x100000);
        let mut walk = Walk::default();
        let mut names = Vec::new();
        let mut next = 0;
        interp.walk(
            m,
            42,
            &mut walk,
            &mut |_, c| names.push(c.qualname),
            &mut next,
        );
        (walk, names)
    }

    #[test]
    fn a_code_object_named_at_a_sample_keeps_its_id_while_it_is_the_same() {
        let (m, l) = process(0x10000);
        let mut codes = Codes::default();
        let (mut names, mut next) = (Vec::new(), 0);
        let mut add = |_, c: CodeInfo| names.push(c.qualname);
        let info = |qualname: &str| CodeInfo {
            qualname: qualname.into(),
            filename: "app.py".into(),
            first_line: 1,
            linetable: Vec::new(),
        };
        // Gone from the process (nothing at 0x700000): named as it was seen, once.
        let seen = SeenCode {
            filename: 0x5000,
            qualname: 0x6000,
            first_line: 1,
        };
        let a = codes.id_of_named((0x700000, seen), info("<module>"), &mut add, &mut next);
        let b = codes.id_of_named((0x700000, seen), info("<module>"), &mut add, &mut next);
        assert_eq!(a, b);
        // Later frames of it are named without reading the process.
        let again = codes.id_if_same(&m, l, (0x700000, seen), &mut add, &mut next);
        assert_eq!(again, Some(a));
        // Another object at the address: a new id; and nothing where none was named.
        let other = SeenCode {
            qualname: 0x7000,
            ..seen
        };
        let c = codes.id_of_named((0x700000, other), info("Spin"), &mut add, &mut next);
        assert_ne!(a, c);
        let third = SeenCode {
            qualname: 0x8000,
            ..seen
        };
        assert_eq!(
            codes.id_if_same(&m, l, (0x700000, third), &mut add, &mut next),
            None
        );
        assert_eq!(names, ["<module>", "Spin"]);
    }

    #[test]
    fn reads_a_chain_of_frames_and_names_each_code_once() {
        let (mut m, l) = process(0x10000);
        m.code(0x800000, l, "handler");
        m.code(0x900000, l, "main");
        m.frame(0x10000, l, 0x800000, 0x20000);
        m.frame(0x20000, l, 0x800000, 0x30000);
        m.frame(0x30000, l, 0x900000, 0);
        let (w, names) = walk(&m, l);
        assert!(!w.cut);
        let codes: Vec<u32> = w.frames.iter().map(|f| f.code).collect();
        assert_eq!(codes, vec![0, 0, 1]);
        assert_eq!(names, vec!["handler", "main"]);
    }

    #[test]
    fn a_looping_or_unreadable_chain_is_cut_not_followed() {
        let (mut m, l) = process(0x10000);
        m.code(0x800000, l, "spin");
        // previous points back at the frame itself.
        m.frame(0x10000, l, 0x800000, 0x10000);
        let (w, _) = walk(&m, l);
        assert!(w.cut);
        assert_eq!(w.frames.len(), 1);
        // previous points at nothing mapped.
        let (mut m, l) = process(0x10000);
        m.code(0x800000, l, "spin");
        m.frame(0x10000, l, 0x800000, 0x10);
        let (w, _) = walk(&m, l);
        assert!(w.cut);
        assert_eq!(w.frames.len(), 1);
        // A code object that cannot be read ends the stack there.
        let (mut m, l) = process(0x10000);
        m.frame(0x10000, l, 0xdead0000, 0);
        let (w, names) = walk(&m, l);
        assert!(w.cut && w.frames.is_empty() && names.is_empty());
    }

    #[test]
    fn a_thread_without_python_has_an_empty_stack() {
        let (m, l) = process(0x10000);
        let mut interp = Interpreter::new(*l, 0x100000);
        let mut w = Walk::default();
        interp.walk(&m, 7, &mut w, &mut |_, _| {}, &mut 0);
        assert!(w.frames.is_empty() && !w.cut);
    }
}
