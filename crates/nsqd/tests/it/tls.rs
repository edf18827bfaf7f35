//! TLS, snappy and deflate through the real wire: the `nsqd` binary with certificates made by
//! rcgen in the test, driven by a raw V2 client built on `nsq_net::NsqStream` (the same
//! layers the server uses, in their client roles), plus HTTPS and the plain-HTTP 403.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsq_net::rustls;
use nsq_net::NsqStream;
use nsq_protocol::frame::decode_frame;
use nsq_protocol::{Frame, FrameType, Message};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{http_request, TestNsqd};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM
/// files in a temporary directory; plus a client certificate from another CA.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("nsqd-tls-")
            .tempdir()
            .unwrap();
        let write = |name: &str, data: String| std::fs::write(dir.path().join(name), data).unwrap();
        let ca = |cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("nsq-rs test CA");
        let (other_cert, other_key) = ca("some other CA");
        write("ca.pem", ca_cert.pem());

        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "nsqd test server");
        write(
            "server.pem",
            p.signed_by(&key, &ca_cert, &ca_key).unwrap().pem(),
        );
        write("server.key", key.serialize_pem());

        for (name, issuer, issuer_key) in [
            ("client", &ca_cert, &ca_key),
            ("stranger", &other_cert, &other_key),
        ] {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, format!("{name}-cn"));
            write(
                &format!("{name}.pem"),
                p.signed_by(&key, issuer, issuer_key).unwrap().pem(),
            );
            write(&format!("{name}.key"), key.serialize_pem());
        }
        Pki { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, flag: &str, name: &str) -> String {
        format!("--{flag}={}", self.path(name).display())
    }

    /// `--tls-cert`, `--tls-key` and a loopback `--https-address`.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            self.arg("tls-cert", "server.pem"),
            self.arg("tls-key", "server.key"),
            "--https-address=127.0.0.1:0".into(),
        ]
    }

    /// A client configuration trusting the test CA, with the named client certificate.
    pub fn client_config(&self, cert: Option<&str>) -> Arc<rustls::ClientConfig> {
        let ca = self.path("ca.pem");
        let pair = cert.map(|c| {
            (
                self.path(&format!("{c}.pem")),
                self.path(&format!("{c}.key")),
            )
        });
        nsq_net::tls::client_config(&ca, pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())))
            .unwrap()
    }
}

/// Starts nsqd with TLS (plus `extra` flags).
pub fn start_tls(pki: &Pki, extra: &[&str]) -> TestNsqd {
    let mut args = pki.server_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TestNsqd::start(&refs)
}

/// The HTTPS address from the "HTTPS: listening on" log line.
pub fn https_addr(nsqd: &TestNsqd) -> SocketAddr {
    let line = nsqd.wait_for_log("HTTPS: listening on", IO_TIMEOUT);
    let addr = line
        .rsplit("listening on")
        .next()
        .unwrap()
        .trim()
        .trim_matches(|c: char| c == '"' || c.is_whitespace());
    addr.parse()
        .unwrap_or_else(|e| panic!("bad HTTPS address in {line:?}: {e}"))
}

/// A raw V2 client over an [`NsqStream`] that can follow the server's upgrades.
pub struct Wire {
    pub stream: NsqStream<TcpStream>,
    rbuf: BytesMut,
}

