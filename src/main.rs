//! The `ember` binary: parse arguments, run, map the result to an exit code.

use clap::Parser;
use ember::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Record(args) => match ember::record::record(&args.into_options()) {
            Ok(outcome) => {
                eprintln!("{}", outcome.summary);
                outcome.exit_code
            }
            Err(e) => {
                let code = e.exit_code();
                // Every message carries its cause already; print it once.
                eprintln!("ember: error: {e}");
                code
            }
        },
    };
    std::process::exit(code);
}
