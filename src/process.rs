//! The process table: for every profiled process its name, threads and memory map, kept
//! current from `mmap`/`comm`/`fork`/`exit` records, and its unwinder.

use std::collections::{BTreeMap, HashMap, HashSet};

use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};

use crate::linux;
use crate::modules::{FileBytes, ModuleFile, ModuleId, ModuleTable};

pub type ProcessUnwinder = crate::arch::Unwinder<FileBytes>;

/// One mapping of a process's address space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub module: ModuleId,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// Where `addr`, which it contains, lies in its module.
    pub fn resolve(&self, addr: u64) -> Resolved {
        Resolved {
            module: self.module,
            file_offset: addr - self.start + self.pgoff,
        }
    }
}

/// Where an address lies: in a module, at a file offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub module: ModuleId,
    pub file_offset: u64,
}

#[derive(Clone)]
pub struct Process {
    pub pid: u32,
    pub name: String,
    maps: BTreeMap<u64, Mapping>,
    pub unwinder: ProcessUnwinder,
    pub alive: bool,
    /// The executable it runs: the first file mapped after `exec` (the kernel maps the
    /// program before its interpreter), or `/proc/PID/exe` when attaching.
    pub exe: Option<String>,
    /// The container or systemd service it runs in, where read (`-a`).
    pub container: Option<String>,
}

impl Process {
    fn new(pid: u32, name: String) -> Process {
        Process {
            pid,
            name,
            maps: BTreeMap::new(),
            unwinder: ProcessUnwinder::new(),
            alive: true,
            exe: None,
            container: None,
        }
    }

    pub fn resolve(&self, addr: u64) -> Option<Resolved> {
        self.mapping(addr).map(|m| m.resolve(addr))
    }

    /// The mapping `addr` lies in.
    pub fn mapping(&self, addr: u64) -> Option<&Mapping> {
        let (_, m) = self.maps.range(..=addr).next_back()?;
        m.contains(addr).then_some(m)
    }

    /// Add a mapping, cutting away the parts of older mappings it covers.
    fn map(&mut self, mapping: Mapping, module: &ModuleFile) {
        let (start, end) = (mapping.start, mapping.end);
        let overlapping: Vec<u64> = self
            .maps
            .range(..end)
            .filter(|(_, m)| m.end > start)
            .map(|(&s, _)| s)
            .collect();
        for s in overlapping {
            let old = self.maps.remove(&s).expect("listed");
            self.unwinder.remove_module(old.start);
            if old.start < start {
                let mut left = old.clone();
                left.end = start;
                self.maps.insert(left.start, left);
            }
            if old.end > end {
                let mut right = old.clone();
                right.pgoff += end - old.start;
                right.start = end;
                self.maps.insert(right.start, right);
            }
        }
        if module.data.is_some() {
            self.unwinder.add_module(unwind_module(&mapping, module));
        }
        self.maps.insert(start, mapping);
    }

    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.maps.values()
    }
}

/// Describe a mapped module to framehop: its address range and where its SVMA 0 lies.
fn unwind_module(mapping: &Mapping, module: &ModuleFile) -> Module<FileBytes> {
    let base_avma = module.load_bias(mapping.start, mapping.pgoff, mapping.end - mapping.start);
    let u = &module.unwind;
    let info = ExplicitModuleSectionInfo {
        base_svma: 0,
        text_svma: u.text_svma.clone(),
        text: u.text.clone(),
        got_svma: u.got_svma.clone(),
        eh_frame_svma: u.eh_frame_svma.clone(),
        eh_frame: u.eh_frame.clone(),
        eh_frame_hdr_svma: u.eh_frame_hdr_svma.clone(),
        eh_frame_hdr: u.eh_frame_hdr.clone(),
        debug_frame: u.debug_frame.clone(),
        stubs_svma: None,
        stub_helper_svma: None,
        unwind_info: None,
        text_segment_svma: None,
        text_segment: None,
    };
    Module::new(
        module.path.clone(),
        mapping.start..mapping.end,
        base_avma,
        info,
    )
}

#[derive(Clone, Debug)]
pub struct ThreadInfo {
    pub pid: u32,
    pub name: String,
}

#[derive(Default)]
pub struct ProcessTable {
    procs: HashMap<u32, Process>,
    threads: HashMap<u32, ThreadInfo>,
    pub modules: ModuleTable,
    /// Read which container or service each process runs in (at `exec`, and when read from
    /// /proc).
    pub read_containers: bool,
}

