//! Line-oriented inputs from the system and from JITs: /proc/PID/maps, /tmp/perf-PID.map,
//! /proc/kallsyms.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = ember::linux::parse_maps_line(line);
    }
    let m = ember::symbolize::perfmap::PerfMap::parse(&text);
    let _ = m.lookup(0x1000);
    let k = ember::symbolize::kernel::KernelSymbols::parse(&text);
    let _ = k.lookup(u64::MAX);
    let _ = ember::output::folded::parse(&text);
});
