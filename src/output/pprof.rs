//! pprof: gzip'd `perftools.profiles.Profile`, what `go tool pprof`, Pyroscope and many
//! others read — and ember's own saved-profile format: it keeps functions, inlined lines,
//! mappings, processes and threads, so every view can be made again from it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::time::Duration;

use pprof::protos::{self, Message};

use crate::profile::Metadata;
use crate::stacks::{Function, Line, Location, Mapping, Sample, StackProfile};
use crate::symbolize::FrameKind;

const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
const JIT_MAPPING: &str = "[jit]";

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    ids: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut s = Strings::default();
        s.id("");
        s
    }

    fn id(&mut self, v: &str) -> i64 {
        if let Some(&i) = self.ids.get(v) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(v.to_string());
        self.ids.insert(v.to_string(), i);
        i
    }
}

/// Add a mapping for code without a file (kernel, JIT) and return its id.
fn pseudo_mapping(mappings: &mut Vec<protos::Mapping>, st: &mut Strings, name: &str) -> u64 {
    mappings.push(protos::Mapping {
        id: mappings.len() as u64 + 1,
        memory_limit: u64::MAX,
        filename: st.id(name),
        has_functions: true,
        ..Default::default()
    });
    mappings.len() as u64
}

/// Encode `p` as a (not yet gzip'd) pprof Profile.
pub fn to_proto(p: &StackProfile) -> protos::Profile {
    let mut st = Strings::new();
    let period = 1_000_000_000 / p.meta.frequency.max(1) as i64;
    let sample_type = vec![
        protos::ValueType {
            ty: st.id("samples"),
            unit: st.id("count"),
        },
        protos::ValueType {
            ty: st.id("cpu"),
            unit: st.id("nanoseconds"),
        },
    ];
    let mut mappings: Vec<protos::Mapping> = p
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| protos::Mapping {
            id: i as u64 + 1,
            memory_start: m.start,
            memory_limit: m.limit,
            file_offset: m.offset,
            filename: st.id(&m.file),
            build_id: st.id(m.build_id.as_deref().unwrap_or("")),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        })
        .collect();
    // JIT code has no file, kernel frames may come without one: give each a mapping of its
    // own so readers can tell them apart.
    let mut jit_mapping = None;
    let mut kernel_mapping = None;
    let functions: Vec<protos::Function> = p
        .functions
        .iter()
        .enumerate()
        .map(|(i, f)| protos::Function {
            id: i as u64 + 1,
            name: st.id(&f.name),
            system_name: st.id(&f.name),
            filename: st.id(f.file.as_deref().unwrap_or("")),
            start_line: 0,
        })
        .collect();
    let locations: Vec<protos::Location> = p
        .locations
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mapping_id = match (l.mapping, l.kind) {
                (Some(m), _) => m as u64 + 1,
                (None, FrameKind::Jit) => *jit_mapping
                    .get_or_insert_with(|| pseudo_mapping(&mut mappings, &mut st, JIT_MAPPING)),
                (None, FrameKind::Kernel) => *kernel_mapping
                    .get_or_insert_with(|| pseudo_mapping(&mut mappings, &mut st, KERNEL_MAPPING)),
                (None, _) => 0,
            };
            protos::Location {
                id: i as u64 + 1,
                mapping_id,
                address: l.address,
                // pprof lists the innermost (inlined) function first.
                line: l
                    .lines
                    .iter()
                    .rev()
                    .map(|ln| protos::Line {
                        function_id: ln.function as u64 + 1,
                        line: ln.line.map(i64::from).unwrap_or(0),
                    })
                    .collect(),
                is_folded: false,
            }
        })
        .collect();
    let samples: Vec<protos::Sample> = p
        .samples
        .iter()
        .map(|s| {
            let process = p.meta.processes.get(&s.pid).cloned().unwrap_or_default();
            let thread = p
                .meta
                .threads
                .get(&s.tid)
                .map(|(_, n)| n.clone())
                .unwrap_or_else(|| process.clone());
            let num = |st: &mut Strings, k: &str, v: u32| protos::Label {
                key: st.id(k),
                num: i64::from(v),
                ..Default::default()
            };
            let text = |st: &mut Strings, k: &str, v: &str| protos::Label {
                key: st.id(k),
                str: st.id(v),
                ..Default::default()
            };
            protos::Sample {
                // pprof lists the leaf first.
                location_id: s.locations.iter().rev().map(|&l| l as u64 + 1).collect(),
                value: vec![s.count as i64, s.count as i64 * period],
                label: vec![
                    num(&mut st, "pid", s.pid),
                    num(&mut st, "tid", s.tid),
                    text(&mut st, "process", &process),
                    text(&mut st, "thread", &thread),
                ],
            }
        })
        .collect();
    let mut comment = vec![st.id(&format!("ember record: {}", p.meta.command.join(" ")))];
    comment.push(st.id(&format!("event: {}", p.meta.event)));
    if p.meta.lost > 0 {
        comment.push(st.id(&format!("lost samples: {}", p.meta.lost)));
    }
    protos::Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        period_type: Some(protos::ValueType {
            ty: st.id("cpu"),
            unit: st.id("nanoseconds"),
        }),
        period,
        duration_nanos: p.meta.duration.as_nanos() as i64,
        comment,
        string_table: std::mem::take(&mut st.table),
        ..Default::default()
    }
}

