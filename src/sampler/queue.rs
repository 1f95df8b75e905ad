//! Merging records from several ring buffers into time order.
//!
//! Each CPU's buffer is in time order on its own, but a process's `mmap` on one CPU must be
//! applied before its samples on another. The thread that reads the buffers copies each record
//! once, into a [`RecordBatch`] (one per read of every buffer), and hands whole batches to the
//! thread that processes them; there a [`RecordQueue`] hands records out sorted by timestamp up
//! to a watermark that every buffer has passed. Records left for a later round stay where they
//! are (no second copy: a sample with its stack is tens of kilobytes).

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Entry {
    time: u64,
    start: usize,
    len: usize,
    done: bool,
}

/// Records copied out of the buffers in one read: their bytes, back to back, and where each
/// starts.
#[derive(Default)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    remaining: usize,
    /// Processes with a sample whose stack filled its copy (see [`RecordBatch::full_copies`]).
    full_copies: Vec<u32>,
}

impl RecordBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with `bytes` of memory already touched, so that reading into it later
    /// costs no page faults (a starved reader must copy as fast as it can).
    pub fn with_memory(bytes: usize) -> Self {
        let mut b = RecordBatch {
            bytes: vec![0u8; bytes],
            ..Default::default()
        };
        // vec![0; n] may come from untouched zero pages: write them.
        for page in b.bytes.chunks_mut(4096) {
            page[0] = 1;
        }
        b.bytes.clear();
        b
    }

    /// Empty the batch, keeping its memory for the next read.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
        self.remaining = 0;
        self.full_copies.clear();
    }

    /// A sample of process `pid` added (or about to be) filled its stack copy.
    pub fn note_full_copy(&mut self, pid: u32) {
        if !self.full_copies.contains(&pid) {
            self.full_copies.push(pid);
        }
    }

    /// The processes whose stacks filled a copy in this batch (perf events read here): their
    /// stacks may be deeper than the copies, which the reader can tell without unwinding.
    pub fn full_copies(&self) -> &[u32] {
        &self.full_copies
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each record with its timestamp, in the order they were added.
    pub fn records(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        self.entries
            .iter()
            .map(|e| (e.time, &self.bytes[e.start..e.start + e.len]))
    }

    /// Bytes the records take.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Add a record given as one or two pieces (two when it wrapped around the ring).
    pub fn push(&mut self, time: u64, first: &[u8], second: &[u8]) {
        self.push_with(time, |bytes| {
            bytes.extend_from_slice(first);
            bytes.extend_from_slice(second);
        });
    }

    /// Add a record that `write` appends to the batch's bytes.
    pub fn push_with(&mut self, time: u64, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.bytes.len();
        write(&mut self.bytes);
        self.entries.push(Entry {
            time,
            start,
            len: self.bytes.len() - start,
            done: false,
        });
        self.remaining += 1;
    }
}

/// Raw records waiting to be processed in time order.
#[derive(Default)]
pub struct RecordQueue {
    batches: VecDeque<RecordBatch>,
    /// Batches fully handed out, for the reader to fill again (see [`RecordQueue::take_spent`]).
    spent: Vec<RecordBatch>,
    /// Records of all batches to hand out this round: (time, batch, entry).
    order: Vec<(u64, usize, usize)>,
}

impl RecordQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.batches.iter().map(|c| c.remaining).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue the records of one read.
    pub fn add(&mut self, batch: RecordBatch) {
        if !batch.is_empty() {
            self.batches.push_back(batch);
        }
    }

    /// Hand every record with `time <= watermark` to `f` in time order (stable for equal
    /// times, so records from one buffer keep their order) and keep the rest for later.
    pub fn drain_until(&mut self, watermark: u64, mut f: impl FnMut(&[u8])) {
        self.order.clear();
        for (ci, c) in self.batches.iter().enumerate() {
            for (ei, e) in c.entries.iter().enumerate() {
                if !e.done && e.time <= watermark {
                    self.order.push((e.time, ci, ei));
                }
            }
        }
        // Stable: batch order, then entry order, break ties.
        self.order.sort_by_key(|&(t, c, e)| (t, c, e));
        for &(_, ci, ei) in &self.order {
            let c = &mut self.batches[ci];
            let e = &mut c.entries[ei];
            e.done = true;
            c.remaining -= 1;
            f(&c.bytes[e.start..e.start + e.len]);
        }
        // Batches fully handed out (from the front: older reads) are done with.
        while self.batches.front().is_some_and(|c| c.remaining == 0) {
            let mut c = self.batches.pop_front().expect("checked");
            c.clear();
            self.spent.push(c);
        }
    }

    /// The batches handed out completely since the last call, emptied: reading into memory
    /// already touched is much cheaper than into fresh pages.
    pub fn take_spent(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.spent)
    }

    /// Hand out everything that is queued, in time order.
    pub fn drain_all(&mut self, f: impl FnMut(&[u8])) {
        self.drain_until(u64::MAX, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(records: &[(u64, &[u8], &[u8])]) -> RecordBatch {
        let mut b = RecordBatch::new();
        for &(t, first, second) in records {
            b.push(t, first, second);
        }
        b
    }

    #[test]
    fn merges_in_time_order_and_keeps_later_records() {
        let mut q = RecordQueue::new();
        q.add(batch(&[(30, b"c", b""), (40, b"d", b"")]));
        q.add(batch(&[(10, b"a", b"1"), (20, b"b", b"")]));
        let mut seen = Vec::new();
        q.drain_until(30, |r| seen.push(r.to_vec()));
        assert_eq!(seen, vec![b"a1".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(q.len(), 1);
        q.add(batch(&[(35, b"e", b""), (40, b"f", b"")]));
        seen.clear();
        q.drain_all(|r| seen.push(r.to_vec()));
        // Equal times keep the order they were read in.
        assert_eq!(seen, vec![b"e".to_vec(), b"d".to_vec(), b"f".to_vec()]);
        assert!(q.is_empty());
    }

    #[test]
    fn batches_are_freed_once_handed_out() {
        let mut q = RecordQueue::new();
        for round in 0..100u64 {
            let mut b = RecordBatch::new();
            for i in 0..10 {
                b.push(round * 100 + i, &[0u8; 64], b"");
            }
            q.add(b);
            let mut n = 0;
            q.drain_until(round * 100 + 4, |_| n += 1);
            assert!(n >= 5);
        }
        assert!(q.batches.len() <= 2);
        assert_eq!(q.len(), 5);
        let spent = q.take_spent();
        assert!(spent.len() >= 98);
        assert!(spent
            .iter()
            .all(|b| b.is_empty() && b.bytes.capacity() >= 640));
    }
}
