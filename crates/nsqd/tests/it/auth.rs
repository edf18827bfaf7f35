//! AUTH through the real wire: the `nsqd` binary asks a small real auth HTTP server (axum, on
//! its own runtime thread, loopback, free port) what a secret allows; raw V2 clients and
//! pynsq (`auth_secret`) drive it. Over HTTPS, nsq-http-client's test server (rcgen PKI,
//! counting connections) plays the auth server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use nsq_http_client::testing::{Mode, Pki as HttpPki, Recorded, TestServer};
use serde_json::{json, Value};

use crate::harness::TestNsqd;
use crate::tls::{start_tls, Pki, Wire};

/// One request the auth server received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Query parameters (GET) or the JSON body's arrays' first values (POST).
    pub values: Vec<(String, String)>,
    pub raw_body: String,
    pub accept: String,
}

impl Seen {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    seen: Vec<Seen>,
    /// secret → (status, body); unknown secrets get 403 `{"message":"NO"}`.
    answers: Vec<(String, u16, Value)>,
}

/// A real HTTP auth server on 127.0.0.1:0, serving any path.
pub struct AuthServer {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn handle(
    State(shared): State<Arc<Mutex<Shared>>>,
    method: Method,
    uri: axum::http::Uri,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: String,
) -> impl IntoResponse {
    let values: Vec<(String, String)> = if method == Method::POST {
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v[0].as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        form_urlencoded::parse(q.unwrap_or_default().as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    let secret = values
        .iter()
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut s = shared.lock().unwrap();
    s.seen.push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        values,
        raw_body: body,
        accept: headers
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
    });
    let (status, body) = s
        .answers
        .iter()
        .find(|(k, _, _)| *k == secret)
        .map(|(_, st, b)| (*st, b.clone()))
        .unwrap_or((403, json!({"message": "NO"})));
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
}

impl AuthServer {
    pub fn start() -> AuthServer {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(l.local_addr().unwrap()).unwrap();
                let app = Router::new().fallback(handle).with_state(sh);
                axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("auth server started");
        AuthServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Answers `secret` with `status` and `body` (replacing an earlier answer).
    pub fn answer(&self, secret: &str, status: u16, body: Value) {
        let mut s = self.shared.lock().unwrap();
        s.answers.retain(|(k, _, _)| k != secret);
        s.answers.push((secret.to_string(), status, body));
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().unwrap().seen.clone()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The usual grant: publish to `^pub` (channel regex `.*` matches ""), subscribe to `sub`
/// topics on channels starting with `ok`.
pub fn grant(ttl: u64) -> Value {
    json!({
        "ttl": ttl,
        "identity": "alice",
        "identity_url": "https://example.invalid/alice",
        "authorizations": [
            {"topic": "^pub", "channels": [".*"], "permissions": ["publish"]},
            {"topic": "^sub", "channels": ["^ok"], "permissions": ["subscribe"]}
        ]
    })
}

async fn authed_wire(nsqd: &TestNsqd, secret: &str) -> Wire {
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w.identify(json!({})).await;
    assert_eq!(resp["auth_required"], json!(true), "{resp}");
    w.send_cmd("AUTH", Some(secret.as_bytes())).await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_get_grants_and_refusals() {
    let srv = AuthServer::start();
    srv.answer("good", 200, grant(3600));
    let nsqd = TestNsqd::start(&[&format!("--auth-http-address={}", srv.addr)]);

    // PUB/SUB before AUTH.
    for (line, body, name) in [
        ("PUB pub_t", Some(&b"x"[..]), "PUB"),
        ("SUB sub_t ok", None, "SUB"),
    ] {
        let mut w = Wire::connect(nsqd.tcp_addr()).await;
        w.identify(json!({})).await;
        w.send_cmd(line, body).await;
        let e = w.expect_error("E_AUTH_FIRST").await;
        assert_eq!(e, format!("E_AUTH_FIRST AUTH required before {name}"));
        assert!(w.try_frame().await.is_err(), "fatal");
    }

    // A good secret: the AUTH response, then what the grant allows.
    let mut w = authed_wire(&nsqd, "good").await;
    let f = w.frame().await;
    let resp: Value = serde_json::from_slice(&f.data).unwrap();
    assert_eq!(
        resp,
        json!({"identity": "alice", "identity_url": "https://example.invalid/alice", "permission_count": 2})
    );
    w.send_cmd("PUB pub_t", Some(b"hello")).await;
    w.expect_ok().await;
    w.send_cmd("DPUB pub_t 10", Some(b"later")).await;
    w.expect_ok().await;
    w.send_cmd("PUB sub_t", Some(b"no")).await;
    let e = w.expect_error("E_UNAUTHORIZED").await;
    assert_eq!(e, r#"E_UNAUTHORIZED AUTH failed for PUB on "sub_t" """#);

    let mut c = authed_wire(&nsqd, "good").await;
    c.frame().await;
    c.send_cmd("SUB sub_t ok-channel", None).await;
    c.expect_ok().await;
    let mut c2 = authed_wire(&nsqd, "good").await;
    c2.frame().await;
    c2.send_cmd("SUB sub_t other", None).await;
    let e = c2.expect_error("E_UNAUTHORIZED").await;
    assert_eq!(
        e,
        r#"E_UNAUTHORIZED AUTH failed for SUB on "sub_t" "other""#
    );

    // /stats shows who the client is.
    let st = nsqd.channel_stats("sub_t", "ok-channel").unwrap();
    let cl = &st["clients"][0];
    assert_eq!(cl["authed"], json!(true), "{cl}");
    assert_eq!(cl["auth_identity"], json!("alice"));
    assert_eq!(
        cl["auth_identity_url"],
        json!("https://example.invalid/alice")
    );

    // What nsqd sent: Go's GET with `secret` (not `auth_secret`).
    let seen = srv.seen();
    let q = seen.last().unwrap();
    assert_eq!((q.method.as_str(), q.path.as_str()), ("GET", "/auth"));
    assert_eq!(q.get("secret"), Some("good"));
    assert_eq!(q.get("remote_ip"), Some("127.0.0.1"));
    assert_eq!(q.get("tls"), Some("false"));
    assert_eq!(q.get("common_name"), Some(""));
    assert_eq!(q.accept, "application/vnd.nsq; version=1.0");
    // One query per AUTH: the grant is cached for its TTL.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_error_cases() {
    let srv = AuthServer::start();
    srv.answer("good", 200, grant(3600));
    srv.answer(
        "empty",
        200,
        json!({"ttl": 60, "identity": "nobody", "authorizations": []}),
    );
    srv.answer("bad-ttl", 200, json!({"ttl": 0, "authorizations": []}));
    srv.answer("boom", 500, json!({"message": "INTERNAL_ERROR"}));
    let nsqd = TestNsqd::start(&[&format!("--auth-http-address={}", srv.addr)]);

    let mut w = authed_wire(&nsqd, "empty").await;
    assert_eq!(
        w.expect_error("E_UNAUTHORIZED").await,
        "E_UNAUTHORIZED AUTH no authorizations found"
    );
    for secret in ["bad-ttl", "boom", "unknown"] {
        let mut w = authed_wire(&nsqd, secret).await;
        // Details (status, body) are logged, never sent to the client.
        assert_eq!(
            w.expect_error("E_AUTH_FAILED").await,
            "E_AUTH_FAILED AUTH failed"
        );
        assert!(w.try_frame().await.is_err(), "fatal");
    }
    nsqd.wait_for_log("AUTH failed failed to auth against", Duration::from_secs(5));

    let mut w = authed_wire(&nsqd, "good").await;
    w.frame().await;
    w.send_cmd("AUTH", Some(b"good")).await;
    assert_eq!(
        w.expect_error("E_INVALID").await,
        "E_INVALID AUTH already set"
    );

    // A daemon without auth servers.
    let plain = TestNsqd::start(&[]);
    let mut w = Wire::connect(plain.tcp_addr()).await;
    let resp = w.identify(json!({})).await;
    assert_eq!(resp["auth_required"], json!(false));
    w.send_cmd("AUTH", Some(b"x")).await;
    assert_eq!(
        w.expect_error("E_AUTH_DISABLED").await,
        "E_AUTH_DISABLED AUTH disabled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_post_and_ttl_reauthorisation() {
    let srv = AuthServer::start();
    srv.answer("short", 200, grant(1));
    let nsqd = TestNsqd::start(&[
        &format!("--auth-http-address=http://{}/custom/path", srv.addr),
        "--auth-http-request-method=post",
    ]);
    let mut w = authed_wire(&nsqd, "short").await;
    w.frame().await;
    w.send_cmd("PUB pub_t", Some(b"1")).await;
    w.expect_ok().await;
    assert_eq!(srv.seen().len(), 1);
    let q = &srv.seen()[0];
    assert_eq!(
        (q.method.as_str(), q.path.as_str()),
        ("POST", "/custom/path")
    );
    let body: Value = serde_json::from_str(&q.raw_body).unwrap();
    assert_eq!(
        body,
        json!({"common_name": [""], "remote_ip": ["127.0.0.1"], "secret": ["short"], "tls": ["false"]})
    );

    // The TTL (1 s) runs out: the next PUB asks again, then goes through.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    w.send_cmd("PUB pub_t", Some(b"2")).await;
    w.expect_ok().await;
    assert_eq!(srv.seen().len(), 2);

    // Expired again, and now the auth server refuses: fatal E_AUTH_FAILED.
    srv.answer("short", 500, json!({"message": "down"}));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    w.send_cmd("PUB pub_t", Some(b"3")).await;
    assert_eq!(
        w.expect_error("E_AUTH_FAILED").await,
        "E_AUTH_FAILED AUTH failed"
    );
    let depth = nsqd.topic_stats("pub_t").unwrap()["message_count"].clone();
    assert_eq!(depth, json!(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_over_tls_sends_the_certificate_common_name() {
    let srv = AuthServer::start();
    srv.answer("good", 200, grant(3600));
    let pki = Pki::new();
    let root = format!("--tls-root-ca-file={}", pki.path("ca.pem").display());
    let nsqd = start_tls(
        &pki,
        &[
            &format!("--auth-http-address={}", srv.addr),
            "--tls-client-auth-policy=require-verify",
            &root,
        ],
    );
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w.identify(json!({"tls_v1": true})).await;
    assert_eq!(resp["auth_required"], json!(true));
    w.follow_upgrades(&resp, Some(pki.client_config(Some("client"))))
        .await;
    w.send_cmd("AUTH", Some(b"good")).await;
    w.frame().await;
    w.send_cmd("PUB pub_tls", Some(b"x")).await;
    w.expect_ok().await;
    let q = srv.seen().pop().unwrap();
    assert_eq!(q.get("tls"), Some("true"));
    assert_eq!(q.get("common_name"), Some("client-cn"));
}

/// An auth server of `nsq_http_client::testing` (plain or HTTPS, counting connections) that
/// grants [`grant`] to the secret `good` (from a GET's query or a POST's JSON body) and
/// refuses anything else.
fn recording_auth_server(mode: Mode) -> TestServer {
    TestServer::start(mode, |r: &Recorded, _| {
        let secret = if r.method == "POST" {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["secret"][0].as_str().unwrap_or("").to_string()
        } else {
            let q = r.path.split_once('?').map_or("", |(_, q)| q);
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "secret")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        if secret == "good" {
            (200, grant(3600).to_string().into_bytes())
        } else {
            (403, br#"{"message":"NO"}"#.to_vec())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_over_https_trusts_the_tls_root_ca_file_one_connection_per_query() {
    let pki = HttpPki::new();
    let srv = recording_auth_server(Mode::https(&pki));
    let nsqd = TestNsqd::start(&[
        &format!("--auth-http-address={}/auth", srv.url()),
        &format!("--tls-root-ca-file={}", pki.ca.display()),
    ]);
    for i in 0..2 {
        let mut w = authed_wire(&nsqd, "good").await;
        let resp: Value = serde_json::from_slice(&w.frame().await.data).unwrap();
        assert_eq!(resp["identity"], json!("alice"), "{resp}");
        w.send_cmd("PUB pub_https", Some(format!("m{i}").as_bytes()))
            .await;
        w.expect_ok().await;
    }
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.method, "GET");
        assert_eq!(
            r.path,
            "/auth?common_name=&remote_ip=127.0.0.1&secret=good&tls=false"
        );
        assert_eq!(r.header("accept"), Some("application/vnd.nsq; version=1.0"));
        assert!(
            r.header("user-agent")
                .is_some_and(|u| u.starts_with("nsqd/")),
            "{r:?}"
        );
        // As Go: nsqd's client TLS configuration has no certificate of its own.
        assert!(!r.client_cert, "{r:?}");
        // Go builds a new HTTP client for every auth query, so it never reuses a connection
        // across AUTH commands; neither do we.
        assert_eq!(r.connection, i, "{reqs:?}");
    }
    assert_eq!(srv.connections(), 2);
    assert_eq!(
        nsqd.topic_stats("pub_https").unwrap()["message_count"],
        json!(2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_https_without_the_ca_is_refused_and_tls_required_is_followed() {
    let pki = HttpPki::new();
    let https = recording_auth_server(Mode::https(&pki));

    // No --tls-root-ca-file: the system roots (which do not hold the test CA) are trusted,
    // so the handshake fails and so does AUTH; the secret is not sent.
    let nsqd = TestNsqd::start(&[&format!("--auth-http-address={}/auth", https.url())]);
    let mut w = authed_wire(&nsqd, "good").await;
    assert_eq!(
        w.expect_error("E_AUTH_FAILED").await,
        "E_AUTH_FAILED AUTH failed"
    );
    let line = nsqd.wait_for_log("failed to auth against", Duration::from_secs(5));
    assert!(line.contains("certificate"), "{line}");
    assert!(
        !line.contains("secret=good"),
        "the secret stays out of the log: {line}"
    );
    assert_eq!(https.request_count(), 0);
    assert!(https.connections() >= 1);
    drop(nsqd);

    // A plain auth server answering Go's TLS_REQUIRED 403: the query is sent again over
    // HTTPS to the port the body names (Go's httpsEndpoint), here as a POST.
    let port = https.addr.port();
    let plain = TestServer::start(Mode::Http, move |_, _| {
        (
            403,
            format!(r#"{{"message":"TLS_REQUIRED","https_port":{port}}}"#).into_bytes(),
        )
    });
    let nsqd = TestNsqd::start(&[
        &format!("--auth-http-address={}", plain.addr),
        "--auth-http-request-method=post",
        &format!("--tls-root-ca-file={}", pki.ca.display()),
    ]);
    let mut w = authed_wire(&nsqd, "good").await;
    w.frame().await;
    w.send_cmd("PUB pub_redirect", Some(b"x")).await;
    w.expect_ok().await;
    let first = plain.requests();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(
        (first[0].method.as_str(), first[0].path.as_str()),
        ("POST", "/auth")
    );
    let r = https.requests().pop().expect("the HTTPS retry");
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/auth"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body,
        json!({"common_name": [""], "remote_ip": ["127.0.0.1"], "secret": ["good"], "tls": ["false"]})
    );
}
