//! End-to-end: `ember record --push`, each window's pprof sent to a Pyroscope `/ingest`, checked
//! by a receiver here that takes the request as Pyroscope's documentation describes it.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;

/// One request as received: its method, path, query pairs and body.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn param(&self, key: &str) -> &str {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.query))
    }
}

/// A receiver on a free port, keeping every request; answers 200.
fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut parts = line.split_whitespace();
            let (method, target) = (parts.next().unwrap().to_string(), parts.next().unwrap());
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let mut length = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).unwrap();
            let query = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), decode(v)))
                .collect();
            keep.lock().unwrap().push(Received {
                method,
                path: path.to_string(),
                query,
                body,
            });
            let mut stream = reader.into_inner();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, got)
}

/// Percent-decoding of a query value.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(if b[i] == b'+' { b' ' } else { b[i] });
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `ember record ARGS --every 1` of testdata/shares.c for `seconds`, windows written in `dir`.
fn record_pushing(dir: &std::path::Path, args: &[&str], seconds: &str) -> std::process::Output {
    let folded = dir.join("w.folded");
    let exe = workload("shares", Build::NoFramePointers);
    let mut all = args.to_vec();
    all.extend(["--every", "1", "-o", folded.to_str().unwrap(), "--"]);
    all.extend([exe.to_str().unwrap(), seconds]);
    record_ok(&all)
}

/// Every window goes to `/ingest` as Pyroscope documents it, and the windows add up to the
/// recording.
#[test]
fn each_window_is_pushed_as_pyroscope_takes_it() {
    let _serial = serial();
    let (url, got) = receiver();
    let dir = scratch();
    let out = record_pushing(
        dir.path(),
        &["--push", &url, "--push-name", "shares.cpu{env=test}"],
        "2.5",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let got = got.lock().unwrap();
    assert!(got.len() >= 3, "{} windows pushed\n{stderr}", got.len());
    let mut pushed = 0;
    let mut last_until = 0;
    for r in got.iter() {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/ingest"));
        assert_eq!(r.param("name"), "shares.cpu{env=test}");
        assert_eq!(r.param("format"), "pprof");
        assert_eq!(r.param("sampleRate"), "999");
        let (from, until): (u64, u64) = (
            r.param("from").parse().unwrap(),
            r.param("until").parse().unwrap(),
        );
        assert!(
            from <= until && from + 1 >= last_until,
            "{from}..{until} after {last_until}"
        );
        last_until = until;
        let p = ember::output::pprof::read(&r.body).expect("a pprof body");
        pushed += p.samples.iter().map(|s| s.count).sum::<u64>();
    }
    // The summary's count is the whole recording's.
    let total: u64 = stderr
        .split(" samples")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in\n{stderr}"));
    assert_eq!(pushed, total, "{stderr}");
    assert!(
        stderr.contains(&format!("pushed {} windows", got.len())),
        "{stderr}"
    );
}

/// A server that is not there costs the recording nothing: every sample is taken, the outputs
/// are written, and ember says what it could not send.
#[test]
fn a_dead_server_loses_no_sample_and_is_said() {
    let _serial = serial();
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = scratch();
    let url = format!("http://127.0.0.1:{port}");
    let out = record_pushing(dir.path(), &["--push", &url], "2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(0 lost)"), "{stderr}");
    assert!(
        stderr.contains("pushed 0 windows") && stderr.contains("could not be sent"),
        "{stderr}"
    );
    // Each window written as a file of its own all the same.
    let windows = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(windows >= 2, "{windows} windows written\n{stderr}");
}
