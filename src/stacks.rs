//! The symbolized profile: what every writer takes and every saved-profile reader gives back.
//!
//! Its shape follows pprof's: functions, locations (an address with one or more lines, more
//! than one where functions were inlined), mappings, and samples that list locations. A
//! recording becomes one with [`StackProfile::from_recording`]; a `.pb.gz` file with
//! [`crate::output::pprof::read`].

use std::collections::HashMap;

use crate::model::Frame;
use crate::model::FrameKind;
use crate::modules::{ModuleId, ModuleTable};
use crate::profile::{Metadata, Profile};
use crate::symbolize::{SymbolFrame, Symbols};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Function {
    /// Demangled, sanitized.
    pub name: String,
    pub file: Option<String>,
}

/// One line of a location: a function and the line in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub function: usize,
    pub line: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub file: String,
    pub build_id: Option<String>,
    pub start: u64,
    pub limit: u64,
    pub offset: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub mapping: Option<usize>,
    pub address: u64,
    /// Outermost (the real function) first, inlined callees after it.
    pub lines: Vec<Line>,
    /// Kernel, JIT or user code.
    pub kind: FrameKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub pid: u32,
    pub tid: u32,
    /// Root first.
    pub locations: Vec<usize>,
    pub count: u64,
}

#[derive(Clone, Debug, Default)]
pub struct StackProfile {
    pub meta: Metadata,
    pub functions: Vec<Function>,
    pub locations: Vec<Location>,
    pub mappings: Vec<Mapping>,
    pub samples: Vec<Sample>,
    /// The samples in the order taken (empty for a profile read back from a file that did
    /// not keep time).
    pub timeline: Vec<TimedSample>,
}

/// One sample on the timeline: when (monotonic ns), which entry of `samples` (its thread and
/// stack), and how many samples it stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedSample {
    pub time: u64,
    pub sample: usize,
    pub count: u32,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl StackProfile {
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// Build from a recording and its symbols.
    pub fn from_recording(
        profile: &Profile,
        symbols: &Symbols,
        modules: &ModuleTable,
    ) -> StackProfile {
        let mut b = Builder {
            out: StackProfile {
                meta: profile.meta.clone(),
                ..Default::default()
            },
            function_ids: HashMap::new(),
            mapping_ids: HashMap::new(),
            kernel_mapping: None,
        };
        // Locations correspond one to one with the profile's frames.
        for (i, frame) in profile.frames().iter().enumerate() {
            let (mapping, address) = b.place(frame, modules);
            let names = &symbols.frames[i];
            let lines = names.iter().map(|sf| b.line(sf)).collect();
            let kind = names.first().map(|f| f.kind).unwrap_or(FrameKind::Native);
            b.out.locations.push(Location {
                mapping,
                address,
                lines,
                kind,
            });
        }
        let mut stacks: Vec<_> = profile
            .stack_nodes()
            .into_iter()
            .map(|(pid, tid, node, count)| (pid, tid, profile.path(node), count, node))
            .collect();
        stacks.sort();
        let mut index = HashMap::new();
        for (pid, tid, frames, count, node) in stacks {
            index.insert((pid, tid, node), b.out.samples.len());
            b.out.samples.push(Sample {
                pid,
                tid,
                locations: frames.iter().map(|&f| f as usize).collect(),
                count,
            });
        }
        b.out.timeline = profile
            .timeline()
            .iter()
            .filter_map(|t| {
                Some(TimedSample {
                    time: t.time,
                    sample: *index.get(&(t.pid, t.tid, t.node))?,
                    count: t.count,
                })
            })
            .collect();
        b.out
    }
}

/// A [`StackProfile`] as it is built: functions and mappings interned as frames name them.
struct Builder {
    out: StackProfile,
    function_ids: HashMap<Function, usize>,
    mapping_ids: HashMap<ModuleId, usize>,
    kernel_mapping: Option<usize>,
}

impl Builder {
    /// A frame's mapping (if any) and its address: real addresses where the module was first
    /// mapped, SVMAs otherwise.
    fn place(&mut self, frame: &Frame, modules: &ModuleTable) -> (Option<usize>, u64) {
        match *frame {
            Frame::Module { module, svma } => {
                let file = modules.get(module);
                let (start, limit, offset, bias) =
                    file.first_mapping.unwrap_or((0, u64::MAX, 0, 0));
                let mappings = &mut self.out.mappings;
                let m = *self.mapping_ids.entry(module).or_insert_with(|| {
                    mappings.push(Mapping {
                        file: file.path.clone(),
                        build_id: file.build_id.as_deref().map(hex),
                        start,
                        limit,
                        offset,
                    });
                    mappings.len() - 1
                });
                (Some(m), svma.wrapping_add(bias))
            }
            Frame::Kernel(addr) => (Some(self.kernel_mapping()), addr),
            Frame::Anon { addr, .. } => (None, addr),
            Frame::Truncated | Frame::OffCpu(_) | Frame::Python { .. } | Frame::PythonCut => {
                (None, 0)
            }
        }
    }

    fn kernel_mapping(&mut self) -> usize {
        if let Some(m) = self.kernel_mapping {
            return m;
        }
        self.out.mappings.push(Mapping {
            file: "[kernel.kallsyms]".into(),
            build_id: None,
            start: 0,
            limit: u64::MAX,
            offset: 0,
        });
        *self.kernel_mapping.insert(self.out.mappings.len() - 1)
    }

    /// One name of a frame as a line of its location, its function interned.
    fn line(&mut self, sf: &SymbolFrame) -> Line {
        let f = Function {
            name: sf.name.clone(),
            file: sf.file.clone(),
        };
        let functions = &mut self.out.functions;
        let function = *self.function_ids.entry(f.clone()).or_insert_with(|| {
            functions.push(f);
            functions.len() - 1
        });
        Line {
            function,
            line: sf.line,
        }
    }
}
