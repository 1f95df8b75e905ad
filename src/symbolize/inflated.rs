//! A debug file's compressed DWARF sections, inflated once and kept on disk by build ID:
//! naming a handful of libc addresses from libc6-dbg's compressed DWARF meant inflating
//! 10 MB every recording (about half of ember's CPU after a small C program exits, in a perf
//! profile of `ember record -- threads 1`); from the second recording on the inflated copy is
//! mapped instead.
//!
//! A cache file is `dwarf-BUILDID` in ember's cache directory: the magic, the number of
//! sections, then per section its name (length u8, bytes), offset and length (u64 each,
//! little-endian, from the start of the data), then the data. The build ID names the
//! contents, so a file found is the one wanted; one whose sizes do not add up is ignored.

use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

const MAGIC: &[u8] = b"EMBERDW1";

/// Inflated copies are kept only of debug info at least this large (smaller inflates in
/// under half a millisecond: the dynamic loader's 0.9 MB took 5 ms on a VM, and were
/// inflated on every run while this was 1 MiB).
pub const WORTH_KEEPING: usize = 64 << 10;

/// The cache directory's size, past which the oldest files are removed when one is added.
const KEPT_AT_MOST: u64 = 1 << 30;

/// Each section's name and where its bytes are.
pub type SectionRanges = Vec<(String, Range<usize>)>;

/// Inflated sections, in memory that may still be written (see [`Inflated::freeze`]).
pub struct Inflated {
    bytes: Bytes,
    /// Start of the data in `bytes`.
    data: usize,
    sections: SectionRanges,
    /// Read from a cache file rather than inflated now.
    pub from_cache: bool,
}

enum Bytes {
    Made(Vec<u8>),
    /// A private (copy-on-write) mapping of a cache file.
    Mapped(MmapMut),
}

impl Inflated {
    /// Nothing inflated yet.
    pub fn new() -> Inflated {
        Inflated::with_capacity(0)
    }

    /// Nothing inflated yet, room for `bytes`.
    pub fn with_capacity(bytes: usize) -> Inflated {
        Inflated {
            bytes: Bytes::Made(Vec::with_capacity(bytes)),
            data: 0,
            sections: Vec::new(),
            from_cache: false,
        }
    }

    /// Append section `name`'s inflated bytes, made by `fill` at the end of the buffer it is
    /// given (which it must only extend). Sections added after `.debug_info` must not be
    /// needed while it is patched: see [`Inflated::info_and_rest`].
    pub fn add(&mut self, name: &str, fill: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let Bytes::Made(buf) = &mut self.bytes else {
            return false;
        };
        let start = buf.len();
        if !fill(buf) {
            buf.truncate(start);
            return false;
        }
        self.sections.push((name.to_string(), start..buf.len()));
        true
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        section(self.all(), self.data, &self.sections, name)
    }

    /// The bytes of every section.
    pub fn len(&self) -> usize {
        self.sections.iter().map(|(_, r)| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    fn all(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Made(v) => v,
            Bytes::Mapped(m) => m,
        }
    }

    /// Section `name` to patch, and every section before it, to read meanwhile.
    pub fn info_and_rest(&mut self, name: &str) -> Option<(&mut [u8], InflatedView<'_>)> {
        let (_, r) = self.sections.iter().find(|(n, _)| n == name)?.clone();
        let data = self.data;
        let all: &mut [u8] = match &mut self.bytes {
            Bytes::Made(v) => v,
            Bytes::Mapped(m) => m,
        };
        let (head, tail) = all.split_at_mut(data + r.start);
        let view = InflatedView {
            head,
            data,
            sections: &self.sections,
        };
        Some((&mut tail[..r.len()], view))
    }

    /// The bytes for good, and where each section is in them.
    pub fn freeze(self) -> (crate::modules::ModuleData, SectionRanges) {
        let data = self.data;
        let sections = self
            .sections
            .into_iter()
            .map(|(n, r)| (n, data + r.start..data + r.end))
            .collect();
        let bytes = match self.bytes {
            Bytes::Made(v) => crate::modules::ModuleData::Owned(v),
            Bytes::Mapped(m) => match m.make_read_only() {
                Ok(m) => crate::modules::ModuleData::Mapped(m),
                Err(_) => unreachable!("a private mapping can always be made read-only"),
            },
        };
        (bytes, sections)
    }
}

impl Default for Inflated {
    fn default() -> Self {
        Inflated::new()
    }
}

/// The sections before the one being patched.
pub struct InflatedView<'a> {
    head: &'a [u8],
    data: usize,
    sections: &'a [(String, Range<usize>)],
}

impl InflatedView<'_> {
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        section(self.head, self.data, self.sections, name)
    }
}

/// Section `name` of `sections` in `bytes`, whose data starts at `data`.
fn section<'a>(
    bytes: &'a [u8],
    data: usize,
    sections: &[(String, Range<usize>)],
    name: &str,
) -> Option<&'a [u8]> {
    let (_, r) = sections.iter().find(|(n, _)| n == name)?;
    bytes.get(data + r.start..data + r.end)
}

/// ember's cache directory, where inflated DWARF (and this boot's kernel symbols) are kept:
/// `$XDG_CACHE_HOME/ember`, else `~/.cache/ember`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let dir = match var("XDG_CACHE_HOME") {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(var("HOME")?).join(".cache"),
    };
    Some(dir.join("ember"))
}

fn path(dir: &Path, build_id: &[u8]) -> PathBuf {
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("dwarf-{hex}"))
}

