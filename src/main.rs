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

/// `ember serve`: CPU profiles over HTTP until sampling ends.
fn serve(args: ember::cli::ServeArgs) -> i32 {
    let mut opts = args.into_options();
    opts.session.record.listeners.notify = |line| eprintln!("ember: {line}");
    let listening = |addr: std::net::SocketAddr| {
        eprintln!(
            "ember: serving CPU profiles at http://{addr}/debug/pprof/profile?seconds=N \
             (e.g. go tool pprof http://{addr}/debug/pprof/profile?seconds=10)"
        )
    };
    match ember::serve::run(opts, listening) {
        Ok(code) => code,
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// `ember top`: the full-screen view on a terminal, else tables printed as text.
fn top(args: ember::cli::TopArgs) -> i32 {
    let (once, rows) = (args.once, args.rows);
    let mut opts = args.into_options();
    opts.record.listeners.notify = |line| eprintln!("ember: {line}");
    let session = match ember::top::Session::start(opts) {
        Ok(s) => s,
        Err(e) => return fail(&e, e.exit_code()),
    };
    let full_screen = !once && std::io::stdout().is_terminal();
    let result = if full_screen {
        top_screen(session)
    } else {
        top_text(session, once, rows)
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(&e, e.exit_code()),
    }
}

/// Draw the view about every interval and at each key, until `q` or Ctrl-C; the terminal is
/// given back as it was (also on a panic: ratatui's hook restores it).
fn top_screen(mut session: ember::top::Session) -> Result<i32, ember::record::RecordError> {
    use ember::top::screen::{Action, Screen};
    use ratatui::crossterm::event;
    let mut terminal = ratatui::init();
    let mut screen = Screen::new(session.per_thread());
    screen.refresh(&session);
    // Drawn when something changed, and each second for the clock.
    let mut drawn: Option<std::time::Instant> = None;
    // A terminal that went away (its window closed, ssh dropped) ends the view as `q` does.
    // crossterm (0.29; crossterm-rs/crossterm#793) must not be asked about it then: its poll
    // reads the hung-up terminal again and again without returning (ember spun at 100 % of
    // a CPU).
    loop {
        if drawn.is_none_or(|d| d.elapsed().as_secs() >= 1) {
            if terminal.draw(|f| screen.draw(f, &session)).is_err() {
                break;
            }
            drawn = Some(std::time::Instant::now());
        }
        if !wait_for_terminal(100) {
            break;
        }
        if event::poll(std::time::Duration::ZERO).unwrap_or(false) {
            if let Ok(event::Event::Key(k)) = event::read() {
                let press = (k.kind != event::KeyEventKind::Release).then(|| press_of(k));
                if let Some(Some(p)) = press {
                    if screen.key(p, &mut session) == Action::Quit {
                        break;
                    }
                    drawn = None;
                }
            }
        } else if session.update(std::time::Duration::ZERO) {
            screen.refresh(&session);
            drawn = None;
        }
    }
    ratatui::restore();
    let warnings: Vec<String> = session.warnings().cloned().collect();
    let code = session.finish();
    for w in warnings {
        eprintln!("ember: warning: {w}");
    }
    code
}

/// Wait up to `timeout_ms` for input on the terminal (stdin); false if it hung up.
fn wait_for_terminal(timeout_ms: i32) -> bool {
    let mut fd = libc::pollfd {
        fd: 0,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut fd, 1, timeout_ms) };
    fd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) == 0
}

/// The key the view understands, if any.
fn press_of(k: ratatui::crossterm::event::KeyEvent) -> Option<ember::top::screen::Press> {
    use ember::top::screen::Press;
    use ratatui::crossterm::event::{KeyCode, KeyModifiers};
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Press::CtrlC,
        KeyCode::Char(c) => Press::Char(c),
        KeyCode::Enter => Press::Enter,
        KeyCode::Esc => Press::Esc,
        KeyCode::Backspace => Press::Backspace,
        KeyCode::Up => Press::Up,
        KeyCode::Down => Press::Down,
        KeyCode::PageUp => Press::PageUp,
        KeyCode::PageDown => Press::PageDown,
        KeyCode::Home => Press::Home,
        _ => return None,
    })
}

/// Print the table every interval (or once, with `once`) until sampling ends.
fn top_text(
    mut session: ember::top::Session,
    once: bool,
    rows: usize,
) -> Result<i32, ember::record::RecordError> {
    let mut printed = 0;
    loop {
        session.update(std::time::Duration::from_millis(200));
        let ended = session.header().ended.is_some();
        if ended {
            // The last names, so that the final table has them.
            session.wait_for_names(std::time::Duration::from_secs(30));
        }
        if (!once && session.windows() > printed) || ended {
            printed = session.windows();
            let _ = session.write_text(rows, std::io::stdout().lock());
        }
        if ended {
            break;
        }
    }
    for w in session.warnings() {
        eprintln!("ember: warning: {w}");
    }
    session.finish()
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Record(args) => {
            let mut opts = args.into_options();
            opts.listeners.notify = |line| eprintln!("ember: {line}");
            if std::io::stderr().is_terminal() {
                opts.listeners.progress = Some(|line| eprintln!("ember: {line}"));
                opts.listeners.status = Some(status_line);
            }
            match ember::record::record(&opts) {
                Ok(outcome) => {
                    eprintln!("{}", outcome.summary);
                    open_svg(opts.output.open, &opts.output.outputs);
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
        Command::Top(a) => top(a),
        Command::Serve(a) => serve(a),
        Command::Completions { shell } => {
            ember::cli::write_completions(shell, &mut std::io::stdout().lock());
            0
        }
        Command::Man { dir } => match ember::cli::write_man_pages(&dir) {
            Ok(pages) => {
                for p in pages {
                    eprintln!("ember: wrote {}", p.display());
                }
                0
            }
            Err(e) => fail(
                format!("cannot write man pages into {}: {e}", dir.display()),
                1,
            ),
        },
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
