//! The perf-events backend: `perf_event_open` per CPU with `inherit`, ring buffers, reading.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use perf_event_open_sys as sys;

use super::records::{self, RecordHeader, SampleLayout, StackCopy};
use super::{OpenedEvent, RecordBatch, Sampler};
use crate::linux;
use crate::model::CallGraph;

/// Largest user-stack copy the kernel accepts in one sample (the record size is a u16).
pub const MAX_STACK_SIZE: u32 = 65528 - 512;

#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(
        "perf events are refused ({error}; kernel.perf_event_paranoid = {paranoid}).\n{why}\n\
         Or sample with ptrace instead: --backend ptrace (the default, auto, does so by itself)"
    )]
    Refused {
        paranoid: String,
        error: io::Error,
        /// What refuses them here and what to do about it.
        why: String,
    },
    #[error(
        "-F {requested} is above the kernel's limit of {max} samples/s \
         (kernel.perf_event_max_sample_rate); pass -F {max} or lower, or raise it with: \
         sudo sysctl kernel.perf_event_max_sample_rate={requested}"
    )]
    FrequencyTooHigh { requested: u64, max: u64 },
    #[error(
        "--off-cpu on perf events needs kernel sampling (context switches happen in the \
         kernel), which is refused here; run as root, lower kernel.perf_event_paranoid to 1, \
         or use --backend ptrace"
    )]
    OffCpuNeedsKernel,
    #[error("perf_event_open failed on CPU {cpu}: {source}")]
    Open { cpu: u32, source: io::Error },
    #[error(
        "could not map a perf ring buffer ({source}); the kernel limits locked memory for \
         unprivileged users: raise it with `sudo sysctl kernel.perf_event_mlock_kb=2048` or \
         lower --stack-size"
    )]
    Mmap { source: io::Error },
    #[error("could not list the online CPUs: {0}")]
    Cpus(io::Error),
    #[error("ioctl {what} failed: {source}")]
    Ioctl {
        what: &'static str,
        source: io::Error,
    },
}

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

struct RingBuffer {
    /// The event whose buffer this is (owned by the [`PerfSampler`]).
    fd: RawFd,
    /// The other events of the same CPU that write into it (`PERF_EVENT_IOC_SET_OUTPUT`).
    redirected: Vec<RawFd>,
    /// Where it is mapped; `None` while another process (the relay) maps it instead.
    base: Option<NonNull<u8>>,
    map_len: usize,
    data_len: usize,
    page_size: usize,
}

// SAFETY: the mapping is owned by this struct; it is only touched through &mut self.
unsafe impl Send for RingBuffer {}

/// Map `map_len` bytes of perf event `fd`'s buffer, anywhere.
fn map_perf(fd: RawFd, map_len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: mapping a perf fd as documented in perf_event_open(2).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(NonNull::new(p as *mut u8).expect("mmap returned null"))
}

impl RingBuffer {
    fn map(fd: RawFd, data_pages: usize) -> io::Result<RingBuffer> {
        let page_size = page_size();
        let map_len = (data_pages + 1) * page_size;
        Ok(RingBuffer {
            fd,
            redirected: Vec::new(),
            base: Some(map_perf(fd, map_len)?),
            map_len,
            data_len: data_pages * page_size,
            page_size,
        })
    }

    /// Stop mapping the buffer here (another process is to map it: two mappings of one
    /// buffer would each count against the user's locked memory, and the kernel gives back
    /// only one when the last goes).
    fn unmap(&mut self) {
        if let Some(base) = self.base.take() {
            // SAFETY: unmapping exactly what `map` mapped.
            unsafe { libc::munmap(base.as_ptr() as *mut _, self.map_len) };
        }
    }

