//! Symbolization, after recording: every unique frame named once.

pub mod debuginfo;
pub mod debuginfod;
pub mod demangle;
pub mod elf;
pub mod inflated;
pub mod kernel;
pub mod perfmap;
pub mod syscalls;

use std::collections::HashMap;
use std::path::PathBuf;

use memmap2::Mmap;

use std::sync::Arc;

use crate::model::{Frame, FrameKind};
use crate::modules::{ModuleData, ModuleFile, ModuleId, ModuleTable};
use crate::profile::Profile;
use crate::python::CodeInfo;

use debuginfo::DebugDirs;
use debuginfod::Artifact;
pub use elf::FoundName;
use elf::{ElfSymbolizer, SymbolTable};
use kernel::KernelSymbols;
use perfmap::PerfMap;

/// A named frame, ready for the writers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SymbolFrame {
    /// Sanitized: no `;`, line breaks or characters that are invalid in XML.
    pub name: String,
    pub kind: FrameKind,
    /// Source file and line (the call site for frames that called on, the sampled line for
    /// the innermost), when DWARF knows them.
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl SymbolFrame {
    /// A frame known only by its name.
    pub fn named(name: String, kind: FrameKind) -> SymbolFrame {
        SymbolFrame {
            name,
            kind,
            file: None,
            line: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SymbolizeOptions {
    /// Show inlined functions as frames of their own.
    pub inline: bool,
    /// Where separate debug files are looked for.
    pub debug_dirs: DebugDirs,
    /// Servers that have what is not on disk (`DEBUGINFOD_URLS`), if any.
    pub debuginfod: Option<std::sync::Arc<debuginfod::Debuginfod>>,
    /// Where compressed DWARF is kept inflated, by build ID (`None`: inflated every time).
    pub dwarf_cache: Option<PathBuf>,
}

impl Default for SymbolizeOptions {
    fn default() -> Self {
        SymbolizeOptions {
            inline: true,
            debug_dirs: DebugDirs::default(),
            debuginfod: None,
            dwarf_cache: inflated::cache_dir(),
        }
    }
}

/// Names for every frame of a profile, indexed by frame id; each entry lists the frames an
/// address stands for, outermost first (more than one where functions were inlined).
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    pub frames: Vec<Vec<SymbolFrame>>,
    pub warnings: Vec<String>,
    /// What was asked of debuginfod servers, for `-v`.
    pub debuginfod: Vec<debuginfod::Query>,
}

/// Make a name safe for every output: folded stacks split on `;` and lines, SVG is XML.
pub fn sanitize(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            ';' => s.push(':'),
            '\n' | '\r' | '\t' => s.push(' '),
            c if c.is_control() => s.push('\u{FFFD}'),
            // Noncharacters and other code points XML 1.0 forbids.
            '\u{FFFE}' | '\u{FFFF}' => s.push('\u{FFFD}'),
            c => s.push(c),
        }
    }
    if s.is_empty() {
        s.push_str("[empty name]");
    }
    s
}

fn unnamed(module: &str, svma: u64) -> String {
    sanitize(&format!("{module}+0x{svma:x}"))
}

/// Where the names of frames come from: the modules, the JIT maps of the processes that
/// wrote one, and the Python code objects read while sampling (by id).
pub type Sources<'a> = (
    &'a ModuleTable,
    &'a HashMap<u32, PerfMap>,
    &'a HashMap<u32, CodeInfo>,
);

/// Name every frame of `profile` from `sources`. Each module's file is parsed once; modules
/// are worked on in parallel.
pub fn symbolize(profile: &Profile, sources: Sources, opts: &SymbolizeOptions) -> Symbols {
    let mut once = Opened {
        once: true,
        ..Opened::default()
    };
    name_frames(profile.frames(), sources, &mut once, opts)
}

