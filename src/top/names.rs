//! Names for the live view: every new frame is named once, on a thread of its own, so the view
//! never waits for a large binary's debug info; until its name is ready a frame shows as its
//! module and address.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::Frame;
use crate::model::FrameKind;
use crate::modules::{ModuleFile, ModuleId, ModuleTable};
use crate::python::CodeInfo;
use crate::symbolize::perfmap::PerfMap;
use crate::symbolize::{self, SymbolFrame, SymbolizeOptions};

/// A function as the view counts it: its name and the module it is in.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Function {
    pub name: Arc<str>,
    pub module: Arc<str>,
}

/// One function an address stands for (several where functions were inlined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub function: Function,
    /// `file:line` of the address, when DWARF knows it.
    pub location: Option<Arc<str>>,
}

/// What the naming thread is asked: modules first seen, frames to name, and modules to let
/// go of.
struct Request {
    modules: Vec<ModuleFile>,
    python: Vec<(u32, CodeInfo)>,
    frames: Vec<Frame>,
    forget: HashSet<ModuleId>,
}

/// Modules and Python code objects first seen.
pub type NewSources = (Vec<ModuleFile>, Vec<(u32, CodeInfo)>);

/// What it answers.
struct Answer {
    named: Vec<(Frame, Vec<SymbolFrame>)>,
    warnings: Vec<String>,
}

/// Every frame's names as far as they are known, and the thread that finds the rest.
pub struct Names {
    known: HashMap<Frame, Arc<[Named]>>,
    /// The same names as the writers take them.
    symbols: HashMap<Frame, Vec<SymbolFrame>>,
    asked: HashSet<Frame>,
    /// The modules as the recording knows them (same ids), for names not ready yet and for
    /// the outputs written from the view.
    pub modules: ModuleTable,
    /// Windows asked about so far, and the one after which the recording let go of each
    /// module it let go of.
    windows: u64,
    gone_at: HashMap<ModuleId, u64>,
    requests: Sender<Request>,
    answers: Receiver<Answer>,
    /// Warnings of symbolization (a debug file that could not be fetched ...), once each.
    pub warnings: Vec<String>,
}

impl Names {
    /// Start the naming thread.
    pub fn start(opts: SymbolizeOptions) -> Names {
        let (requests, rx) = mpsc::channel();
        let (tx, answers) = mpsc::channel();
        std::thread::Builder::new()
            .name("ember-names".into())
            .spawn(move || name_until_closed(rx, tx, opts))
            .expect("spawn the naming thread");
        Names {
            known: HashMap::new(),
            symbols: HashMap::new(),
            asked: HashSet::new(),
            modules: ModuleTable::new(),
            windows: 0,
            gone_at: HashMap::new(),
            requests,
            answers,
            warnings: Vec::new(),
        }
    }

    /// Modules and Python code objects first seen, and the frames of a new window: those never
    /// asked for are named in the background.
    pub fn ask(&mut self, (modules, python): NewSources, frames: &[Frame]) {
        self.windows += 1;
        self.modules.append(modules.iter().cloned());
        let new: Vec<Frame> = frames
            .iter()
            .filter(|f| self.asked.insert(**f))
            .copied()
            .collect();
        if !new.is_empty() || !modules.is_empty() || !python.is_empty() {
            let _ = self.requests.send(Request {
                modules,
                python,
                frames: new,
                forget: HashSet::new(),
            });
        }
    }

    /// The recording let go of `modules` (no process maps them): their frames come in no
    /// window after this one.
    pub fn gone(&mut self, modules: &[ModuleId]) {
        let now = self.windows;
        self.gone_at.extend(modules.iter().map(|&id| (id, now)));
    }

    /// Let go of the names and files of modules gone more than `windows` windows ago (a
    /// server that runs for days keeps the names it may still be asked for); returns how
    /// many.
    pub fn forget_gone(&mut self, windows: u64) -> usize {
        let now = self.windows;
        let forget: HashSet<ModuleId> = self
            .gone_at
            .iter()
            .filter(|(_, &at)| now - at > windows)
            .map(|(&id, _)| id)
            .collect();
        if forget.is_empty() {
            return 0;
        }
        self.gone_at.retain(|id, _| !forget.contains(id));
        let of_forgotten =
            |f: &Frame| matches!(f, Frame::Module { module, .. } if forget.contains(module));
        self.known.retain(|f, _| !of_forgotten(f));
        self.symbols.retain(|f, _| !of_forgotten(f));
        self.asked.retain(|f| !of_forgotten(f));
        self.modules.forget(&forget);
        let n = forget.len();
        let _ = self.requests.send(Request {
            modules: Vec::new(),
            python: Vec::new(),
            frames: Vec::new(),
            forget,
        });
        n
    }

