//! pprof: gzip'd `perftools.profiles.Profile`, what `go tool pprof`, Pyroscope and many
//! others read — and ember's own saved-profile format: it keeps functions, inlined lines,
//! mappings, processes and threads, so every view can be made again from it.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::time::Duration;

use pprof::protos::{self, Message};

use crate::model::FrameKind;
use crate::profile::Metadata;
use crate::stacks::{Function, Line, Location, Mapping, Sample, StackProfile};

const KERNEL_MAPPING: &str = "[kernel.kallsyms]";
const JIT_MAPPING: &str = "[jit]";
/// The pseudo-mapping of Python frames (they have a file and line, no address).
const PYTHON_MAPPING: &str = "[python]";

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

/// Encode `p` as a (not yet gzip'd) pprof Profile.
pub fn to_proto(p: &StackProfile) -> protos::Profile {
    let mut e = Encoder {
        st: Strings::new(),
        mappings: Vec::new(),
        jit_mapping: None,
        python_mapping: None,
        kernel_mapping: None,
    };
    let period = 1_000_000_000 / p.meta.frequency.max(1) as i64;
    let sample_type = vec![
        e.value_type("samples", "count"),
        e.value_type("cpu", "nanoseconds"),
    ];
    e.add_mappings(&p.mappings);
    let function = e.functions(&p.functions);
    let location = e.locations(&p.locations);
    let sample = p
        .samples
        .iter()
        .map(|s| e.sample(s, &p.meta, period))
        .collect();
    let comment = e.comments(&p.meta);
    protos::Profile {
        sample_type,
        sample,
        mapping: std::mem::take(&mut e.mappings),
        location,
        function,
        period_type: Some(e.value_type("cpu", "nanoseconds")),
        period,
        duration_nanos: p.meta.duration.as_nanos() as i64,
        time_nanos: p
            .meta
            .start
            .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64),
        comment,
        string_table: std::mem::take(&mut e.st.table),
        ..Default::default()
    }
}

/// The tables of a pprof Profile as they are built: strings and mappings grow as locations
/// and samples refer to them.
struct Encoder {
    st: Strings,
    mappings: Vec<protos::Mapping>,
    /// JIT code has no file, kernel frames may come without one: each gets a mapping of its
    /// own (made when first needed) so readers can tell them apart.
    jit_mapping: Option<u64>,
    python_mapping: Option<u64>,
    kernel_mapping: Option<u64>,
}

impl Encoder {
    fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType {
            ty: self.st.id(ty),
            unit: self.st.id(unit),
        }
    }

    fn add_mappings(&mut self, mappings: &[Mapping]) {
        for (i, m) in mappings.iter().enumerate() {
            let mapping = protos::Mapping {
                id: i as u64 + 1,
                memory_start: m.start,
                memory_limit: m.limit,
                file_offset: m.offset,
                filename: self.st.id(&m.file),
                build_id: self.st.id(m.build_id.as_deref().unwrap_or("")),
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            };
            self.mappings.push(mapping);
        }
    }

    /// Add a mapping for code without a file (kernel, JIT) and return its id.
    fn pseudo_mapping(&mut self, name: &str) -> u64 {
        let mapping = protos::Mapping {
            id: self.mappings.len() as u64 + 1,
            memory_limit: u64::MAX,
            filename: self.st.id(name),
            has_functions: true,
            ..Default::default()
        };
        self.mappings.push(mapping);
        self.mappings.len() as u64
    }

    fn jit_mapping(&mut self) -> u64 {
        if let Some(id) = self.jit_mapping {
            return id;
        }
        let id = self.pseudo_mapping(JIT_MAPPING);
        *self.jit_mapping.insert(id)
    }

    fn python_mapping(&mut self) -> u64 {
        if let Some(id) = self.python_mapping {
            return id;
        }
        let id = self.pseudo_mapping(PYTHON_MAPPING);
        *self.python_mapping.insert(id)
    }

    fn kernel_mapping(&mut self) -> u64 {
        if let Some(id) = self.kernel_mapping {
            return id;
        }
        let id = self.pseudo_mapping(KERNEL_MAPPING);
        *self.kernel_mapping.insert(id)
    }

    fn functions(&mut self, functions: &[Function]) -> Vec<protos::Function> {
        functions
            .iter()
            .enumerate()
            .map(|(i, f)| protos::Function {
                id: i as u64 + 1,
                name: self.st.id(&f.name),
                system_name: self.st.id(&f.name),
                filename: self.st.id(f.file.as_deref().unwrap_or("")),
                start_line: 0,
            })
            .collect()
    }

    fn locations(&mut self, locations: &[Location]) -> Vec<protos::Location> {
        let mut out = Vec::with_capacity(locations.len());
        for (i, l) in locations.iter().enumerate() {
            let mapping_id = match (l.mapping, l.kind) {
                (Some(m), _) => m as u64 + 1,
                (None, FrameKind::Jit) => self.jit_mapping(),
                (None, FrameKind::Python) => self.python_mapping(),
                (None, FrameKind::Kernel) => self.kernel_mapping(),
                (None, _) => 0,
            };
            out.push(protos::Location {
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
            });
        }
        out
    }

    fn sample(&mut self, s: &Sample, meta: &Metadata, period: i64) -> protos::Sample {
        let process = meta.processes.get(&s.pid).cloned().unwrap_or_default();
        let thread = meta
            .threads
            .get(&s.tid)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| process.clone());
        let label = vec![
            self.number("pid", s.pid),
            self.number("tid", s.tid),
            self.text("process", &process),
            self.text("thread", &thread),
        ];
        protos::Sample {
            // pprof lists the leaf first.
            location_id: s.locations.iter().rev().map(|&l| l as u64 + 1).collect(),
            value: vec![s.count as i64, s.count as i64 * period],
            label,
        }
    }

    fn number(&mut self, key: &str, v: u32) -> protos::Label {
        protos::Label {
            key: self.st.id(key),
            num: i64::from(v),
            ..Default::default()
        }
    }

    fn text(&mut self, key: &str, v: &str) -> protos::Label {
        protos::Label {
            key: self.st.id(key),
            str: self.st.id(v),
            ..Default::default()
        }
    }

    /// What was recorded, as comments ([`from_proto`] reads them back).
    fn comments(&mut self, meta: &Metadata) -> Vec<i64> {
        let mut comment = vec![self
            .st
            .id(&format!("ember record: {}", meta.command.join(" ")))];
        comment.push(self.st.id(&format!("event: {}", meta.event)));
        if meta.lost > 0 {
            comment.push(self.st.id(&format!("lost samples: {}", meta.lost)));
        }
        comment
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
    let mut d = Decoder {
        prof,
        out: StackProfile::default(),
        mapping_index: HashMap::new(),
        mapping_kind: HashMap::new(),
        function_index: HashMap::new(),
        location_index: HashMap::new(),
    };
    d.mappings()?;
    d.functions()?;
    d.locations()?;
    let (processes, threads) = d.samples()?;
    let mut out = d.out;
    out.meta = Metadata {
        processes,
        threads,
        ..metadata(prof)
    };
    Ok(out)
}

