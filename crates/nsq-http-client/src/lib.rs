//! The workspace's one HTTP client: what nsqadmin, the tools (`nsq_to_http`, `nsq_stat`, the
//! lookupd queries of every consumer), nsq-client's lookupd discovery and nsqd (its auth
//! servers, its lookupd channel queries) use to talk HTTP/1.1.
//!
//! It is a thin wrapper over hyper-util's pooled `legacy::Client` with hyper-rustls:
//! - **keep-alive**: connections are pooled per scheme/host/port and reused (idle ones are
//!   closed after [`Options::pool_idle_timeout`]);
//! - **`http://` and `https://`**: TLS options as Go nsqadmin's `--http-client-tls-*` flags
//!   ([`TlsOptions`]: CA file, or the system roots; client certificate and key; skip-verify;
//!   and a minimum version), built by `nsq_net::tls::client_config_from`, the same builder
//!   nsq-client uses for its TCP connections, so every client trusts what it is told the same
//!   way;
//! - **timeouts**: [`Options::connect_timeout`] bounds the TCP connect,
//!   [`Options::request_timeout`] the whole exchange (connect, TLS handshake, request, the
//!   response body), as Go's `http_api.NewDeadlineTransport` + `http.Client.Timeout` do;
//! - **bounded bodies**: a response body larger than [`Options::max_response_bytes`] is
//!   [`Error::BodyTooLarge`], never buffered whole;
//! - optionally Go's `http_api` retry of a `403 {"https_port": N}` (an nsqd with
//!   `--tls-required`) over `https://host:N` ([`Options::follow_tls_required`]).
//!
//! **Why hyper-util and not reqwest.** The workspace already builds hyper 1, hyper-util,
//! rustls 0.23 (ring), tokio-rustls 0.26 and tower-service for axum; hyper-util's client
//! (`client-legacy`, `http1`) plus hyper-rustls (without its native-certs / webpki-roots /
//! aws-lc features) add three small crates to the lock file (`hyper-rustls`, `want`,
//! `try-lock`). reqwest with `rustls-tls` and default features off would bring reqwest
//! itself, its own roots (webpki-roots), `serde_urlencoded`, `mime`, `ipnet`, `sync_wrapper`,
//! `tower-http`-style layers and a second URL stack, for features (redirects, cookies,
//! proxies, decompression) no NSQ tool uses.
//!
//! **Why its own crate and not a feature of `nsq-http`.** `nsq-http` is what the daemons
//! *serve* with, and without `serve` it is sans-I/O for the fuzz build; the client is used by
//! nsq-client (the library) and the tools, which need none of `nsq-http`. A separate crate keeps
//! both dependency sets honest.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use hyper::{HeaderMap, Method};

#[cfg(feature = "testing")]
pub mod testing;
pub use nsq_net::tls::MinVersion;

/// The `Accept` header NSQ's Go clients send to the daemons' APIs (`http_api`'s V1 format).
pub const ACCEPT_NSQ_V1: (&str, &str) = ("Accept", "application/vnd.nsq; version=1.0");

/// How long a failed response's body may be when quoted in an [`Error::Status`].
const QUOTED_BODY: usize = 200;

/// A request or its set-up failed. Every variant says what was asked of whom.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL cannot be used (not `http://` or `https://`, no host, bad characters).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// A header name or value is not valid HTTP.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The TLS configuration could not be built (unreadable or bad CA/cert/key file, ...).
    #[error("HTTP client TLS configuration: {0}")]
    Tls(String),
    /// The connection (TCP connect or TLS handshake) could not be made.
    #[error("{method} {url}: connect: {reason}")]
    Connect {
        /// The request method.
        method: Method,
        /// The URL.
        url: String,
        /// The cause, with its chain (e.g. "connection refused", "invalid peer certificate").
        reason: String,
    },
    /// The request or the response failed after connecting (reset, malformed response, ...).
    #[error("{method} {url}: {reason}")]
    Request {
        /// The request method.
        method: Method,
        /// The URL.
        url: String,
        /// The cause, with its chain.
        reason: String,
    },
    /// The whole exchange took longer than the request timeout.
    #[error("{method} {url}: timed out after {after:?}")]
    Timeout {
        /// The request method.
        method: Method,
        /// The URL.
        url: String,
        /// The request timeout.
        after: Duration,
    },
    /// The response body is larger than the limit.
    #[error("{method} {url}: response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The request method.
        method: Method,
        /// The URL.
        url: String,
        /// [`Options::max_response_bytes`].
        limit: usize,
    },
    /// The server answered with a status the caller did not accept ([`Response::ok`]).
    #[error("{method} {url}: got response {status} {body:?}")]
    Status {
        /// The request method.
        method: Method,
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (at most 200 bytes, lossy UTF-8).
        body: String,
    },
}

