//! The tables checked against the DWARF unwinder on real samples: each sample's stack is
//! walked again with nothing but the rows of the files it runs through ([`super::walk`]),
//! over the same memory, and the two lists of frames are compared.

use std::collections::HashMap;

use super::walk::{walk, WalkEnd};
use super::{Row, UnwindTable};
use crate::model::{
    ModuleId, RawFrame, SampleEvent, KERNEL_WALK_NO_ROW, KERNEL_WALK_ROOT, KERNEL_WALK_UNREADABLE,
    KERNEL_WALK_UNSUPPORTED,
};
use crate::modules::ModuleTable;
use crate::process::Process;
use crate::unwind::StackMemory;

/// The most frames a table walk takes (the DWARF walk's own bound).
const MAX_FRAMES: usize = 16384;

/// How the two walks compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckStats {
    /// Samples with registers and a stack, walked both ways.
    pub compared: u64,
    /// The same frames, each walk to its end.
    pub same: u64,
    /// The same frames as far as the table walk went; it ended before the DWARF walk at an
    /// address it has no row for or cannot follow, where the in-kernel walk hands over.
    pub stopped_early: u64,
    /// Different frames: a wrong row, or a wrong walk.
    pub differed: u64,
    /// The first difference, both lists of frames, for `-v`.
    pub first_difference: Option<String>,
    /// Walks in the kernel that ended before the root, by how ([`WalkEnd`]: no row, a rule
    /// they cannot follow, unreadable, depth), and where the most frequent ended (module and
    /// offset: count).
    pub kernel_ends: [u64; 4],
    pub kernel_ended_at: HashMap<String, u64>,
    /// Files with a table, files without one (no `.eh_frame`), and the rows' bytes.
    pub files: usize,
    pub files_without: usize,
    pub bytes: usize,
}

/// Tables by module, built when a sample first runs through it, and what the comparison
/// found.
#[derive(Default)]
pub struct TableCheck {
    tables: HashMap<ModuleId, Option<UnwindTable>>,
    frames: Vec<u64>,
    pub stats: CheckStats,
}

impl TableCheck {
    pub fn new() -> TableCheck {
        TableCheck::default()
    }

    /// Walk `s` with the tables and compare with `dwarf`, the frames the DWARF unwinder
    /// found for it (kernel frames first, then user ones).
    pub fn compare(
        &mut self,
        process: Option<&Process>,
        modules: &ModuleTable,
        s: &SampleEvent,
        dwarf: &[RawFrame],
    ) {
        let (Some(process), Some(regs)) = (process, s.user_regs) else {
            return;
        };
        let mut memory = StackMemory::new(regs.sp, s.user_stack, s.stack_words);
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        let end = walk(
            regs,
            |ip| self.row_at(process, modules, ip),
            |addr| memory.read(addr, None).ok(),
            MAX_FRAMES,
            &mut frames,
        );
        self.count(end, &frames, &user_frames(dwarf));
        self.frames = frames;
    }

    /// Compare a walk made in the kernel (`s.walked`, its copy taken at the sample's stack
    /// pointer) with `dwarf`, the DWARF unwinder's walk of that copy. Where the copy ran out
    /// first (`dwarf_cut`), the walks are the same if the kernel's goes on from the DWARF one.
    pub fn compare_kernel_walk(
        &mut self,
        s: &SampleEvent,
        dwarf: &[RawFrame],
        place: impl Fn(u64) -> String,
    ) {
        let Some(walk) = s.walked.filter(|w| w.copy_at_sample) else {
            return;
        };
        let frames: Vec<u64> = walk
            .frames
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let end = match walk.end {
            KERNEL_WALK_ROOT => WalkEnd::Root,
            KERNEL_WALK_NO_ROW => WalkEnd::NoRow,
            KERNEL_WALK_UNSUPPORTED => WalkEnd::Unsupported,
            KERNEL_WALK_UNREADABLE => WalkEnd::Unreadable,
            _ => WalkEnd::Depth,
        };
        if let (Some(i), Some(&last)) = (walk.end.checked_sub(1), frames.last()) {
            self.stats.kernel_ends[(i as usize).min(3)] += 1;
            *self.stats.kernel_ended_at.entry(place(last)).or_default() += 1;
        }
        let mut user = user_frames(dwarf);
        let cut = dwarf.last() == Some(&RawFrame::Truncated);
        if cut && frames.starts_with(&user) {
            user = frames.clone();
        }
        self.count(end, &frames, &user);
    }

