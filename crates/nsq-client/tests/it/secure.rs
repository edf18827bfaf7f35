//! TLS, snappy, deflate and AUTH through the real nsqd: round trips in every layer
//! combination (checked on nsqd's side through `/stats`), client certificates, and the refused
//! cases (TLS required, wrong CA, missing certificate, missing or refused AUTH secret).
//!
//! Certificates are generated per test with rcgen; the auth server is a small HTTP server in
//! the test that nsqd queries over loopback.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use nsq_client::{Config, Consumer, Error, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestNsqd, WAIT};

/// The shared test PKI (`nsq_http_client::testing::Pki`): a CA, a server certificate for
/// `localhost`/`127.0.0.1`, a client certificate `client-1` signed by the CA, and an
/// unrelated CA with its own client certificate `intruder`.
pub use nsq_http_client::testing::Pki;

pub fn pki() -> Pki {
    Pki::new()
}

/// nsqd flags for a PKI.
pub trait NsqdFlags {
    /// nsqd flags serving TLS with this PKI's server certificate (and its HTTPS listener,
    /// which a certificate turns on, on a free port).
    fn nsqd_flags(&self) -> Vec<String>;
}

impl NsqdFlags for Pki {
    fn nsqd_flags(&self) -> Vec<String> {
        vec![
            "--https-address=127.0.0.1:0".into(),
            format!("--tls-cert={}", self.server_cert.display()),
            format!("--tls-key={}", self.server_key.display()),
            format!("--tls-root-ca-file={}", self.ca.display()),
        ]
    }
}

fn nsqd(flags: &[String]) -> TestNsqd {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    tokio::task::block_in_place(|| TestNsqd::start(&flags))
}

fn tls_config(pki: &Pki) -> Config {
    let mut c = Config::new();
    c.set("tls_v1", "true").unwrap();
    c.set("tls_root_ca_file", pki.ca.to_str().unwrap()).unwrap();
    c
}

/// Bodies that exercise the layers: small ones, one larger than a snappy chunk (64 KiB) that
/// compresses well, and one that does not compress at all.
fn bodies(tag: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..20).map(|i| format!("{tag}-{i}").into_bytes()).collect();
    v.push(format!("{tag}-").repeat(40_000).into_bytes());
    let mut x: u32 = 0x9e37_79b9;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    v.push(noise);
    v
}

