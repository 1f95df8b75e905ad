//! The hot paths of a recording and of writing its outputs:
//!
//! - `record/...`: per-sample work while recording (parse the perf record, unwind the stack copy
//!   with DWARF CFI, resolve and aggregate), on samples captured from real runs of the testdata
//!   workloads (captured at the start of the bench: gcc + perf events, like the tests);
//! - `aggregate`: interning stacks into the profile;
//! - `write/...`: SVG, folded and pprof for a profile of 100,000 unique stacks.
//!
//! `cargo bench --bench pipeline -- --profile-time 5` writes flamegraphs of ember's own hot
//! paths under target/criterion/*/profile/.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ember::model::CallGraph;
use ember::model::Frame;
use ember::output::folded::{fold, FoldOptions};
use ember::output::{self, SvgOptions};
use ember::profile::Profile;
use ember::record::{Collector, CollectorSetup};
use ember::sampler::perf::{KernelFrames, PerfConfig, PerfSampler};
use ember::sampler::records::{RecordHeader, PERF_RECORD_SAMPLE};
use ember::sampler::{RecordBatch, RecordQueue, SampleLayout, Sampler};
use ember::stacks::StackProfile;
use ember::symbolize::{symbolize, SymbolizeOptions};
use ember::target::GatedChild;
use pprof::criterion::{Output, PProfProfiler};

fn build(src: &str, out_dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = out_dir.join(src.trim_end_matches(".c"));
    let st = std::process::Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
        .arg(&out)
        .arg(root.join("testdata").join(src))
        .status()
        .expect("gcc");
    assert!(st.success());
    out
}

/// Run `argv` under perf events and keep every raw record, in time order.
fn capture(argv: &[String], call_graph: CallGraph) -> (SampleLayout, Vec<Vec<u8>>) {
    let mut child = GatedChild::spawn(argv).expect("spawn workload");
    let config = PerfConfig {
        kernel_walk: Default::default(),
        walk_hooks: Default::default(),
        frequency: 999,
        call_graph,
        stack_size: 32768,
        kernel: KernelFrames::Exclude,
        off_cpu: false,
        buffer_size: None,
        reader_raised: false,
    };
    let mut sampler = PerfSampler::for_launch(child.pid(), &config)
        .expect("perf events are needed for this bench");
    child.release().expect("exec workload");
    let mut queue = RecordQueue::new();
    loop {
        let mut batch = RecordBatch::new();
        sampler.drain(&mut batch);
        queue.add(batch);
        if child.try_wait().is_some() {
            break;
        }
        sampler.wait(50);
    }
    let mut batch = RecordBatch::new();
    sampler.drain(&mut batch);
    queue.add(batch);
    let mut records = Vec::new();
    queue.drain_all(|r| records.push(r.to_vec()));
    (sampler.layout(), records)
}

fn is_sample(r: &[u8]) -> bool {
    RecordHeader::parse(r).is_some_and(|h| h.kind == PERF_RECORD_SAMPLE)
}

fn bench_record(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let workloads = [
        (
            "recursion 200 deep",
            vec![
                build("recursion.c", dir.path()).display().to_string(),
                "200".into(),
                "2".into(),
            ],
        ),
        (
            "shares",
            vec![
                build("shares.c", dir.path()).display().to_string(),
                "2".into(),
            ],
        ),
    ];
    let mut g = c.benchmark_group("record");
    g.measurement_time(Duration::from_secs(5));
    for (name, argv) in &workloads {
        for mode in [CallGraph::Auto, CallGraph::Fp] {
            let (layout, records) = capture(argv, mode);
            // Apply maps and process events once; then time the per-sample path.
            let mut collector = Collector::new(CollectorSetup::new(layout, mode));
            for r in records.iter().filter(|r| !is_sample(r)) {
                collector.handle(r);
            }
            let samples: Vec<&Vec<u8>> = records.iter().filter(|r| is_sample(r)).collect();
            g.throughput(Throughput::Elements(samples.len() as u64));
            let label = format!("{name}, {mode:?}");
            g.bench_function(BenchmarkId::new("parse+unwind+aggregate", label), |b| {
                b.iter(|| {
                    for r in &samples {
                        collector.handle(r);
                    }
                })
            });
        }
    }
    g.finish();
}

/// A profile of `unique` distinct stacks, `depth` frames each.
fn synthetic_profile(unique: usize, depth: usize) -> Profile {
    let mut p = Profile::new();
    p.meta.frequency = 999;
    p.meta.processes.insert(1, "synthetic".into());
    let mut frames = Vec::with_capacity(depth);
    for i in 0..unique {
        frames.clear();
        let mut x = i as u64;
        for d in 0..depth {
            // Shared prefixes near the root, distinct leaves: like real profiles.
            let addr = if d + 3 < depth {
                (d as u64) << 8 | (x % 4)
            } else {
                x * 64 + d as u64
            };
            x = x.wrapping_mul(2862933555777941757).wrapping_add(3037000493);
            frames.push(Frame::Anon {
                pid: 1,
                addr: 0x1000 + addr,
            });
        }
        frames.reverse();
        p.add_sample(1, 1, &frames, 1 + (i as u64 % 7));
    }
    p
}

fn bench_aggregate(c: &mut Criterion) {
    let mut g = c.benchmark_group("aggregate");
    let stacks: Vec<Vec<Frame>> = (0..10_000u64)
        .map(|i| {
            (0..30u64)
                .map(|d| Frame::Anon {
                    pid: 1,
                    addr: if d < 25 { d } else { i * 31 + d },
                })
                .collect()
        })
        .collect();
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("100k samples over 10k unique stacks of 30 frames", |b| {
        b.iter(|| {
            let mut p = Profile::new();
            for i in 0..100_000 {
                p.add_sample(1, 1, &stacks[i % stacks.len()], 1);
            }
            p
        })
    });
    g.finish();
}

fn bench_write(c: &mut Criterion) {
    let profile = synthetic_profile(100_000, 20);
    let modules = ember::modules::ModuleTable::new();
    let sources = (&modules, &HashMap::new(), &HashMap::new());
    let symbols = symbolize(&profile, sources, &SymbolizeOptions::default());
    let stacks = StackProfile::from_recording(&profile, &symbols, &modules);
    let folded = fold(&stacks, FoldOptions::default());
    assert_eq!(folded.len(), 100_000);
    let svg = SvgOptions {
        title: "bench".into(),
        ..Default::default()
    };
    let mut g = c.benchmark_group("write 100k unique stacks");
    g.sample_size(10);
    g.bench_function("fold", |b| b.iter(|| fold(&stacks, FoldOptions::default())));
    g.bench_function("folded", |b| {
        b.iter(|| output::folded::write(&folded, std::io::sink()).unwrap())
    });
    g.bench_function("svg", |b| {
        b.iter(|| output::svg::write(&folded, &svg, std::io::sink()).unwrap())
    });
    g.bench_function("pprof", |b| {
        b.iter(|| output::pprof::write(&stacks, std::io::sink()).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_profiler(PProfProfiler::new(997, Output::Flamegraph(None)));
    targets = bench_record, bench_aggregate, bench_write
}
criterion_main!(benches);
