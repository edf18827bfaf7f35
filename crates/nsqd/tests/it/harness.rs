//! Test harness: runs the real `nsqd` binary on free loopback ports and talks to it over
//! plain std sockets (a raw V2 client and a tiny HTTP/1.1 client).
//!
//! Rules the helpers follow (and tests using them should too):
//! - never sleep to wait for something: poll with a deadline ([`wait_until`]);
//! - every blocking read has a timeout, so a broken server fails a test instead of hanging it;
//! - the server's log lines are kept ([`TestNsqd::logs`]) and echoed to the test's stderr with
//!   a `[nsqd <pid>]` prefix, so a failing test shows what the server said.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use nsq_protocol::frame::decode_frame;
use nsq_protocol::{Frame, FrameType, Message, MessageId};

/// How long `start` waits for both "listening on" lines.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `terminate` waits for the process to exit after SIGTERM.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// Default timeout for reads in the `expect_*` helpers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout for one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the `nsqd` binary under test (built by cargo for integration tests).
pub fn nsqd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nsqd"))
}

/// Go nsqd 1.3.0 from `../shared/reference/` beside the repository, if it is there (CI has
/// it; a bare clone does not, and tests that need it say so and count as not run).
pub fn go_nsqd_bin() -> Option<PathBuf> {
    let p = workspace_root().join("../shared/reference/go-nsq-1.3.0-linux-amd64/nsqd");
    p.is_file().then_some(p)
}

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
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

/// Like [`wait_until`] but the closure returns `Some(value)` when done.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// Two loopback addresses (TCP, HTTP) that nothing listens on right now.
fn free_ports() -> (SocketAddr, SocketAddr) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (a.local_addr().unwrap(), b.local_addr().unwrap())
}

/// A running `nsqd` child process with its own data directory.
pub struct TestNsqd {
    child: Option<Child>,
    pid: u32,
    tcp: SocketAddr,
    http: SocketAddr,
    data_path: PathBuf,
    /// Owned temporary data dir (None when the caller supplied the path).
    tempdir: Option<tempfile::TempDir>,
    logs: Arc<Mutex<Vec<String>>>,
    extra_args: Vec<String>,
}

enum LogEvent {
    Line(String),
    Eof,
}

/// Extracts the address after `marker` in a log line ("TCP: listening on 127.0.0.1:1234").
fn parse_listen(line: &str, marker: &str) -> Option<SocketAddr> {
    let clean = strip_ansi(line);
    let idx = clean.find(marker)?;
    let rest = &clean[idx + marker.len()..];
    let token: String = rest
        .trim_start()
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'' && *c != ',')
        .collect();
    token.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c2 in chars.by_ref() {
                    if c2.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

fn spawn_log_reader(
    stream: impl Read + Send + 'static,
    prefix: String,
    logs: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<LogEvent>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    eprintln!("{prefix} {line}");
                    logs.lock().unwrap().push(line.clone());
                    let _ = tx.send(LogEvent::Line(line));
                }
            }
        }
        let _ = tx.send(LogEvent::Eof);
    });
}

impl TestNsqd {
    /// Starts nsqd on `127.0.0.1:0` (TCP and HTTP) with a fresh temporary data dir, plus
    /// `extra_args` (Go-style flags, e.g. `"--msg-timeout=1s"`). Panics (with the server's
    /// output) if it does not report both listening addresses within [`STARTUP_TIMEOUT`].
    pub fn start(extra_args: &[&str]) -> TestNsqd {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-it-")
            .tempdir()
            .expect("create temp data dir");
        let path = dir.path().to_path_buf();
        let mut n = Self::spawn(&path, extra_args);
        n.tempdir = Some(dir);
        n
    }

    /// Starts nsqd using an existing data directory (not deleted on drop).
    pub fn start_in(data_path: &Path, extra_args: &[&str]) -> TestNsqd {
        Self::spawn(data_path, extra_args)
    }

