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
    pub fn load() -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        if let Ok(file) = std::fs::File::open("/proc/kallsyms") {
            let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
            let mut line = Vec::with_capacity(256);
            while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                k.add_line(&line);
                line.clear();
            }
        }
        k.finish()
    }

    pub fn parse(text: &str) -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        text.lines().for_each(|line| k.add_line(line.as_bytes()));
        k.finish()
    }

    fn empty() -> KernelSymbols {
        KernelSymbols {
            syms: Vec::new(),
            names: String::new(),
            hidden: false,
        }
    }

    /// One line of kallsyms: `ADDRESS TYPE NAME[\t[MODULE]]`; only functions are kept.
    fn add_line(&mut self, line: &[u8]) {
        // The address is 16 hex digits (8 on 32-bit kernels), then one space.
        let Some(space) = line.iter().position(|&c| c == b' ') else {
            return;
        };
        let (addr, rest) = line.split_at(space);
        let (Some(&kind), Some(name)) = (rest.get(1), rest.get(3..)) else {
            return;
        };
        // Any line at all: if no address is kept, they were hidden.
        self.hidden = true;
        if !matches!(kind, b't' | b'T' | b'w' | b'W') {
            return;
        }
        let end = name
            .iter()
            .position(|c| c.is_ascii_whitespace())
            .unwrap_or(name.len());
        let addr = std::str::from_utf8(addr)
            .ok()
            .and_then(|a| u64::from_str_radix(a, 16).ok());
        if let (Some(addr @ 1..), Ok(name)) = (addr, std::str::from_utf8(&name[..end])) {
            let start = self.names.len() as u32;
            self.names.push_str(name);
            self.syms.push((addr, start, self.names.len() as u32));
        }
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
        for &(addr, _, _) in parsed.syms.iter().step_by(97).filter(|s| s.0 < own) {
            assert_eq!(read.lookup(addr + 1), parsed.lookup(addr + 1));
        }
    }
}
