//! Python frames: CPython's own stack of each thread, read where the thread is stopped and
//! put in place of the evaluation loop's native frames.
//!
//! [`find`] tells whether a mapped file is a CPython interpreter (the executable, or a shared
//! `libpython`) and where its runtime state and evaluation loop are; [`layout`] has where each
//! version keeps what ember reads; [`walk`] reads a thread's frames and their code objects out
//! of the process's memory; [`lines`] turns an instruction into its source line. A leaf: it
//! uses nothing else of ember.

pub mod layout;
pub mod lines;
pub mod walk;

use object::{Object, ObjectSegment, ObjectSymbol};

pub use walk::{
    CodeInfo, Codes, Interpreter, Memory, PyFrame, SeenCode, Walk, MAX_FRAMES, MAX_STRING,
};

/// What a CPython interpreter's file says about it, in its own addresses (SVMAs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterpreterFile {
    /// `_PyRuntime`, the runtime state.
    pub runtime: u64,
    /// `Py_Version` (`PY_VERSION_HEX`), as the file holds it.
    pub version: u32,
    /// `_PyEval_EvalFrameDefault`: each native frame in it runs Python frames.
    pub eval: (u64, u64),
    /// The file offset and SVMA of the loadable segments, to place the file where it is
    /// mapped: (file offset, vaddr, file size).
    segments: Vec<(u64, u64, u64)>,
}

/// Whether a mapped file may be an interpreter, by its name: `python3.11`, `libpython3.12.so`
/// (ember opens only these, not every library of every process).
pub fn may_be_interpreter(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with("python") || name.starts_with("libpython"))
}

/// The interpreter in ELF file `data`, if it is one.
pub fn find(data: &[u8]) -> Option<InterpreterFile> {
    let file = object::File::parse(data).ok()?;
    let mut runtime = None;
    let mut version_at = None;
    let mut eval = None;
    // They are exported (extension modules link against them): the dynamic symbols, a
    // tenth of the symbol table, hold them unless the file was built otherwise.
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        match sym.name() {
            Ok("_PyRuntime") => runtime = Some(sym.address()),
            Ok("Py_Version") => version_at = Some(sym.address()),
            Ok("_PyEval_EvalFrameDefault") if sym.size() > 0 => {
                eval = Some((sym.address(), sym.address() + sym.size()))
            }
            _ => {}
        }
        if runtime.is_some() && version_at.is_some() && eval.is_some() {
            break;
        }
    }
    let segments = file
        .segments()
        .map(|seg| {
            let (offset, size) = seg.file_range();
            (offset, seg.address(), size)
        })
        .collect();
    let version_at = version_at?;
    let bytes = file.segments().find_map(|seg| {
        let data = seg.data_range(version_at, 4).ok()??;
        Some(u32::from_le_bytes(data.try_into().ok()?))
    })?;
    Some(InterpreterFile {
        runtime: runtime?,
        version: bytes,
        eval: eval?,
        segments,
    })
}

/// What the file at `path` says of the interpreter in it, if it is one.
pub fn interpreter_file(path: &str) -> Option<InterpreterFile> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: mapped read-only and only parsed; a file changed meanwhile gives wrong symbols,
    // which the walk's checks then refuse.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    find(&data)
}

/// The layout of the interpreter whose runtime state is at `runtime` in `mem`: ember's own
/// entry for its version (`version`, as `Py_Version` holds it), else the one it publishes
/// (`_Py_DebugOffsets`, 3.13).
pub fn layout_of(mem: &dyn Memory, version: u32, runtime: u64) -> Option<layout::Layout> {
    let (major, minor) = layout::version_of(version);
    if let Some(l) = layout::layout(major, minor) {
        return Some(*l);
    }
    let mut bytes = vec![0u8; layout::DEBUG_OFFSETS_WORDS * 8];
    if !mem.read(runtime, &mut bytes) {
        return None;
    }
    let words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    layout::from_debug_offsets(&words)
}

impl InterpreterFile {
    /// What to add to the file's addresses where it is mapped at `start` from file offset
    /// `offset`.
    pub fn bias(&self, start: u64, offset: u64) -> Option<u64> {
        let &(seg_offset, vaddr, _) = self
            .segments
            .iter()
            .find(|&&(o, _, size)| size > 0 && offset >= o && offset < o + size)?;
        Some(start.wrapping_sub(vaddr + (offset - seg_offset)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_may_be_interpreters() {
        assert!(may_be_interpreter("/usr/bin/python3.11"));
        assert!(may_be_interpreter("/opt/lib/libpython3.12.so.1.0"));
        assert!(!may_be_interpreter("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(!may_be_interpreter("/home/me/python/app"));
    }

    #[test]
    fn a_file_that_is_no_interpreter_is_not_taken_for_one() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(find(&me), None);
        assert_eq!(find(b"not an ELF file"), None);
    }
}
