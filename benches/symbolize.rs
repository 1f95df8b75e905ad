//! Symbolization speed: 10,000 unique addresses of a large binary with full debug info (ember's
//! own, built by `cargo bench` with `debug = true`), from nothing (parsing DWARF included), the
//! way `ember record` does it once per recording.
//!
//! `cargo bench --bench symbolize -- --profile-time 5` writes a flamegraph of ember's own hot
//! paths to target/criterion/.../profile/flamegraph.svg.

use std::collections::HashMap;

use criterion::{criterion_group, criterion_main, Criterion};
use ember::model::Frame;
use ember::modules::ModuleTable;
use ember::profile::Profile;
use ember::symbolize::{symbolize, SymbolizeOptions};
use object::{Object, ObjectSymbol, SymbolKind};
use pprof::criterion::{Output, PProfProfiler};

const ADDRESSES: usize = 10_000;

/// `n` distinct code addresses spread evenly over the functions of `path`.
fn code_addresses(path: &str, n: usize) -> Vec<u64> {
    let data = std::fs::read(path).expect("read the binary");
    let file = object::File::parse(&*data).expect("parse the binary");
    let mut all: Vec<u64> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .flat_map(|s| (0..s.size()).step_by(8).map(move |o| s.address() + o))
        .collect();
    all.sort_unstable();
    all.dedup();
    assert!(
        all.len() >= n,
        "{path} has only {} candidate addresses",
        all.len()
    );
    let step = all.len() as f64 / n as f64;
    (0..n).map(|i| all[(i as f64 * step) as usize]).collect()
}

fn bench(c: &mut Criterion) {
    let binary = env!("CARGO_BIN_EXE_ember");
    let size = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "symbolizing {ADDRESSES} addresses of {binary} ({} MB)",
        size / 1_000_000
    );
    let addrs = code_addresses(binary, ADDRESSES);
    let mut modules = ModuleTable::new();
    let id = modules.open(binary, None, std::process::id(), 0, 0);
    let mut profile = Profile::new();
    for &a in &addrs {
        profile.add_sample(
            1,
            1,
            &[Frame::Module {
                module: id,
                svma: a,
            }],
            1,
        );
    }
    let opts = SymbolizeOptions::default();
    let maps = HashMap::new();
    // Check once that names are found, so the bench measures real work.
    let syms = symbolize(&profile, (&modules, &maps, &HashMap::new()), &opts);
    let named = syms
        .frames
        .iter()
        .filter(|f| f.first().is_some_and(|s| !s.name.contains("+0x")))
        .count();
    assert!(named * 10 >= ADDRESSES * 9, "only {named} addresses named");

    let mut g = c.benchmark_group("symbolize");
    g.sample_size(10);
    g.bench_function("10k unique addresses, large binary, cold", |b| {
        b.iter(|| symbolize(&profile, (&modules, &maps, &HashMap::new()), &opts))
    });
    g.finish();
    bench_libc(c);
}

/// The libc this bench runs with, as /proc/self/maps names it.
fn own_libc() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .expect("this bench links libc")
        .to_string()
}

/// A small C program's case: a handful of libc addresses, named from libc's separate debug file
/// (libc6-dbg: compressed DWARF in 2,000 units), which is most of what ember does after such a
/// target exits: inflated every time, and from ember's cache of inflated DWARF.
fn bench_libc(c: &mut Criterion) {
    let libc = own_libc();
    let data = std::fs::read(&libc).expect("read libc");
    let file = object::File::parse(&*data).expect("parse libc");
    let addrs: Vec<u64> = file
        .dynamic_symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 16)
        .step_by(400)
        .map(|s| s.address() + s.size() / 2)
        .collect();
    let mut modules = ModuleTable::new();
    let id = modules.open(&libc, None, std::process::id(), 0, 0);
    let mut profile = Profile::new();
    for &svma in &addrs {
        profile.add_sample(1, 1, &[Frame::Module { module: id, svma }], 1);
    }
    let maps = HashMap::new();
    let cache = tempfile::tempdir().expect("a scratch directory");
    let cached = SymbolizeOptions {
        dwarf_cache: Some(cache.path().to_path_buf()),
        ..SymbolizeOptions::default()
    };
    let opts = SymbolizeOptions {
        dwarf_cache: None,
        ..SymbolizeOptions::default()
    };
    let syms = symbolize(&profile, (&modules, &maps, &HashMap::new()), &opts);
    let inlined = syms.frames.iter().filter(|f| f.len() > 1).count();
    eprintln!(
        "symbolizing {} addresses of {libc}: {inlined} with inlined frames (0: no debug file)",
        addrs.len()
    );
    let mut g = c.benchmark_group("symbolize");
    g.sample_size(10);
    g.bench_function(
        "a few libc addresses, separate compressed debug info",
        |b| b.iter(|| symbolize(&profile, (&modules, &maps, &HashMap::new()), &opts)),
    );
    // The first of these inflates and keeps the sections; the rest map them.
    g.bench_function("the same, compressed debug info inflated before", |b| {
        b.iter(|| symbolize(&profile, (&modules, &maps, &HashMap::new()), &cached))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_profiler(PProfProfiler::new(997, Output::Flamegraph(None)));
    targets = bench
}
criterion_main!(benches);
