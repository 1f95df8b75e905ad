//! A debuginfod client: debug files (and executables that are gone) fetched by build id from
//! the servers in `DEBUGINFOD_URLS`, as gdb, perf and valgrind fetch them, into the same cache
//! as elfutils' client (`$DEBUGINFOD_CACHE_PATH`, else `$XDG_CACHE_HOME/debuginfod_client`,
//! else `~/.cache/debuginfod_client`, one directory per build id holding `debuginfo` or
//! `executable`), so a file one of them fetched serves the others.
//!
//! A failed query is remembered as elfutils remembers it — an empty file in place of the
//! artifact — for `cache_miss_s` seconds (a control file in the cache, 600 by
//! default), so a missing file is not asked for at every run. Downloads go to a temporary file
//! in the same directory and are renamed into place only once whole and only if their build
//! id is the one asked for. Every request has a connect timeout and a deadline for the whole
//! transfer, so a server that does not answer holds a recording's end up for seconds, not
//! minutes.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use object::Object;

/// How long to wait for a server to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a server may go without sending anything once it answered.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one download may take (`DEBUGINFOD_MAXTIME` sets another).
const MAX_TIME: Duration = Duration::from_secs(120);
/// How long a failed query is remembered unless the cache's `cache_miss_s` says otherwise.
const DEFAULT_CACHE_MISS: Duration = Duration::from_secs(600);

/// What can be fetched for a build id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// The separate debug file (DWARF, full symbol table).
    Debuginfo,
    /// The executable or library itself (for one that was deleted or replaced).
    Executable,
}

impl Artifact {
    fn name(self) -> &'static str {
        match self {
            Artifact::Debuginfo => "debuginfo",
            Artifact::Executable => "executable",
        }
    }
}

/// How one query went, for `-v` and the warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// In the cache already.
    Cached,
    /// Asked for recently and not found then: not asked again.
    RememberedMiss,
    /// Downloaded from `server`.
    Downloaded { server: String, bytes: u64 },
    /// No server has it.
    NotFound,
    /// No server answered usefully: the last error (which server, what happened).
    Failed { server: String, error: String },
}

/// One query: what was asked for, how it went and how long it took.
#[derive(Clone, Debug)]
pub struct Query {
    pub build_id: String,
    pub artifact: Artifact,
    /// The module it was for, as the process mapped it.
    pub module: String,
    pub outcome: Outcome,
    pub took: Duration,
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = format!(
            "{} of {} ({})",
            self.artifact.name(),
            self.module,
            self.build_id
        );
        let took = self.took.as_secs_f64();
        match &self.outcome {
            Outcome::Cached => write!(f, "{what}: in the cache"),
            Outcome::RememberedMiss => write!(f, "{what}: not found recently, not asked again"),
            Outcome::Downloaded { server, bytes } => write!(
                f,
                "{what}: fetched from {server}, {:.1} MB in {took:.2} s",
                *bytes as f64 / 1e6
            ),
            Outcome::NotFound => write!(f, "{what}: no server has it ({took:.2} s)"),
            Outcome::Failed { server, error } => {
                write!(f, "{what}: {server} failed ({error}) after {took:.2} s")
            }
        }
    }
}

/// A warning for each server that failed: which, why, and for how many modules.
pub fn failure_warnings(queries: &[Query]) -> Vec<String> {
    let mut by_server: std::collections::BTreeMap<&str, (usize, &str)> = Default::default();
    for q in queries {
        if let Outcome::Failed { server, error } = &q.outcome {
            by_server.entry(server).or_insert((0, error)).0 += 1;
        }
    }
    by_server
        .into_iter()
        .map(|(server, (n, error))| {
            format!(
                "debuginfod server {server} failed ({error}): {n} module(s) without their debug \
                 info, their frames show as FILE+0xADDR (it is asked again next time; \
                 --no-debuginfod not to ask)"
            )
        })
        .collect()
}

