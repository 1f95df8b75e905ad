//! Records to profile samples: the work done per record while recording (parse, unwind,
//! aggregate), keeping the process table current.

use std::collections::HashMap;

use super::kernel_python::KernelPythons;
use super::kernel_walk::KernelWalkMaps;
use super::python::PythonFrames;
use super::takeovers::Takeovers;
use crate::model::stack_reads::KnownStacks;
use crate::model::Frame;
use crate::model::RawFrame;
use crate::model::{CallGraph, Event, ForkEvent, SampleEvent, StackPart, SwitchEvent};
use crate::modules::LoadSegment;
use crate::process::{Mapping, ProcessTable};
use crate::profile::Profile;
use crate::sampler::bpf::BpfMaps;
use crate::sampler::takeover::Requests;
use crate::sampler::SampleLayout;
use crate::symbolize::perfmap::PerfMap;
use crate::unwind::{StackUnwinder, UnwindStats};
use crate::unwind_table::check::TableCheck;
use crate::waits::Waits;

/// Turns records into profile samples, keeping the process table current: the work done
/// per record while recording (parse, unwind, aggregate). Public so benches can drive it with
/// captured records.
pub struct Collector {
    pub(super) layout: SampleLayout,
    pub(super) procs: ProcessTable,
    pub(super) unwinder: StackUnwinder,
    pub(super) profile: Profile,
    raw: Vec<RawFrame>,
    frames: Vec<Frame>,
    pub(super) parse_errors: u64,
    /// Samples of the `--every` windows already written (the profile holds the current one).
    pub(super) earlier_windows: u64,
    /// Samples the kernel lost in those windows.
    pub(super) earlier_lost: u64,
    /// Files let go of after windows because no process mapped them any more.
    pub(super) forgotten_files: usize,
    /// When the current window began (`None`: with the recording).
    pub(super) window_began: Option<std::time::Instant>,
    /// JIT maps (`/tmp/perf-PID.map`) of processes, read when they exit or at the end.
    pub(super) perf_maps: HashMap<u32, PerfMap>,
    /// Wall-clock accounting of switched-out threads (perf events with `--off-cpu`).
    waits: Option<Waits>,
    /// Records that belong to the next sample of a thread (same thread and time): more of its
    /// stack, and words above its copy (`EMBER_RECORD_STACK_PART`, `_STACK_WORDS`).
    extras: StackExtras,
    /// A sample's whole stack: its own copy followed by its parts.
    whole_stack: Vec<u8>,
    /// Where what the unwinds of deep ptrace stacks read is left for the sampler.
    known_stacks: Option<KnownStacks>,
    /// Processes whose stacks outgrow perf events' copies, taken over by ptrace.
    pub(super) takeovers: Takeovers,
    /// Python processes, their code objects, and samples given Python frames.
    pub(super) python: PythonFrames,
    /// The unwind tables checked against the DWARF unwinder (a debug mode).
    pub(super) table_check: Option<TableCheck>,
    /// The stack walk in the kernel's maps, kept current.
    pub(super) kernel_walk: Option<KernelWalkMaps>,
    /// Python processes whose frames the walk in the kernel reads.
    pub(super) kernel_pythons: KernelPythons,
    /// Where windows are pushed (`--push`), once sampling is over.
    pub(super) pusher: Option<super::push::Pusher>,
}

/// What a collector is built with: how the sampler lays records out, and what it does beyond
/// unwinding and counting.
pub struct CollectorSetup {
    pub layout: SampleLayout,
    pub call_graph: CallGraph,
    /// Where what the unwinds of deep ptrace stacks read is left for the ptrace sampler's
    /// next stop of their thread ([`crate::model::stack_reads`]).
    pub known_stacks: Option<KnownStacks>,
    /// Where to ask for processes to be taken over by ptrace ([`crate::sampler::takeover`]):
    /// those that run Python, and with `true` those whose stacks outgrow perf events' copies.
    pub takeovers: Option<(Requests, bool)>,
    /// Count samples taken at switch-out as waits until switch-in, at this frequency.
    pub waits_at: Option<u64>,
    /// Walk every sample again with the unwind tables alone, and compare.
    pub check_tables: bool,
    /// The maps of the stack walk in the kernel, where it runs.
    pub bpf_maps: Option<BpfMaps>,
}

