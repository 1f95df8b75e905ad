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
}
