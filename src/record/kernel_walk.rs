//! Keeping the maps of the stack walk in the kernel current ([`crate::sampler::bpf`]): each
//! process's executable mappings, with the rows of their files built from `.eh_frame` the
//! first time a file is mapped ([`crate::unwind_table`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::model::ModuleId;
use crate::modules::ModuleFile;
use crate::process::ProcessTable;
use crate::sampler::bpf::{BpfMaps, MappingEntry};
use crate::unwind_table::cache;
use crate::unwind_table::packed::{self, PackedRow};

/// The maps, and where each module's rows are (`None`: no table, or it did not fit).
pub(super) struct KernelWalkMaps {
    maps: BpfMaps,
    /// Where each module's rows are, and the table's base (its first address).
    placed: HashMap<ModuleId, Option<(u32, u32, u64)>>,
    /// Files whose rows are in the kernel, and files read without any (no `.eh_frame` or
    /// `.debug_frame`).
    pub files: usize,
    pub files_without: usize,
    /// Time spent building or loading tables (s), and how many came from the cache.
    pub build_seconds: f64,
    pub from_cache: usize,
    /// Where tables are kept by build id (`~/.cache/ember`).
    cache_dir: Option<PathBuf>,
    /// Files whose rows were given back (no live process mapped them), and when that was
    /// last looked for.
    pub released: usize,
    looked: Instant,
}

/// How often the rows of files no live process maps are looked for, at most: often enough
/// that a machine running ever new programs does not fill the rows, rarely enough that a
/// storm of exits costs little.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

impl KernelWalkMaps {
    pub(super) fn new(maps: BpfMaps) -> KernelWalkMaps {
        KernelWalkMaps {
            maps,
            placed: HashMap::new(),
            files: 0,
            files_without: 0,
            build_seconds: 0.0,
            from_cache: 0,
            cache_dir: crate::symbolize::inflated::cache_dir(),
            released: 0,
            looked: Instant::now(),
        }
    }

    /// Whether module `module` was found to have no rows in the kernel (none built, or they
    /// did not fit), rather than not looked at yet.
    pub(super) fn lacks_rows(&self, module: ModuleId) -> bool {
        matches!(self.placed.get(&module), Some(None))
    }

    /// Have the program read the Python frames of `pid`; false if its map is full.
    pub(super) fn set_python(
        &mut self,
        pid: u32,
        entry: &crate::sampler::bpf::PythonEntry,
    ) -> bool {
        self.maps.set_python(pid, entry)
    }

    /// Stop reading the Python frames of `pid`.
    pub(super) fn remove_python(&mut self, pid: u32) {
        self.maps.remove_python(pid);
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

    /// Give back the rows of files that no live process maps (the program knows no process
    /// that maps them: `ended` and `update` told it), at most once per [`RELEASE_EVERY`]. A
    /// file mapped again later has its rows placed again (from the cache on disk).
    pub(super) fn release_unmapped(&mut self, procs: &ProcessTable) {
        if self.looked.elapsed() >= RELEASE_EVERY {
            self.release_now(procs);
        }
    }

    /// Give back the rows of files that no live process maps now.
    fn release_now(&mut self, procs: &ProcessTable) {
        self.looked = Instant::now();
        let live: HashSet<ModuleId> = procs
            .processes()
            .filter(|p| p.alive)
            .flat_map(|p| p.mappings().map(|m| m.module))
            .collect();
        let unmapped: Vec<ModuleId> = self
            .placed
            .iter()
            .filter(|(id, placed)| placed.is_some() && !live.contains(id))
            .map(|(&id, _)| id)
            .collect();
        for id in unmapped {
            self.placed.remove(&id);
            self.maps.release(u64::from(id.0));
            self.released += 1;
        }
    }

    /// Where module `id`'s rows are in the kernel, building and storing them on first use.
    fn rows_of(&mut self, id: ModuleId, procs: &ProcessTable) -> Option<(u32, u32, u64)> {
        if let Some(&placed) = self.placed.get(&id) {
            return placed;
        }
        let module = procs.modules.get(id);
        let began = std::time::Instant::now();
        let table = module.data.as_ref().and_then(|_| self.table_of(module));
        self.build_seconds += began.elapsed().as_secs_f64();
        let placed = match table {
            Some((base, rows)) => {
                self.files += 1;
                if !self.maps.has_room(rows.len()) {
                    // Room may be held by files no process maps any more.
                    self.release_now(procs);
                }
                self.maps
                    .rows_of(u64::from(id.0), &rows)
                    .map(|(first, count)| (first, count, base))
            }
            None => {
                // (A file that could not be read is said in the summary's warnings.)
                if module.data.is_some() && !module.path.starts_with('[') {
                    self.files_without += 1;
                }
                None
            }
        };
        self.placed.insert(id, placed);
        placed
    }

    /// A module's packed table: from the cache where it was kept by build id (or, for a file
    /// without one, by path, size and modification time), else built from its `.eh_frame`
    /// (and kept).
    fn table_of(&mut self, module: &ModuleFile) -> Option<(u64, Vec<PackedRow>)> {
        let key = module.build_id.clone().or_else(|| file_key(&module.path));
        let cached = match (&self.cache_dir, &key) {
            (Some(dir), Some(id)) => Some((dir, id)),
            _ => None,
        };
        if let Some(table) = cached.and_then(|(dir, id)| cache::load(dir, id)) {
            self.from_cache += 1;
            return Some(table);
        }
        let built = crate::unwind_table::build(&module.unwind).ok()?;
        let (base, rows) = packed::pack(&built)?;
        if let Some((dir, id)) = cached {
            // Without a cache the next recording builds it again; nothing else is lost.
            let _ = cache::store(dir, id, base, &rows);
        }
        Some((base, rows))
    }

    /// For `-v`.
    pub(super) fn describe(&self) -> String {
        let (peak, capacity) = self.maps.rows_held();
        let row = std::mem::size_of::<PackedRow>() as f64;
        let mib = |rows: u32| f64::from(rows) * row / f64::from(1 << 20);
        format!(
            "stacks walked in the kernel: rows of {} files, {peak} rows at most ({:.1} of \
             {:.1} MiB); {} files' rows given back when no process mapped them, {} files left \
             out for room, {} without .eh_frame or .debug_frame; {} from the cache, built or loaded in {:.2} s",
            self.files,
            mib(peak),
            mib(capacity),
            self.released,
            self.maps.files_left_out,
            self.files_without,
            self.from_cache,
            self.build_seconds
        )
    }
}

/// A key for a file without a build id: its path, size and modification time, hashed (the
/// file changed, the key changes).
fn file_key(path: &str) -> Option<Vec<u8>> {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        path,
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ino(),
    )
        .hash(&mut h);
    let mut key = b"file-".to_vec();
    key.extend_from_slice(&h.finish().to_le_bytes());
    Some(key)
}
