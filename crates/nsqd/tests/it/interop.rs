//! Third-party client interop: the real `nsqd` binary driven by pynsq (PyPI) and nsqjs (npm).
//!
//! The client programs live in `interop/python` and `interop/node`; their dependencies are
//! installed by `scripts/test.sh` (`.venv-interop/` and `interop/node/node_modules/`). If they
//! are missing these tests FAIL (they never skip) and say how to install them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::harness::{run_program, workspace_root, TestNsqd};
use crate::tls::{start_tls, Pki};

/// Upper bound for one client program (each has its own, shorter, internal timeout).
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(150);

/// Server flags for the interop runs. Clients ask for short `msg_timeout`s in IDENTIFY where
/// a scenario needs one, so the server keeps its defaults otherwise.
const NSQD_ARGS: &[&str] = &[];

fn python() -> PathBuf {
    let venv = workspace_root().join(".venv-interop/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

fn missing(what: &str) -> ! {
    panic!(
        "{what}\nThe interop test dependencies are not installed. Run `bash scripts/test.sh` \
         once from the workspace root (it creates .venv-interop with pynsq and runs `npm ci` in \
         interop/node), then rerun the tests."
    )
}

fn run_and_check(name: &str, nsqd: &TestNsqd, cmd: Command) {
    eprintln!("running {name}: {cmd:?}");
    let out = run_program(cmd, PROGRAM_TIMEOUT);
    eprintln!("--- {name} stdout ---\n{}", out.stdout);
    eprintln!("--- {name} stderr ---\n{}", out.stderr);
    let ok = !out.timed_out && out.status.map(|s| s.success()).unwrap_or(false);
    if !ok {
        panic!(
            "{name} failed (status {:?}{}) against nsqd tcp={} http={}\n\
             --- {name} stdout ---\n{}\n--- {name} stderr (last 8000 bytes) ---\n{}\n\
             --- nsqd log (last 200 lines) ---\n{}",
            out.status,
            if out.timed_out { ", TIMED OUT" } else { "" },
            nsqd.tcp_addr(),
            nsqd.http_addr(),
            out.stdout,
            tail(&out.stderr, 8000),
            nsqd.logs()
                .iter()
                .rev()
                .take(200)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
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

fn pynsq(filter: &str) {
    pynsq_with(&TestNsqd::start(NSQD_ARGS), &[filter.to_string()]);
}

/// Runs test_pynsq.py against `nsqd` with `args` (a filter, TLS options).
fn pynsq_with(nsqd: &TestNsqd, args: &[String]) {
    let root = workspace_root();
    let script = root.join("interop/python/test_pynsq.py");
    assert!(script.exists(), "missing {}", script.display());
    let py = python();
    let probe = Command::new(&py)
        .args([
            "-c",
            "import nsq, tornado; print(nsq.__version__, tornado.version)",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {
            eprintln!(
                "pynsq/tornado: {}",
                String::from_utf8_lossy(&o.stdout).trim()
            )
        }
        Ok(o) => missing(&format!(
            "`{} -c 'import nsq'` failed: {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => missing(&format!("cannot run {}: {e}", py.display())),
    }

    let mut cmd = Command::new(&py);
    cmd.arg(&script)
        .arg(format!("--tcp={}", nsqd.tcp_addr()))
        .arg(format!("--http={}", nsqd.http_addr()))
        .args(args)
        .env("PYTHONUNBUFFERED", "1");
    run_and_check("pynsq", nsqd, cmd);
}

fn nsqjs(filter: &str) {
    nsqjs_with(&TestNsqd::start(NSQD_ARGS), &[filter.to_string()]);
}

/// Runs test_nsqjs.js against `nsqd` with `args` (a filter, `--tlsca`).
fn nsqjs_with(nsqd: &TestNsqd, args: &[String]) {
    let root = workspace_root();
    let dir = root.join("interop/node");
    let script = dir.join("test_nsqjs.js");
    assert!(script.exists(), "missing {}", script.display());
    if !dir.join("node_modules/nsqjs/package.json").exists() {
        missing(&format!(
            "{} does not exist",
            dir.join("node_modules/nsqjs").display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(o) if o.status.success() => {
            eprintln!("node {}", String::from_utf8_lossy(&o.stdout).trim())
        }
        _ => missing("`node --version` failed: Node.js is not installed"),
    }

    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .arg(format!("--tcp={}", nsqd.tcp_addr()))
        .arg(format!("--http={}", nsqd.http_addr()))
        .args(args)
        .current_dir(&dir);
    run_and_check("nsqjs", nsqd, cmd);
}

/// pynsq: Writer pub/mpub/dpub, HTTP publishing, several readers with max_in_flight > 1,
/// requeue + attempts, touch, timeout redelivery, fan-out, ephemeral, pause, empty, delete,
/// exact /stats counters.
#[test]
fn pynsq_interop() {
    pynsq("--skip=compression");
}

/// pynsq with `deflate=True` on both Writer and Reader (IDENTIFY feature negotiation).
/// (pynsq's snappy needs python-snappy, which is not installed.)
#[test]
fn pynsq_interop_compression() {
    pynsq("--only=compression");
}

/// pynsq over TLS verifying the server against the test CA (plain TCP commands refused by
/// `--tls-required=tcp-https`, so everything really went through TLS): pub/mpub/consume
/// with /stats tls fields, and deflate on top of TLS.
#[test]
fn pynsq_interop_tls() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--tls-required=tcp-https"]);
    let ca = format!("--tls-ca={}", pki.path("ca.pem").display());
    pynsq_with(&nsqd, &["--only=tls".into(), ca.clone()]);
    pynsq_with(&nsqd, &["--only=compression".into(), ca]);
}

/// pynsq presenting a client certificate to an nsqd with
/// `--tls-client-auth-policy=require-verify`.
#[test]
fn pynsq_interop_tls_client_certificate() {
    let pki = Pki::new();
    let root = format!("--tls-root-ca-file={}", pki.path("ca.pem").display());
    let nsqd = start_tls(
        &pki,
        &[
            "--tls-client-auth-policy=require-verify",
            &root,
            "--tls-required=tcp-https",
        ],
    );
    pynsq_with(
        &nsqd,
        &[
            "--only=tls".into(),
            format!("--tls-ca={}", pki.path("ca.pem").display()),
            format!("--tls-cert={}", pki.path("client.pem").display()),
            format!("--tls-key={}", pki.path("client.key").display()),
        ],
    );
}

/// nsqjs: Writer publish (PUB/MPUB) and deferPublish (DPUB), HTTP publishing, several readers
/// with maxInFlight > 1, requeue + attempts, touch, timeout redelivery, fan-out, ephemeral,
/// pause/empty/delete, exact /stats counters.
#[test]
fn nsqjs_interop() {
    nsqjs("--skip=Compression");
}

/// nsqjs with `snappy: true` and `deflate: true` (IDENTIFY feature negotiation).
#[test]
fn nsqjs_interop_compression() {
    nsqjs("--only=Compression");
}

/// nsqjs with TLS then snappy, and TLS then deflate, against an nsqd that refuses plain TCP
/// commands (`--tls-required=tcp-https`).
#[test]
fn nsqjs_interop_tls_compression() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--tls-required=tcp-https"]);
    nsqjs_with(
        &nsqd,
        &[
            "--only=Compression".into(),
            format!("--tlsca={}", pki.path("ca.pem").display()),
        ],
    );
}

/// pynsq with `auth_secret` on Writer and Reader against an nsqd with a real auth server:
/// AUTH answered, PUB/SUB authorised, `/stats` auth fields.
#[test]
fn pynsq_interop_auth() {
    let srv = crate::auth::AuthServer::start();
    srv.answer(
        "py-secret",
        200,
        serde_json::json!({
            "ttl": 3600, "identity": "py-client", "identity_url": "",
            "authorizations": [
                {"topic": "^pub_auth$", "channels": [".*"], "permissions": ["publish", "subscribe"]}
            ]
        }),
    );
    let nsqd = TestNsqd::start(&[&format!("--auth-http-address={}", srv.addr)]);
    pynsq_with(
        &nsqd,
        &[
            "--only=auth".into(),
            "--auth-secret=py-secret".into(),
            "--auth-identity=py-client".into(),
        ],
    );
    let seen = srv.seen();
    assert!(
        seen.iter().all(|q| q.get("secret") == Some("py-secret")),
        "{seen:?}"
    );
    assert!(
        seen.len() >= 2,
        "Writer and Reader each sent AUTH: {seen:?}"
    );
}
