//! What the unwinder read of a thread's stack, kept so that the ptrace backend copies less of
//! it at the thread's next stop.
//!
//! A deep stack is mostly outer frames that stay as they are from one sample to the next, and
//! those frames are mostly locals the unwinder never reads (rustc's stacks run to 700 KB in a
//! few dozen frames). Unwinding reads a few words per frame: a return address, saved
//! registers. So after a whole deep stack of a thread was unwound, the collector keeps every
//! word each step read ([`StackReads`], shared through [`KnownStacks`]). At the thread's next
//! stop the sampler reads those words again (one gather read, where that may beat a copy:
//! [`worth_reading`]); from the outermost frame inward, as far as every word is unchanged, it
//! copies the stack only up to the stack pointer of the frame one outside the innermost such
//! frame, and sends the words above it with their values ([`StackReads::reuse`]).
//!
//! Nothing here is trusted to be the same stack as before: every word sent was read from the
//! stopped thread, at this stop. The unwinder reads memory only through the copy and these
//! words, so what it finds is what the thread's memory held. Should it need a word it was not
//! given (the inner frames now end elsewhere), the stack is cut and counted, never made up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Stacks smaller than this are copied whole: nothing is kept of them, nothing reused.
pub const MIN_REUSED_STACK: u64 = 32 << 10;

/// Whether reading `pieces` again may beat copying `stack_bytes` of stack: each piece costs
/// the kernel a look-up of its page, about a third of what copying a page costs all along
/// (the copy is copied again on its way to the unwinder), so where frames are small copying
/// wins: 5,000 frames of 1 KiB, 5,000 pieces in 1,250 pages, took 5.8 s read in pieces and
/// 4.1 s copied, for a 1.5 s recursion.
pub fn worth_reading(pieces: usize, stack_bytes: u64) -> bool {
    const PAGE: u64 = 4096;
    pieces as u64 * PAGE <= 2 * stack_bytes
}

/// Stacks whose unwind read more separate words than this are copied whole (a gather read
/// takes 1,024 pieces a system call; 5,000 frames of 1 KiB take five).
pub const MAX_PIECES: usize = 16384;

/// The words one unwind read, step by step (leaf first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackReads {
    /// For each step: the stack pointer of the frame it unwound, and where the words it read
    /// begin in `words`.
    steps: Vec<(u64, usize)>,
    /// Each word read: (address, value), in the order read.
    words: Vec<(u64, u64)>,
}

/// Where a stop's stack copy may end, and the words that stand for the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// Copy the stack from its pointer up to here...
    pub boundary: u64,
    /// ... and send these (address, value), sorted by address, all at or above `boundary`.
    pub words: Vec<(u64, u64)>,
}

impl StackReads {
    pub fn clear(&mut self) {
        self.steps.clear();
        self.words.clear();
    }

    /// The unwinder starts unwinding the frame whose stack pointer is `sp`.
    pub fn step(&mut self, sp: u64) {
        self.steps.push((sp, self.words.len()));
    }

    /// ... and read `value` at `addr`.
    pub fn read(&mut self, addr: u64, value: u64) {
        self.words.push((addr, value));
    }

    /// How many words were read.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The words of step `i`.
    fn step_words(&self, i: usize) -> &[(u64, u64)] {
        let start = self.steps[i].1;
        let end = self.steps.get(i + 1).map_or(self.words.len(), |s| s.1);
        &self.words[start..end]
    }

    /// The distinct addresses read at or above `sp`, merged into pieces of adjacent words:
    /// (start, bytes), in address order. `None` if they need more than [`MAX_PIECES`].
    pub fn pieces(&self, sp: u64) -> Option<Vec<(u64, usize)>> {
        let mut addrs: Vec<u64> = self
            .words
            .iter()
            .map(|&(a, _)| a)
            .filter(|&a| a >= sp)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let mut pieces: Vec<(u64, usize)> = Vec::new();
        for a in addrs {
            match pieces.last_mut() {
                Some((start, len)) if *start + *len as u64 == a => *len += 8,
                // Overlapping words (unaligned reads) extend the piece to the word's end.
                Some((start, len)) if *start + *len as u64 > a => {
                    *len = (a + 8 - *start) as usize;
                }
                _ => pieces.push((a, 8)),
            }
        }
        (pieces.len() <= MAX_PIECES).then_some(pieces)
    }

