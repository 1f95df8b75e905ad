//! The `ember` binary: parse arguments, run, map the result to an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use ember::cli::{Cli, Command};
use ember::output::compare::Gate;
use ember::output::open::open_svg_output;
use ember::render::DiffOptions;

/// Print an error once (every message carries its cause already) and give the exit code.
fn fail(e: impl std::fmt::Display, code: i32) -> i32 {
    eprintln!("ember: error: {e}");
    code
}

fn open_svg(open: bool, outputs: &[PathBuf]) {
    if !open {
        return;
    }
    match open_svg_output(outputs) {
        Some(said) => eprintln!("ember: {said}"),
        None => eprintln!("ember: --open: no .svg output to open"),
    }
}

/// `ember diff base-tests.json head-tests.json`: test by test; with `--fail-over PCT`, exit 3
/// when a test's CPU time grew by more than PCT percent beyond sampling noise.
fn diff_tests(a: &ember::cli::DiffArgs) -> i32 {
    let comparison = match ember::render::diff_tests(&a.before, &a.after) {
        Ok(c) => c,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let _ = comparison.write_table(a.top, std::io::stdout().lock());
    let Some(pct) = a.fail_over else {
        return 0;
    };
    let slower = comparison.regressions(pct, a.min_samples, Gate::default().z);
    if slower.is_empty() {
        return 0;
    }
    eprintln!(
        "ember: diff: {} test(s) took more than {pct} % more CPU time, beyond sampling noise: {}",
        slower.len(),
        slower.join(", ")
    );
    3
}

/// `ember diff`: the outputs, the table on stdout, and the gate's verdict as the exit code.
fn diff(a: ember::cli::DiffArgs) -> i32 {
    if ember::render::is_json(&a.before) && ember::render::is_json(&a.after) {
        return diff_tests(&a);
    }
    let outputs = if a.outputs.is_empty() {
        vec![PathBuf::from("diff.svg")]
    } else {
        a.outputs
    };
    let gate = a.fail_over.map(|pct| Gate {
        over_points: pct,
        min_samples: a.min_samples,
        ..Gate::default()
    });
    let opts = DiffOptions {
        outputs,
        normalize: a.normalize,
        fold: a.fold.options(),
        range: a.range.range(),
        svg: a.svg.into_options(),
        gate,
    };
    let comparison = match ember::render::diff(&a.before, &a.after, &opts) {
        Ok(c) => c,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let _ = comparison.write_table(a.top, gate.as_ref(), std::io::stdout().lock());
    open_svg(a.open, &opts.outputs);
    let Some(gate) = gate else {
        return 0;
    };
    let failed: Vec<String> = comparison
        .regressions(&gate)
        .map(|c| format!("{} (+{:.2} points)", c.name, comparison.total_change(c)))
        .collect();
    if failed.is_empty() {
        return 0;
    }
    eprintln!(
        "ember: diff: {} function(s) grew by more than {} points of all samples, beyond \
         sampling noise: {}",
        failed.len(),
        gate.over_points,
        failed.join(", ")
    );
    3
}

/// The live status line: one line on the terminal, drawn over; "" clears it.
fn status_line(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    if line.is_empty() {
        let _ = write!(err, "\r\x1b[K");
    } else {
        let _ = write!(err, "\r\x1b[Kember: {line}");
    }
    let _ = err.flush();
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Record(args) => {
            let mut opts = args.into_options();
            opts.notify = |line| eprintln!("ember: {line}");
            if std::io::stderr().is_terminal() {
                opts.progress = Some(|line| eprintln!("ember: {line}"));
                opts.status = Some(status_line);
            }
            match ember::record::record(&opts) {
                Ok(outcome) => {
                    eprintln!("{}", outcome.summary);
                    open_svg(opts.open, &opts.outputs);
                    outcome.exit_code
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Flamegraph(a) => {
            let outputs = if a.outputs.is_empty() {
                vec![PathBuf::from("flamegraph.svg")]
            } else {
                a.outputs
            };
            match ember::render::flamegraph(
                &a.input,
                &outputs,
                (a.fold.options(), a.range.range()),
                &a.svg.into_options(),
            ) {
                Ok(()) => {
                    open_svg(a.open, &outputs);
                    0
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Diff(a) => diff(a),
        Command::Report(a) => {
            let (how, range) = ((a.top, a.by.into_sort()), a.range.range());
            match ember::render::report(&a.input, how, range, std::io::stdout().lock()) {
                Ok(()) => 0,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
    };
    std::process::exit(code);
}