/// The sections kept for `build_id` in `dir`, if a whole file of them is there.
pub fn load(dir: &Path, build_id: &[u8]) -> Option<Inflated> {
    let file = std::fs::File::open(path(dir, build_id)).ok()?;
    // SAFETY: cache files are only ever created whole (written, then renamed into place) and
    // never changed after; a private mapping keeps what we patch to ourselves.
    let map = unsafe { MmapOptions::new().map_copy(&file) }.ok()?;
    let (data, sections) = parse_header(&map)?;
    Some(Inflated {
        bytes: Bytes::Mapped(map),
        data,
        sections,
        from_cache: true,
    })
}

/// The data's start and the sections, checked against the file's length.
fn parse_header(file: &[u8]) -> Option<(usize, SectionRanges)> {
    let rest = file.strip_prefix(MAGIC)?;
    let count = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
    let mut at = MAGIC.len() + 4;
    let mut sections = Vec::new();
    for _ in 0..count {
        let len = usize::from(*file.get(at)?);
        let name = std::str::from_utf8(file.get(at + 1..at + 1 + len)?).ok()?;
        at += 1 + len;
        let word = |i: usize| -> Option<usize> {
            let b = file.get(at + 8 * i..at + 8 * i + 8)?;
            usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok()
        };
        let (start, size) = (word(0)?, word(1)?);
        at += 16;
        sections.push((name.to_string(), start..start.checked_add(size)?));
    }
    let total: usize = sections.iter().map(|(_, r)| r.len()).sum();
    let contiguous = sections
        .iter()
        .try_fold(0, |next, (_, r)| (r.start == next).then_some(r.end));
    (contiguous == Some(total) && file.len() == at + total).then_some((at, sections))
}

/// Keep `inflated` (made by [`Inflated::add`], not yet patched) for `build_id` in `dir`,
/// written whole under another name first; then, past [`KEPT_AT_MOST`], remove the oldest
/// files. Failing to write only means inflating again next time.
pub fn store(dir: &Path, build_id: &[u8], inflated: &Inflated) {
    let Bytes::Made(bytes) = &inflated.bytes else {
        return;
    };
    let write = || -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut out = tempfile::Builder::new().prefix(".dwarf").tempfile_in(dir)?;
        let mut header = MAGIC.to_vec();
        header.extend((inflated.sections.len() as u32).to_le_bytes());
        for (name, r) in &inflated.sections {
            header.push(name.len().min(255) as u8);
            header.extend(&name.as_bytes()[..name.len().min(255)]);
            header.extend((r.start as u64).to_le_bytes());
            header.extend((r.len() as u64).to_le_bytes());
        }
        out.write_all(&header)?;
        out.write_all(&bytes[inflated.data..])?;
        out.persist(path(dir, build_id)).map_err(|e| e.error)?;
        Ok(())
    };
    if write().is_ok() {
        trim(dir, KEPT_AT_MOST);
    }
}

/// Remove the oldest `dwarf-*` files of `dir` until the rest take at most `limit` bytes.
fn trim(dir: &Path, limit: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("dwarf-"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    files.sort();
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(sections: &[(&str, &[u8])]) -> Inflated {
        let mut inflated = Inflated::new();
        for (name, bytes) in sections {
            assert!(inflated.add(name, |buf| {
                buf.extend_from_slice(bytes);
                true
            }));
        }
        inflated
    }

    #[test]
    fn sections_kept_are_found_again_whole() {
        let dir = tempfile::tempdir().unwrap();
        let inflated = filled(&[(".debug_abbrev", b"abc"), (".debug_info", b"0123456789")]);
        assert!(load(dir.path(), b"\x12\x34").is_none());
        store(dir.path(), b"\x12\x34", &inflated);
        assert!(dir.path().join("dwarf-1234").exists());
        let mut again = load(dir.path(), b"\x12\x34").expect("kept");
        assert!(again.from_cache);
        assert_eq!(again.get(".debug_abbrev"), Some(&b"abc"[..]));
        assert_eq!(again.get(".debug_info"), Some(&b"0123456789"[..]));
        assert_eq!(again.get(".debug_line"), None);
        // Patching changes our copy, not the file.
        let (info, rest) = again.info_and_rest(".debug_info").unwrap();
        assert_eq!(rest.get(".debug_abbrev"), Some(&b"abc"[..]));
        info[0] = b'X';
        let (bytes, sections) = again.freeze();
        assert_eq!(&bytes[sections[1].1.clone()], b"X123456789");
        let fresh = load(dir.path(), b"\x12\x34").unwrap();
        assert_eq!(fresh.get(".debug_info"), Some(&b"0123456789"[..]));
    }

    #[test]
    fn a_cut_or_foreign_file_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        store(
            dir.path(),
            b"\xab",
            &filled(&[(".debug_info", b"0123456789")]),
        );
        let file = dir.path().join("dwarf-ab");
        let whole = std::fs::read(&file).unwrap();
        std::fs::write(&file, &whole[..whole.len() - 1]).unwrap();
        assert!(load(dir.path(), b"\xab").is_none());
        std::fs::write(&file, b"not a cache file").unwrap();
        assert!(load(dir.path(), b"\xab").is_none());
        std::fs::write(&file, []).unwrap();
        assert!(load(dir.path(), b"\xab").is_none());
    }

    #[test]
    fn the_oldest_files_go_first_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        for id in [b"\x01", b"\x02", b"\x03"] {
            store(dir.path(), id, &filled(&[(".debug_info", &[7u8; 1000])]));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        trim(dir.path(), 2500);
        assert!(!dir.path().join("dwarf-01").exists());
        assert!(dir.path().join("dwarf-02").exists());
        assert!(dir.path().join("dwarf-03").exists());
    }
}