    /// A thread stopped with stack pointer `sp`, whose memory holds `live(addr)` at each
    /// address of [`StackReads::pieces`]: where its stack copy may end, and the words that
    /// stand for the rest.
    ///
    /// From the root inward, the steps whose words (those at or above `sp`: the others are
    /// gone) are all unchanged; the copy ends at the stack pointer of the frame just outside
    /// the innermost of them. That one frame of margin is copied because a frame's own words
    /// being unchanged does not make it the same function: one that replaced it by a tail
    /// call returns to the same place, and may read words of that frame the last unwind did
    /// not. The words given are every word read again at or above the end of the copy.
    pub fn reuse(&self, sp: u64, live: impl Fn(u64) -> Option<u64>) -> Option<Reuse> {
        let unchanged = |i: usize| {
            self.step_words(i)
                .iter()
                .all(|&(a, v)| a < sp || live(a) == Some(v))
        };
        let innermost = (0..self.steps.len())
            .rev()
            .take_while(|&i| unchanged(i))
            .last()?;
        let boundary = self.steps[innermost + 1..]
            .iter()
            .map(|&(frame_sp, _)| frame_sp)
            .find(|&frame_sp| frame_sp >= sp)?;
        let mut words: Vec<(u64, u64)> = self
            .words
            .iter()
            .filter(|&&(a, _)| a >= boundary)
            .filter_map(|&(a, _)| Some((a, live(a)?)))
            .collect();
        words.sort_unstable();
        words.dedup();
        Some(Reuse { boundary, words })
    }
}

/// Words read again at a stop, piece by piece (see [`StackReads::pieces`]).
pub struct Gathered<'a> {
    pieces: &'a [(u64, usize)],
    /// Where each piece begins in `bytes`.
    offsets: Vec<usize>,
    bytes: &'a [u8],
}

impl<'a> Gathered<'a> {
    /// `bytes`: the pieces read back to back.
    pub fn new(pieces: &'a [(u64, usize)], bytes: &'a [u8]) -> Gathered<'a> {
        let offsets = pieces
            .iter()
            .scan(0, |at, &(_, len)| {
                let this = *at;
                *at += len;
                Some(this)
            })
            .collect();
        Gathered {
            pieces,
            offsets,
            bytes,
        }
    }

    /// The word read at `addr`, if a piece holds it.
    pub fn word(&self, addr: u64) -> Option<u64> {
        let i = self.pieces.partition_point(|&(start, _)| start <= addr);
        let (start, len) = *self.pieces.get(i.checked_sub(1)?)?;
        let off = (addr - start) as usize;
        if off + 8 > len {
            return None;
        }
        let at = self.offsets[i - 1] + off;
        let b = self.bytes.get(at..at + 8)?;
        Some(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// What the last whole unwind of each deep thread read, by thread id: the collector leaves
/// it here, the ptrace sampler takes it at the thread's next stop.
#[derive(Clone, Default)]
pub struct KnownStacks(Arc<Mutex<HashMap<u32, Arc<StackReads>>>>);

impl std::fmt::Debug for KnownStacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KnownStacks")
    }
}

impl KnownStacks {
    pub fn new() -> KnownStacks {
        KnownStacks::default()
    }

    /// What unwinding the latest stack of `tid` read.
    pub fn keep(&self, tid: u32, reads: StackReads) {
        if let Ok(mut known) = self.0.lock() {
            known.insert(tid, Arc::new(reads));
        }
    }

    pub fn get(&self, tid: u32) -> Option<Arc<StackReads>> {
        self.0.lock().ok()?.get(&tid).cloned()
    }

