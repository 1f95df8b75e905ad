//! speedscope's file format (https://www.speedscope.app/file-format-schema.json): one
//! "sampled" profile per thread over a shared frame table.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use crate::output::folded::{frame_label, line_kind, root_label, Grouping};
use crate::stacks::StackProfile;

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

/// Each thread's stacks, by (pid, tid).
type ThreadStacks = BTreeMap<(u32, u32), Vec<WeightedStack>>;

/// A frame of speedscope's shared table: label, file, line.
type FrameKey = (String, Option<String>, Option<u32>);

/// Write `p` as a speedscope file named `title`: the frames first, then one sampled profile
/// per thread. Written as it goes (a large profile has hundreds of thousands of stacks).
pub fn write(p: &StackProfile, title: &str, mut w: impl Write) -> io::Result<()> {
    let (frames, threads) = frames_and_threads(p);
    write!(
        w,
        "{{\"$schema\":\"https://www.speedscope.app/file-format-schema.json\",\
         \"exporter\":{},\"name\":{},\"activeProfileIndex\":0,\"shared\":{{\"frames\":[",
        json_str(&format!("ember {}", env!("CARGO_PKG_VERSION"))),
        json_str(&profile_name(title, p.meta.lost))
    )?;
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write_frame(&mut w, frame)?;
    }
    w.write_all(b"]},\"profiles\":[")?;
    for (i, ((pid, tid), stacks)) in threads.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        let name = root_label(p, *pid, *tid, Grouping::PerThread);
        write_thread(&mut w, &name, stacks)?;
    }
    w.write_all(b"]}\n")?;
    Ok(())
}

/// The shared frame table (one entry per distinct label, file and line) and each thread's
/// stacks as frame ids, root first.
fn frames_and_threads(p: &StackProfile) -> (Vec<FrameKey>, ThreadStacks) {
    let mut frames: Vec<FrameKey> = Vec::new();
    let mut frame_ids: HashMap<FrameKey, usize> = HashMap::new();
    let mut stacks = Vec::with_capacity(p.samples.len());
    for s in &p.samples {
        let mut stack = Vec::new();
        for &l in &s.locations {
            let loc = &p.locations[l];
            for (i, ln) in loc.lines.iter().enumerate() {
                let f = &p.functions[ln.function];
                let kind = line_kind(loc.kind, i);
                let mut label = String::new();
                frame_label(&f.name, kind, None, None, false, &mut label);
                // One frame per function (speedscope's sandwich view lists frames as
                // functions): the line of each call site would split a function in many.
                let key = (label, f.file.clone(), None);
                let id = *frame_ids.entry(key.clone()).or_insert_with(|| {
                    frames.push(key);
                    frames.len() - 1
                });
                stack.push(id);
            }
        }
        stacks.push(stack);
    }
    let mut threads = ThreadStacks::new();
    if p.timeline.is_empty() {
        for (s, stack) in p.samples.iter().zip(stacks) {
            threads
                .entry((s.pid, s.tid))
                .or_default()
                .push((stack, s.count));
        }
    } else {
        // In the order taken: speedscope's "Time Order" view is then the program's timeline.
        for t in &p.timeline {
            let s = &p.samples[t.sample];
            let stack = stacks[t.sample].clone();
            threads
                .entry((s.pid, s.tid))
                .or_default()
                .push((stack, u64::from(t.count)));
        }
    }
    (frames, threads)
}

fn write_frame(w: &mut impl Write, (name, file, line): &FrameKey) -> io::Result<()> {
    write!(w, "{{\"name\":{}", json_str(name))?;
    if let Some(f) = file {
        write!(w, ",\"file\":{}", json_str(f))?;
    }
    if let Some(l) = line {
        write!(w, ",\"line\":{l}")?;
    }
    w.write_all(b"}")
}

/// One thread's "sampled" profile: its stacks and their weights.
fn write_thread(w: &mut impl Write, name: &str, stacks: &[WeightedStack]) -> io::Result<()> {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    write!(
        w,
        "{{\"type\":\"sampled\",\"name\":{},\"unit\":\"none\",\"startValue\":0,\
         \"endValue\":{total},\"samples\":[",
        json_str(name)
    )?;
    for (j, (stack, _)) in stacks.iter().enumerate() {
        if j > 0 {
            w.write_all(b",")?;
        }
        write_list(w, stack.iter())?;
    }
    w.write_all(b"],\"weights\":")?;
    write_list(w, stacks.iter().map(|(_, c)| c))?;
    w.write_all(b"}")
}

/// `[a,b,c]`.
fn write_list<T: std::fmt::Display>(
    w: &mut impl Write,
    items: impl Iterator<Item = T>,
) -> io::Result<()> {
    w.write_all(b"[")?;
    for (k, item) in items.enumerate() {
        if k > 0 {
            w.write_all(b",")?;
        }
        write!(w, "{item}")?;
    }
    w.write_all(b"]")
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
