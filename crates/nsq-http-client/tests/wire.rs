//! The client against a real HTTP and HTTPS server (hyper + rustls, rcgen certificates):
//! keep-alive reuse, TLS verification (CA file, wrong CA, skip-verify, client certificates),
//! Go's TLS_REQUIRED retry, timeouts and the body limit.

use std::time::Duration;

use bytes::Bytes;
use nsq_http_client::testing::{Mode, Pki, TestServer};
use nsq_http_client::{Client, Error, Method, Options, TlsOptions};

fn client(tls: TlsOptions) -> Client {
    Client::new(Options {
        tls,
        user_agent: Some("wire-test/1".into()),
        ..Options::default()
    })
    .unwrap()
}

fn trusting(pki: &Pki) -> TlsOptions {
    TlsOptions {
        root_ca_file: Some(pki.ca.clone()),
        ..TlsOptions::default()
    }
}

#[tokio::test]
async fn https_requests_reuse_one_connection() {
    let pki = Pki::new();
    let server = TestServer::start(Mode::https(&pki), |r, n| {
        (200, format!("{n}:{}", r.path).into_bytes())
    });
    let c = client(trusting(&pki));
    for i in 0..20 {
        let r = c
            .request(
                Method::POST,
                &format!("{}/p?i={i}", server.url()),
                &[("X-Test", "1")],
                Bytes::from("body"),
            )
            .await
            .unwrap()
            .ok()
            .unwrap();
        assert_eq!(r.body, format!("{i}:/p?i={i}"));
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 20);
    assert_eq!(
        server.connections(),
        1,
        "sequential requests share one kept-alive connection"
    );
    assert_eq!(reqs[3].body, b"body");
    assert_eq!(reqs[3].header("x-test"), Some("1"));
    assert_eq!(reqs[3].header("user-agent"), Some("wire-test/1"));
}

#[tokio::test]
async fn plain_http_keep_alive_and_pool_off() {
    let server = TestServer::start(Mode::Http, |_, _| (200, b"ok".to_vec()));
    let c = client(TlsOptions::default());
    for _ in 0..10 {
        c.get(&format!("{}/ping", server.url()))
            .await
            .unwrap()
            .ok()
            .unwrap();
    }
    assert_eq!(server.connections(), 1);
    let no_pool = Client::new(Options {
        pool_max_idle_per_host: 0,
        ..Options::default()
    })
    .unwrap();
    for _ in 0..5 {
        no_pool
            .get(&format!("{}/ping", server.url()))
            .await
            .unwrap();
    }
    assert_eq!(
        server.connections(),
        6,
        "without a pool every request dials"
    );
}

#[tokio::test]
async fn idle_connections_expire_after_the_pool_idle_timeout() {
    let server = TestServer::start(Mode::Http, |_, _| (200, b"ok".to_vec()));
    let c = Client::new(Options {
        pool_idle_timeout: Duration::from_millis(100),
        ..Options::default()
    })
    .unwrap();
    let url = format!("{}/ping", server.url());
    c.get(&url).await.unwrap();
    c.get(&url).await.unwrap();
    assert_eq!(server.connections(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.get(&url).await.unwrap();
    assert_eq!(
        server.connections(),
        2,
        "the idle connection was dropped, a new one dialled"
    );
}

#[tokio::test]
async fn wrong_ca_is_a_connect_error_and_skip_verify_connects() {
    let pki = Pki::new();
    let server = TestServer::start(Mode::https(&pki), |_, _| (200, b"ok".to_vec()));
    let wrong = client(TlsOptions {
        root_ca_file: Some(pki.other_ca.clone()),
        ..TlsOptions::default()
    });
    let e = wrong.get(&format!("{}/x", server.url())).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("certificate") && text.contains(&server.url()),
        "{text}"
    );
    let skip = client(TlsOptions {
        insecure_skip_verify: true,
        ..TlsOptions::default()
    });
    assert_eq!(
        skip.get(&format!("{}/x", server.url()))
            .await
            .unwrap()
            .status,
        200
    );
}

#[tokio::test]
async fn client_certificates_are_presented() {
    let pki = Pki::new();
    let server = TestServer::start(
        Mode::Https {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: Some(pki.ca.clone()),
        },
        |_, _| (200, b"ok".to_vec()),
    );
    let without = client(trusting(&pki));
    assert!(without.get(&format!("{}/x", server.url())).await.is_err());
    let with = client(TlsOptions {
        cert: Some(pki.client_cert.clone()),
        key: Some(pki.client_key.clone()),
        ..trusting(&pki)
    });
    let r = with.get(&format!("{}/x", server.url())).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(server.requests().iter().all(|r| r.client_cert));
}

#[tokio::test]
async fn tls_required_403_is_followed_to_the_https_port_when_asked() {
    let pki = Pki::new();
    let https = TestServer::start(Mode::https(&pki), |r, _| (200, r.path.clone().into_bytes()));
    let port = https.addr.port();
    let plain = TestServer::start(Mode::Http, move |_, _| {
        (
            403,
            format!(r#"{{"message": "TLS_REQUIRED", "https_port": {port}}}"#).into_bytes(),
        )
    });
    let url = format!("{}/stats?format=json", plain.url());
    let follow = Client::new(Options {
        tls: trusting(&pki),
        follow_tls_required: true,
        ..Options::default()
    })
    .unwrap();
    let r = follow.get(&url).await.unwrap().ok().unwrap();
    assert_eq!(r.body, "/stats?format=json");
    assert_eq!(r.url, format!("{}/stats?format=json", https.url()));
    let r = client(trusting(&pki)).get(&url).await.unwrap();
    assert_eq!(r.status, 403, "not followed unless asked");
    let e = r.ok().unwrap_err().to_string();
    assert!(e.contains("403") && e.contains("TLS_REQUIRED"), "{e}");
}

#[tokio::test]
async fn timeouts_body_limit_and_refused_connections() {
    // Accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let c = Client::new(Options {
        request_timeout: Duration::from_millis(200),
        ..Options::default()
    })
    .unwrap();
    let e = c.get(&format!("http://{addr}/x")).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("GET http://{addr}/x: timed out")),
        "{e}"
    );
    drop(silent);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let e = c.get(&format!("http://{addr}/x")).await.unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");

    let big = TestServer::start(Mode::Http, |_, _| (200, vec![b'x'; 10_000]));
    let small = Client::new(Options {
        max_response_bytes: 1000,
        ..Options::default()
    })
    .unwrap();
    let e = small.get(&format!("{}/big", big.url())).await.unwrap_err();
    assert!(matches!(e, Error::BodyTooLarge { limit: 1000, .. }), "{e}");
    assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");

    let e = c.get("ftp://h/x").await.unwrap_err();
    assert!(matches!(e, Error::InvalidUrl { .. }), "{e}");
}