impl CollectorSetup {
    /// A collector that only unwinds and counts.
    pub fn new(layout: SampleLayout, call_graph: CallGraph) -> CollectorSetup {
        CollectorSetup {
            layout,
            call_graph,
            known_stacks: None,
            takeovers: None,
            waits_at: None,
            check_tables: false,
            bpf_maps: None,
        }
    }
}

/// How a recording stands, for the live status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordingCounts {
    pub samples: u64,
    pub lost: u64,
    pub threads: usize,
    pub processes: usize,
}

impl Collector {
    /// What has been taken so far.
    pub(super) fn counts(&self) -> RecordingCounts {
        RecordingCounts {
            samples: self.profile.total_samples() + self.earlier_windows,
            lost: self.profile.meta.lost.saturating_add(self.earlier_lost),
            threads: self.procs.threads().count(),
            processes: self.procs.processes().count(),
        }
    }

    pub fn new(setup: CollectorSetup) -> Collector {
        Collector {
            layout: setup.layout,
            procs: ProcessTable::new(),
            unwinder: StackUnwinder::new(setup.call_graph),
            profile: Profile::new(),
            raw: Vec::new(),
            frames: Vec::new(),
            parse_errors: 0,
            earlier_windows: 0,
            earlier_lost: 0,
            forgotten_files: 0,
            window_began: None,
            perf_maps: HashMap::new(),
            waits: setup.waits_at.map(Waits::new),
            extras: StackExtras::default(),
            whole_stack: Vec::new(),
            known_stacks: setup.known_stacks,
            takeovers: setup
                .takeovers
                .map(|(requests, deep)| Takeovers::new(requests, deep))
                .unwrap_or_default(),
            python: PythonFrames::default(),
            table_check: setup.check_tables.then(TableCheck::new),
            kernel_walk: setup.bpf_maps.map(KernelWalkMaps::new),
            kernel_pythons: KernelPythons::default(),
            pusher: None,
        }
    }

    /// Have `notify` called (on another thread) when rows built for the walk in the kernel
    /// are ready to be placed with [`Collector::place_built_rows`].
    pub(super) fn when_rows_built(&mut self, notify: crate::unwind_table::builder::Notify) {
        if let Some(k) = &mut self.kernel_walk {
            k.notify_built(notify);
        }
    }

    /// Place the rows built since last asked, for the processes that map their files.
    pub(super) fn place_built_rows(&mut self) {
        if let Some(k) = &mut self.kernel_walk {
            k.take_built(&self.procs);
        }
    }

    /// A batch of records was handled: files left out of the walk's rows for room are tried
    /// again now and then (room is given back as processes end, and a long-lived process
    /// whose file did not fit should not wait for the next exit to have its rows).
    pub(super) fn after_batch(&mut self) {
        if let Some(k) = self.kernel_walk.as_mut().filter(|k| k.has_left_out()) {
            k.release_unmapped(&self.procs);
        }
    }

    /// The recording ended at `time`: count the waits still going on.
    pub fn finish(&mut self, time: u64) {
        if let Some(w) = &mut self.waits {
            w.finish(&mut self.profile, time);
        }
    }

    /// Things the user should know, for the summary and the outputs.
    pub(super) fn warn(&mut self, warnings: impl IntoIterator<Item = String>) {
        self.profile.meta.warnings.extend(warnings);
    }

    /// The profile so far.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// How unwinding went so far.
    pub fn unwind_stats(&self) -> UnwindStats {
        self.unwinder.stats
    }

