//! The ring buffers perf events write into: mapping them (one per CPU, the CPU's other
//! events redirected into it), and copying out every complete record.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use perf_event_open_sys as sys;

use super::error::{is_permission_error, PerfError};
use crate::sampler::records::{self, RecordHeader, SampleLayout, StackCopy};
use crate::sampler::RecordBatch;

/// One CPU's ring buffer, mapped, and the events that write into it.
pub(crate) struct RingBuffer {
    /// The event whose buffer this is (owned by the [`PerfSampler`]).
    fd: RawFd,
    /// The other events of the same CPU that write into it (`PERF_EVENT_IOC_SET_OUTPUT`).
    redirected: Vec<RawFd>,
    /// Where it is mapped; `None` while another process (the relay) maps it instead.
    base: Option<NonNull<u8>>,
    map_len: usize,
    pub(super) data_len: usize,
    page_size: usize,
}

// SAFETY: the mapping is owned by this struct; it is only touched through &mut self.
unsafe impl Send for RingBuffer {}

impl RingBuffer {
    pub(crate) fn map(fd: RawFd, data_pages: usize) -> io::Result<RingBuffer> {
        let page_size = page_size();
        let map_len = (data_pages + 1) * page_size;
        Ok(RingBuffer {
            fd,
            redirected: Vec::new(),
            base: Some(crate::linux::memory::map_shared(fd, map_len)?),
            map_len,
            data_len: data_pages * page_size,
            page_size,
        })
    }

    /// Stop mapping the buffer here (another process is to map it: two mappings of one
    /// buffer would each count against the user's locked memory, and the kernel gives back
    /// only one when the last goes).
    pub(super) fn unmap(&mut self) {
        if let Some(base) = self.base.take() {
            // SAFETY: unmapping exactly what `map` mapped.
            unsafe { libc::munmap(base.as_ptr() as *mut _, self.map_len) };
        }
    }

    /// Send the other events of its CPU into this buffer.
    pub(super) fn redirect(&mut self, fds: &[RawFd]) -> io::Result<()> {
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
    pub(super) fn map_again(&mut self) -> io::Result<()> {
        if self.base.is_none() {
            self.base = Some(crate::linux::memory::map_shared(self.fd, self.map_len)?);
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
    pub(super) fn drain(
        &mut self,
        layout: &SampleLayout,
        batch: &mut RecordBatch,
        samples_as: Option<u32>,
    ) -> usize {
        self.each_record(|rec| push_record(layout, batch, rec, samples_as))
    }

    /// Hand every complete record to `each`, oldest first, and free its space; returns how
    /// many there were.
    pub(crate) fn each_record(&mut self, mut each: impl FnMut(&[u8])) -> usize {
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
            each(rec);
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

pub(super) use crate::linux::memory::page_size;

/// Map one ring buffer per CPU and point every other fd of that CPU at it
/// (`PERF_EVENT_IOC_SET_OUTPUT`), halving the buffer while the kernel refuses the memory.
pub(super) fn map_buffers(
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
