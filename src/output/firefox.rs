//! The Firefox Profiler's processed format (`.fxprof.json`; open it in profiler.firefox.com
//! with "Load a profile from file"): one track per thread under its process, the samples in
//! the order and at the times they were taken, symbolized in the file. Written with the
//! `fxprof-processed-profile` crate, the Firefox Profiler authors' own library (samply uses
//! it too), so the format follows the profiler.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CategoryPairHandle, CpuDelta, Frame, FrameFlags, FrameInfo,
    MarkerFieldFlags, MarkerFieldFormat, MarkerTiming, ProcessHandle, Profile, SamplingInterval,
    StaticSchemaMarker, StaticSchemaMarkerField, StringHandle, ThreadHandle, Timestamp,
};

use super::folded::{frame_label, line_kind, root_label, Grouping};
use crate::model::FrameKind;
use crate::stacks::StackProfile;

/// Write `p`'s timeline. The first sample is at time 0 (the recording's start, as closely as
/// ember knows it).
pub fn write(p: &StackProfile, title: &str, w: impl Write) -> io::Result<()> {
    let first = p.timeline.iter().map(|t| t.time).min().unwrap_or(0);
    let first = p
        .meta
        .lifetimes
        .values()
        .filter_map(|(start, _)| *start)
        .fold(first, u64::min);
    let started = p
        .meta
        .start
        .or_else(|| SystemTime::now().checked_sub(p.meta.duration))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let interval = Duration::from_nanos(1_000_000_000 / p.meta.frequency.max(1));
    let mut out = Profile::new(
        title,
        started.into(),
        SamplingInterval::from_nanos(interval.as_nanos() as u64),
    );
    let kernel = out.add_category("Kernel", CategoryColor::Orange);
    let mut tracks = Tracks::default();
    for t in &p.timeline {
        let s = &p.samples[t.sample];
        let thread = tracks.thread(&mut out, p, s.pid, s.tid);
        let frames = frames(&mut out, p, t.sample, kernel.into());
        let stack = out.intern_stack_frames(thread, frames.into_iter());
        let at = Timestamp::from_nanos_since_reference(t.time.saturating_sub(first));
        let weight = i32::try_from(t.count).unwrap_or(i32::MAX);
        out.add_sample(thread, at, stack, CpuDelta::ZERO, weight);
        if let Some(reason) = off_cpu(p, t.sample) {
            // A wait of `count` sampling periods, from when the thread was switched out.
            let waited = interval.as_nanos() as u64 * u64::from(t.count);
            let end = Timestamp::from_nanos_since_reference(t.time - first + waited);
            let timing = MarkerTiming::Interval(at, end);
            let marker = Event::new(&mut out, "Off-CPU", reason);
            out.add_marker(thread, timing, marker);
        }
    }
    mark_lifetimes(&mut out, p, &tracks, first);
    serde_json::to_writer(w, &out).map_err(io::Error::other)
}

/// What a waiting sample waits in (`futex`), if it is one: its leaf says `[off-cpu] futex`.
fn off_cpu(p: &StackProfile, sample: usize) -> Option<&str> {
    let leaf = *p.samples[sample].locations.last()?;
    let line = p.locations[leaf].lines.last()?;
    p.functions[line.function].name.strip_prefix("[off-cpu] ")
}

/// Each track's thread starts and ends where the recording saw it begin and end, with a marker
/// there (a process's on its main thread).
fn mark_lifetimes(out: &mut Profile, p: &StackProfile, tracks: &Tracks, first: u64) {
    let at = |t: u64| Timestamp::from_nanos_since_reference(t.saturating_sub(first));
    for (&(pid, tid), &thread) in &tracks.threads {
        let Some(&(start, end)) = p.meta.lifetimes.get(&tid) else {
            continue;
        };
        let what = if pid == tid { "Process" } else { "Thread" };
        if let Some(start) = start {
            out.set_thread_start_time(thread, at(start));
            let marker = Event::new(out, &format!("{what} start"), &tid.to_string());
            out.add_marker(thread, MarkerTiming::Instant(at(start)), marker);
        }
        if let Some(end) = end {
            out.set_thread_end_time(thread, at(end));
            if pid == tid {
                out.set_process_end_time(tracks.processes[&pid], at(end));
            }
            let marker = Event::new(out, &format!("{what} exit"), &tid.to_string());
            out.add_marker(thread, MarkerTiming::Instant(at(end)), marker);
        }
    }
}

/// A marker on a thread's track: its name (`Off-CPU`, `Process exit`) and what it is about
/// (what the thread waited in, the thread's id).
struct Event {
    name: StringHandle,
    detail: StringHandle,
}

impl Event {
    fn new(out: &mut Profile, name: &str, detail: &str) -> Event {
        Event {
            name: out.intern_string(name),
            detail: out.intern_string(detail),
        }
    }
}

