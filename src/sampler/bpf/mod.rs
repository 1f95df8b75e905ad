//! ember's stack walk in the kernel (BPF): the program (`unwind.bpf.c`, built into
//! `unwind.bpf.o` by `scripts/bpf.sh`), loaded with aya — a loader in Rust alone, so that
//! `cargo install` needs no C toolchain or libbpf — and its maps: the rows of each file
//! ([`crate::unwind_table`]), each process's executable mappings, a buffer per CPU and the
//! ring buffer the records go to.
//!
//! ember attaches the program to its own sampling events (`PERF_EVENT_IOC_SET_BPF`); at each
//! sample it walks the user stack with the rows and sends a record of its own in place of
//! the sample ([`record`] says its layout). The sampler keeps the program ([`BpfProgram`]); the
//! collector, which knows the processes and their files, fills the maps ([`BpfMaps`]).

mod loader;
mod mapped;
pub mod record;
mod ring;
mod space;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use perf_event_open_sys as sys;

use crate::unwind_table::packed::{PackedRow, RowIndex};
use mapped::MappedArray;
use ring::RecordRing;
use space::RowSpace;

/// The compiled program (see `scripts/bpf.sh`).
static OBJECT: &[u8] = include_bytes!("unwind.bpf.o");

/// The ELF section of the program (`SEC("perf_event")`).
const PROGRAM_SECTION: &str = "perf_event";

/// The words of the program's `config` entry (`struct settings`), read once a sample: copy
/// the stack at every sample (a check), the rows' generation (rows the program remembers
/// finding hold for their generation only), and how full the ring of records wakes ember.
const CONFIG_CHECK: usize = 0;
const CONFIG_GENERATION: usize = 1;
const CONFIG_WAKE_BYTES: usize = 2;
type Settings = [u64; 3];

/// The most mappings of one process the program looks through (`MAX_MAPPINGS`).
pub const MAX_MAPPINGS: usize = 256;

/// The slots of the program's process versions (`VERSION_SLOTS`).
const VERSION_SLOTS: u32 = 65536;

/// Rows the kernel holds for all files together, by default: 8 bytes each (32 MiB).
pub const DEFAULT_ROWS: u32 = 1 << 22;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "the kernel refused ember's BPF program ({0}); it needs root, or CAP_BPF and \
         CAP_PERFMON, and a kernel with bpf_loop (5.17 or later)"
    )]
    Load(String),
    #[error(
        "the kernel's verifier rejected ember's BPF program ({0}); this is a bug in ember: \
         please report it with the output of `uname -r`"
    )]
    Verifier(String),
    #[error("could not attach ember's BPF program to its perf event: {0}")]
    Attach(io::Error),
}

/// One executable mapping as the program looks it up (`struct mapping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MappingEntry {
    pub start: u64,
    pub end: u64,
    /// What to subtract from an address to get the key its rows are looked up by: the load
    /// bias and the table's base.
    pub bias: u64,
    pub rows: RowsPlace,
}

/// Where a file's rows are: rows[first, first + count), their index's ([`RowIndex`])
/// `buckets` entries before them (the last fields of `struct mapping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct RowsPlace {
    pub first: u32,
    pub count: u32,
    pub buckets: u32,
    pub shift: u32,
}

impl RowsPlace {
    /// The slots the rows and their index take, from the first.
    fn slots(&self) -> (u32, u32) {
        (self.first - self.buckets, self.buckets + self.count)
    }
}

/// A process's mappings (`struct process`).
#[derive(Clone, Copy)]
#[repr(C)]
struct ProcessEntry {
    count: u32,
    pad: u32,
    m: [MappingEntry; MAX_MAPPINGS],
}

