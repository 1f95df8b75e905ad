//! Perf events, with ptrace taking over the processes whose stacks outgrow perf's copies.
//!
//! A perf sample carries a copy of at most 64 KiB of the user stack (32 KiB by default): in a
//! program that is deeper than that and has no frame pointers (a compiler, a deep recursion)
//! a sample unwinds only as far as its copy goes, and its stack hangs under `[truncated]`
//! instead of under its callers. Memory read later cannot be proven to be the same stack (the
//! thread runs on), but a stopped thread's can: the ptrace backend stops a thread at the end
//! of each period of its own CPU clock, where perf events would have sampled it, and copies
//! its whole stack.
//!
//! So the processing side ([`crate::record`]) counts, per process, the samples whose copy
//! ran out before the thread's first frame, and past a share asks for the process through
//! [`Requests`]. This sampler then seizes every thread of it with ptrace
//! ([`PtraceSampler::take_over`]); from the time of its takeover record on, the process's
//! samples are ptrace's and perf events' samples of it are left out (perf events follow
//! whole process trees and cannot leave one process out; they tell of its threads, names
//! and mappings as before). Processes the taken-over one starts stay with perf events.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ptrace::{PtraceConfig, PtraceSampler};
use super::{CommandState, OpenedEvent, RecordBatch, SampleLayout, Sampler};
use crate::linux;

/// How long the ring buffers are read often when recording starts: long enough for the
/// first reads to bring the command's first samples, which say whether its stacks are cut.
/// Each read wakes ember's threads (some 120 µs of CPU on this kind of machine), so not
/// after every process start: one started later is known from the read that brings its
/// first samples, and where those fill their stack copies the reader watches from then on.
pub const WATCH_START_NS: u64 = 50_000_000;
/// ... and after the first samples of a process whose stacks fill their copies (or the first
/// cut stack), until it is asked for.
pub const WATCH_DEEP_NS: u64 = 500_000_000;

/// Processes the processing side asks to be taken over, in the order asked; and until when
/// it asks for the ring buffers to be read often (it is watching for cut stacks).
#[derive(Clone)]
pub struct Requests {
    asked: Arc<Mutex<Vec<u32>>>,
    /// Monotonic ns.
    eager_until: Arc<AtomicU64>,
    /// An eventfd, readable once something was asked: the reader's wait ends at once.
    wake: Option<Arc<OwnedFd>>,
}

impl Default for Requests {
    fn default() -> Requests {
        Requests::new()
    }
}

