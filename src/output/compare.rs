//! Two profiles compared function by function, for `ember diff`: each function's share of its
//! profile's samples, self and total (inclusive: counted once per stack it is on, so a caller
//! whose callee grew has grown too), the change in percentage points, and whether the change
//! is more than sampling noise.
//!
//! Noise: a share `p` estimated from `n` samples has a standard error of `sqrt(p(1-p)/n)`
//! (binomial), so the difference of two independent shares has
//! `sqrt(p1(1-p1)/n1 + p2(1-p2)/n2)`. A function fails the gate only when its total share grew
//! by more than the threshold *and* by more than [`Gate::z`] standard errors — two recordings
//! of an unchanged program differ by a few standard errors at most.

use std::collections::HashMap;
use std::io::{self, Write};

use super::folded::Folded;
use super::report::{self, SortBy};
use crate::output::speedscope::json_str;

/// One function in both profiles (samples).
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub name: String,
    pub base_self: u64,
    pub head_self: u64,
    pub base_total: u64,
    pub head_total: u64,
}

/// When a change fails the build.
#[derive(Clone, Copy, Debug)]
pub struct Gate {
    /// Percentage points of all samples a function's total share may grow by.
    pub over_points: f64,
    /// Functions with fewer samples than this in both profiles are left alone.
    pub min_samples: u64,
    /// How many standard errors a growth must exceed to count (not noise).
    pub z: f64,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate {
            over_points: 1.0,
            min_samples: 20,
            // One-sided p ≈ 0.0002 per function: a profile of a few dozen functions compared
            // with itself fails about once in a hundred runs at most.
            z: 3.5,
        }
    }
}

/// Both profiles' functions, with their totals.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub base_samples: u64,
    pub head_samples: u64,
    /// Largest growth of the total share first.
    pub changes: Vec<Change>,
}

fn percent(n: u64, of: u64) -> f64 {
    100.0 * n as f64 / of.max(1) as f64
}

impl Comparison {
    pub fn new(base: &Folded, head: &Folded) -> Comparison {
        let (base_rows, base_samples) = report::rows(base, SortBy::Total);
        let (head_rows, head_samples) = report::rows(head, SortBy::Total);
        let mut by_name: HashMap<String, Change> = HashMap::new();
        let blank = |name: &str| Change {
            name: name.to_string(),
            base_self: 0,
            head_self: 0,
            base_total: 0,
            head_total: 0,
        };
        for r in base_rows {
            let c = by_name
                .entry(r.name.clone())
                .or_insert_with(|| blank(&r.name));
            (c.base_self, c.base_total) = (r.self_samples, r.total_samples);
        }
        for r in head_rows {
            let c = by_name
                .entry(r.name.clone())
                .or_insert_with(|| blank(&r.name));
            (c.head_self, c.head_total) = (r.self_samples, r.total_samples);
        }
        let mut cmp = Comparison {
            base_samples,
            head_samples,
            changes: Vec::new(),
        };
        let mut changes: Vec<Change> = by_name.into_values().collect();
        changes.sort_by(|a, b| {
            cmp.total_change(b)
                .total_cmp(&cmp.total_change(a))
                .then_with(|| a.name.cmp(&b.name))
        });
        cmp.changes = changes;
        cmp
    }

    /// The function's total share in the base and head profiles (percent).
    pub fn total_shares(&self, c: &Change) -> (f64, f64) {
        (
            percent(c.base_total, self.base_samples),
            percent(c.head_total, self.head_samples),
        )
    }

    pub fn self_shares(&self, c: &Change) -> (f64, f64) {
        (
            percent(c.base_self, self.base_samples),
            percent(c.head_self, self.head_samples),
        )
    }

    /// Head's total share minus base's, in percentage points.
    pub fn total_change(&self, c: &Change) -> f64 {
        let (b, h) = self.total_shares(c);
        h - b
    }

    /// The standard error of [`Comparison::total_change`] from the sample counts (points).
    pub fn standard_error(&self, c: &Change) -> f64 {
        let var = |k: u64, n: u64| {
            let p = k as f64 / n.max(1) as f64;
            p * (1.0 - p) / n.max(1) as f64
        };
        let v = var(c.base_total, self.base_samples) + var(c.head_total, self.head_samples);
        // A share of exactly 0 or 1 in both has no binomial spread; one sample's worth instead.
        let floor = 1.0 / (self.base_samples.min(self.head_samples).max(1) as f64).powi(2);
        100.0 * v.max(floor).sqrt()
    }

    /// Whether `c` fails `gate`: grown by more than its threshold and more than noise. Kernel
    /// functions never do: on a busy machine the kernel's preemption path (reschedule IPIs,
    /// the return to user space) takes several points of an unchanged program's samples, and
    /// a program that really spends more in the kernel shows it in its own functions' totals.
    pub fn regressed(&self, c: &Change, gate: &Gate) -> bool {
        let growth = self.total_change(c);
        !c.name.ends_with("_[k]")
            && c.base_total.max(c.head_total) >= gate.min_samples
            && growth > gate.over_points
            && growth > gate.z * self.standard_error(c)
    }