/// A frame that needs no file opened: a marker, JIT code (from the process's perf map) or a
/// Python function (from its code object); `None` for frames named from files.
fn name_at_once(
    f: Frame,
    perf_maps: &HashMap<u32, PerfMap>,
    python: &HashMap<u32, CodeInfo>,
) -> Option<SymbolFrame> {
    let marker = |name: String| SymbolFrame::named(name, FrameKind::Marker);
    Some(match f {
        Frame::Truncated => marker("[truncated]".into()),
        Frame::PythonCut => marker("[python: unreadable frames]".into()),
        Frame::OffCpu(reason) => marker(syscalls::wait_label(reason)),
        Frame::Python { code, line } => python_frame(python.get(&code), code, line),
        Frame::Anon { pid, addr } => match perf_maps.get(&pid).and_then(|m| m.lookup(addr)) {
            Some(name) => SymbolFrame::named(sanitize(name), FrameKind::Jit),
            None => SymbolFrame::named(format!("[anon]+0x{addr:x}"), FrameKind::Native),
        },
        Frame::Module { .. } | Frame::Kernel(_) => return None,
    })
}

/// A Python frame: its function's qualified name, its file and line (what the writers show
/// as `handler (app.py)`, or `handler (app.py:42)` with `--lines`).
fn python_frame(code: Option<&CodeInfo>, id: u32, line: u32) -> SymbolFrame {
    match code {
        Some(c) => SymbolFrame {
            name: sanitize(&c.qualname),
            kind: FrameKind::Python,
            file: Some(sanitize(&c.filename)),
            line: (line > 0).then_some(line),
        },
        None => SymbolFrame::named(format!("[python code {id}]"), FrameKind::Python),
    }
}

/// What a caller that names addresses again and again (`ember top`) keeps between calls:
/// every module opened for naming, and the kernel's symbols once a kernel frame needed them.
#[derive(Default)]
pub struct Opened {
    modules: HashMap<ModuleId, ModuleNamer>,
    kernel: Option<KernelSymbols>,
    /// Names are asked for once: a module is opened for the addresses asked for now only.
    once: bool,
}

impl Opened {
    /// Let go of what was opened to name modules `ids`.
    pub fn forget(&mut self, ids: &std::collections::HashSet<ModuleId>) {
        self.modules.retain(|id, _| !ids.contains(id));
    }
}

/// Name `frames` (entry `i` of the result names `frames[i]`), from the modules and JIT maps
/// in `sources`, opening what `opened` does not hold yet (and keeping it there).
pub fn name_frames(
    frames: &[Frame],
    sources: Sources,
    opened: &mut Opened,
    opts: &SymbolizeOptions,
) -> Symbols {
    let (modules, perf_maps, python) = sources;
    let mut out: Vec<Vec<SymbolFrame>> = vec![Vec::new(); frames.len()];
    let mut by_module: HashMap<ModuleId, Vec<(usize, u64)>> = HashMap::new();
    let mut in_kernel = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        match *f {
            Frame::Module { module, svma } => by_module.entry(module).or_default().push((i, svma)),
            Frame::Kernel(addr) => in_kernel.push((i, addr)),
            other => out[i] = name_at_once(other, perf_maps, python).into_iter().collect(),
        }
    }
    // The kernel's symbols, when they must be read first, are read while the modules' files
    // are parsed; otherwise (none asked for, or already read) no thread is needed.
    let kernel = &mut opened.kernel;
    let once = opened.once;
    let (kernel_names, module_names) = if in_kernel.is_empty() || kernel.is_some() {
        (
            name_kernel_frames(kernel, &in_kernel, once),
            symbolize_modules(modules, by_module, (&mut opened.modules, once), opts),
        )
    } else {
        std::thread::scope(|scope| {
            let kernel_names = scope.spawn(|| name_kernel_frames(kernel, &in_kernel, once));
            let module_names =
                symbolize_modules(modules, by_module, (&mut opened.modules, once), opts);
            (
                kernel_names.join().expect("kernel naming panicked"),
                module_names,
            )
        })
    };
    for (i, names) in kernel_names.into_iter().chain(module_names) {
        out[i] = names;
    }
    let mut warnings = Vec::new();
    if opened.kernel.as_ref().is_some_and(|k| k.hidden) {
        warnings.push(
            "kernel addresses are hidden (kernel.kptr_restrict); kernel frames show as [kernel]"
                .to_string(),
        );
    }
    let queries = opts
        .debuginfod
        .as_ref()
        .map(|d| d.queries())
        .unwrap_or_default();
    warnings.extend(debuginfod::failure_warnings(&queries));
    Symbols {
        frames: out,
        warnings,
        debuginfod: queries,
    }
}

