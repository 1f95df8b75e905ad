//! How opening perf events fails, and what the user is told to do about it.

use std::io;

use crate::linux;

#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(
        "could not attach ember's BPF program to its perf events: {0}; record with --unwind user"
    )]
    KernelWalk(String),
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
        "too many open files: ember opens one perf event per thread and CPU, and the limit \
         is {limit} (ulimit -n, raised to the hard limit already); raise the hard limit \
         (e.g. `ulimit -Hn 65536` as root, or LimitNOFILE= in a systemd unit), or record \
         the whole machine with -a, which needs one per CPU"
    )]
    TooManyFiles { limit: String },
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

pub(super) fn is_permission_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// Why no event could be opened: refused (with what to do), or another error.
pub(super) fn open_error(cpu: u32, e: io::Error) -> PerfError {
    if is_permission_error(&e) {
        return PerfError::Refused {
            paranoid: linux::read_sysctl("kernel.perf_event_paranoid")
                .unwrap_or_else(|| "unknown".into()),
            error: e,
            why: refusal_reason(),
        };
    }
    if e.raw_os_error() == Some(libc::EMFILE) {
        let limit = linux::limits::raise_open_files_limit()
            .map_or_else(|_| "unknown".into(), |n| n.to_string());
        return PerfError::TooManyFiles { limit };
    }
    PerfError::Open { cpu, source: e }
}