/// Publishes (PUB, MPUB and DPUB with no delay) and consumes `bodies(topic)` with `config`;
/// returns nsqd's `/stats` entry of the consumer connection, taken while it is connected.
async fn round_trip(n: &TestNsqd, topic: &str, config: Config) -> serde_json::Value {
    let bodies = bodies(topic);
    let producer = Producer::connect(n.tcp.to_string(), config.clone())
        .await
        .unwrap_or_else(|e| panic!("{topic}: producer connect: {e}"));
    let (single, batch) = bodies.split_at(10);
    for b in single {
        producer.publish(topic, b).await.unwrap();
    }
    producer.multi_publish(topic, batch).await.unwrap();
    producer
        .deferred_publish(topic, std::time::Duration::ZERO, b"deferred")
        .await
        .unwrap();
    let mut cc = config;
    cc.max_in_flight = 8;
    let mut consumer = Consumer::new(topic, "ch", cc).unwrap();
    consumer
        .connect_to_nsqd(n.tcp.to_string())
        .await
        .unwrap_or_else(|e| panic!("{topic}: consumer connect: {e}"));
    let mut got = Vec::new();
    for _ in 0..=bodies.len() {
        let m = tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("{topic}: timed out after {} messages", got.len()))
            .expect("stream ended");
        got.push(m.body().to_vec());
        m.finish();
    }
    let mut want = bodies.clone();
    want.push(b"deferred".to_vec());
    want.sort();
    got.sort();
    assert!(
        got == want,
        "{topic}: received bodies differ from published"
    );
    let stats = n.channel_stats(topic, "ch").await.expect("channel stats");
    let client = stats["clients"][0].clone();
    consumer.stop().await;
    producer.stop().await;
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_combination_round_trips() {
    let pki = pki();
    let n = nsqd(&pki.nsqd_flags());
    let modes: [(&str, bool, &str); 6] = [
        ("plain", false, ""),
        ("snappy", false, "snappy"),
        ("deflate", false, "deflate"),
        ("tls", true, ""),
        ("tls_snappy", true, "snappy"),
        ("tls_deflate", true, "deflate"),
    ];
    for (topic, tls, compression) in modes {
        let mut config = if tls { tls_config(&pki) } else { Config::new() };
        if !compression.is_empty() {
            config.set(compression, "true").unwrap();
        }
        if compression == "deflate" {
            config.set("deflate_level", "9").unwrap();
        }
        let client = round_trip(&n, topic, config).await;
        assert_eq!(client["tls"], tls, "{topic}: {client}");
        assert_eq!(
            client["snappy"],
            compression == "snappy",
            "{topic}: {client}"
        );
        assert_eq!(
            client["deflate"],
            compression == "deflate",
            "{topic}: {client}"
        );
        if tls {
            let version = client["tls_version"].as_str().unwrap_or_default();
            assert!(version.starts_with("TLS1."), "{topic}: {client}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_refuses_a_plain_client_with_nsqds_error() {
    let pki = pki();
    let mut flags = pki.nsqd_flags();
    flags.push("--tls-required=tcp-https".into());
    let n = nsqd(&flags);
    // IDENTIFY is allowed before TLS; the first real command is refused.
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let err = producer.publish("t", "x").await.unwrap_err();
    match &err {
        Error::Server { code, desc } => {
            assert_eq!(code, "E_INVALID", "{err}");
            assert!(desc.contains("TLS required"), "{err}");
        }
        other => panic!("expected E_INVALID, got {other:?}"),
    }
    let consumer = Consumer::new("t", "c", Config::new()).unwrap();
    let err = consumer
        .connect_to_nsqd(n.tcp.to_string())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS required"), "{err}");
    consumer.stop().await;
    // The same server is fine with a client that asks for TLS.
    let client = round_trip(&n, "required", tls_config(&pki)).await;
    assert_eq!(client["tls"], true, "{client}");
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused() {
    let pki = pki();
    let n = nsqd(&pki.nsqd_flags());
    let mut config = Config::new();
    config.set("tls_v1", "true").unwrap();
    config
        .set("tls_root_ca_file", pki.other_ca.to_str().unwrap())
        .unwrap();
    let err = Producer::connect(n.tcp.to_string(), config.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // The wrong name is refused too; skipping verification accepts anything.
    let mut config = tls_config(&pki);
    config.tls_server_name = Some("nsqd.elsewhere.example".into());
    let err = Producer::connect(n.tcp.to_string(), config)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    let mut config = Config::new();
    config.set("tls_v1", "true").unwrap();
    config.set("tls_insecure_skip_verify", "true").unwrap();
    let p = Producer::connect(n.tcp.to_string(), config).await.unwrap();
    p.publish("insecure", "ok").await.unwrap();
    p.stop().await;
    // A CA file that does not exist fails before connecting.
    let mut config = Config::new();
    config.set("tls_v1", "true").unwrap();
    config
        .set("tls_root_ca_file", "/nonexistent/ca.pem")
        .unwrap();
    let err = Producer::connect(n.tcp.to_string(), config)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Tls(_)) && err.to_string().contains("/nonexistent/ca.pem"),
        "{err:?}"
    );
}

/// A stand-in nsqd whose TLS stops at 1.2 (as an old server's would; nsqd itself always
/// offers 1.3): it reads the magic and IDENTIFY, answers `tls_v1: true`, takes the TLS
/// handshake and answers `OK` over it. Each connection's outcome (the version negotiated, or
/// the handshake error) is sent on the returned channel.
async fn tls12_only_nsqd(
    pki: &Pki,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Result<String, String>>,
) {
    use nsq_net::rustls;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            nsq_net::tls::load_certs(&pki.server_cert).unwrap(),
            nsq_net::tls::load_key(&pki.server_key).unwrap(),
        )
        .unwrap();
    let acceptor = nsq_net::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let frame = |data: &[u8]| {
        let mut f = Vec::new();
        f.extend_from_slice(&(4 + data.len() as u32).to_be_bytes());
        f.extend_from_slice(&0u32.to_be_bytes()); // FrameTypeResponse
        f.extend_from_slice(data);
        f
    };
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let mut magic = [0u8; 4];
                tcp.read_exact(&mut magic).await.unwrap();
                let mut line = Vec::new();
                while line.last() != Some(&b'\n') {
                    line.push(tcp.read_u8().await.unwrap());
                }
                assert_eq!(line, b"IDENTIFY\n");
                let len = tcp.read_u32().await.unwrap();
                let mut body = vec![0u8; len as usize];
                tcp.read_exact(&mut body).await.unwrap();
                let response = serde_json::json!({
                    "max_rdy_count": 2500, "version": "1.3.0", "max_msg_timeout": 900000,
                    "msg_timeout": 60000, "tls_v1": true, "deflate": false,
                    "deflate_level": 6, "max_deflate_level": 6, "snappy": false,
                    "sample_rate": 0, "auth_required": false,
                    "output_buffer_size": 16384, "output_buffer_timeout": 250,
                });
                tcp.write_all(&frame(response.to_string().as_bytes()))
                    .await
                    .unwrap();
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let version = tls.get_ref().1.protocol_version();
                        let _ = tx.send(Ok(format!("{version:?}")));
                        let _ = tls.write_all(&frame(b"OK")).await;
                        let _ = tls.flush().await;
                        // Hold the connection until the client goes away.
                        let _ = tls.read(&mut [0u8; 1024]).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The client's `tls_min_version`, through the wire: with `tls1.3` it refuses a server that
/// offers only TLS 1.2 (the handshake fails, `Error::Tls`), with the default it negotiates
/// TLS 1.2 with the same server; against nsqd `--tls-min-version=tls1.3` a `tls1.3` client is
/// served over TLS 1.3 (nsqd's `/stats` says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_min_version_is_enforced() {
    let pki = pki();
    let (old, mut outcomes) = tls12_only_nsqd(&pki).await;
    let mut config = tls_config(&pki);
    config.set("tls_min_version", "tls1.3").unwrap();
    let err = Producer::connect(old.to_string(), config.clone())
        .await
        .expect_err("a tls1.3 client must refuse a TLS 1.2 server");
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    let server_saw = outcomes.recv().await.unwrap();
    assert!(
        server_saw
            .as_ref()
            .is_err_and(|e| e.contains("ProtocolVersion") || e.contains("incompatible")),
        "the server's side of the refused handshake: {server_saw:?} (client: {err})"
    );

    let p = Producer::connect(old.to_string(), tls_config(&pki))
        .await
        .expect("the default (tls1.2) accepts a TLS 1.2 server");
    assert_eq!(
        outcomes.recv().await.unwrap().as_deref(),
        Ok("Some(TLSv1_2)")
    );
    p.stop().await;

    let mut flags = pki.nsqd_flags();
    flags.push("--tls-min-version=tls1.3".into());
    let n = nsqd(&flags);
    let client = round_trip(&n, "tls13_only", config).await;
    assert_eq!(client["tls_version"], "TLS1.3", "{client}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_with_require_verify() {
    let pki = pki();
    let mut flags = pki.nsqd_flags();
    flags.push("--tls-client-auth-policy=require-verify".into());
    flags.push("--tls-required=tcp-https".into());
    let n = nsqd(&flags);
    let mut config = tls_config(&pki);
    config
        .set("tls_cert", pki.client_cert.to_str().unwrap())
        .unwrap();
    config
        .set("tls_key", pki.client_key.to_str().unwrap())
        .unwrap();
    config.set("snappy", "true").unwrap();
    let client = round_trip(&n, "mtls", config).await;
    assert_eq!(client["tls"], true, "{client}");
    assert_eq!(client["snappy"], true, "{client}");

    // No certificate, or one from another CA: the handshake is refused.
    let err = Producer::connect(n.tcp.to_string(), tls_config(&pki))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "no certificate: {err:?}");
    let mut config = tls_config(&pki);
    config
        .set("tls_cert", pki.other_client_cert.to_str().unwrap())
        .unwrap();
    config
        .set("tls_key", pki.other_client_key.to_str().unwrap())
        .unwrap();
    let err = Producer::connect(n.tcp.to_string(), config)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "foreign certificate: {err:?}");
}

/// A minimal auth server (nsqd's `--auth-http-address`): secret `good` gets every permission
/// under identity `x`; any other secret gets no authorizations. Records the query strings.
async fn auth_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let queries = Arc::new(Mutex::new(Vec::new()));
    let seen = queries.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let req = String::from_utf8_lossy(&req).into_owned();
                let target = req.split(' ').nth(1).unwrap_or_default().to_owned();
                let query = target.split_once('?').map_or("", |(_, q)| q).to_owned();
                seen.lock().unwrap().push(query.clone());
                let body = if query.split('&').any(|kv| kv == "secret=good") {
                    r#"{"ttl":3600,"identity":"x","identity_url":"","authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe","publish"]}]}"#
                } else {
                    r#"{"ttl":3600,"identity":"","identity_url":"","authorizations":[]}"#
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, queries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_secret_is_sent_and_refusals_are_clear() {
    let (auth_addr, queries) = auth_server().await;
    let pki = pki();
    let mut flags = pki.nsqd_flags();
    flags.push(format!("--auth-http-address={auth_addr}"));
    let n = nsqd(&flags);

    // No secret configured: refused by the client before anything is published.
    let err = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("auth_secret"), "{err}");

    // A secret the auth server grants nothing: nsqd's E_UNAUTHORIZED, as sent.
    let mut config = Config::new();
    config.set("auth_secret", "bad").unwrap();
    let err = Producer::connect(n.tcp.to_string(), config)
        .await
        .unwrap_err();
    assert_eq!(
        err.server_code(),
        Some(nsq_client::ErrorCode::Unauthorized),
        "{err:?}"
    );

    // The right secret, plain and over TLS with deflate.
    let mut config = Config::new();
    config.set("auth_secret", "good").unwrap();
    let client = round_trip(&n, "authed", config).await;
    assert_eq!(client["auth_identity"], "x", "{client}");
    let mut config = tls_config(&pki);
    config.set("deflate", "true").unwrap();
    config.set("auth_secret", "good").unwrap();
    let client = round_trip(&n, "authed_tls", config).await;
    assert_eq!(client["auth_identity"], "x", "{client}");
    assert_eq!(client["tls"], true, "{client}");

    let queries = queries.lock().unwrap().clone();
    assert!(
        queries
            .iter()
            .any(|q| q.contains("secret=good") && q.contains("tls=true")),
        "{queries:?}"
    );
    assert!(
        queries.iter().any(|q| q.contains("secret=bad")),
        "{queries:?}"
    );
}

/// Heartbeats are answered through TLS and compression (the NOP must be flushed through the
/// layers, or nsqd drops the idle client after two intervals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_answered_through_the_layers() {
    let pki = pki();
    let n = nsqd(&pki.nsqd_flags());
    for compression in ["snappy", "deflate"] {
        let topic = format!("hb_{compression}");
        let mut c = tls_config(&pki);
        c.set(compression, "true").unwrap();
        c.heartbeat_interval = Some(std::time::Duration::from_secs(1));
        c.read_timeout = std::time::Duration::from_millis(2500);
        let producer = Producer::connect(n.tcp.to_string(), c.clone())
            .await
            .unwrap();
        let mut consumer = Consumer::new(topic.as_str(), "ch", c).unwrap();
        consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
        // An idle period of more than two heartbeat intervals (a scenario, not a sync).
        tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
        assert_eq!(consumer.stats().connections, 1, "{compression}");
        producer.publish(&topic, "still here").await.unwrap();
        let m = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("timed out")
            .expect("stream ended");
        assert_eq!(m.body().as_ref(), b"still here", "{compression}");
        m.finish();
        let stats = n.stats().await;
        assert_eq!(
            stats["producers"].as_array().map(Vec::len),
            Some(1),
            "{compression}: the producer kept its connection: {stats}"
        );
        consumer.stop().await;
        producer.stop().await;
        // Wait for nsqd to forget this producer before the next round counts again.
        crate::harness::wait_until(WAIT, "producer gone", || async {
            n.stats().await["producers"].as_array().map_or(0, Vec::len) == 0
        })
        .await;
    }
}