impl Requests {
    pub fn new() -> Requests {
        // SAFETY: eventfd with flags; a valid descriptor is owned from here.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        Requests {
            asked: Arc::default(),
            eager_until: Arc::default(),
            // SAFETY: fd is a new descriptor nobody else owns.
            wake: (fd >= 0).then(|| Arc::new(unsafe { OwnedFd::from_raw_fd(fd) })),
        }
    }

    /// Ask for process `pid` to be taken over, waking the reader.
    pub fn ask(&self, pid: u32) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(pid);
        }
        if let Some(fd) = &self.wake {
            // SAFETY: writing 8 bytes from a valid u64 to an eventfd we own.
            unsafe { libc::write(fd.as_raw_fd(), (&1u64 as *const u64).cast(), 8) };
        }
    }

    /// The processes asked for since the last call.
    pub fn take(&self) -> Vec<u32> {
        if let Some(fd) = &self.wake {
            let mut n = 0u64;
            // SAFETY: reading 8 bytes into a valid u64 from a non-blocking eventfd.
            unsafe { libc::read(fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
        }
        self.asked
            .lock()
            .map(|mut asked| std::mem::take(&mut *asked))
            .unwrap_or_default()
    }

    /// Read often for the next `ns` nanoseconds: recording just started (or a process's stacks
    /// were just found to fill their copies), and the sooner its cut stacks are seen the
    /// fewer there are.
    pub fn watch(&self, ns: u64) {
        self.eager_until
            .fetch_max(crate::linux::sched::monotonic_ns() + ns, Ordering::Relaxed);
    }

    fn eager(&self) -> bool {
        crate::linux::sched::monotonic_ns() < self.eager_until.load(Ordering::Relaxed)
    }
}

/// How long a wait lasts at most while ptrace follows threads: it waits for their stops,
/// which must be handled at once, and perf events' ring buffers must still be read often
/// enough.
const READ_FOLLOWING_MS: i32 = 25;
/// ... and while the processing side watches for cut stacks: records reach it a read or two
/// after they are taken (it sees them in time order, up to where every buffer was read
/// before), and every read sooner is a few samples fewer cut before the takeover. Only for a
/// while: each read costs ember CPU.
const READ_WATCHING_MS: i32 = 10;

/// Perf events (read here or relayed), and ptrace for the processes taken over.
pub struct TakeoverSampler {
    perf: Box<dyn Sampler>,
    ptrace: Option<PtraceSampler>,
    config: PtraceConfig,
    /// The launched command, if any: ptrace reaps it once it waits for tracees.
    root: Option<u32>,
    requests: Requests,
    /// Processes taken over: (pid, name).
    taken: Vec<(u32, String)>,
    /// Processes ptrace was refused for: their stacks stay cut.
    refused: Vec<u32>,
    /// Processes whose samples filled their stack copies (watched once each).
    watched: HashSet<u32>,
    /// What the user should know of the takeovers.
    own_notes: Vec<String>,
    /// Perf events' notes, these, ptrace's (as of the last gathering).
    notes: Vec<String>,
}

impl TakeoverSampler {
    /// Sample with `perf`; processes asked for through `requests` are taken over by ptrace
    /// (configured by `config`). `root`: the launched command.
    pub fn new(
        perf: Box<dyn Sampler>,
        config: &PtraceConfig,
        root: Option<u32>,
        requests: Requests,
    ) -> TakeoverSampler {
        let mut perf = perf;
        if let Some(fd) = &requests.wake {
            perf.wake_on(fd.as_raw_fd());
        }
        let notes = perf.notes().to_vec();
        TakeoverSampler {
            perf,
            ptrace: None,
            config: config.clone(),
            root,
            requests,
            taken: Vec::new(),
            refused: Vec::new(),
            watched: HashSet::new(),
            own_notes: Vec::new(),
            notes,
        }
    }

    /// Take over the processes asked for since the last call.
    fn serve_requests(&mut self) {
        for pid in self.requests.take() {
            let traced = self.ptrace.as_ref().is_some_and(|p| p.traces(pid));
            if traced || self.refused.contains(&pid) {
                continue;
            }
            let (root, config) = (self.root, &self.config);
            let ptrace = self
                .ptrace
                .get_or_insert_with(|| PtraceSampler::for_takeover(root, config));
            match ptrace.take_over(pid) {
                Ok(()) => {
                    let name = String::from_utf8_lossy(&linux::comm(pid, pid)).into_owned();
                    self.taken.push((pid, name));
                }
                // Ended (or ending) since it was asked for: nothing to say.
                Err(_) if ending(pid) => self.refused.push(pid),
                Err(e) => {
                    self.refused.push(pid);
                    self.own_notes.push(format!(
                        "the stacks of process {pid} run deeper than perf events copy, and \
                         ptrace, which would copy them whole, was refused: {e}"
                    ));
                }
            }
        }
    }

    /// Whether ptrace follows threads (and must handle their stops at once).
    fn following(&self) -> bool {
        self.ptrace.as_ref().is_some_and(PtraceSampler::following)
    }

    /// The notes of both samplers and this one's, perf events' first (as they were before
    /// sampling started).
    fn gather_notes(&mut self) {
        let mut notes = self.perf.notes().to_vec();
        notes.extend(self.own_notes.iter().cloned());
        if let Some(p) = &self.ptrace {
            notes.extend(p.notes.iter().cloned());
        }
        self.notes = notes;
    }
}

/// `PF_EXITING` in a task's flags: it is on its way out (ptrace refuses it).
const PF_EXITING: u64 = 0x4;

/// Whether process `pid` is gone, a zombie, or on its way out.
fn ending(pid: u32) -> bool {
    match linux::proc_state(pid) {
        Some((state, flags)) => matches!(state, 'Z' | 'X') || flags & PF_EXITING != 0,
        None => true,
    }
}

impl Sampler for TakeoverSampler {
    fn layout(&self) -> SampleLayout {
        self.perf.layout()
    }

    /// A process whose samples fill their stack copies may be cut: the reader reads often
    /// for a while, so that the processing side judges it soon.
    fn drain(&mut self, batch: &mut RecordBatch) -> usize {
        self.serve_requests();
        let mut n = self.perf.drain(batch);
        for &pid in batch.full_copies() {
            if self.watched.insert(pid) {
                self.requests.watch(WATCH_DEEP_NS);
            }
        }
        if let Some(p) = &mut self.ptrace {
            n += p.drain(batch);
        }
        n
    }

    /// While ptrace follows threads it waits (their stops must be handled at once), a little
    /// at a time so that perf events' ring buffers are read often enough.
    fn wait(&mut self, timeout_ms: i32) {
        let timeout_ms = if self.requests.eager() {
            timeout_ms.min(READ_WATCHING_MS)
        } else if self.following() {
            timeout_ms.min(READ_FOLLOWING_MS)
        } else {
            timeout_ms
        };
        match &mut self.ptrace {
            Some(p) if p.following() => p.wait(timeout_ms),
            _ => self.perf.wait(timeout_ms),
        }
    }

    /// Detach from the processes taken over first: no stop of theirs waits for ember while
    /// perf events are closed.
    fn disable(&mut self) {
        if let Some(p) = &mut self.ptrace {
            p.disable();
        }
        self.perf.disable();
        self.gather_notes();
    }

    fn event(&self) -> OpenedEvent {
        self.perf.event()
    }

    fn detail(&self) -> String {
        let perf = self.perf.detail();
        let Some(ptrace) = &self.ptrace else {
            return perf;
        };
        let taken: Vec<String> = self
            .taken
            .iter()
            .map(|(pid, name)| format!("{name} (pid {pid})"))
            .collect();
        format!(
            "{perf}\nember: taken over by ptrace (stacks deeper than perf events copy, or Python \
             frames to read at its stops): {}\nember: {}",
            taken.join(", "),
            ptrace.detail()
        )
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Once ptrace waits for tracees it reaps the command too.
    fn command_state(&self) -> CommandState {
        match &self.ptrace {
            Some(p) if p.command_state() != CommandState::NotReaped => p.command_state(),
            _ => self.perf.command_state(),
        }
    }

    fn has_ring_buffers(&self) -> bool {
        self.perf.has_ring_buffers()
    }

    fn relayed(&self) -> bool {
        self.perf.relayed()
    }

    fn samples_switches(&self) -> bool {
        self.perf.samples_switches()
    }

    fn take_bpf_maps(&mut self) -> Option<super::bpf::BpfMaps> {
        self.perf.take_bpf_maps()
    }
}
