//! The room the kernel gives files' rows: each file's rows are a map of their own, sized to
//! them, at an index of the program's `files` map; the rows held together are kept under a
//! bound, and a file's index and rows are given back when no process maps it any more, so a
//! machine-wide recording of hours holds the rows of what runs now, not of everything that
//! ever ran.

/// Rows held against the bound, and the indexes of `files` in use.
#[derive(Debug)]
pub struct RowSpace {
    used: u64,
    capacity: u32,
    /// The most rows held by files at once.
    peak: u64,
    /// Indexes given back, taken again first.
    free: Vec<u32>,
    /// Indexes from here on were never handed out.
    next: u32,
    slots: u32,
}

impl RowSpace {
    /// Room for `capacity` rows among at most `slots` files.
    pub fn new(capacity: u32, slots: u32) -> RowSpace {
        RowSpace {
            used: 0,
            capacity,
            peak: 0,
            free: Vec::new(),
            next: 0,
            slots,
        }
    }

    /// An index of `files` for a file of `n` rows, `None` if they do not fit.
    pub fn take(&mut self, n: u32) -> Option<u32> {
        if !self.has_room(n) {
            return None;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.used += u64::from(n);
        self.peak = self.peak.max(self.used);
        Some(slot)
    }

    /// Whether a file of `n` rows would fit.
    pub fn has_room(&self, n: u32) -> bool {
        let slot_free = !self.free.is_empty() || self.next < self.slots;
        slot_free && self.used + u64::from(n) <= u64::from(self.capacity)
    }

    /// Give back `slot` and its `n` rows (what [`RowSpace::take`] handed out).
    pub fn give(&mut self, slot: u32, n: u32) {
        self.used -= u64::from(n);
        self.free.push(slot);
    }

    /// The most rows held by files at once so far.
    pub fn peak(&self) -> u32 {
        self.peak as u32
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_given_back_make_room_and_their_index_is_taken_again() {
        let mut s = RowSpace::new(100, 8);
        let a = s.take(30).unwrap();
        let b = s.take(30).unwrap();
        let c = s.take(30).unwrap();
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(s.take(20), None, "10 rows left");
        assert!(s.has_room(10));
        s.give(b, 30);
        assert_eq!(s.take(40), Some(b), "no run to find: any 40 rows fit");
        assert_eq!(s.peak(), 100);
        assert_eq!(s.capacity(), 100);
    }

    #[test]
    fn files_past_the_last_index_do_not_fit_whatever_their_size() {
        let mut s = RowSpace::new(1000, 2);
        let a = s.take(1).unwrap();
        s.take(1).unwrap();
        assert!(!s.has_room(1));
        assert_eq!(s.take(1), None);
        s.give(a, 1);
        assert_eq!(s.take(1), Some(a));
        assert_eq!(s.peak(), 2);
    }
}
