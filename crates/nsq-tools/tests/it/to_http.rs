//! `nsq_to_http` against a real HTTP/1.1 server (hyper, and rustls for HTTPS with an rcgen
//! certificate) that counts the TCP connections it accepts.

use std::process::Stdio;
use std::sync::Arc;

use nsq_http_client::testing::{Mode, Pki, Recorded, TestServer};

use crate::harness::{
    num, run_with_stdin, send_signal, wait_exit, wait_until, Guard, TestNsqd, WAIT,
};
use crate::tool;

/// The real HTTP server of `nsq_http_client::testing`, answering request `n` with
/// `status(n)`; `ok_requests` are those it answered 200.
struct Server {
    inner: TestServer,
    status: Arc<dyn Fn(usize) -> u16 + Send + Sync>,
}

impl Server {
    fn start(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Server {
        Server::start_mode(Mode::Http, status)
    }

    fn start_mode(mode: Mode, status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Server {
        let status: Arc<dyn Fn(usize) -> u16 + Send + Sync> = Arc::new(status);
        let s = status.clone();
        let inner = TestServer::start(mode, move |_, n| (s(n), b"ok".to_vec()));
        Server { inner, status }
    }

    fn url(&self) -> String {
        self.inner.url()
    }

    fn ok_requests(&self) -> Vec<Recorded> {
        self.inner
            .requests()
            .into_iter()
            .enumerate()
            .filter(|(n, _)| (self.status)(*n) == 200)
            .map(|(_, r)| r)
            .collect()
    }

    fn count(&self) -> usize {
        self.inner.request_count()
    }
}

fn spawn(nsqd: &TestNsqd, topic: &str, extra: &[String]) -> Guard {
    Guard(
        tool("nsq_to_http")
            .arg(format!("--topic={topic}"))
            .arg(format!("--nsqd-tcp-address={}", nsqd.tcp))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nsq_to_http"),
    )
}

fn drained(nsqd: &TestNsqd, topic: &str, total: i64) -> bool {
    nsqd.channel_stats(topic, "nsq_to_http").is_some_and(|c| {
        num(&c, "depth") == 0
            && num(&c, "in_flight_count") == 0
            && num(&c, "deferred_count") == 0
            && num(&c, "message_count") == total
    })
}

fn stop(child: &mut Guard) {
    send_signal(child.id(), "INT");
    let status = wait_exit(child, WAIT, "nsq_to_http after SIGINT");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn post_delivers_every_body() {
    let nsqd = TestNsqd::start(&[]);
    let server = Server::start(|_| 200);
    let bodies: Vec<String> = (0..300).map(|i| format!("post body {i}")).collect();
    nsqd.mpub("hooks", &bodies);
    let mut child = spawn(
        &nsqd,
        "hooks",
        &[
            format!("--post={}/ingest?x=1", server.url()),
            "--header=X-Test: yes".into(),
            "--content-type=text/plain".into(),
            "-n".into(),
            "8".into(),
        ],
    );
    wait_until(WAIT, "all delivered", || drained(&nsqd, "hooks", 300));
    stop(&mut child);
    let reqs = server.ok_requests();
    let mut got: Vec<String> = reqs
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    got.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(got, want);
    let r = &reqs[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/ingest?x=1")
    );
    assert_eq!(r.header("x-test"), Some("yes"), "{:?}", r.headers);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain"),
        "{:?}",
        r.headers
    );
    assert!(
        r.header("user-agent")
            .is_some_and(|ua| ua.starts_with("nsq_to_http/1.3.0 nsq-rs/")),
        "{:?}",
        r.headers
    );
    // Keep-alive: 300 requests, at most -n (8) at a time, over a few reused connections.
    assert!(
        server.inner.connections() <= 16,
        "{} connections for {} requests",
        server.inner.connections(),
        reqs.len()
    );
}

#[test]
fn post_to_an_https_endpoint_reuses_connections() {
    let pki = Pki::new();
    let nsqd = TestNsqd::start(&[]);
    let server = Server::start_mode(Mode::https(&pki), |_| 200);
    let bodies: Vec<String> = (0..500).map(|i| format!("secure body {i}")).collect();
    nsqd.mpub("secure_hooks", &bodies);
    let mut child = spawn(
        &nsqd,
        "secure_hooks",
        &[
            format!("--post={}/in", server.url()),
            format!("--http-client-tls-root-ca-file={}", pki.ca.display()),
            "-n".into(),
            "4".into(),
        ],
    );
    wait_until(WAIT, "all delivered over https", || {
        drained(&nsqd, "secure_hooks", 500)
    });
    stop(&mut child);
    let reqs = server.ok_requests();
    let mut got: Vec<String> = reqs
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    got.sort();
    let mut want = bodies.clone();
    want.sort();
    assert_eq!(got, want);
    assert!(server.url().starts_with("https://"));
    let conns = server.inner.connections();
    assert!(
        conns <= 8 && conns < reqs.len(),
        "{conns} TLS connections for {} requests (-n 4)",
        reqs.len()
    );
}

#[test]
fn https_endpoint_with_an_unknown_certificate_is_refused_and_requeued() {
    let pki = Pki::new();
    let nsqd = TestNsqd::start(&[]);
    let server = Server::start_mode(Mode::https(&pki), |_| 200);
    nsqd.mpub("untrusted", &["x".to_owned()]);
    // No CA file: the system roots do not know the test CA.
    let mut child = spawn(
        &nsqd,
        "untrusted",
        &[
            format!("--post={}/in", server.url()),
            "--consumer-opt=default_requeue_delay,10ms".into(),
            "--consumer-opt=backoff_multiplier,10ms".into(),
        ],
    );
    wait_until(WAIT, "a requeue", || {
        nsqd.channel_stats("untrusted", "nsq_to_http")
            .is_some_and(|c| num(&c, "requeue_count") >= 2)
    });
    stop(&mut child);
    assert_eq!(
        server.count(),
        0,
        "no request may pass an unverified handshake"
    );
}

#[test]
fn server_errors_requeue_until_success() {
    let nsqd = TestNsqd::start(&[]);
    // The first 4 requests fail.
    let server = Server::start(|n| if n < 4 { 500 } else { 200 });
    let bodies: Vec<String> = vec!["one".into(), "two".into(), "three".into()];
    nsqd.mpub("flaky", &bodies);
    let mut child = spawn(
        &nsqd,
        "flaky",
        &[
            format!("--post={}/", server.url()),
            "--consumer-opt=default_requeue_delay,50ms".into(),
            "--consumer-opt=backoff_multiplier,10ms".into(),
            "--consumer-opt=max_backoff_duration,100ms".into(),
        ],
    );
    wait_until(WAIT, "all delivered", || drained(&nsqd, "flaky", 3));
    stop(&mut child);
    let mut got: Vec<String> = server
        .ok_requests()
        .iter()
        .map(|r| String::from_utf8(r.body.clone()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, ["one", "three", "two"]);
    assert!(server.count() >= 7, "only {} requests", server.count());
    let c = nsqd.channel_stats("flaky", "nsq_to_http").unwrap();
    assert!(num(&c, "requeue_count") >= 4, "{c}");
}

#[test]
fn get_escapes_the_body_into_the_url() {
    let nsqd = TestNsqd::start(&[]);
    let server = Server::start(|_| 200);
    let bodies: Vec<String> = vec!["a b&c=d".into(), "100%/x".into()];
    nsqd.mpub("gets", &bodies);
    let mut child = spawn(
        &nsqd,
        "gets",
        &[format!("--get={}/hit?data=%s&v=1", server.url())],
    );
    wait_until(WAIT, "all delivered", || drained(&nsqd, "gets", 2));
    stop(&mut child);
    let mut paths: Vec<String> = server
        .ok_requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["/hit?data=100%25%2Fx&v=1", "/hit?data=a+b%26c%3Dd&v=1"]
    );
}

#[test]
fn bad_flags_fail_clearly() {
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--bogus"], 2, "--bogus"),
        (
            vec!["--nsqd-tcp-address=127.0.0.1:1", "--post=http://x/"],
            1,
            "--topic and --channel are required",
        ),
        (
            vec!["--topic=t", "--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "--get or --post required",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--post=http://x/",
                "--get=http://x/%s",
            ],
            1,
            "use --get or --post not both",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--get=http://x/",
            ],
            1,
            "invalid GET address - must be a printf string",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--post=ftp://x/",
            ],
            1,
            "unsupported scheme",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--post=http://x/",
                "--header=nocolon",
            ],
            1,
            "invalid header format",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--get=http://x/%s",
                "--content-type=a/b",
            ],
            1,
            "--content-type only used with --post",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--post=http://x/",
            ],
            1,
            "failed to connect to nsqd 127.0.0.1:1",
        ),
    ];
    for (args, code, needle) in cases {
        let (status, _, err) = run_with_stdin(tool("nsq_to_http").args(&args), b"", WAIT);
        assert_eq!(status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{err}"
        );
    }
}
