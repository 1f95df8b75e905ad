//! `cargo ember test|bench|run`: build with line tables, then profile only the built test,
//! bench or program binaries while cargo runs them, and pass their exit status through.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::cli::{Cli, Command as EmberCommand};
use crate::record::{self, RecordError, RecordOutcome};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CargoCommand {
    Test,
    Bench,
    Run,
}

impl CargoCommand {
    fn name(self) -> &'static str {
        match self {
            CargoCommand::Test => "test",
            CargoCommand::Bench => "bench",
            CargoCommand::Run => "run",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CargoError {
    #[error(
        "usage: cargo ember test|bench|run [EMBER OPTIONS] [CARGO OPTIONS] [-- ARGS]\n\
         EMBER OPTIONS are those of `ember record` (-F, -o, --open, --per-thread, --top, ...)"
    )]
    Usage,
    #[error("cannot run cargo: {0}")]
    Cargo(std::io::Error),
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The options of `ember record` as `cargo ember` takes them, read off clap's own definition
/// so a new record option works here too: (names of options that take a value, names of
/// flags). `-p/--pid` is left to cargo (`-p` names a package there).
fn record_options() -> &'static (Vec<String>, Vec<String>) {
    static OPTIONS: std::sync::OnceLock<(Vec<String>, Vec<String>)> = std::sync::OnceLock::new();
    OPTIONS.get_or_init(|| {
        use clap::Args;
        let record = crate::cli::RecordArgs::augment_args(clap::Command::new("record"));
        let (mut values, mut flags) = (Vec::new(), Vec::new());
        for arg in record.get_arguments() {
            if arg.is_positional() || arg.get_id() == "pids" {
                continue;
            }
            let names = arg
                .get_short_and_visible_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(|c| format!("-{c}"))
                .chain(
                    arg.get_long_and_visible_aliases()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|l| format!("--{l}")),
                );
            if arg.get_action().takes_values() {
                values.extend(names);
            } else {
                flags.extend(names);
            }
        }
        (values, flags)
    })
}

/// The command line split into what ember takes and what cargo takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitArgs {
    pub ember: Vec<String>,
    pub cargo: Vec<String>,
    /// After `--`: arguments of the test harness or program.
    pub trailing: Vec<String>,
}

/// Split `[EMBER OPTIONS] [CARGO OPTIONS] [-- ARGS]`; ember's options are recognized by name
/// (also as `--opt=value`), everything else before `--` is cargo's.
pub fn split_args(args: &[String]) -> SplitArgs {
    let mut out = SplitArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.trailing = it.cloned().collect();
            break;
        }
        let flag = a.split('=').next().unwrap_or(a);
        let (values, flags) = record_options();
        if flags.iter().any(|f| f == a) {
            out.ember.push(a.clone());
        } else if values.iter().any(|f| f == flag) {
            out.ember.push(a.clone());
            if !a.contains('=') {
                if let Some(v) = it.next() {
                    out.ember.push(v.clone());
                }
            }
        } else {
            out.cargo.push(a.clone());
        }
    }
    out
}

/// An executable cargo built, from its JSON messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub executable: PathBuf,
    pub kinds: Vec<String>,
    /// Built as a test harness (`cargo test` targets, `#[test]`/`#[bench]` harness).
    pub test: bool,
}

