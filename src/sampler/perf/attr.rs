//! The events ember samples with (hardware cycles, else the CPU clock) and their attributes:
//! what each sample carries, and what else the kernel reports (mmaps, tasks, comms).

use perf_event_open_sys as sys;

use super::error::PerfError;
use super::PerfConfig;
use crate::linux;
use crate::model::CallGraph;
use crate::sampler::records::{self, SampleLayout};

/// The attributes of a sampling event of type `type_` and `config`, as `cfg` asks.
pub(super) fn make_attr(
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

/// A disabled software event that samples nothing and counts user space only
/// (`PERF_COUNT_SW_DUMMY`): what ember opens only for its records or its buffer.
pub(super) fn dummy_attr() -> sys::bindings::perf_event_attr {
    let mut a = sys::bindings::perf_event_attr {
        type_: sys::bindings::PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
        config: sys::bindings::PERF_COUNT_SW_DUMMY as u64,
        ..Default::default()
    };
    a.set_disabled(1);
    a.set_exclude_kernel(1);
    a
}

/// The sampling events to try, best first: (name, type, config).
pub(super) const EVENTS: [(&str, u32, u64); 2] = [
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
pub(super) fn event_name(name: &'static str, off_cpu: bool) -> &'static str {
    match (off_cpu, name) {
        (false, name) => name,
        (true, "cycles") => "cycles + context switches, wall clock",
        (true, _) => "cpu-clock + context switches, wall clock",
    }
}

/// A frequency above `kernel.perf_event_max_sample_rate` is refused before anything opens.
pub(super) fn check_frequency(frequency: u64) -> Result<(), PerfError> {
    let max = linux::read_sysctl("kernel.perf_event_max_sample_rate").and_then(|s| s.parse().ok());
    match max {
        Some(max) if frequency > max => Err(PerfError::FrequencyTooHigh {
            requested: frequency,
            max,
        }),
        _ => Ok(()),
    }
}