    /// After [`TableCheck::compare_kernel_walk`]: the stack the profile counts is the
    /// kernel's walk where it reached the root (the DWARF walk of the check's copy is cut
    /// where the copy ends).
    pub fn keep_kernel_walk(s: &SampleEvent, raw: &mut Vec<RawFrame>) {
        let Some(walk) = s
            .walked
            .filter(|w| w.copy_at_sample && w.end == KERNEL_WALK_ROOT)
        else {
            return;
        };
        raw.retain(|f| matches!(f, RawFrame::Kernel(_)));
        raw.extend(
            walk.frames
                .chunks_exact(8)
                .map(|b| RawFrame::User(u64::from_le_bytes(b.try_into().expect("8 bytes")))),
        );
    }

    fn count(&mut self, end: WalkEnd, table: &[u64], dwarf: &[u64]) {
        let st = &mut self.stats;
        st.compared += 1;
        let handed_over = matches!(end, WalkEnd::NoRow | WalkEnd::Unsupported);
        if table == dwarf {
            st.same += 1;
        } else if handed_over && dwarf.starts_with(table) {
            st.stopped_early += 1;
        } else {
            st.differed += 1;
            st.first_difference.get_or_insert_with(|| {
                let hex = |v: &[u64]| {
                    v.iter()
                        .map(|a| format!("{a:#x}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                format!("tables ({end:?}): {}; DWARF: {}", hex(table), hex(dwarf))
            });
        }
    }

    /// The row for code address `ip` of `process`, its table built on first use.
    fn row_at(&mut self, process: &Process, modules: &ModuleTable, ip: u64) -> Option<Row> {
        let mapping = process.mapping(ip)?;
        let file = modules.get(mapping.module);
        let table = self.tables.entry(mapping.module).or_insert_with(|| {
            let built = super::build(&file.unwind).ok();
            match &built {
                Some(t) => {
                    self.stats.files += 1;
                    self.stats.bytes += t.bytes();
                }
                None => self.stats.files_without += 1,
            }
            built
        });
        let bias = file.load_bias(mapping.start, mapping.pgoff, mapping.end - mapping.start);
        table.as_ref()?.lookup(ip.wrapping_sub(bias)).copied()
    }
}

/// The user frames of an unwind's frames.
fn user_frames(frames: &[RawFrame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            RawFrame::User(a) => Some(*a),
            _ => None,
        })
        .collect()
}

impl std::fmt::Display for CheckStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unwind tables: {} samples walked with the rows alone and with DWARF: {} the same, \
             {} the same until the rows ended (no row or a rule they cannot follow), {} \
             different; {} files, {:.1} KiB of rows ({} files without .eh_frame)",
            self.compared,
            self.same,
            self.stopped_early,
            self.differed,
            self.files,
            self.bytes as f64 / 1024.0,
            self.files_without
        )?;
        if self.kernel_ends.iter().any(|&n| n > 0) {
            let [no_row, unsupported, unreadable, depth] = self.kernel_ends;
            let mut at: Vec<(&String, &u64)> = self.kernel_ended_at.iter().collect();
            at.sort_by(|a, b| b.1.cmp(a.1));
            let at: Vec<String> = at
                .iter()
                .take(5)
                .map(|(p, n)| format!("{p}: {n}"))
                .collect();
            write!(
                f,
                "\nember: walks in the kernel that ended early: {no_row} at no row, {unsupported} \
                 at a rule they cannot follow, {unreadable} unreadable, {depth} at the depth \
                 limit; most at {}",
                at.join(", ")
            )?;
        }
        if let Some(d) = &self.first_difference {
            write!(f, "\nember: first difference: {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_that_hands_over_early_is_not_a_difference() {
        let mut c = TableCheck::new();
        c.count(WalkEnd::Root, &[1, 2, 3], &[1, 2, 3]);
        c.count(WalkEnd::NoRow, &[1, 2], &[1, 2, 3]);
        c.count(WalkEnd::Unreadable, &[1, 2], &[1, 2, 3]);
        c.count(WalkEnd::Root, &[1, 5], &[1, 2, 3]);
        let s = &c.stats;
        assert_eq!(
            (s.compared, s.same, s.stopped_early, s.differed),
            (4, 1, 1, 2)
        );
        assert!(s
            .first_difference
            .as_deref()
            .unwrap()
            .contains("0x1 0x2; DWARF"));
    }
}