/// A CPython process as the program reads its frames (`struct python`): where its runtime
/// state is and the offsets of [`crate::python::layout::Layout`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PythonEntry {
    pub runtime: u64,
    pub interpreters_head: u32,
    pub threads_head: u32,
    pub tstate_next: u32,
    pub tstate_tid: u32,
    /// [`PYTHON_NO_OFFSET`]: the thread state holds its current frame itself.
    pub cframe: u32,
    pub current_frame: u32,
    pub frame_code: u32,
    pub frame_previous: u32,
    pub frame_prev_instr: u32,
    pub frame_owner: u32,
    /// [`PYTHON_NO_OFFSET`]: frames owned by the C stack mark where each call begins.
    pub entry_byte: u32,
    pub code_instructions: u32,
    pub code_firstlineno: u32,
    pub code_filename: u32,
    pub code_qualname: u32,
    /// Read at once: a frame's first `frame_size` bytes, and `code_size` bytes of a code
    /// object from `code_from` (every field above lies within them; at most
    /// [`PYTHON_READ_MAX`] each).
    pub frame_size: u32,
    pub code_from: u32,
    pub code_size: u32,
    /// Where an ASCII `str` object's text begins (the names the program sends).
    pub str_data: u32,
    /// `co_flags`: the names of a code object without `CO_NEWLOCALS` (a module's or a
    /// class's body), and of the frame it runs, go with the first sample of it.
    pub code_flags: u32,
}

/// The most bytes of a frame or a code object the program reads (`PY_READ`).
pub const PYTHON_READ_MAX: u32 = 128;

/// An offset a version does not have (`NO_OFFSET`).
pub const PYTHON_NO_OFFSET: u32 = u32::MAX;

// `struct mapping`'s 40 bytes: three addresses, then the four words of `RowsPlace`.
const _: () = assert!(std::mem::size_of::<MappingEntry>() == 40);
// SAFETY: plain data of integers, no padding but the explicit fields.
unsafe impl aya::Pod for MappingEntry {}
unsafe impl aya::Pod for ProcessEntry {}
unsafe impl aya::Pod for PythonEntry {}

/// The program, loaded, and the ring its records go to.
pub struct BpfProgram {
    program: OwnedFd,
    /// The maps only the program uses (kept open with it).
    _maps: Vec<MapData>,
    /// The records (`records`), mapped here.
    records: RecordRing,
    /// Records the ring had no room for, per CPU (`lost`), and their sum when last read.
    lost: PerCpuArray<MapData, u64>,
    lost_seen: u64,
    /// [`ForcedRefusal::Attach`] was asked for.
    attach_refused: bool,
}

/// The maps ember fills: each file's rows, each process's mappings.
pub struct BpfMaps {
    /// The rows map, mapped here (`BPF_F_MMAPABLE`).
    rows: MappedArray<PackedRow>,
    /// The program's settings: [`CONFIG_CHECK`], [`CONFIG_GENERATION`],
    /// [`CONFIG_WAKE_BYTES`].
    config: Array<MapData, Settings>,
    /// The settings as the program was last told them.
    settings: Settings,
    processes: BpfHashMap<MapData, u32, ProcessEntry>,
    /// Each process's version, by a slot of its pid ([`VERSION_SLOTS`]): counted up after
    /// its mappings change, so that the frames the program remembers of it (`memo`) no
    /// longer answer.
    versions: Array<MapData, u32>,
    /// The CPython processes whose frames the program reads.
    pythons: BpfHashMap<MapData, u32, PythonEntry>,
    /// Which rows hold a file's, and which are free.
    space: RowSpace,
    /// Where each file's rows are, by the key ember gives the file.
    files: HashMap<u64, Option<RowsPlace>>,
    /// Files that did not fit.
    pub files_left_out: usize,
}

/// A refusal of the kernel's to bring about on purpose, for tests of the way back to the
/// walk in user space (`--debug-bpf-refusal`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForcedRefusal {
    /// Load a program whose first instruction reads a register never written: the verifier
    /// rejects it.
    Verifier,
    /// Hand the perf event a descriptor that is not a BPF program: the kernel refuses to
    /// attach it.
    Attach,
}

/// What tests and measurements change in the walk in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkHooks {
    /// Make the kernel refuse the program (`--debug-bpf-refusal`).
    pub refusal: Option<ForcedRefusal>,
    /// Room for this many rows instead of [`DEFAULT_ROWS`] (`--debug-bpf-rows`).
    pub rows: Option<u32>,
}