/// A pprof Profile read into a [`StackProfile`], table by table; the ids of each table mapped
/// to indexes in ours.
struct Decoder<'a> {
    prof: &'a protos::Profile,
    out: StackProfile,
    mapping_index: HashMap<u64, usize>,
    mapping_kind: HashMap<u64, FrameKind>,
    function_index: HashMap<u64, usize>,
    location_index: HashMap<u64, usize>,
}

/// Threads by tid with their process, as the samples' labels name them.
type Threads = BTreeMap<u32, (u32, String)>;

impl Decoder<'_> {
    fn string(&self, i: i64) -> Result<&str, PprofError> {
        string(self.prof, i)
    }

    fn mappings(&mut self) -> Result<(), PprofError> {
        for m in &self.prof.mapping {
            let file = self.string(m.filename)?.to_string();
            let kind = match file.as_str() {
                KERNEL_MAPPING => FrameKind::Kernel,
                JIT_MAPPING => FrameKind::Jit,
                PYTHON_MAPPING => FrameKind::Python,
                _ => FrameKind::Native,
            };
            self.mapping_kind.insert(m.id, kind);
            if matches!(kind, FrameKind::Jit | FrameKind::Python) {
                continue;
            }
            let build_id = self.string(m.build_id)?;
            let mapping = Mapping {
                file,
                build_id: (!build_id.is_empty()).then(|| build_id.to_string()),
                start: m.memory_start,
                limit: m.memory_limit,
                offset: m.file_offset,
            };
            self.mapping_index.insert(m.id, self.out.mappings.len());
            self.out.mappings.push(mapping);
        }
        Ok(())
    }

    fn functions(&mut self) -> Result<(), PprofError> {
        for f in &self.prof.function {
            let file = self.string(f.filename)?;
            let function = Function {
                name: crate::symbolize::sanitize(self.string(f.name)?),
                file: (!file.is_empty()).then(|| file.to_string()),
            };
            self.function_index.insert(f.id, self.out.functions.len());
            self.out.functions.push(function);
        }
        Ok(())
    }

    fn locations(&mut self) -> Result<(), PprofError> {
        for l in &self.prof.location {
            let mut lines = Vec::with_capacity(l.line.len());
            for ln in l.line.iter().rev() {
                let function = *self.function_index.get(&ln.function_id).ok_or_else(|| {
                    PprofError::Invalid(format!("location {} names no function", l.id))
                })?;
                lines.push(Line {
                    function,
                    line: u32::try_from(ln.line).ok().filter(|&x| x > 0),
                });
            }
            if lines.is_empty() {
                // An address without symbols: name it by its address.
                self.out.functions.push(Function {
                    name: format!("0x{:x}", l.address),
                    file: None,
                });
                lines.push(Line {
                    function: self.out.functions.len() - 1,
                    line: None,
                });
            }
            self.location_index.insert(l.id, self.out.locations.len());
            self.out.locations.push(Location {
                mapping: self.mapping_index.get(&l.mapping_id).copied(),
                address: l.address,
                lines,
                kind: self
                    .mapping_kind
                    .get(&l.mapping_id)
                    .copied()
                    .unwrap_or(FrameKind::Native),
            });
        }
        Ok(())
    }

    /// The samples, and the processes and threads their labels name.
    fn samples(&mut self) -> Result<(BTreeMap<u32, String>, Threads), PprofError> {
        // Which value is the sample count: "samples" if present, else the first.
        let count_index = self
            .prof
            .sample_type
            .iter()
            .position(|t| self.string(t.ty).is_ok_and(|n| n == "samples"))
            .unwrap_or(0);
        let mut processes = BTreeMap::new();
        let mut threads = BTreeMap::new();
        for smp in &self.prof.sample {
            let labels = self.labels(smp)?;
            if let Some(p) = labels.process.filter(|p| !p.is_empty()) {
                processes.insert(labels.pid, p);
            }
            if let Some(t) = labels.thread.filter(|t| !t.is_empty()) {
                threads.insert(labels.tid, (labels.pid, t));
            }
            let mut locations = Vec::with_capacity(smp.location_id.len());
            for id in smp.location_id.iter().rev() {
                locations.push(*self.location_index.get(id).ok_or_else(|| {
                    PprofError::Invalid(format!("sample refers to unknown location {id}"))
                })?);
            }
            let count = smp.value.get(count_index).copied().unwrap_or(0).max(0) as u64;
            self.out.samples.push(Sample {
                pid: labels.pid,
                tid: labels.tid,
                locations,
                count,
            });
        }
        Ok((processes, threads))
    }

    fn labels(&self, smp: &protos::Sample) -> Result<Labels, PprofError> {
        let mut l = Labels::default();
        for lab in &smp.label {
            match self.string(lab.key)? {
                "pid" => l.pid = u32::try_from(lab.num).unwrap_or(0),
                "tid" => l.tid = u32::try_from(lab.num).unwrap_or(0),
                "process" => l.process = Some(self.string(lab.str)?.to_string()),
                "thread" => l.thread = Some(self.string(lab.str)?.to_string()),
                _ => {}
            }
        }
        Ok(l)
    }
}