    /// Thread `tid` ended or called `exec`: nothing of its stack holds.
    pub fn forget(&self, tid: u32) {
        if let Ok(mut known) = self.0.lock() {
            known.remove(&tid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leaf at 0x1000 (reads its return address at 0x1010), a big frame at 0x1018 (reads
    /// 0x9ff0 and 0x9ff8), the root at 0xa000 (reads 0xa008).
    fn reads() -> StackReads {
        let mut r = StackReads::default();
        r.step(0x1000);
        r.read(0x1010, 0x401111);
        r.step(0x1018);
        r.read(0x9ff8, 0x402222);
        r.read(0x9ff0, 0x7777);
        r.step(0xa000);
        r.read(0xa008, 0);
        r
    }

    fn memory(words: &[(u64, u64)]) -> impl Fn(u64) -> Option<u64> + '_ {
        move |a| words.iter().find(|w| w.0 == a).map(|w| w.1)
    }

    #[test]
    fn adjacent_words_are_read_as_one_piece() {
        let r = reads();
        assert_eq!(
            r.pieces(0x1000),
            Some(vec![(0x1010, 8), (0x9ff0, 16), (0xa008, 8)])
        );
        assert_eq!(r.pieces(0x9ff8), Some(vec![(0x9ff8, 8), (0xa008, 8)]));
    }

    #[test]
    fn the_copy_ends_one_frame_outside_the_innermost_one_whose_words_are_unchanged() {
        let r = reads();
        let same = [
            (0x1010, 0x401111),
            (0x9ff0, 0x7777),
            (0x9ff8, 0x402222),
            (0xa008, 0),
        ];
        // All unchanged, the leaf's too: the copy ends at the big frame's stack pointer.
        let reuse = r.reuse(0x1000, memory(&same)).unwrap();
        assert_eq!(reuse.boundary, 0x1018);
        assert_eq!(
            reuse.words,
            vec![(0x9ff0, 0x7777), (0x9ff8, 0x402222), (0xa008, 0)]
        );
        // The leaf returns elsewhere now: its frame may be another function's, and the big
        // frame is copied too.
        let leaf = [
            (0x1010, 0x401234),
            (0x9ff0, 0x7777),
            (0x9ff8, 0x402222),
            (0xa008, 0),
        ];
        let reuse = r.reuse(0x1000, memory(&leaf)).unwrap();
        assert_eq!((reuse.boundary, reuse.words), (0xa000, vec![(0xa008, 0)]));
        // The big frame's return address changed: nothing outside it to leave out.
        let moved = [
            (0x1010, 0x401111),
            (0x9ff0, 0x7777),
            (0x9ff8, 0x403333),
            (0xa008, 0),
        ];
        assert_eq!(r.reuse(0x1000, memory(&moved)), None);
        // A word that cannot be read counts as changed.
        assert_eq!(r.reuse(0x1000, memory(&same[..3])), None);
    }

    #[test]
    fn words_below_the_stack_pointer_are_gone_and_not_compared() {
        let r = reads();
        let same = [(0x9ff0, 0x7777), (0x9ff8, 0x402222), (0xa008, 0)];
        // Stopped in the big frame itself: the leaf's word lies below the stack pointer.
        let reuse = r.reuse(0x1018, memory(&same)).unwrap();
        assert_eq!(reuse.boundary, 0x1018);
        // Above the big frame's stack pointer: the copy ends at the root's.
        let reuse = r.reuse(0x1020, memory(&same)).unwrap();
        assert_eq!(reuse.boundary, 0xa000);
        // Above every frame: nothing to leave out.
        assert_eq!(r.reuse(0xb000, memory(&same)), None);
    }

    #[test]
    fn gathered_words_are_found_in_their_piece() {
        let pieces = [(0x1010, 8), (0x9ff0, 24)];
        let bytes: Vec<u8> = [1u64, 2, 3, 4]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let g = Gathered::new(&pieces, &bytes);
        assert_eq!(g.word(0x1010), Some(1));
        assert_eq!(g.word(0x9ff0), Some(2));
        assert_eq!(g.word(0xa000), Some(4));
        for outside in [0x1008, 0x1018, 0x9fe8, 0xa008, 0xa004] {
            assert_eq!(g.word(outside), None, "{outside:#x}");
        }
    }

    #[test]
    fn many_small_frames_are_copied_rather_than_read_word_by_word() {
        // 5,000 frames of 1 KiB: a word each, 1,250 pages.
        assert!(!worth_reading(5000, 5000 * 1024));
        // rustc: some 40 words in 170 KiB; a 600 KiB frame: 5 words.
        assert!(worth_reading(40, 170 << 10));
        assert!(worth_reading(5, 600 << 10));
    }

    #[test]
    fn known_stacks_are_kept_by_thread_until_forgotten() {
        let known = KnownStacks::new();
        known.keep(7, reads());
        assert_eq!(known.get(7).as_deref(), Some(&reads()));
        assert!(known.get(8).is_none());
        known.forget(7);
        assert!(known.get(7).is_none());
    }
}