    /// Starts another nsqd binary (e.g. Go nsqd 1.3.0, see [`go_nsqd_bin`]) the same way.
    pub fn start_bin(bin: &Path, data_path: &Path, extra_args: &[&str]) -> TestNsqd {
        Self::spawn_bin(bin, data_path, extra_args)
    }

    /// Starts nsqd like [`TestNsqd::start`] when its log level hides the INFO "listening on"
    /// lines (`--log-level=warn`): the test picks free ports itself and waits until `/ping`
    /// answers. (A port taken by someone else in between fails the start; rare on loopback.
    /// [`TestNsqd::restart`] goes back to `127.0.0.1:0` and the log lines.)
    pub fn start_quiet(extra_args: &[&str]) -> TestNsqd {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-it-")
            .tempdir()
            .expect("create temp data dir");
        let ports = free_ports();
        let mut n = Self::spawn_bin_at(&nsqd_bin(), dir.path(), extra_args, Some(ports));
        n.tempdir = Some(dir);
        n
    }

    fn spawn(data_path: &Path, extra_args: &[&str]) -> TestNsqd {
        Self::spawn_bin(&nsqd_bin(), data_path, extra_args)
    }

    fn spawn_bin(bin: &Path, data_path: &Path, extra_args: &[&str]) -> TestNsqd {
        Self::spawn_bin_at(bin, data_path, extra_args, None)
    }

    /// `ports`: listen there and wait for `/ping` instead of the "listening on" log lines.
    fn spawn_bin_at(
        bin: &Path,
        data_path: &Path,
        extra_args: &[&str],
        ports: Option<(SocketAddr, SocketAddr)>,
    ) -> TestNsqd {
        let (tcp_arg, http_arg) = match ports {
            Some((t, h)) => (format!("--tcp-address={t}"), format!("--http-address={h}")),
            None => (
                "--tcp-address=127.0.0.1:0".to_string(),
                "--http-address=127.0.0.1:0".to_string(),
            ),
        };
        let mut cmd = Command::new(bin);
        cmd.arg(tcp_arg)
            .arg(http_arg)
            .arg(format!("--data-path={}", data_path.display()))
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        let pid = child.id();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let prefix = format!("[nsqd {pid}]");
        spawn_log_reader(
            child.stderr.take().expect("stderr piped"),
            prefix.clone(),
            logs.clone(),
            tx.clone(),
        );
        spawn_log_reader(
            child.stdout.take().expect("stdout piped"),
            format!("{prefix} (stdout)"),
            logs.clone(),
            tx,
        );

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut tcp = None;
        let mut http = None;
        let mut eofs = 0;
        let mut failure: Option<String> = None;
        if let Some((t, h)) = ports {
            loop {
                if try_http_request(h, "GET", "/ping", b"").is_ok_and(|r| r.status == 200) {
                    (tcp, http) = (Some(t), Some(h));
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    failure = Some(format!("nsqd exited before it was ready (status {status})"));
                    break;
                }
                if Instant::now() >= deadline {
                    failure = Some(format!(
                        "nsqd did not answer /ping within {STARTUP_TIMEOUT:?}"
                    ));
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        while failure.is_none() && (tcp.is_none() || http.is_none()) {
            let now = Instant::now();
            if now >= deadline {
                failure = Some(format!(
                    "nsqd did not report both listening addresses within {STARTUP_TIMEOUT:?}"
                ));
                break;
            }
            match rx.recv_timeout(deadline - now) {
                Ok(LogEvent::Line(line)) => {
                    if tcp.is_none() {
                        tcp = parse_listen(&line, "TCP: listening on");
                    }
                    if http.is_none() {
                        http = parse_listen(&line, "HTTP: listening on");
                    }
                }
                Ok(LogEvent::Eof) => {
                    eofs += 1;
                    if eofs == 2 {
                        // Both pipes closed: the process is exiting; reap it (bounded).
                        let reap_deadline = Instant::now() + Duration::from_secs(2);
                        let status = loop {
                            match child.try_wait() {
                                Ok(Some(st)) => break Some(st),
                                Ok(None) if Instant::now() < reap_deadline => {
                                    thread::sleep(Duration::from_millis(10))
                                }
                                _ => break None,
                            }
                        };
                        failure = Some(format!(
                            "nsqd exited before it was ready (status {status:?})"
                        ));
                        break;
                    }
                }
                Err(_) => {}
            }
        }
        if let Some(msg) = failure {
            let _ = child.kill();
            let _ = child.wait();
            let logs = logs.lock().unwrap().join("\n");
            panic!(
                "{msg}\ncommand: {cmd:?}\n--- nsqd output ---\n{logs}\n--- end of nsqd output ---"
            );
        }
        TestNsqd {
            child: Some(child),
            pid,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
            data_path: data_path.to_path_buf(),
            tempdir: None,
            logs,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Stops this process if it still runs (SIGKILL) and starts a new one on the same data
    /// path (fresh ports), with `extra_args` (use `None` to reuse the previous arguments).
    pub fn restart(&mut self, extra_args: Option<&[&str]>) {
        if self.is_running() {
            self.kill();
        }
        let args: Vec<String> = match extra_args {
            Some(a) => a.iter().map(|s| s.to_string()).collect(),
            None => self.extra_args.clone(),
        };
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let mut fresh = Self::spawn(&self.data_path, &refs);
        // Keep owning the temp dir across restarts.
        fresh.tempdir = self.tempdir.take();
        let old = std::mem::replace(self, fresh);
        drop(old);
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The data directory.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// All log lines so far (stderr and stdout).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`; returns it.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        wait_for(
            timeout,
            &format!("nsqd log line containing {needle:?}"),
            || {
                self.logs
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.contains(needle))
                    .cloned()
            },
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("nsqd already stopped");
        let _ = child.kill();
        child.wait().expect("wait for nsqd")
    }

    /// SIGTERM and wait (bounded by [`SHUTDOWN_TIMEOUT`]; panics with the logs if it does not
    /// exit in time, after killing it).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(SHUTDOWN_TIMEOUT)
    }

    /// Sends a signal by name (e.g. "TERM", "INT") via the `kill` utility (no unsafe code).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid.to_string())
            .status()
            .or_else(|_| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("kill -{name} {}", self.pid))
                    .status()
            })
            .expect("run kill");
        assert!(status.success(), "kill -{name} {} failed", self.pid);
    }