/// How to load the program.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Room for this many rows.
    pub rows: u32,
    /// The bytes of the ring of records (rounded down to a power of two pages).
    pub ring_bytes: usize,
    /// Every record also carries a copy of the stack at the sample's stack pointer.
    pub check: bool,
    pub refusal: Option<ForcedRefusal>,
}

/// Load the program for CPUs `cpus`.
pub fn load(cpus: &[u32], options: LoadOptions) -> Result<(BpfProgram, BpfMaps), BpfError> {
    let LoadOptions {
        rows,
        ring_bytes,
        check,
        refusal,
    } = options;
    let ring_bytes = ring_size(ring_bytes);
    let slots = cpus.iter().max().map_or(1, |&c| c + 1);
    let object = match refusal {
        Some(ForcedRefusal::Verifier) => std::borrow::Cow::Owned(unverifiable(OBJECT)?),
        _ => std::borrow::Cow::Borrowed(OBJECT),
    };
    let loader::Loaded { program, mut maps } = loader::load(
        &object,
        "unwind",
        &[("rows", rows), ("buffers", slots), ("records", ring_bytes)],
    )?;
    let mut config: Array<MapData, Settings> = take(&mut maps, "config")?;
    let mut settings = [0; 3];
    settings[CONFIG_CHECK] = u64::from(check);
    // Woken with a quarter of the ring used, as ember's perf events wake it.
    settings[CONFIG_WAKE_BYTES] = u64::from(ring_bytes / 4);
    config
        .set(0, settings, 0)
        .map_err(|e| BpfError::Load(e.to_string()))?;
    let records = RecordRing::map(take_data(&mut maps, "records")?, ring_bytes as usize)
        .map_err(|e| BpfError::Load(format!("could not map the ring of records: {e}")))?;
    let lost = take(&mut maps, "lost")?;
    let rows_map = take_data(&mut maps, "rows")?;
    let bpf_maps = BpfMaps {
        rows: MappedArray::map(rows_map, rows, "rows")?,
        config,
        settings,
        processes: take(&mut maps, "processes")?,
        versions: take(&mut maps, "versions")?,
        pythons: take(&mut maps, "pythons")?,
        space: RowSpace::new(rows),
        files: HashMap::new(),
        files_left_out: 0,
    };
    let attach_refused = refusal == Some(ForcedRefusal::Attach);
    Ok((
        BpfProgram {
            program,
            _maps: maps.into_values().collect(),
            records,
            lost,
            lost_seen: 0,
            attach_refused,
        },
        bpf_maps,
    ))
}

/// The size of the ring for about `bytes`: a power of two pages (the kernel's rule), from
/// 128 KiB (room for the longest record) to 256 MiB.
fn ring_size(bytes: usize) -> u32 {
    let bytes = bytes.clamp(128 << 10, 256 << 20);
    // The largest power of two not above it.
    1u32 << (usize::BITS - 1 - bytes.leading_zeros())
}

/// `object` with the program's first instruction made `r0 = *(u64 *)(r9 + 0)`: r9 is never
/// written before it, which the verifier refuses.
fn unverifiable(object: &[u8]) -> Result<Vec<u8>, BpfError> {
    use object::{Object, ObjectSection};
    let file = object::File::parse(object).map_err(|e| BpfError::Load(e.to_string()))?;
    let (start, _) = file
        .section_by_name(PROGRAM_SECTION)
        .and_then(|s| s.file_range())
        .ok_or_else(|| BpfError::Load(format!("no section {PROGRAM_SECTION}")))?;
    let mut patched = object.to_vec();
    let start = start as usize;
    patched[start..start + 8].copy_from_slice(&[0x79, 0x90, 0, 0, 0, 0, 0, 0]);
    Ok(patched)
}

impl BpfProgram {
    /// Run the program at every sample of perf event `fd` (its own sample is dropped).
    pub fn attach(&self, fd: RawFd) -> Result<(), BpfError> {
        let prog = if self.attach_refused {
            // A map's descriptor, which the kernel refuses as a program.
            self.records.fd()
        } else {
            self.program.as_raw_fd()
        };
        // SAFETY: an ioctl taking the program's descriptor as its integer argument.
        let r = unsafe { sys::ioctls::SET_BPF(fd, prog as std::os::raw::c_uint) };
        if r != 0 {
            return Err(BpfError::Attach(io::Error::last_os_error()));
        }
        Ok(())
    }

