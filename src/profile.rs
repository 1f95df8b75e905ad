//! The profile: interned stacks with their sample counts per thread, plus what was recorded.
//!
//! Frames are interned once, stacks are nodes of a prefix tree (root first), so memory grows
//! with the number of *unique* stacks, not with the number of samples.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap as HashMap;
use std::time::Duration;

use crate::model::Frame;

pub type FrameId = u32;
pub type NodeId = u32;

/// The root of the prefix tree; it stands for the empty stack.
pub const ROOT: NodeId = 0;

#[derive(Clone, Copy, Debug)]
struct Node {
    parent: NodeId,
    frame: FrameId,
}

/// What was recorded besides the stacks: shown in titles, summaries and saved files.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    /// The command that was run, or a description of what was attached to.
    pub command: Vec<String>,
    pub frequency: u64,
    /// The perf event used (`cycles`, `cpu-clock`).
    pub event: String,
    /// When the recording (or its `--every` window) began, by the wall clock.
    pub start: Option<std::time::SystemTime>,
    pub duration: Duration,
    /// Samples the kernel dropped (ring buffer full).
    pub lost: u64,
    /// Times the kernel throttled sampling because it took too long.
    pub throttled: u64,
    /// Every process seen: pid → name.
    pub processes: BTreeMap<u32, String>,
    /// Every thread seen: tid → (pid, name).
    pub threads: BTreeMap<u32, (u32, String)>,
    /// When threads began and ended while recorded (monotonic ns, as sample times): tid →
    /// (start, end). A process is its main thread (tid = pid).
    pub lifetimes: BTreeMap<u32, (Option<u64>, Option<u64>)>,
    /// The executable of each process, where known: pid → path.
    pub executables: BTreeMap<u32, String>,
    /// Problems that did not stop the recording (unreadable binaries, ...).
    pub warnings: Vec<String>,
}

#[derive(Clone, Default)]
pub struct Profile {
    frames: Vec<Frame>,
    frame_ids: HashMap<Frame, FrameId>,
    nodes: Vec<Node>,
    node_ids: HashMap<(NodeId, FrameId), NodeId>,
    counts: HashMap<(u32, u32, NodeId), u64>,
    /// Each thread's last stack, root first, with the node of each prefix: the next sample
    /// of a thread usually shares most of it, which then costs a comparison per frame
    /// instead of two hash lookups (nodes are never removed, so these stay valid).
    last_paths: HashMap<u32, Vec<(Frame, NodeId)>>,
    total: u64,
    /// Every sample in the order taken, with its time: 24 bytes each (reset with the profile,
    /// so `--every` windows keep it bounded).
    timeline: Vec<Timed>,
    pub meta: Metadata,
}

/// One sample on the timeline: when (monotonic ns), whose, which stack, how many samples it
/// stands for (a wait counts one per period).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timed {
    pub time: u64,
    pub pid: u32,
    pub tid: u32,
    pub node: NodeId,
    pub count: u32,
}

impl Profile {
    pub fn new() -> Profile {
        Profile {
            nodes: vec![Node {
                parent: ROOT,
                frame: FrameId::MAX,
            }],
            ..Default::default()
        }
    }

    fn intern_frame(&mut self, f: Frame) -> FrameId {
        if let Some(&id) = self.frame_ids.get(&f) {
            return id;
        }
        let id = self.frames.len() as FrameId;
        self.frames.push(f);
        self.frame_ids.insert(f, id);
        id
    }

    fn child(&mut self, parent: NodeId, frame: FrameId) -> NodeId {
        if let Some(&n) = self.node_ids.get(&(parent, frame)) {
            return n;
        }
        let n = self.nodes.len() as NodeId;
        self.nodes.push(Node { parent, frame });
        self.node_ids.insert((parent, frame), n);
        n
    }

    /// Count `count` samples of thread `tid` of process `pid` with this stack (leaf first).
    pub fn add_sample(&mut self, pid: u32, tid: u32, leaf_first: &[Frame], count: u64) -> NodeId {
        let mut path = self.last_paths.remove(&tid).unwrap_or_default();
        let shared = path
            .iter()
            .zip(leaf_first.iter().rev())
            .take_while(|((last, _), f)| last == *f)
            .count();
        path.truncate(shared);
        let mut node = path.last().map_or(ROOT, |&(_, n)| n);
        for &f in leaf_first.iter().rev().skip(shared) {
            let id = self.intern_frame(f);
            node = self.child(node, id);
            path.push((f, node));
        }
        self.last_paths.insert(tid, path);
        *self.counts.entry((pid, tid, node)).or_insert(0) += count;
        self.total += count;
        node
    }

    /// [`Profile::add_sample`], keeping the sample's time on the timeline too.
    pub fn add_timed_sample(
        &mut self,
        time: u64,
        (pid, tid): (u32, u32),
        leaf_first: &[Frame],
        count: u64,
    ) {
        let node = self.add_sample(pid, tid, leaf_first, count);
        self.timeline.push(Timed {
            time,
            pid,
            tid,
            node,
            count: count.min(u64::from(u32::MAX)) as u32,
        });
    }

    /// The samples in the order they were taken.
    pub fn timeline(&self) -> &[Timed] {
        &self.timeline
    }

    pub fn total_samples(&self) -> u64 {
        self.total
    }

