//! Names for addresses in one ELF file: DWARF (functions, inlined frames, lines) through
//! addr2line, the symbol tables through `object` where DWARF has nothing.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use addr2line::gimli;
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use super::demangle::demangle;
use super::inflated::{self, Inflated};
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
                // A label of assembly code (no type, no size: ld.so's `_start`) is no
                // "definition" to object, but names its code all the same.
                .filter(|s| s.is_definition() || s.section_index().is_some())
                .filter(|s| s.address() != 0)
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
        // A label without a size covers the code up to the next symbol, unless it is
        // inside a function that has one (a label there must not take the function's name).
        let mut sized_end = 0;
        syms.retain(|s| {
            let keep = s.size != 0 || s.address >= sized_end;
            sized_end = sized_end.max(s.address.saturating_add(s.size));
            keep
        });
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

/// Whether `symbol` (demangled) is the qualified name of the function DWARF calls `short`:
/// DWARF built with line tables only has the bare name (`churn<2000000>`, `spin`) where the
/// symbol table has the path (`app::engine::Mixer<_>::churn`, as `nm -C` prints it). A DWARF
/// name with a path of its own (full debug info) is kept.
fn qualifies(symbol: &str, short: &str) -> bool {
    if symbol.len() > short.len() && symbol.ends_with(short) {
        return true;
    }
    let base = |name: &str| -> String {
        let last = last_segment(name);
        let end = last.find(['<', '(']).unwrap_or(last.len());
        last[..end].trim().trim_end_matches("::").to_string()
    };
    // The symbol has a path, DWARF's name has none, and they name the same function.
    last_segment(symbol) != symbol
        && last_segment(short) == short
        && !base(short).is_empty()
        && base(symbol) == base(short)
}

/// The part of a name after its last `::` outside brackets: `a::B<c::D>::f` → `f`.
fn last_segment(name: &str) -> &str {
    let (mut depth, mut start) = (0i32, 0);
    let bytes = name.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'<' | b'(' | b'[' => depth += 1,
            b'>' | b')' | b']' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b':') => {
                // `f::<T>` (a turbofish) belongs to `f`.
                if bytes.get(i + 2) != Some(&b'<') {
                    start = i + 2;
                }
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    &name[start..]
}

/// The DWARF sections of `file` (parsed from `data`) that naming an address reads: ranges of
/// its bytes, or inflated copies where they are compressed (kept in `cache` by build ID, see
/// [`inflated`]). Variable locations and macros are left out (in libc's debug file they are
/// 14 % of what would be inflated). With `only` (the SVMAs that will be looked up, all of
/// them), an inflated `.debug_info` has its other compile units made cheap to skip (see
/// [`skip_units_without`]).
fn load_dwarf(
    file: &object::File<'_>,
    data: &Arc<ModuleData>,
    only: Option<&[u64]>,
    cache: Option<&Path>,
) -> (gimli::DwarfSections<FileBytes>, bool) {
    use gimli::SectionId::{DebugLoc, DebugLocLists, DebugMacinfo, DebugMacro};
    let mut wanted = Vec::new();
    let _ = gimli::DwarfSections::load(|id| -> Result<(), gimli::Error> {
        let unread = matches!(id, DebugLoc | DebugLocLists | DebugMacinfo | DebugMacro);
        if let Some(section) = file.section_by_name(id.name()).filter(|_| !unread) {
            wanted.push(section);
        }
        Ok(())
    });
    let mut inflated = inflate(file, &wanted, cache);
    let from_cache = inflated.from_cache;
    if let Some(only) = only {
        if let Some((info, rest)) = inflated.info_and_rest(".debug_info") {
            let part = |name| {
                rest.get(name)
                    .or_else(|| file.section_by_name(name).and_then(|s| s.data().ok()))
                    .unwrap_or(&[])
            };
            let parts = (part(".debug_abbrev"), part(".debug_aranges"));
            skip_units_without(info, parts, endian_of(file), only);
        }
    }
    let (bytes, ranges) = inflated.freeze();
    let bytes = Arc::new(bytes);
    let load = |id: gimli::SectionId| -> Result<FileBytes, gimli::Error> {
        if let Some((_, r)) = ranges.iter().find(|(n, _)| n == id.name()) {
            return Ok(FileBytes::part_of(&bytes, &bytes[r.clone()]).expect("inside"));
        }
        let own = wanted.iter().find(|s| s.name() == Ok(id.name()));
        Ok(match own.and_then(|s| s.uncompressed_data().ok()) {
            Some(Cow::Borrowed(b)) => {
                FileBytes::part_of(data, b).unwrap_or_else(|| FileBytes::owned(b.to_vec()))
            }
            Some(Cow::Owned(v)) => FileBytes::owned(v),
            None => FileBytes::owned(Vec::new()),
        })
    };
    let sections = gimli::DwarfSections::load(load).expect("loader never fails");
    (sections, from_cache)
}

