//! The files mapped into profiled processes (executables, shared libraries), each opened and
//! parsed once for the whole recording and shared by every process that maps it.
//!
//! Files are opened when their `mmap` is seen, while the process that mapped them is alive, so
//! short-lived and deleted binaries can still be unwound and symbolized at the end.

use std::collections::HashMap;
use std::fs::File;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::{Arc, Mutex};

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

/// The pseudo-module of anonymous executable memory.
pub const ANON: &str = "[anon]";

/// Does this mapping name (from an mmap record or /proc/PID/maps) stand for a file that can be
/// opened? `//anon`, `/dev/zero`, SysV shared memory and `[...]` names are not files.
pub fn is_file_name(name: &str) -> bool {
    name.starts_with('/')
        && !name.starts_with("//anon")
        && !name.starts_with("/dev/zero")
        && !name.starts_with("/SYSV")
        && !name.starts_with("/anon_hugepage")
}

pub use crate::model::ModuleId;

/// The bytes of a module: a mapped file, or a copy (the vdso, decompressed debug data).
pub enum ModuleData {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Deref for ModuleData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ModuleData::Mapped(m) => m,
            ModuleData::Owned(v) => v,
        }
    }
}

/// A byte range of a module, cheap to clone; framehop reads unwind sections through it.
#[derive(Clone)]
pub struct FileBytes {
    map: Arc<ModuleData>,
    range: Range<usize>,
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({:?})", self.range)
    }
}

// SAFETY: the bytes live in an `Arc`'d mapping or vector that never moves or changes while a
// clone holds it, so every deref of any clone gives the same address.
unsafe impl stable_deref_trait::StableDeref for FileBytes {}
unsafe impl stable_deref_trait::CloneStableDeref for FileBytes {}

impl FileBytes {
    /// `part`, a slice of `map`'s bytes, as a range of it; `None` if it is not inside.
    pub fn part_of(map: &Arc<ModuleData>, part: &[u8]) -> Option<FileBytes> {
        let base = map.as_ptr() as usize;
        let start = (part.as_ptr() as usize).checked_sub(base)?;
        (start + part.len() <= map.len()).then(|| FileBytes {
            map: Arc::clone(map),
            range: start..start + part.len(),
        })
    }

    /// Bytes made in memory (a decompressed section).
    pub fn owned(bytes: Vec<u8>) -> FileBytes {
        let len = bytes.len();
        FileBytes {
            map: Arc::new(ModuleData::Owned(bytes)),
            range: 0..len,
        }
    }
}

/// A `PT_LOAD` segment: how file offsets relate to the addresses the ELF states (SVMAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub svma: u64,
    pub executable: bool,
}

impl LoadSegment {
    pub fn holds(&self, offset: u64) -> bool {
        offset >= self.file_offset
            && offset < self.file_offset.saturating_add(self.file_size.max(1))
    }

    /// The SVMA of `offset`, which it holds.
    pub fn svma_of(&self, offset: u64) -> u64 {
        (offset - self.file_offset).wrapping_add(self.svma)
    }
}

/// What framehop needs to unwind through this module.
#[derive(Clone, Default)]
pub struct UnwindSections {
    pub text_svma: Option<Range<u64>>,
    pub text: Option<FileBytes>,
    pub got_svma: Option<Range<u64>>,
    pub eh_frame_svma: Option<Range<u64>>,
    pub eh_frame: Option<FileBytes>,
    pub eh_frame_hdr_svma: Option<Range<u64>>,
    pub eh_frame_hdr: Option<FileBytes>,
    pub debug_frame: Option<FileBytes>,
}

#[derive(Clone)]
pub struct ModuleFile {
    /// The path as the process mapped it (`/usr/lib/.../libc.so.6`, `[vdso]`).
    pub path: String,
    /// The file's contents, when it could be opened.
    pub data: Option<Arc<ModuleData>>,
    pub build_id: Option<Vec<u8>>,
    pub segments: Vec<LoadSegment>,
    pub unwind: UnwindSections,
    /// Why the file could not be read, for the summary.
    pub error: Option<String>,
    /// Where the module was first seen mapped (its executable part), for outputs that show
    /// real process addresses: (start, end, file offset, load bias).
    pub first_mapping: Option<(u64, u64, u64, u64)>,
}

impl ModuleFile {
    /// Memory that belongs to no file (JIT code, heap, stack): named per process, not per
    /// module.
    pub fn is_anonymous(&self) -> bool {
        self.path == ANON
    }

