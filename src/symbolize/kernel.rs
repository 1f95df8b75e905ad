//! Kernel symbols from `/proc/kallsyms`.

use std::io::{BufRead, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Kernel function addresses and names, sorted by address.
pub struct KernelSymbols {
    /// (address, where its name starts in `names`, where it ends).
    syms: Vec<(u64, u32, u32)>,
    /// Every function's name, one after the other (one allocation, not 100,000).
    names: String,
    /// `kptr_restrict` hid the addresses (all read as zero).
    pub hidden: bool,
}

impl KernelSymbols {
    /// Read `/proc/kallsyms` (nothing when it cannot be read), as bytes, a buffer at a time.
    /// (Reading only as far as the highest sampled address needs would save little: the
    /// scheduler's, locks' and entry code, in nearly every profile, come near the end.)
    pub fn load() -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        each_line(|line| {
            k.add_line(line);
        });
        k.finish()
    }

    /// Only what names the addresses `wanted`: for each, the function at or below it (the
    /// 122,000 names of a whole list take 6 MB; a profile needs a few hundred). The kernel's
    /// own functions are the same for a whole boot, and formatting /proc/kallsyms costs the
    /// kernel tens of milliseconds of CPU, so they are kept in ember's cache directory
    /// ([`cache_path`]); where every address wanted is among them, they are read from there.
    pub fn load_for(wanted: &[u64]) -> KernelSymbols {
        KernelSymbols::load_for_cached(wanted, cache_path().as_deref())
    }

    /// [`KernelSymbols::load_for`], with the kernel's own functions kept in the file `cache`.
    pub fn load_for_cached(wanted: &[u64], cache: Option<&Path>) -> KernelSymbols {
        let cached = cache.and_then(map_cache);
        if let Some(found) = cached.as_deref().and_then(|c| look_up_in_cache(c, wanted)) {
            return found;
        }
        let mut buckets = Buckets::new(wanted);
        // Written while reading, where there was none this boot (or it cannot be read).
        let unusable = cached
            .as_deref()
            .is_none_or(|c| CacheIndex::of(c).is_none());
        let mut writer = cache.filter(|_| unusable).map(|_| CacheWriter::default());
        let (mut lines, mut shown) = (false, false);
        each_line(|line| {
            lines = true;
            let Some((addr, name)) = function(line) else {
                return;
            };
            shown |= addr != 0;
            buckets.offer(addr, name);
            if let Some(w) = &mut writer {
                w.offer(addr, name, !line.contains(&b'\t'));
            }
        });
        if let (Some(w), Some(path)) = (writer, cache) {
            w.finish(path);
        }
        let mut k = buckets.into_symbols();
        k.hidden = lines && !shown;
        k
    }

    pub fn parse(text: &str) -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        for line in text.lines() {
            k.add_line(line.as_bytes());
        }
        k.finish()
    }

    fn empty() -> KernelSymbols {
        KernelSymbols {
            syms: Vec::new(),
            names: String::new(),
            hidden: false,
        }
    }

    /// One line of kallsyms; only functions are kept.
    fn add_line(&mut self, line: &[u8]) -> Option<()> {
        // Any line at all: if no address is kept, they were hidden.
        self.hidden = true;
        let (addr, name) = function(line).filter(|&(a, _)| a != 0)?;
        self.push(addr, name);
        Some(())
    }

    /// Keep function `name` at `addr` (in address order, unless [`KernelSymbols::finish`]
    /// sorts them after).
    fn push(&mut self, addr: u64, name: &str) {
        let start = self.names.len() as u32;
        self.names.push_str(name);
        self.syms.push((addr, start, self.names.len() as u32));
    }

    fn finish(mut self) -> KernelSymbols {
        self.syms.sort_unstable();
        self.hidden &= self.syms.is_empty();
        self.names.shrink_to_fit();
        self
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|&(a, _, _)| a <= addr);
        let &(_, start, end) = self.syms.get(i.checked_sub(1)?)?;
        Some(&self.names[start as usize..end as usize])
    }
}

