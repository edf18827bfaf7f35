//! Runs the real `nsqd` binary on loopback for the client tests.
//!
//! The binary is `$NSQD_BIN` if set, else `nsqd` next to this test's target directory
//! (`target/debug/nsqd`), built with `cargo build -p nsqd` on first use if it is missing.
//! Waits are bounded polls, never fixed sleeps.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
pub const WAIT: Duration = Duration::from_secs(10);

fn target_dir() -> PathBuf {
    // target/debug/deps/it-<hash>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf()
}

/// Path of the nsqd binary, building it if needed (once per test process).
pub fn nsqd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("NSQD_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
        let bin = profile_dir.join("nsqd");
        if !bin.exists() {
            let _g = BUILD.lock().unwrap();
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nsqd/Cargo.toml");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "nsqd", "--manifest-path"])
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .expect("run cargo build -p nsqd");
            assert!(status.success(), "cargo build -p nsqd failed");
        }
        assert!(bin.exists(), "nsqd binary not found at {}", bin.display());
        bin
    })
    .clone()
}

/// Polls `cond` until true (async), panicking after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// A running nsqd with its own temporary data directory.
pub struct TestNsqd {
    child: Option<Child>,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
    dir: tempfile::TempDir,
}

impl TestNsqd {
    /// Starts nsqd on free loopback ports.
    pub fn start(extra: &[&str]) -> TestNsqd {
        let dir = tempfile::Builder::new()
            .prefix("nsq-client-it-")
            .tempdir()
            .expect("temp dir");
        let (child, tcp, http) = spawn(dir.path(), "127.0.0.1:0", "127.0.0.1:0", extra);
        TestNsqd {
            child: Some(child),
            tcp,
            http,
            dir,
        }
    }

    /// SIGKILLs the process.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a new process on the same ports and data directory (after [`TestNsqd::kill`]).
    pub fn restart_same_ports(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            // The old sockets may linger briefly; retry the bind until the deadline.
            match try_spawn(
                self.dir.path(),
                &self.tcp.to_string(),
                &self.http.to_string(),
                &[],
            ) {
                Ok((child, tcp, http)) => {
                    assert_eq!((tcp, http), (self.tcp, self.http));
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("restart failed, retrying: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("nsqd restart failed: {e}"),
            }
        }
    }

    /// `GET /stats?format=json`.
    pub async fn stats(&self) -> serde_json::Value {
        let (status, body) = http(self.http, "GET", "/stats?format=json", b"").await;
        assert_eq!(status, 200, "stats: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("stats JSON")
    }

    /// The stats object of a channel, if it exists.
    pub async fn channel_stats(&self, topic: &str, channel: &str) -> Option<serde_json::Value> {
        let s = self.stats().await;
        s["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic_name"] == topic)?["channels"]
            .as_array()?
            .iter()
            .find(|c| c["channel_name"] == channel)
            .cloned()
    }

    /// The stats object of a topic, if it exists.
    pub async fn topic_stats(&self, topic: &str) -> Option<serde_json::Value> {
        let s = self.stats().await;
        s["topics"]
            .as_array()?
            .iter()
            .find(|t| t["topic_name"] == topic)
            .cloned()
    }

    /// Creates a topic and channel over HTTP (so messages published before a consumer
    /// subscribes are kept for it).
    pub async fn create_channel(&self, topic: &str, channel: &str) {
        let (s, _) = http(
            self.http,
            "POST",
            &format!("/topic/create?topic={topic}"),
            b"",
        )
        .await;
        assert_eq!(s, 200);
        let (s, _) = http(
            self.http,
            "POST",
            &format!("/channel/create?topic={topic}&channel={channel}"),
            b"",
        )
        .await;
        assert_eq!(s, 200);
    }
}

impl Drop for TestNsqd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(dir: &Path, tcp: &str, http: &str, extra: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    try_spawn(dir, tcp, http, extra).unwrap_or_else(|e| panic!("{e}"))
}

fn try_spawn(
    dir: &Path,
    tcp: &str,
    http: &str,
    extra: &[&str],
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let bin = nsqd_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("--tcp-address={tcp}"))
        .arg(format!("--http-address={http}"))
        .arg(format!("--data-path={}", dir.display()))
        .args(extra);
    spawn_daemon(cmd, "nsqd")
}