impl Error {
    /// Whether this is [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}

/// Go nsqadmin's `--http-client-tls-*` options (and a minimum version, which Go leaves at its
/// default). The system roots are trusted when no CA file is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--http-client-tls-root-ca-file`: PEM CA certificates trusted instead of the system's.
    pub root_ca_file: Option<std::path::PathBuf>,
    /// `--http-client-tls-cert`: PEM client certificate (needs `key`).
    pub cert: Option<std::path::PathBuf>,
    /// `--http-client-tls-key`: PEM private key of `cert`.
    pub key: Option<std::path::PathBuf>,
    /// `--http-client-tls-insecure-skip-verify`: accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Oldest TLS version offered (rustls: 1.2 or 1.3).
    pub min_version: MinVersion,
}

impl TlsOptions {
    /// Go nsqadmin's start-up checks: a certificate needs its key and a key its certificate,
    /// with Go's messages (flag names as Go nsqadmin spells them).
    pub fn check_pair(&self) -> Result<(), String> {
        match (&self.cert, &self.key) {
            (Some(_), None) => {
                Err("--http-client-tls-key must be specified with --http-client-tls-cert".into())
            }
            (None, Some(_)) => {
                Err("--http-client-tls-cert must be specified with --http-client-tls-key".into())
            }
            _ => Ok(()),
        }
    }
}

/// Everything a [`Client`] is built from.
#[derive(Debug, Clone)]
pub struct Options {
    /// Bound on the TCP connect (Go's `--http-client-connect-timeout`, default 2 s).
    pub connect_timeout: Duration,
    /// Bound on the whole exchange, body included (`--http-client-request-timeout`).
    pub request_timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// TLS for `https://` URLs.
    pub tls: TlsOptions,
    /// `User-Agent` sent when the request sets none.
    pub user_agent: Option<String>,
    /// Idle connections kept per host (0 disables keep-alive: one connection per request).
    pub pool_max_idle_per_host: usize,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Go's `http_api` behaviour towards an nsqd with `--tls-required`: a `403` from an
    /// `http://` URL whose JSON body names an `https_port` is retried once as
    /// `https://<same host>:<https_port><same path>`.
    pub follow_tls_required: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_response_bytes: 64 << 20,
            tls: TlsOptions::default(),
            user_agent: None,
            pool_max_idle_per_host: 32,
            pool_idle_timeout: Duration::from_secs(90),
            follow_tls_required: false,
        }
    }
}

/// A received response with its whole (bounded) body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The request method (for error messages).
    pub method: Method,
    /// The URL finally requested (after a `follow_tls_required` retry, the `https://` one).
    pub url: String,
    /// HTTP status code.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Response {
    /// The response if its status is 2xx, else [`Error::Status`] quoting the body's start.
    pub fn ok(self) -> Result<Response, Error> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(self.status_error())
        }
    }

    /// [`Error::Status`] for this response.
    pub fn status_error(&self) -> Error {
        let n = self.body.len().min(QUOTED_BODY);
        Error::Status {
            method: self.method.clone(),
            url: self.url.clone(),
            status: self.status,
            body: String::from_utf8_lossy(&self.body[..n]).into_owned(),
        }
    }
}

/// A pooled HTTP/1.1 client. Cheap to clone (the pool is shared); build one per process or
/// per configuration and reuse it, or keep-alive buys nothing.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    opts: std::sync::Arc<Options>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("opts", &self.opts).finish()
    }
}