/// For each address wanted, the highest function at or below it seen so far. Bucket i holds
/// the highest function in (wanted[i - 1], wanted[i]]: the function that names wanted[i] is
/// the highest of buckets 0..=i, so the buckets' are all it takes.
struct Buckets {
    wanted: Vec<u64>,
    /// (address, name); address 0: none yet. Names are copied into the bucket's string.
    found: Vec<(u64, String)>,
}

impl Buckets {
    fn new(wanted: &[u64]) -> Buckets {
        let mut wanted = wanted.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let found = vec![(0, String::new()); wanted.len()];
        Buckets { wanted, found }
    }

    /// A function: at the same address the last one wins, as in a whole list.
    fn offer(&mut self, addr: u64, name: &str) {
        let i = self.wanted.partition_point(|&w| w < addr);
        if let Some((a, n)) = self
            .found
            .get_mut(i)
            .filter(|(a, _)| addr != 0 && *a <= addr)
        {
            *a = addr;
            n.clear();
            n.push_str(name);
        }
    }

    fn into_symbols(self) -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        for (addr, name) in self.found.into_iter().filter(|&(a, _)| a != 0) {
            k.push(addr, &name);
        }
        k
    }
}

/// The start of a cache file of the kernel's own functions.
const CACHE_MAGIC: &[u8] = b"EMBERKS2";

/// Where this boot's kernel functions are kept: `kernel-symbols-BOOT_ID` in ember's cache
/// directory (`$XDG_CACHE_HOME/ember`, else `~/.cache/ember`). The file is the user's own
/// (mode 0600: kernel addresses are private to those allowed to read them).
pub fn cache_path() -> Option<PathBuf> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(super::inflated::cache_dir()?.join(format!("kernel-symbols-{}", boot.trim())))
}

/// The cache file at `path`, mapped: a lookup touches a few of its pages, not its 4 MB.
fn map_cache(path: &Path) -> Option<memmap2::Mmap> {
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: cache files are only ever created whole (written, then renamed into place) and
    // never changed after.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}

/// The names of `wanted` from a cache file's contents, if it is whole and every address
/// wanted is in the kernel's own text, which it lists in full (see [`CacheWriter`]).
fn look_up_in_cache(file: &[u8], wanted: &[u64]) -> Option<KernelSymbols> {
    let index = CacheIndex::of(file)?;
    let first = index.entry(0)?.0;
    if !wanted.iter().all(|&a| a >= first && a < index.etext) {
        return None;
    }
    let mut found = Vec::with_capacity(wanted.len());
    for &addr in wanted {
        // The last function at or below `addr` (at one address the last listed wins).
        let at = index.partition_point(addr).checked_sub(1)?;
        let (start, name) = index.entry(at)?;
        found.push((start, index.name(name)?));
    }
    found.sort_unstable();
    found.dedup();
    let mut k = KernelSymbols::empty();
    for (addr, name) in found {
        k.push(addr, name);
    }
    Some(k)
}

/// A cache file: the magic, the number of functions (u64), the names' length in bytes (u64,
/// so that a file cut short is seen), `_etext`'s address (u64), then
/// for each function in address order its address (u64) and where its name lies among the
/// names that follow (start u32, length u32), all little-endian.
struct CacheIndex<'a> {
    etext: u64,
    entries: &'a [u8],
    names: &'a [u8],
}

const ENTRY: usize = 16;

impl<'a> CacheIndex<'a> {
    fn of(file: &'a [u8]) -> Option<CacheIndex<'a>> {
        let body = file.strip_prefix(CACHE_MAGIC)?;
        let count = usize::try_from(u64_at(body, 0)?).ok()?;
        let names_len = usize::try_from(u64_at(body, 8)?).ok()?;
        let etext = u64_at(body, 16)?;
        let (entries, names) = body
            .get(24..)?
            .split_at_checked(count.checked_mul(ENTRY)?)?;
        (count > 0 && names.len() == names_len).then_some(CacheIndex {
            etext,
            entries,
            names,
        })
    }

    fn len(&self) -> usize {
        self.entries.len() / ENTRY
    }

    /// Function `i`: its address and where its name lies.
    fn entry(&self, i: usize) -> Option<(u64, std::ops::Range<usize>)> {
        let e = self.entries.get(i * ENTRY..(i + 1) * ENTRY)?;
        let start = u32::from_le_bytes(e[8..12].try_into().ok()?) as usize;
        let len = u32::from_le_bytes(e[12..16].try_into().ok()?) as usize;
        Some((u64_at(e, 0)?, start..start + len))
    }

    fn name(&self, range: std::ops::Range<usize>) -> Option<&'a str> {
        std::str::from_utf8(self.names.get(range)?).ok()
    }