/// Name kernel addresses (frame index, address), reading the kernel's symbols into `kernel`
/// the first time any is asked for (`once`: only what names these).
fn name_kernel_frames(
    kernel: &mut Option<KernelSymbols>,
    addrs: &[(usize, u64)],
    once: bool,
) -> Vec<(usize, Vec<SymbolFrame>)> {
    if addrs.is_empty() {
        return Vec::new();
    }
    let k = kernel.get_or_insert_with(|| match once {
        true => KernelSymbols::load_for(&addrs.iter().map(|&(_, a)| a).collect::<Vec<_>>()),
        false => KernelSymbols::load(),
    });
    let name = |addr| {
        k.lookup(addr)
            .map_or_else(|| "[kernel]".to_string(), sanitize)
    };
    addrs
        .iter()
        .map(|&(i, addr)| (i, vec![SymbolFrame::named(name(addr), FrameKind::Kernel)]))
        .collect()
}

/// Name the addresses of every module, each module's file opened once (or taken from
/// `opened`, where the opened ones go back; `once`: for these addresses only), on as many
/// threads as there are cores: (frame index, names) for each address.
fn symbolize_modules(
    modules: &ModuleTable,
    by_module: HashMap<ModuleId, Vec<(usize, u64)>>,
    (opened, once): (&mut HashMap<ModuleId, ModuleNamer>, bool),
    opts: &SymbolizeOptions,
) -> Vec<(usize, Vec<SymbolFrame>)> {
    let mut jobs: Vec<ModuleJob> = by_module
        .into_iter()
        .map(|(id, addrs)| ModuleJob {
            id,
            addrs,
            namer: opened.remove(&id),
            names: Vec::new(),
        })
        .collect();
    // Taken from the end: the biggest jobs first, so that the threads end together.
    jobs.sort_by_key(|j| j.addrs.len());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(jobs.len().max(1));
    let todo = std::sync::Mutex::new(jobs);
    let done: Vec<ModuleJob> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(mut job) = todo.lock().map(|mut t| t.pop()).unwrap_or(None) {
                        let namer = job.namer.get_or_insert_with(|| {
                            let only: Vec<u64> = job.addrs.iter().map(|&(_, a)| a).collect();
                            let only = once.then_some(&only[..]);
                            ModuleNamer::open(modules.get(job.id), opts, only)
                        });
                        job.names = job.addrs.iter().map(|&(i, a)| (i, namer.name(a))).collect();
                        done.push(job);
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("symbolizer thread panicked"))
            .collect()
    });
    let mut out = Vec::new();
    for job in done {
        out.extend(job.names);
        if let Some(namer) = job.namer {
            opened.insert(job.id, namer);
        }
    }
    out
}

/// The addresses of one module to name (frame index, SVMA), and what naming them gave.
struct ModuleJob {
    id: ModuleId,
    addrs: Vec<(usize, u64)>,
    namer: Option<ModuleNamer>,
    names: Vec<(usize, Vec<SymbolFrame>)>,
}

/// One module opened for naming: its symbols and DWARF (from a separate debug file where
/// there is one), kept as long as its owner wants names.
pub struct ModuleNamer {
    short: String,
    symbolizer: Option<ElfSymbolizer>,
}

impl ModuleNamer {
    /// Open `module`'s file, its separate debug file and MiniDebugInfo (on disk, or from a
    /// debuginfod server). With `only`, no address but those (SVMAs) will be named.
    pub fn open(module: &ModuleFile, opts: &SymbolizeOptions, only: Option<&[u64]>) -> ModuleNamer {
        let short = module.short_name().to_string();
        let data = module
            .data
            .clone()
            .or_else(|| fetch_executable(module, opts).map(mapped));
        let Some(file) = data.as_ref().and_then(|d| object::File::parse(&***d).ok()) else {
            return ModuleNamer {
                short,
                symbolizer: None,
            };
        };
        let data = data.as_ref().expect("parsed above");
        // Separate debug info, when there is some: its DWARF and symbols come first.
        let debug = find_debug(module, &file, opts).map(|(_, m)| mapped(m));
        let debug_file = debug.as_ref().and_then(|m| object::File::parse(&***m).ok());
        let mini = debuginfo::mini_debug_info(&file).map(|v| Arc::new(ModuleData::Owned(v)));
        let mini_file = mini.as_ref().and_then(|m| object::File::parse(&***m).ok());
        let cache = opts.dwarf_cache.as_deref();
        let mut symbolizer = match (&debug_file, &debug) {
            (Some(d), Some(bytes)) if has_dwarf(d) || !has_dwarf(&file) => {
                let mut s = ElfSymbolizer::new(d, bytes, opts.inline, only, cache);
                s.add_symbols(SymbolTable::new(&file, data));
                s
            }
            _ => ElfSymbolizer::new(&file, data, opts.inline, only, cache),
        };
        if let (Some(m), Some(bytes)) = (&mini_file, &mini) {
            symbolizer.add_symbols(SymbolTable::new(m, bytes));
        }
        ModuleNamer {
            short,
            symbolizer: Some(symbolizer),
        }
    }