/// The compressed ones of `sections` inflated, `.debug_info` last (it is patched while the
/// others are read): from `cache` when a copy is kept there, else inflated now and kept.
fn inflate(
    file: &object::File<'_>,
    sections: &[object::Section<'_, '_>],
    cache: Option<&Path>,
) -> Inflated {
    let compressed = |s: &&object::Section<'_, '_>| {
        s.compressed_data()
            .is_ok_and(|c| c.format != object::CompressionFormat::None)
    };
    let mut todo: Vec<&object::Section<'_, '_>> = sections.iter().filter(compressed).collect();
    todo.sort_by_key(|s| s.name() == Ok(".debug_info"));
    let name = |s: &object::Section<'_, '_>| s.name().unwrap_or_default().to_string();
    let build_id = file.build_id().ok().flatten().filter(|id| !id.is_empty());
    let kept = cache
        .zip(build_id)
        .and_then(|(dir, id)| inflated::load(dir, id));
    if let Some(kept) = kept.filter(|k| todo.iter().all(|s| k.get(&name(s)).is_some())) {
        return kept;
    }
    let size = todo
        .iter()
        .filter_map(|s| s.compressed_data().ok())
        .map(|c| c.uncompressed_size as usize)
        .sum();
    let mut out = Inflated::with_capacity(size);
    for s in todo {
        out.add(&name(s), |buf| inflate_into(s, buf));
    }
    if let (Some(dir), Some(id)) = (cache, build_id) {
        if out.len() >= inflated::WORTH_KEEPING {
            inflated::store(dir, id, &out);
        }
    }
    out
}

/// Append `section`'s inflated bytes to `buf`.
fn inflate_into(section: &object::Section<'_, '_>, buf: &mut Vec<u8>) -> bool {
    let Ok(c) = section.compressed_data() else {
        return false;
    };
    let Ok(size) = usize::try_from(c.uncompressed_size) else {
        return false;
    };
    if c.format != object::CompressionFormat::Zlib {
        return c.decompress().is_ok_and(|b| {
            buf.extend_from_slice(&b);
            true
        });
    }
    if buf.try_reserve(size).is_err() {
        return false;
    }
    let start = buf.len();
    let mut zlib = flate2::Decompress::new(true);
    let done = zlib.decompress_vec(c.data, buf, flate2::FlushDecompress::Finish);
    matches!(done, Ok(flate2::Status::StreamEnd)) && buf.len() - start == size
}

fn endian_of(file: &object::File<'_>) -> gimli::RunTimeEndian {
    if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    }
}

