//! Test harness: runs the real `nsqlookupd`, `nsqd` and `nsqadmin` binaries on free loopback
//! ports and talks HTTP to them with a tiny std client.
//!
//! nsqd and nsqlookupd are not dependencies of nsqadmin: their binaries are taken from the
//! same target directory as this test (built with `cargo build -p nsqd -p nsqlookupd` if
//! missing). Never sleep to wait for something: poll with a deadline ([`wait_until`]).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `cond` every 20 ms until it returns true; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// `<target>/debug`: the directory holding this profile's binaries.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/debug/deps/it-<hash>
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target layout")
        .to_path_buf()
}

/// Path of a sibling daemon binary, building the daemons once if they are missing.
pub fn daemon_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = profile_dir();
    let path = dir.join(name);
    if !path.exists() || BUILT.get().is_none() {
        BUILT.get_or_init(|| {
            if dir.join("nsqd").exists() && dir.join("nsqlookupd").exists() {
                return;
            }
            let target = dir.parent().expect("target dir");
            let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-p", "nsqd", "-p", "nsqlookupd"])
                .env("CARGO_TARGET_DIR", target)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build");
            assert!(status.success(), "cargo build -p nsqd -p nsqlookupd failed");
        });
    }
    assert!(path.exists(), "{} not found", path.display());
    path
}

fn parse_listen(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(marker)? + marker.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// A running child process, killed on drop; its log lines are echoed with a prefix and kept
/// ([`Proc::logs`]).
pub struct Proc {
    child: Child,
    pub tcp: Option<SocketAddr>,
    pub http: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    _data: Option<tempfile::TempDir>,
}

impl Proc {
    fn spawn(name: &str, cmd: Command, want_tcp: bool, data: Option<tempfile::TempDir>) -> Proc {
        Self::spawn_at(name, cmd, want_tcp, data, None)
    }

    /// With `http`, the process listens there and is ready when `/ping` answers (its log level
    /// may hide the "listening on" lines); otherwise those lines give the addresses.
    fn spawn_at(
        name: &str,
        mut cmd: Command,
        want_tcp: bool,
        data: Option<tempfile::TempDir>,
        known_http: Option<SocketAddr>,
    ) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let stderr = child.stderr.take().expect("stderr piped");
        let name2 = name.to_owned();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                        eprintln!("[{name2} {pid}] {line}");
                        kept.lock().unwrap().push(line.clone());
                        let _ = tx.send(Some(line));
                    }
                }
            }
            let _ = tx.send(None);
        });
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (mut tcp, mut http) = (None, None);
        if let Some(addr) = known_http {
            loop {
                // Connecting succeeds once it listens; the request is then queued, not lost.
                if TcpStream::connect(addr).is_ok()
                    && http_request(addr, "GET", "/ping", None).status == 200
                {
                    http = Some(addr);
                    break;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("{name} exited before answering /ping ({status})");
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} did not answer /ping within {STARTUP_TIMEOUT:?}");
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        while (want_tcp && tcp.is_none()) || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Some(line)) => {
                    tcp = tcp.or_else(|| parse_listen(&line, "TCP: listening on "));
                    http = http.or_else(|| parse_listen(&line, "HTTP: listening on "));
                }
                Ok(None) => {
                    let status = child.wait().ok();
                    panic!("{name} exited before listening ({status:?})");
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("{name} did not report its listeners within {STARTUP_TIMEOUT:?}");
                }
            }
        }
        // Keep draining the log channel in the background.
        thread::spawn(move || while let Ok(Some(_)) = rx.recv() {});
        Proc {
            child,
            tcp,
            http: http.unwrap(),
            logs,
            _data: data,
        }
    }

    /// A daemon started from a prepared command, ready once it logged its TCP and HTTP
    /// listeners.
    pub fn spawn_cmd(name: &str, cmd: Command) -> Proc {
        Self::spawn(name, cmd, true, None)
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("a log line containing {needle:?}"),
            || self.logs.lock().unwrap().iter().any(|l| l.contains(needle)),
        );
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory (VmRSS) in KiB, from `/proc`.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// SIGKILLs the process and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        http_request(self.http, method, path, body)
    }

    /// `GET path`, expecting 200 JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let r = self.http("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn start_lookupd() -> Proc {
    let mut cmd = Command::new(daemon_bin("nsqlookupd"));
    cmd.args([
        "--tcp-address=127.0.0.1:0",
        "--http-address=127.0.0.1:0",
        "--broadcast-address=127.0.0.1",
    ]);
    Proc::spawn("nsqlookupd", cmd, true, None)
}

