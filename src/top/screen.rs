//! The full-screen view of `ember top`: what each key does, and how a [`Session`] is drawn,
//! with ratatui, on whatever terminal the caller set up (the library writes to no terminal of
//! its own).

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use super::table::{Key, Neighbours, Scope, Table as Functions};
use super::Session;
use crate::output::report::SortBy;
use crate::record::plural;

/// A key the view understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Press {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    CtrlC,
}

/// What the caller should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

#[derive(Clone, Debug, PartialEq)]
enum Mode {
    Functions,
    /// Typing a filter.
    Filter,
    /// One function's callers and callees.
    Detail(Key),
}

/// What the view shows and how: the keys change it, [`Screen::refresh`] recomputes it.
pub struct Screen {
    scope: Scope,
    recent: bool,
    sort: SortBy,
    filter: String,
    mode: Mode,
    paused: bool,
    selected: usize,
    /// Said at the bottom until the next key (where outputs were written, ...).
    message: String,
    table: Functions,
    neighbours: Neighbours,
}

/// Rows a page key moves.
const PAGE: usize = 10;

impl Screen {
    pub fn new(per_thread: bool) -> Screen {
        Screen {
            scope: Scope {
                per_thread,
                ..Scope::default()
            },
            recent: false,
            sort: SortBy::SelfTime,
            filter: String::new(),
            mode: Mode::Functions,
            paused: false,
            selected: 0,
            message: String::new(),
            table: Functions::default(),
            neighbours: Neighbours::default(),
        }
    }

    /// Recompute the tables from what `session` knows now (not while paused).
    pub fn refresh(&mut self, session: &Session) {
        if !self.paused {
            self.recompute(session);
        }
    }

    /// Recompute the tables, paused or not (a key changed what they count).
    fn recompute(&mut self, session: &Session) {
        self.table = session.table(&self.scope, self.recent);
        self.table.sort(self.sort);
        if let Mode::Detail(key) = &self.mode {
            self.neighbours = session.neighbours(&self.scope, self.recent, key);
        }
        let rows = self.table.matching(&self.filter).count();
        self.selected = self.selected.min(rows.saturating_sub(1));
    }

    /// Do what `press` says.
    pub fn key(&mut self, press: Press, session: &mut Session) -> Action {
        if press == Press::CtrlC {
            return Action::Quit;
        }
        self.message.clear();
        if self.mode == Mode::Filter {
            self.type_filter(press);
            return Action::Continue;
        }
        match press {
            Press::Char('q') => return Action::Quit,
            Press::Char(' ') => self.paused = !self.paused,
            Press::Char('s') => {
                self.sort = match self.sort {
                    SortBy::SelfTime => SortBy::Total,
                    SortBy::Total => SortBy::SelfTime,
                };
            }
            Press::Char('/') => self.mode = Mode::Filter,
            Press::Char('t') => self.next_thread(session),
            Press::Char('w') if session.off_cpu() => self.scope.wall = !self.scope.wall,
            Press::Char('w') => {
                self.message = "the wall-clock view needs --off-cpu: start ember top with it".into()
            }
            Press::Char('c') => self.recent = !self.recent,
            Press::Char('o') => self.write(session),
            Press::Enter => self.toggle_detail(),
            Press::Esc | Press::Backspace => {
                if matches!(self.mode, Mode::Detail(_)) {
                    self.mode = Mode::Functions;
                } else {
                    self.filter.clear();
                }
            }
            Press::Up => self.selected = self.selected.saturating_sub(1),
            Press::Down => self.selected += 1,
            Press::PageUp => self.selected = self.selected.saturating_sub(PAGE),
            Press::PageDown => self.selected += PAGE,
            Press::Home => self.selected = 0,
            _ => return Action::Continue,
        }
        if press != Press::Char(' ') || !self.paused {
            self.recompute(session);
        }
        Action::Continue
    }

    fn type_filter(&mut self, press: Press) {
        match press {
            Press::Char(c) => self.filter.push(c),
            Press::Backspace => {
                self.filter.pop();
            }
            Press::Enter => self.mode = Mode::Functions,
            Press::Esc => {
                self.filter.clear();
                self.mode = Mode::Functions;
            }
            _ => {}
        }
        self.selected = 0;
    }

    /// All threads, then each thread in turn.
    fn next_thread(&mut self, session: &Session) {
        let threads = session.threads();
        self.scope.thread = match self.scope.thread {
            None => threads.keys().next().copied(),
            Some(t) => threads.range(t + 1..).next().map(|(tid, _)| *tid),
        };
        self.selected = 0;
    }

    fn toggle_detail(&mut self) {
        self.mode = match &self.mode {
            Mode::Detail(_) => Mode::Functions,
            _ => match self.table.matching(&self.filter).nth(self.selected) {
                Some(row) => Mode::Detail(row.key.clone()),
                None => Mode::Functions,
            },
        };
    }

    fn write(&mut self, session: &mut Session) {
        self.message = match session.write() {
            Ok(paths) => {
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                format!("wrote {}", names.join(", "))
            }
            Err(e) => format!("could not write: {e}"),
        };
    }

