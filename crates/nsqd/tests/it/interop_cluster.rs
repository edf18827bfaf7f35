//! Cluster interop: pynsq's `Reader` with `lookupd_http_addresses` pointed at our
//! `nsqlookupd`s consumes messages published to several of our `nsqd`s
//! (`interop/python/test_pynsq_lookupd.py`).
//!
//! Two nsqlookupd and three nsqd processes on loopback; every nsqd registers with both
//! lookupds and announces 127.0.0.1. Like `interop.rs`, the test FAILS (never skips) when
//! pynsq is not installed, and says how to install it (`bash scripts/test.sh`).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{self, run_program, workspace_root, TestNsqd};

/// Upper bound for the program (it has its own, shorter, internal timeout).
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);
/// The program's internal overall timeout, in seconds.
const PROGRAM_INTERNAL_TIMEOUT_SECS: u64 = 90;

pub(crate) fn python() -> PathBuf {
    let venv = workspace_root().join(".venv-interop/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

pub(crate) fn missing(what: &str) -> ! {
    panic!(
        "{what}\nThe interop test dependencies are not installed. Run `bash scripts/test.sh` \
         once from the workspace root (it creates .venv-interop with pynsq), then rerun the tests."
    )
}

/// Path of the `nsqlookupd` binary next to `nsqd`, built on first use if missing.
fn nsqlookupd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    BIN.get_or_init(|| {
        let nsqd = harness::nsqd_bin();
        let bin = nsqd.with_file_name("nsqlookupd");
        if !bin.exists() {
            let _g = BUILD.lock().unwrap();
            // <target>/<profile>/nsqd → <target>
            let target = nsqd
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf();
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "nsqlookupd", "--manifest-path"])
                .arg(workspace_root().join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .expect("run cargo build -p nsqlookupd");
            assert!(status.success(), "cargo build -p nsqlookupd failed");
        }
        assert!(bin.exists(), "nsqlookupd not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A running `nsqlookupd` (killed by pid on drop), its output kept for failure reports.
struct Lookupd {
    child: Child,
    tcp: SocketAddr,
    http: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Lookupd {
    fn start() -> Lookupd {
        let bin = nsqlookupd_bin();
        let mut child = Command::new(&bin)
            .args([
                "--tcp-address=127.0.0.1:0",
                "--http-address=127.0.0.1:0",
                "--broadcast-address=127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let prefix = format!("[nsqlookupd {}]", child.id());
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = logs.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{prefix} {line}");
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let listen = |line: &str, marker: &str| -> Option<SocketAddr> {
            let rest = &line[line.find(marker)? + marker.len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        let deadline = Instant::now() + harness::STARTUP_TIMEOUT;
        let (mut tcp, mut http) = (None, None);
        while tcp.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    tcp = tcp.or_else(|| listen(&line, "TCP: listening on"));
                    http = http.or_else(|| listen(&line, "HTTP: listening on"));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nsqlookupd did not start: {e:?}");
                }
            }
        }
        Lookupd {
            child,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
            logs,
        }
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn last_lines(lines: &[String], n: usize) -> String {
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// pynsq `Reader(lookupd_http_addresses=[both lookupds], lookupd_poll_interval=1)` against
/// three nsqds: a known topic (every message from every nsqd exactly once, one connection per
/// nsqd, per-nsqd /stats) and a topic that appears only after the Reader started.
#[test]
fn pynsq_reader_discovers_nsqds_through_nsqlookupd() {
    let script = workspace_root().join("interop/python/test_pynsq_lookupd.py");
    assert!(script.exists(), "missing {}", script.display());
    let py = python();
    match Command::new(&py)
        .args([
            "-c",
            "import nsq, tornado; print(nsq.__version__, tornado.version)",
        ])
        .output()
    {
        Ok(o) if o.status.success() => eprintln!(
            "pynsq/tornado: {}",
            String::from_utf8_lossy(&o.stdout).trim()
        ),
        Ok(o) => missing(&format!(
            "`{} -c 'import nsq'` failed: {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => missing(&format!("cannot run {}: {e}", py.display())),
    }

    let lookupds = [Lookupd::start(), Lookupd::start()];
    let nsqd_args: Vec<String> = lookupds
        .iter()
        .map(|l| format!("--lookupd-tcp-address={}", l.tcp))
        .chain(["--broadcast-address=127.0.0.1".to_string()])
        .collect();
    let refs: Vec<&str> = nsqd_args.iter().map(String::as_str).collect();
    let nsqds: Vec<TestNsqd> = (0..3).map(|_| TestNsqd::start(&refs)).collect();

    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .arg(format!("--timeout={PROGRAM_INTERNAL_TIMEOUT_SECS}"))
        .env("PYTHONUNBUFFERED", "1");
    for l in &lookupds {
        cmd.arg(format!("--lookupd-http={}", l.http));
    }
    for n in &nsqds {
        cmd.arg(format!("--nsqd-http={}", n.http_addr()));
    }
    eprintln!("running pynsq lookupd: {cmd:?}");
    let out = run_program(cmd, PROGRAM_TIMEOUT);
    eprintln!("--- pynsq lookupd stdout ---\n{}", out.stdout);
    eprintln!("--- pynsq lookupd stderr ---\n{}", out.stderr);
    let ok = !out.timed_out && out.status.is_some_and(|s| s.success());
    if !ok {
        let mut report = format!(
            "test_pynsq_lookupd.py failed (status {:?}{})\n--- stdout ---\n{}\n\
             --- stderr (last 8000 bytes) ---\n{}\n",
            out.status,
            if out.timed_out { ", TIMED OUT" } else { "" },
            out.stdout,
            tail(&out.stderr, 8000),
        );
        for l in &lookupds {
            report += &format!(
                "--- nsqlookupd tcp={} http={} (last 100 lines) ---\n{}\n",
                l.tcp,
                l.http,
                last_lines(&l.logs.lock().unwrap(), 100)
            );
        }
        for n in &nsqds {
            report += &format!(
                "--- nsqd tcp={} http={} (last 100 lines) ---\n{}\n",
                n.tcp_addr(),
                n.http_addr(),
                last_lines(&n.logs(), 100)
            );
        }
        panic!("{report}");
    }
}