pub fn start_nsqd(lookupd: &Proc) -> Proc {
    start_nsqd_with(lookupd, &[])
}

/// An nsqd registered with `lookupd`, with extra flags.
pub fn start_nsqd_with(lookupd: &Proc, extra: &[&str]) -> Proc {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(daemon_bin("nsqd"));
    cmd.arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--broadcast-address=127.0.0.1")
        .arg(format!("--lookupd-tcp-address={}", lookupd.tcp.unwrap()))
        .arg(format!("--data-path={}", data.path().display()))
        .args(extra);
    Proc::spawn("nsqd", cmd, true, Some(data))
}

/// An nsqd without a lookupd, with extra flags.
pub fn start_nsqd_alone(extra: &[&str]) -> Proc {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(daemon_bin("nsqd"));
    cmd.arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--broadcast-address=127.0.0.1")
        .arg(format!("--data-path={}", data.path().display()))
        .args(extra);
    Proc::spawn("nsqd", cmd, true, Some(data))
}

pub fn start_admin(args: &[String]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nsqadmin"));
    cmd.arg("--http-address=127.0.0.1:0")
        .arg("--http-client-connect-timeout=500ms")
        .arg("--http-client-request-timeout=2s")
        .args(args);
    Proc::spawn("nsqadmin", cmd, false, None)
}

/// nsqadmin on a port the test picks, ready once `/ping` answers: for a `--log-level` that
/// hides the "listening on" line.
pub fn start_admin_quiet(args: &[String]) -> Proc {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nsqadmin"));
    cmd.arg(format!("--http-address={port}"))
        .arg("--http-client-connect-timeout=500ms")
        .arg("--http-client-request-timeout=2s")
        .args(args);
    Proc::spawn_at("nsqadmin", cmd, false, None, Some(port))
}

/// A response from [`http_request`].
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> HttpResponse {
    http_request_with(addr, method, path, body, &[])
}

/// [`http_request`] with extra `(name, value)` headers.
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("http head");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// One request returning the raw body bytes (for compressed responses); the server must
/// answer with a Content-Length or close the connection after the body.
pub fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = raw[end..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        let mut out = Vec::new();
        let mut data = &rest[..];
        loop {
            let nl = data
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size");
            let n = usize::from_str_radix(std::str::from_utf8(&data[..nl]).unwrap().trim(), 16)
                .expect("chunk size");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&data[nl + 2..nl + 2 + n]);
            data = &data[nl + 4 + n..];
        }
        rest = out;
    }
    (status, headers, rest)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// POST to an nsqd, expecting 200.
pub fn nsqd_post(nsqd: &Proc, path: &str, body: &str) {
    let r = nsqd.http("POST", path, Some(body));
    assert_eq!(r.status, 200, "POST {path}: {}", r.body);
}

/// The `/stats` entry of `topic` on `nsqd`, if it exists.
pub fn nsqd_topic(nsqd: &Proc, topic: &str) -> Option<Value> {
    let s = nsqd.get_json("/stats?format=json");
    s["topics"]
        .as_array()?
        .iter()
        .find(|t| t["topic_name"] == topic)
        .cloned()
}

/// Registers a fake producer for `topic` with lookupd over TCP (protocol V1) whose HTTP port
/// answers nothing: lookupd keeps listing it while the connection lives.
pub fn fake_producer(lookupd: &Proc, topic: &str, dead_http_port: u16) -> TcpStream {
    let mut s = TcpStream::connect(lookupd.tcp.unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ident = serde_json::json!({
        "broadcast_address": "127.0.0.1", "hostname": "ghost", "tcp_port": 1,
        "http_port": dead_http_port, "version": "1.3.0"
    })
    .to_string();
    let mut msg = b"  V1IDENTIFY\n".to_vec();
    msg.extend_from_slice(&u32::try_from(ident.len()).unwrap().to_be_bytes());
    msg.extend_from_slice(ident.as_bytes());
    s.write_all(&msg).unwrap();
    read_v1(&mut s);
    s.write_all(format!("REGISTER {topic}\n").as_bytes())
        .unwrap();
    assert_eq!(read_v1(&mut s), b"OK");
    s
}

fn read_v1(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut data).unwrap();
    data
}

/// A loopback port with nothing listening.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Serialises the tests of this binary that spawn clusters (2 cores).
pub fn cluster_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