    /// Draw the whole screen.
    pub fn draw(&self, frame: &mut Frame, session: &Session) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(3),
            Constraint::Min(3),
            Constraint::Length(2),
        ])
        .areas(frame.area());
        frame.render_widget(Paragraph::new(self.header_lines(session)), head);
        match &self.mode {
            Mode::Detail(key) => self.draw_detail(frame, body, key),
            _ => self.draw_functions(frame, body),
        }
        frame.render_widget(Paragraph::new(self.footer_lines()), foot);
    }

    fn header_lines(&self, session: &Session) -> Vec<Line<'static>> {
        let h = session.header();
        let mut status = format!(
            "{:.0} s · {:.0} samples/s · {} samples · {} lost · {} · {} · target uses {:.2} CPUs",
            h.elapsed.as_secs_f64(),
            h.rate,
            h.counts.samples,
            h.counts.lost,
            plural(h.counts.threads, "thread", "threads"),
            plural(h.counts.processes, "process", "processes"),
            h.cpus
        );
        let pending = session.names.pending();
        if pending > 0 {
            status.push_str(&format!(" · naming {pending} addresses"));
        }
        if let Some(ended) = &h.ended {
            status = format!("{status} · {ended}");
        }
        vec![
            Line::from(format!("ember top — {}", h.description.join(" ")))
                .style(Style::default().add_modifier(Modifier::BOLD)),
            Line::from(status),
            Line::from(self.view_line(session)),
        ]
    }

    /// What the table counts: `CPU · all threads · since start · by self · filter "x"`.
    fn view_line(&self, session: &Session) -> String {
        let thread = match self.scope.thread {
            None => "all threads".to_string(),
            Some(t) => match session.threads().get(&t) {
                Some((_, name)) => format!("thread {name} ({t})"),
                None => format!("thread {t}"),
            },
        };
        let mut s = format!(
            "{} · {thread} · {} · sorted by {}",
            if self.scope.wall { "wall-clock" } else { "CPU" },
            if self.recent {
                format!("last {:.0} s", session.recent_span().as_secs_f64())
            } else {
                "since start".to_string()
            },
            match self.sort {
                SortBy::SelfTime => "self",
                SortBy::Total => "total",
            }
        );
        if !self.filter.is_empty() || self.mode == Mode::Filter {
            s.push_str(&format!(" · filter: {}", self.filter));
            if self.mode == Mode::Filter {
                s.push('_');
            }
        }
        if self.paused {
            s.push_str(" · PAUSED");
        }
        s
    }

    fn footer_lines(&self) -> Vec<Line<'static>> {
        let keys = match self.mode {
            Mode::Filter => "type a name · Enter keep the filter · Esc clear it",
            Mode::Detail(_) => "Enter/Esc back · q quit · space pause · c recent · o write",
            Mode::Functions => {
                "q quit · space pause · s sort · / filter · t thread · w wall · c recent · \
                 Enter callers · o write"
            }
        };
        vec![
            Line::from(self.message.clone()),
            Line::from(keys.to_string()).style(Style::default().add_modifier(Modifier::DIM)),
        ]
    }

    fn draw_functions(&self, frame: &mut Frame, area: Rect) {
        let t = &self.table;
        let rows: Vec<Row> = t
            .matching(&self.filter)
            .map(|r| {
                let mut name = r.key.function.name.to_string();
                if let Some(tid) = r.key.thread {
                    name = format!("{name} ({tid})");
                }
                Row::new(vec![
                    Cell::from(format!("{:6.2}%", t.percent(r.self_samples))),
                    Cell::from(format!("{:6.2}%", t.percent(r.total_samples))),
                    Cell::from(format!("{:>8}", r.self_samples)),
                    Cell::from(name),
                    Cell::from(r.key.function.module.to_string()),
                    Cell::from(r.location.as_deref().unwrap_or("").to_string()),
                ])
            })
            .collect();
        let header = Row::new([
            " SELF%", " TOTAL%", "    SELF", "FUNCTION", "MODULE", "LOCATION",
        ])
        .style(Style::default().add_modifier(Modifier::BOLD));
        let widths = [
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Fill(3),
            Constraint::Fill(1),
            Constraint::Fill(1),
        ];
        let table = Table::new(rows, widths)
            .header(header)
            .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
        let mut state = TableState::default().with_selected(Some(self.selected));
        frame.render_stateful_widget(table, area, &mut state);
    }

    fn draw_detail(&self, frame: &mut Frame, area: Rect, key: &Key) {
        let n = &self.neighbours;
        let [callers, callees] =
            Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(area);
        let list = |title: String, entries: &[(Option<Key>, u64)], none: &str| {
            let rows: Vec<Row> = entries
                .iter()
                .map(|(k, samples)| {
                    let name = k
                        .as_ref()
                        .map_or(none.to_string(), |k| k.function.name.to_string());
                    Row::new(vec![
                        Cell::from(format!(
                            "{:6.2}%",
                            100.0 * *samples as f64 / n.samples.max(1) as f64
                        )),
                        Cell::from(format!("{samples:>8}")),
                        Cell::from(name),
                    ])
                })
                .collect();
            Table::new(
                rows,
                [
                    Constraint::Length(7),
                    Constraint::Length(8),
                    Constraint::Fill(1),
                ],
            )
            .block(Block::default().borders(Borders::TOP).title(title))
        };
        let name = &key.function.name;
        frame.render_widget(
            list(
                format!("callers of {name} ({} samples)", n.samples),
                &n.callers,
                "[root of the stack]",
            ),
            callers,
        );
        frame.render_widget(
            list(format!("callees of {name}"), &n.callees, "[self]"),
            callees,
        );
    }
}
