//! `ember serve`: Go's pprof HTTP convention over one sampling session, so that
//! `go tool pprof`, Parca's scrapes and Grafana Alloy's `pyroscope.scrape` read ember as they
//! read a Go server. `GET /debug/pprof/profile?seconds=N` answers with a gzip'd CPU profile of
//! the next N seconds.
//!
//! One recording runs for as long as the server does, in windows of a second (the live view's
//! session, [`crate::top::Session`]); each request adds up the windows that begin after it
//! arrived, so concurrent requests share the sampling and cost nothing more. The answer is
//! written by a thread of its own: a client that is slow or hangs up holds up nothing else.

mod http;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::profile::Profile;
use crate::record::RecordError;
use crate::top::{merge_into, Session, TopOptions};

pub use http::{Asked, HttpError};

/// What `ember serve` is asked to do.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The recording (its `interval` is the windows' length).
    pub session: TopOptions,
    pub listen: SocketAddr,
    /// Clients must send `Authorization: Bearer TOKEN`; required off loopback.
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address: anyone who reaches it could profile this machine; \
         give a token (--token, or EMBER_TOKEN) that clients send as `Authorization: Bearer`"
    )]
    NeedsToken(SocketAddr),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl ServeError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::NeedsToken(_) => 2,
            ServeError::Http(_) => 1,
            ServeError::Record(e) => e.exit_code(),
        }
    }
}

/// How long the last answers may take to reach their clients before ember exits.
const ANSWERS_AT_EXIT: Duration = Duration::from_secs(10);

/// A request waiting for its windows.
struct Pending {
    asked: Asked,
    /// The window going on when it arrived is not its: it began before.
    skip_one: bool,
    /// Windows still to add.
    windows_left: u32,
    profile: Profile,
    /// When its first window began.
    since: Option<Instant>,
}

/// Serve until sampling ends (the command ends, `-d`, Ctrl-C); `listening` is told the
/// address once requests are taken. Returns the exit code ember ends with.
pub fn run(mut opts: ServeOptions, listening: impl FnOnce(SocketAddr)) -> Result<i32, ServeError> {
    if !opts.listen.ip().is_loopback() && opts.token.is_none() {
        return Err(ServeError::NeedsToken(opts.listen));
    }
    // Names are kept as long as the longest request may still need them, and no more: a
    // server runs for days while programs come and go.
    let longest = http::MAX_SECONDS as f64 / opts.session.interval.as_secs_f64();
    opts.session.forget_after = Some(longest.ceil() as u64 + 2);
    let (tx, asked) = mpsc::channel();
    let addr = http::listen(opts.listen, opts.token.clone(), tx)?;
    let window = opts.session.interval;
    let mut session = Session::start(opts.session)?;
    listening(addr);
    let mut pending: Vec<Pending> = Vec::new();
    let mut seen = session.windows();
    while !session.sampling_over() {
        take_requests(&asked, &mut pending, window);
        session.update(Duration::from_millis(100));
        let new = session.windows() - seen;
        seen = session.windows();
        for w in session.last_windows(new as usize) {
            pending.iter_mut().for_each(|p| p.add(w));
        }
        answer_finished(&mut session, &mut pending, |p| p.windows_left == 0);
    }
    // What each waiting request got before the end.
    take_requests(&asked, &mut pending, window);
    answer_finished(&mut session, &mut pending, |_| true);
    let code = session.finish()?;
    http::wait_for_answers(ANSWERS_AT_EXIT);
    Ok(code)
}

/// Requests that arrived: each waits for the windows of its `seconds`.
fn take_requests(asked: &Receiver<Asked>, pending: &mut Vec<Pending>, window: Duration) {
    while let Ok(a) = asked.try_recv() {
        let windows = (a.seconds.as_secs_f64() / window.as_secs_f64())
            .ceil()
            .max(1.0);
        pending.push(Pending {
            asked: a,
            skip_one: true,
            windows_left: windows as u32,
            profile: Profile::new(),
            since: None,
        });
    }
}

impl Pending {
    /// A window ended.
    fn add(&mut self, window: &Profile) {
        if std::mem::take(&mut self.skip_one) {
            self.since = Some(Instant::now());
            return;
        }
        if self.windows_left > 0 {
            merge_into(&mut self.profile, window);
            self.windows_left -= 1;
        }
    }
}

/// Answer the requests `done` says are complete, with their profiles named as far as names
/// have arrived (waiting a little for those asked for).
fn answer_finished(
    session: &mut Session,
    pending: &mut Vec<Pending>,
    done: impl Fn(&Pending) -> bool,
) {
    if !pending.iter().any(&done) {
        return;
    }
    session.wait_for_names(Duration::from_secs(2));
    let (finished, waiting): (Vec<Pending>, Vec<Pending>) = pending.drain(..).partition(done);
    *pending = waiting;
    for p in finished {
        let took = p.since.map_or(Duration::ZERO, |s| s.elapsed());
        let stacks = session.named(p.profile, took);
        let mut body = Vec::new();
        match crate::output::pprof::write(&stacks, &mut body) {
            Ok(()) => p.asked.answer_profile(body),
            Err(e) => p
                .asked
                .answer_error(500, &format!("could not encode the profile: {e}")),
        }
    }
}
