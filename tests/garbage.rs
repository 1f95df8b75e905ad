//! Every parser of outside input takes garbage without panicking: perf records, folded and
//! pprof files, /proc maps lines, JIT perf maps, and ELF/DWARF files (random bytes, and real
//! files truncated or with bytes flipped). Deterministic pseudo-random inputs; the coverage-
//! guided fuzzing the issue asks for is still to come.

use std::collections::HashMap;

use ember::model::Frame;
use ember::modules::ModuleTable;
use ember::profile::Profile;
use ember::sampler::records::SampleLayout;
use ember::symbolize::{symbolize, SymbolizeOptions};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn perf_records() {
    let layout = SampleLayout::recorded(true);
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for i in 0..200_000 {
        let len = (rng.next() % 300) as usize;
        let mut rec = rng.bytes(len);
        if rec.len() >= 8 {
            // Plausible headers more often than not.
            let kinds = [1u32, 2, 3, 4, 5, 7, 9, 10, 13];
            rec[0..4].copy_from_slice(&kinds[i % kinds.len()].to_le_bytes());
            if i % 3 != 0 {
                rec[6..8].copy_from_slice(&(len as u16).to_le_bytes());
            }
        }
        let _ = layout.record_time(&rec);
        let _ = layout.parse(&rec);
    }
}

#[test]
fn folded_pprof_maps_and_perf_maps() {
    let mut rng = Rng(12345);
    for _ in 0..20_000 {
        let n = (rng.next() % 200) as usize;
        let b = rng.bytes(n);
        let text = String::from_utf8_lossy(&b);
        let _ = ember::output::folded::parse(&text);
        let _ = ember::output::pprof::read(&b);
        let _ = ember::load::parse(std::path::Path::new("x"), &b);
        let _ = ember::symbolize::perfmap::PerfMap::parse(&text);
        for line in text.lines() {
            let _ = ember::linux::parse_maps_line(line);
        }
        let _ = ember::symbolize::kernel::KernelSymbols::parse(&text);
    }
    // A real pprof file with bytes flipped and cut.
    let mut p = Profile::new();
    p.add_sample(
        1,
        1,
        &[Frame::Anon { pid: 1, addr: 5 }, Frame::Kernel(7)],
        3,
    );
    let modules = ModuleTable::new();
    let syms = symbolize(
        &p,
        (&modules, &HashMap::new(), &HashMap::new()),
        &SymbolizeOptions::default(),
    );
    let sp = ember::stacks::StackProfile::from_recording(&p, &syms, &modules);
    let proto = {
        use pprof::protos::Message;
        ember::output::pprof::to_proto(&sp).encode_to_vec()
    };
    for i in 0..proto.len() {
        let mut b = proto.clone();
        b[i] ^= 0xff;
        let _ = ember::output::pprof::read(&b);
        let _ = ember::output::pprof::read(&proto[..i]);
    }
}

#[test]
fn elf_and_dwarf_files() {
    // Our own executable (full DWARF), damaged in many ways, then symbolized.
    let exe = std::env::current_exe().unwrap();
    let data = std::fs::read(&exe).unwrap();
    let mut rng = Rng(777);
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0usize, 1, 16, 64, 4096, data.len() / 3, data.len() / 2];
    for (i, &cut) in sizes.iter().enumerate() {
        let mut d = data[..cut.min(data.len())].to_vec();
        if i % 2 == 1 {
            for _ in 0..200 {
                if d.is_empty() {
                    break;
                }
                let at = (rng.next() as usize) % d.len();
                d[at] ^= rng.next() as u8;
            }
        }
        let path = dir.path().join(format!("broken{i}"));
        std::fs::write(&path, &d).unwrap();
        symbolize_file(&path);
    }
    // Flipped bytes through the whole file, keeping its length.
    for round in 0..4 {
        let mut d = data.clone();
        for _ in 0..2000 {
            let at = (rng.next() as usize) % d.len();
            d[at] = rng.next() as u8;
        }
        let path = dir.path().join(format!("flipped{round}"));
        std::fs::write(&path, &d).unwrap();
        symbolize_file(&path);
    }
}

fn symbolize_file(path: &std::path::Path) {
    let mut modules = ModuleTable::new();
    let id = modules.open(path.to_str().unwrap(), None, std::process::id(), 0, 0);
    let mut p = Profile::new();
    let mut rng = Rng(99);
    for _ in 0..300 {
        let svma = rng.next() % 0x400_0000;
        p.add_sample(1, 1, &[Frame::Module { module: id, svma }], 1);
    }
    let s = symbolize(
        &p,
        (&modules, &HashMap::new(), &HashMap::new()),
        &SymbolizeOptions::default(),
    );
    // Every address still gets a name of some kind.
    assert!(s.frames.iter().all(|f| !f.is_empty()));
}

/// Found by `scripts/fuzz.sh` (elf_symbolize): a symbol whose address + size overflows.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz/elf_symbolize");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("regression-")
        {
            let mut modules = ModuleTable::new();
            let id = modules.insert_bytes("fuzz.so", std::fs::read(&path).unwrap());
            let mut p = Profile::new();
            for svma in [0u64, 0x40, 0x1000, 0x1234, 0x401000, u64::MAX - 1] {
                p.add_sample(1, 1, &[Frame::Module { module: id, svma }], 1);
            }
            let s = symbolize(
                &p,
                (&modules, &HashMap::new(), &HashMap::new()),
                &SymbolizeOptions::default(),
            );
            assert!(s.frames.iter().all(|f| !f.is_empty()));
        }
    }
}
