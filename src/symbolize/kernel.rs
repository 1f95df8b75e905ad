//! Kernel symbols from `/proc/kallsyms`.

use std::io::BufRead;

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
    /// 122,000 names of a whole list take 6 MB; a profile needs a few hundred).
    pub fn load_for(wanted: &[u64]) -> KernelSymbols {
        let mut wanted = wanted.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        // Bucket i: the highest function in (wanted[i - 1], wanted[i]]. The function that
        // names wanted[i] is the highest of buckets 0..=i, so the buckets' are all it takes.
        // (address, name); address 0: none yet. Names are copied into the bucket's string.
        let mut buckets: Vec<(u64, String)> = vec![(0, String::new()); wanted.len()];
        let (mut lines, mut shown) = (false, false);
        each_line(|line| {
            lines = true;
            let Some((addr, name)) = function(line) else {
                return;
            };
            shown |= addr != 0;
            let i = wanted.partition_point(|&w| w < addr);
            // At the same address the last line wins, as in a whole list.
            if let Some((a, n)) = buckets.get_mut(i).filter(|(a, _)| addr != 0 && *a <= addr) {
                *a = addr;
                n.clear();
                n.push_str(name);
            }
        });
        let mut k = KernelSymbols::empty();
        for (addr, name) in buckets.into_iter().filter(|&(a, _)| a != 0) {
            let start = k.names.len() as u32;
            k.names.push_str(&name);
            k.syms.push((addr, start, k.names.len() as u32));
        }
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
}