    /// Keep only the samples of processes for which `keep(pid)` holds, and only the frames
    /// they use (so nothing is symbolized for processes left out).
    pub fn retain_processes(&mut self, mut keep: impl FnMut(u32) -> bool) {
        let mut kept = Profile::new();
        let mut leaf_first = Vec::new();
        let mut moved = HashMap::default();
        for (pid, tid, node, count) in self.stack_nodes() {
            if !keep(pid) {
                continue;
            }
            self.leaf_first(node, &mut leaf_first);
            moved.insert(node, kept.add_sample(pid, tid, &leaf_first, count));
        }
        kept.timeline = self
            .timeline
            .iter()
            .filter(|t| keep(t.pid))
            .filter_map(|t| {
                Some(Timed {
                    node: *moved.get(&t.node)?,
                    ..*t
                })
            })
            .collect();
        kept.meta = std::mem::take(&mut self.meta);
        *self = kept;
    }

    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    pub fn unique_stacks(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Every (pid, tid, stack, count), stacks as frame ids root first; sorted so output is
    /// deterministic.
    pub fn stacks(&self) -> Vec<(u32, u32, Vec<FrameId>, u64)> {
        let mut out: Vec<_> = self
            .counts
            .iter()
            .map(|(&(pid, tid, node), &count)| (pid, tid, self.path(node), count))
            .collect();
        out.sort();
        out
    }

    /// The samples whose stack's root frame is `frame`.
    pub fn samples_rooted_at(&self, frame: Frame) -> u64 {
        let root_of = |mut node: NodeId| {
            let mut n = self.nodes[node as usize];
            while n.parent != ROOT {
                node = n.parent;
                n = self.nodes[node as usize];
            }
            self.frames[n.frame as usize]
        };
        self.counts
            .iter()
            .filter(|&(&(_, _, node), _)| node != ROOT && root_of(node) == frame)
            .map(|(_, &count)| count)
            .sum()
    }

    /// Every (pid, tid, stack's node, count), in no particular order.
    pub fn stack_nodes(&self) -> Vec<(u32, u32, NodeId, u64)> {
        self.counts
            .iter()
            .map(|(&(pid, tid, node), &count)| (pid, tid, node, count))
            .collect()
    }

    /// The frames of `node`'s stack, leaf first (as [`Profile::add_sample`] takes them), into
    /// `out`.
    pub fn leaf_first(&self, node: NodeId, out: &mut Vec<Frame>) {
        out.clear();
        out.extend(
            self.path(node)
                .iter()
                .rev()
                .map(|&f| self.frames[f as usize]),
        );
    }

    /// The frames from the root to `node`.
    pub fn path(&self, mut node: NodeId) -> Vec<FrameId> {
        let mut v = Vec::new();
        while node != ROOT {
            let n = self.nodes[node as usize];
            v.push(n.frame);
            node = n.parent;
        }
        v.reverse();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_aggregate_by_unique_stack() {
        let mut p = Profile::new();
        let a = Frame::Kernel(1);
        let b = Frame::Anon { pid: 1, addr: 2 };
        let c = Frame::Anon { pid: 1, addr: 3 };
        for _ in 0..1000 {
            p.add_sample(1, 1, &[c, b, a], 1);
        }
        p.add_sample(1, 1, &[b, a], 2);
        p.add_sample(1, 2, &[c, b, a], 1);
        assert_eq!(p.total_samples(), 1003);
        assert_eq!(p.unique_stacks(), 3);
        let s = p.stacks();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], (1, 1, vec![0, 1], 2));
        assert_eq!(s[1], (1, 1, vec![0, 1, 2], 1000));
        assert_eq!(s[2], (1, 2, vec![0, 1, 2], 1));
        assert_eq!(p.frames()[2], c);
        p.retain_processes(|pid| pid != 1);
        assert_eq!(p.total_samples(), 0);
        assert!(p.frames().is_empty());
    }

    #[test]
    fn samples_are_counted_by_their_root_frame() {
        let mut p = Profile::new();
        let (a, b) = (Frame::Kernel(1), Frame::Kernel(2));
        p.add_sample(1, 1, &[b, a], 3);
        p.add_sample(1, 1, &[a], 1);
        p.add_sample(1, 2, &[a, Frame::Truncated], 4);
        p.add_sample(1, 2, &[], 5);
        assert_eq!(p.samples_rooted_at(a), 4);
        assert_eq!(p.samples_rooted_at(Frame::Truncated), 4);
        assert_eq!(p.samples_rooted_at(b), 0);
    }

    #[test]
    fn a_stack_that_shares_its_threads_last_one_in_part_is_still_its_own() {
        let mut p = Profile::new();
        let mut x = 7u64;
        let mut leaf_first = Vec::new();
        for i in 0..2000u32 {
            // Stacks of 0-11 frames from 3 values each, on 2 threads: many shared prefixes,
            // stacks that are prefixes of the last one, and the empty stack.
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let depth = (x >> 60) as usize % 12;
            let stack: Vec<Frame> = (0..depth)
                .map(|d| Frame::Anon {
                    pid: 1,
                    addr: (x >> (2 * d)) % 3,
                })
                .collect();
            let node = p.add_sample(1, i % 2, &stack, 1);
            p.leaf_first(node, &mut leaf_first);
            assert_eq!(leaf_first, stack, "sample {i}");
        }
    }
}
