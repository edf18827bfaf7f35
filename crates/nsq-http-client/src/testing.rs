//! Test support (feature `testing`, for dev-dependencies only): a throw-away PKI made with
//! rcgen and a real HTTP/1.1 server, plain or HTTPS, that records every request and counts the
//! TCP connections it accepted, so tests can check keep-alive and TLS through the real wire.
//!
//! The server runs on its own thread and runtime, so synchronous tests (which start the tools
//! and daemons as processes) can use it as well as async ones.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use nsq_net::rustls;

/// A CA, a server certificate for `localhost` and `127.0.0.1` signed by it, a client
/// certificate (CN `client-1`) signed by it, and an unrelated CA with its own client
/// certificate (CN `intruder`).
pub struct Pki {
    _dir: tempfile::TempDir,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub server_cert: PathBuf,
    /// Its key (PEM).
    pub server_key: PathBuf,
    /// A client certificate signed by the CA (PEM).
    pub client_cert: PathBuf,
    /// Its key (PEM).
    pub client_key: PathBuf,
    /// A CA unrelated to `ca`.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca` (PEM).
    pub other_client_cert: PathBuf,
    /// Its key (PEM).
    pub other_client_key: PathBuf,
}

fn client_cert(
    cn: &str,
    ca: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    (
        params.signed_by(&key, ca, ca_key).expect("client cert"),
        key,
    )
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).expect("self-signed CA"), key)
}

impl Pki {
    /// Generates the certificates into a temporary directory (removed on drop).
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("nsq-http-client-pki-")
            .tempdir()
            .expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        let (ca_cert, ca_key) = ca("nsq-rs test CA");
        let server_key = rcgen::KeyPair::generate().expect("key");
        let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params")
            .signed_by(&server_key, &ca_cert, &ca_key)
            .expect("server cert");
        let (client, client_key) = client_cert("client-1", &ca_cert, &ca_key);
        let (other, other_key) = ca("some other CA");
        let (other_client, other_client_key) = client_cert("intruder", &other, &other_key);
        for (name, pem) in [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server.pem()),
            ("server.key", server_key.serialize_pem()),
            ("client.pem", client.pem()),
            ("client.key", client_key.serialize_pem()),
            ("other-ca.pem", other.pem()),
            ("other-client.pem", other_client.pem()),
            ("other-client.key", other_client_key.serialize_pem()),
        ] {
            std::fs::write(p(name), pem).expect("write PEM");
        }
        Pki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            other_ca: p("other-ca.pem"),
            other_client_cert: p("other-client.pem"),
            other_client_key: p("other-client.key"),
            _dir: dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Which accepted TCP connection carried it (0-based).
    pub connection: usize,
    /// Whether the client presented a certificate (HTTPS only).
    pub client_cert: bool,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

type Responder = dyn Fn(&Recorded, usize) -> (u16, Vec<u8>) + Send + Sync;

/// How the test server speaks.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// Plain HTTP.
    #[default]
    Http,
    /// HTTPS with the PKI's server certificate.
    Https {
        /// Server certificate (PEM).
        cert: PathBuf,
        /// Its key (PEM).
        key: PathBuf,
        /// When set, a client certificate chaining to this CA is required.
        client_ca: Option<PathBuf>,
    },
}

impl Mode {
    /// HTTPS with `pki`'s server certificate, no client certificate asked.
    pub fn https(pki: &Pki) -> Mode {
        Mode::Https {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: None,
        }
    }
}

/// A real HTTP/1.1 server on `127.0.0.1:<free port>` (keep-alive as hyper's server does it).
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    tls: bool,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts it; `respond(request, n)` (n = 0-based request number) gives status and body.
    pub fn start(
        mode: Mode,
        respond: impl Fn(&Recorded, usize) -> (u16, Vec<u8>) + Send + Sync + 'static,
    ) -> TestServer {
        let respond: Arc<Responder> = Arc::new(respond);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let acceptor = match &mode {
            Mode::Http => None,
            Mode::Https {
                cert,
                key,
                client_ca,
            } => {
                let opts = nsq_net::tls::ServerTlsOptions {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_auth: if client_ca.is_some() {
                        nsq_net::tls::ClientAuth::RequireVerify
                    } else {
                        nsq_net::tls::ClientAuth::None
                    },
                    root_ca: client_ca.clone(),
                    min_version: nsq_net::tls::MinVersion::Tls12,
                };
                let config = nsq_net::tls::server_config(&opts).expect("server TLS config");
                Some(tokio_rustls::TlsAcceptor::from(config))
            }
        };
        let connections = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (conns, reqs) = (connections.clone(), requests.clone());
        let tls = acceptor.is_some();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        let id = conns.fetch_add(1, Ordering::SeqCst);
                        let (reqs, respond, acceptor) =
                            (reqs.clone(), respond.clone(), acceptor.clone());
                        tokio::spawn(async move {
                            match acceptor {
                                None => serve(TokioIo::new(tcp), id, false, reqs, respond).await,
                                Some(a) => {
                                    let Ok(tls) = a.accept(tcp).await else { return };
                                    let cert = tls.get_ref().1.peer_certificates().is_some();
                                    serve(TokioIo::new(tls), id, cert, reqs, respond).await
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        TestServer {
            addr,
            tls,
            connections,
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// The requests received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve<I>(
    io: I,
    connection: usize,
    client_cert: bool,
    reqs: Arc<Mutex<Vec<Recorded>>>,
    respond: Arc<Responder>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (reqs, respond) = (reqs.clone(), respond.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            let rec = Recorded {
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map_or("/".to_owned(), |p| p.to_string()),
                headers: parts
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_owned(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body,
                connection,
                client_cert,
            };
            let (status, out) = {
                let mut g = reqs.lock().unwrap_or_else(|e| e.into_inner());
                let n = g.len();
                let answer = respond(&rec, n);
                g.push(rec);
                answer
            };
            let resp = hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(out)))
                .expect("response");
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// One request from synchronous test code (on its own runtime) through a [`crate::Client`]
/// trusting `ca`: status and body. Panics if no answer comes.
pub fn request_blocking(ca: &Path, method: crate::Method, url: &str, body: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = crate::Client::new(crate::Options {
            tls: crate::TlsOptions {
                root_ca_file: Some(ca.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("client");
        let r = c
            .request(method, url, &[], Bytes::from(body.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        (r.status, r.body.to_vec())
    })
}

/// A rustls client configuration trusting `ca` (for tests that dial the server themselves).
pub fn client_tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    nsq_net::tls::client_config(ca, None).expect("client TLS config")
}
