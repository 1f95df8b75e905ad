//! Keeping the maps of the stack walk in the kernel current ([`crate::sampler::bpf`]): each
//! process's executable mappings, with the rows of their files built from `.eh_frame` the
//! first time a file is mapped ([`crate::unwind_table`]).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::model::{KernelWalk, ModuleId};
use crate::modules::ModuleFile;
use crate::process::ProcessTable;
use crate::sampler::bpf::{BpfMaps, MappingEntry, RowsPlace};
use crate::unwind_table::builder::{Builder, Notify, Table};
use crate::unwind_table::cache;
use crate::unwind_table::packed::PackedRow;

/// The maps, and where each module's rows are (`None`: no table, or it did not fit).
pub(super) struct KernelWalkMaps {
    maps: BpfMaps,
    /// Where each module's rows are, and the table's base (its first address).
    placed: HashMap<ModuleId, Option<(RowsPlace, u64)>>,
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
    /// Tables being built beside the collector.
    builder: Builder,
    /// Files whose rows did not fit, and the slots they take with their index: tried again
    /// when that many fit.
    left_out: HashMap<ModuleId, usize>,
    /// Files left out being tried again, and those placed then.
    retried: HashSet<ModuleId>,
    pub placed_later: usize,
    /// Processes that ran `exec`, and when (CLOCK_MONOTONIC) the program was told they map
    /// nothing of their old program any more: until then their samples were walked with
    /// the old program's mappings.
    exec_told: HashMap<u32, u64>,
    /// Samples walked so, of which the first frame alone is kept.
    pub walked_before_exec_told: u64,
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
            builder: Builder::default(),
            left_out: HashMap::new(),
            retried: HashSet::new(),
            placed_later: 0,
            exec_told: HashMap::new(),
            walked_before_exec_told: 0,
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
            let Some((place, base)) = self.rows_of(m.module, procs) else {
                continue;
            };
            let module = procs.modules.get(m.module);
            let load_bias = module.load_bias(m.start, m.pgoff, m.end - m.start);
            entries.push(MappingEntry {
                start: m.start,
                end: m.end,
                bias: load_bias.wrapping_add(base),
                rows: place,
            });
        }
        self.maps.set_process(pid, &entries);
    }

    pub(super) fn ended(&mut self, pid: u32) {
        self.maps.remove_process(pid);
        self.exec_told.remove(&pid);
    }

    /// Process `pid` ran `exec` (its record is the last one handled): the program is told it
    /// maps nothing of the old program any more.
    pub(super) fn execed(&mut self, pid: u32, procs: &ProcessTable) {
        self.update(pid, procs);
        self.exec_told
            .insert(pid, crate::linux::sched::monotonic_ns());
    }

    /// Whether walk `w` of a sample of `pid` taken at `time` (handled after its `exec`) went
    /// past its first frame with rows of the old program: made before the program was told
    /// of the `exec`, with the old program's mappings, which may lie where the new one's
    /// code is now (a program not built position independent is always at the same
    /// address). A walk that found no mapping there handed over at once, with a copy of the
    /// stack that is walked with the new mappings: it stands.
    pub(super) fn walked_with_old_rows(&mut self, pid: u32, time: u64, w: &KernelWalk) -> bool {
        let before_told = self.exec_told.get(&pid).is_some_and(|&told| time < told);
        let stale = before_told && !w.handed_over_at_first_frame();
        self.walked_before_exec_told += u64::from(stale);
        stale
    }

    /// Give back the rows of files that no live process maps (the program knows no process
    /// that maps them: `ended` and `update` told it), at most once per [`RELEASE_EVERY`]. A
    /// file mapped again later has its rows placed again (from the cache on disk).
    pub(super) fn release_unmapped(&mut self, procs: &ProcessTable) {
        if self.looked.elapsed() >= RELEASE_EVERY {
            self.release_now(procs);
            self.retry_left_out(procs);
        }
    }

    /// Whether files were left out for room (then [`KernelWalkMaps::release_unmapped`] is
    /// worth calling now and then, not only as processes end).
    pub(super) fn has_left_out(&self) -> bool {
        !self.left_out.is_empty()
    }

    /// Place the rows of files left out for room that fit now and that a live process still
    /// maps, and tell the program of the processes that map them.
    fn retry_left_out(&mut self, procs: &ProcessTable) {
        let fit: Vec<ModuleId> = self
            .left_out
            .iter()
            .filter(|&(_, &rows)| self.maps.has_room(rows))
            .map(|(&id, _)| id)
            .collect();
        let mut pids = HashSet::new();
        for id in fit {
            self.left_out.remove(&id);
            self.placed.remove(&id);
            self.maps.forget_left_out(u64::from(id.0));
            self.retried.insert(id);
            pids.extend(mapped_by(procs, id));
        }
        for pid in pids {
            self.update(pid, procs);
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

    /// Where module `id`'s rows are in the kernel: placed from the cache on first use, else
    /// handed to the builder (`None` until it is done: [`KernelWalkMaps::take_built`]).
    fn rows_of(&mut self, id: ModuleId, procs: &ProcessTable) -> Option<(RowsPlace, u64)> {
        if let Some(&placed) = self.placed.get(&id) {
            return placed;
        }
        let key = u64::from(id.0);
        if self.builder.pending(key) {
            return None;
        }
        let module = procs.modules.get(id);
        if module.data.is_none() {
            return self.place(id, None, procs);
        }
        let began = Instant::now();
        let keep = self.cache_key(module);
        let cached = keep.as_ref().and_then(|(dir, k)| cache::load(dir, k));
        self.build_seconds += began.elapsed().as_secs_f64();
        if cached.is_some() {
            self.from_cache += 1;
            return self.place(id, cached, procs);
        }
        self.builder.request(key, module.unwind.clone(), keep);
        None
    }

    /// Place the rows `table` of module `id` (`None`: it has none).
    fn place(
        &mut self,
        id: ModuleId,
        table: Option<Table>,
        procs: &ProcessTable,
    ) -> Option<(RowsPlace, u64)> {
        let placed = match table {
            Some((base, rows)) => {
                if !self.retried.contains(&id) {
                    self.files += 1;
                }
                let slots_needed = BpfMaps::slots_for(&rows);
                if !self.maps.has_room(slots_needed) {
                    // Room may be held by files no process maps any more.
                    self.release_now(procs);
                }
                let placed = self
                    .maps
                    .rows_of(u64::from(id.0), &rows)
                    .map(|place| (place, base));
                match placed {
                    None => {
                        self.left_out.insert(id, slots_needed);
                    }
                    Some(_) if self.retried.remove(&id) => self.placed_later += 1,
                    Some(_) => {}
                }
                placed
            }
            None => {
                // (A file that could not be read is said in the summary's warnings.)
                let module = procs.modules.get(id);
                if module.data.is_some() && !module.path.starts_with('[') {
                    self.files_without += 1;
                }
                None
            }
        };
        self.placed.insert(id, placed);
        placed
    }

    /// Place the tables built since last asked, and tell the program of each live process
    /// that maps one of them. A file no live process maps any more is not placed (the next
    /// process to map it has its rows from the cache).
    pub(super) fn take_built(&mut self, procs: &ProcessTable) {
        let built = self.builder.take();
        if built.is_empty() {
            return;
        }
        let mut pids = HashSet::new();
        for b in built {
            self.build_seconds += b.seconds;
            let id = ModuleId(b.key as u32);
            let mapping: Vec<u32> = mapped_by(procs, id).collect();
            if !mapping.is_empty() {
                self.place(id, b.table, procs);
                pids.extend(mapping);
            }
        }
        for pid in pids {
            self.update(pid, procs);
        }
    }

    /// Where a module's table is kept: by build id (or, for a file without one, by path,
    /// size and modification time) in the cache directory.
    fn cache_key(&self, module: &ModuleFile) -> Option<(PathBuf, Vec<u8>)> {
        let key = module.build_id.clone().or_else(|| file_key(&module.path))?;
        Some((self.cache_dir.clone()?, key))
    }

    /// Have `notify` called when the builder has a table ready (then call
    /// [`KernelWalkMaps::take_built`]).
    pub(super) fn notify_built(&mut self, notify: Notify) {
        self.builder.notify_with(notify);
    }

    /// For `-v`.
    pub(super) fn describe(&self) -> String {
        let (peak, capacity) = self.maps.rows_held();
        let row = std::mem::size_of::<PackedRow>() as f64;
        let mib = |rows: u32| f64::from(rows) * row / f64::from(1 << 20);
        format!(
            "stacks walked in the kernel: rows of {} files, {peak} rows at most, their indexes \
             included ({:.1} of {:.1} MiB); {} files' rows given back when no process mapped \
             them, {} files left out for room ({} of them placed later), {} without .eh_frame \
             or .debug_frame; {} from the cache, built or loaded in {:.2} s; {} samples taken \
             after an exec, before the program knew of it, cut after their first frame",
            self.files,
            mib(peak),
            mib(capacity),
            self.released,
            self.maps.files_left_out,
            self.placed_later,
            self.files_without,
            self.from_cache,
            self.build_seconds,
            self.walked_before_exec_told
        )
    }
}

/// The live processes that map module `id`.
fn mapped_by(procs: &ProcessTable, id: ModuleId) -> impl Iterator<Item = u32> + '_ {
    procs
        .processes()
        .filter(move |p| p.alive && p.mappings().any(|m| m.module == id))
        .map(|p| p.pid)
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
