//! Setting up the stack walk in the kernel on the sampling events: ember's BPF program
//! ([`crate::sampler::bpf`]) attached to every sampling event; its records read from its
//! ring into the reader's batches.

use std::os::fd::{AsRawFd, OwnedFd};

use perf_event_open_sys as sys;

use super::PerfConfig;
use crate::model::CallGraph;
use crate::sampler::bpf::{self, BpfMaps, BpfProgram};
use crate::sampler::records;
use crate::sampler::RecordBatch;

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

/// Load the program for `cpus` where `config` asks for it, with a ring of about
/// `ring_bytes` for its records; `Ok(None)`: not wanted here.
pub(super) fn load(
    config: &PerfConfig,
    cpus: &[u32],
    ring_bytes: usize,
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
        ring_bytes,
        check: config.kernel_walk == KernelWalk::Check,
        refusal: config.walk_hooks.refusal,
    };
    let loaded = bpf::load(cpus, options);
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

/// Attach the program to `fds` (the sampling events).
pub(super) fn attach(program: &BpfProgram, fds: &[OwnedFd]) -> Result<(), String> {
    for fd in fds {
        program.attach(fd.as_raw_fd()).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Move the program's records from its ring into `batch`, each framed as an
/// `EMBER_RECORD_BPF_SAMPLE`, and the records it had no room for as a count of lost samples;
/// returns how many records were moved.
pub(super) fn drain_records(program: &mut BpfProgram, batch: &mut RecordBatch) -> usize {
    let n = program.read_records(|raw| {
        let mut framed = false;
        let time = records::bpf_record_time(raw).unwrap_or(0);
        batch.push_with(time, |bytes| framed = records::frame_bpf_sample(raw, bytes));
        debug_assert!(framed, "the program's records fit in 16 bits");
    });
    let lost = program.take_lost();
    if lost > 0 {
        // Sorted first among what is read now, as the kernel's own lost records are.
        batch.push_with(0, |bytes| records::frame_lost_samples(lost, bytes));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unwind_table::packed::PackedRow;

    #[test]
    fn the_kernel_accepts_the_program() {
        let cpus = crate::linux::online_cpus().unwrap();
        let options = bpf::LoadOptions {
            rows: 1024,
            ..Default::default()
        };
        match bpf::load(&cpus, options) {
            Ok((mut program, mut maps)) => {
                assert_eq!(program.read_records(|_| {}), 0);
                assert_eq!(program.take_lost(), 0);
                let rows = [PackedRow::default()];
                let place = bpf::RowsPlace {
                    first: 0,
                    count: 1,
                    ..Default::default()
                };
                assert_eq!(maps.rows_of(7, &rows), Some(place));
                assert_eq!(maps.rows_of(7, &rows), Some(place));
                maps.set_process(1, &[bpf::MappingEntry::default()]);
                maps.remove_process(1);
            }
            Err(e) => panic!("{e}"),
        }
    }
}
