//! `to_nsq` and `nsq_tail` with go-nsq's TLS, compression and AUTH options passed through
//! `--producer-opt` / `--consumer-opt`, against a real nsqd that requires TLS and AUTH (with
//! certificates generated here and a small auth server run by the test), and the refusals a
//! user sees when an option is missing or wrong.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::harness::{num, run_with_stdin, TestNsqd, WAIT};
use crate::tool;

use nsq_http_client::testing::Pki;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A blocking auth server: secret `good` may publish and subscribe everywhere as `x`;
/// anything else gets no authorizations. Records the query strings it was asked.
fn auth_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = queries.clone();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => req.extend_from_slice(&buf[..k]),
                }
            }
            let req = String::from_utf8_lossy(&req).into_owned();
            let target = req.split(' ').nth(1).unwrap_or_default();
            let query = target.split_once('?').map_or("", |(_, q)| q).to_owned();
            let good = query.split('&').any(|kv| kv == "secret=good");
            seen.lock().unwrap().push(query);
            let body = if good {
                r#"{"ttl":3600,"identity":"x","identity_url":"","authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe","publish"]}]}"#
            } else {
                r#"{"ttl":3600,"identity":"","identity_url":"","authorizations":[]}"#
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, queries)
}

#[test]
fn to_nsq_and_nsq_tail_over_tls_with_compression_and_auth() {
    let pki = Pki::new();
    let (auth_addr, queries) = auth_server();
    let nsqd = TestNsqd::start(&[
        "--https-address=127.0.0.1:0",
        &format!("--tls-cert={}", p(&pki.server_cert)),
        &format!("--tls-key={}", p(&pki.server_key)),
        "--tls-required=tcp-https",
        &format!("--auth-http-address={auth_addr}"),
    ]);
    let ca_opt = format!("tls_root_ca_file,{}", p(&pki.ca));
    let lines: Vec<String> = (0..100).map(|i| format!("secure line {i}")).collect();
    let input = lines.join("\n");

    let mut cmd = tool("to_nsq");
    cmd.args(["--topic=secure", "--nsqd-tcp-address", &nsqd.tcp_addr()]);
    for opt in ["tls_v1,true", &ca_opt, "snappy,true", "auth_secret,good"] {
        cmd.args(["--producer-opt", opt]);
    }
    let (status, out, err) = run_with_stdin(&mut cmd, input.as_bytes(), WAIT);
    assert!(status.success(), "to_nsq: {status}\n{out}\n{err}");
    assert_eq!(
        num(&nsqd.topic_stats("secure").unwrap(), "message_count"),
        100
    );

    let mut cmd = tool("nsq_tail");
    cmd.args([
        "--topic=secure",
        "-n",
        "100",
        "--nsqd-tcp-address",
        &nsqd.tcp_addr(),
    ]);
    // A bare key means "true", as go-nsq's ConfigFlag does.
    for opt in [
        "tls_v1",
        &ca_opt,
        "deflate,true",
        "deflate_level,1",
        "auth_secret,good",
    ] {
        cmd.arg(format!("--consumer-opt={opt}"));
    }
    let (status, out, err) = run_with_stdin(&mut cmd, b"", WAIT);
    assert!(status.success(), "nsq_tail: {status}\n{out}\n{err}");
    assert_eq!(out.lines().collect::<Vec<_>>(), lines);
    let queries = queries.lock().unwrap().clone();
    assert!(
        queries
            .iter()
            .any(|q| q.contains("secret=good") && q.contains("tls=true")),
        "{queries:?}"
    );

    // What users see when an option is missing or wrong.
    let refusals: [(&str, Vec<String>, &str); 4] = [
        (
            "to_nsq",
            vec!["--producer-opt=auth_secret,good".into()],
            "TLS required",
        ),
        (
            "to_nsq",
            vec![
                "--producer-opt=tls_v1,true".into(),
                format!("--producer-opt={ca_opt}"),
            ],
            "requires AUTH and no auth_secret",
        ),
        (
            "nsq_tail",
            vec![
                "--consumer-opt=tls_v1,true".into(),
                format!("--consumer-opt=tls_root_ca_file,{}", p(&pki.other_ca)),
                "--consumer-opt=auth_secret,good".into(),
            ],
            "TLS: ",
        ),
        (
            "nsq_tail",
            vec![
                "--consumer-opt=tls_v1,true".into(),
                format!("--consumer-opt={ca_opt}"),
                "--consumer-opt=auth_secret,wrong".into(),
            ],
            "E_UNAUTHORIZED",
        ),
    ];
    for (name, opts, want) in refusals {
        let mut cmd = tool(name);
        cmd.args(["--topic=secure", "--nsqd-tcp-address", &nsqd.tcp_addr()]);
        cmd.args(&opts);
        let (status, out, err) = run_with_stdin(&mut cmd, b"one line\n", WAIT);
        assert!(!status.success(), "{name} {opts:?} succeeded\n{out}\n{err}");
        assert!(
            err.contains(want),
            "{name} {opts:?}: want {want:?} in stderr:\n{err}"
        );
    }
}

#[test]
fn bad_tls_and_compression_options_are_rejected_before_connecting() {
    let cases: [(&str, &str, &str); 4] = [
        ("to_nsq", "--producer-opt=deflate_level,12", "deflate_level"),
        ("nsq_tail", "--consumer-opt=tls_cert,/tmp/x.pem", "tls_key"),
        ("to_nsq", "--producer-opt=tls_v1,maybe", "not a boolean"),
        (
            "nsq_tail",
            "--consumer-opt=tls_root_ca_file,/nonexistent/ca.pem",
            "/nonexistent/ca.pem",
        ),
    ];
    for (name, opt, want) in cases {
        let mut cmd = tool(name);
        cmd.args(["--topic=t", "--nsqd-tcp-address=127.0.0.1:1", opt]);
        let (status, out, err) = run_with_stdin(&mut cmd, b"", WAIT);
        assert!(!status.success(), "{name} {opt}: succeeded\n{out}\n{err}");
        assert!(err.contains(want), "{name} {opt}: want {want:?} in:\n{err}");
    }
}
