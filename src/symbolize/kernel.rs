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
        let mut buckets = Buckets::new(wanted);
        let cached = cache.and_then(|p| std::fs::read(p).ok());
        if let Some(found) = cached.as_deref().and_then(|c| buckets.look_up_in_cache(c)) {
            return found;
        }
        // Written while reading, where there was none this boot (or it cannot be read).
        let unusable = cached
            .as_deref()
            .is_none_or(|c| !c.starts_with(CACHE_MAGIC));
        let mut writer = cache.filter(|_| unusable).and_then(CacheWriter::new);
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
        let start = self.names.len() as u32;
        self.names.push_str(name);
        self.syms.push((addr, start, self.names.len() as u32));
        Some(())
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
            let start = k.names.len() as u32;
            k.names.push_str(&name);
            k.syms.push((addr, start, k.names.len() as u32));
        }
        k
    }

    /// The symbols from a cache file's contents, if it is whole and every address wanted is
    /// in the kernel's own text, which it lists in full (see [`CacheWriter`]); looked at only
    /// then, and found in buckets of their own (these stay as they were).
    fn look_up_in_cache(&self, file: &[u8]) -> Option<KernelSymbols> {
        let body = file.strip_prefix(CACHE_MAGIC)?;
        let (entries, trailer) = body.split_at(body.len().checked_sub(8)?);
        let etext = u64::from_le_bytes(trailer.try_into().ok()?);
        let first = u64::from_le_bytes(entries.get(..8)?.try_into().ok()?);
        if !self.wanted.iter().all(|&a| a >= first && a < etext) {
            return None;
        }
        let mut found = Buckets::new(&self.wanted);
        let mut rest = entries;
        while !rest.is_empty() {
            let addr = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
            let len = usize::from(u16::from_le_bytes(rest.get(8..10)?.try_into().ok()?));
            let name = std::str::from_utf8(rest.get(10..10 + len)?).ok()?;
            found.offer(addr, name);
            rest = &rest[10 + len..];
        }
        Some(found.into_symbols())
    }
}

/// The start of a cache file of the kernel's own functions.
const CACHE_MAGIC: &[u8] = b"EMBERKS1";

/// Where this boot's kernel functions are kept: `kernel-symbols-BOOT_ID` in ember's cache
/// directory (`$XDG_CACHE_HOME/ember`, else `~/.cache/ember`). The file is the user's own
/// (mode 0600: kernel addresses are private to those allowed to read them).
pub fn cache_path() -> Option<PathBuf> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(super::inflated::cache_dir()?.join(format!("kernel-symbols-{}", boot.trim())))
}

/// Writes the kernel's own functions (those of no module) while /proc/kallsyms is read, in
/// address order: (address u64, name length u16, name), then `_etext`'s address. Nothing is
/// written where the addresses are hidden or out of order.
struct CacheWriter {
    out: std::io::BufWriter<tempfile::NamedTempFile>,
    last: u64,
    etext: Option<u64>,
    ok: bool,
}

impl CacheWriter {
    fn new(path: &Path) -> Option<CacheWriter> {
        let dir = path.parent()?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .ok()?;
        let file = tempfile::Builder::new()
            .prefix(".kernel-symbols")
            .tempfile_in(dir)
            .ok()?;
        let mut out = std::io::BufWriter::new(file);
        out.write_all(CACHE_MAGIC).ok()?;
        Some(CacheWriter {
            out,
            last: 0,
            etext: None,
            ok: true,
        })
    }

    fn offer(&mut self, addr: u64, name: &str, core: bool) {
        if !core || !self.ok || self.etext.is_some() {
            return;
        }
        self.ok = addr != 0 && addr >= self.last && name.len() <= usize::from(u16::MAX);
        self.last = addr;
        let written = self.out.write_all(&addr.to_le_bytes()).is_ok()
            && self
                .out
                .write_all(&(name.len() as u16).to_le_bytes())
                .is_ok()
            && self.out.write_all(name.as_bytes()).is_ok();
        self.ok &= written;
        if name == "_etext" {
            self.etext = Some(addr);
        }
    }

    /// Put the file in place (other boots' files go), if it holds the whole kernel text.
    fn finish(mut self, path: &Path) {
        let Some(etext) = self.etext.filter(|_| self.ok) else {
            return;
        };
        if self.out.write_all(&etext.to_le_bytes()).is_err() {
            return;
        }
        let Ok(file) = self.out.into_inner() else {
            return;
        };
        if file.persist(path).is_err() {
            return;
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return;
        };
        for old in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let other = old.file_name();
            if other != name && other.to_string_lossy().starts_with("kernel-symbols-") {
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
        let from_cache = Buckets::new(&wanted);
        let file = std::fs::read(&cache).unwrap();
        let second = from_cache
            .look_up_in_cache(&file)
            .expect("every address in the kernel text");
        for &addr in &wanted {
            assert_eq!(first.lookup(addr), parsed.lookup(addr), "{addr:#x}");
            assert_eq!(second.lookup(addr), parsed.lookup(addr), "{addr:#x}");
        }
        // An address beyond the kernel's own text (a module's, BPF's) is not the cache's.
        assert!(Buckets::new(&[etext + 16])
            .look_up_in_cache(&file)
            .is_none());
        // A file cut short is not used.
        assert!(Buckets::new(&wanted)
            .look_up_in_cache(&file[..file.len() / 2])
            .is_none());
        // Read through the cache or not, the names are the same.
        let again = KernelSymbols::load_for_cached(&wanted, Some(&cache));
        for &addr in &wanted {
            assert_eq!(again.lookup(addr), parsed.lookup(addr));
        }
    }
}
