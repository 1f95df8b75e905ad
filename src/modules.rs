//! The files mapped into profiled processes (executables, shared libraries), each opened and
//! parsed once for the whole recording and shared by every process that maps it.
//!
//! Files are opened when their `mmap` is seen, while the process that mapped them is alive, so
//! short-lived and deleted binaries can still be unwound and symbolized at the end.

use std::collections::HashMap;
use std::fs::File;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

/// Index of a module in the [`ModuleTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleId(pub u32);

/// A byte range of a mapped file, cheap to clone; framehop reads unwind sections through it.
#[derive(Clone)]
pub struct FileBytes {
    map: Arc<Mmap>,
    range: Range<usize>,
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.range.clone()]
    }
}

/// A `PT_LOAD` segment: how file offsets relate to the addresses the ELF states (SVMAs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub file_offset: u64,
    pub file_size: u64,
    pub svma: u64,
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

pub struct ModuleFile {
    /// The path as the process mapped it (`/usr/lib/.../libc.so.6`, `[vdso]`).
    pub path: String,
    /// The file's contents, when it could be opened.
    pub data: Option<Arc<Mmap>>,
    pub build_id: Option<Vec<u8>>,
    pub segments: Vec<LoadSegment>,
    pub unwind: UnwindSections,
    /// Why the file could not be read, for the summary.
    pub error: Option<String>,
}

impl ModuleFile {
    /// The short name used for unnamed addresses: `libfoo.so`.
    pub fn short_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// Convert a file offset to the address the ELF states for it.
    pub fn offset_to_svma(&self, offset: u64) -> u64 {
        self.segments
            .iter()
            .find(|s| offset >= s.file_offset && offset < s.file_offset + s.file_size.max(1))
            .map(|s| offset - s.file_offset + s.svma)
            .unwrap_or(offset)
    }

    fn empty(path: String, error: Option<String>) -> ModuleFile {
        ModuleFile {
            path,
            data: None,
            build_id: None,
            segments: Vec::new(),
            unwind: UnwindSections::default(),
            error,
        }
    }

    /// Parse an opened file; anything unparsable leaves a module that still names itself.
    pub fn from_map(path: String, map: Arc<Mmap>) -> ModuleFile {
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
                LoadSegment {
                    file_offset: off,
                    file_size: size,
                    svma: s.address(),
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
                .map(|s| s.address()..s.address() + s.size())
        };
        let unwind = UnwindSections {
            text_svma: range_of(".text"),
            text: bytes_of(".text"),
            got_svma: range_of(".got"),
            eh_frame_svma: range_of(".eh_frame"),
            eh_frame: bytes_of(".eh_frame"),
            eh_frame_hdr_svma: range_of(".eh_frame_hdr"),
            eh_frame_hdr: bytes_of(".eh_frame_hdr"),
            debug_frame: bytes_of(".debug_frame"),
        };
        ModuleFile {
            path,
            data: Some(map.clone()),
            build_id,
            segments,
            unwind,
            error: None,
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

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// A pseudo-module for a mapping that has no file (`[vdso]`, `[anon]`, ...).
    pub fn pseudo(&mut self, name: &str) -> ModuleId {
        let key = ModuleKey {
            path: name.to_string(),
            dev_ino: None,
        };
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        self.insert(key, ModuleFile::empty(name.to_string(), None))
    }

    fn insert(&mut self, key: ModuleKey, m: ModuleFile) -> ModuleId {
        let id = ModuleId(self.modules.len() as u32);
        self.modules.push(m);
        self.by_key.insert(key, id);
        id
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
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let module = match open_mapped_file(path, dev_ino, pid, start, end) {
            Ok(map) => ModuleFile::from_map(path.to_string(), Arc::new(map)),
            Err(e) => ModuleFile::empty(path.to_string(), Some(e.to_string())),
        };
        self.insert(key, module)
    }
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

/// Open the file a process mapped: by path when it is still the same file, else through
/// `/proc/PID/map_files` (which reaches deleted and replaced files while the process lives).
fn open_mapped_file(
    path: &str,
    dev_ino: Option<(u32, u32, u64)>,
    pid: u32,
    start: u64,
    end: u64,
) -> std::io::Result<Mmap> {
    let by_path = Path::new(path.trim_end_matches(" (deleted)"));
    let map_file = PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}"));
    let mut candidates: Vec<&Path> = Vec::new();
    match std::fs::metadata(by_path) {
        Ok(m) if same_file(&m, dev_ino) => candidates.extend([by_path, map_file.as_path()]),
        _ => candidates.extend([map_file.as_path(), by_path]),
    }
    let mut last_err = None;
    for p in candidates {
        match File::open(p) {
            Ok(f) => {
                // SAFETY: the file is mapped read-only; if another process truncates it we
                // could fault, which is the same risk every profiler and debugger takes.
                return unsafe { Mmap::map(&f) };
            }
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
            },
            LoadSegment {
                file_offset: 0x1000,
                file_size: 0x2000,
                svma: 0x401000,
            },
        ];
        assert_eq!(m.offset_to_svma(0x1234), 0x401234);
        assert_eq!(m.offset_to_svma(0x10), 0x10);
        assert_eq!(m.offset_to_svma(0x9000), 0x9000);
    }
}
