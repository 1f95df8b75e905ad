//! The roots of a profile ranked by CPU time: one row per test (`cargo ember test`, whose
//! stacks are rooted at each test's thread name), process or thread — CPU seconds (samples ÷
//! frequency), share of the run, samples, and the hottest function of its own. Printed at the
//! end of `cargo ember test`/`bench`, and written as JSON with `-o tests.json`.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use super::folded::Folded;
use super::speedscope::json_str;

/// One root of the profile.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranked {
    /// The root label: a test's name, `comm`, `comm-PID`, ...
    pub name: String,
    pub samples: u64,
    /// The function with the most self samples under this root, and how many.
    pub hottest: String,
    pub hottest_samples: u64,
}

/// Every root, most samples first, and the profile's total.
pub fn rank(folded: &Folded) -> (Vec<Ranked>, u64) {
    let mut roots: BTreeMap<&str, (u64, HashMap<&str, u64>)> = BTreeMap::new();
    let mut all = 0;
    for (stack, &count) in folded {
        all += count;
        let mut frames = stack.split(';');
        let root = frames.next().unwrap_or("");
        let (samples, leaves) = roots.entry(root).or_default();
        *samples += count;
        if let Some(leaf) = frames.next_back() {
            *leaves.entry(leaf).or_default() += count;
        }
    }
    let mut rows: Vec<Ranked> = roots
        .into_iter()
        .map(|(name, (samples, leaves))| {
            let (hottest, hottest_samples) = leaves
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
                .unwrap_or(("", 0));
            Ranked {
                name: name.to_string(),
                samples,
                hottest: hottest.to_string(),
                hottest_samples,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.name.cmp(&b.name)));
    (rows, all)
}

fn seconds(samples: u64, frequency: u64) -> f64 {
    samples as f64 / frequency.max(1) as f64
}

/// The table: the `top` roots with the most CPU time.
pub fn write_table(
    folded: &Folded,
    frequency: u64,
    top: usize,
    mut w: impl Write,
) -> io::Result<()> {
    let (rows, all) = rank(folded);
    writeln!(
        w,
        "{:>9} {:>7} {:>9}  {:<40}  hottest function (its self %)",
        "CPU s", "share", "samples", "name"
    )?;
    for r in rows.iter().take(top) {
        writeln!(
            w,
            "{:>9.3} {:>6.2}% {:>9}  {:<40}  {} ({:.1}%)",
            seconds(r.samples, frequency),
            100.0 * r.samples as f64 / all.max(1) as f64,
            r.samples,
            r.name,
            r.hottest,
            100.0 * r.hottest_samples as f64 / r.samples.max(1) as f64
        )?;
    }
    if rows.len() > top {
        writeln!(w, "({} more)", rows.len() - top)?;
    }
    Ok(())
}

/// Every root as JSON; the fields are documented in the README.
pub fn write_json(folded: &Folded, frequency: u64, mut w: impl Write) -> io::Result<()> {
    let (rows, all) = rank(folded);
    write!(
        w,
        "{{\"frequency\":{frequency},\"samples\":{all},\"cpu_seconds\":{:.6},\"rows\":[",
        seconds(all, frequency)
    )?;
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            w.write_all(b",")?;
        }
        write!(
            w,
            "{{\"name\":{},\"cpu_seconds\":{:.6},\"share_pct\":{:.4},\"samples\":{},\
             \"hottest\":{},\"hottest_self_samples\":{}}}",
            json_str(&r.name),
            seconds(r.samples, frequency),
            100.0 * r.samples as f64 / all.max(1) as f64,
            r.samples,
            json_str(&r.hottest),
            r.hottest_samples
        )?;
    }
    w.write_all(b"]}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_ranked_by_samples_with_their_hottest_function() {
        let folded: Folded = [
            ("tests::slow;main;work;spin", 300),
            ("tests::slow;main;work", 50),
            ("tests::fast;main;spin", 40),
            ("tests::mid;main;alloc", 100),
        ]
        .iter()
        .map(|&(s, n)| (s.to_string(), n))
        .collect();
        let (rows, all) = rank(&folded);
        assert_eq!(all, 490);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["tests::slow", "tests::mid", "tests::fast"]);
        assert_eq!(
            (rows[0].hottest.as_str(), rows[0].hottest_samples),
            ("spin", 300)
        );
        let mut json = Vec::new();
        write_json(&folded, 100, &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["rows"][0]["name"], "tests::slow");
        assert_eq!(v["rows"][0]["cpu_seconds"], 3.5);
        let mut table = Vec::new();
        write_table(&folded, 100, 2, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.lines().nth(1).unwrap().contains("tests::slow"),
            "{table}"
        );
        assert!(table.ends_with("(1 more)\n"), "{table}");
    }
}
