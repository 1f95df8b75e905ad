//! The terminal report: the hottest functions with their self and total shares, like
//! `perf report --stdio` or `pprof -top`.

use std::collections::HashMap;
use std::io::{self, Write};

use super::folded::Folded;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortBy {
    /// Samples where the function itself was running.
    #[default]
    SelfTime,
    /// Samples where the function was anywhere on the stack.
    Total,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    pub self_samples: u64,
    pub total_samples: u64,
}

/// Self and total samples per function. The first frame of each stack (the process or thread
/// label) is not a function and is left out.
pub fn rows(folded: &Folded, by: SortBy) -> (Vec<Row>, u64) {
    let mut map: HashMap<&str, (u64, u64)> = HashMap::new();
    let mut all = 0;
    let mut seen: Vec<&str> = Vec::new();
    for (stack, &count) in folded {
        all += count;
        let frames: Vec<&str> = stack.split(';').skip(1).collect();
        if let Some(leaf) = frames.last() {
            map.entry(leaf).or_default().0 += count;
        }
        seen.clear();
        for f in frames {
            if !seen.contains(&f) {
                seen.push(f);
                map.entry(f).or_default().1 += count;
            }
        }
    }
    let mut rows: Vec<Row> = map
        .into_iter()
        .map(|(name, (s, t))| Row {
            name: name.to_string(),
            self_samples: s,
            total_samples: t,
        })
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Row| match by {
            SortBy::SelfTime => (r.self_samples, r.total_samples),
            SortBy::Total => (r.total_samples, r.self_samples),
        };
        key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    });
    (rows, all)
}

pub fn write(folded: &Folded, top: usize, by: SortBy, mut w: impl Write) -> io::Result<()> {
    let (rows, all) = rows(folded, by);
    let pct = |n: u64| 100.0 * n as f64 / all.max(1) as f64;
    writeln!(w, "{all} samples")?;
    writeln!(w, "{:>7} {:>7} {:>9}  function", "self%", "total%", "self")?;
    for r in rows.iter().take(top) {
        writeln!(
            w,
            "{:>6.2}% {:>6.2}% {:>9}  {}",
            pct(r.self_samples),
            pct(r.total_samples),
            r.self_samples,
            r.name
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_and_total() {
        let f: Folded = [
            ("p;main;a;b".to_string(), 6),
            ("p;main;a".to_string(), 4),
            ("p;main;b".to_string(), 1),
            ("p;rec;rec;rec".to_string(), 10),
        ]
        .into_iter()
        .collect();
        let (rows, all) = rows(&f, SortBy::SelfTime);
        assert_eq!(all, 21);
        assert_eq!(rows[0].name, "rec");
        assert_eq!((rows[0].self_samples, rows[0].total_samples), (10, 10));
        let b = rows.iter().find(|r| r.name == "b").unwrap();
        assert_eq!((b.self_samples, b.total_samples), (7, 7));
        let main = rows.iter().find(|r| r.name == "main").unwrap();
        assert_eq!((main.self_samples, main.total_samples), (0, 11));
        let (by_total, _) = super::rows(&f, SortBy::Total);
        assert_eq!(by_total[0].name, "main");
    }
}
