//! Names for addresses in one ELF file: DWARF (functions, inlined frames, lines) through
//! addr2line, the symbol tables through `object` where DWARF has nothing.

use std::sync::Arc;

use addr2line::gimli;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::demangle::demangle;
use crate::modules::{FileBytes, ModuleData};

/// DWARF read straight from the file's bytes (or a decompressed copy), owned: an
/// [`ElfSymbolizer`] can be kept for as long as names are wanted.
type Reader = gimli::EndianReader<gimli::RunTimeEndian, FileBytes>;

/// One name found for an address, outermost caller first when inlining is involved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundName {
    pub name: String,
    /// This frame was inlined into the one before it.
    pub inlined: bool,
    pub file: Option<String>,
    pub line: Option<u32>,
}

struct Sym {
    address: u64,
    size: u64,
    /// Where the name is in the file (names are UTF-8 there), or a lossy copy of a name that
    /// is not: it still names its function.
    name: SymName,
}

enum SymName {
    InFile(std::ops::Range<usize>),
    Copied(Box<str>),
}

/// Symbol-table lookup: the closest symbol at or below an address, within its size. Names
/// stay in the file's bytes, which the table holds.
pub struct SymbolTable {
    syms: Vec<Sym>,
    data: Arc<ModuleData>,
}

impl SymbolTable {
    /// The symbols of `file`, parsed from `data`.
    pub fn new(file: &object::File<'_>, data: &Arc<ModuleData>) -> SymbolTable {
        let base = data.as_ptr() as usize;
        let name_of = |bytes: &[u8]| match std::str::from_utf8(bytes) {
            Ok(_) => {
                let start = bytes.as_ptr() as usize - base;
                SymName::InFile(start..start + bytes.len())
            }
            Err(_) => SymName::Copied(String::from_utf8_lossy(bytes).into()),
        };
        let collect = |it: object::SymbolIterator<'_, '_>| {
            it.filter(|s| matches!(s.kind(), SymbolKind::Text | SymbolKind::Unknown))
                .filter(|s| s.is_definition() && s.address() != 0)
                .filter_map(|s| {
                    let bytes = s.name_bytes().ok().filter(|b| !b.is_empty())?;
                    Some(Sym {
                        address: s.address(),
                        size: s.size(),
                        name: name_of(bytes),
                    })
                })
                .collect::<Vec<_>>()
        };
        let mut syms = collect(file.symbols());
        if syms.is_empty() {
            syms = collect(file.dynamic_symbols());
        }
        // Prefer sized, global-looking entries when several share an address.
        syms.sort_by(|a, b| a.address.cmp(&b.address).then(b.size.cmp(&a.size)));
        syms.dedup_by_key(|s| s.address);
        SymbolTable {
            syms,
            data: Arc::clone(data),
        }
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|s| s.address <= addr);
        let s = self.syms.get(i.checked_sub(1)?)?;
        if s.size != 0 && addr >= s.address.saturating_add(s.size) {
            return None;
        }
        match &s.name {
            SymName::InFile(range) => std::str::from_utf8(self.data.get(range.clone())?).ok(),
            SymName::Copied(name) => Some(name),
        }
    }

    pub fn len(&self) -> usize {
        self.syms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }
}

/// The DWARF sections of `file` (parsed from `data`): ranges of its bytes, or decompressed
/// copies where they are compressed.
fn load_dwarf(file: &object::File<'_>, data: &Arc<ModuleData>) -> gimli::DwarfSections<FileBytes> {
    let load = |id: gimli::SectionId| -> Result<FileBytes, gimli::Error> {
        let bytes = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok());
        Ok(match bytes {
            Some(std::borrow::Cow::Borrowed(b)) => {
                FileBytes::part_of(data, b).unwrap_or_else(|| FileBytes::owned(b.to_vec()))
            }
            Some(std::borrow::Cow::Owned(v)) => FileBytes::owned(v),
            None => FileBytes::owned(Vec::new()),
        })
    };
    gimli::DwarfSections::load(load).expect("loader never fails")
}

/// Looks up addresses of one ELF file; owns what it reads, so it can be kept and asked again.
pub struct ElfSymbolizer {
    ctx: Option<addr2line::Context<Reader>>,
    /// Symbol tables, best first: the debug file's, the module's own, MiniDebugInfo's.
    symbols: Vec<SymbolTable>,
    pub inline: bool,
}

impl ElfSymbolizer {
    /// DWARF and symbols of `file`, parsed from `data`.
    pub fn new(file: &object::File<'_>, data: &Arc<ModuleData>, inline: bool) -> ElfSymbolizer {
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
                let sections = load_dwarf(file, data);
                let dwarf = sections.borrow(|s| gimli::EndianReader::new(s.clone(), endian));
                addr2line::Context::from_dwarf(dwarf).ok()
            })
            .flatten();
        ElfSymbolizer {
            ctx,
            symbols: vec![SymbolTable::new(file, data)],
            inline,
        }
    }

    /// Also consult `table` when DWARF and the tables before it know nothing.
    pub fn add_symbols(&mut self, table: SymbolTable) {
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
