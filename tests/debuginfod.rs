//! End-to-end: debug info from a debuginfod server. A real server (elfutils' `debuginfod`)
//! serves the debug file of a stripped binary on a port of 127.0.0.1; ember records the
//! stripped binary with `DEBUGINFOD_URLS` pointing at it, caches what it fetched where
//! elfutils' client caches it, and finishes promptly when the server is gone.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `debuginfod -F DIR` on a free port of 127.0.0.1, stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Start it and wait until it serves `build_id`'s debug info.
    fn start(dir: &Path, db: &Path, build_id: &str) -> Server {
        let port = free_port();
        let child = Command::new("debuginfod")
            .arg("-F")
            .arg(dir)
            .args(["-p", &port.to_string(), "-d"])
            .arg(db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("debuginfod (Debian package debuginfod; scripts/test.sh installs it)");
        let server = Server { child, port };
        let url = format!("{}/buildid/{build_id}/debuginfo", server.url());
        let until = Instant::now() + Duration::from_secs(60);
        while get(&url) != Some(200) {
            assert!(Instant::now() < until, "debuginfod never served {url}");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests for debug info the server has answered so far (its own metrics).
    fn debuginfo_requests(&self) -> u64 {
        let body = ureq::get(format!("{}/metrics", self.url()))
            .call()
            .expect("metrics")
            .body_mut()
            .read_to_string()
            .unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix("http_requests_total{type=\"debuginfo\"} "))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn get(url: &str) -> Option<u16> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent.get(url).call().ok().map(|r| r.status().as_u16())
}

/// `ember record -v --lines -o DIR/out.folded -- CMD` with these debuginfod servers and cache.
fn record_with(dir: &Path, urls: &str, cache: &Path, cmd: &[&str]) -> (Vec<Stack>, Output) {
    let folded = dir.join("out.folded");
    let out = Command::new(EMBER)
        .args(["record", "--backend", "perf", "-v", "--lines", "-o"])
        .arg(&folded)
        .arg("--")
        .args(cmd)
        .env("DEBUGINFOD_URLS", urls)
        .env("DEBUGINFOD_CACHE_PATH", cache)
        .output()
        .expect("run ember");
    assert!(out.status.success(), "{out:?}");
    (read_folded(&folded), out)
}

/// The stripped binary and what its full build names, with the server's directory holding
/// only the debug file.
struct Binaries {
    stripped: PathBuf,
    build_id: String,
    reference: Vec<Stack>,
    served: PathBuf,
}

fn binaries(dir: &Path) -> Binaries {
    let full = build_shares(dir);
    let served = dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let stripped = dir.join("stripped");
    split_debug(&full, &served.join("shares.debug"), &stripped);
    let reference = record_folded(dir, &["--lines"], &[full.to_str().unwrap(), "1"]);
    Binaries {
        build_id: build_id_of(&full),
        stripped,
        reference,
        served,
    }
}

#[test]
fn a_debuginfod_server_names_a_stripped_binary_once_and_the_cache_is_shared() {
    let _serial = serial();
    let dir = scratch();
    let b = binaries(dir.path());
    let server = Server::start(&b.served, &dir.path().join("db.sqlite"), &b.build_id);
    let cache = dir.path().join("cache");
    let cmd = [b.stripped.to_str().unwrap(), "1"];

    // First run: fetched, and named with lines as the unstripped build.
    let (stacks, out) = record_with(dir.path(), &server.url(), &cache, &cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_named_with_lines(&stacks, "debuginfod");
    assert_eq!(hot_labels(&stacks), hot_labels(&b.reference), "{stderr}");
    assert!(
        stderr.contains(&format!("fetched from {}", server.url())),
        "{stderr}"
    );
    let cached = cache.join(&b.build_id).join("debuginfo");
    assert!(cached.is_file(), "nothing cached at {}", cached.display());

    // Second run: from the cache, no request.
    let before = server.debuginfo_requests();
    let (stacks, out) = record_with(dir.path(), &server.url(), &cache, &cmd);
    assert_named_with_lines(&stacks, "debuginfod, cached");
    assert_eq!(
        server.debuginfo_requests(),
        before,
        "asked the server again"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("in the cache"));

    // A file no server has: asked for once, then remembered as missing.
    let other = compile(
        "gcc",
        "shares.c",
        dir.path(),
        "other",
        &["-O1", "-Wl,--build-id"],
    );
    run_tool("strip", &[os("--strip-all"), os(&other)]);
    let other_cmd = [other.to_str().unwrap(), "0.3"];
    let (_, out) = record_with(dir.path(), &server.url(), &cache, &other_cmd);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server has it"));
    let before = server.debuginfo_requests();
    let (_, out) = record_with(dir.path(), &server.url(), &cache, &other_cmd);
    assert_eq!(
        server.debuginfo_requests(),
        before,
        "asked again for a missing file"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found recently"));

    // elfutils' own client finds what ember cached, without asking (the URL is dead)...
    let dead = format!("http://127.0.0.1:{}", free_port());
    let found = Command::new("debuginfod-find")
        .args(["debuginfo", &b.build_id])
        .env("DEBUGINFOD_URLS", &dead)
        .env("DEBUGINFOD_CACHE_PATH", &cache)
        .output()
        .expect("debuginfod-find");
    assert!(found.status.success(), "{found:?}");
    assert_eq!(
        String::from_utf8_lossy(&found.stdout).trim(),
        cached.to_str().unwrap()
    );
    // ... and ember finds what elfutils' client cached.
    let theirs = dir.path().join("their-cache");
    let fetched = Command::new("debuginfod-find")
        .args(["debuginfo", &b.build_id])
        .env("DEBUGINFOD_URLS", server.url())
        .env("DEBUGINFOD_CACHE_PATH", &theirs)
        .output()
        .expect("debuginfod-find");
    assert!(fetched.status.success(), "{fetched:?}");
    let (stacks, out) = record_with(dir.path(), &dead, &theirs, &cmd);
    assert_named_with_lines(&stacks, "elfutils' cache");
    assert!(String::from_utf8_lossy(&out.stderr).contains("in the cache"));
}

#[test]
fn a_server_that_is_gone_costs_seconds_and_says_so() {
    let _serial = serial();
    let dir = scratch();
    let b = binaries(dir.path());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cache = dir.path().join("cache");
    let started = Instant::now();
    let (stacks, out) = record_with(
        dir.path(),
        &dead,
        &cache,
        &[b.stripped.to_str().unwrap(), "0.5"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A hang guard, not a benchmark: a refused connection is immediate.
    assert!(started.elapsed() < Duration::from_secs(60), "{stderr}");
    assert_eq!(samples_with(&stacks, "hot_sixty"), 0);
    assert!(stacks
        .iter()
        .any(|s| s.frames.iter().any(|f| f.starts_with("stripped+0x"))));
    assert!(
        stderr.contains(&format!("debuginfod server {dead} failed")),
        "{stderr}"
    );
    // A server that did not answer is asked again next time (not remembered as a miss).
    assert!(!cache.join(&b.build_id).join("debuginfo").exists());

    // --no-debuginfod: not asked at all.
    let folded = dir.path().join("n.folded");
    let out = Command::new(EMBER)
        .args(["record", "--backend", "perf", "--no-debuginfod", "-o"])
        .arg(&folded)
        .args(["--", b.stripped.to_str().unwrap(), "0.3"])
        .env("DEBUGINFOD_URLS", &dead)
        .env("DEBUGINFOD_CACHE_PATH", &cache)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("debuginfod"));
}
