//! Packed tables kept on disk by build id, as the kernel keeps them ([`super::packed`]): a
//! file's `.eh_frame` is read and converted once, then loaded in milliseconds — before the
//! first samples of a program that starts with it, not half a second after.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::packed::PackedRow;

/// The first bytes of a cache file (the row format's version with it).
const MAGIC: &[u8; 8] = b"EMBROWS2";

fn path(dir: &Path, build_id: &[u8]) -> PathBuf {
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("rows-{hex}"))
}

/// The table kept for `build_id` in `dir`: its base and rows, if a whole file is there.
pub fn load(dir: &Path, build_id: &[u8]) -> Option<(u64, Vec<PackedRow>)> {
    let bytes = std::fs::read(path(dir, build_id)).ok()?;
    let rest = bytes.strip_prefix(MAGIC)?;
    let word = |i: usize| {
        Some(u64::from_le_bytes(
            rest.get(8 * i..8 * i + 8)?.try_into().ok()?,
        ))
    };
    let (base, count) = (word(0)?, word(1)? as usize);
    let body = rest.get(16..)?;
    if body.len() != count.checked_mul(8)? {
        return None;
    }
    let rows = body
        .chunks_exact(8)
        .map(|b| PackedRow {
            pc: u32::from_le_bytes(b[..4].try_into().expect("4 bytes")),
            rule: u32::from_le_bytes(b[4..].try_into().expect("4 bytes")),
        })
        .collect();
    Some((base, rows))
}

/// Keep the table of `build_id` in `dir` (written whole, then renamed into place).
pub fn store(dir: &Path, build_id: &[u8], base: u64, rows: &[PackedRow]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut out = tempfile::NamedTempFile::new_in(dir)?;
    let mut bytes = Vec::with_capacity(24 + 8 * rows.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&base.to_le_bytes());
    bytes.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        bytes.extend_from_slice(&r.pc.to_le_bytes());
        bytes.extend_from_slice(&r.rule.to_le_bytes());
    }
    out.write_all(&bytes)?;
    out.persist(path(dir, build_id)).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_table_loads_back_and_a_cut_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            PackedRow { pc: 0, rule: 9 },
            PackedRow { pc: 0x10, rule: 0 },
        ];
        store(dir.path(), b"\x12\x34", 0x40_1000, &rows).unwrap();
        assert_eq!(
            load(dir.path(), b"\x12\x34"),
            Some((0x40_1000, rows.to_vec()))
        );
        assert_eq!(load(dir.path(), b"\x99"), None);
        let file = path(dir.path(), b"\x12\x34");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(load(dir.path(), b"\x12\x34"), None);
    }
}
