//! The `ember` binary: parse arguments, run, map the result to an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;
use ember::cli::{Cli, Command};
use ember::output::open::open_svg_output;

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

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Record(args) => {
            let mut opts = args.into_options();
            opts.notify = |line| eprintln!("ember: {line}");
            if std::io::stderr().is_terminal() {
                opts.progress = Some(|line| eprintln!("ember: {line}"));
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
                a.fold.options(),
                &a.svg.into_options(),
            ) {
                Ok(()) => {
                    open_svg(a.open, &outputs);
                    0
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Diff(a) => {
            match ember::render::diff(
                &a.before,
                &a.after,
                &a.output,
                a.normalize,
                a.fold.options(),
                &a.svg.into_options(),
            ) {
                Ok(()) => {
                    open_svg(a.open, std::slice::from_ref(&a.output));
                    0
                }
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Report(a) => {
            match ember::render::report(&a.input, a.top, a.by.into_sort(), std::io::stdout().lock())
            {
                Ok(()) => 0,
                Err(e) => fail(&e, e.exit_code()),
            }
        }
    };
    std::process::exit(code);
}
