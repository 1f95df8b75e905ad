//! Setting up the stack walk in the kernel on the sampling events: ember's BPF program
//! ([`crate::sampler::bpf`]) attached to every sampling event, its output event of each CPU
//! sent into that CPU's ring buffer.

use std::os::fd::{AsRawFd, OwnedFd};

use perf_event_open_sys as sys;

use super::open::open_one;
use super::ring::RingBuffer;
use super::PerfConfig;
use crate::model::CallGraph;
use crate::sampler::bpf::{self, BpfMaps, BpfProgram};
use crate::sampler::records;

/// Whether and how to walk stacks in the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelWalk {
    /// In user space, from perf events' stack copies.
    Off,
    /// With ember's BPF program where the kernel allows it; where it does not, said in `-v`.
    #[default]
    Auto,
    /// As asked for (`--unwind kernel`): where the kernel does not allow it, a warning says so.
    On,
    /// ... and every record also carries a stack copy at the sample's stack pointer, for the
    /// collector to walk each stack both ways (`--debug-check-tables`).
    Check,
}

/// Load the program for `cpus` where `config` asks for it; `Ok(None)`: not wanted here.
pub(super) fn load(
    config: &PerfConfig,
    cpus: &[u32],
) -> Result<Option<(BpfProgram, BpfMaps)>, String> {
    if config.kernel_walk == KernelWalk::Off {
        return Ok(None);
    }
    if config.call_graph == CallGraph::Fp {
        return Err("--call-graph fp asks for the kernel's frame-pointer chains".into());
    }
    if config.off_cpu {
        // The samples taken at context switches are not sampling events' (no program runs).
        return Err("--off-cpu samples at context switches, where the program does not run".into());
    }
    let options = bpf::LoadOptions {
        rows: config.walk_hooks.rows.unwrap_or(bpf::DEFAULT_ROWS),
        check: config.kernel_walk == KernelWalk::Check,
        refusal: config.walk_hooks.refusal,
    };
    let loaded = bpf::load(cpus, open_outputs(cpus)?, options);
    loaded.map(Some).map_err(|e| e.to_string())
}

/// The sampling events' own samples are dropped for the program's records: they need no
/// stack copy, registers or callchain (which the kernel would prepare for nothing).
pub(super) fn without_copies(attr: &mut sys::bindings::perf_event_attr) {
    attr.sample_type &= !(records::PERF_SAMPLE_CALLCHAIN
        | records::PERF_SAMPLE_REGS_USER
        | records::PERF_SAMPLE_STACK_USER);
    attr.sample_regs_user = 0;
    attr.sample_stack_user = 0;
}

/// Attach the program to `fds` (the sampling events) and send its records into `buffers`
/// (one per CPU of `cpus`, in order).
pub(super) fn attach(
    program: &BpfProgram,
    cpus: &[u32],
    fds: &[OwnedFd],
    buffers: &mut [RingBuffer],
) -> Result<(), String> {
    if buffers.len() != cpus.len() {
        return Err("not every CPU has a ring buffer".into());
    }
    for (buffer, &cpu) in buffers.iter_mut().zip(cpus) {
        let out = program.output_fd(cpu).ok_or("no output event")?;
        buffer.redirect_also(out).map_err(|e| {
            format!("could not send the BPF output of CPU {cpu} to its buffer: {e}")
        })?;
    }
    for fd in fds {
        program.attach(fd.as_raw_fd()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One BPF output event per CPU (`PERF_COUNT_SW_BPF_OUTPUT`), for the program's records.
fn open_outputs(cpus: &[u32]) -> Result<Vec<(u32, OwnedFd)>, String> {
    cpus.iter()
        .map(|&cpu| {
            let mut attr = bpf::record::output_attr();
            open_one(&mut attr, u32::MAX, cpu as i32)
                .map(|fd| (cpu, fd))
                .map_err(|e| format!("could not open the BPF output event of CPU {cpu}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind_table::packed::PackedRow;

    #[test]
    fn the_kernel_accepts_the_program() {
        let cpus = crate::linux::online_cpus().unwrap();
        let outputs = open_outputs(&cpus).expect("BPF output events (perf events allowed?)");
        let options = bpf::LoadOptions {
            rows: 1024,
            ..Default::default()
        };
        match bpf::load(&cpus, outputs, options) {
            Ok((program, mut maps)) => {
                assert!(program.output_fd(cpus[0]).is_some());
                let rows = [PackedRow::default()];
                assert_eq!(maps.rows_of(7, &rows), Some((0, 1)));
                assert_eq!(maps.rows_of(7, &rows), Some((0, 1)));
                maps.set_process(1, &[bpf::MappingEntry::default()]);
                maps.remove_process(1);
            }
            Err(e) => panic!("{e}"),
        }
    }
}
