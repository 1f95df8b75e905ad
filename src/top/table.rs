//! The live view's tables, from the windows in view and the names known so far: functions by
//! self and total samples, and one function's callers and callees.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::Arc;

use super::names::{Function, Names};
use crate::model::Frame;
use crate::output::report::SortBy;
use crate::profile::Profile;

/// Which samples count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// One thread's samples only.
    pub thread: Option<u32>,
    /// Wall-clock: samples of waiting threads count too (`--off-cpu`).
    pub wall: bool,
    /// A row per thread and function.
    pub per_thread: bool,
}

/// What a row counts: a function, in one thread with [`Scope::per_thread`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub function: Function,
    pub thread: Option<u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: Key,
    /// Samples in the function itself.
    pub self_samples: u64,
    /// Samples with the function anywhere on the stack (once per stack, however deep the
    /// recursion).
    pub total_samples: u64,
    /// The line with the most self samples, or where it was last seen.
    pub location: Option<Arc<str>>,
}

/// Every function sampled in scope.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub rows: Vec<Row>,
    /// Samples in scope.
    pub samples: u64,
}

impl Table {
    pub fn sort(&mut self, by: SortBy) {
        let key = |r: &Row| match by {
            SortBy::SelfTime => (r.self_samples, r.total_samples),
            SortBy::Total => (r.total_samples, r.self_samples),
        };
        self.rows.sort_by(|a, b| {
            key(b)
                .cmp(&key(a))
                .then_with(|| a.key.function.cmp(&b.key.function))
        });
    }

    /// The rows whose function's name contains `filter` (any case).
    pub fn matching<'a>(&'a self, filter: &'a str) -> impl Iterator<Item = &'a Row> + 'a {
        let filter = filter.to_lowercase();
        self.rows.iter().filter(move |r| {
            filter.is_empty() || r.key.function.name.to_lowercase().contains(&filter)
        })
    }

    /// `samples` as a percentage of the samples in scope.
    pub fn percent(&self, samples: u64) -> f64 {
        100.0 * samples as f64 / self.samples.max(1) as f64
    }

    /// The first `n` rows matching `filter` as plain text, a heading first:
    /// `  SELF%  TOTAL%     SELF  FUNCTION  [MODULE]  FILE:LINE`.
    pub fn write_text(&self, filter: &str, n: usize, mut out: impl Write) -> io::Result<()> {
        writeln!(
            out,
            "{:>7} {:>7} {:>8}  FUNCTION  [MODULE]  LOCATION",
            "SELF%", "TOTAL%", "SELF"
        )?;
        for r in self.matching(filter).take(n) {
            let thread = r
                .key
                .thread
                .map(|t| format!("  (thread {t})"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:>6.2}% {:>6.2}% {:>8}  {}  [{}]  {}{thread}",
                self.percent(r.self_samples),
                self.percent(r.total_samples),
                r.self_samples,
                r.key.function.name,
                r.key.function.module,
                r.location.as_deref().unwrap_or("-"),
            )?;
        }
        Ok(())
    }
}

/// Every function in `profiles`, as far as `scope` counts them, unsorted.
pub fn functions(profiles: &[&Profile], names: &Names, scope: &Scope) -> Table {
    let mut rows: HashMap<Key, Row> = HashMap::new();
    let mut lines: HashMap<(Key, Arc<str>), u64> = HashMap::new();
    let mut samples = 0;
    let mut seen: HashSet<Key> = HashSet::new();
    for_each_stack(profiles, names, scope, |stack, count| {
        samples += count;
        seen.clear();
        for (key, location) in stack {
            let row = rows.entry(key.clone()).or_insert_with(|| Row {
                key: key.clone(),
                self_samples: 0,
                total_samples: 0,
                location: location.clone(),
            });
            if seen.insert(key.clone()) {
                row.total_samples += count;
            }
        }
        if let Some((key, location)) = stack.last() {
            if let Some(row) = rows.get_mut(key) {
                row.self_samples += count;
            }
            if let Some(l) = location {
                *lines.entry((key.clone(), Arc::clone(l))).or_default() += count;
            }
        }
    });
    // Each function's hottest line.
    let mut best: HashMap<&Key, (u64, &Arc<str>)> = HashMap::new();
    for ((key, line), &n) in &lines {
        let b = best.entry(key).or_insert((n, line));
        if n > b.0 || (n == b.0 && line < b.1) {
            *b = (n, line);
        }
    }
    for (key, (_, line)) in best {
        if let Some(row) = rows.get_mut(key) {
            row.location = Some(Arc::clone(line));
        }
    }
    Table {
        rows: rows.into_values().collect(),
        samples,
    }
}

/// Who calls a function and whom it calls, with the samples of each.
#[derive(Clone, Debug, Default)]
pub struct Neighbours {
    /// Samples with the function on the stack.
    pub samples: u64,
    /// Functions right outside it (`None`: it was the stack's root).
    pub callers: Vec<(Option<Key>, u64)>,
    /// Functions right inside it (`None`: it was running itself).
    pub callees: Vec<(Option<Key>, u64)>,
}

