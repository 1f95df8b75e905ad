//! The collector's part in Python frames: what the sampler told of each Python process (where
//! its evaluation loop is) and of each code object, and each sample's Python stack put in
//! place of the native frames of the evaluation loop that ran it.

use std::collections::HashMap;

use crate::model::{ModuleId, PythonCode, RawFrame, PYTHON_CUT, PYTHON_ENTRY};
use crate::python::{lines, CodeInfo, InterpreterFile};

/// Python processes and code objects seen so far.
#[derive(Default)]
pub struct PythonFrames {
    /// Process → the addresses of `_PyEval_EvalFrameDefault` in it.
    eval: HashMap<u32, (u64, u64)>,
    /// Code object id → what names it.
    pub codes: HashMap<u32, CodeInfo>,
    /// (code id, instruction offset) → its line, once looked up.
    lines: HashMap<(u32, u32), u32>,
    /// Samples whose Python stack could not be read to its end.
    pub cut: u64,
    /// Samples given Python frames.
    pub samples: u64,
    /// Modules looked at: whether each is an interpreter.
    interpreters: HashMap<ModuleId, Option<InterpreterFile>>,
    /// Processes that mapped an interpreter (or were forked from one that did).
    pids: std::collections::HashSet<u32>,
}

/// One frame of a sample's Python stack as recorded: (code id, offset, entry).
pub(super) type Recorded = (u32, u32, bool);

impl PythonFrames {
    pub fn process(&mut self, pid: u32, eval: (u64, u64)) {
        self.eval.insert(pid, eval);
    }

    pub fn code(&mut self, c: &PythonCode) {
        self.add_code(
            c.id,
            CodeInfo {
                qualname: String::from_utf8_lossy(c.qualname).into_owned(),
                filename: String::from_utf8_lossy(c.filename).into_owned(),
                first_line: c.first_line,
                linetable: c.linetable.to_vec(),
            },
        );
    }

    /// Code object `id` is `info`.
    pub fn add_code(&mut self, id: u32, info: CodeInfo) {
        self.codes.insert(id, info);
    }

    /// Whether module `module` (its file's contents `data`) is a CPython interpreter, looked
    /// at once per module.
    pub fn interpreter(&mut self, module: ModuleId, data: &[u8]) -> Option<&InterpreterFile> {
        self.interpreters
            .entry(module)
            .or_insert_with(|| crate::python::find(data))
            .as_ref()
    }

    /// Process `pid` runs an interpreter (it mapped one, or its parent had).
    pub fn runs_python(&mut self, pid: u32) {
        self.pids.insert(pid);
    }

    /// Whether process `pid` runs an interpreter, as far as seen.
    pub fn is_python(&self, pid: u32) -> bool {
        self.pids.contains(&pid) || self.eval.contains_key(&pid)
    }

    /// Process `pid` ended: its id may be used again.
    pub fn ended(&mut self, pid: u32) {
        self.pids.remove(&pid);
        self.eval.remove(&pid);
    }

    /// Put the Python frames of `stack` (as recorded, innermost first) in place of the native
    /// frames of the evaluation loop in `raw` (leaf first): each such frame ran one C-level
    /// call's frames, the innermost call the innermost frame. Native frames of the loop left
    /// without Python frames (a stack that could not be read to its end) stay as they are.
    pub fn splice(&mut self, pid: u32, stack: &[u8], raw: &mut Vec<RawFrame>) {
        if let Some((frames, cut)) = parse(stack) {
            self.splice_frames(pid, &frames, cut, raw);
        }
    }