/// What a sample's labels say about where it was taken.
#[derive(Default)]
struct Labels {
    pid: u32,
    tid: u32,
    process: Option<String>,
    thread: Option<String>,
}

fn string(prof: &protos::Profile, i: i64) -> Result<&str, PprofError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| prof.string_table.get(i))
        .map(String::as_str)
        .ok_or_else(|| PprofError::Invalid(format!("string index {i} out of range")))
}

/// The recording's metadata from the profile's comments and header.
fn metadata(prof: &protos::Profile) -> Metadata {
    let comments: Vec<&str> = prof
        .comment
        .iter()
        .filter_map(|&c| string(prof, c).ok())
        .collect();
    let comment = |prefix: &str| comments.iter().find_map(|c| c.strip_prefix(prefix));
    Metadata {
        command: comment("ember record: ")
            .map(|c| vec![c.to_string()])
            .unwrap_or_default(),
        frequency: if prof.period > 0 {
            (1_000_000_000 / prof.period) as u64
        } else {
            0
        },
        event: comment("event: ").unwrap_or("").to_string(),
        duration: Duration::from_nanos(prof.duration_nanos.max(0) as u64),
        start: (prof.time_nanos > 0).then(|| {
            std::time::SystemTime::UNIX_EPOCH + Duration::from_nanos(prof.time_nanos as u64)
        }),
        lost: comment("lost samples: ")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        ..Default::default()
    }
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
            kind: FrameKind::Native,
        });
        p.locations.push(Location {
            mapping: Some(0),
            address: 0x20,
            lines: vec![line(1), line(2)],
            kind: FrameKind::Native,
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
        let mut p = sample_profile();
        p.meta.start =
            Some(std::time::UNIX_EPOCH + Duration::from_nanos(1_764_000_000_123_456_789));
        p.meta.duration = Duration::from_millis(60_000);
        let mut buf = Vec::new();
        write(&p, &mut buf).unwrap();
        let back = read(&buf).unwrap();
        assert_eq!(back.meta.start, p.meta.start, "time_nanos");
        assert_eq!(back.meta.duration, p.meta.duration, "duration_nanos");
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
