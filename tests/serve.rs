//! End-to-end: `ember serve`, Go's pprof endpoint, read by the real `go tool pprof` and by
//! plain HTTP clients.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use common::*;

/// A running `ember serve`, killed however the test ends.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    /// Start `ember serve ARGS` and wait until it says where it listens.
    fn start(args: &[&str]) -> Served {
        let mut child = Command::new(EMBER)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ember serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = String::new();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                panic!("ember serve ended before it listened:\n{said}");
            };
            said.push_str(&line);
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        // Keep reading what it says, so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Served { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Served {
    /// Wait for ember (and the command it serves) to end; what the command printed.
    fn output(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        let _ = self.child.wait();
        out
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The flat shares of `functions` in `go tool pprof -top` of `source` (a file or a URL).
fn pprof_shares(source: &str, home: &std::path::Path, functions: &[&str]) -> Vec<f64> {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-top",
            "-nodecount=20",
            "-sample_index=samples",
        ])
        .arg(source)
        .env("HOME", home)
        .output()
        .expect("`go` must be installed for this test (scripts/test.sh installs golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "go tool pprof {source} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    functions
        .iter()
        .map(|f| {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().last() == Some(*f))
                .unwrap_or_else(|| panic!("{f} not in pprof's top:\n{text}"));
            let flat = line.split_whitespace().nth(1).unwrap();
            flat.trim_end_matches('%').parse().unwrap()
        })
        .collect()
}

/// `go tool pprof URL` reads the endpoint as it reads a Go server's, and the shares are what
/// the program measured of itself.
#[test]
fn go_tool_pprof_reads_the_endpoint_with_the_programs_shares() {
    let _serial = serial();
    let dir = scratch();
    let exe = workload("shares", Build::NoFramePointers);
    let served = Served::start(&["--listen", "127.0.0.1:0", "--", exe.to_str().unwrap(), "4"]);
    let url = served.url("/debug/pprof/profile?seconds=2");
    let names = ["hot_sixty", "hot_thirty", "hot_ten"];
    let shares = pprof_shares(&url, dir.path(), &names);
    // What the program measured of its whole run (rounds of a few milliseconds, each with
    // the same shares: any two seconds of it).
    let truths = truths(&served.output());
    assert_eq!(truths.len(), 3, "the workload printed no truth");
    for (share, (name, want)) in shares.iter().zip(&truths) {
        let tolerance = share_tolerance(*want, 1500, 3.0);
        assert!(
            (share - want).abs() < tolerance,
            "{name}: {share} % in pprof, measured {want} %"
        );
    }
}

/// A raw HTTP GET: the status code and the body.
fn get(addr: &str, path: &str, headers: &[&str]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect to ember serve");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(&format!("{h}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    s.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response[split + 4..].to_vec())
}

/// Samples in a gzip'd pprof body.
fn samples_in(body: &[u8]) -> u64 {
    let p = ember::output::pprof::read(body).expect("a pprof profile");
    p.samples.iter().map(|s| s.count).sum()
}

/// Two clients at once share the sampling, each gets its own seconds; a client that hangs up
/// early costs the others nothing; wrong paths and lengths get a clear answer.
#[test]
fn concurrent_requests_share_one_session_and_a_client_may_hang_up() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let served = Served::start(&["--listen", "127.0.0.1:0", "--", exe.to_str().unwrap(), "8"]);
    // One that hangs up at once.
    let mut gone = TcpStream::connect(&served.addr).unwrap();
    gone.write_all(b"GET /debug/pprof/profile?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    drop(gone);
    let addr = served.addr.clone();
    let long = std::thread::spawn(move || get(&addr, "/debug/pprof/profile?seconds=3", &[]));
    let (status, short) = get(&served.addr, "/debug/pprof/profile?seconds=1", &[]);
    let (long_status, long) = long.join().unwrap();
    assert_eq!((status, long_status), (200, 200));
    let (a, b) = (samples_in(&short), samples_in(&long));
    // The workload's one busy thread at 999 Hz: about 1,000 and 3,000 samples where it had a
    // CPU; the longer has more, whatever the machine's load.
    assert!(a > 100 && b > a, "{a} and {b} samples");
    assert_eq!(get(&served.addr, "/metrics", &[]).0, 404);
    assert_eq!(
        get(&served.addr, "/debug/pprof/profile?seconds=x", &[]).0,
        400
    );
}

/// Programs that start and end during a request are named in its profile (the recording
/// lets go of their files once they end; the names are kept while a request may need them).
#[test]
fn programs_that_come_and_go_are_named_in_the_profile_that_spans_them() {
    let _serial = serial();
    let exe = workload("shares", Build::NoFramePointers);
    let dir = scratch();
    let script = format!(
        "for i in 1 2 3 4 5; do cp {exe} {d}/new$i && {d}/new$i 0.6 && rm {d}/new$i; done",
        exe = exe.display(),
        d = dir.path().display()
    );
    let served = Served::start(&["--listen", "127.0.0.1:0", "--", "sh", "-c", &script]);
    let (status, body) = get(&served.addr, "/debug/pprof/profile?seconds=3", &[]);
    assert_eq!(status, 200);
    let profile = ember::output::pprof::read(&body).expect("a pprof profile");
    let names: Vec<&str> = profile.functions.iter().map(|f| f.name.as_str()).collect();
    assert!(names.contains(&"hot_sixty"), "{names:?}");
    let unnamed: Vec<&&str> = names
        .iter()
        .filter(|n| n.starts_with("new") && n.contains("+0x"))
        .collect();
    assert!(unnamed.is_empty(), "{unnamed:?}");
}

/// Off loopback a token is required: without one ember refuses to start; with one, requests
/// without it are refused.
#[test]
fn other_addresses_need_a_token() {
    let _serial = serial();
    let out = ember(&["serve", "--listen", "0.0.0.0:0", "--", "sleep", "1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("token"), "{stderr}");
    let exe = workload("shares", Build::NoFramePointers);
    let served = Served::start(&[
        "--listen",
        "0.0.0.0:0",
        "--token",
        "s3cret",
        "--",
        exe.to_str().unwrap(),
        "5",
    ]);
    let port = served.addr.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    let path = "/debug/pprof/profile?seconds=1";
    assert_eq!(get(&local, path, &[]).0, 401);
    assert_eq!(get(&local, path, &["Authorization: Bearer wrong"]).0, 401);
    let (status, body) = get(&local, path, &["Authorization: Bearer s3cret"]);
    assert_eq!(status, 200);
    assert!(samples_in(&body) > 0);
}
