//! speedscope's file format (https://www.speedscope.app/file-format-schema.json): one
//! "sampled" profile per thread over a shared frame table.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use crate::output::folded::{frame_label, root_label, Grouping};
use crate::stacks::StackProfile;
use crate::symbolize::FrameKind;

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("a str always serializes")
}

/// A stack of frame ids (root first) and its sample count.
type WeightedStack = (Vec<usize>, u64);

/// The profile's name: what was profiled, and how many samples were lost if any (speedscope's
/// format has no other place for it).
fn profile_name(title: &str, lost: u64) -> String {
    match lost {
        0 => title.to_string(),
        n => format!("{title} ({n} samples lost)"),
    }
}

pub fn write(p: &StackProfile, title: &str, mut w: impl Write) -> io::Result<()> {
    // Frames: one per distinct (label, file, line).
    let mut frames: Vec<(String, Option<String>, Option<u32>)> = Vec::new();
    let mut frame_ids: HashMap<(String, Option<String>, Option<u32>), usize> = HashMap::new();
    // Per thread: (stack of frame ids, count).
    let mut threads: BTreeMap<(u32, u32), Vec<WeightedStack>> = BTreeMap::new();
    for s in &p.samples {
        let mut stack = Vec::new();
        for &l in &s.locations {
            let loc = &p.locations[l];
            for (i, ln) in loc.lines.iter().enumerate() {
                let f = &p.functions[ln.function];
                let kind = if i > 0 && loc.kind == FrameKind::User {
                    FrameKind::Inlined
                } else {
                    loc.kind
                };
                let mut label = String::new();
                frame_label(&f.name, kind, None, None, false, &mut label);
                let key = (label, f.file.clone(), ln.line);
                let id = *frame_ids.entry(key.clone()).or_insert_with(|| {
                    frames.push(key);
                    frames.len() - 1
                });
                stack.push(id);
            }
        }
        threads
            .entry((s.pid, s.tid))
            .or_default()
            .push((stack, s.count));
    }
    write!(
        w,
        "{{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\
         \"exporter\":{},\"name\":{},\"activeProfileIndex\":0,\"shared\":{{\"frames\":[",
        json_str(&format!("ember {}", env!("CARGO_PKG_VERSION"))),
        json_str(&profile_name(title, p.meta.lost))
    )?;
    for (i, (name, file, line)) in frames.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(w, "{{\"name\":{}", json_str(name))?;
        if let Some(f) = file {
            write!(w, ",\"file\":{}", json_str(f))?;
        }
        if let Some(l) = line {
            write!(w, ",\"line\":{l}")?;
        }
        w.write_all(b"}")?;
    }
    w.write_all(b"]},\"profiles\":[")?;
    for (i, ((pid, tid), stacks)) in threads.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        let total: u64 = stacks.iter().map(|(_, c)| c).sum();
        let name = root_label(p, *pid, *tid, Grouping::PerThread);
        write!(
            w,
            "{{\"type\":\"sampled\",\"name\":{},\"unit\":\"none\",\"startValue\":0,\
             \"endValue\":{total},\"samples\":[",
            json_str(&name)
        )?;
        for (j, (stack, _)) in stacks.iter().enumerate() {
            if j > 0 {
                w.write_all(b",")?;
            }
            w.write_all(b"[")?;
            for (k, id) in stack.iter().enumerate() {
                if k > 0 {
                    w.write_all(b",")?;
                }
                write!(w, "{id}")?;
            }
            w.write_all(b"]")?;
        }
        w.write_all(b"],\"weights\":[")?;
        for (j, (_, c)) in stacks.iter().enumerate() {
            if j > 0 {
                w.write_all(b",")?;
            }
            write!(w, "{c}")?;
        }
        w.write_all(b"]}")?;
    }
    w.write_all(b"]}\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