    /// Process one raw perf record.
    pub fn handle(&mut self, rec: &[u8]) {
        let ev = match self.layout.parse(rec) {
            Ok(Some(ev)) => ev,
            Ok(None) => return,
            Err(_) => {
                self.parse_errors += 1;
                return;
            }
        };
        match ev {
            Event::Sample(s) if self.extras.is_empty() => self.on_sample(&s),
            Event::Sample(s) => self.on_sample_with_extras(s),
            Event::StackPart(part) => self.extras.for_sample(&part).0.extend(part.bytes),
            Event::StackWords(words) => self.extras.for_sample(&words).1.extend(words.bytes),
            Event::Switch(sw) => self.on_switch(sw),
            Event::Mmap(m) => {
                if m.executable {
                    let name = String::from_utf8_lossy(m.filename);
                    self.procs
                        .on_mmap(m.pid, m.start, m.len, m.pgoff, m.dev_ino, &name);
                    // The interpreter first: its frames need no rows, and its first
                    // samples should not wait for them.
                    if crate::python::may_be_interpreter(&name) {
                        self.on_interpreter_mapped(m.pid, m.start);
                    }
                    if let Some(k) = &mut self.kernel_walk {
                        k.update(m.pid, &self.procs);
                    }
                }
            }
            Event::Comm(c) => {
                if c.exec {
                    if let Some(known) = &self.known_stacks {
                        known.forget(c.tid);
                    }
                    self.python_execed(c.pid);
                }
                let name = String::from_utf8_lossy(c.name);
                self.procs.on_comm(c.pid, c.tid, &name, c.exec);
                if let (Some(k), true) = (&mut self.kernel_walk, c.exec) {
                    // The old program's mappings are gone from the program's view too.
                    k.execed(c.pid, &self.procs);
                    k.release_unmapped(&self.procs);
                }
            }
            Event::Fork(f) => {
                // A process forked from a Python one runs Python too (pre-fork servers,
                // multiprocessing): its frames are read as its parent's are.
                if f.pid == f.tid && f.pid != f.ppid && self.python.is_python(f.ppid) {
                    self.python.runs_python(f.pid);
                    if !self.python_forked(f.ppid, f.pid) {
                        self.takeovers.ask_now(f.pid);
                    }
                }
                self.procs.on_fork(f.pid, f.ppid, f.tid);
                if let (Some(k), true) = (&mut self.kernel_walk, f.pid == f.tid) {
                    k.update(f.pid, &self.procs);
                }
                self.profile.meta.lifetimes.entry(f.tid).or_default().0 = Some(f.time);
            }
            Event::Exit(f) => self.on_exit(f),
            // A count from the kernel (or from garbage): saturating, never wrapping.
            Event::Lost(n) => self.profile.meta.lost = self.profile.meta.lost.saturating_add(n),
            Event::TakenOver { pid, time } => self.takeovers.taken_over(pid, time),
            Event::Throttle => self.profile.meta.throttled += 1,
            Event::Unthrottle => {}
            Event::PythonProcess { pid, eval } => self.python.process(pid, eval),
            Event::PythonCode(code) => self.python.code(&code),
            Event::PythonStack(stack) => self.extras.for_sample(&stack).2.extend(stack.bytes),
        }
    }

    /// Unwind a sample, resolve its frames and count it (or, taken at a switch-out, start
    /// counting the wait it stands for).
    fn on_sample(&mut self, s: &SampleEvent) {
        if self.takeovers.leaves_out(s) {
            return;
        }
        let cut;
        let stale = match (&mut self.kernel_walk, s.walked) {
            (Some(k), Some(w)) => k.walked_with_old_rows(s.pid, s.time, &w).then_some(w),
            _ => None,
        };
        let s = match stale {
            Some(w) => {
                cut = SampleEvent {
                    walked: Some(w.first_frame_only()),
                    ..s.clone()
                };
                &cut
            }
            None => s,
        };
        self.procs.touch_thread(s.pid, s.tid);
        self.unwinder
            .unwind(self.procs.get(s.pid), s, &mut self.raw);
        // (A walk made with mappings that no longer held says nothing of the rows.)
        if stale.is_none() {
            self.check_tables(s);
        }
        if !s.python.is_empty() {
            self.python.splice(s.pid, s.python, &mut self.raw);
        } else if let Some(walk) = &s.walked {
            self.splice_kernel_python(s.pid, walk);
        }
        if !s.from_ptrace && s.walked.is_none_or(|w| self.walk_ended_for_good(s.pid, &w)) {
            let cut = self.raw.last() == Some(&RawFrame::Truncated);
            self.takeovers.unwound(s.pid, cut);
        } else if let Some(known) = &self.known_stacks {
            if let Some(reads) = self.unwinder.take_whole_reads() {
                known.keep(s.tid, reads);
            }
        }
        self.frames.clear();
        if let Some(reason) = s.off_cpu {
            self.frames.push(Frame::OffCpu(reason));
        }
        if s.switched_out {
            let Some(waits) = &mut self.waits else {
                return;
            };
            // The kernel part says what it waits for; the marker replaces it.
            self.frames.push(Frame::OffCpu(waits.reason(&self.raw)));
            self.raw.retain(|r| !matches!(r, RawFrame::Kernel(_)));
        } else if let Some(waits) = &mut self.waits {
            // Sampled running: any wait it was in is over.
            waits.end(&mut self.profile, s.tid, s.time);
        }
        push_frames(&mut self.frames, &self.raw, &self.procs, s.pid);
        match &mut self.waits {
            Some(waits) if s.switched_out => {
                waits.switched_out(&mut self.profile, s.pid, s.tid, &self.frames, s.time)
            }
            _ => self
                .profile
                .add_timed_sample(s.time, (s.pid, s.tid), &self.frames, 1),
        }
    }