    /// Send the other events of its CPU into this buffer.
    fn redirect(&mut self, fds: &[RawFd]) -> io::Result<()> {
        for &fd in fds {
            // SAFETY: ioctl on fds the sampler owns; both are on the same CPU.
            if unsafe { sys::ioctls::SET_OUTPUT(fd, self.fd) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        self.redirected = fds.to_vec();
        Ok(())
    }

    /// Map the buffer here (again). When the last mapping of a buffer goes, the kernel frees
    /// it and detaches every event from it: the redirected ones are sent here again.
    fn map_again(&mut self) -> io::Result<()> {
        if self.base.is_none() {
            self.base = Some(map_perf(self.fd, self.map_len)?);
            let redirected = std::mem::take(&mut self.redirected);
            self.redirect(&redirected)?;
        }
        Ok(())
    }

    fn header(&self, base: NonNull<u8>) -> *mut sys::bindings::perf_event_mmap_page {
        base.as_ptr() as *mut sys::bindings::perf_event_mmap_page
    }

    /// Copy every complete record into `batch`; returns how many were read. Samples are
    /// added as record kind `samples_as` when given (to tell which event took them).
    fn drain(
        &mut self,
        layout: &SampleLayout,
        batch: &mut RecordBatch,
        samples_as: Option<u32>,
    ) -> usize {
        // Not mapped here (the relay maps it): nothing to read.
        let Some(base) = self.base else {
            return 0;
        };
        let hdr = self.header(base);
        // SAFETY: the header page stays mapped for our lifetime; data_head is written by the
        // kernel, so read it volatile and fence before reading the data it covers.
        let head = unsafe { std::ptr::addr_of!((*hdr).data_head).read_volatile() };
        fence(Ordering::Acquire);
        let mut tail = unsafe { std::ptr::addr_of!((*hdr).data_tail).read_volatile() };
        // SAFETY: the data area follows the header page and is data_len bytes long.
        let data =
            unsafe { std::slice::from_raw_parts(base.as_ptr().add(self.page_size), self.data_len) };
        let mut n = 0;
        let mut hbuf = [0u8; RecordHeader::SIZE];
        let mut scratch = Vec::new();
        while tail < head {
            let off = (tail % self.data_len as u64) as usize;
            // The header itself may wrap.
            for (i, b) in hbuf.iter_mut().enumerate() {
                *b = data[(off + i) % self.data_len];
            }
            let h = RecordHeader::parse(&hbuf).expect("8 bytes");
            let size = h.size as usize;
            if size < RecordHeader::SIZE || tail + size as u64 > head {
                // Corrupt or partial: skip to head rather than loop forever.
                tail = head;
                break;
            }
            let (first, second) = if off + size <= self.data_len {
                (&data[off..off + size], &data[0..0])
            } else {
                (&data[off..], &data[..size - (self.data_len - off)])
            };
            let rec = if second.is_empty() {
                first
            } else {
                scratch.clear();
                scratch.extend_from_slice(first);
                scratch.extend_from_slice(second);
                &scratch[..]
            };
            push_record(layout, batch, rec, samples_as);
            tail += size as u64;
            n += 1;
        }
        fence(Ordering::Release);
        // SAFETY: as above; the kernel reads data_tail to know what space is free.
        unsafe { std::ptr::addr_of_mut!((*hdr).data_tail).write_volatile(tail) };
        n
    }
}

/// Copy one record into `batch`, without the unused part of a sample's stack copy (most
/// samples use a few KiB of the tens reserved), relabelled `samples_as` if it is a sample.
fn push_record(
    layout: &SampleLayout,
    batch: &mut RecordBatch,
    rec: &[u8],
    samples_as: Option<u32>,
) {
    let time = layout.record_time(rec);
    let stack = layout.stack_copy(rec);
    if let Some(copy) = stack.filter(StackCopy::is_full) {
        batch.note_full_copy(copy.pid);
    }
    batch.push_with(time, |bytes| {
        let start = bytes.len();
        match stack {
            Some(copy) if copy.unused() > 0 => copy.write_compacted(rec, bytes),
            _ => bytes.extend_from_slice(rec),
        }
        let is_sample = u32::from_le_bytes(rec[..4].try_into().expect("a header"))
            == records::PERF_RECORD_SAMPLE;
        if let (Some(kind), true) = (samples_as, is_sample) {
            bytes[start..start + 4].copy_from_slice(&kind.to_le_bytes());
        }
    });
}

impl Drop for RingBuffer {
    fn drop(&mut self) {
        self.unmap();
    }
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
    layout: SampleLayout,
    event: OpenedEvent,
    /// Bytes of user stack copied per sample.
    stack_size: u32,
    /// More descriptors that end a wait when readable (see [`Sampler::wake_on`]).
    wake_fds: Vec<RawFd>,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Why perf events are refused here, as far as ember can tell, and what to do.
fn refusal_reason() -> String {
    let seccomp = linux::status_field("self", "Seccomp").is_some_and(|v| v == "2");
    if seccomp {
        "A seccomp filter refuses perf_event_open in this process (Docker's default profile \
         does). Run the container with `--cap-add PERFMON` (Docker 20.10 and later allow \
         perf_event_open then) or `--security-opt seccomp=unconfined`."
            .to_string()
    } else if nix::unistd::geteuid().is_root() {
        "ember runs as root, so something else refuses them: a security module (SELinux, \
         AppArmor) or a kernel that blocks perf events (perf_event_paranoid 3 or higher on some \
         distributions' kernels)."
            .to_string()
    } else {
        "Without privileges ember can profile only processes of your own user, and at \
         paranoid 3 none at all. To allow it, do one of:\n  \
         sudo sysctl kernel.perf_event_paranoid=1\n  \
         sudo setcap cap_perfmon,cap_sys_ptrace+ep \"$(command -v ember)\"   (CAP_PERFMON)\n  \
         run ember as root (sudo ember record ...)"
            .to_string()
    }
}

fn is_permission_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// Whom to sample.
#[derive(Clone, Debug)]
pub enum EventTarget {
    /// A launched process that has not called `exec` yet: sampling starts at its `exec`
    /// (`enable_on_exec`).
    Launch(u32),
    /// Running processes: every thread of each is sampled from now on.
    Attach(Vec<u32>),
}

impl PerfSampler {
    /// Open the events for `pid`, disabled until it calls `exec` (`enable_on_exec`).
    pub fn for_launch(pid: u32, config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        Self::open(&EventTarget::Launch(pid), config)
    }

    /// Open events on every thread of the running processes `pids`, and start sampling.
    pub fn for_attach(pids: &[u32], config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        let s = Self::open(&EventTarget::Attach(pids.to_vec()), config)?;
        for fd in s.fds.iter().chain(&s.switch_fds) {
            // SAFETY: ioctl on an fd we own.
            if unsafe { sys::ioctls::ENABLE(fd.as_raw_fd(), 0) } != 0 {
                return Err(PerfError::Ioctl {
                    what: "ENABLE",
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(s)
    }

    fn open(target: &EventTarget, config: &PerfConfig) -> Result<PerfSampler, PerfError> {
        check_frequency(config.frequency)?;
        let cpus = linux::online_cpus().map_err(PerfError::Cpus)?;
        let Sizing {
            stack_size,
            pages,
            notes,
        } = Sizing::for_config(config, cpus.len());
        let layout = SampleLayout::recorded(config.call_graph != CallGraph::Fp);
        // Try hardware cycles first, then the software clock; kernel samples first, then
        // user-only when the kernel refuses them (perf_event_paranoid 2 without privileges).
        let kernel_options: &[bool] = match config.kernel {
            KernelFrames::Auto => &[true, false],
            KernelFrames::Require => &[true],
            KernelFrames::Exclude => &[false],
        };
        let mut last_err = None;
        for &(name, type_, cfg) in &EVENTS {
            for &kernel in kernel_options {
                let mut attr = make_attr(type_, cfg, config, &layout, stack_size, kernel);
                if let EventTarget::Attach(_) = target {
                    attr.set_enable_on_exec(0);
                }
                let per_cpu = match open_all(target, &cpus, attr, pages) {
                    Ok(per_cpu) => per_cpu,
                    Err(failed) => {
                        last_err = Some(failed);
                        continue;
                    }
                };
                let (fds, buffers) = map_buffers(per_cpu, pages)?;
                let (switch_fds, switch_buffers) = if config.off_cpu {
                    open_switch_events(target, &cpus, config, &layout, stack_size, pages)?
                } else {
                    (Vec::new(), Vec::new())
                };
                return Ok(PerfSampler {
                    running: matches!(target, EventTarget::Attach(_)),
                    fds,
                    buffers,
                    switch_fds,
                    switch_buffers,
                    layout,
                    notes,
                    stack_size,
                    wake_fds: Vec::new(),
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
        self.buffers
            .iter()
            .chain(&self.switch_buffers)
            .map(|b| b.data_len)
            .sum()
    }

    /// Stop mapping the ring buffers in this process, so that one other process (the relay)
    /// maps them; `drain` then reads nothing here until [`PerfSampler::map_buffers`].
    pub fn unmap_buffers(&mut self) {
        self.buffers
            .iter_mut()
            .chain(&mut self.switch_buffers)
            .for_each(RingBuffer::unmap);
    }

    /// Map the ring buffers in this process (again).
    pub fn map_buffers(&mut self) -> io::Result<()> {
        self.buffers
            .iter_mut()
            .chain(&mut self.switch_buffers)
            .try_for_each(RingBuffer::map_again)
    }

    /// Whether the events are counting already (attached to running processes), rather than
    /// waiting for the command's `exec`.
    pub fn running(&self) -> bool {
        self.running
    }

    /// Start (again) the events `disable` stopped.
    pub fn enable(&self) {
        for fd in self.fds.iter().chain(&self.switch_fds) {
            // SAFETY: ioctl on an fd we own.
            unsafe { sys::ioctls::ENABLE(fd.as_raw_fd(), 0) };
        }
    }

    /// The descriptors the sampler reads (events and their buffers).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.fds
            .iter()
            .chain(&self.switch_fds)
            .map(|fd| fd.as_raw_fd())
            .collect()
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
        s.push_str(&format!(", {} bytes of stack per sample", self.stack_size));
        s
    }

    fn drain(&mut self, batch: &mut RecordBatch) -> usize {
        let layout = self.layout;
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
        main + switches
    }

    /// Wait until a buffer passes its wakeup watermark or `timeout_ms` passes. Returns early
    /// on a signal.
    fn wait(&mut self, timeout_ms: i32) {
        let mut pfds: Vec<libc::pollfd> = self
            .fds
            .iter()
            .chain(&self.switch_fds)
            .map(AsRawFd::as_raw_fd)
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
        for fd in self.fds.iter().chain(&self.switch_fds) {
            // SAFETY: ioctl on an fd we own.
            unsafe { sys::ioctls::DISABLE(fd.as_raw_fd(), 0) };
        }
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

fn make_attr(
    type_: u32,
    config: u64,
    cfg: &PerfConfig,
    layout: &SampleLayout,
    stack_size: u32,
    kernel: bool,
) -> sys::bindings::perf_event_attr {
    let mut a = sys::bindings::perf_event_attr {
        type_,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config,
        sample_type: layout.sample_type,
        ..Default::default()
    };
    a.__bindgen_anon_1.sample_freq = cfg.frequency;
    a.set_freq(1);
    a.set_disabled(1);
    a.set_inherit(1);
    a.set_enable_on_exec(1);
    a.set_mmap(1);
    a.set_mmap2(1);
    a.set_comm(1);
    a.set_comm_exec(1);
    a.set_task(1);
    a.set_sample_id_all(1);
    a.set_use_clockid(1);
    a.clockid = libc::CLOCK_MONOTONIC;
    a.set_exclude_hv(1);
    a.set_exclude_guest(1);
    if !kernel {
        a.set_exclude_kernel(1);
    }
    a.set_exclude_callchain_kernel(u64::from(!kernel));
    if layout.sample_type & records::PERF_SAMPLE_STACK_USER != 0 {
        a.sample_regs_user = layout.regs_user_mask;
        a.sample_stack_user = stack_size;
    }
    if cfg.call_graph == CallGraph::Dwarf {
        // The user part of the callchain is not used; spare the kernel walking it.
        a.set_exclude_callchain_user(1);
    }
    // Wake the reader when a quarter of the buffer is used (set after mapping below).
    a.set_watermark(1);
    a.__bindgen_anon_2.wakeup_watermark = 0;
    a
}

/// The context-switch events of `--off-cpu`: every switch-out of a followed thread is sampled
/// (with its stack), and switch records tell when it runs again. In buffers of their own, so
/// their samples can be told from the CPU samples.
fn open_switch_events(
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
    if let EventTarget::Attach(_) = target {
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

/// The sampling events to try, best first: (name, type, config).
const EVENTS: [(&str, u32, u64); 2] = [
    (
        "cycles",
        sys::bindings::PERF_TYPE_HARDWARE,
        sys::bindings::PERF_COUNT_HW_CPU_CYCLES as u64,
    ),
    (
        "cpu-clock",
        sys::bindings::PERF_TYPE_SOFTWARE,
        sys::bindings::PERF_COUNT_SW_CPU_CLOCK as u64,
    ),
];

/// What samples stand for, as the summary says it.
fn event_name(name: &'static str, off_cpu: bool) -> &'static str {
    match (off_cpu, name) {
        (false, name) => name,
        (true, "cycles") => "cycles + context switches, wall clock",
        (true, _) => "cpu-clock + context switches, wall clock",
    }
}

/// A frequency above `kernel.perf_event_max_sample_rate` is refused before anything opens.
fn check_frequency(frequency: u64) -> Result<(), PerfError> {
    let max = linux::read_sysctl("kernel.perf_event_max_sample_rate").and_then(|s| s.parse().ok());
    match max {
        Some(max) if frequency > max => Err(PerfError::FrequencyTooHigh {
            requested: frequency,
            max,
        }),
        _ => Ok(()),
    }
}

/// Why no event could be opened: refused (with what to do), or another error.
fn open_error(cpu: u32, e: io::Error) -> PerfError {
    if is_permission_error(&e) {
        return PerfError::Refused {
            paranoid: linux::read_sysctl("kernel.perf_event_paranoid")
                .unwrap_or_else(|| "unknown".into()),
            error: e,
            why: refusal_reason(),
        };
    }
    PerfError::Open { cpu, source: e }
}

/// How much each sample copies and each ring buffer holds.
struct Sizing {
    stack_size: u32,
    /// Data pages per ring buffer.
    pages: usize,
    notes: Vec<String>,
}

impl Sizing {
    fn for_config(config: &PerfConfig, cpus: usize) -> Sizing {
        let mut stack_size = (config.stack_size.min(MAX_STACK_SIZE)) & !7;
        let mut notes = Vec::new();
        let wanted = match config.buffer_size {
            Some(bytes) => requested_buffer_pages(bytes),
            None => buffer_pages(
                stack_size,
                config.frequency,
                cpus,
                BufferRoom {
                    root: is_root(),
                    reader_raised: config.reader_raised,
                },
            ),
        };
        let pages = usable_buffer_pages(wanted, cpus);
        if pages < wanted && config.call_graph != CallGraph::Fp && config.buffer_size.is_none() {
            // Locked memory is limited (unprivileged users): keep room for 16 samples per
            // buffer rather than losing samples to full buffers.
            let fit = ((pages * page_size() / 16).saturating_sub(1024) as u32) & !7;
            if fit < stack_size {
                stack_size = fit.max(1024);
                notes.push(format!(
                    "locked memory for perf buffers is limited to {} KiB per CPU here, so the \
                     stack copy was cut to {stack_size} bytes; for deeper stacks run \
                     `sudo sysctl kernel.perf_event_mlock_kb=8192` or run as root",
                    pages * page_size() / 1024
                ));
            }
        }
        Sizing {
            stack_size,
            pages,
            notes,
        }
    }
}

/// Who reads the ring buffers, which decides how much they must hold.
#[derive(Clone, Copy)]
struct BufferRoom {
    root: bool,
    reader_raised: bool,
}

/// The most a raised reader's ring buffer holds per CPU by default.
const RAISED_READER_CAP: usize = 16 << 20;

/// Data pages of each CPU's ring buffer, a power of two. Unprivileged users get room for
/// ~128 full samples (locked memory is scarce; [`usable_buffer_pages`] shrinks it further
/// where needed). Root gets about a second of samples at full rate (up to 32 MiB per CPU and
/// 256 MiB in all): a target with a thousand runnable threads can keep a reader at the
/// target's priority off the CPU for a few hundred milliseconds, and every sample taken
/// meanwhile must fit. A raised reader gets the CPU within milliseconds, so root then gets a
/// quarter of that, rounded down: every page is allocated and zeroed by the kernel when the
/// buffer is mapped, and 64 MiB cost 50 ms of CPU on a VM (`ember record -- true`: 0.076 s
/// against 0.029 s with 4 MiB buffers, 8 runs each), a fifth of a 10 s recording's CPU. A
/// thousand starting threads lost nothing with 4 MiB in 15 of 15 runs and 13 samples in 1 of
/// 6 with 2 MiB (`--buffer-size`, 2 cores). At 4999 Hz the quarter second is also held to
/// 16 MiB (a tenth of a second): a thousand starting threads lost nothing in 8 of 8 runs with
/// 16 MiB, in 7 of 8 with 32 and 7 of 8 with 8, while zeroing two 32 MiB buffers was 43 % of
/// ember's CPU in a 5 s recording there (perf on ember).
fn buffer_pages(stack_size: u32, frequency: u64, cpus: usize, room: BufferRoom) -> usize {
    let sample = stack_size as usize + 1024;
    let at_least = (sample * 128)
        .div_ceil(page_size())
        .max(16)
        .next_power_of_two();
    if !room.root {
        return at_least;
    }
    let cap = (32usize << 20).min((256 << 20) / cpus.max(1));
    let pages = if room.reader_raised {
        let quarter = sample
            .saturating_mul(frequency as usize / 4)
            .min(cap.min(RAISED_READER_CAP))
            / page_size();
        // Rounded down to a power of two.
        quarter.checked_ilog2().map_or(1, |log| 1 << log)
    } else {
        let second = sample.saturating_mul(frequency as usize).min(cap);
        second.div_ceil(page_size()).next_power_of_two()
    };
    pages.max(at_least).min((32 << 20) / page_size())
}

/// `--buffer-size BYTES` as data pages: a power of two, at least one page.
fn requested_buffer_pages(bytes: usize) -> usize {
    let pages = bytes.div_ceil(page_size()).max(1);
    if pages.is_power_of_two() {
        pages
    } else {
        pages.next_power_of_two() / 2
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Open the event `attr` on thread `tid` (and what it inherits to) on CPU `cpu` (-1: any).
pub(super) fn open_one(
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

/// The largest buffer (in data pages, a power of two, at most `wanted`) that can be mapped
/// `count` times at once under this user's locked-memory limits, found by mapping buffers of
/// a dummy event on ember itself. Root is not limited.
fn usable_buffer_pages(wanted: usize, count: usize) -> usize {
    if is_root() {
        return wanted;
    }
    let mut attr = sys::bindings::perf_event_attr {
        type_: sys::bindings::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config: sys::bindings::PERF_COUNT_SW_DUMMY as u64,
        ..Default::default()
    };
    attr.set_disabled(1);
    attr.set_exclude_kernel(1);
    let mut pages = wanted;
    while pages > 1 {
        let mut ok = true;
        let mut held = Vec::new();
        for _ in 0..count {
            // SAFETY: a valid attr; pid 0 = ember itself, any CPU.
            let fd = unsafe {
                sys::perf_event_open(
                    &mut attr,
                    0,
                    -1,
                    -1,
                    sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
                )
            };
            if fd < 0 {
                // Cannot probe: let the real mapping find out.
                return wanted;
            }
            // SAFETY: fresh fd we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            match RingBuffer::map(fd.as_raw_fd(), pages) {
                Ok(b) => held.push((b, fd)),
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return pages;
        }
        pages /= 2;
    }
    1
}

/// Open the events: for each CPU, one fd per followed task. Returns them grouped by CPU.
fn open_all(
    target: &EventTarget,
    cpus: &[u32],
    mut attr: sys::bindings::perf_event_attr,
    pages: usize,
) -> Result<Vec<Vec<OwnedFd>>, (u32, io::Error)> {
    attr.__bindgen_anon_2.wakeup_watermark = (pages * page_size() / 4) as u32;
    let mut per_cpu: Vec<Vec<OwnedFd>> = cpus.iter().map(|_| Vec::new()).collect();
    match target {
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

/// Map one ring buffer per CPU and point every other fd of that CPU at it
/// (`PERF_EVENT_IOC_SET_OUTPUT`), halving the buffer while the kernel refuses the memory.
fn map_buffers(
    per_cpu: Vec<Vec<OwnedFd>>,
    mut pages: usize,
) -> Result<(Vec<OwnedFd>, Vec<RingBuffer>), PerfError> {
    let mut buffers = Vec::with_capacity(per_cpu.len());
    let mut all = Vec::new();
    for fds in per_cpu {
        let Some(first) = fds.first() else { continue };
        let mut buffer = loop {
            match RingBuffer::map(first.as_raw_fd(), pages) {
                Ok(b) => break b,
                Err(e) if pages > 16 && is_permission_error(&e) => {
                    pages /= 2;
                    continue;
                }
                Err(e) => return Err(PerfError::Mmap { source: e }),
            }
        };
        let others: Vec<RawFd> = fds[1..].iter().map(|fd| fd.as_raw_fd()).collect();
        buffer
            .redirect(&others)
            .map_err(|source| PerfError::Ioctl {
                what: "SET_OUTPUT",
                source,
            })?;
        buffers.push(buffer);
        all.extend(fds);
    }
    Ok((all, buffers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_powers_of_two_and_hold_many_samples() {
        let rooms =
            [(false, false), (true, false), (true, true)].map(|(root, raised)| BufferRoom {
                root,
                reader_raised: raised,
            });
        for room in rooms {
            let p = buffer_pages(32768, 999, 2, room);
            assert!(p.is_power_of_two());
            assert!(p * page_size() >= 32768 * 100);
            assert!(buffer_pages(0, 999, 2, room) >= 16);
            assert!(p * page_size() <= 32 << 20);
        }
        let [user, root, raised] = rooms;
        // Root: most of a second of samples, within 32 MiB per CPU and 256 MiB in all.
        assert!(buffer_pages(32768, 999, 2, root) * page_size() >= 16 << 20);
        // A raised reader: about a quarter of a second (8 MiB at 999 Hz).
        let quarter = buffer_pages(32768, 999, 2, raised) * page_size();
        assert!(((4 << 20)..=(8 << 20)).contains(&quarter), "{quarter}");
        assert!(buffer_pages(32768, 4999, 2, raised) * page_size() == 16 << 20);
        // Many CPUs: no more than an unprivileged user's 128 samples once 256 MiB are shared.
        for room in [root, raised] {
            assert_eq!(
                buffer_pages(32768, 999, 64, room),
                buffer_pages(32768, 999, 64, user)
            );
        }
    }

    #[test]
    fn requested_buffer_sizes_round_down_to_a_power_of_two() {
        assert_eq!(requested_buffer_pages(1), 1);
        assert_eq!(requested_buffer_pages(page_size() * 4), 4);
        assert_eq!(requested_buffer_pages(page_size() * 5), 4);
        assert_eq!(requested_buffer_pages(page_size() * 8 - 1), 8);
    }
}