    /// Waits (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("nsqd already stopped");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                panic!(
                    "nsqd (pid {}) did not exit within {timeout:?}\n--- nsqd output ---\n{}",
                    self.pid,
                    self.logs().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Opens a raw V2 client (magic sent).
    pub fn client(&self) -> RawClient {
        RawClient::connect(self.tcp)
    }

    /// `GET path` (path includes the query string).
    pub fn http_get(&self, path: &str) -> HttpResponse {
        http_request(self.http, "GET", path, &[])
    }

    /// `POST path` with `body`.
    pub fn http_post(&self, path: &str, body: &[u8]) -> HttpResponse {
        http_request(self.http, "POST", path, body)
    }

    /// Any method.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> HttpResponse {
        http_request(self.http, method, path, body)
    }

    /// `GET /stats?format=json` parsed (extra query appended, e.g. `"&topic=t"`).
    pub fn stats(&self, extra_query: &str) -> serde_json::Value {
        let r = self.http_get(&format!("/stats?format=json{extra_query}"));
        assert_eq!(r.status, 200, "GET /stats: {r:?}");
        r.json()
    }

    /// The stats object of one channel (None if topic or channel absent).
    pub fn channel_stats(&self, topic: &str, channel: &str) -> Option<serde_json::Value> {
        let s = self.stats("");
        find_channel(&s, topic, channel)
    }

    /// The stats object of one topic (None if absent).
    pub fn topic_stats(&self, topic: &str) -> Option<serde_json::Value> {
        let s = self.stats("");
        find_topic(&s, topic)
    }
}