impl Client {
    /// Builds the client; fails when the TLS files cannot be used.
    pub fn new(opts: Options) -> Result<Client, Error> {
        opts.tls.check_pair().map_err(Error::Tls)?;
        let tls = nsq_net::tls::client_config_from(&nsq_net::tls::ClientTlsOptions {
            root_ca: opts.tls.root_ca_file.clone(),
            cert: opts.tls.cert.clone(),
            key: opts.tls.key.clone(),
            insecure_skip_verify: opts.tls.insecure_skip_verify,
            min_version: opts.tls.min_version,
        })
        .map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Client::build(opts, tls))
    }

    /// Builds the client on a rustls configuration the caller already has (`opts.tls` is
    /// not read): for a daemon that builds its client TLS once from its own flags (nsqd's
    /// `--tls-root-ca-file` / `--tls-min-version` for its auth servers) and makes clients
    /// from it without reading certificate files again.
    pub fn with_tls_config(
        opts: Options,
        tls: std::sync::Arc<nsq_net::rustls::ClientConfig>,
    ) -> Client {
        Client::build(opts, std::sync::Arc::unwrap_or_clone(tls))
    }

    fn build(opts: Options, tls: nsq_net::rustls::ClientConfig) -> Client {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(opts.pool_max_idle_per_host)
            .pool_idle_timeout(opts.pool_idle_timeout)
            // The timer lets the pool close idle connections in the background.
            .pool_timer(TokioTimer::new())
            .build(https);
        Client {
            inner,
            opts: std::sync::Arc::new(opts),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// `GET url`, any status.
    pub async fn get(&self, url: &str) -> Result<Response, Error> {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    /// `GET url` of an NSQ daemon's API, with [`ACCEPT_NSQ_V1`]; any status.
    pub async fn get_nsq(&self, url: &str) -> Result<Response, Error> {
        self.request(Method::GET, url, &[ACCEPT_NSQ_V1], Bytes::new())
            .await
    }

    /// One request with extra `headers` and `body` (sent with a `Content-Length`; none when
    /// empty and the method is GET/HEAD), any status. The whole exchange is bounded by the
    /// request timeout; the body by `max_response_bytes`.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, Error> {
        let timeout = self.opts.request_timeout;
        let work = async {
            let r = self
                .once(method.clone(), url, headers, body.clone())
                .await?;
            if self.opts.follow_tls_required && r.status == 403 && url.starts_with("http://") {
                if let Some(https) = https_endpoint(url, &r.body) {
                    return self.once(method.clone(), &https, headers, body).await;
                }
            }
            Ok(r)
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                method,
                url: url.to_owned(),
                after: timeout,
            }),
        }
    }

    async fn once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, Error> {
        let req = self.build_request(method.clone(), url, headers, body)?;
        let resp = self
            .inner
            .request(req)
            .await
            .map_err(|e| send_error(&method, url, &e))?;
        let (parts, mut incoming) = resp.into_parts();
        let limit = self.opts.max_response_bytes;
        let too_large = || Error::BodyTooLarge {
            method: method.clone(),
            url: url.to_owned(),
            limit,
        };
        let declared = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| Error::Request {
                method: method.clone(),
                url: url.to_owned(),
                reason: format!("reading the response body: {}", chain(&e)),
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large());
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Response {
            method,
            url: url.to_owned(),
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: Bytes::from(buf),
        })
    }
}

impl Client {
    /// The request hyper sends: `url`, the caller's `headers`, our User-Agent unless given.
    fn build_request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, Error> {
        let uri = parse_url(url)?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| Error::InvalidUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        let h = req.headers_mut();
        let header = |name: &str, value: &str| -> Result<(HeaderName, HeaderValue), Error> {
            let invalid = |reason: String| Error::InvalidHeader {
                name: name.to_owned(),
                reason,
            };
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(e.to_string()))?,
                HeaderValue::from_str(value).map_err(|e| invalid(e.to_string()))?,
            ))
        };
        for (name, value) in headers {
            let (n, v) = header(name, value)?;
            h.append(n, v);
        }
        if let Some(ua) = &self.opts.user_agent {
            if !h.contains_key(hyper::header::USER_AGENT) {
                let (_, v) = header("User-Agent", ua)?;
                h.insert(hyper::header::USER_AGENT, v);
            }
        }
        Ok(req)
    }
}

/// A failure to send a request or get its answer: `Connect` when the connection could not be
/// made, `Request` otherwise.
fn send_error(method: &Method, url: &str, e: &hyper_util::client::legacy::Error) -> Error {
    let reason = chain(e);
    if e.is_connect() {
        Error::Connect {
            method: method.clone(),
            url: url.to_owned(),
            reason,
        }
    } else {
        Error::Request {
            method: method.clone(),
            url: url.to_owned(),
            reason,
        }
    }
}

/// A response whose body is read as it arrives (Server-Sent Events): see
/// [`Client::get_streaming`].
pub struct Streaming {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
}

impl Streaming {
    /// The next piece of the body; `None` at its end. An error is the connection failing.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        loop {
            match self.body.frame().await? {
                Err(e) => return Some(Err(chain(&e))),
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
            }
        }
    }
}