/// How long a request may take: to connect, for the server to answer, for the whole file.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub answer: Duration,
    pub whole: Duration,
}

/// Servers, the cache, and what was asked of them in this run.
#[derive(Debug)]
pub struct Debuginfod {
    urls: Vec<String>,
    cache: PathBuf,
    agent: ureq::Agent,
    max_time: Duration,
    max_size: Option<u64>,
    queries: Mutex<Vec<Query>>,
    /// Called as a download starts (a progress line where stderr is a terminal).
    progress: Option<fn(&str)>,
}

/// The servers `DEBUGINFOD_URLS` names (space-separated URL prefixes).
pub fn urls_from_env() -> Vec<String> {
    std::env::var("DEBUGINFOD_URLS")
        .unwrap_or_default()
        .split_whitespace()
        .map(|u| u.trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The cache directory elfutils' client uses, from the environment.
pub fn cache_dir_from_env() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(p) = var("DEBUGINFOD_CACHE_PATH") {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = var("XDG_CACHE_HOME") {
        return Some(Path::new(&x).join("debuginfod_client"));
    }
    let home = PathBuf::from(var("HOME")?);
    let old = home.join(".debuginfod_client_cache");
    if old.is_dir() {
        return Some(old);
    }
    Some(home.join(".cache").join("debuginfod_client"))
}

fn secs_from_env(name: &str) -> Option<Duration> {
    let s: u64 = std::env::var(name).ok()?.trim().parse().ok()?;
    (s > 0).then(|| Duration::from_secs(s))
}

impl Debuginfod {
    /// A client for the servers in `DEBUGINFOD_URLS`; `None` when it names none.
    pub fn from_env(progress: Option<fn(&str)>) -> Option<Debuginfod> {
        let urls = urls_from_env();
        if urls.is_empty() {
            return None;
        }
        Some(Debuginfod::new(urls, cache_dir_from_env()?, progress))
    }

    /// A client with the timeouts the environment asks for (`DEBUGINFOD_TIMEOUT` can shorten
    /// the waits for a connection and an answer, `DEBUGINFOD_MAXTIME` sets the whole-file
    /// deadline).
    pub fn new(urls: Vec<String>, cache: PathBuf, progress: Option<fn(&str)>) -> Debuginfod {
        let wait = secs_from_env("DEBUGINFOD_TIMEOUT");
        let timeouts = Timeouts {
            connect: wait.unwrap_or(CONNECT_TIMEOUT).min(CONNECT_TIMEOUT),
            answer: wait.unwrap_or(STALL_TIMEOUT).min(STALL_TIMEOUT),
            whole: secs_from_env("DEBUGINFOD_MAXTIME").unwrap_or(MAX_TIME),
        };
        Debuginfod::with_timeouts(urls, cache, progress, timeouts)
    }

    pub fn with_timeouts(
        urls: Vec<String>,
        cache: PathBuf,
        progress: Option<fn(&str)>,
        timeouts: Timeouts,
    ) -> Debuginfod {
        let Timeouts {
            connect,
            answer,
            whole: max_time,
        } = timeouts;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(connect))
            .timeout_recv_response(Some(answer))
            .timeout_recv_body(Some(max_time))
            .timeout_global(Some(max_time + answer))
            .http_status_as_error(false)
            .user_agent(format!("ember/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Debuginfod {
            urls,
            cache,
            agent,
            max_time,
            max_size: std::env::var("DEBUGINFOD_MAXSIZE")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|&n: &u64| n > 0),
            queries: Mutex::new(Vec::new()),
            progress,
        }
    }

    /// The servers asked, in order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Every query made so far.
    pub fn queries(&self) -> Vec<Query> {
        self.queries.lock().map(|q| q.clone()).unwrap_or_default()
    }

    /// The cached or downloaded `artifact` of `build_id` (for `module`), if a server has it.
    pub fn find(&self, build_id: &[u8], artifact: Artifact, module: &str) -> Option<PathBuf> {
        let started = Instant::now();
        let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
        let dir = self.cache.join(&hex);
        let target = dir.join(artifact.name());
        let (found, outcome) = match cache_state(&target, self.cache_miss()) {
            CacheState::Hit => (Some(target), Outcome::Cached),
            CacheState::RememberedMiss => (None, Outcome::RememberedMiss),
            CacheState::Absent => self.fetch(build_id, &hex, artifact, &dir, &target, module),
        };
        let query = Query {
            build_id: hex,
            artifact,
            module: module.to_string(),
            outcome,
            took: started.elapsed(),
        };
        if let Ok(mut q) = self.queries.lock() {
            q.push(query);
        }
        found
    }

    /// How long a failed query is remembered: the cache's `cache_miss_s`, written with the
    /// default when missing (as elfutils does).
    fn cache_miss(&self) -> Duration {
        let path = self.cache.join("cache_miss_s");
        match fs::read_to_string(&path) {
            Ok(s) => s
                .trim()
                .parse()
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_CACHE_MISS),
            Err(_) => {
                if fs::create_dir_all(&self.cache).is_ok() {
                    let _ = fs::write(&path, format!("{}\n", DEFAULT_CACHE_MISS.as_secs()));
                }
                DEFAULT_CACHE_MISS
            }
        }
    }

    /// Ask each server in turn; on success the file is in the cache.
    fn fetch(
        &self,
        build_id: &[u8],
        hex: &str,
        artifact: Artifact,
        dir: &Path,
        target: &Path,
        module: &str,
    ) -> (Option<PathBuf>, Outcome) {
        if fs::create_dir_all(dir).is_err() {
            return (
                None,
                Outcome::Failed {
                    server: String::new(),
                    error: format!("cannot create the cache directory {}", dir.display()),
                },
            );
        }
        let mut failure = None;
        for server in &self.urls {
            let url = format!("{server}/buildid/{hex}/{}", artifact.name());
            match self.download(&url, build_id, dir, target, module, server) {
                Ok(Some(bytes)) => {
                    let outcome = Outcome::Downloaded {
                        server: server.clone(),
                        bytes,
                    };
                    return (Some(target.to_path_buf()), outcome);
                }
                Ok(None) => {}
                Err(error) => {
                    failure = Some(Outcome::Failed {
                        server: server.clone(),
                        error,
                    })
                }
            }
        }
        match failure {
            Some(failed) => (None, failed),
            None => {
                remember_miss(target);
                (None, Outcome::NotFound)
            }
        }
    }

    /// One server: `Ok(Some(bytes))` once the file is in place, `Ok(None)` when the server
    /// does not have it, `Err` when it failed to say or sent something unusable.
    fn download(
        &self,
        url: &str,
        build_id: &[u8],
        dir: &Path,
        target: &Path,
        module: &str,
        server: &str,
    ) -> Result<Option<u64>, String> {
        let mut response = self.agent.get(url).call().map_err(|e| e.to_string())?;
        match response.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            code => return Err(format!("HTTP {code}")),
        }
        if let Some(say) = self.progress {
            say(&format!(
                "debuginfod: downloading the debug info of {module} from {server}"
            ));
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(".ember-download-")
            .tempfile_in(dir)
            .map_err(|e| format!("cannot write to the cache: {e}"))?;
        let limit = self.max_size.unwrap_or(u64::MAX);
        let mut body = response
            .body_mut()
            .with_config()
            .limit(limit)
            .reader()
            .take(limit);
        let bytes = copy_until(&mut body, tmp.as_file_mut(), Instant::now() + self.max_time)
            .map_err(|e| format!("download failed: {e}"))?;
        if !has_build_id(tmp.path(), build_id) {
            return Err("the file it sent has another build id".to_string());
        }
        let _ = tmp
            .as_file()
            .set_permissions(fs::Permissions::from_mode(0o644));
        tmp.persist(target)
            .map_err(|e| format!("cannot write to the cache: {e}"))?;
        Ok(Some(bytes))
    }
}