    /// Take the names found since the last call; true if there were some.
    pub fn update(&mut self) -> bool {
        let mut any = false;
        while let Ok(answer) = self.answers.try_recv() {
            any = true;
            for (frame, names) in answer.named {
                let named = names.iter().map(|s| self.named(frame, s)).collect();
                self.known.insert(frame, named);
                self.symbols.insert(frame, names);
            }
            for w in answer.warnings {
                if !self.warnings.contains(&w) {
                    self.warnings.push(w);
                }
            }
        }
        any
    }

    /// Frames asked for whose names are not ready yet.
    pub fn pending(&self) -> usize {
        self.asked.len() - self.known.len()
    }

    /// The functions `frame` stands for, outermost first: its names, or its module and
    /// address until they are ready.
    pub fn get(&self, frame: Frame) -> Arc<[Named]> {
        if let Some(n) = self.known.get(&frame) {
            return Arc::clone(n);
        }
        let placeholder = SymbolFrame::named(self.address(frame), FrameKind::Native);
        Arc::new([self.named(frame, &placeholder)])
    }

    /// Names in the form the writers take ([`SymbolFrame`]s), for a profile's frames.
    pub fn symbol_frames(&self, frames: &[Frame]) -> Vec<Vec<SymbolFrame>> {
        frames
            .iter()
            .map(|&f| match self.symbols.get(&f) {
                Some(names) => names.clone(),
                None => vec![SymbolFrame::named(self.address(f), FrameKind::Native)],
            })
            .collect()
    }

    fn named(&self, frame: Frame, s: &SymbolFrame) -> Named {
        let location = s.file.as_ref().map(|file| {
            let short = file.rsplit('/').next().unwrap_or(file);
            match s.line {
                Some(l) => Arc::from(format!("{short}:{l}")),
                None => Arc::from(short),
            }
        });
        Named {
            function: Function {
                name: Arc::from(s.name.as_str()),
                module: Arc::from(self.module_label(frame, s.kind)),
            },
            location,
        }
    }

    fn module_label(&self, frame: Frame, kind: FrameKind) -> String {
        match frame {
            Frame::Module { module, .. } => self.module_name(module.0 as usize),
            Frame::Kernel(_) => "kernel".into(),
            Frame::Anon { .. } if kind == FrameKind::Jit => "jit".into(),
            Frame::Anon { .. } => "anon".into(),
            Frame::Python { .. } => "python".into(),
            Frame::Truncated | Frame::OffCpu(_) | Frame::PythonCut => String::new(),
        }
    }

    fn module_name(&self, index: usize) -> String {
        if index < self.modules.len() {
            let id = ModuleId(index as u32);
            self.modules.get(id).short_name().to_string()
        } else {
            String::new()
        }
    }

    fn address(&self, frame: Frame) -> String {
        match frame {
            Frame::Module { module, svma } => {
                format!("{}+0x{svma:x}", self.module_name(module.0 as usize))
            }
            Frame::Kernel(a) => format!("[kernel]+0x{a:x}"),
            Frame::Anon { addr, .. } => format!("[anon]+0x{addr:x}"),
            Frame::Truncated => "[truncated]".into(),
            Frame::PythonCut => "[python: unreadable frames]".into(),
            Frame::OffCpu(_) => "[off-cpu]".into(),
            Frame::Python { code, .. } => format!("[python code {code}]"),
        }
    }
}

/// How often a process's JIT map is read again at most, when an address is not in it.
const PERF_MAP_AGE: Duration = Duration::from_secs(1);

