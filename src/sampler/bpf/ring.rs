//! The ring the program sends its records into (`BPF_MAP_TYPE_RINGBUF`), read here: one
//! ring for all CPUs, records in the order they were committed.
//!
//! The kernel maps it as a page holding the reader's position (read and write), then a page
//! holding the writers' position and the data twice over (read only: a record that wraps
//! around the end reads on without a break). Each record is an 8-byte header — its length,
//! with bit 31 set while it is being written and bit 30 if it was thrown away — then its
//! bytes, the whole rounded up to 8. The reader's position is read from the shared page at
//! each read, not remembered here: a forked reader (`crate::sampler::relay`) may have moved
//! it meanwhile.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use aya::maps::MapData;

use crate::linux::memory::{map_shared_at, page_size};

const BUSY: u32 = 1 << 31;
const DISCARDED: u32 = 1 << 30;
const HEADER: usize = 8;

/// The ring, mapped here.
pub(super) struct RecordRing {
    /// Kept open: the map lives as long as a descriptor or the program holds it.
    map: MapData,
    consumer: NonNull<u8>,
    producer: NonNull<u8>,
    /// The bytes of data (a power of two).
    size: usize,
}

// SAFETY: the mappings are owned by this struct; positions are read and written atomically.
unsafe impl Send for RecordRing {}

impl RecordRing {
    /// Map the ring `map` of `size` bytes.
    pub(super) fn map(map: MapData, size: usize) -> io::Result<RecordRing> {
        let fd = map.fd().as_fd().as_raw_fd();
        let page = page_size();
        let consumer = map_shared_at(fd, page, 0, true)?;
        let producer = match map_shared_at(fd, page + 2 * size, page, false) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping exactly the page mapped above.
                unsafe { libc::munmap(consumer.as_ptr().cast(), page) };
                return Err(e);
            }
        };
        Ok(RecordRing {
            map,
            consumer,
            producer,
            size,
        })
    }

    /// The map's descriptor, to wait on.
    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }

    /// The bytes of data.
    pub(super) fn size(&self) -> usize {
        self.size
    }

    fn position(&self, page: NonNull<u8>) -> &AtomicU64 {
        // SAFETY: each position is a u64 at the start of its page, mapped for our lifetime;
        // the kernel updates it atomically.
        unsafe { &*page.as_ptr().cast::<AtomicU64>() }
    }

    /// Hand every committed record to `each`, oldest first, and free its space; returns how
    /// many there were. A record still being written ends the read (the next read goes on
    /// from it).
    pub(super) fn read(&mut self, each: impl FnMut(&[u8])) -> usize {
        let end = self.position(self.producer).load(Ordering::Acquire);
        // SAFETY: the data follows the producer's page, mapped twice over, for our lifetime.
        let data = unsafe { self.producer.as_ptr().add(page_size()) };
        // SAFETY: as above; the kernel writes no record past the producer's position.
        unsafe { read_ring(data, self.size, self.position(self.consumer), end, each) }
    }
}

/// The records of the ring whose data (`size` bytes, mapped twice over) is at `data`, from
/// the reader's position `consumer` up to the writers' `end`, each to `each`; the position
/// moves past each record read. Returns how many were handed out.
///
/// # Safety
/// `data` must hold `2 * size` readable bytes, aligned to 8, the second `size` a copy of the
/// first, with a record header at `consumer` and after each record up to `end`.
unsafe fn read_ring(
    data: *const u8,
    size: usize,
    consumer: &AtomicU64,
    end: u64,
    mut each: impl FnMut(&[u8]),
) -> usize {
    let mut at = consumer.load(Ordering::Acquire);
    let mut n = 0;
    while at < end {
        let off = (at as usize) & (size - 1);
        // SAFETY: a header lies at every record's start, within the first copy of the data;
        // the kernel sets its length atomically when it commits the record.
        let len = unsafe { &*data.add(off).cast::<AtomicU32>() }.load(Ordering::Acquire);
        if len & BUSY != 0 {
            break;
        }
        let bytes = (len & !(BUSY | DISCARDED)) as usize;
        if bytes + HEADER > size {
            // Not a header: stop here rather than read past the ring.
            break;
        }
        if len & DISCARDED == 0 {
            // SAFETY: the record's bytes follow its header; the data is there twice over,
            // so they are contiguous even where they wrap around.
            each(unsafe { std::slice::from_raw_parts(data.add(off + HEADER), bytes) });
            n += 1;
        }
        at += (HEADER + bytes).next_multiple_of(8) as u64;
        consumer.store(at, Ordering::Release);
    }
    n
}