/// Copy `from` into `to` until the end, or fail once `deadline` passes.
fn copy_until(from: &mut impl Read, to: &mut fs::File, deadline: Instant) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "took too long"));
        }
        let n = from.read(&mut buf)?;
        if n == 0 {
            to.flush()?;
            return Ok(total);
        }
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn has_build_id(path: &Path, build_id: &[u8]) -> bool {
    let Ok(data) = fs::read(path) else {
        return false;
    };
    object::File::parse(&*data)
        .ok()
        .and_then(|f| f.build_id().ok().flatten().map(|id| id == build_id))
        .unwrap_or(false)
}

enum CacheState {
    Hit,
    RememberedMiss,
    Absent,
}

/// What the cache holds at `target`: the file, a remembered miss (an empty file younger than
/// `miss_ttl`), or nothing usable (an old miss is removed).
fn cache_state(target: &Path, miss_ttl: Duration) -> CacheState {
    let Ok(meta) = fs::metadata(target) else {
        return CacheState::Absent;
    };
    if meta.len() > 0 {
        return CacheState::Hit;
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::MAX);
    // elfutils marks a miss with an empty file (without permissions since 0.189).
    if age <= miss_ttl {
        return CacheState::RememberedMiss;
    }
    let _ = fs::remove_file(target);
    CacheState::Absent
}

