//! Perf ring-buffer records: parsed with the layout ember records with, and pushed through the
//! whole per-record path (process table, unwinder, profile).
#![no_main]

use ember::record::{Collector, CollectorSetup};
use ember::sampler::records::{self, SampleLayout};
use ember::model::CallGraph;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let layout = SampleLayout::recorded(true);
    let _ = layout.record_time(data);
    let _ = layout.parse(data);
    // A stream of records: each prefixed by its header's size.
    let mut c = Collector::new(CollectorSetup::new(layout, CallGraph::Auto));
    let mut rest = data;
    while rest.len() >= 8 {
        let size = u16::from_le_bytes([rest[6], rest[7]]) as usize;
        let size = size.clamp(8, rest.len());
        let (rec, tail) = rest.split_at(size);
        // Files named in mmap records are opened: keep them to pseudo names.
        let kind = records::RecordHeader::parse(rec).map(|h| h.kind);
        if kind != Some(records::PERF_RECORD_MMAP2) && kind != Some(records::PERF_RECORD_MMAP) {
            c.handle(rec);
        }
        rest = tail;
    }
});
