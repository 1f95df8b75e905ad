//! Arbitrary bytes as a mapped ELF file: module parsing (segments, unwind sections), the
//! framehop module built from it, and symbolization of addresses in it.
#![no_main]

use std::collections::HashMap;

use ember::modules::ModuleTable;
use ember::model::Frame;
use ember::profile::Profile;
use ember::symbolize::{symbolize, SymbolizeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut modules = ModuleTable::new();
    let id = modules.insert_bytes("fuzz.so", data.to_vec());
    let mut p = Profile::new();
    for svma in [0u64, 0x40, 0x1000, 0x1234, 0x401000, u64::MAX - 1] {
        p.add_sample(1, 1, &[Frame::Module { module: id, svma }], 1);
    }
    let s = symbolize(&p, (&modules, &HashMap::new(), &HashMap::new()), &SymbolizeOptions::default());
    assert!(s.frames.iter().all(|f| !f.is_empty()));
});
