//! Runs the real `nsqd` on loopback (free ports, temporary data directory) and the tool
//! binaries. Blocking on purpose: the tools are separate processes.
//!
//! The nsqd binary is `$NSQD_BIN` if set, else `nsqd` next to this test binary's profile
//! directory (`target/debug/nsqd`), built with `cargo build -p nsqd` on first use.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
pub const WAIT: Duration = Duration::from_secs(20);

fn profile_dir() -> PathBuf {
    // <target>/<profile>/deps/it-<hash>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Path of a daemon binary of the workspace (`nsqd`, `nsqlookupd`), building it if needed.
pub fn daemon_bin(name: &str) -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    if let Ok(p) = std::env::var(format!("{}_BIN", name.to_ascii_uppercase())) {
        return PathBuf::from(p);
    }
    let bin = profile_dir().join(name);
    let _g = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !bin.exists() {
        let target = profile_dir().parent().expect("target dir").to_path_buf();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../{name}/Cargo.toml"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", name, "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", target)
            .status()
            .unwrap_or_else(|e| panic!("run cargo build -p {name}: {e}"));
        assert!(status.success(), "cargo build -p {name} failed");
    }
    assert!(bin.exists(), "{name} binary not found at {}", bin.display());
    bin
}

pub fn nsqd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| daemon_bin("nsqd")).clone()
}

fn parse_listen(line: &str, marker: &str) -> Option<SocketAddr> {
    let idx = line.find(marker)?;
    let token: String = line[idx + marker.len()..]
        .trim_start()
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
        .collect();
    token.parse().ok()
}

/// A running nsqd with its own temporary data directory; killed on drop.
pub struct TestNsqd {
    child: Child,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    /// With `--https-address`.
    pub https: Option<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl TestNsqd {
    pub fn start(extra: &[&str]) -> TestNsqd {
        let dir = tempfile::Builder::new()
            .prefix("nsq-tools-it-")
            .tempdir()
            .expect("temp dir");
        let bin = nsqd_bin();
        let mut child = Command::new(&bin)
            .arg("--tcp-address=127.0.0.1:0")
            .arg("--http-address=127.0.0.1:0")
            .arg(format!("--data-path={}", dir.path().display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = child.id();
        let (tx, rx) = mpsc::channel::<Option<String>>();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stderr.take().unwrap()),
            Box::new(child.stdout.take().unwrap()),
        ];
        for stream in streams {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("NSQ_IT_VERBOSE").is_some() {
                        eprintln!("[nsqd {pid}] {line}");
                    }
                    let _ = tx.send(Some(line));
                }
                let _ = tx.send(None);
            });
        }
        drop(tx);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let (mut tcp, mut http, mut eofs, mut lines) = (None, None, 0, Vec::new());
        let mut https = None;
        while tcp.is_none() || http.is_none() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Some(line)) => {
                    tcp = tcp.or_else(|| parse_listen(&line, "TCP: listening on"));
                    http = http.or_else(|| parse_listen(&line, "HTTP: listening on"));
                    https = https.or_else(|| parse_listen(&line, "HTTPS: listening on"));
                    lines.push(line);
                }
                Ok(None) => {
                    eofs += 1;
                    if eofs == 2 {
                        let _ = child.kill();
                        panic!("nsqd exited early:\n{}", lines.join("\n"));
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("nsqd did not start in time:\n{}", lines.join("\n"));
                }
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        thread::spawn(move || while rx.recv().is_ok() {});
        TestNsqd {
            child,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
            https,
            _dir: dir,
        }
    }

    pub fn tcp_addr(&self) -> String {
        self.tcp.to_string()
    }

    pub fn http_addr(&self) -> String {
        self.http.to_string()
    }

    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = http(self.http, "GET", "/stats?format=json", b"");
        assert_eq!(status, 200, "stats: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("stats JSON")
    }

    pub fn topic_stats(&self, topic: &str) -> Option<serde_json::Value> {
        self.stats()["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic_name"] == topic)
            .cloned()
    }

    pub fn channel_stats(&self, topic: &str, channel: &str) -> Option<serde_json::Value> {
        self.topic_stats(topic)?["channels"]
            .as_array()?
            .iter()
            .find(|c| c["channel_name"] == channel)
            .cloned()
    }

    pub fn create_channel(&self, topic: &str, channel: &str) {
        let (s, _) = http(
            self.http,
            "POST",
            &format!("/topic/create?topic={topic}"),
            b"",
        );
        assert_eq!(s, 200);
        let path = format!("/channel/create?topic={topic}&channel={channel}");
        let (s, _) = http(self.http, "POST", &path, b"");
        assert_eq!(s, 200);
    }

    /// Publishes newline-separated bodies with `/mpub`.
    pub fn mpub(&self, topic: &str, bodies: &[String]) {
        let (s, b) = http(
            self.http,
            "POST",
            &format!("/mpub?topic={topic}"),
            bodies.join("\n").as_bytes(),
        );
        assert_eq!(s, 200, "mpub: {}", String::from_utf8_lossy(&b));
    }
}

impl Drop for TestNsqd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One blocking HTTP/1.1 request with `Connection: close`.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = raw[end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 4 + size..];
    }
    out
}

/// Reads an integer field of a stats object.
pub fn num(v: &serde_json::Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// Polls `cond` until true, panicking after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit, killing it and panicking after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` (e.g. "INT", "KILL") to `pid` with the `kill` utility.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Runs a command to completion with `stdin` piped in; returns (status, stdout, stderr).
pub fn run_with_stdin(
    cmd: &mut Command,
    stdin: &[u8],
    timeout: Duration,
) -> (std::process::ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let out_t = thread::spawn(move || read_all(out));
    let err_t = thread::spawn(move || read_all(err));
    let status = wait_exit(&mut child, timeout, "command");
    writer.join().unwrap();
    (status, out_t.join().unwrap(), err_t.join().unwrap())
}

fn read_all(mut r: impl Read) -> String {
    let mut s = Vec::new();
    let _ = r.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// Kills (SIGKILL) and reaps the child when dropped, so a failing test leaves no orphans.
pub struct Guard(pub Child);

impl std::ops::Deref for Guard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