/// Finds a topic in a `/stats?format=json` document.
pub fn find_topic(stats: &serde_json::Value, topic: &str) -> Option<serde_json::Value> {
    stats["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)
        .cloned()
}

/// Finds a channel in a `/stats?format=json` document.
pub fn find_channel(
    stats: &serde_json::Value,
    topic: &str,
    channel: &str,
) -> Option<serde_json::Value> {
    find_topic(stats, topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == channel)
        .cloned()
}

impl Drop for TestNsqd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiny HTTP/1.1 client
// ---------------------------------------------------------------------------------------------

/// A complete HTTP response.
#[derive(Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names as received; look up with [`HttpResponse::header`] (case-insensitive).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }

    /// `(status, headers, body)`.
    pub fn into_parts(self) -> (u16, Vec<(String, String)>, Vec<u8>) {
        (self.status, self.headers, self.body)
    }
}

impl std::fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.text())
            .finish()
    }
}

/// One request over a fresh connection (`Connection: close`), bounded by [`HTTP_TIMEOUT`].
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    try_http_request(addr, method, path, body)
        .unwrap_or_else(|e| panic!("HTTP {method} {path} to {addr} failed: {e}"))
}

/// Like [`http_request`] but returns I/O errors.
pub fn try_http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> io::Result<HttpResponse> {
    try_http_request_with(addr, method, path, &[], body)
}

/// Like [`try_http_request`], with extra request headers.
pub fn try_http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    s.set_read_timeout(Some(HTTP_TIMEOUT))?;
    s.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: application/vnd.nsq; version=1.0\r\n{extra}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut raw = Vec::new();
    let deadline = Instant::now() + HTTP_TIMEOUT;
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&chunk[..n]);
                // Stop early once a Content-Length-delimited response is complete
                // (servers may keep the socket open despite Connection: close).
                if let Some(done) = response_complete(&raw) {
                    if done {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if response_complete(&raw) == Some(true) {
                    break;
                }
                return Err(e);
            }
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "HTTP response timeout",
            ));
        }
    }
    parse_http_response(&raw, method == "HEAD")
}

fn find_header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Some(true) when a response with Content-Length (or chunked terminator) is complete.
fn response_complete(raw: &[u8]) -> Option<bool> {
    let end = find_header_end(raw)?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("content-length:") {
            let n: usize = v.trim().parse().ok()?;
            return Some(raw.len() >= end + n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return Some(raw[end..].ends_with(b"0\r\n\r\n"));
        }
    }
    None
}

