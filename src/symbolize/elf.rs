//! Names for addresses in one ELF file: DWARF (functions, inlined frames, lines) through
//! addr2line, the symbol tables through `object` where DWARF has nothing.

use std::borrow::Cow;

use addr2line::gimli;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::demangle::demangle;

type Slice<'a> = gimli::EndianSlice<'a, gimli::RunTimeEndian>;

/// One name found for an address, outermost caller first when inlining is involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundName {
    pub name: String,
    /// This frame was inlined into the one before it.
    pub inlined: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
}

struct Sym<'a> {
    address: u64,
    size: u64,
    /// Lossy: a name with invalid UTF-8 still names its function.
    name: Cow<'a, str>,
}

/// Symbol-table lookup: the closest symbol at or below an address, within its size.
pub struct SymbolTable<'a> {
    syms: Vec<Sym<'a>>,
}

impl<'a> SymbolTable<'a> {
    pub fn new(file: &object::File<'a>) -> SymbolTable<'a> {
        let collect = |it: object::SymbolIterator<'a, '_>| {
            it.filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown))
                .filter(|s| s.is_definition() && s.address() != 0)
                .filter_map(|s| {
                    Some(Sym {
                        address: s.address(),
                        size: s.size(),
                        name: String::from_utf8_lossy(s.name_bytes().ok()?),
                    })
                })
                .filter(|s| !s.name.is_empty())
                .collect::<Vec<_>>()
        };
        let mut syms = collect(file.symbols());
        if syms.is_empty() {
            syms = collect(file.dynamic_symbols());
        }
        // Prefer sized, global-looking entries when several share an address.
        syms.sort_by(|a, b| a.address.cmp(&b.address).then(b.size.cmp(&a.size)));
        syms.dedup_by_key(|s| s.address);
        SymbolTable { syms }
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.address <= addr);
        let s = self.syms.get(i.checked_sub(1)?)?;
        if s.size != 0 && addr >= s.address.saturating_add(s.size) {
            return None;
        }
        Some(&s.name)
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}

/// Load the DWARF sections of `file` (decompressing where needed).
pub fn load_dwarf<'a>(file: &object::File<'a>) -> gimli::DwarfSections<Cow<'a, [u8]>> {
    let load = |id: gimli::SectionId| -> Result<Cow<'a, [u8]>, gimli::Error> {
        Ok(file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    gimli::DwarfSections::load(load).expect("loader never fails")
}

/// Looks up addresses of one ELF file.
pub struct ElfSymbolizer<'a> {
    ctx: Option<addr2line::Context<Slice<'a>>>,
    /// Symbol tables, best first: the debug file's, the module's own, MiniDebugInfo's.
    symbols: Vec<SymbolTable<'a>>,
    pub inline: bool,
}

impl<'a> ElfSymbolizer<'a> {
    pub fn new(
        file: &object::File<'a>,
        dwarf: &'a gimli::DwarfSections<Cow<'a, [u8]>>,
        inline: bool,
    ) -> ElfSymbolizer<'a> {
        let endian = if file.is_little_endian() {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        };
        let has_info = file
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0);
        let ctx = has_info
            .then(|| {
                let borrowed = dwarf.borrow(|s| gimli::EndianSlice::new(s, endian));
                addr2line::Context::from_dwarf(borrowed).ok()
            })
            .flatten();
        ElfSymbolizer {
            ctx,
            symbols: vec![SymbolTable::new(file)],
            inline,
        }
    }

    /// Also consult `table` when DWARF and the tables before it know nothing.
    pub fn add_symbols(&mut self, table: SymbolTable<'a>) {
        self.symbols.push(table);
    }

    pub fn has_dwarf(&self) -> bool {
        self.ctx.is_some()
    }

    /// Names for `svma`, outermost first; empty when nothing is known.
    pub fn lookup(&self, svma: u64) -> Vec<FoundName> {
        let mut out = Vec::new();
        if let Some(ctx) = &self.ctx {
            if let Ok(mut frames) = ctx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(f)) = frames.next() {
                    let Some(name) = f
                        .function
                        .as_ref()
                        .and_then(|n| n.raw_name().ok())
                        .map(|n| demangle(&n))
                    else {
                        continue;
                    };
                    out.push(FoundName {
                        name,
                        inlined: false,
                        file: f.location.as_ref().and_then(|l| l.file).map(str::to_string),
                        line: f.location.as_ref().and_then(|l| l.line),
                    });
                }
            }
        }
        // addr2line yields innermost first.
        out.reverse();
        // The outermost frame is a real function: its symbol carries the full path (DWARF
        // built with line tables only names `spin` where the symbol says `mycrate::spin`).
        if let Some(first) = out.first_mut() {
            if let Some(sym) = self.symbols.iter().find_map(|t| t.lookup(svma)) {
                let full = demangle(sym);
                if full.len() > first.name.len() && full.ends_with(first.name.as_str()) {
                    first.name = full;
                }
            }
        }
        if out.is_empty() {
            if let Some(name) = self.symbols.iter().find_map(|t| t.lookup(svma)) {
                out.push(FoundName {
                    name: demangle(name),
                    inlined: false,
                    file: None,
                    line: None,
                });
            }
        }
        for f in out.iter_mut().skip(1) {
            f.inlined = true;
        }
        if !self.inline && out.len() > 1 {
            out.truncate(1);
        }
        out
    }
}