/// The callers and callees of `of`, most samples first; a stack counts once for each.
pub fn neighbours(profiles: &[&Profile], names: &Names, scope: &Scope, of: &Key) -> Neighbours {
    let mut callers: HashMap<Option<Key>, u64> = HashMap::new();
    let mut callees: HashMap<Option<Key>, u64> = HashMap::new();
    let mut samples = 0;
    let mut outer = HashSet::new();
    let mut inner = HashSet::new();
    for_each_stack(profiles, names, scope, |stack, count| {
        outer.clear();
        inner.clear();
        for (i, (key, _)) in stack.iter().enumerate() {
            if key != of {
                continue;
            }
            outer.insert(i.checked_sub(1).map(|j| stack[j].0.clone()));
            inner.insert(stack.get(i + 1).map(|(k, _)| k.clone()));
        }
        if outer.is_empty() {
            return;
        }
        samples += count;
        for k in outer.drain() {
            *callers.entry(k).or_default() += count;
        }
        for k in inner.drain() {
            *callees.entry(k).or_default() += count;
        }
    });
    let ranked = |m: HashMap<Option<Key>, u64>| {
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| name_of(&a.0).cmp(name_of(&b.0))));
        v
    };
    Neighbours {
        samples,
        callers: ranked(callers),
        callees: ranked(callees),
    }
}

fn name_of(k: &Option<Key>) -> &str {
    k.as_ref().map_or("", |k| &k.function.name)
}

/// Call `visit` with every stack in scope (functions root first, each with its location) and
/// its samples.
fn for_each_stack(
    profiles: &[&Profile],
    names: &Names,
    scope: &Scope,
    mut visit: impl FnMut(&[(Key, Option<Arc<str>>)], u64),
) {
    let mut stack = Vec::new();
    for p in profiles {
        let frames = p.frames();
        for (_, tid, node, count) in p.stack_nodes() {
            if scope.thread.is_some_and(|t| t != tid) {
                continue;
            }
            let path = p.path(node);
            let leaf = path.last().map(|&f| frames[f as usize]);
            if !scope.wall && matches!(leaf, Some(Frame::OffCpu(_))) {
                continue;
            }
            stack.clear();
            for &f in &path {
                for n in names.get(frames[f as usize]).iter() {
                    let key = Key {
                        function: n.function.clone(),
                        thread: scope.per_thread.then_some(tid),
                    };
                    stack.push((key, n.location.clone()));
                }
            }
            visit(&stack, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WaitReason;
    use crate::symbolize::SymbolizeOptions;

    /// Frames never asked for keep their placeholder names: `[kernel]+0xN`.
    fn k(n: u64) -> Frame {
        Frame::Kernel(n)
    }

    fn name(n: u64) -> String {
        format!("[kernel]+0x{n:x}")
    }

    fn profile() -> Profile {
        let mut p = Profile::new();
        // Leaf first: 1 → 2 → 3 three times, 1 → 2 once, 1 → 2 → 1 (recursion) twice,
        // and a wait in thread 8.
        p.add_sample(1, 7, &[k(3), k(2), k(1)], 3);
        p.add_sample(1, 7, &[k(2), k(1)], 1);
        p.add_sample(1, 7, &[k(1), k(2), k(1)], 2);
        p.add_sample(1, 8, &[Frame::OffCpu(WaitReason::Unknown), k(1)], 4);
        p
    }

    fn row(t: &Table, n: u64) -> &Row {
        t.rows
            .iter()
            .find(|r| *r.key.function.name == name(n))
            .unwrap()
    }

    #[test]
    fn self_and_total_count_each_stack_once_per_function() {
        let names = Names::start(SymbolizeOptions::default());
        let p = profile();
        let t = functions(&[&p], &names, &Scope::default());
        assert_eq!(t.samples, 6, "the wait is not CPU time");
        assert_eq!((row(&t, 1).self_samples, row(&t, 1).total_samples), (2, 6));
        assert_eq!((row(&t, 2).self_samples, row(&t, 2).total_samples), (1, 6));
        assert_eq!((row(&t, 3).self_samples, row(&t, 3).total_samples), (3, 3));
        let wall = functions(
            &[&p],
            &names,
            &Scope {
                wall: true,
                ..Scope::default()
            },
        );
        assert_eq!(wall.samples, 10);
        assert_eq!(row(&wall, 1).total_samples, 10);
        let one = functions(
            &[&p],
            &names,
            &Scope {
                thread: Some(8),
                wall: true,
                ..Scope::default()
            },
        );
        assert_eq!(one.samples, 4);
        let mut sorted = t.clone();
        sorted.sort(SortBy::SelfTime);
        assert_eq!(*sorted.rows[0].key.function.name, name(3));
        assert_eq!(sorted.matching("0x2").count(), 1);
    }

    #[test]
    fn callers_and_callees_of_a_function() {
        let names = Names::start(SymbolizeOptions::default());
        let p = profile();
        let t = functions(&[&p], &names, &Scope::default());
        let n = neighbours(&[&p], &names, &Scope::default(), &row(&t, 2).key);
        assert_eq!(n.samples, 6);
        let callers: Vec<(Option<String>, u64)> = n
            .callers
            .iter()
            .map(|(k, c)| (k.as_ref().map(|k| k.function.name.to_string()), *c))
            .collect();
        assert_eq!(callers, [(Some(name(1)), 6)]);
        let callees: Vec<(Option<String>, u64)> = n
            .callees
            .iter()
            .map(|(k, c)| (k.as_ref().map(|k| k.function.name.to_string()), *c))
            .collect();
        assert_eq!(callees, [(Some(name(3)), 3), (Some(name(1)), 2), (None, 1)]);
    }
}
