//! Where files' rows go in the one array of rows the kernel holds: each file's rows in one
//! run, runs given back when no process maps their file any more and taken again by files
//! met later (first fit), so a machine-wide recording of hours holds the rows of what runs
//! now, not of everything that ever ran.

/// The array's runs: the part used so far from the start, with gaps given back in it.
#[derive(Debug)]
pub struct RowSpace {
    /// Rows from 0 to `end` have been handed out (some given back since: `gaps`).
    end: u32,
    capacity: u32,
    /// Runs given back below `end`, by first row, none touching another.
    gaps: Vec<(u32, u32)>,
    /// The most rows held by files at once.
    peak: u32,
}

impl RowSpace {
    pub fn new(capacity: u32) -> RowSpace {
        RowSpace {
            end: 0,
            capacity,
            gaps: Vec::new(),
            peak: 0,
        }
    }

    /// The first row of a run of `n` rows, `None` if no run that long is free.
    pub fn take(&mut self, n: u32) -> Option<u32> {
        let first = self.first_fit(n)?;
        self.peak = self.peak.max(self.used());
        Some(first)
    }

    /// Whether a run of `n` rows is free.
    pub fn has_room(&self, n: u32) -> bool {
        self.capacity - self.end >= n || self.gaps.iter().any(|&(_, len)| len >= n)
    }

    fn first_fit(&mut self, n: u32) -> Option<u32> {
        if let Some(i) = self.gaps.iter().position(|&(_, len)| len >= n) {
            let (first, len) = self.gaps[i];
            if len == n {
                self.gaps.remove(i);
            } else {
                self.gaps[i] = (first + n, len - n);
            }
            return Some(first);
        }
        let first = self.end;
        (self.capacity - first >= n).then(|| {
            self.end += n;
            first
        })
    }

    /// Give back the `n` rows from `first` (a run [`RowSpace::take`] handed out).
    pub fn give(&mut self, first: u32, n: u32) {
        if n == 0 {
            return;
        }
        let at = self.gaps.partition_point(|&(f, _)| f < first);
        self.gaps.insert(at, (first, n));
        // Join it to the gap after it, then to the one before.
        if at + 1 < self.gaps.len() && first + n == self.gaps[at + 1].0 {
            self.gaps[at].1 += self.gaps.remove(at + 1).1;
        }
        if at > 0 && self.gaps[at - 1].0 + self.gaps[at - 1].1 == first {
            self.gaps[at - 1].1 += self.gaps.remove(at).1;
        }
        // A gap that reaches the end is no gap.
        if let Some(&(f, len)) = self.gaps.last() {
            if f + len == self.end {
                self.end = f;
                self.gaps.pop();
            }
        }
    }

    /// Rows held by files now.
    pub fn used(&self) -> u32 {
        self.end - self.gaps.iter().map(|&(_, len)| len).sum::<u32>()
    }

    /// The most rows held by files at once so far.
    pub fn peak(&self) -> u32 {
        self.peak
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_given_back_are_taken_again_and_join_their_neighbours() {
        let mut s = RowSpace::new(100);
        let a = s.take(30).unwrap();
        let b = s.take(30).unwrap();
        let c = s.take(30).unwrap();
        assert_eq!((a, b, c), (0, 30, 60));
        assert_eq!(s.take(20), None, "10 rows left");
        s.give(a, 30);
        assert_eq!(s.used(), 60);
        assert_eq!(s.take(10), Some(0), "first fit, in the gap");
        assert_eq!(s.take(25), None, "20 in the gap, 10 at the end");
        s.give(b, 30);
        // 0..10 used, 10..60 one gap.
        assert_eq!(s.take(45), Some(10));
        s.give(c, 30);
        assert_eq!(
            s.used(),
            55,
            "the last run given back shortens the used part"
        );
        assert_eq!(s.take(45), Some(55));
    }

    #[test]
    fn giving_back_everything_empties_the_space() {
        let mut s = RowSpace::new(64);
        let runs: Vec<(u32, u32)> = [5, 7, 11, 13]
            .iter()
            .map(|&n| (s.take(n).unwrap(), n))
            .collect();
        for &(first, n) in [runs[1], runs[3], runs[0], runs[2]].iter() {
            s.give(first, n);
        }
        assert_eq!(s.used(), 0);
        assert_eq!(s.peak(), 36);
        assert_eq!(s.take(64), Some(0));
        assert_eq!(s.peak(), 64);
    }
}