impl Wire {
    pub async fn connect(addr: SocketAddr) -> Wire {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"  V2").await.unwrap();
        Wire {
            stream: NsqStream::Plain(s),
            rbuf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn send_cmd(&mut self, line: &str, body: Option<&[u8]>) {
        let mut b = Vec::from(line.as_bytes());
        b.push(b'\n');
        if let Some(body) = body {
            b.extend_from_slice(&(body.len() as u32).to_be_bytes());
            b.extend_from_slice(body);
        }
        self.send(&b).await;
    }

    /// The next frame other than a heartbeat; `Err` on EOF, error or timeout.
    pub async fn try_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = decode_frame(&mut self.rbuf, 16 << 20).map_err(|e| e.to_string())? {
                if f.frame_type == FrameType::Response && &f.data[..] == b"_heartbeat_" {
                    continue;
                }
                return Ok(f);
            }
            let mut chunk = [0u8; 16384];
            let n = tokio::time::timeout(IO_TIMEOUT, self.stream.read(&mut chunk))
                .await
                .map_err(|_| "timed out waiting for a frame".to_string())?
                .map_err(|e| format!("read error: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn frame(&mut self) -> Frame {
        self.try_frame().await.unwrap()
    }

    pub async fn expect_ok(&mut self) {
        let f = self.frame().await;
        assert_eq!(
            (f.frame_type, &f.data[..]),
            (FrameType::Response, &b"OK"[..]),
            "expected OK, got {:?} {:?}",
            f.frame_type,
            String::from_utf8_lossy(&f.data)
        );
    }

    /// Expects an error frame starting with `prefix`; returns its text.
    pub async fn expect_error(&mut self, prefix: &str) -> String {
        let f = self.frame().await;
        let text = String::from_utf8_lossy(&f.data).into_owned();
        assert_eq!(
            f.frame_type,
            FrameType::Error,
            "expected an error, got {text:?}"
        );
        assert!(
            text.starts_with(prefix),
            "expected {prefix:?}..., got {text:?}"
        );
        text
    }

    /// IDENTIFY with feature negotiation; returns the JSON response.
    pub async fn identify(&mut self, mut fields: Value) -> Value {
        fields["feature_negotiation"] = json!(true);
        let body = serde_json::to_vec(&fields).unwrap();
        self.send_cmd("IDENTIFY", Some(&body)).await;
        let f = self.frame().await;
        assert_eq!(
            f.frame_type,
            FrameType::Response,
            "IDENTIFY failed: {}",
            String::from_utf8_lossy(&f.data)
        );
        serde_json::from_slice(&f.data).unwrap()
    }

    /// Follows the upgrades the IDENTIFY response announced, reading each `OK`.
    pub async fn follow_upgrades(&mut self, resp: &Value, tls: Option<Arc<rustls::ClientConfig>>) {
        // The server sends the compressed OK right after the response: bytes already read
        // past the response belong to the compressed stream.
        if resp["tls_v1"] == json!(true) {
            assert!(
                self.rbuf.is_empty(),
                "the server waits for the TLS handshake"
            );
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            self.stream
                .upgrade_tls_client(tls.expect("a TLS config"), name, IO_TIMEOUT)
                .await
                .unwrap();
            self.expect_ok().await;
        }
        if resp["snappy"] == json!(true) {
            let early = self.rbuf.split();
            self.stream.upgrade_snappy(&early).unwrap();
            self.expect_ok().await;
        }
        if resp["deflate"] == json!(true) {
            let level = resp["deflate_level"].as_u64().unwrap() as u32;
            let early = self.rbuf.split();
            self.stream.upgrade_deflate(level, &early).unwrap();
            self.expect_ok().await;
        }
    }

    pub async fn message(&mut self) -> Message {
        let f = self.frame().await;
        assert_eq!(
            f.frame_type,
            FrameType::Message,
            "{:?}",
            String::from_utf8_lossy(&f.data)
        );
        Message::decode(f.data).unwrap()
    }
}

/// Publishes `bodies` with PUB and MPUB and consumes them back on `ch`, FINning each.
pub async fn pub_sub_round_trip(publisher: &mut Wire, consumer: &mut Wire, topic: &str) {
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 7) as u8 + b'a').collect();
    consumer.send_cmd(&format!("SUB {topic} ch"), None).await;
    consumer.expect_ok().await;
    consumer.send_cmd("RDY 10", None).await;
    publisher
        .send_cmd(&format!("PUB {topic}"), Some(b"first"))
        .await;
    publisher.expect_ok().await;
    let mut mpub = Vec::new();
    mpub.extend_from_slice(&2u32.to_be_bytes());
    for b in [&b"second"[..], &big[..]] {
        mpub.extend_from_slice(&(b.len() as u32).to_be_bytes());
        mpub.extend_from_slice(b);
    }
    publisher
        .send_cmd(&format!("MPUB {topic}"), Some(&mpub))
        .await;
    publisher.expect_ok().await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = consumer.message().await;
        consumer.send_cmd(&format!("FIN {}", m.id), None).await;
        got.push(m.body.to_vec());
    }
    assert_eq!(got, vec![b"first".to_vec(), b"second".to_vec(), big]);
}

