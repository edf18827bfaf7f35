//! `nsq_to_http` against a tiny HTTP server thread.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::harness::{
    num, run_with_stdin, send_signal, wait_exit, wait_until, Guard, TestNsqd, WAIT,
};
use crate::tool;

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

/// Answers every request with `status(n)` (n = 0-based request count) and records it.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(Request, u16)>>>,
}

impl Server {
    fn start(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<(Request, u16)>>> = Arc::default();
        let status = Arc::new(status);
        let reqs = requests.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { break };
                let reqs = reqs.clone();
                let status = status.clone();
                thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_owned();
                    let path = parts.next().unwrap_or("").to_owned();
                    let mut headers = Vec::new();
                    let mut len = 0;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        let h = h.trim_end().to_owned();
                        if h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        headers.push(h);
                    }
                    let mut body = vec![0; len];
                    r.read_exact(&mut body).unwrap();
                    let code = {
                        let mut g = reqs.lock().unwrap();
                        let code = status(g.len());
                        g.push((
                            Request {
                                method,
                                path,
                                headers,
                                body,
                            },
                            code,
                        ));
                        code
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    );
                });
            }
        });
        Server { addr, requests }
    }

    fn ok_requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c == 200)
            .map(|(r, _)| r.clone())
            .collect()
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
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
            format!("--post=http://{}/ingest?x=1", server.addr),
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
    assert!(
        r.headers.iter().any(|h| h == "X-Test: yes"),
        "{:?}",
        r.headers
    );
    assert!(
        r.headers.iter().any(|h| h == "Content-Type: text/plain"),
        "{:?}",
        r.headers
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
            format!("--post=http://{}/", server.addr),
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
        &[format!("--get=http://{}/hit?data=%s&v=1", server.addr)],
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
                "--post=https://x/",
            ],
            1,
            "https is not supported yet",
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
