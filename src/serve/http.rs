//! The HTTP side of `ember serve` (tiny_http): requests are checked and parsed on a thread
//! of their own and handed over as [`Asked`]; each answer is written on a thread of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use tiny_http::{Header, Request, Response, Server};

/// The profile's path, as Go's `net/http/pprof` serves it.
pub const PROFILE_PATH: &str = "/debug/pprof/profile";
/// Go's default length of a CPU profile, and the longest ember takes.
const DEFAULT_SECONDS: u64 = 30;
pub(super) const MAX_SECONDS: u64 = 3600;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("could not listen on {addr}: {why}")]
    Listen { addr: SocketAddr, why: String },
}

/// A request for a CPU profile of the next `seconds`.
pub struct Asked {
    pub seconds: Duration,
    request: Request,
}

impl Asked {
    /// Answer with a gzip'd pprof profile.
    pub fn answer_profile(self, body: Vec<u8>) {
        let response = Response::from_data(body)
            .with_header(header("Content-Type", "application/octet-stream"))
            .with_header(header(
                "Content-Disposition",
                "attachment; filename=\"profile\"",
            ));
        respond(self.request, response);
    }

    pub fn answer_error(self, status: u16, message: &str) {
        answer_text(self.request, status, message);
    }
}

/// Listen on `addr` and hand every well-formed, authorized request for a profile to `asked`;
/// others are answered at once. Returns the address listened on (port 0 picks one).
pub fn listen(
    addr: SocketAddr,
    token: Option<String>,
    asked: Sender<Asked>,
) -> Result<SocketAddr, HttpError> {
    let server = Server::http(addr).map_err(|e| HttpError::Listen {
        addr,
        why: e.to_string(),
    })?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| HttpError::Listen {
            addr,
            why: "not an IP address".into(),
        })?;
    std::thread::Builder::new()
        .name("ember-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                match check(&request, token.as_deref()) {
                    Ok(seconds) => {
                        let _ = asked.send(Asked { seconds, request });
                    }
                    Err((status, message)) => answer_text(request, status, &message),
                }
            }
        })
        .map_err(|e| HttpError::Listen {
            addr,
            why: e.to_string(),
        })?;
    Ok(bound)
}

/// The seconds a request asks for, or the status and message it is refused with.
fn check(request: &Request, token: Option<&str>) -> Result<Duration, (u16, String)> {
    if let Some(token) = token {
        let expected = format!("Bearer {token}");
        let given = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str());
        if given != Some(expected.as_str()) {
            return Err((
                401,
                "a token is required: Authorization: Bearer TOKEN".into(),
            ));
        }
    }
    let (path, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
    if path != PROFILE_PATH {
        return Err((
            404,
            format!("ember serves CPU profiles at {PROFILE_PATH}?seconds=N"),
        ));
    }
    seconds(query).map(Duration::from_secs)
}

/// The `seconds` of a query string (Go's default when absent).
fn seconds(query: &str) -> Result<u64, (u16, String)> {
    let Some(value) = query.split('&').find_map(|kv| kv.strip_prefix("seconds=")) else {
        return Ok(DEFAULT_SECONDS);
    };
    match value.parse::<u64>() {
        Ok(s) if (1..=MAX_SECONDS).contains(&s) => Ok(s),
        _ => Err((
            400,
            format!("seconds must be a whole number from 1 to {MAX_SECONDS}, not {value:?}"),
        )),
    }
}

fn header(field: &str, value: &str) -> Header {
    Header::from_bytes(field.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn answer_text(request: Request, status: u16, message: &str) {
    let response = Response::from_string(format!("{message}\n"))
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"));
    respond(request, response);
}

/// Answers being written now.
static ANSWERING: AtomicUsize = AtomicUsize::new(0);

/// Write `response` on a thread of its own (a client that reads slowly or hung up holds up
/// nothing else; its error is its own).
fn respond<R: std::io::Read + Send + 'static>(request: Request, response: Response<R>) {
    ANSWERING.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new()
        .name("ember-http-answer".into())
        .spawn(move || {
            let _ = request.respond(response);
            ANSWERING.fetch_sub(1, Ordering::SeqCst);
        });
    if spawned.is_err() {
        ANSWERING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Wait until the answers being written are sent, for at most `limit`: the last answers
/// (those given as sampling ends) must reach their clients before ember exits, and a client
/// that stopped reading must not keep it from exiting.
pub fn wait_for_answers(limit: Duration) {
    let until = std::time::Instant::now() + limit;
    while ANSWERING.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_default_as_go_does_and_bad_ones_are_refused() {
        assert_eq!(seconds(""), Ok(30));
        assert_eq!(seconds("debug=1&seconds=5"), Ok(5));
        assert_eq!(seconds("seconds=0").unwrap_err().0, 400);
        assert_eq!(seconds("seconds=abc").unwrap_err().0, 400);
        assert_eq!(seconds("seconds=99999").unwrap_err().0, 400);
    }
}
