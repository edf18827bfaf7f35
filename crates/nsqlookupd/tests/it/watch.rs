//! `GET /lookup/watch?topic=T` (nsq-rs): Server-Sent Events of `/lookup`'s body, pushed as
//! producers come and go, read here from a raw socket as any SSE client would.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::TestLookupd;

/// Reads SSE events (`event:` + `data:` lines, blank-line separated) from a response.
struct Events {
    r: BufReader<TcpStream>,
}

impl Events {
    fn open(l: &TestLookupd, topic: &str) -> Events {
        let mut s = TcpStream::connect(l.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /lookup/watch?topic={topic} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let mut status = String::new();
        r.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut content_type = None;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-type:") {
                content_type = Some(v.trim().to_owned());
            }
        }
        assert_eq!(content_type.as_deref(), Some("text/event-stream"));
        Events { r }
    }

    /// The next `lookup` event's data (chunked transfer framing and comments skipped).
    fn next(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let (mut event, mut data) = (String::new(), String::new());
        loop {
            assert!(
                Instant::now() < deadline,
                "no lookup event within {within:?}"
            );
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("read from the stream");
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                assert_eq!(event, "lookup");
                return serde_json::from_str(&data).expect("JSON data");
            }
            // Anything else: chunk sizes, keep-alive comments.
        }
    }
}

fn producers(v: &Value) -> Vec<String> {
    v["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["broadcast_address"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn lookup_watch_pushes_producer_changes() {
    let l = TestLookupd::start(&[]);
    let mut ev = Events::open(&l, "t");
    // At once: the current state (an unknown topic is empty, not an error).
    assert_eq!(
        ev.next(Duration::from_secs(5)),
        json!({"channels": [], "producers": []})
    );

    let mut a = l.client();
    a.identify("node-a", 4150, 4151);
    let t0 = Instant::now();
    a.cmd("REGISTER t", "OK");
    let v = ev.next(Duration::from_secs(5));
    assert_eq!(producers(&v), ["node-a"]);
    // Pushed on the change, not at the next 1 s re-check.
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );

    let mut b = l.client();
    b.identify("node-b", 4150, 4151);
    b.cmd("REGISTER t ch", "OK");
    let v = ev.next(Duration::from_secs(5));
    assert_eq!(v["channels"], json!(["ch"]));
    let mut got = producers(&v);
    got.sort();
    assert_eq!(got, ["node-a", "node-b"]);

    // A producer that disconnects is gone from the next event.
    drop(a);
    let v = ev.next(Duration::from_secs(5));
    assert_eq!(producers(&v), ["node-b"]);

    // Tombstoning over HTTP is a change too.
    let r = l.http("POST", "/topic/tombstone?topic=t&node=node-b:4151");
    assert_eq!(r.status, 200);
    assert_eq!(
        producers(&ev.next(Duration::from_secs(5))),
        Vec::<String>::new()
    );

    // An open stream does not hold up a clean stop: it ends, and the daemon exits.
    let t = Instant::now();
    assert!(l.terminate().success());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(ev.r.get_mut(), &mut rest);
}

#[test]
fn lookup_watch_needs_a_valid_topic() {
    let l = TestLookupd::start(&[]);
    assert_eq!(l.http("GET", "/lookup/watch").status, 400);
    assert_eq!(l.http("GET", "/lookup/watch?topic=a%20b").status, 400);
}
