//! The perf-events backend: `perf_event_open` per CPU with `inherit` ([`open`]), with the
//! events' attributes ([`attr`]), ring buffers sized by [`sizing`] and read by [`ring`], and
//! errors that say what to do ([`error`]).

mod attr;
mod error;
mod kernel_walk;
mod open;
mod ring;
mod sizing;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use perf_event_open_sys as sys;

use super::bpf::{BpfMaps, BpfProgram, WalkHooks};
use super::records::{self, SampleLayout};
use super::{OpenedEvent, RecordBatch, Sampler};
use crate::linux;
use crate::model::CallGraph;
use attr::{check_frequency, event_name, make_attr, EVENTS};
use error::open_error;
pub use error::PerfError;
pub use kernel_walk::KernelWalk;
pub(crate) use open::open_one;
pub use open::EventTarget;
use open::{open_all, open_mmap_watch, open_switch_events};
use ring::map_buffers;
pub(crate) use ring::RingBuffer;
use sizing::Sizing;

/// Largest user-stack copy the kernel accepts in one sample (the record size is a u16).
pub const MAX_STACK_SIZE: u32 = 65528 - 512;

/// What to sample and how.
#[derive(Clone, Debug)]
pub struct PerfConfig {
    pub frequency: u64,
    pub call_graph: CallGraph,
    pub stack_size: u32,
    /// Kernel samples and callchains.
    pub kernel: KernelFrames,
    /// Wall clock: also sample every thread as it is switched out (`--off-cpu`).
    pub off_cpu: bool,
    /// Bytes of each CPU's ring buffer (`--buffer-size`); `None` picks by privileges.
    pub buffer_size: Option<usize>,
    /// The thread that will read the buffers runs at a raised priority (it gets the CPU
    /// within milliseconds of waking, even beside a thousand runnable threads): buffers that
    /// hold a quarter of a second of samples are enough, instead of a second.
    pub reader_raised: bool,
    /// Walk user stacks in the kernel at sample time ([`crate::sampler::bpf`]).
    pub kernel_walk: KernelWalk,
    /// Tests' changes to that walk.
    pub walk_hooks: WalkHooks,
}

/// Whether to sample the kernel too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelFrames {
    /// Where the kernel allows it; user space only where it does not.
    #[default]
    Auto,
    /// Always; fail when the kernel refuses (`--kernel`).
    Require,
    /// Never (`--user-only`).
    Exclude,
}

/// Open perf events following one process (and everything it forks), one fd per CPU.
pub struct PerfSampler {
    /// The events count from the start (attached), not from the command's `exec`.
    running: bool,
    /// Things the user should know about how sampling was set up.
    pub notes: Vec<String>,
    fds: Vec<OwnedFd>,
    buffers: Vec<RingBuffer>,
    /// The context-switch events of `--off-cpu` and their buffers (one per CPU).
    switch_fds: Vec<OwnedFd>,
    switch_buffers: Vec<RingBuffer>,
    /// Events that wake the reader at each executable mmap, and their buffers (one page a
    /// CPU, emptied unread).
    watch_fds: Vec<OwnedFd>,
    watch_buffers: Vec<RingBuffer>,
    layout: SampleLayout,
    event: OpenedEvent,
    /// Bytes of user stack copied per sample.
    stack_size: u32,
    /// More descriptors that end a wait when readable (see [`Sampler::wake_on`]).
    wake_fds: Vec<RawFd>,
    /// The stack walk in the kernel, when it runs: the program, and its maps until the
    /// collector takes them.
    bpf: Option<BpfProgram>,
    bpf_maps: Option<BpfMaps>,
    /// Why stacks are walked in user space where the walk in the kernel was not asked for
    /// by name (said in `-v`).
    walk_refused: Option<String>,
}

impl PerfSampler {
    /// Open the events for `pid`, disabled until it calls `exec` (`enable_on_exec`).
    pub fn for_launch(pid: u32, config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        Self::open(&EventTarget::Launch(pid), config)
    }

    /// Open events on every thread of the running processes `pids`, and start sampling.
    pub fn for_attach(pids: &[u32], config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        // One event per thread and CPU (no command is started here to inherit the limit);
        // where it cannot be raised, opening says so.
        let _ = linux::limits::raise_open_files_limit();
        Self::open(&EventTarget::Attach(pids.to_vec()), config)?.enabled()
    }

    /// Open events on every CPU for every process (`-a`), stopped until
    /// [`Sampler::enable`].
    pub fn for_system(config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        Self::open(&EventTarget::System, config)
    }

    /// Enable every event (they were opened disabled).
    fn enabled(self) -> Result<PerfSampler, PerfError> {
        self.enable_all()?;
        Ok(self)
    }

