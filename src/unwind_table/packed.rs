//! Rows in 8 bytes, as the kernel holds them: the address as a 32-bit offset from the
//! table's first row, and the rule in 32 bits (kind, `rbp`'s slot and the CFA offset in
//! units of 8 bytes). Half the memory of [`Row`]; a rule that does not fit is
//! [`RowKind::Unsupported`] (the walk hands over there), and a file whose code spans more
//! than 4 GiB has no packed table.

use super::{Row, RowKind, UnwindTable, RBP_UNKNOWN};

/// One packed row (`struct row` of `unwind.bpf.c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct PackedRow {
    /// The row's first address, less the table's base.
    pub pc: u32,
    /// Bits 0-2: the kind; 3-10: the `rbp` slot (from the CFA, in units of 8, signed;
    /// -128: unknown) or, for a PLT stub, the threshold; 11-31: the CFA offset in units of 8,
    /// signed.
    pub rule: u32,
}

const RBP_UNKNOWN_PACKED: i32 = -128;

/// A table's packed rows and the address they count from; `None` where the file's rows
/// span more than 4 GiB.
pub fn pack(table: &UnwindTable) -> Option<(u64, Vec<PackedRow>)> {
    let base = table.rows().first()?.pc;
    let rows = table
        .rows()
        .iter()
        .map(|r| {
            let pc = u32::try_from(r.pc - base).ok()?;
            Some(PackedRow {
                pc,
                rule: pack_rule(r),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some((base, rows))
}

fn pack_rule(r: &Row) -> u32 {
    let unsupported = RowKind::Unsupported as u32;
    let slot = match (r.kind, r.rbp_offset) {
        (RowKind::Plt, _) => i32::from(r.plt_threshold),
        (_, RBP_UNKNOWN) => RBP_UNKNOWN_PACKED,
        (_, off) if off % 8 == 0 && (-127 * 8..=127 * 8).contains(&off) => i32::from(off / 8),
        _ => return unsupported,
    };
    let cfa = r.cfa_offset;
    if cfa % 8 != 0 || !(-(1 << 20)..(1 << 20)).contains(&(cfa / 8)) {
        return unsupported;
    }
    (r.kind as u32) | (((slot as u32) & 0xff) << 3) | (((cfa / 8) as u32) << 11)
}

/// The row a packed one stands for (what the kernel's walk reads from it), at `base`.
pub fn unpack(p: PackedRow, base: u64) -> Row {
    let kind = match p.rule & 7 {
        0 => RowKind::Stop,
        1 => RowKind::CfaRsp,
        2 => RowKind::CfaRbp,
        3 => RowKind::Plt,
        4 => RowKind::Root,
        _ => RowKind::Unsupported,
    };
    let slot = i32::from(((p.rule >> 3) & 0xff) as u8 as i8);
    let cfa = (p.rule as i32) >> 11;
    let (rbp_offset, plt_threshold) = match (kind, slot) {
        (RowKind::Plt, t) => (0, t as u8),
        (_, RBP_UNKNOWN_PACKED) => (RBP_UNKNOWN, 0),
        (_, s) => ((s * 8) as i16, 0),
    };
    Row {
        pc: base + u64::from(p.pc),
        cfa_offset: cfa * 8,
        rbp_offset,
        kind,
        plt_threshold,
    }
}

/// Tables of fewer rows than this have no index: a search of them takes a few steps anyway.
const MIN_INDEXED: usize = 64;

/// An index of a table's packed rows by address, placed before them so that the program
/// finds a row in a few steps among neighbours instead of a search of the whole table (two
/// dozen steps on rustc's, each a miss in the cache): the addresses are cut into buckets of
/// `1 << shift` bytes, and entry `b` (its `pc`) is the position of the row that holds bucket
/// `b`'s first address, so an address in bucket `b` has its row among entries `b` and `b + 1`'s
/// rows. About one entry per eight rows.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RowIndex {
    pub shift: u32,
    pub entries: Vec<PackedRow>,
}

impl RowIndex {
    /// The bucket size (as a shift) and the number of buckets of `rows`' index; (0, 0) where
    /// they have none.
    pub fn size(rows: &[PackedRow]) -> (u32, usize) {
        let Some(last) = rows.last().filter(|_| rows.len() >= MIN_INDEXED) else {
            return (0, 0);
        };
        let most = rows.len() / 8;
        let span = u64::from(last.pc);
        let shift = (4..32)
            .find(|&s| (span >> s) as usize + 2 <= most)
            .unwrap_or(32);
        (shift, (span >> shift) as usize + 2)
    }

    /// The index of `rows` (sorted by address, the first at 0, as [`pack`] makes them).
    pub fn of(rows: &[PackedRow]) -> RowIndex {
        let (shift, buckets) = Self::size(rows);
        let mut entries = Vec::with_capacity(buckets);
        let mut row = 0;
        for b in 0..buckets as u64 {
            let start = b << shift;
            while row + 1 < rows.len() && u64::from(rows[row + 1].pc) <= start {
                row += 1;
            }
            entries.push(PackedRow {
                pc: row as u32,
                rule: 0,
            });
        }
        RowIndex { shift, entries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind, cfa_offset: i32, rbp_offset: i16, plt_threshold: u8) -> Row {
        Row {
            pc: 0x40_1000,
            cfa_offset,
            rbp_offset,
            kind,
            plt_threshold,
        }
    }

    #[test]
    fn rules_that_fit_come_back_the_same() {
        for r in [
            row(RowKind::CfaRsp, 8, 0, 0),
            row(RowKind::CfaRsp, 600 * 1024, -16, 0),
            row(RowKind::CfaRbp, 16, -16, 0),
            row(RowKind::CfaRsp, 48, -40, 0),
            row(RowKind::CfaRsp, 48, RBP_UNKNOWN, 0),
            row(RowKind::Plt, 8, 0, 11),
            row(RowKind::Root, 0, 0, 0),
            row(RowKind::Stop, 0, 0, 0),
            row(RowKind::CfaRsp, -8, 0, 0),
        ] {
            let p = PackedRow {
                pc: 0x10,
                rule: pack_rule(&r),
            };
            let back = unpack(p, r.pc - 0x10);
            assert_eq!(back, r);
        }
    }

    #[test]
    fn rules_that_do_not_fit_end_the_walk() {
        for r in [
            row(RowKind::CfaRsp, 12, 0, 0),
            row(RowKind::CfaRsp, 16 << 20, 0, 0),
            row(RowKind::CfaRsp, 16, -12, 0),
            row(RowKind::CfaRsp, 16, -2048, 0),
        ] {
            assert_eq!(pack_rule(&r) & 7, RowKind::Unsupported as u32, "{r:?}");
        }
    }

    #[test]
    fn a_table_packs_from_its_first_address() {
        let t = UnwindTable::from_ranges(vec![(row(RowKind::CfaRsp, 8, 0, 0), 0x40_1010)]);
        let (base, rows) = pack(&t).unwrap();
        assert_eq!(base, 0x40_1000);
        assert_eq!(rows.iter().map(|r| r.pc).collect::<Vec<_>>(), [0, 0x10]);
    }

    /// The rows among which the row of `pc` lies, as the program narrows its search
    /// (`narrow` in unwind.bpf.c): all of them where `pc` lies past the buckets.
    fn candidates(index: &RowIndex, pc: u32, rows: usize) -> std::ops::Range<usize> {
        let b = (u64::from(pc) >> index.shift) as usize;
        if b + 1 >= index.entries.len() {
            return 0..rows;
        }
        index.entries[b].pc as usize..index.entries[b + 1].pc as usize + 1
    }

    #[test]
    fn the_index_narrows_every_search_to_the_row_that_holds_the_address() {
        // 5,000 rows of uneven lengths (1 to 23 bytes), as a file's are.
        let mut rows = Vec::new();
        let mut pc = 0u32;
        for i in 0..5_000u32 {
            rows.push(PackedRow { pc, rule: i });
            pc += 1 + (i * 7919) % 23;
        }
        let index = RowIndex::of(&rows);
        assert!(
            index.entries.len() <= rows.len() / 8,
            "{}",
            index.entries.len()
        );
        assert_eq!(RowIndex::size(&rows), (index.shift, index.entries.len()));
        for at in 0..pc + 100 {
            let holder = rows.partition_point(|r| r.pc <= at) - 1;
            let range = candidates(&index, at, rows.len());
            assert!(range.contains(&holder), "{at}: {holder} not in {range:?}");
            let last = rows.last().unwrap().pc;
            assert!(at > last || range.len() <= 64, "{at}: {range:?}");
        }
    }

    #[test]
    fn small_tables_have_no_index() {
        let rows = vec![PackedRow::default(); MIN_INDEXED - 1];
        assert_eq!(RowIndex::of(&rows), RowIndex::default());
        assert_eq!(candidates(&RowIndex::default(), 5, 10), 0..10);
    }
}
