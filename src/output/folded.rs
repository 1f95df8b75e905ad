//! Folded (collapsed) stacks: `root;caller;callee COUNT`, one line per unique stack — written
//! from a profile, and read back (ours, or any tool's: inferno, stackcollapse, py-spy).

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::model::FrameKind;
use crate::stacks::StackProfile;
use crate::symbolize::sanitize;

/// Folded stacks: stack text → sample count, sorted.
pub type Folded = BTreeMap<String, u64>;

/// How stacks are rooted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Grouping {
    /// One root per process name (`comm`).
    #[default]
    ByName,
    /// `comm-PID`.
    PerProcess,
    /// `comm-PID/TID`, with the thread's own name.
    PerThread,
    /// The thread's name alone, so threads of the same name share a tower (Rust's test
    /// harness names each test's thread after the test).
    ThreadName,
    /// The Python test the sample is in (pytest, unittest), from its Python frames: the stack
    /// from the test function on, rooted at it; samples outside any test keep their process.
    PerTest,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldOptions {
    pub grouping: Grouping,
    /// Add `(file:line)` to each frame.
    pub lines: bool,
}

/// The label a frame gets in folded stacks (and so in SVGs): the name, the source line when
/// asked for, and inferno's annotation for kernel, inlined and JIT frames.
pub fn frame_label(
    name: &str,
    kind: FrameKind,
    file: Option<&str>,
    line: Option<u32>,
    lines: bool,
    out: &mut String,
) {
    out.push_str(name);
    let base = file.map(|f| f.rsplit('/').next().unwrap_or(f));
    match (lines, base, line) {
        (true, Some(base), Some(line)) => out.push_str(&format!(" ({base}:{line})")),
        // A Python function is known by its file too, as Python users read it.
        (_, Some(base), _) if kind == FrameKind::Python => out.push_str(&format!(" ({base})")),
        _ => {}
    }
    match kind {
        FrameKind::Native | FrameKind::Marker | FrameKind::Python => {}
        FrameKind::Inlined => out.push_str("_[i]"),
        FrameKind::Kernel => out.push_str("_[k]"),
        FrameKind::Jit => out.push_str("_[j]"),
    }
}

/// The kind of line `index` of a location of `kind`: after the first (outermost) line, a user
/// location's lines are functions inlined into it.
pub fn line_kind(kind: FrameKind, index: usize) -> FrameKind {
    match (index, kind) {
        (0, k) => k,
        (_, FrameKind::Native) | (_, FrameKind::Inlined) => FrameKind::Inlined,
        (_, k) => k,
    }
}

/// The root label of a sample's stack.
pub fn root_label(p: &StackProfile, pid: u32, tid: u32, grouping: Grouping) -> String {
    let pname = p
        .meta
        .processes
        .get(&pid)
        .cloned()
        .unwrap_or_else(|| format!("pid-{pid}"));
    let root = match grouping {
        Grouping::ByName => pname,
        Grouping::PerProcess => format!("{pname}-{pid}"),
        Grouping::PerThread => {
            let tname = p
                .meta
                .threads
                .get(&tid)
                .map(|(_, n)| n.clone())
                .unwrap_or(pname);
            format!("{tname}-{pid}/{tid}")
        }
        Grouping::ThreadName => p
            .meta
            .threads
            .get(&tid)
            .map(|(_, n)| n.clone())
            .unwrap_or(pname),
        Grouping::PerTest => pname,
    };
    sanitize(&root)
}

/// The functions that call a test: pytest's call of a test function, unittest's of a test
/// method (function name, the end of its file's path).
const TEST_CALLERS: [(&str, &str); 2] = [
    ("pytest_pyfunc_call", "_pytest/python.py"),
    ("TestCase._callTestMethod", "unittest/case.py"),
];