    /// With `--debug-check-tables`: sample `s`, unwound into `self.raw`, walked again with
    /// the rows (or its walk in the kernel compared).
    fn check_tables(&mut self, s: &SampleEvent) {
        let Some(check) = &mut self.table_check else {
            return;
        };
        if s.walked.is_some() {
            let process = self.procs.get(s.pid);
            let modules = &self.procs.modules;
            check.compare_kernel_walk(s, &self.raw, |addr| {
                match process.and_then(|p| p.resolve(addr)) {
                    Some(r) => format!(
                        "{}+{:#x}",
                        modules.get(r.module).short_name(),
                        r.file_offset
                    ),
                    None => format!("{addr:#x}"),
                }
            });
            TableCheck::keep_kernel_walk(s, &mut self.raw);
        } else {
            check.compare(self.procs.get(s.pid), &self.procs.modules, s, &self.raw);
        }
    }

    /// Process `pid`, attached to, as read from /proc: a Python interpreter among its
    /// mappings is looked at as one mapped while recording is.
    pub(super) fn seeded(&mut self, pid: u32) {
        if let Some(k) = &mut self.kernel_walk {
            k.update(pid, &self.procs);
        }
        let starts: Vec<u64> = self
            .procs
            .get(pid)
            .into_iter()
            .flat_map(|p| p.mappings())
            .filter(|m| crate::python::may_be_interpreter(&self.procs.modules.get(m.module).path))
            .map(|m| m.start)
            .collect();
        for start in starts {
            self.on_interpreter_mapped(pid, start);
        }
    }

    /// A file that may be a Python interpreter was mapped at `start` in process `pid`: if it
    /// is one, the process is asked to be taken over by ptrace, at whose stops its Python
    /// frames are read. Where nothing is taken over (ptrace samples everything, or perf
    /// events alone were asked for) the file is not looked at here: the sampler does.
    fn on_interpreter_mapped(&mut self, pid: u32, start: u64) {
        if !self.takeovers.can_ask() && self.kernel_walk.is_none() {
            return;
        }
        let Some((module, pgoff)) = self
            .procs
            .get(pid)
            .and_then(|p| p.mapping(start))
            .map(|m| (m.module, m.pgoff))
        else {
            return;
        };
        let Some(data) = self.procs.modules.get(module).data.clone() else {
            return;
        };
        if let Some(file) = self.python.interpreter(module, &data) {
            // Read by the walk in the kernel where it runs; else at ptrace's stops.
            let reader = KernelPythons::reader(pid, file, (start, pgoff));
            self.python.runs_python(pid);
            if !self.read_python_in_kernel(pid, reader) {
                self.takeovers.ask_now(pid);
            }
        }
    }

    /// Put the Python frames the walk in the kernel read (`walk`, of a sample of `pid`) in
    /// place of the evaluation loop's frames.
    fn splice_kernel_python(&mut self, pid: u32, walk: &crate::model::KernelWalk) {
        let python = &mut self.python;
        let stack = self
            .kernel_pythons
            .stack(pid, walk, &mut |id, code| python.add_code(id, code));
        if let Some((frames, cut)) = stack {
            python.splice_frames(pid, frames, cut, &mut self.raw);
        }
    }

    /// Whether walk `w` of a sample of `pid` ended where it always will: in a file that has no
    /// rows in the kernel (left out for room, or without `.eh_frame`), so that ptrace would
    /// read its stacks whole where they are cut — whether it found a caller first or not (a
    /// static program left out has no frame with rows). A walk that ended in a file whose
    /// rows are not placed yet (a process's first moments, or while they are built) says
    /// nothing.
    fn walk_ended_for_good(&self, pid: u32, w: &crate::model::KernelWalk) -> bool {
        let Some(k) = &self.kernel_walk else {
            return false;
        };
        let module = self
            .procs
            .get(pid)
            .and_then(|p| p.mapping(w.at_end.ip))
            .map(|m| m.module);
        !w.copy_at_sample && module.is_some_and(|m| k.lacks_rows(m))
    }