/// Remember that no server has `target` (an empty file without permissions, as elfutils).
fn remember_miss(target: &Path) {
    let _ = fs::remove_file(target);
    if let Ok(f) = fs::File::create(target) {
        let _ = f.set_permissions(fs::Permissions::from_mode(0o000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_miss_expires_and_a_file_is_a_hit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("debuginfo");
        assert!(matches!(
            cache_state(&target, DEFAULT_CACHE_MISS),
            CacheState::Absent
        ));
        remember_miss(&target);
        assert!(matches!(
            cache_state(&target, DEFAULT_CACHE_MISS),
            CacheState::RememberedMiss
        ));
        // Forgotten at once with a zero time to remember (and removed).
        assert!(matches!(
            cache_state(&target, Duration::ZERO),
            CacheState::Absent
        ));
        assert!(!target.exists());
        fs::write(&target, b"\x7fELF").unwrap();
        assert!(matches!(
            cache_state(&target, DEFAULT_CACHE_MISS),
            CacheState::Hit
        ));
    }

    #[test]
    fn a_server_that_is_not_there_fails_fast_and_is_not_remembered() {
        let cache = tempfile::tempdir().unwrap();
        // A port nothing listens on: refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = Debuginfod::new(
            vec![format!("http://127.0.0.1:{port}")],
            cache.path().to_path_buf(),
            None,
        );
        let started = Instant::now();
        assert_eq!(
            client.find(&[0xab; 20], Artifact::Debuginfo, "libx.so"),
            None
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let q = client.queries();
        assert!(
            matches!(&q[0].outcome, Outcome::Failed { server, .. } if server.contains(&port.to_string())),
            "{q:?}"
        );
        // A failure to connect is not a miss: the next run asks again.
        let target = cache.path().join("ab".repeat(20)).join("debuginfo");
        assert!(!target.exists());
    }

    #[test]
    fn a_server_that_never_answers_is_given_up_on() {
        let cache = tempfile::tempdir().unwrap();
        // Accepts connections and says nothing.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        });
        let second = Duration::from_secs(1);
        let client = Debuginfod::with_timeouts(
            vec![format!("http://127.0.0.1:{port}")],
            cache.path().to_path_buf(),
            None,
            Timeouts {
                connect: second,
                answer: second,
                whole: second,
            },
        );
        let started = Instant::now();
        assert_eq!(
            client.find(&[0xcd; 20], Artifact::Debuginfo, "libx.so"),
            None
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(
            &client.queries()[0].outcome,
            Outcome::Failed { .. }
        ));
        silent.join().unwrap();
    }
}
