//! Kernel symbols from `/proc/kallsyms`.

/// Kernel function addresses and names, sorted by address.
pub struct KernelSymbols {
    syms: Vec<(u64, String)>,
    /// `kptr_restrict` hid the addresses (all read as zero).
    pub hidden: bool,
}

impl KernelSymbols {
    pub fn load() -> KernelSymbols {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> KernelSymbols {
        let mut syms = Vec::new();
        let mut any = false;
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            any = true;
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr != 0 {
                syms.push((addr, name.to_string()));
            }
        }
        syms.sort();
        KernelSymbols {
            hidden: any && syms.is_empty(),
            syms,
        }
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        Some(self.syms.get(i.checked_sub(1)?)?.1.as_str())
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
