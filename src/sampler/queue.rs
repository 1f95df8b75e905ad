//! Merging records from several ring buffers into time order.
//!
//! Each CPU's buffer is in time order on its own, but a process's `mmap` on one CPU must be
//! applied before its samples on another. Records are copied once, as they are read, into the
//! chunk of the current round, and handed out sorted by timestamp up to a watermark that every
//! buffer has passed. Records left for a later round stay where they are (no second copy: a
//! sample with its stack is tens of kilobytes); a chunk is recycled once all its records are out.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug)]
struct Entry {
    time: u64,
    start: usize,
    len: usize,
    done: bool,
}

#[derive(Default)]
struct Chunk {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
    remaining: usize,
}

/// Raw records waiting to be processed in time order. Memory is reused from round to round,
/// so steady-state reading allocates nothing per record.
#[derive(Default)]
pub struct RecordQueue {
    chunks: VecDeque<Chunk>,
    spare: Vec<Chunk>,
    /// Records of all chunks to hand out this round: (time, chunk, entry).
    order: Vec<(u64, usize, usize)>,
    /// Records pushed since the last drain go to a fresh chunk.
    open: bool,
}

impl RecordQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.chunks.iter().map(|c| c.remaining).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue a record given as one or two pieces (two when it wrapped around the ring).
    pub fn push(&mut self, time: u64, first: &[u8], second: &[u8]) {
        if !self.open {
            let mut c = self.spare.pop().unwrap_or_default();
            c.bytes.clear();
            c.entries.clear();
            c.remaining = 0;
            self.chunks.push_back(c);
            self.open = true;
        }
        let c = self.chunks.back_mut().expect("an open chunk");
        let start = c.bytes.len();
        c.bytes.extend_from_slice(first);
        c.bytes.extend_from_slice(second);
        c.entries.push(Entry {
            time,
            start,
            len: first.len() + second.len(),
            done: false,
        });
        c.remaining += 1;
    }

    /// Queue a record as [`RecordQueue::push`] does, giving it another record kind.
    pub fn push_as(&mut self, kind: u32, time: u64, first: &[u8], second: &[u8]) {
        self.push(time, first, second);
        let c = self.chunks.back_mut().expect("just pushed");
        let e = c.entries.last().expect("just pushed");
        c.bytes[e.start..e.start + 4].copy_from_slice(&kind.to_le_bytes());
    }

    /// Hand every record with `time <= watermark` to `f` in time order (stable for equal
    /// times, so records from one buffer keep their order) and keep the rest for later.
    pub fn drain_until(&mut self, watermark: u64, mut f: impl FnMut(&[u8])) {
        self.open = false;
        self.order.clear();
        for (ci, c) in self.chunks.iter().enumerate() {
            for (ei, e) in c.entries.iter().enumerate() {
                if !e.done && e.time <= watermark {
                    self.order.push((e.time, ci, ei));
                }
            }
        }
        // Stable: chunk order, then entry order, break ties.
        self.order.sort_by_key(|&(t, c, e)| (t, c, e));
        for &(_, ci, ei) in &self.order {
            let c = &mut self.chunks[ci];
            let e = &mut c.entries[ei];
            e.done = true;
            c.remaining -= 1;
            f(&c.bytes[e.start..e.start + e.len]);
        }
        // Recycle chunks that are fully handed out (from the front: older rounds).
        while self.chunks.front().is_some_and(|c| c.remaining == 0) {
            let c = self.chunks.pop_front().expect("checked");
            if self.spare.len() < 4 {
                self.spare.push(c);
            }
        }
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
        q.push(40, b"f", b"");
        seen.clear();
        q.drain_all(|r| seen.push(r.to_vec()));
        // Equal times keep the order they were read in.
        assert_eq!(seen, vec![b"e".to_vec(), b"d".to_vec(), b"f".to_vec()]);
        assert!(q.is_empty());
    }

    #[test]
    fn chunks_are_recycled() {
        let mut q = RecordQueue::new();
        for round in 0..100u64 {
            for i in 0..10 {
                q.push(round * 100 + i, &[0u8; 64], b"");
            }
            let mut n = 0;
            q.drain_until(round * 100 + 4, |_| n += 1);
            assert!(n >= 5);
        }
        assert!(q.chunks.len() <= 2);
        assert_eq!(q.len(), 5);
    }
}