    /// Have the walk in the kernel read the Python frames of `pid` with `reader`; false
    /// where it cannot (no walk in the kernel, an unknown version, a full map).
    fn read_python_in_kernel(
        &mut self,
        pid: u32,
        reader: Option<super::kernel_python::Reader>,
    ) -> bool {
        let (Some(k), Some(reader)) = (&mut self.kernel_walk, reader) else {
            return false;
        };
        if !k.set_python(pid, &reader.entry) {
            return false;
        }
        self.python.process(pid, reader.eval);
        self.kernel_pythons.add(pid, reader);
        true
    }

    /// Process `child`, forked from Python process `parent`, is read as its parent is
    /// (the same interpreter at the same addresses); false if not in the kernel.
    fn python_forked(&mut self, parent: u32, child: u32) -> bool {
        let reader = self.kernel_pythons.get(parent).cloned();
        self.read_python_in_kernel(child, reader)
    }

    /// Process `pid` ran `exec`: what ran Python there is gone (an interpreter it maps now
    /// is found again).
    fn python_execed(&mut self, pid: u32) {
        if let Some(k) = &mut self.kernel_walk {
            k.remove_python(pid);
        }
        self.kernel_pythons.ended(pid);
    }

    /// A sample after stack parts or words: with them, if they are its own.
    fn on_sample_with_extras(&mut self, s: SampleEvent) {
        let extras = std::mem::take(&mut self.extras);
        if (extras.tid, extras.time) != (s.tid, s.time) {
            self.extras = extras.emptied();
            return self.on_sample(&s);
        }
        let mut whole = std::mem::take(&mut self.whole_stack);
        let stack = if extras.parts.is_empty() {
            s.user_stack
        } else {
            whole.clear();
            whole.extend_from_slice(s.user_stack);
            whole.extend_from_slice(&extras.parts);
            &whole
        };
        self.on_sample(&SampleEvent {
            user_stack: stack,
            stack_words: &extras.words,
            python: &extras.python,
            ..s
        });
        self.whole_stack = whole;
        self.extras = extras.emptied();
    }

    fn on_switch(&mut self, sw: SwitchEvent) {
        if let Some(waits) = &mut self.waits {
            match (sw.out, sw.preempted) {
                (true, true) => waits.preempted(sw.tid),
                (true, false) => {}
                (false, _) => waits.end(&mut self.profile, sw.tid, sw.time),
            }
        }
    }

    fn on_exit(&mut self, f: ForkEvent) {
        self.profile.meta.lifetimes.entry(f.tid).or_default().1 = Some(f.time);
        if let Some(waits) = &mut self.waits {
            waits.end(&mut self.profile, f.tid, f.time);
        }
        self.procs.on_exit(f.pid, f.tid);
        if let Some(known) = &self.known_stacks {
            known.forget(f.tid);
        }
        if f.pid == f.tid {
            if let Some(k) = &mut self.kernel_walk {
                k.ended(f.pid);
                k.release_unmapped(&self.procs);
            }
            self.takeovers.ended(f.pid);
            self.python.ended(f.pid);
            self.kernel_pythons.ended(f.pid);
            // Read its JIT map while it is still there.
            self.load_perf_map(f.pid);
        }
    }
}

/// Stack parts, words and the Python stack for the sample of one thread at one time that
/// comes next.
#[derive(Default)]
struct StackExtras {
    tid: u32,
    time: u64,
    parts: Vec<u8>,
    words: Vec<u8>,
    python: Vec<u8>,
}

/// What a sample's extras are added to: its stack parts, words and Python stack.
type ExtrasOf<'a> = (&'a mut Vec<u8>, &'a mut Vec<u8>, &'a mut Vec<u8>);

