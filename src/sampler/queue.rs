//! Merging records from several ring buffers into time order.
//!
//! Each CPU's buffer is in time order on its own, but a process's `mmap` on one CPU must be
//! applied before its samples on another. Records are copied into one arena as they are read
//! and handed out sorted by timestamp up to a watermark that every buffer has passed.

#[derive(Clone, Copy, Debug)]
struct Entry {
    time: u64,
    start: usize,
    len: usize,
}

/// An arena of raw records waiting to be processed in time order. Its memory is reused from
/// round to round, so steady-state reading allocates nothing per record.
#[derive(Default)]
pub struct RecordQueue {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    spare_bytes: Vec<u8>,
    spare_entries: Vec<Entry>,
}

impl RecordQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queue a record given as one or two pieces (two when it wrapped around the ring).
    pub fn push(&mut self, time: u64, first: &[u8], second: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(first);
        self.bytes.extend_from_slice(second);
        self.entries.push(Entry {
            time,
            start,
            len: first.len() + second.len(),
        });
    }

    /// Hand every record with `time <= watermark` to `f` in time order (stable for equal
    /// times, so records from one buffer keep their order) and keep the rest for later.
    pub fn drain_until(&mut self, watermark: u64, mut f: impl FnMut(&[u8])) {
        self.entries.sort_by_key(|e| e.time);
        let n = self.entries.partition_point(|e| e.time <= watermark);
        for e in &self.entries[..n] {
            f(&self.bytes[e.start..e.start + e.len]);
        }
        // Compact what is left into the spare arena and swap.
        self.spare_bytes.clear();
        self.spare_entries.clear();
        for e in &self.entries[n..] {
            let start = self.spare_bytes.len();
            self.spare_bytes
                .extend_from_slice(&self.bytes[e.start..e.start + e.len]);
            self.spare_entries.push(Entry {
                time: e.time,
                start,
                len: e.len,
            });
        }
        std::mem::swap(&mut self.bytes, &mut self.spare_bytes);
        std::mem::swap(&mut self.entries, &mut self.spare_entries);
    }

    /// Hand out everything that is queued, in time order.
    pub fn drain_all(&mut self, f: impl FnMut(&[u8])) {
        self.drain_until(u64::MAX, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_in_time_order_and_keeps_later_records() {
        let mut q = RecordQueue::new();
        q.push(30, b"c", b"");
        q.push(10, b"a", b"1");
        q.push(20, b"b", b"");
        q.push(40, b"d", b"");
        let mut seen = Vec::new();
        q.drain_until(30, |r| seen.push(r.to_vec()));
        assert_eq!(seen, vec![b"a1".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(q.len(), 1);
        q.push(35, b"e", b"");
        seen.clear();
        q.drain_all(|r| seen.push(r.to_vec()));
        assert_eq!(seen, vec![b"e".to_vec(), b"d".to_vec()]);
        assert!(q.is_empty());
    }
}