/// The naming thread: answers requests (all waiting ones at once) until the view is gone.
fn name_until_closed(requests: Receiver<Request>, answers: Sender<Answer>, opts: SymbolizeOptions) {
    let mut modules = ModuleTable::new();
    let mut perf_maps = PerfMaps::default();
    let mut python = HashMap::new();
    // Each module is opened once, when its first address is named, and kept.
    let mut opened = symbolize::Opened::default();
    while let Ok(first) = requests.recv() {
        let mut frames = Vec::new();
        for r in std::iter::once(first).chain(requests.try_iter()) {
            modules.append(r.modules);
            python.extend(r.python);
            frames.extend(r.frames);
            if !r.forget.is_empty() {
                modules.forget(&r.forget);
                opened.forget(&r.forget);
            }
        }
        perf_maps.load(&frames);
        // A file at a time, smallest first: the program's own functions are named while a
        // large library's debug info is still being read.
        for group in by_file_size(frames, &modules) {
            let sources = (&modules, &perf_maps.maps, &python);
            let symbols = symbolize::name_frames(&group, sources, &mut opened, &opts);
            let answer = Answer {
                named: group.into_iter().zip(symbols.frames).collect(),
                warnings: symbols.warnings,
            };
            if answers.send(answer).is_err() {
                return;
            }
        }
    }
}

/// `frames` in groups of one module each (frames of no module in one group first), the
/// groups of smaller files first.
fn by_file_size(frames: Vec<Frame>, modules: &ModuleTable) -> Vec<Vec<Frame>> {
    let mut groups: HashMap<Option<ModuleId>, Vec<Frame>> = HashMap::new();
    for f in frames {
        let module = match f {
            Frame::Module { module, .. } => Some(module),
            _ => None,
        };
        groups.entry(module).or_default().push(f);
    }
    let size = |m: &Option<ModuleId>| {
        m.filter(|m| (m.0 as usize) < modules.len())
            .and_then(|m| modules.get(m).data.as_ref().map(|d| d.len()))
            .unwrap_or(0)
    };
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by_key(|(m, _)| (m.is_some(), size(m)));
    groups.into_iter().map(|(_, g)| g).collect()
}

/// The JIT maps (`/tmp/perf-PID.map`) of the processes sampled in anonymous memory.
#[derive(Default)]
struct PerfMaps {
    maps: HashMap<u32, PerfMap>,
    read_at: HashMap<u32, Instant>,
}

impl PerfMaps {
    /// Read the map of every process with an anonymous frame, again where it is older than
    /// [`PERF_MAP_AGE`] (a JIT writes its map as it compiles).
    fn load(&mut self, frames: &[Frame]) {
        let pids: HashSet<u32> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::Anon { pid, .. } => Some(*pid),
                _ => None,
            })
            .collect();
        for pid in pids {
            if self
                .read_at
                .get(&pid)
                .is_some_and(|at| at.elapsed() < PERF_MAP_AGE)
            {
                continue;
            }
            self.read_at.insert(pid, Instant::now());
            if let Some(m) = PerfMap::load(pid) {
                self.maps.insert(pid, m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::ModuleTable;

    /// A frame in this test binary's own code, and the module it is in.
    fn own_frame() -> (ModuleFile, Frame) {
        let exe = std::env::current_exe().unwrap();
        let mut table = ModuleTable::new();
        let id = table.insert_bytes("me", std::fs::read(&exe).unwrap());
        let module = table.get(id).clone();
        let svma = module.unwind.text_svma.as_ref().expect(".text").start + 16;
        (module, Frame::Module { module: id, svma })
    }

    fn wait_for_names(names: &mut Names) {
        let until = Instant::now() + Duration::from_secs(20);
        while names.pending() > 0 && Instant::now() < until {
            names.update();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(names.pending(), 0, "no names after 20 s");
    }

    #[test]
    fn names_of_modules_gone_long_enough_are_let_go_of() {
        let mut names = Names::start(SymbolizeOptions::default());
        let (module, frame) = own_frame();
        names.ask((vec![module], Vec::new()), &[frame]);
        wait_for_names(&mut names);
        let named = names.get(frame)[0].function.name.clone();
        assert!(!named.contains("+0x"), "{named}");
        // The recording let go of the module after this window; two more windows pass.
        let Frame::Module { module: id, .. } = frame else {
            unreachable!()
        };
        names.gone(&[id]);
        for _ in 0..2 {
            names.ask((Vec::new(), Vec::new()), &[]);
            assert_eq!(names.forget_gone(2), 0, "kept for two windows");
        }
        assert_eq!(names.get(frame)[0].function.name, named);
        names.ask((Vec::new(), Vec::new()), &[]);
        assert_eq!(names.forget_gone(2), 1);
        assert!(names.modules.get(id).data.is_none());
        assert_eq!(names.pending(), 0);
        assert!(names.get(frame)[0].function.name.contains("+0x"));
    }
}