    /// How many functions start at or below `addr`.
    fn partition_point(&self, addr: u64) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if u64_at(self.entries, mid * ENTRY).is_some_and(|a| a <= addr) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// Collects the kernel's own functions (those of no module) while /proc/kallsyms is read, in
/// address order, to be written as a [`CacheIndex`] file. Nothing is written where the
/// addresses are hidden or out of order, or the list does not reach `_etext`.
#[derive(Default)]
struct CacheWriter {
    entries: Vec<u8>,
    names: Vec<u8>,
    last: u64,
    etext: Option<u64>,
    failed: bool,
}

impl CacheWriter {
    fn offer(&mut self, addr: u64, name: &str, core: bool) {
        if !core || self.failed || self.etext.is_some() {
            return;
        }
        self.failed = addr == 0 || addr < self.last || self.names.len() > u32::MAX as usize / 2;
        self.last = addr;
        self.entries.extend(addr.to_le_bytes());
        self.entries.extend((self.names.len() as u32).to_le_bytes());
        self.entries.extend((name.len() as u32).to_le_bytes());
        self.names.extend(name.as_bytes());
        if name == "_etext" {
            self.etext = Some(addr);
        }
    }

    /// Put the file in place (other boots' files go), if it holds the whole kernel text.
    fn finish(self, path: &Path) {
        let Some(etext) = self.etext.filter(|_| !self.failed) else {
            return;
        };
        let Some(dir) = path.parent() else {
            return;
        };
        let write = || -> std::io::Result<()> {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            let file = tempfile::Builder::new()
                .prefix(".kernel-symbols")
                .tempfile_in(dir)?;
            let mut out = std::io::BufWriter::new(file);
            out.write_all(CACHE_MAGIC)?;
            out.write_all(&((self.entries.len() / ENTRY) as u64).to_le_bytes())?;
            out.write_all(&(self.names.len() as u64).to_le_bytes())?;
            out.write_all(&etext.to_le_bytes())?;
            out.write_all(&self.entries)?;
            out.write_all(&self.names)?;
            out.into_inner()?.persist(path)?;
            Ok(())
        };
        if write().is_err() {
            return;
        }
        let name = path.file_name();
        for old in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let other = old.file_name();
            if Some(other.as_os_str()) != name
                && other.to_string_lossy().starts_with("kernel-symbols-")
            {
                let _ = std::fs::remove_file(old.path());
            }
        }
    }
}

/// Each line of `/proc/kallsyms` (none when it cannot be read), read as bytes, a buffer at a
/// time.
fn each_line(mut f: impl FnMut(&[u8])) {
    let Ok(file) = std::fs::File::open("/proc/kallsyms") else {
        return;
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::with_capacity(256);
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        f(&line);
        line.clear();
    }
}

/// The address (0 where hidden) and name of a function's line of kallsyms, `ADDRESS TYPE
/// NAME[\t[MODULE]]`; `None` for anything else.
fn function(line: &[u8]) -> Option<(u64, &str)> {
    // The address is 16 hex digits (8 on 32-bit kernels), then one space.
    let space = line.iter().position(|&c| c == b' ')?;
    let (addr, rest) = line.split_at(space);
    let (&kind, name) = (rest.get(1)?, rest.get(3..)?);
    if !matches!(kind, b't' | b'T' | b'w' | b'W') {
        return None;
    }
    let end = name
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .unwrap_or(name.len());
    Some((hex(addr)?, std::str::from_utf8(&name[..end]).ok()?))
}