    /// The functions that fail `gate`, largest growth first.
    pub fn regressions<'a>(&'a self, gate: &'a Gate) -> impl Iterator<Item = &'a Change> + 'a {
        self.changes.iter().filter(|c| self.regressed(c, gate))
    }

    /// The `top` largest changes of the total share, either sign, largest first (at equal
    /// size growth first), for the table; and how many kernel functions were left out because
    /// their change is within sampling noise (on a busy machine the kernel's preemption path
    /// moves by a few points between two runs of the same program).
    fn largest(&self, top: usize) -> (Vec<&Change>, usize) {
        let z = Gate::default().z;
        let mut by_size: Vec<&Change> = self
            .changes
            .iter()
            .filter(|c| self.total_change(c) != 0.0)
            .collect();
        by_size.sort_by(|a, b| {
            let (ca, cb) = (self.total_change(a), self.total_change(b));
            cb.abs()
                .total_cmp(&ca.abs())
                .then_with(|| cb.total_cmp(&ca))
                .then_with(|| a.name.cmp(&b.name))
        });
        let (mut rows, mut kernel_noise) = (Vec::new(), 0);
        for c in by_size {
            let noise = self.total_change(c).abs() <= z * self.standard_error(c);
            if c.name.ends_with("_[k]") && noise {
                kernel_noise += 1;
            } else if rows.len() < top {
                rows.push(c);
            }
        }
        (rows, kernel_noise)
    }

    /// The table `ember diff` prints: the `top` largest changes, either sign, largest first.
    pub fn write_table(
        &self,
        top: usize,
        gate: Option<&Gate>,
        mut w: impl Write,
    ) -> io::Result<()> {
        writeln!(
            w,
            "base {} samples, head {} samples; shares of each profile's samples, change in points",
            self.base_samples, self.head_samples
        )?;
        writeln!(
            w,
            "{:>7} {:>7} {:>8}   {:>7} {:>7} {:>8}  function",
            "total%", "→", "change", "self%", "→", "change"
        )?;
        let (rows, kernel_noise) = self.largest(top);
        for c in rows {
            let (bt, ht) = self.total_shares(c);
            let (bs, hs) = self.self_shares(c);
            let mark = match gate {
                Some(g) if self.regressed(c, g) => "  REGRESSED",
                _ => "",
            };
            writeln!(
                w,
                "{bt:>6.2}% {ht:>6.2}% {:>+8.2}   {bs:>6.2}% {hs:>6.2}% {:>+8.2}  {}{mark}",
                ht - bt,
                hs - bs,
                c.name
            )?;
        }
        if kernel_noise > 0 {
            writeln!(
                w,
                "(and {kernel_noise} kernel functions whose change is within sampling noise)"
            )?;
        }
        Ok(())
    }

    /// The whole comparison as JSON (`ember diff -o diff.json`); the fields are documented in
    /// the README.
    pub fn write_json(&self, gate: &Gate, mut w: impl Write) -> io::Result<()> {
        write!(
            w,
            "{{\"base_samples\":{},\"head_samples\":{},\"gate\":{{\"over_points\":{},\
             \"min_samples\":{},\"z\":{}}},\"regressed\":{},\"functions\":[",
            self.base_samples,
            self.head_samples,
            gate.over_points,
            gate.min_samples,
            gate.z,
            self.regressions(gate).next().is_some()
        )?;
        for (i, c) in self.changes.iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            self.write_change(c, gate, &mut w)?;
        }
        w.write_all(b"]}\n")
    }

    fn write_change(&self, c: &Change, gate: &Gate, w: &mut impl Write) -> io::Result<()> {
        let (bt, ht) = self.total_shares(c);
        let (bs, hs) = self.self_shares(c);
        write!(
            w,
            "{{\"name\":{},\"base_self\":{},\"head_self\":{},\"base_total\":{},\
             \"head_total\":{},\"base_total_pct\":{bt:.4},\"head_total_pct\":{ht:.4},\
             \"change_total_pts\":{:.4},\"base_self_pct\":{bs:.4},\"head_self_pct\":{hs:.4},\
             \"change_self_pts\":{:.4},\"standard_error_pts\":{:.4},\"regressed\":{}}}",
            json_str(&c.name),
            c.base_self,
            c.head_self,
            c.base_total,
            c.head_total,
            ht - bt,
            hs - bs,
            self.standard_error(c),
            self.regressed(c, gate)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folded(lines: &[(&str, u64)]) -> Folded {
        lines.iter().map(|&(s, n)| (s.to_string(), n)).collect()
    }

    #[test]
    fn a_callee_that_grew_makes_its_caller_grow_and_leads_the_list() {
        let base = folded(&[("app;main;parse;tokenize", 3000), ("app;main;render", 7000)]);
        let head = folded(&[("app;main;parse;tokenize", 4500), ("app;main;render", 7000)]);
        let cmp = Comparison::new(&base, &head);
        let names: Vec<&str> = cmp.changes.iter().map(|c| c.name.as_str()).collect();
        // parse and tokenize grew by the same (total), render shrank, main stayed at 100 %.
        assert_eq!(&names[2..], &["main", "render"]);
        let gate = Gate::default();
        let failed: Vec<&str> = cmp.regressions(&gate).map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["parse", "tokenize"]);
        assert!(cmp.total_change(&cmp.changes[0]) > 8.0);
    }

    #[test]
    fn the_kernel_growing_under_a_busy_machine_is_no_regression_of_the_program() {
        // The same program; in head, preemptions took 7 % of its samples in the kernel.
        let base = folded(&[("app;main;a", 5000), ("app;main;b", 5000)]);
        let head = folded(&[
            ("app;main;a", 4650),
            ("app;main;a;irqentry_exit_to_user_mode_[k]", 350),
            ("app;main;b", 4650),
            ("app;main;b;irqentry_exit_to_user_mode_[k]", 350),
        ]);
        let cmp = Comparison::new(&base, &head);
        assert_eq!(cmp.changes[0].name, "irqentry_exit_to_user_mode_[k]");
        assert_eq!(cmp.regressions(&Gate::default()).count(), 0);
        // In the table it is a change like any other: 7 points is far beyond noise.
        let (rows, kernel_noise) = cmp.largest(10);
        assert_eq!(rows[0].name, "irqentry_exit_to_user_mode_[k]");
        assert_eq!(kernel_noise, 0);
        // A function that calls into the kernel more grows in its own total.
        let head = folded(&[
            ("app;main;a", 5000),
            ("app;main;a;do_syscall_64_[k]", 2000),
            ("app;main;b", 5000),
        ]);
        let cmp = Comparison::new(&base, &head);
        let gate = Gate::default();
        let failed: Vec<&str> = cmp.regressions(&gate).map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["a"]);
    }

    #[test]
    fn the_table_ranks_changes_by_size_either_sign_and_folds_kernel_noise() {
        // b shrank most, a grew less, the kernel moved by a fraction of a point.
        let base = folded(&[
            ("app;main;a", 2000),
            ("app;main;b", 7000),
            ("app;main;c", 990),
            ("app;main;c;schedule_[k]", 10),
        ]);
        let head = folded(&[
            ("app;main;a", 2600),
            ("app;main;b", 6000),
            ("app;main;c", 1386),
            ("app;main;c;schedule_[k]", 14),
        ]);
        let cmp = Comparison::new(&base, &head);
        let (rows, kernel_noise) = cmp.largest(10);
        let names: Vec<&str> = rows.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["b", "a", "c"]);
        assert_eq!(kernel_noise, 1);
        let mut table = Vec::new();
        cmp.write_table(2, None, &mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        let functions: Vec<&str> = table.lines().skip(2).collect();
        assert!(functions[0].ends_with(" b"), "{table}");
        assert!(functions[1].ends_with(" a"), "{table}");
        assert!(functions[2].contains("1 kernel functions"), "{table}");
    }

    #[test]
    fn noise_is_not_a_regression() {
        // 30.0 % against 31.0 % of 4,000 samples: about 1 standard error.
        let base = folded(&[("app;main;a", 1200), ("app;main;b", 2800)]);
        let head = folded(&[("app;main;a", 1240), ("app;main;b", 2760)]);
        let cmp = Comparison::new(&base, &head);
        let gate = Gate {
            over_points: 0.5,
            ..Gate::default()
        };
        assert_eq!(cmp.regressions(&gate).count(), 0);
        let se = cmp.standard_error(&cmp.changes[0]);
        assert!((0.9..1.2).contains(&se), "{se}");
    }

    #[test]
    fn table_and_json_say_the_same() {
        let base = folded(&[("app;main;a", 100), ("app;main;b", 900)]);
        let head = folded(&[("app;main;a", 300), ("app;main;b", 700)]);
        let cmp = Comparison::new(&base, &head);
        let mut table = Vec::new();
        cmp.write_table(5, Some(&Gate::default()), &mut table)
            .unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(
            table.lines().nth(2).unwrap().ends_with("a  REGRESSED"),
            "{table}"
        );
        let mut json = Vec::new();
        cmp.write_json(&Gate::default(), &mut json).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["regressed"], true);
        assert_eq!(v["functions"][0]["name"], "a");
        assert_eq!(v["functions"][0]["change_total_pts"], 20.0);
    }
}