    /// The short name used for unnamed addresses: `libfoo.so`.
    pub fn short_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// Convert a file offset of code to the address the ELF states for it. Where segments
    /// share a file page, the executable one wins: code addresses are what is looked up.
    pub fn offset_to_svma(&self, offset: u64) -> u64 {
        self.segment_of(offset)
            .map_or(offset, |s| s.svma_of(offset))
    }

    /// The segment [`ModuleFile::offset_to_svma`] converts `offset` with.
    pub fn segment_of(&self, offset: u64) -> Option<&LoadSegment> {
        self.segments
            .iter()
            .filter(|s| s.holds(offset))
            .max_by_key(|s| s.executable)
    }

    /// The load bias of a mapping of this file at `start` with file offset `pgoff` and length
    /// `len`: what to add to an SVMA to get the address in the process. Taken from the
    /// executable segment the mapping holds (mappings start at page boundaries, which may lie
    /// in the segment before it).
    pub fn load_bias(&self, start: u64, pgoff: u64, len: u64) -> u64 {
        let end = pgoff.saturating_add(len);
        let overlap = |s: &LoadSegment| {
            let (a, b) = (
                s.file_offset.max(pgoff),
                s.file_offset.saturating_add(s.file_size).min(end),
            );
            b.saturating_sub(a)
        };
        match self
            .segments
            .iter()
            .filter(|s| overlap(s) > 0)
            .max_by_key(|s| (s.executable, overlap(s)))
        {
            Some(s) => start
                .wrapping_sub(pgoff)
                .wrapping_add(s.file_offset)
                .wrapping_sub(s.svma),
            None => start.wrapping_sub(pgoff),
        }
    }

    fn empty(path: String, error: Option<String>) -> ModuleFile {
        ModuleFile {
            path,
            data: None,
            build_id: None,
            segments: Vec::new(),
            unwind: UnwindSections::default(),
            error,
            first_mapping: None,
        }
    }

    /// Parse an opened file; anything unparsable leaves a module that still names itself.
    pub fn from_data(path: String, map: Arc<ModuleData>) -> ModuleFile {
        let file = match object::File::parse(&**map) {
            Ok(f) => f,
            Err(e) => {
                return ModuleFile::empty(path, Some(format!("not a readable ELF file: {e}")));
            }
        };
        let segments = file
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                let executable = match s.flags() {
                    object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
                    _ => false,
                };
                LoadSegment {
                    file_offset: off,
                    file_size: size,
                    svma: s.address(),
                    executable,
                }
            })
            .collect();
        let build_id = file.build_id().ok().flatten().map(|b| b.to_vec());
        let base = map.as_ptr() as usize;
        let bytes_of = |name: &str| -> Option<FileBytes> {
            let sec = file.section_by_name(name)?;
            // Compressed sections cannot be handed out as plain file bytes.
            if sec.compressed_file_range().ok()?.format != object::CompressionFormat::None {
                return None;
            }
            let d = sec.data().ok()?;
            if d.is_empty() {
                return None;
            }
            let start = d.as_ptr() as usize - base;
            Some(FileBytes {
                map: map.clone(),
                range: start..start + d.len(),
            })
        };
        let range_of = |name: &str| {
            file.section_by_name(name)
                .map(|s| s.address()..s.address().saturating_add(s.size()))
        };
        let unwind = UnwindSections {
            text_svma: range_of(".text"),
            text: bytes_of(".text"),
            got_svma: range_of(".got"),
            eh_frame_svma: range_of(".eh_frame"),
            eh_frame: bytes_of(".eh_frame"),
            eh_frame_hdr_svma: range_of(".eh_frame_hdr"),
            eh_frame_hdr: bytes_of(".eh_frame_hdr"),
            // Go compresses its `.debug_frame`; it is small, so kept inflated.
            debug_frame: bytes_of(".debug_frame").or_else(|| {
                let data = file
                    .section_by_name(".debug_frame")?
                    .uncompressed_data()
                    .ok()?;
                (!data.is_empty()).then(|| FileBytes::owned(data.into_owned()))
            }),
        };
        ModuleFile {
            path,
            data: Some(map.clone()),
            build_id,
            segments,
            unwind,
            error: None,
            first_mapping: None,
        }
    }
}

/// Identifies a file: the same path can be replaced by a new file during a recording.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ModuleKey {
    path: String,
    dev_ino: Option<(u32, u32, u64)>,
}