/// A hexadecimal number, without a prefix.
fn hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        let d = (c as char).to_digit(16)?;
        Some(n << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let k = KernelSymbols::parse(
            "ffffffff81000000 T _stext\nffffffff81000100 t do_thing\nffffffff82000000 D data\n",
        );
        assert_eq!(k.lookup(0xffffffff81000150), Some("do_thing"));
        assert_eq!(k.lookup(0xffffffff81000000), Some("_stext"));
        assert_eq!(k.lookup(0x10), None);
        assert!(!k.hidden);
        let h = KernelSymbols::parse("0000000000000000 T _stext\n0000000000000000 t x\n");
        assert!(h.hidden);
        // A module's function: the name ends at the tab before the module's.
        let m =
            KernelSymbols::parse("ffffffffc0201000 t trampoline\t[__builtin__ftrace]\nnonsense\n");
        assert_eq!(m.lookup(0xffffffffc0201010), Some("trampoline"));
        assert_eq!(hex(b"ffffffff81000000"), Some(0xffffffff81000000));
        assert_eq!(hex(b""), None);
        assert_eq!(hex(b"12g4"), None);
        assert_eq!(hex(b"10000000000000000"), None);
    }

    #[test]
    fn reading_the_running_kernels_list_finds_what_parsing_it_whole_finds() {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let (read, parsed) = (KernelSymbols::load(), KernelSymbols::parse(&text));
        assert_eq!(read.hidden, parsed.hidden);
        // The kernel's own functions (modules and BPF programs may come and go between reads).
        let own = parsed
            .syms
            .iter()
            .find(|&&(_, s, e)| &parsed.names[s as usize..e as usize] == "_etext")
            .map_or(0, |s| s.0);
        let wanted: Vec<u64> = parsed
            .syms
            .iter()
            .step_by(97)
            .filter(|s| s.0 < own)
            .map(|s| s.0 + 1)
            .collect();
        let only = KernelSymbols::load_for(&wanted);
        assert_eq!(only.hidden, parsed.hidden);
        for &addr in &wanted {
            assert_eq!(read.lookup(addr), parsed.lookup(addr));
            assert_eq!(only.lookup(addr), parsed.lookup(addr));
        }
        assert!(only.syms.len() <= wanted.len());
    }

    #[test]
    fn the_kernels_own_functions_are_kept_for_the_boot_and_name_the_same_from_there() {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let parsed = KernelSymbols::parse(&text);
        if parsed.hidden || parsed.syms.is_empty() {
            return; // Addresses hidden here (kptr_restrict): nothing is cached.
        }
        let at = |name: &str| {
            text.lines()
                .find(|l| l.ends_with(&format!(" T {name}")))
                .and_then(|l| hex(l.split(' ').next()?.as_bytes()))
                .expect("_stext and _etext in kallsyms")
        };
        let (stext, etext) = (at("_stext"), at("_etext"));
        let wanted: Vec<u64> = parsed
            .syms
            .iter()
            .step_by(101)
            .map(|s| s.0 + 3)
            .filter(|&a| a >= stext && a < etext)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("ember").join("kernel-symbols-this-boot");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let old = cache.with_file_name("kernel-symbols-an-earlier-boot");
        std::fs::write(&old, b"stale").unwrap();
        // Read from kallsyms, and kept (another boot's file goes).
        let first = KernelSymbols::load_for_cached(&wanted, Some(&cache));
        assert!(cache.is_file() && !old.exists());
        assert!(std::fs::read(&cache).unwrap().starts_with(CACHE_MAGIC));
        let file = std::fs::read(&cache).unwrap();
        let second = look_up_in_cache(&file, &wanted).expect("every address in the kernel text");
        for &addr in &wanted {
            assert_eq!(first.lookup(addr), parsed.lookup(addr), "{addr:#x}");
            assert_eq!(second.lookup(addr), parsed.lookup(addr), "{addr:#x}");
        }
        // An address beyond the kernel's own text (a module's, BPF's) is not the cache's.
        assert!(look_up_in_cache(&file, &[etext + 16]).is_none());
        // A file cut short is not used.
        assert!(look_up_in_cache(&file[..file.len() / 2], &wanted).is_none());
        // Read through the cache or not, the names are the same.
        let again = KernelSymbols::load_for_cached(&wanted, Some(&cache));
        for &addr in &wanted {
            assert_eq!(again.lookup(addr), parsed.lookup(addr));
        }
    }
}
