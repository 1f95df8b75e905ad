//! The collector's part in taking processes over ([`crate::sampler::takeover`]): asking for
//! those whose stacks outgrow perf events' copies, and leaving perf events' samples of a
//! process out once ptrace samples it.

use std::collections::{HashMap, HashSet};

use crate::model::SampleEvent;
use crate::sampler::takeover::{Requests, WATCH_DEEP_NS};

/// A process is asked for once this many of its samples were cut...
const MIN_CUT: u64 = 3;
/// ... among this many of its latest (counted afresh after each such run of samples): a
/// program that turns deep after a long shallow phase is taken over as soon as it does, one
/// whose deep stacks are rarer than 1 % is left to perf events.
const CUT_WINDOW: u64 = 300;

#[derive(Default)]
pub(super) struct Takeovers {
    /// Where to ask; `None`: nothing is taken over (ptrace, or perf events alone, asked for).
    requests: Option<Requests>,
    /// Processes are asked for because their stacks are cut too (not only for Python).
    deep: bool,
    /// Per process with cut stacks: perf events' samples unwound in the current window, and
    /// those cut before the thread's first frame (the copy ran out).
    seen: HashMap<u32, (u64, u64)>,
    asked: HashSet<u32>,
    /// Processes ptrace samples, and from when.
    since: HashMap<u32, u64>,
    /// Processes taken over so far.
    taken: u64,
    /// Perf events' samples left out because their process was taken over.
    pub left_out: u64,
}

impl Takeovers {
    /// Ask through `requests` for processes that run Python and, with `deep`, for those whose
    /// stacks outgrow perf events' copies.
    pub(super) fn new(requests: Requests, deep: bool) -> Takeovers {
        Takeovers {
            requests: Some(requests),
            deep,
            ..Takeovers::default()
        }
    }

    /// Whether sample `s` is left out: perf events' sample of a process ptrace samples.
    pub(super) fn leaves_out(&mut self, s: &SampleEvent) -> bool {
        if self.since.is_empty() {
            return false;
        }
        let out = !s.from_ptrace && self.since.get(&s.pid).is_some_and(|&t| s.time >= t);
        self.left_out += u64::from(out);
        out
    }

    /// Perf events' sample of process `pid` was unwound, `cut` before its thread's first frame.
    pub(super) fn unwound(&mut self, pid: u32, cut: bool) {
        let Some(requests) = self.requests.as_ref().filter(|_| self.deep) else {
            return;
        };
        // Counted from a process's first cut stack on: nothing to do for shallow ones.
        if !cut && self.seen.is_empty() {
            return;
        }
        let (samples, cuts) = match self.seen.get_mut(&pid) {
            Some(counts) => counts,
            None if cut => {
                requests.watch(WATCH_DEEP_NS);
                self.seen.entry(pid).or_default()
            }
            None => return,
        };
        if *samples == CUT_WINDOW {
            (*samples, *cuts) = (0, 0);
        }
        *samples += 1;
        *cuts += u64::from(cut);
        if *cuts >= MIN_CUT && self.asked.insert(pid) {
            requests.ask(pid);
        }
    }

    /// Whether processes can be asked for (perf events sample, with ptrace to take over).
    pub(super) fn can_ask(&self) -> bool {
        self.requests.is_some()
    }

    /// Ask for process `pid` at once: its stacks need ptrace whatever their depth (it runs
    /// Python, whose frames are read at ptrace's stops).
    pub(super) fn ask_now(&mut self, pid: u32) {
        if let Some(requests) = &self.requests {
            if self.asked.insert(pid) {
                requests.watch(WATCH_DEEP_NS);
                requests.ask(pid);
            }
        }
    }

    /// From `time` on, ptrace samples process `pid`.
    pub(super) fn taken_over(&mut self, pid: u32, time: u64) {
        self.since.insert(pid, time);
        self.taken += 1;
    }

    /// Whether any process was taken over.
    pub(super) fn any(&self) -> bool {
        self.taken > 0
    }

    /// Process `pid` ended: its id may be used again.
    pub(super) fn ended(&mut self, pid: u32) {
        self.seen.remove(&pid);
        self.asked.remove(&pid);
        self.since.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pid: u32, time: u64, from_ptrace: bool) -> SampleEvent<'static> {
        SampleEvent {
            pid,
            tid: pid,
            time,
            from_ptrace,
            ..SampleEvent::default()
        }
    }

    #[test]
    fn a_process_is_asked_for_at_its_third_cut_stack_among_its_latest() {
        let requests = Requests::new();
        let mut t = Takeovers::new(requests.clone(), true);
        // Cut stacks rarer than 3 in 300: left to perf events.
        for i in 0..1000 {
            t.unwound(7, i % 150 == 0);
        }
        assert!(requests.take().is_empty());
        // Deep from now on: asked for once, at the third.
        t.unwound(8, true);
        t.unwound(8, false);
        t.unwound(8, true);
        assert!(requests.take().is_empty());
        for _ in 0..10 {
            t.unwound(8, true);
        }
        assert_eq!(requests.take(), vec![8]);
        // Without a place to ask (ptrace or perf events chosen), nothing is asked.
        let mut none = Takeovers::default();
        for _ in 0..10 {
            none.unwound(9, true);
        }
    }

    #[test]
    fn a_wall_clock_profile_asks_for_python_processes_only() {
        let requests = Requests::new();
        let mut t = Takeovers::new(requests.clone(), false);
        for _ in 0..10 {
            t.unwound(8, true);
        }
        assert!(requests.take().is_empty());
        t.ask_now(9);
        t.ask_now(9);
        assert_eq!(requests.take(), vec![9]);
    }

    #[test]
    fn perf_samples_of_a_process_taken_over_are_left_out_from_its_time_on() {
        let mut t = Takeovers::new(Requests::new(), true);
        assert!(!t.leaves_out(&sample(5, 100, false)));
        t.taken_over(5, 200);
        assert!(t.any());
        assert!(!t.leaves_out(&sample(5, 199, false)));
        assert!(t.leaves_out(&sample(5, 200, false)));
        assert!(!t.leaves_out(&sample(5, 300, true)));
        assert!(!t.leaves_out(&sample(6, 300, false)));
        assert_eq!(t.left_out, 1);
        // Its id may be a new process's later.
        t.ended(5);
        assert!(!t.leaves_out(&sample(5, 400, false)));
    }
}
