//! What a live view (`ember top`) is fed: instead of files, every window of the profile goes
//! to the view as it ends, with the modules the view has not seen yet, until the view says quit.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use super::collector::{Collector, RecordingCounts};
use crate::modules::ModuleFile;
use crate::profile::Profile;

/// What a live view is told, in order: [`LiveEvent::Began`] once, then the windows.
pub enum LiveEvent {
    Began(Began),
    Window(Box<LiveWindow>),
}

/// Sampling began: what is sampled, and how.
#[derive(Clone, Debug)]
pub struct Began {
    /// The command line, or `name (pid N)` of each attached process.
    pub description: Vec<String>,
    /// The backend, as `-v` describes it.
    pub backend: String,
    /// The perf event (`cycles`, `cpu-clock`) or ptrace's timer.
    pub event: &'static str,
    /// The launched command's pid, or the attached ones.
    pub pids: Vec<u32>,
}

/// One window of samples.
pub struct LiveWindow {
    /// Its samples, with the processes and threads seen so far in the metadata.
    pub profile: Profile,
    /// Modules first seen since the last window, in id order: appended to the view's
    /// [`crate::modules::ModuleTable`], its ids are the profile's.
    pub new_modules: Vec<ModuleFile>,
    /// Python code objects first seen since the last window, by id.
    pub new_python: Vec<(u32, crate::python::CodeInfo)>,
    /// Modules no process maps any more, let go of by the recording since the last window
    /// (their frames may still be in windows the view keeps).
    pub gone_modules: Vec<crate::model::ModuleId>,
    /// The recording so far.
    pub counts: RecordingCounts,
    /// How long the window lasted.
    pub duration: Duration,
}

/// Where a live recording goes.
pub struct Feed {
    pub events: Sender<LiveEvent>,
    /// Set by the view to stop sampling (a launched command gets SIGTERM).
    pub quit: Arc<AtomicBool>,
    /// How long each window lasts.
    pub every: Duration,
}

/// The sending side, kept by the processing thread.
pub(super) struct WindowSender {
    events: Sender<LiveEvent>,
    /// Modules handed over already.
    modules_sent: usize,
    /// Python code objects handed over already.
    python_sent: std::collections::HashSet<u32>,
    /// Modules let go of since the last window.
    gone: Vec<crate::model::ModuleId>,
}

impl WindowSender {
    pub(super) fn new(events: Sender<LiveEvent>) -> WindowSender {
        WindowSender {
            events,
            modules_sent: 0,
            python_sent: Default::default(),
            gone: Vec::new(),
        }
    }

    /// Modules the recording let go of: told with the next window.
    pub(super) fn gone(&mut self, modules: Vec<crate::model::ModuleId>) {
        self.gone.extend(modules);
    }

    /// Hand a window over (a view that is gone drops it).
    pub(super) fn send(&mut self, profile: Profile, duration: Duration, collector: &Collector) {
        let new_modules = collector.procs.modules.since(self.modules_sent).to_vec();
        self.modules_sent += new_modules.len();
        let new_python = collector
            .python
            .codes
            .iter()
            .filter(|(id, _)| self.python_sent.insert(**id))
            .map(|(&id, code)| (id, code.clone()))
            .collect();
        let _ = self.events.send(LiveEvent::Window(Box::new(LiveWindow {
            profile,
            new_modules,
            new_python,
            gone_modules: std::mem::take(&mut self.gone),
            counts: collector.counts(),
            duration,
        })));
    }
}