    /// Enable every event; the first refusal, if any.
    fn enable_all(&self) -> Result<(), PerfError> {
        let mut first = Ok(());
        for fd in self.all_fds() {
            // SAFETY: ioctl on an fd we own.
            if unsafe { sys::ioctls::ENABLE(fd.as_raw_fd(), 0) } != 0 && first.is_ok() {
                first = Err(PerfError::Ioctl {
                    what: "ENABLE",
                    source: io::Error::last_os_error(),
                });
            }
        }
        first
    }

    /// Open the events, with the walk in the kernel where it is wanted and the kernel takes
    /// it; where the kernel refuses it at load or at attach, without.
    fn open(target: &EventTarget, config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        check_frequency(config.frequency)?;
        let cpus = linux::online_cpus().map_err(PerfError::Cpus)?;
        let sizing = Sizing::for_config(config, cpus.len());
        let mut refused = None;
        // The ring of the walk's records holds what the perf events' rings would.
        let ring_bytes = sizing.pages * ring::page_size() * cpus.len();
        let walk = kernel_walk::load(config, &cpus, ring_bytes).unwrap_or_else(|e| {
            refused = Some(e);
            None
        });
        let mut sampler = match Self::open_with(target, config, &cpus, &sizing, walk) {
            Err(PerfError::KernelWalk(e)) => {
                refused = Some(e);
                Self::open_with(target, config, &cpus, &sizing, None)?
            }
            opened => opened?,
        };
        if let Some(e) = refused {
            let why = format!("stacks are walked in user space: {e}");
            match config.kernel_walk {
                KernelWalk::Auto => sampler.walk_refused = Some(why),
                _ => sampler.notes.push(why),
            }
        }
        Ok(sampler)
    }

    /// Open the events, trying hardware cycles first, then the software clock; kernel
    /// samples first, then user-only when the kernel refuses them (perf_event_paranoid 2
    /// without privileges).
    fn open_with(
        target: &EventTarget,
        config: &PerfConfig,
        cpus: &[u32],
        sizing: &Sizing,
        walk: Option<(BpfProgram, BpfMaps)>,
    ) -> Result<PerfSampler, PerfError> {
        let layout = SampleLayout::recorded(config.call_graph != CallGraph::Fp);
        let kernel_options: &[bool] = match config.kernel {
            KernelFrames::Auto => &[true, false],
            KernelFrames::Require => &[true],
            KernelFrames::Exclude => &[false],
        };
        let (stack_size, pages) = (sizing.stack_size, sizing.pages);
        let mut walk = walk;
        let mut last_err = None;
        for &(name, type_, cfg) in &EVENTS {
            for &kernel in kernel_options {
                let mut attr = make_attr(type_, cfg, config, &layout, stack_size, kernel);
                if target.already_running() {
                    attr.set_enable_on_exec(0);
                }
                if walk.is_some() {
                    kernel_walk::without_copies(&mut attr);
                }
                let per_cpu = match open_all(target, cpus, attr, pages) {
                    Ok(per_cpu) => per_cpu,
                    Err(failed) => {
                        last_err = Some(failed);
                        continue;
                    }
                };
                let (fds, buffers) = map_buffers(per_cpu, pages)?;
                let (bpf, bpf_maps) = match walk.take() {
                    Some((program, maps)) => {
                        kernel_walk::attach(&program, &fds).map_err(PerfError::KernelWalk)?;
                        (Some(program), Some(maps))
                    }
                    None => (None, None),
                };
                let (switch_fds, switch_buffers) = if config.off_cpu {
                    open_switch_events(target, cpus, config, &layout, stack_size, pages)?
                } else {
                    (Vec::new(), Vec::new())
                };
                let (watch_fds, watch_buffers) = open_mmap_watch(target, cpus).unwrap_or_default();
                return Ok(PerfSampler {
                    running: matches!(target, EventTarget::Attach(_)),
                    fds,
                    buffers,
                    switch_fds,
                    switch_buffers,
                    watch_fds,
                    watch_buffers,
                    layout,
                    notes: sizing.notes.clone(),
                    stack_size,
                    wake_fds: Vec::new(),
                    bpf,
                    bpf_maps,
                    walk_refused: None,
                    event: OpenedEvent {
                        name: event_name(name, config.off_cpu),
                        kernel_included: kernel,
                    },
                });
            }
        }
        let (cpu, e) = last_err.expect("at least one attempt");
        Err(open_error(cpu, e))
    }
}

impl PerfSampler {
    /// Bytes of all the ring buffers' data areas together.
    pub fn buffer_bytes(&self) -> usize {
        let walked = self.bpf.as_ref().map_or(0, BpfProgram::ring_bytes);
        self.buffers
            .iter()
            .chain(&self.switch_buffers)
            .map(|b| b.data_len)
            .sum::<usize>()
            + walked
    }

