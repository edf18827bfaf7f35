//! Test harness: runs the real `nsqlookupd` binary on free loopback ports and talks to it
//! over plain std sockets (a raw lookup V1 client and a tiny HTTP/1.1 client).
//!
//! Rules: never sleep to wait for something, poll with a deadline ([`wait_until`]); every
//! blocking read has a timeout; the server's log lines are echoed to the test's stderr with a
//! `[nsqlookupd <pid>]` prefix so a failing test shows what the server said.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long `start` waits for both "listening on" lines.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Read timeout for the raw clients.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nsqlookupd")
}

/// Polls `cond` every 10 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A running `nsqlookupd` child process, killed on drop.
pub struct TestLookupd {
    child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

fn parse_listen(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl TestLookupd {
    /// Starts nsqlookupd on `127.0.0.1:0` for TCP and HTTP, plus `extra_args`.
    pub fn start(extra_args: &[&str]) -> TestLookupd {
        let mut cmd = Command::new(bin());
        cmd.arg("--tcp-address=127.0.0.1:0")
            .arg("--http-address=127.0.0.1:0")
            .args(extra_args);
        Self::spawn(cmd)
    }

    /// Starts nsqlookupd with exactly `args` (they must pick the listen addresses).
    pub fn start_raw(args: &[&str]) -> TestLookupd {
        let mut cmd = Command::new(bin());
        cmd.args(args);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> TestLookupd {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn nsqlookupd");
        let pid = child.id();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let stderr = child.stderr.take().expect("stderr piped");
        let logs2 = logs.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                        eprintln!("[nsqlookupd {pid}] {line}");
                        logs2.lock().unwrap().push(line.clone());
                        let _ = tx.send(Some(line));
                    }
                }
            }
            let _ = tx.send(None);
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (mut tcp, mut http) = (None, None);
        while tcp.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(line)) => {
                    tcp = tcp.or_else(|| parse_listen(&line, "TCP: listening on "));
                    http = http.or_else(|| parse_listen(&line, "HTTP: listening on "));
                }
                Ok(None) => {
                    let status = child.wait().ok();
                    panic!("nsqlookupd exited before listening ({status:?})");
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nsqlookupd did not report its listeners within {STARTUP_TIMEOUT:?}");
                }
            }
        }
        TestLookupd {
            child,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
            logs,
        }
    }

    /// A V1 client that has sent the magic.
    pub fn client(&self) -> V1Client {
        V1Client::connect(self.tcp)
    }

    /// An HTTP request to this lookupd.
    pub fn http(&self, method: &str, path: &str) -> HttpResponse {
        http_request(self.http, method, path)
    }

    /// `GET path`, expecting 200 JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.http("GET", path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("GET {path}: {e}: {}", r.body))
    }

    /// The `remote_address`es of `/lookup?topic=` producers (empty if not found).
    pub fn lookup_producers(&self, topic: &str) -> Vec<String> {
        let r = self.http(
            "GET",
            &format!("/lookup?topic={}", topic.replace('#', "%23")),
        );
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        v["producers"]
            .as_array()
            .expect("producers array")
            .iter()
            .map(|p| p["remote_address"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "nsqlookupd did not exit on SIGTERM"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestLookupd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw lookup protocol V1 client.
pub struct V1Client {
    pub stream: TcpStream,
}

impl V1Client {
    /// Connects and sends the magic.
    pub fn connect(addr: SocketAddr) -> V1Client {
        let mut c = V1Client::connect_raw(addr);
        c.write(b"  V1");
        c
    }

    /// Connects without sending anything.
    pub fn connect_raw(addr: SocketAddr) -> V1Client {
        let stream = TcpStream::connect(addr).expect("connect to lookupd");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        V1Client { stream }
    }

    /// This connection's local address (the peer id lookupd uses).
    pub fn local_addr(&self) -> String {
        self.stream.local_addr().unwrap().to_string()
    }

    pub fn write(&mut self, b: &[u8]) {
        self.stream.write_all(b).expect("write to lookupd");
    }

    /// Reads one `[size][data]` response.
    pub fn read(&mut self) -> Vec<u8> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .expect("read response size");
        let mut data = vec![0u8; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut data).expect("read response");
        data
    }

    /// Reads one response as text.
    pub fn read_text(&mut self) -> String {
        String::from_utf8(self.read()).expect("utf-8 response")
    }

    /// Sends a command line and expects `expected` back.
    #[track_caller]
    pub fn cmd(&mut self, line: &str, expected: &str) {
        self.write(format!("{line}\n").as_bytes());
        assert_eq!(self.read_text(), expected, "response to {line:?}");
    }

    /// Sends IDENTIFY with `body`; returns the response.
    pub fn identify_raw(&mut self, body: &[u8]) -> String {
        let mut b = b"IDENTIFY\n".to_vec();
        b.extend_from_slice(&(body.len() as u32).to_be_bytes());
        b.extend_from_slice(body);
        self.write(&b);
        self.read_text()
    }

    /// IDENTIFY as an nsqd with this broadcast address and ports; returns the parsed response.
    pub fn identify(&mut self, broadcast: &str, tcp_port: u16, http_port: u16) -> Value {
        let body = serde_json::json!({
            "broadcast_address": broadcast,
            "hostname": "test-host",
            "http_port": http_port,
            "tcp_port": tcp_port,
            "topology_region": "",
            "topology_zone": "",
            "version": "1.3.0",
        });
        let resp = self.identify_raw(body.to_string().as_bytes());
        serde_json::from_str(&resp).unwrap_or_else(|e| panic!("IDENTIFY response {resp:?}: {e}"))
    }

    /// Asserts the server closed the connection (EOF or reset, not a timeout).
    #[track_caller]
    pub fn expect_closed(&mut self) {
        let mut b = [0u8; 64];
        match self.stream.read(&mut b) {
            Ok(0) => {}
            Ok(n) => panic!("expected close, got {:?}", String::from_utf8_lossy(&b[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("expected close, got {e}"),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`, read to EOF.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let raw = http_raw(
        addr,
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/vnd.nsq; version=1.0\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    parse_http(&raw)
}

/// Sends `bytes` to the HTTP port and returns everything read until EOF.
pub fn http_raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to HTTP");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read HTTP response");
    out
}

fn parse_http(raw: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}