    /// How often the program ran and its time in all, where the kernel counts them
    /// (`sysctl kernel.bpf_stats_enabled=1`); `None` otherwise.
    pub fn run_stats(&self) -> Option<(u64, std::time::Duration)> {
        let (runs, time) = loader::run_stats(self.program.as_fd()).ok()?;
        (runs > 0).then_some((runs, time))
    }

    /// The bytes of the ring of records.
    pub fn ring_bytes(&self) -> usize {
        self.records.size()
    }

    /// The ring of records, to wait on: it polls readable while it holds records, and a
    /// poll that found it empty waits until the program wakes it (a quarter full).
    pub fn records_fd(&self) -> RawFd {
        self.records.fd()
    }

    /// Hand every record in the ring to `each`, oldest first (in the order the CPUs sent
    /// them), and free its space; returns how many there were.
    pub fn read_records(&mut self, each: impl FnMut(&[u8])) -> usize {
        self.records.read(each)
    }

    /// Records the ring had no room for since the last call.
    pub fn take_lost(&mut self) -> u64 {
        let total: u64 = self
            .lost
            .get(&0, 0)
            .map_or(0, |per_cpu| per_cpu.iter().sum());
        let new = total.saturating_sub(self.lost_seen);
        self.lost_seen = self.lost_seen.max(total);
        new
    }
}

impl BpfMaps {
    /// Where the rows of the file known as `key` are, storing them and their index on
    /// first use: `None` if they do not fit.
    pub fn rows_of(&mut self, key: u64, table: &[PackedRow]) -> Option<RowsPlace> {
        if let Some(&place) = self.files.get(&key) {
            return place;
        }
        let index = RowIndex::of(table);
        let buckets = index.entries.len();
        let place = u32::try_from(buckets + table.len())
            .ok()
            .and_then(|n| self.space.take(n))
            .map(|start| {
                let at = start as usize;
                let slots = &mut self.rows.entries_mut()[at..at + buckets + table.len()];
                slots[..buckets].copy_from_slice(&index.entries);
                slots[buckets..].copy_from_slice(table);
                RowsPlace {
                    first: start + buckets as u32,
                    count: table.len() as u32,
                    buckets: buckets as u32,
                    shift: index.shift,
                }
            });
        if place.is_none() {
            self.files_left_out += 1;
        }
        self.files.insert(key, place);
        place
    }

    /// Forget that the file known as `key` did not fit, so that the next [`BpfMaps::rows_of`]
    /// tries again.
    pub fn forget_left_out(&mut self, key: u64) {
        if self.files.get(&key) == Some(&None) {
            self.files.remove(&key);
        }
    }

    /// The slots a file's rows take with their index.
    pub fn slots_for(table: &[PackedRow]) -> usize {
        RowIndex::size(table).1 + table.len()
    }

    /// Whether `slots` ([`BpfMaps::slots_for`]) would fit now.
    pub fn has_room(&self, slots: usize) -> bool {
        u32::try_from(slots).is_ok_and(|n| self.space.has_room(n))
    }

    /// The rows of the file known as `key` are free for other files: no process the
    /// program knows maps it any more.
    pub fn release(&mut self, key: u64) {
        if let Some(Some(place)) = self.files.remove(&key) {
            let (first, n) = place.slots();
            // Before another file's rows can go there: what the program remembers of these
            // rows no longer holds.
            self.settings[CONFIG_GENERATION] += 1;
            if self.config.set(0, self.settings, 0).is_ok() {
                self.space.give(first, n);
            }
        }
    }

    /// The program's view of process `pid`: its executable mappings with rows, by address.
    pub fn set_process(&mut self, pid: u32, mappings: &[MappingEntry]) {
        let mut entry = ProcessEntry {
            count: 0,
            pad: 0,
            m: [MappingEntry::default(); MAX_MAPPINGS],
        };
        let mut sorted: Vec<MappingEntry> = mappings.to_vec();
        sorted.sort_by_key(|m| m.start);
        sorted.truncate(MAX_MAPPINGS);
        entry.m[..sorted.len()].copy_from_slice(&sorted);
        entry.count = sorted.len() as u32;
        let _ = self.processes.insert(pid, entry, 0);
        self.next_version(pid);
    }