impl Drop for RecordRing {
    fn drop(&mut self) {
        let page = page_size();
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), page);
            libc::munmap(self.producer.as_ptr().cast(), page + 2 * self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ring of 64 bytes, its data twice over, with records written as the kernel does.
    struct FakeRing {
        words: Vec<u64>,
        end: u64,
    }

    impl FakeRing {
        fn new() -> FakeRing {
            FakeRing {
                words: vec![0; 16],
                end: 0,
            }
        }

        /// A record of `bytes` at the writers' position, with `flags` in its header.
        fn write(&mut self, bytes: &[u8], flags: u32) {
            let mut record = ((bytes.len() as u32) | flags).to_le_bytes().to_vec();
            record.extend([0; 4]);
            record.extend(bytes);
            record.resize(record.len().next_multiple_of(8), 0);
            for (i, b) in record.into_iter().enumerate() {
                let at = (self.end as usize + i) % 64;
                for copy in [at, at + 64] {
                    let word = &mut self.words[copy / 8];
                    let mut w = word.to_le_bytes();
                    w[copy % 8] = b;
                    *word = u64::from_le_bytes(w);
                }
            }
            self.end += (HEADER + bytes.len()).next_multiple_of(8) as u64;
        }

        fn read(&self, consumer: &AtomicU64) -> Vec<Vec<u8>> {
            let mut got = Vec::new();
            // SAFETY: 128 bytes of u64s, the second 64 a copy of the first.
            unsafe {
                read_ring(self.words.as_ptr().cast(), 64, consumer, self.end, |r| {
                    got.push(r.to_vec())
                })
            };
            got
        }
    }

    #[test]
    fn records_are_read_in_order_across_the_end_and_discarded_ones_skipped() {
        let mut ring = FakeRing::new();
        let consumer = AtomicU64::new(0);
        ring.write(b"first record", 0);
        ring.write(b"gone", DISCARDED);
        assert_eq!(ring.read(&consumer), vec![b"first record".to_vec()]);
        assert_eq!(consumer.load(Ordering::Relaxed), ring.end);
        // The next record wraps around the end of the 64 bytes.
        ring.write(b"twenty-four bytes long!!", 0);
        ring.write(b"0123456789", 0);
        assert_eq!(
            ring.read(&consumer),
            vec![b"twenty-four bytes long!!".to_vec(), b"0123456789".to_vec()]
        );
    }

    #[test]
    fn a_record_being_written_ends_the_read_and_is_read_once_committed() {
        let mut ring = FakeRing::new();
        let consumer = AtomicU64::new(0);
        ring.write(b"done", 0);
        let busy_at = ring.end;
        ring.write(b"busy", BUSY);
        assert_eq!(ring.read(&consumer), vec![b"done".to_vec()]);
        assert_eq!(consumer.load(Ordering::Relaxed), busy_at);
        ring.end = busy_at;
        ring.write(b"busy", 0);
        assert_eq!(ring.read(&consumer), vec![b"busy".to_vec()]);
    }

    #[test]
    fn a_length_longer_than_the_ring_stops_the_read() {
        let mut ring = FakeRing::new();
        let consumer = AtomicU64::new(0);
        ring.words[0] = 1000;
        ring.words[8] = 1000;
        ring.end = 64;
        assert!(ring.read(&consumer).is_empty());
        assert_eq!(consumer.load(Ordering::Relaxed), 0);
    }
}