impl ProcessTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.procs.values()
    }

    /// Forget the processes that have ended, and their threads; returns their ids. (Their
    /// files stay known: the modules are shared, and processes that start later map them.)
    pub fn forget_ended(&mut self) -> Vec<u32> {
        let ended: Vec<u32> = self
            .procs
            .values()
            .filter(|p| !p.alive)
            .map(|p| p.pid)
            .collect();
        for pid in &ended {
            self.procs.remove(pid);
        }
        let procs = &self.procs;
        self.threads.retain(|_, t| procs.contains_key(&t.pid));
        ended
    }

    /// Let go of the files that no process still known maps (call after
    /// [`ProcessTable::forget_ended`], once the profile holding their frames is named): a
    /// recording of hours holds the files of what runs now. Returns those let go of.
    pub fn forget_unmapped_files(&mut self) -> Vec<ModuleId> {
        let mapped: HashSet<ModuleId> = self
            .procs
            .values()
            .flat_map(|p| p.maps.values().map(|m| m.module))
            .collect();
        let unmapped: HashSet<ModuleId> = self
            .modules
            .iter()
            .map(|(id, _)| id)
            .filter(|id| !mapped.contains(id))
            .collect();
        self.modules.forget(&unmapped)
    }

    pub fn threads(&self) -> impl Iterator<Item = (&u32, &ThreadInfo)> {
        self.threads.iter()
    }

    pub fn thread(&self, tid: u32) -> Option<&ThreadInfo> {
        self.threads.get(&tid)
    }

    fn process_mut(&mut self, pid: u32) -> &mut Process {
        self.procs
            .entry(pid)
            .or_insert_with(|| Process::new(pid, format!("pid-{pid}")))
    }

    /// A thread was seen (in a sample or a record): make sure it is known.
    pub fn touch_thread(&mut self, pid: u32, tid: u32) {
        if !self.threads.contains_key(&tid) {
            let name = self.process_mut(pid).name.clone();
            self.threads.insert(tid, ThreadInfo { pid, name });
        }
    }

    pub fn on_mmap(
        &mut self,
        pid: u32,
        start: u64,
        len: u64,
        pgoff: u64,
        dev_ino: Option<(u32, u32, u64)>,
        filename: &str,
    ) {
        let end = start.saturating_add(len);
        let module = if crate::modules::is_file_name(filename) {
            self.modules.open(filename, dev_ino, pid, start, end)
        } else if filename == "[vdso]" {
            self.modules.pseudo(filename)
        } else {
            self.modules.pseudo(crate::modules::ANON)
        };
        let mapping = Mapping {
            start,
            end,
            pgoff,
            module,
        };
        self.modules.note_mapping(module, start, end, pgoff);
        let file = self.modules.get(module);
        let proc = self
            .procs
            .entry(pid)
            .or_insert_with(|| Process::new(pid, format!("pid-{pid}")));
        if proc.exe.is_none() && crate::modules::is_file_name(filename) {
            proc.exe = Some(filename.trim_end_matches(" (deleted)").to_string());
        }
        proc.map(mapping, file);
    }

    pub fn on_comm(&mut self, pid: u32, tid: u32, name: &str, exec: bool) {
        let proc = self.process_mut(pid);
        if exec {
            // A new program: a new address space.
            proc.maps.clear();
            proc.unwinder = ProcessUnwinder::new();
            proc.exe = None;
        }
        if exec && self.read_containers {
            // Runtimes move a process into its container's cgroup before it runs the
            // container's program; one that has ended keeps what it was forked with.
            let container = linux::container_of(pid);
            let proc = self.process_mut(pid);
            proc.container = container.or(proc.container.take());
        }
        let proc = self.process_mut(pid);
        if pid == tid {
            proc.name = name.to_string();
        }
        self.threads.insert(
            tid,
            ThreadInfo {
                pid,
                name: name.to_string(),
            },
        );
        if exec {
            // Every thread of the old program is gone; the exec'ing thread now leads.
            self.threads.retain(|&t, info| info.pid != pid || t == tid);
        }
    }

    pub fn on_fork(&mut self, pid: u32, ppid: u32, tid: u32) {
        let parent_name = self
            .threads
            .get(&tid)
            .or_else(|| self.threads.get(&ppid))
            .map(|t| t.name.clone());
        if pid != ppid && !self.procs.contains_key(&pid) {
            // A new process starts as a copy of its parent's address space.
            let child = match self.procs.get(&ppid) {
                Some(parent) => {
                    let mut c = parent.clone();
                    c.pid = pid;
                    c.alive = true;
                    c
                }
                None => Process::new(pid, format!("pid-{pid}")),
            };
            self.procs.insert(pid, child);
        }
        let name = parent_name.unwrap_or_else(|| self.process_mut(pid).name.clone());
        self.threads.insert(tid, ThreadInfo { pid, name });
    }

    /// Learn a running process as it is now, from `/proc`: its name, its threads' names and
    /// its executable mappings. Used when attaching, before any record arrives.
    pub fn seed_from_proc(&mut self, pid: u32) -> std::io::Result<()> {
        let comm = linux::process_name(pid)?;
        self.on_comm(pid, pid, &comm, false);
        if self.read_containers {
            self.process_mut(pid).container = linux::container_of(pid);
        }
        if let Some(exe) = linux::executable(pid) {
            self.process_mut(pid).exe = Some(exe);
        }
        for tid in linux::list_threads(pid).unwrap_or_default() {
            let name = linux::comm(pid, tid);
            if !name.is_empty() {
                self.on_comm(pid, tid, &String::from_utf8_lossy(&name), false);
            }
        }
        let maps = linux::maps(pid)?;
        for line in maps.lines() {
            if let Some(m) = linux::parse_maps_line(line) {
                if m.executable {
                    self.on_mmap(pid, m.start, m.end - m.start, m.offset, m.dev_ino, m.path);
                }
            }
        }
        Ok(())
    }

    pub fn on_exit(&mut self, pid: u32, tid: u32) {
        if pid == tid {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.alive = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_from_our_own_process() {
        let mut t = ProcessTable::new();
        let me = std::process::id();
        t.seed_from_proc(me).unwrap();
        let p = t.get(me).unwrap();
        // Our own code is resolvable.
        let addr = seeds_from_our_own_process as *const () as u64;
        let r = p.resolve(addr).expect("own code mapped");
        assert!(t.modules.get(r.module).path.contains("ember"));
        assert!(t.threads().count() >= 1);
    }

    #[test]
    fn maps_split_and_resolve() {
        let mut t = ProcessTable::new();
        t.on_mmap(1, 0x1000, 0x3000, 0, None, "//anon");
        t.on_mmap(1, 0x2000, 0x1000, 0x10, None, "[vdso]");
        let a = t.modules.pseudo(crate::modules::ANON);
        let b = t.modules.pseudo("[vdso]");
        let r = |addr| t.get(1).unwrap().resolve(addr);
        assert_eq!(
            r(0x1800),
            Some(Resolved {
                module: a,
                file_offset: 0x800
            })
        );
        assert_eq!(
            r(0x2004),
            Some(Resolved {
                module: b,
                file_offset: 0x14
            })
        );
        assert_eq!(
            r(0x3008),
            Some(Resolved {
                module: a,
                file_offset: 0x2008
            })
        );
        assert_eq!(r(0x4000), None);
        assert_eq!(t.get(1).unwrap().mappings().count(), 3);
    }

    #[test]
    fn fork_copies_maps_and_exec_clears_them() {
        let mut t = ProcessTable::new();
        t.on_comm(1, 1, "parent", true);
        t.on_mmap(1, 0x1000, 0x1000, 0, None, "[x]");
        t.on_fork(2, 1, 2);
        assert!(t.get(2).unwrap().resolve(0x1000).is_some());
        assert_eq!(t.thread(2).unwrap().name, "parent");
        t.on_comm(2, 2, "child", true);
        assert!(t.get(2).unwrap().resolve(0x1000).is_none());
        assert_eq!(t.get(2).unwrap().exe, None);
        t.on_mmap(2, 0x5000, 0x1000, 0, None, "/bin/child-program");
        t.on_mmap(2, 0x9000, 0x1000, 0, None, "/lib/ld-linux.so");
        assert_eq!(t.get(2).unwrap().exe.as_deref(), Some("/bin/child-program"));
        assert!(t.get(1).unwrap().resolve(0x1000).is_some());
        assert_eq!(t.get(2).unwrap().name, "child");
        // A new thread in the same process.
        t.on_fork(1, 1, 3);
        assert_eq!(t.thread(3).unwrap().pid, 1);
    }
}