    /// The names of `svma`, outermost first; the module and address where nothing is known.
    pub fn name(&self, svma: u64) -> Vec<SymbolFrame> {
        let found = self
            .symbolizer
            .as_ref()
            .map(|s| s.lookup(svma))
            .unwrap_or_default();
        if found.is_empty() {
            return vec![SymbolFrame::named(
                unnamed(&self.short, svma),
                FrameKind::Native,
            )];
        }
        found
            .into_iter()
            .map(|f| SymbolFrame {
                name: sanitize(&f.name),
                kind: if f.inlined {
                    FrameKind::Inlined
                } else {
                    FrameKind::Native
                },
                file: f.file.as_deref().map(sanitize),
                line: f.line,
            })
            .collect()
    }
}

fn mapped(map: Mmap) -> Arc<ModuleData> {
    Arc::new(ModuleData::Mapped(map))
}

fn has_dwarf(f: &object::File) -> bool {
    use object::{Object, ObjectSection};
    f.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0 && s.kind() != object::SectionKind::UninitializedData)
}

/// The separate debug file of `module` (parsed as `file`): on disk, or — when neither the
/// module nor what is on disk has DWARF — from a debuginfod server.
fn find_debug(
    module: &ModuleFile,
    file: &object::File,
    opts: &SymbolizeOptions,
) -> Option<(PathBuf, Mmap)> {
    if !module.path.starts_with('/') {
        return None;
    }
    let local = debuginfo::find_debug_file(&module.path, file, &opts.debug_dirs);
    let local_dwarf = local
        .as_ref()
        .and_then(|(_, m)| object::File::parse(&**m).ok())
        .is_some_and(|f| has_dwarf(&f));
    if local_dwarf || has_dwarf(file) {
        return local;
    }
    let fetched = opts.debuginfod.as_ref().and_then(|d| {
        use object::Object;
        let id = file.build_id().ok().flatten()?;
        let path = d.find(id, Artifact::Debuginfo, &module.path)?;
        let map = debuginfo::map(&path)?;
        Some((path, map))
    });
    fetched.or(local)
}

/// The executable of a module ember could not open (deleted, replaced), from a debuginfod
/// server, when its build id is known.
fn fetch_executable(module: &ModuleFile, opts: &SymbolizeOptions) -> Option<Mmap> {
    if module.data.is_some() || !module.path.starts_with('/') {
        return None;
    }
    let id = module.build_id.as_deref()?;
    let path = opts
        .debuginfod
        .as_ref()?
        .find(id, Artifact::Executable, &module.path)?;
    debuginfo::map(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_removes_separators_and_control_characters() {
        assert_eq!(sanitize("a;b\nc\u{7}d"), "a:b c\u{FFFD}d");
        assert_eq!(sanitize(""), "[empty name]");
        assert_eq!(sanitize("<script>&"), "<script>&");
    }

    #[test]
    fn symbolizes_a_function_of_this_test_binary() {
        // Find the address of a known function in our own executable and look it up.
        let exe = std::env::current_exe().unwrap();
        let data = Arc::new(ModuleData::Owned(std::fs::read(&exe).unwrap()));
        let file = object::File::parse(&**data).unwrap();
        let s = ElfSymbolizer::new(&file, &data, true, None, None);
        use object::{Object, ObjectSymbol};
        let target = file
            .symbols()
            .find(|x| {
                x.size() > 0
                    && demangle::demangle(x.name().unwrap_or("")).ends_with("symbolize::sanitize")
            })
            .expect("sanitize symbol");
        let names = s.lookup(target.address() + 1);
        assert!(
            names
                .iter()
                .any(|n| n.name.ends_with("symbolize::sanitize")),
            "{names:?}"
        );
    }
}
