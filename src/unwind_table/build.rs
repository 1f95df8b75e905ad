//! Building a file's [`UnwindTable`] from its `.eh_frame` (or, in a file without one, its
//! `.debug_frame`): every row of every FDE's CFI program, reduced to the rules an x86-64
//! walk with `rsp`, `rbp` and the return address can follow.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};

use super::{Row, RowKind, UnwindTable, RBP_UNKNOWN};
use crate::modules::UnwindSections;

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the file has neither .eh_frame nor .debug_frame")]
    NoEhFrame,
    #[error("its CFI cannot be read: {0}")]
    Dwarf(#[from] gimli::Error),
}

/// The table of a file from its unwind sections: `.eh_frame`, with `.text` and `.got` for
/// the pointer encodings that are relative to them, and `.debug_frame` (whose addresses are
/// absolute) for the functions `.eh_frame` does not describe — code built without unwind
/// tables (`-fno-asynchronous-unwind-tables -g`) has its CFI there, and the C runtime's
/// start-up code its few FDEs in `.eh_frame`.
pub fn build(sections: &UnwindSections) -> Result<UnwindTable, TableError> {
    let mut fdes = Fdes::default();
    if let (Some(bytes), Some(svma)) = (&sections.eh_frame, &sections.eh_frame_svma) {
        let mut bases = BaseAddresses::default().set_eh_frame(svma.start);
        if let Some(text) = &sections.text_svma {
            bases = bases.set_text(text.start);
        }
        if let Some(got) = &sections.got_svma {
            bases = bases.set_got(got.start);
        }
        fdes.add(&EhFrame::new(bytes, LittleEndian), &bases)?;
    }
    if let Some(bytes) = &sections.debug_frame {
        let mut debug_frame = DebugFrame::new(bytes, LittleEndian);
        debug_frame.set_address_size(8);
        fdes.covered.sort_unstable_by_key(|r| r.start);
        fdes.add(&debug_frame, &BaseAddresses::default())?;
    }
    if fdes.covered.is_empty() {
        return Err(TableError::NoEhFrame);
    }
    Ok(UnwindTable::from_ranges(fdes.ranges))
}

/// Rows as ranges, and the address ranges of the FDEs they came from.
#[derive(Default)]
struct Fdes {
    ranges: Vec<(Row, u64)>,
    covered: Vec<std::ops::Range<u64>>,
}

impl Fdes {
    /// The rows of every FDE of `section` whose addresses no FDE added before covers.
    fn add<'a, S>(&mut self, section: &S, bases: &BaseAddresses) -> Result<(), TableError>
    where
        S: UnwindSection<EndianSlice<'a, LittleEndian>>,
    {
        let before = self.covered.len();
        let mut ctx = UnwindContext::new();
        let mut entries = section.entries(bases);
        while let Some(entry) = entries.next()? {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            // An FDE that cannot be parsed is left out: its addresses stop the walk.
            let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
                continue;
            };
            let range = fde.initial_address()..fde.end_address();
            // (A function the linker dropped keeps its `.debug_frame` FDE, at address 0.)
            if range.start == 0 || self.overlaps_earlier(&range, before) {
                continue;
            }
            self.covered.push(range);
            let signal = fde.cie().is_signal_trampoline();
            let mut table = fde.rows(section, bases, &mut ctx)?;
            while let Some(row) = table.next_row()? {
                let mut r = convert(row, section);
                if signal {
                    r.kind = RowKind::Unsupported;
                }
                self.ranges.push((r, row.end_address()));
            }
        }
        Ok(())
    }

    /// Whether `range` overlaps one of the first `before` FDEs (sorted by start).
    fn overlaps_earlier(&self, range: &std::ops::Range<u64>, before: usize) -> bool {
        let earlier = &self.covered[..before];
        let i = earlier.partition_point(|r| r.start < range.end);
        i > 0 && earlier[i - 1].end > range.start
    }
}