/// Spawns a daemon (`nsqd` or `nsqlookupd`), echoes its output with a `[<name> <pid> ..]`
/// prefix and waits (bounded) for its "TCP: listening on" and "HTTP: listening on" lines.
fn spawn_daemon(
    mut cmd: Command,
    name: &'static str,
) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<Option<String>>();
    for (stream, stream_name) in [
        (
            Box::new(child.stderr.take().unwrap()) as Box<dyn Read + Send>,
            "err",
        ),
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            "out",
        ),
    ] {
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{name} {pid} {stream_name}] {line}");
                let _ = tx.send(Some(line));
            }
            let _ = tx.send(None);
        });
    }
    drop(tx);
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let (mut tcp_addr, mut http_addr, mut eofs) = (None, None, 0);
    let mut lines = Vec::new();
    while tcp_addr.is_none() || http_addr.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Some(line)) => {
                tcp_addr = tcp_addr.or_else(|| parse_listen(&line, "TCP: listening on"));
                http_addr = http_addr.or_else(|| parse_listen(&line, "HTTP: listening on"));
                lines.push(line);
            }
            Ok(None) => {
                eofs += 1;
                if eofs == 2 {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{name} exited early:\n{}", lines.join("\n")));
                }
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{name} did not start in time:\n{}",
                    lines.join("\n")
                ));
            }
        }
    }
    Ok((child, tcp_addr.unwrap(), http_addr.unwrap()))
}

/// Path of the nsqlookupd binary: `$NSQLOOKUPD_BIN` if set, else `nsqlookupd` next to the
/// nsqd binary, built with `cargo build -p nsqlookupd` on first use if it is missing.
pub fn nsqlookupd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("NSQLOOKUPD_BIN") {
            return PathBuf::from(p);
        }
        let sibling = nsqd_bin().with_file_name("nsqlookupd");
        if sibling.exists() {
            return sibling;
        }
        let exe = std::env::current_exe().expect("current_exe");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("profile dir")
            .join("nsqlookupd");
        if !bin.exists() {
            let _g = BUILD.lock().unwrap();
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nsqlookupd/Cargo.toml");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "nsqlookupd", "--manifest-path"])
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .expect("run cargo build -p nsqlookupd");
            assert!(status.success(), "cargo build -p nsqlookupd failed");
        }
        assert!(
            bin.exists(),
            "nsqlookupd binary not found at {}",
            bin.display()
        );
        bin
    })
    .clone()
}

/// A running nsqlookupd on loopback (killed on drop).
pub struct TestLookupd {
    child: Option<Child>,
    pub tcp: SocketAddr,
    pub http: SocketAddr,
}

impl TestLookupd {
    /// Starts nsqlookupd on free loopback ports.
    pub fn start() -> TestLookupd {
        let (child, tcp, http) =
            try_spawn_lookupd("127.0.0.1:0", "127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        TestLookupd {
            child: Some(child),
            tcp,
            http,
        }
    }

    /// `--lookupd-tcp-address=<tcp>` for nsqd.
    pub fn tcp_flag(&self) -> String {
        format!("--lookupd-tcp-address={}", self.tcp)
    }

    /// SIGKILLs the process (all registrations are lost with it).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a new, empty nsqlookupd on the same TCP and HTTP ports (after
    /// [`TestLookupd::kill`]), retrying the bind until [`STARTUP_TIMEOUT`].
    pub fn restart_same_ports(&mut self) {
        self.kill();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match try_spawn_lookupd(&self.tcp.to_string(), &self.http.to_string()) {
                Ok((child, tcp, http)) => {
                    assert_eq!((tcp, http), (self.tcp, self.http));
                    self.child = Some(child);
                    return;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("nsqlookupd restart failed, retrying: {e}");
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("nsqlookupd restart failed: {e}"),
            }
        }
    }

    /// The TCP addresses (`broadcast_address:tcp_port`) `/lookup?topic=` reports, sorted;
    /// empty when the topic is unknown (404).
    pub async fn producers(&self, topic: &str) -> Vec<String> {
        let (status, body) = http(self.http, "GET", &format!("/lookup?topic={topic}"), b"").await;
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "/lookup: {}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("/lookup JSON");
        let mut out: Vec<String> = v["producers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        format!(
                            "{}:{}",
                            p["broadcast_address"].as_str().unwrap_or(""),
                            p["tcp_port"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Waits until `/lookup?topic=` reports exactly `want` (TCP addresses, any order).
    pub async fn wait_producers(&self, topic: &str, want: &[SocketAddr], timeout: Duration) {
        let mut want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
        want.sort();
        let deadline = Instant::now() + timeout;
        loop {
            let have = self.producers(topic).await;
            if have == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nsqlookupd {}: producers of {topic} are {have:?} after {timeout:?}, want {want:?}",
                self.tcp
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for TestLookupd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn try_spawn_lookupd(tcp: &str, http: &str) -> Result<(Child, SocketAddr, SocketAddr), String> {
    let mut cmd = Command::new(nsqlookupd_bin());
    cmd.arg(format!("--tcp-address={tcp}"))
        .arg(format!("--http-address={http}"))
        .arg("--broadcast-address=127.0.0.1");
    spawn_daemon(cmd, "nsqlookupd")
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body (bounded).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    tokio::time::timeout(WAIT, async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8_lossy(&raw[..end]).to_string();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut body = raw[end + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (status, body)
    })
    .await
    .expect("HTTP request timed out")
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