    pub fn remove_process(&mut self, pid: u32) {
        let _ = self.processes.remove(&pid);
        let _ = self.pythons.remove(&pid);
        self.next_version(pid);
    }

    /// Count process `pid`'s version up, after its entry changed: what the program found
    /// with the old entry (`memo`) no longer answers. After, not before: a sample that reads
    /// the new version finds the new entry.
    fn next_version(&mut self, pid: u32) {
        let slot = pid % VERSION_SLOTS;
        let version = self.versions.get(&slot, 0).unwrap_or(0);
        let _ = self.versions.set(slot, version.wrapping_add(1), 0);
    }

    /// Read the Python frames of process `pid` at each of its samples; false if the map is
    /// full.
    pub fn set_python(&mut self, pid: u32, entry: &PythonEntry) -> bool {
        self.pythons.insert(pid, entry, 0).is_ok()
    }

    /// Stop reading Python frames of process `pid` (it ran `exec`).
    pub fn remove_python(&mut self, pid: u32) {
        let _ = self.pythons.remove(&pid);
    }

    /// Rows held by files at most at once, and the room for them (the map is made whole
    /// at load: 8 bytes a row).
    pub fn rows_held(&self) -> (u32, u32) {
        (self.space.peak(), self.space.capacity())
    }
}

/// Take map `name` out of the loaded maps.
fn take_data(maps: &mut HashMap<String, MapData>, name: &str) -> Result<MapData, BpfError> {
    maps.remove(name)
        .ok_or_else(|| BpfError::Load(format!("no map `{name}` in the object")))
}

/// Take map `name` out of the loaded maps as a `T`.
fn take<T: TryFrom<Map>>(maps: &mut HashMap<String, MapData>, name: &str) -> Result<T, BpfError> {
    let map = take_data(maps, name)?;
    let wrong = || BpfError::Load(format!("map `{name}` is not of its type"));
    T::try_from(Map::from_map_data(map).map_err(|_| wrong())?).map_err(|_| wrong())
}

/// A refusal of the `bpf` system call while doing `what` (with its causes), and what to do
/// where a seccomp filter made it.
fn refused(what: &str, e: &dyn std::error::Error) -> BpfError {
    let mut why = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        // Some causes repeat their parent's words.
        let cause_text = cause.to_string();
        if !why.contains(&cause_text) {
            why.push_str(&format!(": {cause_text}"));
        }
        source = cause.source();
    }
    if crate::linux::status_field("self", "Seccomp").is_some_and(|v| v == "2") {
        why.push_str(
            "; a seccomp filter is on ember's process, and Docker's default profile refuses \
             the bpf system call",
        );
    }
    BpfError::Load(why)
}

/// The last line of a verifier log before its statistics: what it refused.
fn verifier_reason(log: &str) -> Option<String> {
    log.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take_while(|l| !l.starts_with("verification time") && !l.starts_with("processed "))
        .last()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifiers_reason_is_the_last_line_before_its_statistics() {
        let log = "0: R1=ctx() R10=fp0\n; int unwind(struct bpf_perf_event_data *ctx) @ \
                   unwind.bpf.c:562\n0: (79) r0 = *(u64 *)(r9 +0)\nR9 !read_ok\n\
                   verification time 275 usec\nstack depth 0+0\nprocessed 1 insns (limit \
                   1000000) max_states_per_insn 0\n";
        assert_eq!(verifier_reason(log).as_deref(), Some("R9 !read_ok"));
        assert_eq!(verifier_reason(""), None);
    }

    #[test]
    fn the_unverifiable_object_differs_in_the_programs_first_instruction_only() {
        let patched = unverifiable(OBJECT).unwrap();
        let differing: Vec<usize> = (0..OBJECT.len())
            .filter(|&i| OBJECT[i] != patched[i])
            .collect();
        assert!(
            !differing.is_empty() && differing.len() <= 8,
            "{differing:?}"
        );
        assert!(differing[differing.len() - 1] - differing[0] < 8);
    }
}