impl StackExtras {
    fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.words.is_empty() && self.python.is_empty()
    }

    /// The extras of the sample `p` is for (those of another sample are dropped).
    fn for_sample(&mut self, p: &StackPart) -> ExtrasOf<'_> {
        if (self.tid, self.time) != (p.tid, p.time) {
            (self.tid, self.time) = (p.tid, p.time);
            self.parts.clear();
            self.words.clear();
            self.python.clear();
        }
        (&mut self.parts, &mut self.words, &mut self.python)
    }

    /// Empty, keeping the memory.
    fn emptied(mut self) -> StackExtras {
        self.parts.clear();
        self.words.clear();
        self.python.clear();
        self
    }
}

/// The profile's frames for unwound addresses of process `pid`: a module and its address
/// (SVMA) where the address is in a mapped file, the bare address otherwise. Neighbouring
/// frames are mostly in one mapping and one segment: the last ones found are tried first.
fn push_frames(frames: &mut Vec<Frame>, raw: &[RawFrame], procs: &ProcessTable, pid: u32) {
    let proc = procs.get(pid);
    let mut last: Option<(&Mapping, Option<&LoadSegment>)> = None;
    for &r in raw {
        frames.push(match r {
            RawFrame::Kernel(a) => Frame::Kernel(a),
            RawFrame::Truncated => Frame::Truncated,
            RawFrame::Python { code, line } => Frame::Python { code, line },
            RawFrame::PythonCut => Frame::PythonCut,
            RawFrame::User(a) => {
                if !last.is_some_and(|(m, _)| m.contains(a)) {
                    last = proc.and_then(|p| p.mapping(a)).map(|m| (m, None));
                }
                match &mut last {
                    Some((m, segment)) if !procs.modules.get(m.module).is_anonymous() => {
                        let offset = m.resolve(a).file_offset;
                        // An executable segment does not share file offsets with another.
                        if !segment.is_some_and(|s| s.executable && s.holds(offset)) {
                            *segment = procs.modules.get(m.module).segment_of(offset);
                        }
                        Frame::Module {
                            module: m.module,
                            svma: segment.map_or(offset, |s| s.svma_of(offset)),
                        }
                    }
                    _ => Frame::Anon { pid, addr: a },
                }
            }
        });
    }
}

impl Collector {
    /// Read the JIT map of `pid` (`/tmp/perf-PID.map`) once, while the process is there.
    pub(super) fn load_perf_map(&mut self, pid: u32) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.perf_maps.entry(pid) {
            if let Some(m) = PerfMap::load(pid) {
                e.insert(m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UserRegs;
    use crate::sampler::encode;

    fn sample(pid: u32, tid: u32, time: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let stack = [0u8; 64];
        encode::sample(
            &mut out,
            &encode::Sample {
                pid,
                tid,
                time,
                cpu: 0,
                regs: UserRegs {
                    ip: 0x401000,
                    sp: 0x7ff0_0000,
                    bp: 0,
                },
                kernel: &[],
                stack: &stack,
                words: &[],
                off_cpu: None,
            },
        );
        out
    }

    /// The records that would have named a process and its threads (FORK, COMM, MMAP) were
    /// lost: its samples still count, under the process they belong to, named by its PID.
    #[test]
    fn samples_of_processes_whose_records_were_lost_land_under_their_pid() {
        let mut c = Collector::new(CollectorSetup::new(encode::LAYOUT, CallGraph::Dwarf));
        let mut lost = Vec::new();
        encode::lost(&mut lost, 42, 42, 7, 1);
        c.handle(&lost);
        c.handle(&sample(42, 43, 2));
        c.handle(&sample(42, 44, 3));
        c.handle(&sample(42, 43, 4));
        assert_eq!(c.profile.meta.lost, 7);
        assert_eq!(c.profile.total_samples(), 3);
        let stacks = c.profile.stacks();
        assert!(stacks.iter().all(|&(pid, _, _, _)| pid == 42));
        assert_eq!(c.procs.get(42).map(|p| p.name.as_str()), Some("pid-42"));
        assert_eq!(c.procs.thread(44).map(|t| t.pid), Some(42));
    }

    /// Garbage instead of a record is counted and skipped, never a crash.
    #[test]
    fn truncated_records_are_counted_not_fatal() {
        let mut c = Collector::new(CollectorSetup::new(encode::LAYOUT, CallGraph::Dwarf));
        let s = sample(1, 1, 1);
        for cut in [8, 16, s.len() / 2] {
            c.handle(&s[..cut]);
        }
        assert_eq!(c.profile.total_samples(), 0);
        assert!(c.parse_errors >= 2, "{}", c.parse_errors);
    }
}