fn parse_http_response(raw: &[u8], head_only: bool) -> io::Result<HttpResponse> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let end = find_header_end(raw).ok_or_else(|| {
        bad(&format!(
            "incomplete HTTP response: {:?}",
            String::from_utf8_lossy(raw)
        ))
    })?;
    let head = String::from_utf8_lossy(&raw[..end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let rest = &raw[end..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let body = if head_only {
        Vec::new()
    } else if chunked {
        decode_chunked(rest).ok_or_else(|| bad("bad chunked body"))?
    } else if let Some(len) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
    {
        if rest.len() < len {
            return Err(bad("truncated HTTP body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn decode_chunked(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_str = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Raw V2 client
// ---------------------------------------------------------------------------------------------

/// A blocking V2 protocol client for tests. Command methods only *send*; read the reply with
/// `read_frame` / `expect_*`. Heartbeats are answered with `NOP` and skipped by the readers
/// unless `answer_heartbeats` is set to false (then they are returned like any frame).
pub struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
    /// When true (default), `_heartbeat_` frames are answered with NOP and not returned.
    pub answer_heartbeats: bool,
    /// Number of heartbeats answered so far.
    pub heartbeats_seen: usize,
}

/// The largest frame a test client accepts.
const MAX_FRAME: usize = 64 << 20;

impl RawClient {
    /// Connects and sends the `"  V2"` magic.
    pub fn connect(addr: SocketAddr) -> RawClient {
        let mut c = RawClient::connect_no_magic(addr);
        c.send_raw(nsq_protocol::MAGIC_V2);
        c
    }

    /// Connects and sends the magic, returning errors instead of panicking (for tests that
    /// connect while the server may be restarting).
    pub fn try_connect(addr: SocketAddr) -> io::Result<RawClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut c = RawClient {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            answer_heartbeats: true,
            heartbeats_seen: 0,
        };
        c.try_send_raw(nsq_protocol::MAGIC_V2)?;
        Ok(c)
    }

    /// Connects without sending anything.
    pub fn connect_no_magic(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to nsqd at {addr}: {e}"));
        stream.set_nodelay(true).ok();
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        RawClient {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            answer_heartbeats: true,
            heartbeats_seen: 0,
        }
    }

    /// The underlying socket (e.g. for `local_addr`).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to nsqd: {e}"));
    }

    /// Writes bytes, returning the I/O error instead of panicking.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send_line(&mut self, line: &str) {
        let mut b = Vec::with_capacity(line.len() + 1);
        b.extend_from_slice(line.as_bytes());
        b.push(b'\n');
        self.send_raw(&b);
    }

    fn send_with_body(&mut self, line: &str, body: &[u8]) {
        let mut b = BytesMut::with_capacity(line.len() + 5 + body.len());
        b.put_slice(line.as_bytes());
        b.put_u8(b'\n');
        b.put_u32(body.len() as u32);
        b.put_slice(body);
        self.send_raw(&b);
    }

    /// `IDENTIFY` with a JSON body (sends only).
    pub fn identify(&mut self, json: &serde_json::Value) {
        let body = serde_json::to_vec(json).unwrap();
        self.send_with_body("IDENTIFY", &body);
    }

    /// `IDENTIFY` with `feature_negotiation: true` merged in; reads and returns the JSON reply.
    pub fn identify_negotiate(&mut self, json: &serde_json::Value) -> serde_json::Value {
        let mut obj = json.as_object().cloned().unwrap_or_default();
        obj.insert("feature_negotiation".into(), serde_json::Value::Bool(true));
        self.identify(&serde_json::Value::Object(obj));
        self.read_json()
    }

    /// `AUTH` with a secret (sends only).
    pub fn auth(&mut self, secret: &[u8]) {
        self.send_with_body("AUTH", secret);
    }

    /// `SUB topic channel` (sends only).
    pub fn sub(&mut self, topic: &str, channel: &str) {
        self.send_line(&format!("SUB {topic} {channel}"));
    }

    /// `RDY n`.
    pub fn rdy(&mut self, n: u64) {
        self.send_line(&format!("RDY {n}"));
    }

    /// `PUB topic` (sends only).
    pub fn publish(&mut self, topic: &str, body: &[u8]) {
        self.send_with_body(&format!("PUB {topic}"), body);
    }

    /// `MPUB topic` (sends only).
    pub fn mpub<B: AsRef<[u8]>>(&mut self, topic: &str, bodies: &[B]) {
        let mut b = BytesMut::new();
        nsq_protocol::command::encode_mpub(&mut b, topic, bodies);
        self.send_raw(&b);
    }

    /// `DPUB topic defer_ms` (sends only).
    pub fn dpub(&mut self, topic: &str, defer_ms: u64, body: &[u8]) {
        self.send_with_body(&format!("DPUB {topic} {defer_ms}"), body);
    }

    /// `FIN id`.
    pub fn fin(&mut self, id: &MessageId) {
        self.send_line(&format!("FIN {id}"));
    }

    /// `REQ id ms`.
    pub fn req(&mut self, id: &MessageId, ms: u64) {
        self.send_line(&format!("REQ {id} {ms}"));
    }

    /// `TOUCH id`.
    pub fn touch(&mut self, id: &MessageId) {
        self.send_line(&format!("TOUCH {id}"));
    }

    /// `CLS`.
    pub fn cls(&mut self) {
        self.send_line("CLS");
    }

    /// `NOP`.
    pub fn nop(&mut self) {
        self.send_line("NOP");
    }

    /// `PUB` + expect `OK`.
    pub fn pub_ok(&mut self, topic: &str, body: &[u8]) {
        self.publish(topic, body);
        self.expect_ok();
    }

    /// `SUB` + expect `OK` + `RDY rdy`.
    pub fn sub_ok(&mut self, topic: &str, channel: &str, rdy: u64) {
        self.sub(topic, channel);
        self.expect_ok();
        if rdy > 0 {
            self.rdy(rdy);
        }
    }

    /// Reads one frame. `Ok(None)` on timeout; `Err` on EOF (`UnexpectedEof`) or socket error.
    pub fn try_read_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        let deadline = Instant::now() + timeout;
        loop {
            match decode_frame(&mut self.buf, MAX_FRAME) {
                Ok(Some(f)) => {
                    if self.answer_heartbeats && f.is_heartbeat() {
                        self.heartbeats_seen += 1;
                        self.try_send_raw(b"NOP\n")?;
                        continue;
                    }
                    return Ok(Some(f));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad frame from nsqd: {e:?}"),
                    ))
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by nsqd",
                    ))
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one frame or panics (timeout, EOF, error).
    pub fn read_frame(&mut self, timeout: Duration) -> Frame {
        match self.try_read_frame(timeout) {
            Ok(Some(f)) => f,
            Ok(None) => panic!("no frame from nsqd within {timeout:?}"),
            Err(e) => panic!("reading frame from nsqd: {e}"),
        }
    }

    /// Reads a response frame and parses it as JSON.
    pub fn read_json(&mut self) -> serde_json::Value {
        let f = self.read_frame(READ_TIMEOUT);
        assert_eq!(
            f.frame_type,
            FrameType::Response,
            "expected JSON response, got {}",
            describe(&f)
        );
        serde_json::from_slice(&f.data)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", describe(&f)))
    }

    /// Reads a message frame (panics on anything else).
    pub fn read_message(&mut self, timeout: Duration) -> Message {
        let f = self.read_frame(timeout);
        assert_eq!(
            f.frame_type,
            FrameType::Message,
            "expected a message, got {}",
            describe(&f)
        );
        Message::decode(f.data).expect("valid message payload")
    }

    /// Expects the response frame `OK`.
    pub fn expect_ok(&mut self) {
        self.expect_response(b"OK");
    }

    /// Expects a response frame with exactly `data`.
    pub fn expect_response(&mut self, data: &[u8]) {
        let f = self.read_frame(READ_TIMEOUT);
        assert!(
            f.frame_type == FrameType::Response && f.data.as_ref() == data,
            "expected response {:?}, got {}",
            String::from_utf8_lossy(data),
            describe(&f)
        );
    }

    /// Expects an error frame whose text starts with `prefix`; returns the whole text.
    pub fn expect_error(&mut self, prefix: &str) -> String {
        let f = self.read_frame(READ_TIMEOUT);
        let text = String::from_utf8_lossy(&f.data).into_owned();
        assert!(
            f.frame_type == FrameType::Error && text.starts_with(prefix),
            "expected error starting with {prefix:?}, got {}",
            describe(&f)
        );
        text
    }

    /// Expects the server to close the connection (EOF or reset) within [`READ_TIMEOUT`];
    /// heartbeats are skipped, any other frame fails.
    pub fn expect_closed(&mut self) {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read_frame(left) {
                Ok(Some(f)) if f.is_heartbeat() => continue,
                Ok(Some(f)) => panic!("expected connection close, got {}", describe(&f)),
                Ok(None) => panic!("connection still open after {READ_TIMEOUT:?}"),
                Err(_) => return,
            }
        }
    }

    /// Asserts that no frame (other than heartbeats) arrives for `dur`. This is a negative
    /// check, so it necessarily waits the full duration: keep `dur` short.
    pub fn expect_no_frame(&mut self, dur: Duration) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.try_read_frame(left) {
                Ok(None) => return,
                Ok(Some(f)) if f.is_heartbeat() => continue,
                Ok(Some(f)) => panic!("expected no frame, got {}", describe(&f)),
                Err(e) => panic!("connection failed while expecting silence: {e}"),
            }
        }
    }

    /// Half-closes / closes the socket.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Human-readable frame description for assertion messages.
