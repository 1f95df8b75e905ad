//! Unwind tables for an unwinder that has nothing but a table and the stack: one row per
//! address range of a file, each saying how to find the caller's frame from the registers
//! an x86-64 walk keeps (the return address, `rsp`, `rbp`). They are built in user space
//! from the file's `.eh_frame` ([`build`]) for a walk that runs where no DWARF can be read —
//! the kernel at sample time — and [`walk`] is that walk, over any memory. [`check`] runs it
//! beside the DWARF unwinder on real samples and counts where the two differ.
//!
//! A row is 16 bytes and plain data (`repr(C)`), as a BPF map holds it.

pub mod build;
pub mod builder;
pub mod cache;
pub mod check;
pub mod packed;
pub mod walk;

pub use build::{build, TableError};

/// How to find the caller at the addresses of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RowKind {
    /// No unwind information here: the walk ends (to go on another way, or be cut).
    Stop = 0,
    /// CFA = `rsp` + `cfa_offset`.
    CfaRsp = 1,
    /// CFA = `rbp` + `cfa_offset`.
    CfaRbp = 2,
    /// A PLT stub: CFA = `rsp` + `cfa_offset`, 8 more where `rip & 15` is `plt_threshold`
    /// or more (the expression every x86-64 linker writes for `.plt`).
    Plt = 3,
    /// The outermost frame: its return address is undefined (`_start`, a thread's start).
    Root = 4,
    /// Unwind information this walk cannot follow (a signal frame, a rule given as a DWARF
    /// expression or in another register): the walk ends.
    Unsupported = 5,
}

/// `rbp_offset` where the caller's `rbp` is not known (its rule is one the walk cannot
/// follow): a frame that needs it ends the walk.
pub const RBP_UNKNOWN: i16 = i16::MIN;

/// One row: from `pc` up to the next row's, how to find the caller's frame. The return
/// address is always at CFA - 8 (x86-64); rows whose rule says otherwise are
/// [`RowKind::Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Row {
    /// The first address (as the file states it: an SVMA) the row is for.
    pub pc: u64,
    pub cfa_offset: i32,
    /// Where the caller's `rbp` was saved, from the CFA; 0: `rbp` is unchanged (still the
    /// caller's); [`RBP_UNKNOWN`].
    pub rbp_offset: i16,
    pub kind: RowKind,
    /// See [`RowKind::Plt`]; 0 otherwise.
    pub plt_threshold: u8,
}

const _: () = assert!(std::mem::size_of::<Row>() == 16);

impl Row {
    /// A row that ends the walk from `pc` on.
    pub fn stop(pc: u64) -> Row {
        Row {
            pc,
            cfa_offset: 0,
            rbp_offset: 0,
            kind: RowKind::Stop,
            plt_threshold: 0,
        }
    }

    /// The same rule as `other` (wherever each starts).
    fn same_rule(&self, other: &Row) -> bool {
        (
            self.cfa_offset,
            self.rbp_offset,
            self.kind,
            self.plt_threshold,
        ) == (
            other.cfa_offset,
            other.rbp_offset,
            other.kind,
            other.plt_threshold,
        )
    }
}

/// A file's rows, sorted by `pc`, each rule different from the one before; the last is a
/// [`RowKind::Stop`] at the end of the last range described.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    rows: Vec<Row>,
}

impl UnwindTable {
    /// The table of `rows` given in any order, as ranges `(row, end)`: gaps between ranges
    /// become [`RowKind::Stop`] rows, and a row with the same rule as the one before it is
    /// dropped (it goes on). Where ranges overlap, the later start wins.
    pub fn from_ranges(mut ranges: Vec<(Row, u64)>) -> UnwindTable {
        ranges.sort_by_key(|(r, _)| r.pc);
        let mut rows: Vec<Row> = Vec::with_capacity(ranges.len() + 1);
        let mut end_of_last = 0u64;
        for (row, end) in ranges {
            if end <= row.pc {
                continue;
            }
            if !rows.is_empty() && row.pc > end_of_last {
                rows.push(Row::stop(end_of_last));
            }
            match rows.last_mut() {
                Some(last) if last.pc == row.pc => *last = row,
                _ => rows.push(row),
            }
            end_of_last = end;
        }
        if !rows.is_empty() {
            rows.push(Row::stop(end_of_last));
        }
        rows.dedup_by(|next, kept| kept.same_rule(next));
        UnwindTable { rows }
    }

    /// The row for address `svma`; `None` outside every range described.
    pub fn lookup(&self, svma: u64) -> Option<&Row> {
        let i = self.rows.partition_point(|r| r.pc <= svma).checked_sub(1)?;
        Some(&self.rows[i])
    }

    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The memory the rows take (as a BPF map would hold them).
    pub fn bytes(&self) -> usize {
        self.rows.len() * std::mem::size_of::<Row>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsp(pc: u64, off: i32) -> Row {
        Row {
            pc,
            cfa_offset: off,
            rbp_offset: 0,
            kind: RowKind::CfaRsp,
            plt_threshold: 0,
        }
    }

    #[test]
    fn gaps_stop_the_walk_and_repeated_rules_merge() {
        let t = UnwindTable::from_ranges(vec![
            (rsp(0x1010, 16), 0x1020),
            (rsp(0x1000, 8), 0x1010),
            // Same rule as the one before it: merged.
            (rsp(0x1020, 16), 0x1030),
            // After a gap.
            (rsp(0x1040, 8), 0x1050),
        ]);
        let pcs: Vec<(u64, RowKind, i32)> = t
            .rows()
            .iter()
            .map(|r| (r.pc, r.kind, r.cfa_offset))
            .collect();
        assert_eq!(
            pcs,
            [
                (0x1000, RowKind::CfaRsp, 8),
                (0x1010, RowKind::CfaRsp, 16),
                (0x1030, RowKind::Stop, 0),
                (0x1040, RowKind::CfaRsp, 8),
                (0x1050, RowKind::Stop, 0),
            ]
        );
        assert_eq!(t.lookup(0xfff), None);
        assert_eq!(t.lookup(0x1000).unwrap().cfa_offset, 8);
        assert_eq!(t.lookup(0x102f).unwrap().cfa_offset, 16);
        assert_eq!(t.lookup(0x1035).unwrap().kind, RowKind::Stop);
        assert_eq!(t.lookup(0x1_0000).unwrap().kind, RowKind::Stop);
        assert_eq!(t.bytes(), 5 * 16);
    }
}
