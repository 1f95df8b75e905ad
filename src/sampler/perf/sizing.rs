//! How much each sample copies and each ring buffer holds: by privileges, the reader's
//! priority, the frequency, and what locked memory allows.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use perf_event_open_sys as sys;

use super::attr::dummy_attr;
use super::ring::{page_size, RingBuffer};
use super::{PerfConfig, MAX_STACK_SIZE};
use crate::model::CallGraph;

/// How much each sample copies and each ring buffer holds.
pub(super) struct Sizing {
    pub stack_size: u32,
    /// Data pages per ring buffer.
    pub pages: usize,
    pub notes: Vec<String>,
}

impl Sizing {
    pub(super) fn for_config(config: &PerfConfig, cpus: usize) -> Sizing {
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
/// quarter of that, rounded down, and at most [`RAISED_READER_CAP`]: the kernel allocates and
/// zeroes every page when the buffer is mapped, which at tens of MiB is a large part of a
/// short recording's CPU (`scripts/manythreads.sh` measures what smaller buffers lose).
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

/// The largest buffer (in data pages, a power of two, at most `wanted`) that can be mapped
/// `count` times at once under this user's locked-memory limits, found by mapping buffers of
/// a dummy event on ember itself. Root is not limited.
fn usable_buffer_pages(wanted: usize, count: usize) -> usize {
    if is_root() {
        return wanted;
    }
    let mut attr = dummy_attr();
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