impl Client {
    /// `GET url` with `headers`, answering as soon as the status and headers arrive; the
    /// body is then read piece by piece with no overall time limit (a stream that lasts).
    /// The connect timeout applies, and the request timeout bounds the wait for the headers.
    pub async fn get_streaming(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Streaming, Error> {
        let req = self.build_request(Method::GET, url, headers, Bytes::new())?;
        let timeout = self.opts.request_timeout;
        let resp = match tokio::time::timeout(timeout, self.inner.request(req)).await {
            Err(_) => {
                return Err(Error::Timeout {
                    method: Method::GET,
                    url: url.to_owned(),
                    after: timeout,
                })
            }
            Ok(r) => r.map_err(|e| send_error(&Method::GET, url, &e))?,
        };
        let (parts, body) = resp.into_parts();
        Ok(Streaming {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// Parses an `http://` or `https://` URL into what hyper sends.
pub fn parse_url(url: &str) -> Result<Uri, Error> {
    let bad = |reason: String| Error::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => return Err(bad(format!("unsupported scheme {other:?} (http or https)"))),
        None => return Err(bad("expected http://host[:port]/path or https://...".into())),
    }
    if uri.host().unwrap_or_default().is_empty() {
        return Err(bad("missing host".into()));
    }
    Ok(uri)
}

/// An NSQ daemon address (`host:port`, `http://host:port` or `https://host:port`, a trailing
/// slash forgiven) joined with `path_and_query` (starting with `/`) into a URL; a bare
/// `host:port` means `http://`.
pub fn endpoint(addr: &str, path_and_query: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        format!("{addr}{path_and_query}")
    } else {
        format!("http://{addr}{path_and_query}")
    }
}

/// `host:port` of an address as [`endpoint`] accepts it (scheme and trailing slash removed).
pub fn host_port(addr: &str) -> &str {
    let a = addr.trim();
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.trim_end_matches('/')
}

/// Go's `httpsEndpoint`: the same URL with scheme `https` and the `https_port` of a
/// `403 {"message": "TLS_REQUIRED", "https_port": N}` body; `None` if the body names none.
fn https_endpoint(url: &str, body: &[u8]) -> Option<String> {
    let port = https_port(body)?;
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    Some(format!("https://{host}:{port}{path}"))
}

/// The `https_port` number in a JSON body, without a JSON parser: the body is nsqd's
/// one-line `{"message": "TLS_REQUIRED", "https_port": 4152}`.
fn https_port(body: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(body).ok()?;
    let i = text.find("\"https_port\"")?;
    let rest = text[i + "\"https_port\"".len()..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&p| p != 0)
}

/// An error and its sources, `a: b: c`, without repeating a source already in the text.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_endpoints() {
        assert_eq!(
            endpoint("127.0.0.1:4151", "/stats"),
            "http://127.0.0.1:4151/stats"
        );
        assert_eq!(endpoint("https://h:1/", "/ping"), "https://h:1/ping");
        assert_eq!(host_port("https://h:1/"), "h:1");
        assert_eq!(host_port("http://h:1"), "h:1");
        assert_eq!(host_port("h:1"), "h:1");
        assert!(parse_url("https://h:1/x?y").is_ok());
        let e = parse_url("ftp://h/").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
        assert!(parse_url("h:1/x").is_err());
        assert!(parse_url("http:///x").is_err());
    }

    #[test]
    fn tls_required_redirect_target() {
        let body = br#"{"message": "TLS_REQUIRED", "https_port": 4152}"#;
        assert_eq!(
            https_endpoint("http://10.0.0.1:4151/stats?format=json", body).as_deref(),
            Some("https://10.0.0.1:4152/stats?format=json")
        );
        assert_eq!(
            https_endpoint("http://[::1]:4151", body).as_deref(),
            Some("https://[::1]:4152")
        );
        assert_eq!(
            https_endpoint("http://h:1/", b"{\"message\":\"FORBIDDEN\"}"),
            None
        );
        assert_eq!(https_port(br#"{"https_port":0}"#), None);
    }

    #[test]
    fn half_a_key_pair_is_refused_with_go_messages() {
        let opts = Options {
            tls: TlsOptions {
                cert: Some("c.pem".into()),
                ..TlsOptions::default()
            },
            ..Options::default()
        };
        let e = Client::new(opts).unwrap_err().to_string();
        assert!(
            e.contains("--http-client-tls-key must be specified with --http-client-tls-cert"),
            "{e}"
        );
        let opts = Options {
            tls: TlsOptions {
                root_ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsOptions::default()
            },
            ..Options::default()
        };
        let e = Client::new(opts).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