pub fn describe(f: &Frame) -> String {
    match f.frame_type {
        FrameType::Message => match Message::decode(f.data.clone()) {
            Ok(m) => format!(
                "message(id={}, attempts={}, body={:?})",
                m.id,
                m.attempts,
                String::from_utf8_lossy(&m.body)
            ),
            Err(_) => format!("malformed message frame {:?}", f.data),
        },
        FrameType::Response => format!("response {:?}", String::from_utf8_lossy(&f.data)),
        FrameType::Error => format!("error {:?}", String::from_utf8_lossy(&f.data)),
    }
}

// ---------------------------------------------------------------------------------------------
// External programs
// ---------------------------------------------------------------------------------------------

/// Output of an external program run with [`run_program`].
pub struct ProgramOutput {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Runs `cmd` with piped output, killing it after `timeout`.
pub fn run_program(mut cmd: Command, timeout: Duration) -> ProgramOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("failed to spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(20));
    };
    ProgramOutput {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_lines() {
        assert_eq!(
            parse_listen(
                "[nsqd] 2025/01/01 INFO: TCP: listening on 127.0.0.1:4150",
                "TCP: listening on"
            ),
            Some("127.0.0.1:4150".parse().unwrap())
        );
        assert_eq!(
            parse_listen(
                "\u{1b}[32mINFO\u{1b}[0m nsqd: HTTP: listening on 127.0.0.1:38001 extra",
                "HTTP: listening on"
            ),
            Some("127.0.0.1:38001".parse().unwrap())
        );
        assert_eq!(
            parse_listen("HTTP: listening on [::1]:80", "HTTP: listening on"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listen("TCP: closing", "TCP: listening on"), None);
    }

    /// The harness itself against the real binary: start, HTTP, raw client, SIGTERM,
    /// restart on the same data dir, SIGKILL.
    #[test]
    fn harness_lifecycle() {
        let mut n = TestNsqd::start(&[]);
        assert!(n.is_running());
        assert_ne!(n.tcp_addr().port(), 0);
        assert_ne!(n.http_addr().port(), 0);
        let r = n.http_get("/ping");
        assert_eq!((r.status, r.text().as_str()), (200, "OK"), "{r:?}");
        let mut c = n.client();
        c.pub_ok("harness", b"x");
        c.close();
        let data = n.data_path().to_path_buf();
        let status = n.terminate();
        assert!(!n.is_running());
        eprintln!("nsqd exit status after SIGTERM: {status:?}");
        n.restart(None);
        assert!(n.is_running());
        assert_eq!(n.data_path(), data.as_path());
        assert!(data.exists(), "temp data dir kept across restart");
        assert_eq!(n.http_get("/ping").status, 200);
        let status = n.kill();
        assert!(!status.success());
        assert!(!n.logs().is_empty());
        drop(n);
        assert!(!data.exists(), "temp data dir removed on drop");
    }

    #[test]
    fn parses_http_responses() {
        let r = parse_http_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-NSQ-Content-Type: nsq; version=1.0\r\n\r\nOK",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "OK");
        assert_eq!(r.header("x-nsq-content-type"), Some("nsq; version=1.0"));
        let r = parse_http_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json(), serde_json::json!({"a": 1}));
        assert_eq!(urlencode("a b#c"), "a%20b%23c");
    }
}