/// Write `p` as a gzip'd pprof profile (fast compression: at the default level gzip took
/// three quarters of the time for a large profile, for files only slightly smaller).
pub fn write(p: &StackProfile, w: impl Write) -> io::Result<()> {
    let bytes = to_proto(p).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::fast());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    #[error("not a pprof profile: {0}")]
    Decode(String),
    #[error("corrupt pprof profile: {0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Read a pprof profile (gzip'd or not) written by ember or another tool.
pub fn read(bytes: &[u8]) -> Result<StackProfile, PprofError> {
    let raw;
    let data = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut d = Vec::new();
        // Bound what a hostile file can make us allocate.
        flate2::read::GzDecoder::new(bytes)
            .take(1 << 30)
            .read_to_end(&mut d)?;
        raw = d;
        &raw[..]
    } else {
        bytes
    };
    let prof = protos::Profile::decode(data).map_err(|e| PprofError::Decode(e.to_string()))?;
    from_proto(&prof)
}

fn from_proto(prof: &protos::Profile) -> Result<StackProfile, PprofError> {
    let s = |i: i64| -> Result<&str, PprofError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| prof.string_table.get(i))
            .map(String::as_str)
            .ok_or_else(|| PprofError::Invalid(format!("string index {i} out of range")))
    };
    let mut out = StackProfile::default();
    let mut mapping_index = HashMap::new();
    let mut mapping_kind = HashMap::new();
    for m in &prof.mapping {
        let file = s(m.filename)?.to_string();
        let kind = match file.as_str() {
            KERNEL_MAPPING => FrameKind::Kernel,
            JIT_MAPPING => FrameKind::Jit,
            _ => FrameKind::User,
        };
        mapping_kind.insert(m.id, kind);
        if kind == FrameKind::Jit {
            continue;
        }
        let build_id = s(m.build_id)?;
        mapping_index.insert(m.id, out.mappings.len());
        out.mappings.push(Mapping {
            file,
            build_id: (!build_id.is_empty()).then(|| build_id.to_string()),
            start: m.memory_start,
            limit: m.memory_limit,
            offset: m.file_offset,
        });
    }
    let mut function_index = HashMap::new();
    for f in &prof.function {
        let file = s(f.filename)?;
        function_index.insert(f.id, out.functions.len());
        out.functions.push(Function {
            name: crate::symbolize::sanitize(s(f.name)?),
            file: (!file.is_empty()).then(|| file.to_string()),
        });
    }
    let mut location_index = HashMap::new();
    for l in &prof.location {
        let mut lines = Vec::with_capacity(l.line.len());
        for ln in l.line.iter().rev() {
            let function = *function_index.get(&ln.function_id).ok_or_else(|| {
                PprofError::Invalid(format!("location {} names no function", l.id))
            })?;
            lines.push(Line {
                function,
                line: u32::try_from(ln.line).ok().filter(|&x| x > 0),
            });
        }
        if lines.is_empty() {
            // An address without symbols: name it by its address.
            out.functions.push(Function {
                name: format!("0x{:x}", l.address),
                file: None,
            });
            lines.push(Line {
                function: out.functions.len() - 1,
                line: None,
            });
        }
        location_index.insert(l.id, out.locations.len());
        out.locations.push(Location {
            mapping: mapping_index.get(&l.mapping_id).copied(),
            address: l.address,
            lines,
            kind: mapping_kind
                .get(&l.mapping_id)
                .copied()
                .unwrap_or(FrameKind::User),
        });
    }
    // Which value is the sample count: "samples" if present, else the first.
    let count_index = prof
        .sample_type
        .iter()
        .position(|t| s(t.ty).is_ok_and(|n| n == "samples"))
        .unwrap_or(0);
    let mut processes = BTreeMap::new();
    let mut threads = BTreeMap::new();
    for smp in &prof.sample {
        let (mut pid, mut tid) = (0u32, 0u32);
        let (mut process, mut thread) = (None, None);
        for lab in &smp.label {
            match s(lab.key)? {
                "pid" => pid = u32::try_from(lab.num).unwrap_or(0),
                "tid" => tid = u32::try_from(lab.num).unwrap_or(0),
                "process" => process = Some(s(lab.str)?.to_string()),
                "thread" => thread = Some(s(lab.str)?.to_string()),
                _ => {}
            }
        }
        if let Some(p) = process.filter(|p| !p.is_empty()) {
            processes.insert(pid, p);
        }
        if let Some(t) = thread.filter(|t| !t.is_empty()) {
            threads.insert(tid, (pid, t));
        }
        let mut locations = Vec::with_capacity(smp.location_id.len());
        for id in smp.location_id.iter().rev() {
            locations.push(*location_index.get(id).ok_or_else(|| {
                PprofError::Invalid(format!("sample refers to unknown location {id}"))
            })?);
        }
        let count = smp.value.get(count_index).copied().unwrap_or(0).max(0) as u64;
        out.samples.push(Sample {
            pid,
            tid,
            locations,
            count,
        });
    }
    let comments: Vec<&str> = prof.comment.iter().filter_map(|&c| s(c).ok()).collect();
    let command = comments
        .iter()
        .find_map(|c| c.strip_prefix("ember record: "))
        .map(|c| vec![c.to_string()])
        .unwrap_or_default();
    let event = comments
        .iter()
        .find_map(|c| c.strip_prefix("event: "))
        .unwrap_or("")
        .to_string();
    let lost = comments
        .iter()
        .find_map(|c| c.strip_prefix("lost samples: "))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    out.meta = Metadata {
        command,
        frequency: if prof.period > 0 {
            (1_000_000_000 / prof.period) as u64
        } else {
            0
        },
        event,
        duration: Duration::from_nanos(prof.duration_nanos.max(0) as u64),
        lost,
        processes,
        threads,
        ..Default::default()
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::folded::{fold, FoldOptions, Grouping};

    fn sample_profile() -> StackProfile {
        let mut p = StackProfile::default();
        p.meta.frequency = 999;
        p.meta.command = vec!["./prog".into()];
        p.meta.processes.insert(7, "prog".into());
        p.meta.threads.insert(8, (7, "worker".into()));
        p.mappings.push(Mapping {
            file: "/bin/prog".into(),
            build_id: Some("abcd".into()),
            start: 0,
            limit: u64::MAX,
            offset: 0,
        });
        for name in ["main", "hot", "inl", "sys_read"] {
            p.functions.push(Function {
                name: name.into(),
                file: Some("prog.c".into()),
            });
        }
        let line = |f: usize| Line {
            function: f,
            line: Some(10 + f as u32),
        };
        p.locations.push(Location {
            mapping: Some(0),
            address: 0x10,
            lines: vec![line(0)],
            kind: FrameKind::User,
        });
        p.locations.push(Location {
            mapping: Some(0),
            address: 0x20,
            lines: vec![line(1), line(2)],
            kind: FrameKind::User,
        });
        p.locations.push(Location {
            mapping: None,
            address: 0xffff,
            lines: vec![line(3)],
            kind: FrameKind::Kernel,
        });
        p.samples.push(Sample {
            pid: 7,
            tid: 8,
            locations: vec![0, 1, 2],
            count: 5,
        });
        p.samples.push(Sample {
            pid: 7,
            tid: 7,
            locations: vec![0],
            count: 2,
        });
        p
    }

    #[test]
    fn round_trip_keeps_every_view() {
        let p = sample_profile();
        let mut buf = Vec::new();
        write(&p, &mut buf).unwrap();
        let back = read(&buf).unwrap();
        for g in [Grouping::ByName, Grouping::PerProcess, Grouping::PerThread] {
            for lines in [false, true] {
                let o = FoldOptions { grouping: g, lines };
                assert_eq!(fold(&back, o), fold(&p, o));
            }
        }
        assert_eq!(back.meta.frequency, 1_000_000_000 / (1_000_000_000 / 999));
        assert_eq!(back.meta.command, vec!["./prog".to_string()]);
        assert_eq!(back.mappings[0].build_id.as_deref(), Some("abcd"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(read(b"not a profile at all").is_err());
        assert!(read(&[0x1f, 0x8b, 1, 2, 3]).is_err());
    }
}
