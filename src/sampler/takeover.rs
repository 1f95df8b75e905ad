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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ptrace::{PtraceConfig, PtraceSampler};
use super::{CommandState, OpenedEvent, RecordBatch, SampleLayout, Sampler};
use crate::linux;

/// Processes the processing side asks to be taken over, in the order asked; and until when
/// it asks for the ring buffers to be read often (it is watching for cut stacks).
#[derive(Clone, Default)]
pub struct Requests {
    asked: Arc<Mutex<Vec<u32>>>,
    /// Monotonic ns.
    eager_until: Arc<AtomicU64>,
}

impl Requests {
    pub fn new() -> Requests {
        Requests::default()
    }

    /// Ask for process `pid` to be taken over (at the reader's next read).
    pub fn ask(&self, pid: u32) {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(pid);
        }
    }

    /// The processes asked for since the last call.
    pub fn take(&self) -> Vec<u32> {
        self.asked
            .lock()
            .map(|mut asked| std::mem::take(&mut *asked))
            .unwrap_or_default()
    }

    /// Read often for the next `ns` nanoseconds: a process just started (or its stacks were
    /// just found cut), and the sooner its cut stacks are seen the fewer there are.
    pub fn watch(&self, ns: u64) {
        self.eager_until
            .fetch_max(super::monotonic_ns() + ns, Ordering::Relaxed);
    }

    fn eager(&self) -> bool {
        super::monotonic_ns() < self.eager_until.load(Ordering::Relaxed)
    }
}

/// How long a wait lasts at most while ptrace follows threads (it waits for their stops,
/// which must be handled at once: perf events' ring buffers must still be read often enough),
/// or while the processing side watches for cut stacks (records reach it a read or two after
/// they are taken: it sees them in time order, up to where every buffer was read before).
/// Reading this often costs ember about a seventh more CPU than every 100 ms.
const READ_OFTEN_MS: i32 = 25;

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
        let notes = perf.notes().to_vec();
        TakeoverSampler {
            perf,
            ptrace: None,
            config: config.clone(),
            root,
            requests,
            taken: Vec::new(),
            refused: Vec::new(),
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

    fn drain(&mut self, batch: &mut RecordBatch) -> usize {
        self.serve_requests();
        let mut n = self.perf.drain(batch);
        if let Some(p) = &mut self.ptrace {
            n += p.drain(batch);
        }
        n
    }

    /// While ptrace follows threads it waits (their stops must be handled at once), a little
    /// at a time so that perf events' ring buffers are read often enough.
    fn wait(&mut self, timeout_ms: i32) {
        let often = self.following() || self.requests.eager();
        let timeout_ms = if often {
            timeout_ms.min(READ_OFTEN_MS)
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
            "{perf}\nember: taken over by ptrace, their stacks deeper than perf events copy: \
             {}\nember: {}",
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
}