/// One row of CFI as a [`Row`].
fn convert<R: gimli::Reader, S: UnwindSection<R>>(
    row: &gimli::UnwindTableRow<R::Offset>,
    section: &S,
) -> Row {
    let mut r = Row::stop(row.start_address());
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => {
            r.kind = RowKind::Root;
            return r;
        }
        Some(RegisterRule::Offset(-8)) => {}
        _ => return unsupported(r),
    }
    match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(*offset) else {
                return unsupported(r);
            };
            r.cfa_offset = offset;
            r.kind = match *register {
                X86_64::RSP => RowKind::CfaRsp,
                X86_64::RBP => RowKind::CfaRbp,
                _ => return unsupported(r),
            };
        }
        CfaRule::Expression(expr) => {
            let Some(threshold) = expr.get(section).ok().and_then(|e| plt_threshold(e.0)) else {
                return unsupported(r);
            };
            (r.kind, r.cfa_offset, r.plt_threshold) = (RowKind::Plt, 8, threshold);
        }
    }
    // No rule: the register keeps its value (callee-saved), as every unwinder takes it.
    r.rbp_offset = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(o)) => i16::try_from(o)
            .ok()
            .filter(|&o| o != 0 && o != RBP_UNKNOWN)
            .unwrap_or(RBP_UNKNOWN),
        _ => RBP_UNKNOWN,
    };
    r
}

fn unsupported(mut r: Row) -> Row {
    r.kind = RowKind::Unsupported;
    r
}

/// The threshold of the PLT's CFA expression, `rsp + 8 + ((rip & 15) >= T) << 3`:
/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litT; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`. Any other expression: `None`.
fn plt_threshold<R: gimli::Reader>(expr: R) -> Option<u8> {
    let bytes = expr.to_slice().ok()?;
    match *bytes {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22]
            if (0x30..=0x4f).contains(&lit) =>
        {
            Some(lit - 0x30)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ember's own executable: every function has CFI, and `main`'s callers are the C
    /// runtime's.
    #[test]
    fn ember_itself_has_rows_for_its_code() {
        let exe = std::env::current_exe().unwrap();
        let mut modules = crate::modules::ModuleTable::new();
        let id = modules.insert_bytes("ember", std::fs::read(&exe).unwrap());
        let module = modules.get(id);
        let table = build(&module.unwind).unwrap();
        assert!(table.rows().len() > 1000, "{} rows", table.rows().len());
        let here = ember_itself_has_rows_for_its_code as *const () as u64;
        let svma = module.offset_to_svma(here - module_bias(&exe));
        let row = table.lookup(svma).expect("a row for this function");
        assert!(
            matches!(row.kind, RowKind::CfaRsp | RowKind::CfaRbp),
            "{row:?}"
        );
        // Each rule is different from the one before it.
        assert!(table.rows().windows(2).all(|w| !w[0].same_rule(&w[1])));
        assert!(table.rows().windows(2).all(|w| w[0].pc < w[1].pc));
    }

    /// Where this process mapped `exe`'s code: the address minus the file offset.
    fn module_bias(exe: &std::path::Path) -> u64 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let exe = std::fs::canonicalize(exe).unwrap();
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 6 && f[1].contains('x') && std::path::Path::new(f[5]) == exe {
                let start = u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap();
                let off = u64::from_str_radix(f[2], 16).unwrap();
                return start - off;
            }
        }
        panic!("{} is not mapped executable", exe.display())
    }

    #[test]
    fn the_plt_expression_is_recognized() {
        let plt = [
            0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
        ];
        assert_eq!(
            plt_threshold(gimli::EndianSlice::new(&plt, LittleEndian)),
            Some(11)
        );
        let other = [0x77, 0x08];
        assert_eq!(
            plt_threshold(gimli::EndianSlice::new(&other, LittleEndian)),
            None
        );
    }
}
