//! Finding separate debug information for a module: build-id trees, `.gnu_debuglink`, and
//! MiniDebugInfo (`.gnu_debugdata`).

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use object::{Object, ObjectSection};

/// Where to look, in order: the directories given with `--debug-dir`, then the system's.
#[derive(Clone, Debug)]
pub struct DebugDirs {
    pub dirs: Vec<PathBuf>,
}

impl DebugDirs {
    /// The user's directories first, then `/usr/lib/debug`.
    pub fn new(user: &[PathBuf]) -> DebugDirs {
        let mut dirs = user.to_vec();
        dirs.push(PathBuf::from("/usr/lib/debug"));
        DebugDirs { dirs }
    }
}

impl Default for DebugDirs {
    fn default() -> Self {
        DebugDirs::new(&[])
    }
}

/// `path` mapped read-only.
pub fn map(path: &Path) -> Option<Mmap> {
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: read-only mapping of a debug file; see modules.rs on the shared risk.
    unsafe { Mmap::map(&f) }.ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `DIR/.build-id/ab/cdef....debug` for every debug directory.
pub fn build_id_paths(build_id: &[u8], dirs: &DebugDirs) -> Vec<PathBuf> {
    if build_id.len() < 2 {
        return Vec::new();
    }
    let h = hex(build_id);
    dirs.dirs
        .iter()
        .map(|d| {
            d.join(".build-id")
                .join(&h[..2])
                .join(format!("{}.debug", &h[2..]))
        })
        .collect()
}

/// The places GDB looks for a `.gnu_debuglink` name, for a module at `module_path`.
pub fn debuglink_paths(module_path: &Path, link: &Path, dirs: &DebugDirs) -> Vec<PathBuf> {
    let dir = module_path.parent().unwrap_or(Path::new("/"));
    let mut v = vec![dir.join(link), dir.join(".debug").join(link)];
    let rel = dir.strip_prefix("/").unwrap_or(dir);
    for d in &dirs.dirs {
        v.push(d.join(rel).join(link));
        v.push(d.join(link));
    }
    v
}

/// A separate debug file for `file` (mapped from `module_path`), when one exists: by build
/// id first (and only if its build id matches), then by debuglink (only if its CRC matches).
pub fn find_debug_file(
    module_path: &str,
    file: &object::File<'_>,
    dirs: &DebugDirs,
) -> Option<(PathBuf, Mmap)> {
    if let Some(id) = file.build_id().ok().flatten() {
        for p in build_id_paths(id, dirs) {
            if let Some(m) = map(&p) {
                let same = object::File::parse(&*m)
                    .ok()
                    .and_then(|f| f.build_id().ok().flatten().map(|b| b == id))
                    .unwrap_or(false);
                if same {
                    return Some((p, m));
                }
            }
        }
    }
    if let Some((name, crc)) = file.gnu_debuglink().ok().flatten() {
        let name = Path::new(std::str::from_utf8(name).ok()?);
        let module_path = Path::new(module_path.trim_end_matches(" (deleted)"));
        for p in debuglink_paths(module_path, name, dirs) {
            if p == module_path {
                continue;
            }
            if let Some(m) = map(&p) {
                if crc32fast::hash(&m) == crc {
                    return Some((p, m));
                }
            }
        }
    }
    None
}

/// The symbol table hidden in `.gnu_debugdata` (MiniDebugInfo): an xz-compressed ELF file.
pub fn mini_debug_info(file: &object::File<'_>) -> Option<Vec<u8>> {
    let sec = file.section_by_name(".gnu_debugdata")?;
    let data = sec.data().ok()?;
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut std::io::BufReader::new(data), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_layout() {
        let d = DebugDirs::new(&[PathBuf::from("/x")]);
        let p = build_id_paths(&[0xab, 0xcd, 0xef], &d);
        assert_eq!(p[0], PathBuf::from("/x/.build-id/ab/cdef.debug"));
        assert_eq!(
            p[1],
            PathBuf::from("/usr/lib/debug/.build-id/ab/cdef.debug")
        );
        assert!(build_id_paths(&[1], &d).is_empty());
    }

    #[test]
    fn debuglink_layout() {
        let d = DebugDirs::new(&[]);
        let p = debuglink_paths(Path::new("/usr/bin/prog"), Path::new("prog.debug"), &d);
        assert_eq!(
            p,
            vec![
                PathBuf::from("/usr/bin/prog.debug"),
                PathBuf::from("/usr/bin/.debug/prog.debug"),
                PathBuf::from("/usr/lib/debug/usr/bin/prog.debug"),
                PathBuf::from("/usr/lib/debug/prog.debug"),
            ]
        );
    }
}