    /// Stop mapping the ring buffers in this process, so that one other process (the relay)
    /// maps them; `drain` then reads nothing here until [`PerfSampler::map_buffers`].
    pub fn unmap_buffers(&mut self) {
        self.buffers
            .iter_mut()
            .chain(&mut self.switch_buffers)
            .chain(&mut self.watch_buffers)
            .for_each(RingBuffer::unmap);
    }

    /// Map the ring buffers in this process (again).
    pub fn map_buffers(&mut self) -> io::Result<()> {
        self.buffers
            .iter_mut()
            .chain(&mut self.switch_buffers)
            .chain(&mut self.watch_buffers)
            .try_for_each(RingBuffer::map_again)
    }

    /// Whether the events are counting already (attached to running processes), rather than
    /// waiting for the command's `exec`.
    pub fn running(&self) -> bool {
        self.running
    }

    /// Start (again) the events `disable` stopped (one that cannot be enabled stays as it
    /// was: nothing more can be done about it here).
    pub fn enable(&self) {
        let _ = self.enable_all();
    }

    /// The descriptors the sampler reads (events and their buffers).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.all_fds()
            .map(|fd| fd.as_raw_fd())
            .chain(self.bpf.as_ref().map(BpfProgram::records_fd))
            .collect()
    }

    /// Every event's descriptor: sampling, context switches, mmap watch.
    fn all_fds(&self) -> impl Iterator<Item = &OwnedFd> {
        self.fds
            .iter()
            .chain(&self.switch_fds)
            .chain(&self.watch_fds)
    }
}

impl Sampler for PerfSampler {
    fn layout(&self) -> SampleLayout {
        self.layout
    }

    fn event(&self) -> OpenedEvent {
        self.event.clone()
    }

    /// The buffers and stack copies.
    fn detail(&self) -> String {
        let mib = |b: &RingBuffer| b.data_len as f64 / (1 << 20) as f64;
        let mut s = format!(
            "perf: {} ring buffers of {:.2} MiB",
            self.buffers.len(),
            self.buffers.first().map_or(0.0, mib)
        );
        if !self.switch_buffers.is_empty() {
            s.push_str(&format!(
                " (+ {} for context switches)",
                self.switch_buffers.len()
            ));
        }
        if let Some(program) = &self.bpf {
            s.push_str(&format!(
                ", stacks walked in the kernel (BPF; records through a ring of {:.2} MiB)",
                program.ring_bytes() as f64 / (1 << 20) as f64
            ));
            if let Some((runs, time)) = program.run_stats() {
                s.push_str(&format!(
                    " in {:.2} µs a sample ({runs} runs; kernel.bpf_stats_enabled)",
                    time.as_secs_f64() * 1e6 / runs as f64
                ));
            }
        } else {
            s.push_str(&format!(", {} bytes of stack per sample", self.stack_size));
        }
        if let Some(why) = &self.walk_refused {
            s.push_str(&format!(" ({why})"));
        }
        s
    }

    fn drain(&mut self, batch: &mut RecordBatch) -> usize {
        let layout = self.layout;
        // Where the program runs, its records replace the sampling events' samples.
        let walked = self
            .bpf
            .as_mut()
            .map_or(0, |program| kernel_walk::drain_records(program, batch));
        let main: usize = self
            .buffers
            .iter_mut()
            .map(|b| b.drain(&layout, batch, None))
            .sum();
        let switches: usize = self
            .switch_buffers
            .iter_mut()
            .map(|b| {
                b.drain(
                    &layout,
                    batch,
                    Some(records::EMBER_RECORD_SWITCH_OUT_SAMPLE),
                )
            })
            .sum();
        // The watch's records only woke the reader.
        for b in &mut self.watch_buffers {
            b.each_record(|_| {});
        }
        walked + main + switches
    }

    /// Wait until a buffer passes its wakeup watermark or `timeout_ms` passes. Returns early
    /// on a signal.
    fn wait(&mut self, timeout_ms: i32) {
        let mut pfds: Vec<libc::pollfd> = self
            .all_fds()
            .map(AsRawFd::as_raw_fd)
            .chain(self.bpf.as_ref().map(BpfProgram::records_fd))
            .chain(self.wake_fds.iter().copied())
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: pfds is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    }

    fn wake_on(&mut self, fd: RawFd) {
        self.wake_fds.push(fd);
    }

    /// Stop sampling (the buffers stay readable).
    fn disable(&mut self) {
        for fd in self.all_fds() {
            // SAFETY: ioctl on an fd we own.
            unsafe { sys::ioctls::DISABLE(fd.as_raw_fd(), 0) };
        }
    }

    fn take_bpf_maps(&mut self) -> Option<BpfMaps> {
        self.bpf_maps.take()
    }

    fn enable(&mut self) {
        PerfSampler::enable(self);
    }

    fn notes(&self) -> &[String] {
        &self.notes
    }

    fn has_ring_buffers(&self) -> bool {
        true
    }

    fn samples_switches(&self) -> bool {
        !self.switch_fds.is_empty()
    }
}