#[derive(Default)]
pub struct ModuleTable {
    modules: Vec<ModuleFile>,
    by_key: HashMap<ModuleKey, ModuleId>,
    /// Files a reader opened as it saw them mapped, taken from there first.
    early: Option<Arc<EarlyFiles>>,
}

/// A mapped file's device and inode, as mmap records give them.
pub type DevIno = (u32, u32, u64);

/// Files opened as soon as a reader saw them mapped — before the process that mapped them
/// could end and take a deleted or replaced file with it — until [`ModuleTable::open`]
/// takes them.
#[derive(Default)]
pub struct EarlyFiles(Mutex<HashMap<(String, Option<DevIno>), File>>);

/// Files kept at most, waiting to be taken (a reader far ahead of its processing).
const EARLY_FILES_MAX: usize = 4096;

impl EarlyFiles {
    /// Open the file `pid` mapped at `start..end` (`path`, `dev_ino`), and keep it.
    pub fn open(&self, path: &str, dev_ino: Option<DevIno>, pid: u32, start: u64, end: u64) {
        let key = (path.to_string(), dev_ino);
        let waiting = |key| {
            self.0
                .lock()
                .map_or(true, |f| f.len() >= EARLY_FILES_MAX || f.contains_key(key))
        };
        if waiting(&key) {
            return;
        }
        if let (Ok(file), Ok(mut files)) =
            (open_file(path, dev_ino, pid, start, end), self.0.lock())
        {
            files.insert(key, file);
        }
    }

    fn take(&self, path: &str, dev_ino: Option<DevIno>) -> Option<File> {
        self.0.lock().ok()?.remove(&(path.to_string(), dev_ino))
    }
}