    /// [`PythonFrames::splice`] of frames already read (`cut`: the stack went on).
    pub(super) fn splice_frames(
        &mut self,
        pid: u32,
        frames: &[Recorded],
        cut: bool,
        raw: &mut Vec<RawFrame>,
    ) {
        let Some(&(start, end)) = self.eval.get(&pid) else {
            return;
        };
        self.samples += 1;
        self.cut += u64::from(cut);
        let mut calls = frames.split_inclusive(|&(_, _, entry)| entry).peekable();
        let mut out = Vec::with_capacity(raw.len() + frames.len() + 1);
        let mut marked = !cut;
        for &r in raw.iter() {
            let in_eval = matches!(r, RawFrame::User(a) if a >= start && a < end);
            match if in_eval { calls.next() } else { None } {
                Some(call) => {
                    for &(code, offset, _) in call {
                        out.push(RawFrame::Python {
                            code,
                            line: self.line(code, offset),
                        });
                    }
                    // Where the frames read end, the rest of the Python stack was unreadable.
                    if calls.peek().is_none() && !marked {
                        out.push(RawFrame::PythonCut);
                        marked = true;
                    }
                }
                None if in_eval && !marked => {
                    out.push(RawFrame::PythonCut);
                    marked = true;
                }
                None => out.push(r),
            }
        }
        *raw = out;
    }

    /// The line of instruction `offset` of code `code` (0 where unknown).
    fn line(&mut self, code: u32, offset: u32) -> u32 {
        let codes = &self.codes;
        *self.lines.entry((code, offset)).or_insert_with(|| {
            codes
                .get(&code)
                .and_then(|c| lines::line_at(&c.linetable, c.first_line, offset))
                .unwrap_or(0)
        })
    }
}

/// A recorded Python stack: its frames and whether it was cut.
fn parse(stack: &[u8]) -> Option<(Vec<Recorded>, bool)> {
    let word = |i: usize| Some(u32::from_le_bytes(stack.get(i..i + 4)?.try_into().ok()?));
    let (count, flags) = (word(0)? as usize, word(4)?);
    let frames = (0..count)
        .map(|i| {
            let (code, offset) = (word(8 + 8 * i)?, word(12 + 8 * i)?);
            Some((code, offset & !PYTHON_ENTRY, offset & PYTHON_ENTRY != 0))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((frames, flags & PYTHON_CUT != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(frames: &[(u32, u32, bool)], cut: bool) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend((frames.len() as u32).to_le_bytes());
        v.extend(u32::from(cut).to_le_bytes());
        for &(code, offset, entry) in frames {
            v.extend(code.to_le_bytes());
            v.extend((offset | if entry { PYTHON_ENTRY } else { 0 }).to_le_bytes());
        }
        v
    }

    #[test]
    fn each_evaluation_loop_frame_gets_the_python_frames_of_its_call() {
        let mut p = PythonFrames::default();
        p.process(7, (0x1000, 0x2000));
        // Leaf first: a C function called from Python (f, g), which called back into Python
        // (h); the outer loop runs g and its caller f.
        let mut raw = vec![
            RawFrame::User(0x9000), // the C extension's leaf
            RawFrame::User(0x1100), // loop: runs h
            RawFrame::User(0x9100), // the C extension calling back
            RawFrame::User(0x1200), // loop: runs g, f
            RawFrame::User(0x5000), // main
        ];
        let stack = recorded(&[(3, 0, true), (2, 0, false), (1, 0, true)], false);
        p.splice(7, &stack, &mut raw);
        let py = |code| RawFrame::Python { code, line: 0 };
        assert_eq!(
            raw,
            vec![
                RawFrame::User(0x9000),
                py(3),
                RawFrame::User(0x9100),
                py(2),
                py(1),
                RawFrame::User(0x5000)
            ]
        );
        // Another process, or a broken record: nothing changes.
        let before = raw.clone();
        p.splice(8, &stack, &mut raw);
        p.splice(7, &stack[..6], &mut raw);
        assert_eq!(raw, before);
    }

    #[test]
    fn loop_frames_without_python_frames_stay_native() {
        let mut p = PythonFrames::default();
        p.process(7, (0x1000, 0x2000));
        let mut raw = vec![RawFrame::User(0x1100), RawFrame::User(0x1200)];
        p.splice(7, &recorded(&[(5, 0, true)], true), &mut raw);
        assert_eq!(
            raw,
            vec![
                RawFrame::Python { code: 5, line: 0 },
                RawFrame::PythonCut,
                RawFrame::User(0x1200)
            ]
        );
        assert_eq!(p.cut, 1);
    }
}
