//! Keeping the maps of the stack walk in the kernel current ([`crate::sampler::bpf`]): each
//! process's executable mappings, with the rows of their files built from `.eh_frame` the
//! first time a file is mapped ([`crate::unwind_table`]).

use std::collections::HashMap;

use crate::model::ModuleId;
use crate::process::ProcessTable;
use crate::sampler::bpf::{BpfMaps, MappingEntry};

/// The maps, and where each module's rows are (`None`: no table, or it did not fit).
pub(super) struct KernelWalkMaps {
    maps: BpfMaps,
    /// Where each module's rows are, and the table's base (its first address).
    placed: HashMap<ModuleId, Option<(u32, u32, u64)>>,
    /// Files whose rows are in the kernel, and files without (no `.eh_frame`).
    pub files: usize,
    pub files_without: usize,
    /// CPU time spent building tables (s).
    pub build_seconds: f64,
}

impl KernelWalkMaps {
    pub(super) fn new(maps: BpfMaps) -> KernelWalkMaps {
        KernelWalkMaps {
            maps,
            placed: HashMap::new(),
            files: 0,
            files_without: 0,
            build_seconds: 0.0,
        }
    }

    /// Tell the program the executable mappings `pid` has now.
    pub(super) fn update(&mut self, pid: u32, procs: &ProcessTable) {
        let Some(process) = procs.get(pid) else {
            return;
        };
        let mut entries = Vec::new();
        for m in process.mappings() {
            let Some((first, count, base)) = self.rows_of(m.module, procs) else {
                continue;
            };
            let module = procs.modules.get(m.module);
            let load_bias = module.load_bias(m.start, m.pgoff, m.end - m.start);
            entries.push(MappingEntry {
                start: m.start,
                end: m.end,
                bias: load_bias.wrapping_add(base),
                first,
                count,
            });
        }
        self.maps.set_process(pid, &entries);
    }

    pub(super) fn ended(&mut self, pid: u32) {
        self.maps.remove_process(pid);
    }

    /// Where module `id`'s rows are in the kernel, building and storing them on first use.
    fn rows_of(&mut self, id: ModuleId, procs: &ProcessTable) -> Option<(u32, u32, u64)> {
        if let Some(&placed) = self.placed.get(&id) {
            return placed;
        }
        let module = procs.modules.get(id);
        let began = std::time::Instant::now();
        let table = module
            .data
            .as_ref()
            .and_then(|_| crate::unwind_table::build(&module.unwind).ok())
            .and_then(|t| crate::unwind_table::packed::pack(&t));
        self.build_seconds += began.elapsed().as_secs_f64();
        let placed = match table {
            Some((base, rows)) => {
                self.files += 1;
                self.maps
                    .rows_of(u64::from(id.0), &rows)
                    .map(|(first, count)| (first, count, base))
            }
            None => {
                self.files_without += 1;
                None
            }
        };
        self.placed.insert(id, placed);
        placed
    }

    /// For `-v`.
    pub(super) fn describe(&self) -> String {
        let (used, capacity) = self.maps.rows_bytes();
        format!(
            "stacks walked in the kernel: rows of {} files ({:.1} of {:.1} MiB; {} files left \
             out for room, {} without .eh_frame), built in {:.2} s",
            self.files,
            used as f64 / (1 << 20) as f64,
            capacity as f64 / (1 << 20) as f64,
            self.maps.files_left_out,
            self.files_without,
            self.build_seconds
        )
    }
}