/// Make the compile units of `info` (a `.debug_info` in memory) that `.debug_aranges` says
/// hold none of the SVMAs `wanted` cheap to skip: their headers are pointed at an empty
/// abbreviation table (the last byte of `.debug_abbrev`, which ends its last table), so
/// addr2line, which parses every unit it is given up front (all 2,000 of libc's, 15 MB of
/// abbreviations to name a handful of addresses), finds no entry in them and passes over
/// them. Units `.debug_aranges` does not list are kept. Returns how many were skipped.
fn skip_units_without(
    info: &mut [u8],
    (abbrev, aranges): (&[u8], &[u8]),
    endian: gimli::RunTimeEndian,
    wanted: &[u64],
) -> usize {
    if abbrev.last() != Some(&0) {
        return 0;
    }
    let mut wanted = wanted.to_vec();
    wanted.sort_unstable();
    let holds_one = |r: gimli::Range| {
        let i = wanted.partition_point(|&a| a < r.begin);
        wanted.get(i).is_some_and(|&a| a < r.end)
    };
    // Units listed in .debug_aranges: whether each holds a wanted address.
    let mut needed: std::collections::HashMap<usize, bool> = Default::default();
    let mut headers = gimli::DebugAranges::new(aranges, endian).headers();
    while let Ok(Some(h)) = headers.next() {
        let mut entries = h.entries();
        let mut holds = false;
        loop {
            match entries.next() {
                Ok(Some(e)) => holds |= holds_one(e.range()),
                Ok(None) => break,
                // Unreadable: whether it holds one is unknown.
                Err(_) => {
                    holds = true;
                    break;
                }
            }
        }
        *needed.entry(h.debug_info_offset().0).or_default() |= holds;
    }
    let mut skip = Vec::new();
    let mut units = gimli::DebugInfo::new(&*info, endian).units();
    while let Ok(Some(u)) = units.next() {
        let Some(offset) = u.debug_info_offset() else {
            continue;
        };
        if needed.get(&offset.0) == Some(&false) {
            // The abbreviation offset follows the length and version (and, from DWARF 5,
            // the unit type and address size).
            let at = offset.0
                + u.format().initial_length_size() as usize
                + 2
                + if u.version() >= 5 { 2 } else { 0 };
            skip.push((at, u.format()));
        }
    }
    let empty = (abbrev.len() - 1) as u64;
    for &(at, format) in &skip {
        let le = empty.to_le_bytes();
        let be = empty.to_be_bytes();
        let size = usize::from(format.word_size());
        let bytes = if gimli::Endianity::is_big_endian(endian) {
            &be[8 - size..]
        } else {
            &le[..size]
        };
        if let Some(dst) = info.get_mut(at..at + size) {
            dst.copy_from_slice(bytes);
        }
    }
    skip.len()
}

/// Looks up addresses of one ELF file; owns what it reads, so it can be kept and asked again.
pub struct ElfSymbolizer {
    ctx: Option<addr2line::Context<Reader>>,
    /// Symbol tables, best first: the debug file's, the module's own, MiniDebugInfo's.
    symbols: Vec<SymbolTable>,
    pub inline: bool,
    /// Its compressed DWARF came inflated from the cache.
    dwarf_cached: bool,
}

