//! Python stacks read at each stop of a thread of a CPython process: the interpreter is found
//! among the process's mappings ([`crate::python::find`]), and each stop of one of its threads
//! reads the thread's Python frames while it is stopped, so they are exactly the frames of the
//! sample. Code objects seen for the first time are written once
//! (`EMBER_RECORD_PYTHON_CODE`); each sample's frames go just before it
//! (`EMBER_RECORD_PYTHON_STACK`).

use super::*;
use crate::python::{self, layout, Interpreter, Memory, Walk};

/// The memory of a stopped thread's process.
struct Stopped(u32);

impl Memory for Stopped {
    fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        crate::linux::memory::read_process(self.0, addr, buf)
    }
}

impl PtraceSampler {
    /// Whether the executable mapping `m` of process `pid` (a file that may be an interpreter)
    /// is a CPython interpreter ember can read; if so, the process's frames are read from now
    /// on and the collector is told where its evaluation loop is.
    pub(super) fn look_for_python(&mut self, pid: u32, m: &linux::MapsLine, time: u64) {
        if self.procs.get(&pid).is_some_and(|p| p.python.is_some()) {
            return;
        }
        let key = (m.path.to_string(), m.dev_ino.map_or(0, |d| d.2));
        let found = self
            .python_files
            .entry(key)
            .or_insert_with(|| python::interpreter_file(m.path));
        let Some(found) = found.clone() else {
            return;
        };
        let Some(bias) = found.bias(m.start, m.offset) else {
            return;
        };
        let (major, minor) = layout::version_of(found.version);
        let runtime = found.runtime.wrapping_add(bias);
        let Some(layout) = python::layout_of(&Stopped(pid), found.version, runtime) else {
            let note = format!(
                "Python {major}.{minor} (pid {pid}): ember does not know where this version keeps \
                 its frames, so its stacks show the interpreter's native frames"
            );
            if !self.notes.contains(&note) {
                self.notes.push(note);
            }
            return;
        };
        let interp = Interpreter::new(layout, runtime);
        if let Some(p) = self.procs.get_mut(&pid) {
            p.python = Some(interp);
        }
        let eval = (
            found.eval.0.wrapping_add(bias),
            found.eval.1.wrapping_add(bias),
        );
        self.push_with(time, |o| encode::python_process(o, pid, eval, time));
    }

    /// Read the Python stack of stopped thread `tid` into `self.python` (empty where its
    /// process runs no Python ember can read), writing the code objects not seen before.
    pub(super) fn read_python(&mut self, tid: u32, time: u64) {
        let mut walk = std::mem::take(&mut self.python);
        walk.frames.clear();
        walk.cut = false;
        let pid = self.tracees.get(&tid).map(|t| t.pid);
        let mut next_id = self.python_ids;
        let mut new_codes = Vec::new();
        if let Some(interp) = pid.and_then(|pid| self.procs.get_mut(&pid)?.python.as_mut()) {
            let mut new_code = |id, code| new_codes.push((id, code));
            interp.walk(&Stopped(tid), tid, &mut walk, &mut new_code, &mut next_id);
        }
        self.python_ids = next_id;
        if let Some(pid) = pid {
            for (id, code) in &new_codes {
                self.push_with(time, |o| encode::python_code(o, pid, *id, code, time));
            }
        }
        self.python = walk;
    }
}

/// What a sample of a Python thread carries besides its stack: its Python frames.
pub(super) fn has_frames(walk: &Walk) -> bool {
    !walk.frames.is_empty() || walk.cut
}
