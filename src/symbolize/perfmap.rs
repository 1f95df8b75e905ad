//! JIT symbol maps: `/tmp/perf-PID.map`, one `START SIZE name` line per function (hex
//! addresses), as written by node `--perf-basic-prof`, Python 3.12 `-X perf`, the JVM's
//! perf-map-agent, LuaJIT and others.

/// The functions a process said it generated, sorted by address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfMap {
    entries: Vec<(u64, u64, String)>,
}

impl PerfMap {
    pub fn parse(text: &str) -> PerfMap {
        let mut entries: Vec<(u64, u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let start = it.next()?.trim_start_matches("0x");
                let size = it.next()?.trim_start_matches("0x");
                let name = it.next()?.trim();
                Some((
                    u64::from_str_radix(start, 16).ok()?,
                    u64::from_str_radix(size, 16).ok()?,
                    name.to_string(),
                ))
            })
            .collect();
        // Later lines win for the same start (code regenerated in place).
        entries.reverse();
        entries.sort_by_key(|e| e.0);
        entries.dedup_by_key(|e| e.0);
        PerfMap { entries }
    }

    /// Read `/tmp/perf-PID.map`, if the process wrote one.
    pub fn load(pid: u32) -> Option<PerfMap> {
        let text = std::fs::read(format!("/tmp/perf-{pid}.map")).ok()?;
        Some(PerfMap::parse(&String::from_utf8_lossy(&text)))
    }

    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let i = self.entries.partition_point(|e| e.0 <= addr);
        let (start, size, name) = self.entries.get(i.checked_sub(1)?)?;
        (addr < start.saturating_add(*size)).then_some(name.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_looks_up() {
        let m = PerfMap::parse(
            "7f0000001000 20 LazyCompile:~foo app.js:1\n\
             0x7f0000002000 0x10 bar\nnot a line\n7f0000003000 zz bad\n",
        );
        assert_eq!(m.lookup(0x7f0000001000), Some("LazyCompile:~foo app.js:1"));
        assert_eq!(m.lookup(0x7f000000101f), Some("LazyCompile:~foo app.js:1"));
        assert_eq!(m.lookup(0x7f0000001020), None);
        assert_eq!(m.lookup(0x7f0000002008), Some("bar"));
        assert_eq!(m.lookup(0x10), None);
    }
}