impl ModuleTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, id: ModuleId) -> &ModuleFile {
        &self.modules[id.0 as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (ModuleId, &ModuleFile)> {
        self.modules
            .iter()
            .enumerate()
            .map(|(i, m)| (ModuleId(i as u32), m))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Remember the first place `id` was mapped at (see [`ModuleFile::first_mapping`]).
    pub fn note_mapping(&mut self, id: ModuleId, start: u64, end: u64, pgoff: u64) {
        let m = &mut self.modules[id.0 as usize];
        if m.first_mapping.is_none() {
            let bias = m.load_bias(start, pgoff, end - start);
            m.first_mapping = Some((start, end, pgoff, bias));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// A pseudo-module for a mapping that has no file (`[vdso]`, `[anon]`, ...). The vdso is
    /// the same image in every process of this kernel: ember reads its own copy, so vdso
    /// frames are named and unwound like any library's.
    pub fn pseudo(&mut self, name: &str) -> ModuleId {
        let key = ModuleKey {
            path: name.to_string(),
            dev_ino: None,
        };
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let module = match name {
            "[vdso]" => match own_vdso() {
                Some(bytes) => {
                    ModuleFile::from_data(name.to_string(), Arc::new(ModuleData::Owned(bytes)))
                }
                None => ModuleFile::empty(name.to_string(), None),
            },
            _ => ModuleFile::empty(name.to_string(), None),
        };
        self.insert(key, module)
    }

    fn insert(&mut self, key: ModuleKey, m: ModuleFile) -> ModuleId {
        let id = ModuleId(self.modules.len() as u32);
        self.modules.push(m);
        self.by_key.insert(key, id);
        id
    }

    /// Let go of the files of modules `ids` (their mapped bytes and what was read from
    /// them), keeping their names: no process maps them any more and no profile still to be
    /// named holds their frames. A file mapped again later is opened again, as a new module.
    /// Pseudo-modules (`[vdso]`, `[anon]`) stay. Returns the modules let go of now.
    pub fn forget(&mut self, ids: &std::collections::HashSet<ModuleId>) -> Vec<ModuleId> {
        let mut forgotten = Vec::new();
        for &id in ids {
            let Some(m) = self.modules.get_mut(id.0 as usize) else {
                continue;
            };
            if m.path.starts_with('[') || m.data.is_none() {
                continue;
            }
            m.data = None;
            m.unwind = UnwindSections::default();
            m.segments = Vec::new();
            m.build_id = None;
            forgotten.push(id);
        }
        let modules = &self.modules;
        self.by_key
            .retain(|_, id| !ids.contains(id) || modules[id.0 as usize].path.starts_with('['));
        forgotten
    }

    /// Modules from `first` on, for a table kept elsewhere ([`ModuleTable::append`]).
    pub fn since(&self, first: usize) -> &[ModuleFile] {
        self.modules.get(first..).unwrap_or_default()
    }

    /// Add modules another table handed over ([`ModuleTable::since`]): a copy kept in step
    /// with it, where every module has the same id as there.
    pub fn append(&mut self, modules: impl IntoIterator<Item = ModuleFile>) {
        for m in modules {
            let key = ModuleKey {
                path: format!("{}#{}", m.path, self.modules.len()),
                dev_ino: None,
            };
            self.insert(key, m);
        }
    }

    /// Add a module from bytes already in memory (tests, fuzzing, decompressed images).
    pub fn insert_bytes(&mut self, name: &str, bytes: Vec<u8>) -> ModuleId {
        let key = ModuleKey {
            path: format!("{name}#{}", self.modules.len()),
            dev_ino: None,
        };
        let m = ModuleFile::from_data(name.to_string(), Arc::new(ModuleData::Owned(bytes)));
        self.insert(key, m)
    }

    /// Take files from `early` first (see [`EarlyFiles`]).
    pub fn open_early_from(&mut self, early: Arc<EarlyFiles>) {
        self.early = Some(early);
    }

    /// Find or open the file `path` as mapped by `pid` at `start..end`.
    pub fn open(
        &mut self,
        path: &str,
        dev_ino: Option<(u32, u32, u64)>,
        pid: u32,
        start: u64,
        end: u64,
    ) -> ModuleId {
        let key = ModuleKey {
            path: path.to_string(),
            dev_ino,
        };
        // Taken whether it is needed or not, so that none waits for ever.
        let early = self.early.as_ref().and_then(|e| e.take(path, dev_ino));
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let opened = match early {
            // SAFETY: as in `open_mapped_file`.
            Some(file) => unsafe { Mmap::map(&file) },
            None => open_mapped_file(path, dev_ino, pid, start, end),
        };
        let module = match opened {
            Ok(map) => ModuleFile::from_data(path.to_string(), Arc::new(ModuleData::Mapped(map))),
            Err(e) => ModuleFile::empty(path.to_string(), Some(e.to_string())),
        };
        self.insert(key, module)
    }
}

/// A copy of ember's own vdso image (found through the auxiliary vector and its mapping).
fn own_vdso() -> Option<Vec<u8>> {
    // SAFETY: getauxval has no preconditions.
    let start = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if start == 0 {
        return None;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
    let m = crate::linux::parse_maps_line(line)?;
    if m.start != start || m.end <= m.start || m.end - m.start > 1 << 20 {
        return None;
    }
    // SAFETY: the vdso mapping is readable and stays mapped for the life of the process.
    let bytes =
        unsafe { std::slice::from_raw_parts(start as *const u8, (m.end - m.start) as usize) };
    Some(bytes.to_vec())
}

fn same_file(meta: &std::fs::Metadata, dev_ino: Option<(u32, u32, u64)>) -> bool {
    use std::os::unix::fs::MetadataExt;
    match dev_ino {
        None => true,
        Some((maj, min, ino)) => {
            let dev = meta.dev();
            let (dmaj, dmin) = (libc::major(dev), libc::minor(dev));
            meta.ino() == ino && dmaj == maj && dmin == min
        }
    }
}

/// Open and map the file a process mapped ([`open_file`]).
fn open_mapped_file(
    path: &str,
    dev_ino: Option<DevIno>,
    pid: u32,
    start: u64,
    end: u64,
) -> std::io::Result<Mmap> {
    let file = open_file(path, dev_ino, pid, start, end)?;
    // SAFETY: the file is mapped read-only; if another process truncates it we could fault,
    // which is the same risk every profiler and debugger takes.
    unsafe { Mmap::map(&file) }
}

/// Open the file a process mapped: by path when it is still the same file, else through
/// `/proc/PID/map_files` (which reaches deleted and replaced files while the process lives).
fn open_file(
    path: &str,
    dev_ino: Option<DevIno>,
    pid: u32,
    start: u64,
    end: u64,
) -> std::io::Result<File> {
    let by_path = Path::new(path.trim_end_matches(" (deleted)"));
    let map_file = crate::linux::map_file(pid, start, end);
    let mut candidates: Vec<&Path> = Vec::new();
    match std::fs::metadata(by_path) {
        Ok(m) if same_file(&m, dev_ino) => candidates.extend([by_path, map_file.as_path()]),
        _ => candidates.extend([map_file.as_path(), by_path]),
    }
    let mut last_err = None;
    for p in candidates {
        match File::open(p) {
            Ok(f) => return Ok(f),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.expect("two candidates"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_our_own_executable() {
        let exe = std::env::current_exe().unwrap();
        let mut t = ModuleTable::new();
        let id = t.open(exe.to_str().unwrap(), None, std::process::id(), 0, 0);
        let m = t.get(id);
        assert!(m.error.is_none(), "{:?}", m.error);
        assert!(m.unwind.eh_frame.is_some());
        assert!(m.unwind.text.is_some());
        assert!(!m.segments.is_empty());
        // Opening again gives the same module.
        assert_eq!(t.open(exe.to_str().unwrap(), None, 1, 0, 0), id);
    }

    #[test]
    fn forgotten_files_keep_their_names_and_are_opened_again_when_mapped() {
        let exe = std::env::current_exe().unwrap();
        let exe = exe.to_str().unwrap();
        let mut t = ModuleTable::new();
        let id = t.open(exe, None, std::process::id(), 0, 0);
        let vdso = t.pseudo("[vdso]");
        let vdso_read = t.get(vdso).data.is_some();
        let ids = [id, vdso].into_iter().collect();
        assert_eq!(t.forget(&ids), vec![id], "the vdso stays");
        assert!(t.get(id).data.is_none() && t.get(id).unwind.eh_frame.is_none());
        assert_eq!(
            t.get(id).short_name(),
            std::path::Path::new(exe).file_name().unwrap()
        );
        assert_eq!(t.get(vdso).data.is_some(), vdso_read);
        assert_eq!(t.pseudo("[vdso]"), vdso);
        let again = t.open(exe, None, std::process::id(), 0, 0);
        assert_ne!(again, id);
        assert!(t.get(again).data.is_some());
        assert!(t.forget(&ids).is_empty(), "already let go of");
    }

    #[test]
    fn vdso_is_read_from_our_own_image() {
        let mut t = ModuleTable::new();
        let id = t.pseudo("[vdso]");
        let m = t.get(id);
        assert!(m.data.is_some(), "no vdso image");
        assert!(m.unwind.eh_frame.is_some() || m.unwind.eh_frame_hdr.is_some());
        assert!(m.unwind.text.is_some());
    }

    #[test]
    fn unreadable_files_become_named_modules() {
        let mut t = ModuleTable::new();
        let id = t.open("/nonexistent/libfoo.so", None, u32::MAX, 1, 2);
        assert_eq!(t.get(id).short_name(), "libfoo.so");
        assert!(t.get(id).error.is_some());
        let empty = tempfile::NamedTempFile::new().unwrap();
        let id = t.open(empty.path().to_str().unwrap(), None, 1, 0, 0);
        assert!(t.get(id).error.is_some());
    }

    #[test]
    fn offsets_map_through_segments() {
        let mut m = ModuleFile::empty("x".into(), None);
        m.segments = vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0x1000,
                svma: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0x1000,
                file_size: 0x2000,
                svma: 0x401000,
                executable: true,
            },
        ];
        assert_eq!(m.offset_to_svma(0x1234), 0x401234);
        assert_eq!(m.offset_to_svma(0x10), 0x10);
        assert_eq!(m.offset_to_svma(0x9000), 0x9000);
    }

    /// lld lays segments out so that the code segment's first page also holds the end of
    /// the read-only segment, and its SVMAs are one page above its file offsets.
    #[test]
    fn load_bias_comes_from_the_executable_segment() {
        let mut m = ModuleFile::empty("x".into(), None);
        m.segments = vec![
            LoadSegment {
                file_offset: 0,
                file_size: 0x16ebc,
                svma: 0,
                executable: false,
            },
            LoadSegment {
                file_offset: 0x16ec0,
                file_size: 0x3fb53,
                svma: 0x17ec0,
                executable: true,
            },
        ];
        // Mapped at 0x5000_0000 from file page 0x16000.
        let bias = m.load_bias(0x5000_0000, 0x16000, 0x41000);
        // Code at file offset 0x16fc2 has SVMA 0x17fc2 and lives at 0x5000_0fc2.
        assert_eq!(0x17fc2u64.wrapping_add(bias), 0x5000_0fc2);
        assert_eq!(m.offset_to_svma(0x16fc2), 0x17fc2);
    }
}
