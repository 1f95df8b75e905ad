//! The walk over a stack with nothing but rows: what the in-kernel unwinder does at each
//! frame, here over any memory.

use super::{Row, RowKind, RBP_UNKNOWN};
use crate::model::UserRegs;

/// Why a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// At the outermost frame: the stack is whole.
    Root,
    /// At an address no table describes (no file, no row, a gap between functions).
    NoRow,
    /// At a row the walk cannot follow ([`RowKind::Unsupported`], or one that needs an `rbp`
    /// it does not know).
    Unsupported,
    /// A word it needed could not be read, or the stack went the wrong way.
    Unreadable,
    /// After `max` frames.
    Depth,
}

/// Walk the stack from `regs`: `row_at(ip)` gives the row for a code address in the
/// process (`None`: no table there), `read(addr)` a word of the stack. Pushes each frame's
/// address as a DWARF unwinder looks it up — the sample's `ip`, then each return address
/// minus one — at most `max` of them.
pub fn walk(
    regs: UserRegs,
    mut row_at: impl FnMut(u64) -> Option<Row>,
    mut read: impl FnMut(u64) -> Option<u64>,
    max: usize,
    out: &mut Vec<u64>,
) -> WalkEnd {
    let (mut ip, mut sp, mut bp) = (regs.ip, regs.sp, Some(regs.bp));
    let mut lookup = ip;
    out.push(lookup);
    loop {
        let Some(row) = row_at(lookup) else {
            return WalkEnd::NoRow;
        };
        let cfa = match row.kind {
            RowKind::Stop => return WalkEnd::NoRow,
            RowKind::Root => return WalkEnd::Root,
            RowKind::Unsupported => return WalkEnd::Unsupported,
            RowKind::CfaRsp => sp.wrapping_add_signed(row.cfa_offset.into()),
            RowKind::CfaRbp => match bp {
                Some(bp) => bp.wrapping_add_signed(row.cfa_offset.into()),
                None => return WalkEnd::Unsupported,
            },
            RowKind::Plt => {
                let past = u64::from(ip & 15 >= u64::from(row.plt_threshold));
                sp.wrapping_add_signed(row.cfa_offset.into()) + 8 * past
            }
        };
        // The caller's frame is above this one.
        if cfa <= sp {
            return WalkEnd::Unreadable;
        }
        let Some(ra) = read(cfa - 8) else {
            return WalkEnd::Unreadable;
        };
        let first = out.len() == 1;
        bp = match row.rbp_offset {
            0 => bp,
            RBP_UNKNOWN => None,
            off => {
                let slot = cfa.wrapping_add_signed(off.into());
                match read(slot) {
                    Some(v) => Some(v),
                    // In an epilogue the CFI may still name the slot `rbp` was popped from
                    // (below the stack pointer now): `rbp` holds the caller's value again.
                    None if first && slot < sp => bp,
                    None => return WalkEnd::Unreadable,
                }
            }
        };
        if ra == 0 {
            return WalkEnd::Root;
        }
        (ip, sp) = (ra, cfa);
        lookup = ra - 1;
        if out.len() >= max {
            return WalkEnd::Depth;
        }
        out.push(lookup);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: RowKind, cfa_offset: i32, rbp_offset: i16) -> Row {
        Row {
            pc: 0,
            cfa_offset,
            rbp_offset,
            kind,
            plt_threshold: 11,
        }
    }

    /// A stack at 0x1000 of three frames: a leaf that pushed nothing (CFA = rsp + 8), a
    /// function with an `rbp` frame, and the root.
    #[test]
    fn walks_rsp_and_rbp_frames_to_the_root() {
        let mut stack = std::collections::HashMap::new();
        // Leaf: return address at 0x1000.
        stack.insert(0x1000u64, 0x2005u64);
        // Middle (CFA = rbp + 16, rbp saved at CFA - 16): rbp = 0x1010.
        stack.insert(0x1010, 0xdead); // saved rbp of the root
        stack.insert(0x1018, 0x3009); // return address
        let rows = |ip: u64| match ip {
            0x1000..=0x1fff => Some(row(RowKind::CfaRsp, 8, 0)),
            0x2000..=0x2fff => Some(row(RowKind::CfaRbp, 16, -16)),
            0x3000..=0x3fff => Some(row(RowKind::Root, 0, 0)),
            _ => None,
        };
        let regs = UserRegs {
            ip: 0x1234,
            sp: 0x1000,
            bp: 0x1010,
        };
        let mut out = Vec::new();
        let end = walk(regs, rows, |a| stack.get(&a).copied(), 100, &mut out);
        assert_eq!(end, WalkEnd::Root);
        assert_eq!(out, [0x1234, 0x2004, 0x3008]);

        // Cut at two frames.
        out.clear();
        let end = walk(regs, rows, |a| stack.get(&a).copied(), 2, &mut out);
        assert_eq!((end, out.len()), (WalkEnd::Depth, 2));

        // A word missing: the walk ends there, without a made-up frame.
        out.clear();
        let end = walk(
            regs,
            rows,
            |a| (a != 0x1018).then(|| stack.get(&a).copied()).flatten(),
            100,
            &mut out,
        );
        assert_eq!(
            (end, &out[..]),
            (WalkEnd::Unreadable, &[0x1234, 0x2004][..])
        );
    }

    #[test]
    fn an_epilogue_that_popped_rbp_keeps_it() {
        // CFA = rsp + 8 and rbp "saved" at CFA - 40, below the stack pointer: popped.
        let rows = |ip: u64| {
            Some(row(
                if ip < 0x2000 {
                    RowKind::CfaRsp
                } else {
                    RowKind::Root
                },
                8,
                -40,
            ))
        };
        let regs = UserRegs {
            ip: 0x1000,
            sp: 0x1000,
            bp: 0x77,
        };
        let read = |a: u64| (a >= 0x1000).then_some(0x2001);
        let mut out = Vec::new();
        assert_eq!(walk(regs, rows, read, 9, &mut out), WalkEnd::Root);
        assert_eq!(out, [0x1000, 0x2000]);
    }

    #[test]
    fn a_plt_stub_pushes_eight_more_past_its_threshold() {
        let rows = |_| Some(row(RowKind::Plt, 8, 0));
        let read = |a: u64| Some(a);
        for (ip, cfa) in [(0x4010u64, 0x1008u64), (0x401b, 0x1010)] {
            let mut out = Vec::new();
            let regs = UserRegs {
                ip,
                sp: 0x1000,
                bp: 0,
            };
            // The "return address" read is its own address: CFA - 8.
            walk(regs, rows, read, 2, &mut out);
            assert_eq!(out[1], cfa - 8 - 1, "ip {ip:#x}");
        }
    }

    #[test]
    fn unknown_rows_and_unknown_rbp_end_the_walk() {
        let regs = UserRegs {
            ip: 0x10,
            sp: 0x1000,
            bp: 0,
        };
        let mut out = Vec::new();
        assert_eq!(
            walk(regs, |_| None, |_| Some(0), 9, &mut out),
            WalkEnd::NoRow
        );
        let stop = |_| Some(row(RowKind::Unsupported, 0, 0));
        assert_eq!(
            walk(regs, stop, |_| Some(0), 9, &mut out),
            WalkEnd::Unsupported
        );
        // rbp unknown after the first frame, then needed.
        let mut n = 0;
        let rows = |_| {
            n += 1;
            Some(if n == 1 {
                row(RowKind::CfaRsp, 8, RBP_UNKNOWN)
            } else {
                row(RowKind::CfaRbp, 16, 0)
            })
        };
        assert_eq!(
            walk(regs, rows, |_| Some(0x99), 9, &mut out),
            WalkEnd::Unsupported
        );
    }
}
