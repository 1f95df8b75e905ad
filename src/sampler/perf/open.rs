//! Opening events on their targets: a launched command (one event per CPU, inherited by all
//! it starts) or every thread of running processes, and the `--off-cpu` switch events.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use perf_event_open_sys as sys;

use super::attr::{dummy_attr, make_attr};
use super::error::{is_permission_error, PerfError};
use super::ring::{map_buffers, page_size, RingBuffer};
use super::PerfConfig;
use crate::linux;
use crate::sampler::records::SampleLayout;

/// Whom to sample.
#[derive(Clone, Debug)]
pub enum EventTarget {
    /// A launched process that has not called `exec` yet: sampling starts at its `exec`
    /// (`enable_on_exec`).
    Launch(u32),
    /// Running processes: every thread of each is sampled from now on.
    Attach(Vec<u32>),
    /// Every process on the machine (`-a`): one event per CPU, from now on.
    System,
}

impl EventTarget {
    /// The events count from the moment they are enabled, not from a command's `exec`.
    pub(super) fn already_running(&self) -> bool {
        !matches!(self, EventTarget::Launch(_))
    }
}

/// Open the event `attr` on thread `tid` (and what it inherits to) on CPU `cpu` (-1: any).
pub(crate) fn open_one(
    attr: &mut sys::bindings::perf_event_attr,
    tid: u32,
    cpu: i32,
) -> io::Result<OwnedFd> {
    // SAFETY: attr is a fully initialized perf_event_attr.
    let fd = unsafe {
        sys::perf_event_open(
            attr,
            tid as i32,
            cpu,
            -1,
            sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open the events: for each CPU, one fd per followed task. Returns them grouped by CPU.
pub(super) fn open_all(
    target: &EventTarget,
    cpus: &[u32],
    mut attr: sys::bindings::perf_event_attr,
    pages: usize,
) -> Result<Vec<Vec<OwnedFd>>, (u32, io::Error)> {
    if attr.watermark() == 1 {
        attr.__bindgen_anon_2.wakeup_watermark = (pages * page_size() / 4) as u32;
    }
    let mut per_cpu: Vec<Vec<OwnedFd>> = cpus.iter().map(|_| Vec::new()).collect();
    match target {
        EventTarget::System => {
            // What a CPU runs, whatever the task: no inheritance to follow; idle time (the
            // CPU's idle task) is not a program's.
            attr.set_inherit(0);
            attr.set_exclude_idle(1);
            for (i, &cpu) in cpus.iter().enumerate() {
                per_cpu[i].push(open_one(&mut attr, u32::MAX, cpu as i32).map_err(|e| (cpu, e))?);
            }
        }
        EventTarget::Launch(pid) => {
            for (i, &cpu) in cpus.iter().enumerate() {
                per_cpu[i].push(open_one(&mut attr, *pid, cpu as i32).map_err(|e| (cpu, e))?);
            }
        }
        EventTarget::Attach(pids) => {
            // Threads started by a followed thread are inherited; threads that appear while
            // we are opening are caught by listing again until the list stands still.
            let mut done = std::collections::HashSet::new();
            for _round in 0..8 {
                let mut new = Vec::new();
                for &pid in pids {
                    let tids = linux::list_threads(pid).map_err(|e| (0, e))?;
                    new.extend(tids.into_iter().filter(|t| !done.contains(t)));
                }
                if new.is_empty() {
                    break;
                }
                for tid in new {
                    for (i, &cpu) in cpus.iter().enumerate() {
                        match open_one(&mut attr, tid, cpu as i32) {
                            Ok(fd) => per_cpu[i].push(fd),
                            // The thread ended meanwhile.
                            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
                            Err(e) => return Err((cpu, e)),
                        }
                    }
                    done.insert(tid);
                }
            }
        }
    }
    Ok(per_cpu)
}

/// Events that only wake the reader when a followed process maps a file executable. The
/// sampling events wake it when a quarter of their buffer is used, which at a few hundred
/// samples a second is up to the reader's longest wait (100 ms) later; a program's first
/// moments need its files' rows and its interpreter found now, or its first samples are walked
/// without them. Their records repeat the sampling events' mmap records and are dropped.
/// `None` where the kernel refuses them (the reader then only waits longer).
pub(super) fn open_mmap_watch(
    target: &EventTarget,
    cpus: &[u32],
) -> Option<(Vec<OwnedFd>, Vec<RingBuffer>)> {
    let mut attr = dummy_attr();
    attr.set_inherit(1);
    attr.set_enable_on_exec(u64::from(!target.already_running()));
    attr.set_mmap(1);
    attr.set_exclude_hv(1);
    attr.__bindgen_anon_2.wakeup_events = 1;
    // Attached, on each process's main thread only (and what it starts from now on): one
    // more event per thread and CPU would double the descriptors of a process of many
    // threads, for mmaps that threads other than the main one make.
    let per_cpu = match target {
        EventTarget::Attach(pids) => cpus
            .iter()
            .map(|&cpu| {
                pids.iter()
                    .map(|&pid| open_one(&mut attr, pid, cpu as i32))
                    .collect::<io::Result<Vec<OwnedFd>>>()
            })
            .collect::<io::Result<Vec<_>>>()
            .ok()?,
        _ => open_all(target, cpus, attr, 1).ok()?,
    };
    map_buffers(per_cpu, 1).ok()
}

/// The context-switch events of `--off-cpu`: every switch-out of a followed thread is sampled
/// (with its stack), and switch records tell when it runs again. In buffers of their own, so
/// their samples can be told from the CPU samples.
pub(super) fn open_switch_events(
    target: &EventTarget,
    cpus: &[u32],
    config: &PerfConfig,
    layout: &SampleLayout,
    stack_size: u32,
    pages: usize,
) -> Result<(Vec<OwnedFd>, Vec<RingBuffer>), PerfError> {
    // Switches happen in the kernel: this event needs kernel sampling even with --user-only
    // (the kernel part of its stacks only names the syscall and is dropped).
    let mut sw = make_attr(
        sys::bindings::PERF_TYPE_SOFTWARE,
        sys::bindings::PERF_COUNT_SW_CONTEXT_SWITCHES as u64,
        config,
        layout,
        stack_size,
        true,
    );
    // Every switch, not a frequency; only the samples and the switch records (the main events
    // report mmaps and tasks).
    sw.set_freq(0);
    sw.__bindgen_anon_1.sample_period = 1;
    sw.set_mmap(0);
    sw.set_mmap2(0);
    sw.set_comm(0);
    sw.set_comm_exec(0);
    sw.set_task(0);
    sw.set_context_switch(1);
    if target.already_running() {
        sw.set_enable_on_exec(0);
    }
    let per_cpu = open_all(target, cpus, sw, pages).map_err(|(cpu, source)| {
        if is_permission_error(&source) {
            PerfError::OffCpuNeedsKernel
        } else {
            PerfError::Open { cpu, source }
        }
    })?;
    map_buffers(per_cpu, pages)
}