impl StaticSchemaMarker for Event {
    const UNIQUE_MARKER_TYPE_NAME: &'static str = "EmberEvent";
    const CHART_LABEL: Option<&'static str> = Some("{marker.data.detail}");
    const TABLE_LABEL: Option<&'static str> = Some("{marker.name}: {marker.data.detail}");
    const FIELDS: &'static [StaticSchemaMarkerField] = &[StaticSchemaMarkerField {
        key: "detail",
        label: "Detail",
        format: MarkerFieldFormat::String,
        flags: MarkerFieldFlags::SEARCHABLE,
    }];

    fn name(&self, _: &mut Profile) -> StringHandle {
        self.name
    }

    fn category(&self, _: &mut Profile) -> CategoryHandle {
        CategoryHandle::OTHER
    }

    fn string_field_value(&self, _: u32) -> StringHandle {
        self.detail
    }

    fn number_field_value(&self, _: u32) -> f64 {
        0.0
    }
}

/// One track per thread, under its process, made when first needed.
#[derive(Default)]
struct Tracks {
    processes: HashMap<u32, ProcessHandle>,
    threads: HashMap<(u32, u32), ThreadHandle>,
}

impl Tracks {
    fn thread(&mut self, out: &mut Profile, p: &StackProfile, pid: u32, tid: u32) -> ThreadHandle {
        if let Some(&t) = self.threads.get(&(pid, tid)) {
            return t;
        }
        let process = *self.processes.entry(pid).or_insert_with(|| {
            let name = p.meta.processes.get(&pid).map_or("?", String::as_str);
            out.add_process(name, pid, Timestamp::from_nanos_since_reference(0))
        });
        let zero = Timestamp::from_nanos_since_reference(0);
        let thread = out.add_thread(process, tid, zero, tid == pid);
        out.set_thread_name(thread, &root_label(p, pid, tid, Grouping::PerThread));
        self.threads.insert((pid, tid), thread);
        thread
    }
}

/// The frames of sample `i`, root first, named as in the folded output.
fn frames(
    out: &mut Profile,
    p: &StackProfile,
    i: usize,
    kernel: CategoryPairHandle,
) -> Vec<FrameInfo> {
    let mut frames = Vec::new();
    for &l in &p.samples[i].locations {
        let loc = &p.locations[l];
        for (k, ln) in loc.lines.iter().enumerate() {
            let kind = line_kind(loc.kind, k);
            let mut label = String::new();
            frame_label(
                &p.functions[ln.function].name,
                kind,
                None,
                None,
                false,
                &mut label,
            );
            let category_pair = if kind == FrameKind::Kernel {
                kernel
            } else {
                CategoryHandle::OTHER.into()
            };
            frames.push(FrameInfo {
                frame: Frame::Label(out.intern_string(&label)),
                category_pair,
                flags: FrameFlags::empty(),
            });
        }
    }
    frames
}

/// A Firefox Profiler file read back: every sample of every thread with its time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// (thread track's name, milliseconds since the first sample, frames root first, weight).
    pub samples: Vec<(String, f64, Vec<String>, u64)>,
}

impl Timeline {
    /// The samples between `from` and `to` (seconds since the first sample) folded, rooted at
    /// each thread's track name.
    pub fn folded(&self, from: f64, to: f64) -> super::folded::Folded {
        let mut out = super::folded::Folded::new();
        for (thread, ms, frames, weight) in &self.samples {
            let secs = ms / 1000.0;
            if secs < from || secs > to {
                continue;
            }
            let mut stack = thread.clone();
            for f in frames {
                stack.push(';');
                stack.push_str(f);
            }
            *out.entry(stack).or_insert(0) += weight;
        }
        out
    }
}

/// Read a processed profile (as ember writes them; the tables any such file has).
pub fn read(bytes: &[u8]) -> Result<Timeline, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let threads = v["threads"].as_array().ok_or("no \"threads\"")?;
    let mut timeline = Timeline::default();
    for t in threads {
        read_thread(t, &mut timeline).ok_or("a thread without its tables")?;
    }
    Ok(timeline)
}

fn read_thread(t: &serde_json::Value, out: &mut Timeline) -> Option<()> {
    let column = |table: &str, name: &str| t[table][name].as_array();
    let strings = t["stringArray"].as_array()?;
    let (prefix, frame) = (
        column("stackTable", "prefix")?,
        column("stackTable", "frame")?,
    );
    let func = column("frameTable", "func")?;
    let func_name = column("funcTable", "name")?;
    let index = |v: &serde_json::Value| v.as_u64().map(|i| i as usize);
    let name = |frame_index: usize| -> Option<String> {
        let f = index(func.get(frame_index)?)?;
        let s = index(func_name.get(f)?)?;
        Some(strings.get(s)?.as_str()?.to_string())
    };
    let samples = &t["samples"];
    let stacks = samples["stack"].as_array()?;
    let deltas = samples["timeDeltas"].as_array()?;
    let weights = samples["weight"].as_array();
    let thread = t["name"].as_str().unwrap_or("?").to_string();
    let mut ms = 0.0;
    for (i, (s, d)) in stacks.iter().zip(deltas).enumerate() {
        ms += d.as_f64()?;
        let mut frames = Vec::new();
        let mut at = index(s);
        while let Some(k) = at {
            frames.push(name(index(frame.get(k)?)?)?);
            at = index(prefix.get(k)?);
        }
        frames.reverse();
        let weight = weights.and_then(|w| w.get(i)?.as_u64()).unwrap_or(1);
        out.samples.push((thread.clone(), ms, frames, weight));
    }
    Some(())
}
