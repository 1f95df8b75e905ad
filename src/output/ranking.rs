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

/// One root (test) of a ranking file as read back: its name and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedRow {
    pub name: String,
    pub samples: u64,
    pub cpu_seconds: f64,
}

/// Read a ranking written by [`write_json`] (`tests.json`).
pub fn read_json(bytes: &[u8]) -> Result<Vec<SavedRow>, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let rows = v["rows"]
        .as_array()
        .ok_or("no \"rows\": not a ranking written by ember (-o tests.json)")?;
    rows.iter()
        .map(|r| {
            Some(SavedRow {
                name: r["name"].as_str()?.to_string(),
                samples: r["samples"].as_u64()?,
                cpu_seconds: r["cpu_seconds"].as_f64()?,
            })
        })
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| "a row without name, samples or cpu_seconds".to_string())
}

/// Two rankings compared test by test.
#[derive(Clone, Debug)]
pub struct TestComparison {
    /// (name, base row, head row), most CPU time gained first; a test in one only has `None`
    /// on the other side.
    pub rows: Vec<(String, Option<SavedRow>, Option<SavedRow>)>,
}

impl TestComparison {
    pub fn new(base: Vec<SavedRow>, head: Vec<SavedRow>) -> TestComparison {
        let mut by_name: BTreeMap<String, (Option<SavedRow>, Option<SavedRow>)> = BTreeMap::new();
        for r in base {
            let name = r.name.clone();
            by_name.entry(name).or_default().0 = Some(r);
        }
        for r in head {
            let name = r.name.clone();
            by_name.entry(name).or_default().1 = Some(r);
        }
        let mut rows: Vec<_> = by_name.into_iter().map(|(n, (b, h))| (n, b, h)).collect();
        // Most CPU time gained first: a test that went from 1 to 2 samples doubled, but it
        // is not where the time went.
        let gained = |b: &Option<SavedRow>, h: &Option<SavedRow>| {
            let n = |r: &Option<SavedRow>| r.as_ref().map_or(0, |r| r.samples) as i64;
            n(h) - n(b)
        };
        rows.sort_by(|a, b| {
            gained(&b.1, &b.2)
                .cmp(&gained(&a.1, &a.2))
                .then_with(|| a.0.cmp(&b.0))
        });
        TestComparison { rows }
    }

    /// The tests whose CPU time grew by more than `over_pct` percent and by more than `z`
    /// standard errors of the sample counts (each count is about Poisson: variance = count),
    /// among those with at least `min_samples` in either run.
    pub fn regressions(&self, over_pct: f64, min_samples: u64, z: f64) -> Vec<&str> {
        self.rows
            .iter()
            .filter(|(_, b, h)| {
                let (Some(b), Some(h)) = (b, h) else {
                    return false;
                };
                let more = h.samples as f64 - b.samples as f64;
                let grew = 100.0 * more / b.samples.max(1) as f64;
                b.samples.max(h.samples) >= min_samples
                    && grew > over_pct
                    && more > z * ((b.samples + h.samples) as f64).sqrt()
            })
            .map(|(n, _, _)| n.as_str())
            .collect()
    }

    pub fn write_table(&self, top: usize, mut w: impl Write) -> io::Result<()> {
        writeln!(w, "{:>9} {:>9} {:>8}  test", "base s", "head s", "change")?;
        for (name, b, h) in self.rows.iter().take(top) {
            let secs = |r: &Option<SavedRow>| r.as_ref().map_or(0.0, |r| r.cpu_seconds);
            let change = match (b, h) {
                (Some(_), Some(_)) => format!("{:+.1}%", growth(b, h)),
                (None, _) => "new".to_string(),
                (_, None) => "gone".to_string(),
            };
            writeln!(w, "{:>9.3} {:>9.3} {change:>8}  {name}", secs(b), secs(h))?;
        }
        Ok(())
    }
}

/// How much a test's samples grew, in percent of the base (0 when it is in one run only).
fn growth(b: &Option<SavedRow>, h: &Option<SavedRow>) -> f64 {
    match (b, h) {
        (Some(b), Some(h)) if b.samples > 0 => {
            100.0 * (h.samples as f64 - b.samples as f64) / b.samples as f64
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod compare_tests {
    use super::*;

    fn row(name: &str, samples: u64) -> SavedRow {
        SavedRow {
            name: name.to_string(),
            samples,
            cpu_seconds: samples as f64 / 1000.0,
        }
    }

    #[test]
    fn tests_are_compared_by_name_and_noise_is_not_a_regression() {
        let base = vec![row("a", 1000), row("b", 1000), row("c", 1000)];
        let head = vec![row("a", 1300), row("b", 1030), row("d", 50)];
        let cmp = TestComparison::new(base, head);
        assert_eq!(cmp.rows[0].0, "a");
        // a: +30 % and 6.4 standard errors; b: +3 %, under 1.
        assert_eq!(cmp.regressions(10.0, 20, 3.5), vec!["a"]);
        assert_eq!(cmp.regressions(40.0, 20, 3.5), Vec::<&str>::new());
        let mut table = Vec::new();
        cmp.write_table(10, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("+30.0%  a"), "{table}");
        assert!(
            table.contains("gone  c") && table.contains("new  d"),
            "{table}"
        );
        let mut json = Vec::new();
        let folded: Folded = [("x;main;f".to_string(), 10)].into_iter().collect();
        write_json(&folded, 100, &mut json).unwrap();
        assert_eq!(read_json(&json).unwrap()[0].samples, 10);
    }
}