impl ElfSymbolizer {
    /// DWARF and symbols of `file`, parsed from `data`. With `only`, no address but those
    /// (SVMAs) will be looked up: DWARF that holds none of them may be left unread.
    /// Compressed DWARF is inflated once and kept in `cache` (a directory), if given.
    pub fn new(
        file: &object::File<'_>,
        data: &Arc<ModuleData>,
        inline: bool,
        only: Option<&[u64]>,
        cache: Option<&Path>,
    ) -> ElfSymbolizer {
        let endian = endian_of(file);
        let has_info = file
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0);
        let mut dwarf_cached = false;
        let ctx = has_info
            .then(|| {
                let (sections, cached) = load_dwarf(file, data, only, cache);
                dwarf_cached = cached;
                let dwarf = sections.borrow(|s| gimli::EndianReader::new(s.clone(), endian));
                addr2line::Context::from_dwarf(dwarf).ok()
            })
            .flatten();
        ElfSymbolizer {
            ctx,
            symbols: vec![SymbolTable::new(file, data)],
            inline,
            dwarf_cached,
        }
    }

    /// Whether its compressed DWARF was read inflated from the cache.
    pub fn dwarf_cached(&self) -> bool {
        self.dwarf_cached
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
                if qualifies(&full, &first.name) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_dwarf_name_gives_way_to_the_symbols_path() {
        let q = qualifies;
        assert!(q(
            "app::hot::crunch_numbers",
            "crunch_numbers<app::hot::Golden>"
        ));
        assert!(q("rustload::engine::Mixer<_>::churn", "churn<2000000>"));
        assert!(q(
            "std::sys::backtrace::__rust_begin_short_backtrace",
            "__rust_begin_short_backtrace<fn(), ()>"
        ));
        assert!(q("mycrate::spin", "spin"));
        assert!(q("ns::Foo::bar(int) const", "bar"));
        assert!(q("app::f::<u8>", "f<u8>"));
        // DWARF's own path (full debug info) stays; so does a different function.
        assert!(!q("app::Mixer<_>::churn", "app::Mixer<2000000>::churn"));
        assert!(!q("app::g", "f"));
        assert!(!q("f", "f"));
    }

    /// libc's separate debug file (libc6-dbg, which scripts/test.sh installs): compressed
    /// DWARF in 2,000 compile units.
    fn libc_debug_file() -> (String, memmap2::Mmap) {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let libc = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains("/libc.so"))
            .expect("this test links libc")
            .to_string();
        let bytes = std::fs::read(&libc).unwrap();
        let file = object::File::parse(&*bytes).unwrap();
        let dirs = super::super::debuginfo::DebugDirs::new(&[]);
        super::super::debuginfo::find_debug_file(&libc, &file, &dirs)
            .map(|(p, m)| (p.display().to_string(), m))
            .unwrap_or_else(|| panic!("no debug file for {libc}: apt-get install libc6-dbg"))
    }

    /// An address inside every `step`th function of `file`.
    fn inside_functions(file: &object::File<'_>, step: usize) -> Vec<u64> {
        file.symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 8)
            .step_by(step)
            .map(|s| s.address() + s.size() / 2)
            .collect()
    }

    #[test]
    fn units_without_the_wanted_addresses_are_skipped_and_names_stay_the_same() {
        let (path, map) = libc_debug_file();
        let data = Arc::new(ModuleData::Owned(map.to_vec()));
        let file = object::File::parse(&**data).unwrap();
        // An address inside every 40th function: some hundred, across the library.
        let wanted = inside_functions(&file, 40);
        assert!(wanted.len() > 100, "{path}: {} functions", wanted.len());
        let all = ElfSymbolizer::new(&file, &data, true, None, None);
        let some = ElfSymbolizer::new(&file, &data, true, Some(&wanted), None);
        assert!(all.has_dwarf() && some.has_dwarf(), "{path} has DWARF");
        for &a in &wanted {
            assert_eq!(all.lookup(a), some.lookup(a), "{path} at {a:#x}");
        }
        // And most units were skipped.
        let section = |name| {
            file.section_by_name(name)
                .unwrap()
                .uncompressed_data()
                .unwrap()
        };
        let mut info = section(".debug_info").into_owned();
        let (abbrev, aranges) = (section(".debug_abbrev"), section(".debug_aranges"));
        let endian = endian_of(&file);
        let skipped = skip_units_without(&mut info, (&abbrev, &aranges), endian, &wanted);
        let units = gimli::DebugAranges::new(&aranges, endian).headers().count();
        assert!(skipped > units / 2, "{skipped} of {units} skipped");
    }

    #[test]
    fn compressed_dwarf_is_inflated_once_then_read_from_the_cache_with_the_same_names() {
        let (path, map) = libc_debug_file();
        let data = Arc::new(ModuleData::Owned(map.to_vec()));
        let file = object::File::parse(&**data).unwrap();
        let wanted = inside_functions(&file, 200);
        let cache = tempfile::tempdir().unwrap();
        let dir = Some(cache.path());
        let none = ElfSymbolizer::new(&file, &data, true, Some(&wanted), None);
        let first = ElfSymbolizer::new(&file, &data, true, Some(&wanted), dir);
        assert!(!first.dwarf_cached(), "{path}: nothing was kept yet");
        let kept = std::fs::read_dir(cache.path()).unwrap().count();
        assert_eq!(kept, 1, "{path}: one file of inflated sections");
        // Patched (units skipped) in a private copy: the next reader gets the file whole.
        let second = ElfSymbolizer::new(&file, &data, true, Some(&wanted), dir);
        let whole = ElfSymbolizer::new(&file, &data, true, None, dir);
        assert!(second.dwarf_cached() && whole.dwarf_cached(), "{path}");
        let inlined = wanted.iter().filter(|&&a| none.lookup(a).len() > 1).count();
        assert!(
            inlined > 0,
            "{path}: some inlined frames among {}",
            wanted.len()
        );
        for &a in &wanted {
            let names = none.lookup(a);
            assert!(!names.is_empty(), "{path} at {a:#x}");
            assert_eq!(first.lookup(a), names, "{path} at {a:#x}");
            assert_eq!(second.lookup(a), names, "{path} at {a:#x}");
            assert_eq!(whole.lookup(a), names, "{path} at {a:#x}");
        }
    }

    #[test]
    fn the_last_segment_is_outside_brackets() {
        assert_eq!(last_segment("a::B<c::D>::f"), "f");
        assert_eq!(last_segment("<T as x::Tr>::m"), "m");
        assert_eq!(last_segment("f::<u8>"), "f::<u8>");
        assert_eq!(last_segment("plain"), "plain");
    }
}