fn client_stats(nsqd: &TestNsqd) -> Vec<Value> {
    let stats = nsqd.stats("");
    let mut all: Vec<Value> = stats["producers"].as_array().cloned().unwrap_or_default();
    for t in stats["topics"].as_array().into_iter().flatten() {
        for c in t["channels"].as_array().into_iter().flatten() {
            all.extend(c["clients"].as_array().cloned().unwrap_or_default());
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upgrade_then_pub_sub_with_stats() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &[]);
    let cfg = pki.client_config(None);
    let mut p = Wire::connect(nsqd.tcp_addr()).await;
    let resp = p
        .identify(json!({"tls_v1": true, "client_id": "tls-pub"}))
        .await;
    assert_eq!(resp["tls_v1"], json!(true));
    assert_eq!(resp["snappy"], json!(false));
    p.follow_upgrades(&resp, Some(cfg.clone())).await;
    let mut c = Wire::connect(nsqd.tcp_addr()).await;
    let resp = c
        .identify(json!({"tls_v1": true, "client_id": "tls-sub"}))
        .await;
    c.follow_upgrades(&resp, Some(cfg)).await;
    pub_sub_round_trip(&mut p, &mut c, "tls_topic").await;

    let clients = client_stats(&nsqd);
    assert_eq!(clients.len(), 2, "{clients:?}");
    for cl in clients {
        assert_eq!(cl["tls"], json!(true), "{cl}");
        assert_eq!(cl["tls_version"], json!("TLS1.3"), "{cl}");
        assert!(
            cl["tls_cipher_suite"].as_str().unwrap().starts_with("TLS_"),
            "{cl}"
        );
        assert_eq!(cl["snappy"], json!(false));
        assert_eq!(cl["deflate"], json!(false));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_alone_and_over_tls() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--max-deflate-level=3"]);
    let cfg = pki.client_config(None);
    let cases = [
        (json!({"snappy": true}), "snappy"),
        (json!({"deflate": true, "deflate_level": 9}), "deflate"),
        (json!({"tls_v1": true, "snappy": true}), "TLS+snappy"),
        (json!({"tls_v1": true, "deflate": true}), "TLS+deflate"),
    ];
    for (i, (ask, layers)) in cases.into_iter().enumerate() {
        let topic = format!("compressed_{i}");
        let mut p = Wire::connect(nsqd.tcp_addr()).await;
        let resp = p.identify(ask.clone()).await;
        if layers.contains("deflate") {
            // Asked 9 (or the default 6), capped by --max-deflate-level=3.
            assert_eq!(resp["deflate_level"], json!(3), "{resp}");
            assert_eq!(resp["max_deflate_level"], json!(3));
        }
        p.follow_upgrades(&resp, Some(cfg.clone())).await;
        assert_eq!(p.stream.describe(), layers);
        let mut c = Wire::connect(nsqd.tcp_addr()).await;
        let resp = c.identify(ask.clone()).await;
        c.follow_upgrades(&resp, Some(cfg.clone())).await;
        pub_sub_round_trip(&mut p, &mut c, &topic).await;

        let stats = nsqd.channel_stats(&topic, "ch").unwrap();
        let cl = &stats["clients"][0];
        assert_eq!(cl["snappy"], json!(layers.contains("snappy")), "{cl}");
        assert_eq!(cl["deflate"], json!(layers.contains("deflate")), "{cl}");
        assert_eq!(cl["tls"], json!(layers.contains("TLS")), "{cl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_follows_the_flags() {
    // No certificate: tls_v1 is refused and the connection stays plain and usable.
    // --snappy=false / --deflate=false: compression is refused.
    let nsqd = TestNsqd::start(&["--snappy=false", "--deflate=false"]);
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w
        .identify(json!({"tls_v1": true, "snappy": true, "deflate": true}))
        .await;
    assert_eq!(
        (&resp["tls_v1"], &resp["snappy"], &resp["deflate"]),
        (&json!(false), &json!(false), &json!(false)),
        "{resp}"
    );
    assert_eq!(resp["deflate_level"], json!(6));
    w.send_cmd("PUB plain_after_refusal", Some(b"x")).await;
    w.expect_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_compressions_are_refused() {
    let nsqd = TestNsqd::start(&[]);
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let body =
        serde_json::to_vec(&json!({"feature_negotiation": true, "snappy": true, "deflate": true}))
            .unwrap();
    w.send_cmd("IDENTIFY", Some(&body)).await;
    let text = w.expect_error("E_IDENTIFY_FAILED").await;
    assert_eq!(
        text,
        "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
    );
    assert!(w.try_frame().await.is_err(), "fatal: the connection closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_commands_before_tls() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--tls-required=tcp-https"]);
    // Any command but IDENTIFY, before TLS: fatal E_INVALID.
    for (line, body, name) in [
        ("PUB t", Some(&b"x"[..]), "PUB"),
        ("SUB t c", None, "SUB"),
        ("NOP", None, "NOP"),
        ("FIN 0123456789abcdef", None, "FIN"),
    ] {
        let mut w = Wire::connect(nsqd.tcp_addr()).await;
        w.send_cmd(line, body).await;
        let text = w.expect_error("E_INVALID").await;
        assert_eq!(
            text,
            format!("E_INVALID cannot {name} in current state (TLS required)")
        );
        assert!(w.try_frame().await.is_err(), "fatal: the connection closes");
    }
    // IDENTIFY without TLS is allowed, but the next command is still refused.
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w.identify(json!({})).await;
    assert_eq!(resp["tls_v1"], json!(false));
    w.send_cmd("PUB t", Some(b"x")).await;
    w.expect_error("E_INVALID cannot PUB in current state (TLS required)")
        .await;
    // With TLS everything works.
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w.identify(json!({"tls_v1": true})).await;
    w.follow_upgrades(&resp, Some(pki.client_config(None)))
        .await;
    w.send_cmd("PUB t", Some(b"x")).await;
    w.expect_ok().await;
    // tcp-https leaves plain HTTP open.
    let r = http_request(nsqd.http_addr(), "GET", "/ping", b"");
    assert_eq!((r.status, r.text()), (200, "OK".to_string()));
}

/// Connects, negotiates TLS with `cert` and publishes; `Err` describes how it failed.
async fn publish_over_tls(nsqd: &TestNsqd, cfg: Arc<rustls::ClientConfig>) -> Result<(), String> {
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w.identify(json!({"tls_v1": true})).await;
    assert_eq!(resp["tls_v1"], json!(true));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    w.stream
        .upgrade_tls_client(cfg, name, IO_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    // With TLS 1.3 a refused client certificate surfaces on the first read.
    let f = w.try_frame().await?;
    if &f.data[..] != b"OK" {
        return Err(format!(
            "unexpected frame {:?}",
            String::from_utf8_lossy(&f.data)
        ));
    }
    w.send_cmd("PUB cert_topic", Some(b"x")).await;
    let f = w.try_frame().await?;
    if &f.data[..] != b"OK" {
        return Err(format!(
            "PUB answered {:?}",
            String::from_utf8_lossy(&f.data)
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_policies() {
    let pki = Pki::new();
    let ca = format!("--tls-root-ca-file={}", pki.path("ca.pem").display());
    let nsqd = start_tls(&pki, &["--tls-client-auth-policy=require-verify", &ca]);
    publish_over_tls(&nsqd, pki.client_config(Some("client")))
        .await
        .expect("a certificate from the CA is accepted");
    let err = publish_over_tls(&nsqd, pki.client_config(None))
        .await
        .expect_err("no client certificate must be refused");
    eprintln!("without a certificate: {err}");
    publish_over_tls(&nsqd, pki.client_config(Some("stranger")))
        .await
        .expect_err("a certificate from another CA must be refused");
    // The client-auth policy implies --tls-required: plain commands are refused.
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    w.send_cmd("PUB t", Some(b"x")).await;
    w.expect_error("E_INVALID cannot PUB in current state (TLS required)")
        .await;
    drop(nsqd);

    // `require`: any certificate, not verified.
    let nsqd = start_tls(&pki, &["--tls-client-auth-policy=require"]);
    publish_over_tls(&nsqd, pki.client_config(Some("stranger")))
        .await
        .expect("require accepts an unverified certificate");
    publish_over_tls(&nsqd, pki.client_config(None))
        .await
        .expect_err("require still needs a certificate");
}

/// A client configuration trusting the test CA that offers TLS 1.2 only (an old client).
fn tls12_only_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in nsq_net::tls::load_certs(&pki.path("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// `--tls-min-version`: a client offering only older versions is refused at the handshake
/// (and no command gets through); clients from the minimum up are served, and `/stats` shows
/// the version negotiated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_min_version_refuses_older_clients() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--tls-min-version=tls1.3"]);
    let err = publish_over_tls(&nsqd, tls12_only_client(&pki))
        .await
        .expect_err("a TLS 1.2 client must be refused with --tls-min-version=tls1.3");
    eprintln!("TLS 1.2 client against tls1.3: {err}");
    assert!(
        err.contains("ProtocolVersion"),
        "refused for the wrong reason: {err}"
    );
    let topics = nsqd.stats("")["topics"].clone();
    assert!(
        !topics.to_string().contains("cert_topic"),
        "nothing was published: {topics}"
    );
    let mut w = Wire::connect(nsqd.tcp_addr()).await;
    let resp = w.identify(json!({"tls_v1": true})).await;
    w.follow_upgrades(&resp, Some(pki.client_config(None)))
        .await;
    w.send_cmd("SUB tls_versions ch", None).await;
    w.expect_ok().await;
    let client = &client_stats(&nsqd)[0];
    assert_eq!(client["tls_version"], "TLS1.3", "{client}");
    drop(w);
    drop(nsqd);

    // tls1.2 (and Go's default tls1.0, which rustls reads as 1.2) serves the old client.
    for flag in ["--tls-min-version=tls1.2", "--tls-min-version=tls1.0"] {
        let nsqd = start_tls(&pki, &[flag]);
        publish_over_tls(&nsqd, tls12_only_client(&pki))
            .await
            .unwrap_or_else(|e| panic!("{flag}: a TLS 1.2 client is served: {e}"));
    }
}

/// A one-request HTTP/1.1 GET over TLS; returns (status, body).
pub async fn https_get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = nsq_net::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A server may close without close_notify; take what arrived.
    let _ = tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut raw)).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad HTTP response {text:?}"));
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_the_api_and_plain_http_answers_tls_required() {
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--tls-required=true"]);
    let https = https_addr(&nsqd);
    let cfg = pki.client_config(None);
    assert_eq!(
        https_get(https, cfg.clone(), "/ping").await,
        (200, "OK".into())
    );
    let (status, body) = https_get(https, cfg.clone(), "/stats?format=json").await;
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(body.trim()).unwrap_or_else(|e| {
        panic!("/stats over HTTPS is not JSON ({e}): {body:?}");
    });
    assert_eq!(stats["version"], json!("1.3.0"));

    for path in ["/ping", "/stats", "/no/such/path"] {
        let r = http_request(nsqd.http_addr(), "GET", path, b"");
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(
            r.text(),
            format!(
                r#"{{"message": "TLS_REQUIRED", "https_port": {}}}"#,
                https.port()
            )
        );
        assert_eq!(r.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    }
    let r = http_request(nsqd.http_addr(), "POST", "/pub?topic=t", b"x");
    assert_eq!(r.status, 403);
}