/// Read `compiler-artifact` messages with an executable from cargo's JSON output.
pub fn parse_artifacts(json_lines: &str) -> Vec<Artifact> {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact")
        .filter_map(|v| {
            let exe = v["executable"].as_str()?;
            Some(Artifact {
                executable: PathBuf::from(exe),
                kinds: v["target"]["kind"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|k| k.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                test: v["profile"]["test"].as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// Does the executable carry line tables?
fn has_debug_lines(exe: &Path) -> bool {
    use object::{Object, ObjectSection};
    let Ok(data) = std::fs::read(exe) else {
        return false;
    };
    object::File::parse(&*data)
        .ok()
        .and_then(|f| f.section_by_name(".debug_line").map(|s| s.size() > 0))
        .unwrap_or(false)
}

/// Rust's test harness names each test's thread after the test, and the kernel keeps 15 bytes
/// of it. Ask a harness binary for its tests (`--list`) and map each cut name back to the one
/// full name it can stand for.
pub fn test_name_fixes(exe: &Path) -> HashMap<String, String> {
    let Ok(mut child) = Command::new(exe)
        .args(["--list", "--format", "terse"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return HashMap::new();
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return HashMap::new();
            }
        }
    }
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut text);
    }
    names_by_prefix(text.lines().filter_map(|l| l.strip_suffix(": test")))
}

/// Map the first 15 bytes of each name to the name, where that prefix is unique.
pub fn names_by_prefix<'a>(names: impl Iterator<Item = &'a str>) -> HashMap<String, String> {
    let mut by: HashMap<String, Option<String>> = HashMap::new();
    for n in names {
        if n.len() <= 15 {
            continue;
        }
        let mut cut = 15;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        by.entry(n[..cut].to_string())
            .and_modify(|v| *v = None)
            .or_insert_with(|| Some(n.to_string()));
    }
    by.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Line tables (with inlining) without editing Cargo.toml; dev/test builds have them already,
/// and are left alone so the user's build cache stays valid. Set in ember's own environment,
/// so the build and the `cargo` run that is recorded see the same settings (and cargo runs
/// what was just built).
fn set_debug_env() {
    for profile in ["RELEASE", "BENCH"] {
        let key = format!("CARGO_PROFILE_{profile}_DEBUG");
        if std::env::var_os(&key).is_none() {
            // Edition 2021: safe; set before ember starts any thread.
            std::env::set_var(key, "line-tables-only");
        }
    }
}

/// Run `cargo ember ARGS` (ARGS after `ember`) and return the exit code to end with. What
/// the user should hear goes through `say` (whole lines) and, while recording, `notify` (what
/// `ember record` says, as [`record::RecordOptions::notify`]): the library prints nothing.
pub fn run(args: &[String], say: fn(&str), notify: fn(&str)) -> Result<i32, CargoError> {
    let (cmd, rest) = match args.first().map(String::as_str) {
        Some("test") => (CargoCommand::Test, &args[1..]),
        Some("bench") => (CargoCommand::Bench, &args[1..]),
        Some("run") => (CargoCommand::Run, &args[1..]),
        _ => return Err(CargoError::Usage),
    };
    let split = split_args(rest);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // 1. Build, and learn which executables were built.
    let artifacts = match build(cmd, &split, &cargo)? {
        Ok(artifacts) => artifacts,
        Err(code) => return Ok(code),
    };
    check_artifacts(&artifacts, say);
    // 2. Full test names for the threads the harness named after them.
    let mut fixes = HashMap::new();
    if cmd == CargoCommand::Test {
        for a in artifacts.iter().filter(|a| a.test) {
            fixes.extend(test_name_fixes(&a.executable));
        }
    }
    // 3. Record cargo running them, keeping only the built executables.
    let mut opts = options_for(cmd, &split, &cargo)?;
    opts.target.filter.executables = artifacts
        .iter()
        .map(|a| std::fs::canonicalize(&a.executable).unwrap_or_else(|_| a.executable.clone()))
        .collect();
    opts.target.thread_name_fixes = fixes;
    if opts.output.svg.title.is_empty() {
        opts.output.svg.title = format!("cargo ember {}", args.join(" "));
    }
    opts.listeners.notify = notify;
    if cmd != CargoCommand::Run {
        // Which test (or bench) took the time.
        opts.output.rank = Some(opts.output.top.unwrap_or(10));
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        opts.listeners.progress = Some(notify);
    }
    let outcome: RecordOutcome = record::record(&opts)?;
    say(&outcome.summary.to_string());
    if opts.output.open {
        if let Some(said) = crate::output::open::open_svg_output(&opts.output.outputs) {
            say(&format!("cargo ember: {said}"));
        }
    }
    Ok(outcome.exit_code)
}

/// Build what `cmd` runs; the executables built, or cargo's exit code when the build failed.
fn build(
    cmd: CargoCommand,
    split: &SplitArgs,
    cargo: &str,
) -> Result<Result<Vec<Artifact>, i32>, CargoError> {
    set_debug_env();
    let mut build = Command::new(cargo);
    match cmd {
        CargoCommand::Test | CargoCommand::Bench => build.args([cmd.name(), "--no-run"]),
        CargoCommand::Run => build.arg("build"),
    };
    build
        .arg("--message-format=json-render-diagnostics")
        .args(&split.cargo)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let out = build.output().map_err(CargoError::Cargo)?;
    if !out.status.success() {
        return Ok(Err(out.status.code().unwrap_or(101)));
    }
    Ok(Ok(parse_artifacts(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|a| match cmd {
            CargoCommand::Run => a.kinds.iter().any(|k| k == "bin"),
            _ => a.test || a.kinds.iter().any(|k| k == "bench" || k == "test"),
        })
        .collect()))
}

/// Say when nothing was built, and which executables will lack names and lines.
fn check_artifacts(artifacts: &[Artifact], say: fn(&str)) {
    if artifacts.is_empty() {
        say("cargo ember: cargo built nothing to run");
    }
    for a in artifacts.iter().filter(|a| !has_debug_lines(&a.executable)) {
        say(&format!(
            "cargo ember: {} has no debug line info, so frames will lack names and lines; \
             add `debug = \"line-tables-only\"` to its profile in Cargo.toml \
             (e.g. [profile.release]) or set CARGO_PROFILE_RELEASE_DEBUG=line-tables-only",
            a.executable.display()
        ));
    }
}

/// `ember record` options for recording `cargo CMD` with the user's ember flags, parsed by
/// the same definition as `ember record`'s own.
fn options_for(
    cmd: CargoCommand,
    split: &SplitArgs,
    cargo: &str,
) -> Result<record::RecordOptions, CargoError> {
    let mut ember_args: Vec<String> = vec!["ember".into(), "record".into()];
    ember_args.extend(split.ember.iter().cloned());
    let grouped = split.ember.iter().any(|a| {
        matches!(
            a.as_str(),
            "--per-process" | "--per-thread" | "--thread-names"
        )
    });
    if !grouped && cmd == CargoCommand::Test {
        // One tower per test.
        ember_args.push("--thread-names".into());
    }
    ember_args.extend(["--".into(), cargo.to_string(), cmd.name().into()]);
    ember_args.extend(split.cargo.iter().cloned());
    if !split.trailing.is_empty() {
        ember_args.push("--".into());
        ember_args.extend(split.trailing.iter().cloned());
    }
    let cli = Cli::try_parse_from(&ember_args).map_err(|e| CargoError::Options(e.to_string()))?;
    let EmberCommand::Record(rec) = cli.command else {
        unreachable!("parsed as record")
    };
    Ok(rec.into_options())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_ember_and_cargo_options() {
        let a = split_args(&s(&[
            "-F",
            "499",
            "--release",
            "-o=x.svg",
            "--open",
            "-p",
            "mycrate",
            "--per-thread",
            "--",
            "--nocapture",
            "-o",
        ]));
        assert_eq!(
            a.ember,
            s(&["-F", "499", "-o=x.svg", "--open", "--per-thread"])
        );
        assert_eq!(a.cargo, s(&["--release", "-p", "mycrate"]));
        assert_eq!(a.trailing, s(&["--nocapture", "-o"]));
    }

    #[test]
    fn every_record_option_goes_to_ember() {
        let (values, flags) = record_options();
        for name in ["--off-cpu", "--root", "--kernel", "-v", "--per-thread"] {
            assert!(flags.iter().any(|f| f == name), "{name}: {flags:?}");
        }
        for name in ["--backend", "--buffer-size", "-F", "-o", "-d", "--top"] {
            assert!(values.iter().any(|f| f == name), "{name}: {values:?}");
        }
        assert!(!values
            .iter()
            .chain(flags)
            .any(|f| f == "-p" || f == "--pid"));
        for v in values {
            let a = split_args(&s(&[v, "X", "--release"]));
            assert_eq!(a.ember, s(&[v, "X"]), "{v}");
            assert_eq!(a.cargo, s(&["--release"]));
        }
        for f in flags {
            let a = split_args(&s(&[f, "--release"]));
            assert_eq!(a.ember, s(&[f]), "{f}");
        }
    }

    #[test]
    fn reads_cargo_artifacts() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["lib"]},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["test"]},"profile":{"test":true},"executable":"/t/deps/burn-1"}
{"reason":"build-finished","success":true}
not json"#;
        let a = parse_artifacts(json);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].executable, PathBuf::from("/t/deps/burn-1"));
        assert!(a[0].test);
    }

    #[test]
    fn cut_names_map_back_when_unique() {
        let m = names_by_prefix(
            [
                "alpha_test_burns_cpu",
                "short",
                "twin_prefix_abcd_1",
                "twin_prefix_abcd_2",
            ]
            .into_iter(),
        );
        assert_eq!(
            m.get("alpha_test_burn").map(String::as_str),
            Some("alpha_test_burns_cpu")
        );
        assert_eq!(m.len(), 1);
    }
}