/// Where the test of a sample's stack (locations root first) begins: the index of the first
/// Python location that a test caller called.
fn test_start(p: &StackProfile, locations: &[usize]) -> Option<usize> {
    let is_caller = |l: usize| {
        let loc = &p.locations[l];
        loc.kind == FrameKind::Python
            && loc.lines.iter().any(|ln| {
                let f = &p.functions[ln.function];
                TEST_CALLERS.iter().any(|(name, file)| {
                    f.name == *name && f.file.as_deref().is_some_and(|p| p.ends_with(file))
                })
            })
    };
    let caller = locations.iter().rposition(|&l| is_caller(l))?;
    let called = caller
        + 1
        + locations[caller + 1..]
            .iter()
            .position(|&l| p.locations[l].kind == FrameKind::Python)?;
    Some(called)
}

/// The profile as folded stacks, merged and sorted.
pub fn fold(p: &StackProfile, opts: FoldOptions) -> Folded {
    let mut out = Folded::new();
    let mut line = String::new();
    for s in &p.samples {
        line.clear();
        let test = match opts.grouping {
            Grouping::PerTest => test_start(p, &s.locations),
            _ => None,
        };
        // A test's tower starts at the test function itself.
        let locations = match test {
            Some(start) => &s.locations[start..],
            None => {
                line.push_str(&root_label(p, s.pid, s.tid, opts.grouping));
                &s.locations[..]
            }
        };
        for (n, &l) in locations.iter().enumerate() {
            let loc = &p.locations[l];
            for (i, ln) in loc.lines.iter().enumerate() {
                let f = &p.functions[ln.function];
                let kind = line_kind(loc.kind, i);
                if n > 0 || i > 0 || test.is_none() {
                    line.push(';');
                }
                frame_label(
                    &f.name,
                    kind,
                    f.file.as_deref(),
                    ln.line,
                    opts.lines,
                    &mut line,
                );
            }
        }
        *out.entry(line.clone()).or_insert(0) += s.count;
    }
    out
}

pub fn write(folded: &Folded, mut w: impl Write) -> io::Result<()> {
    for (stack, count) in folded {
        writeln!(w, "{stack} {count}")?;
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {reason} (folded lines look like `main;foo;bar 42`)")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Read folded stacks. Lines with the same stack are added up; blank lines are skipped.
///
/// ```
/// let f = ember::output::folded::parse("prog;main;hot 3\nprog;main;hot 2\nprog;main 1\n").unwrap();
/// assert_eq!(f["prog;main;hot"], 5);
/// assert_eq!(f.len(), 2);
/// ```
pub fn parse(text: &str) -> Result<Folded, ParseError> {
    let mut out = Folded::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: i + 1,
            reason: reason.to_string(),
        };
        let (stack, count) = l.rsplit_once(' ').ok_or_else(|| err("no sample count"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| err("the sample count is not a whole number"))?;
        let stack = stack.trim_end();
        if stack.is_empty() {
            return Err(err("empty stack"));
        }
        *out.entry(stack.to_string()).or_insert(0) += count;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_adds_up_and_rejects_garbage() {
        let f = parse("a;b 2\n\na;b 3\r\nx y;z 1\n").unwrap();
        assert_eq!(f.get("a;b"), Some(&5));
        assert_eq!(f.get("x y;z"), Some(&1));
        assert_eq!(parse("a;b\n").unwrap_err().line, 1);
        assert!(parse("a;b x\n").is_err());
        assert!(parse(" 5\n").is_err());
        let mut out = Vec::new();
        write(&f, &mut out).unwrap();
        assert_eq!(parse(std::str::from_utf8(&out).unwrap()).unwrap(), f);
    }

    #[test]
    fn labels() {
        let mut s = String::new();
        frame_label("f", FrameKind::Kernel, None, None, true, &mut s);
        assert_eq!(s, "f_[k]");
        s.clear();
        frame_label(
            "g",
            FrameKind::Inlined,
            Some("/src/a.c"),
            Some(3),
            true,
            &mut s,
        );
        assert_eq!(s, "g (a.c:3)_[i]");
    }
}
