//! The `ember` binary: parse arguments, run, map the result to an exit code.

use clap::Parser;
use ember::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Record(args) => match ember::record::record_command(&args.into_options()) {
            Ok(outcome) => {
                eprintln!("{}", outcome.summary);
                outcome.exit_code
            }
            Err(e) => {
                eprintln!("ember: error: {:#}", anyhow::Error::from(e));
                1
            }
        },
    };
    std::process::exit(code);
}
