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
    /// Read `/proc/kallsyms` (nothing when it cannot be read) a line at a time.
    pub fn load() -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        if let Ok(file) = std::fs::File::open("/proc/kallsyms") {
            let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                k.add_line(&line);
                line.clear();
            }
        }
        k.finish()
    }

    pub fn parse(text: &str) -> KernelSymbols {
        let mut k = KernelSymbols::empty();
        text.lines().for_each(|line| k.add_line(line));
        k.finish()
    }

    fn empty() -> KernelSymbols {
        KernelSymbols {
            syms: Vec::new(),
            names: String::new(),
            hidden: false,
        }
    }

    /// One line of kallsyms: `ADDRESS TYPE NAME [MODULE]`; only functions are kept.
    fn add_line(&mut self, line: &str) {
        let mut it = line.split_ascii_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            return;
        };
        // Any line at all: if no address is kept, they were hidden.
        self.hidden = true;
        if !matches!(kind, "t" | "T" | "w" | "W") {
            return;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else {
            return;
        };
        if addr != 0 {
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
    }
}
