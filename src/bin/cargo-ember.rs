//! `cargo ember test|bench|run`: cargo runs this as `cargo-ember ember ARGS`.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Invoked by cargo as `cargo-ember ember test ...`; also usable as `cargo-ember test ...`.
    if args.first().map(String::as_str) == Some("ember") {
        args.remove(0);
    }
    let say = |line: &str| eprintln!("{line}");
    let notify = |line: &str| eprintln!("ember: {line}");
    let code = match ember::cargo::run(&args, say, notify) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cargo ember: error: {e}");
            match e {
                ember::cargo::CargoError::Usage | ember::cargo::CargoError::Options(_) => 2,
                ember::cargo::CargoError::Record(r) => r.exit_code(),
                _ => 1,
            }
        }
    };
    std::process::exit(code);
}
