//! Folded (collapsed) stacks: `root;caller;callee COUNT`, one line per unique stack.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::profile::Profile;
use crate::symbolize::{FrameKind, Symbols};

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
}

fn annotated(name: &str, kind: FrameKind, out: &mut String) {
    out.push_str(name);
    match kind {
        FrameKind::User => {}
        FrameKind::Inlined => out.push_str("_[i]"),
        FrameKind::Kernel => out.push_str("_[k]"),
        FrameKind::Jit => out.push_str("_[j]"),
    }
}

/// The profile as folded stacks (stack text → count), merged and sorted.
pub fn fold(profile: &Profile, symbols: &Symbols, grouping: Grouping) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let mut line = String::new();
    for (pid, tid, frames, count) in profile.stacks() {
        line.clear();
        let pname = profile
            .meta
            .processes
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| format!("pid-{pid}"));
        let root = match grouping {
            Grouping::ByName => pname,
            Grouping::PerProcess => format!("{pname}-{pid}"),
            Grouping::PerThread => {
                let tname = profile
                    .meta
                    .threads
                    .get(&tid)
                    .map(|(_, n)| n.clone())
                    .unwrap_or(pname);
                format!("{tname}-{pid}/{tid}")
            }
        };
        line.push_str(&crate::symbolize::sanitize(&root));
        for f in frames {
            for sf in &symbols.frames[f as usize] {
                line.push(';');
                annotated(&sf.name, sf.kind, &mut line);
            }
        }
        *out.entry(line.clone()).or_insert(0) += count;
    }
    out
}

pub fn write(folded: &BTreeMap<String, u64>, mut w: impl Write) -> io::Result<()> {
    for (stack, count) in folded {
        writeln!(w, "{stack} {count}")?;
    }
    Ok(())
}
