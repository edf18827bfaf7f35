//! AUTH: asking an auth server what a client's secret allows, as Go nsqd 1.3 does
//! (`internal/auth/authorizations.go`, `clientV2.QueryAuthd`/`IsAuthorized`).
//!
//! With `--auth-http-address` set, IDENTIFY answers `auth_required: true`, a client sends
//! `AUTH <secret>`, and nsqd queries one of the auth servers (starting at a random one, trying
//! the others on failure):
//! - `get` (default): `GET <url>?common_name=..&remote_ip=..&secret=..&tls=true|false`;
//! - `post`: `POST <url>` with `Content-Type: application/json` and the same values as Go's
//!   `url.Values` marshals them, every value in an array.
//!
//! An address without `://` means `http://<address>/auth`. A 403 from a plain-HTTP server is
//! retried once over HTTPS on the `https_port` its body names (Go's `httpsEndpoint`); HTTPS
//! trusts `--tls-root-ca-file`.
//!
//! The answer must be HTTP 200 with `{"ttl": >0, "identity", "identity_url",
//! "authorizations": [{"topic": regex, "channels": [regex], "permissions": ["subscribe" |
//! "publish"]}]}`; unknown permissions and bad regexes fail the query. Matching is Go's
//! unanchored `MatchString`: SUB needs `subscribe` and a channel regex matching the channel,
//! PUB/MPUB/DPUB need `publish` and a channel regex matching the *empty* string. The answer is
//! cached for `ttl` seconds; the next PUB/SUB after that queries again.
//!
//! Query failures are logged, never sent to the client (it gets `E_AUTH_FAILED AUTH failed`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A query to the auth servers failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The address is not a URL we can use.
    #[error("invalid auth server address {0:?}")]
    BadAddress(String),
    /// Connecting, sending or reading failed or timed out.
    #[error("{0}")]
    Transport(String),
    /// The server answered something other than 200.
    #[error("got response {status} {body:?}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// Response body.
        body: String,
    },
    /// The answer is not valid.
    #[error("{0}")]
    BadResponse(String),
    /// Every server failed (Go's joined message).
    #[error("{0}")]
    All(String),
}

/// What a client may do on one topic pattern.
#[derive(Debug, Clone)]
pub struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    subscribe: bool,
    publish: bool,
}

impl Authorization {
    /// Go's `Authorization.IsAllowed`: `channel` empty means publishing.
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        permitted && self.topic.is_match(topic) && self.channels.iter().any(|c| c.is_match(channel))
    }
}

/// A client's authorizations, valid until `expires`.
#[derive(Debug, Clone)]
pub struct AuthState {
    /// `identity` from the server.
    pub identity: String,
    /// `identity_url` from the server.
    pub identity_url: String,
    /// The authorizations granted.
    pub authorizations: Vec<Authorization>,
    /// When to ask again.
    pub expires: Instant,
}

impl AuthState {
    /// Whether any authorization allows `topic`/`channel` (empty channel: publish).
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| a.is_allowed(topic, channel))
    }

    /// Whether the TTL has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires < now
    }
}

#[derive(Deserialize)]
struct RawState {
    #[serde(default)]
    ttl: i64,
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    authorizations: Vec<RawAuthorization>,
}

#[derive(Deserialize)]
struct RawAuthorization {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    permissions: Vec<String>,
}

/// Validates an auth server's JSON answer (Go's checks, in Go's order) received at `now`.
pub fn parse_response(body: &[u8], now: Instant) -> Result<AuthState, AuthError> {
    let raw: RawState = serde_json::from_slice(body)
        .map_err(|e| AuthError::BadResponse(format!("invalid JSON: {e}")))?;
    let mut authorizations = Vec::with_capacity(raw.authorizations.len());
    for a in raw.authorizations {
        let (mut subscribe, mut publish) = (false, false);
        for p in &a.permissions {
            match p.as_str() {
                "subscribe" => subscribe = true,
                "publish" => publish = true,
                other => {
                    return Err(AuthError::BadResponse(format!(
                        "unknown permission {other}"
                    )))
                }
            }
        }
        let topic = Regex::new(&a.topic).map_err(|e| {
            AuthError::BadResponse(format!("unable to compile topic {:?} {e}", a.topic))
        })?;
        let channels = a
            .channels
            .iter()
            .map(|c| {
                Regex::new(c).map_err(|e| {
                    AuthError::BadResponse(format!("unable to compile channel {c:?} {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        authorizations.push(Authorization {
            topic,
            channels,
            subscribe,
            publish,
        });
    }
    if raw.ttl <= 0 {
        return Err(AuthError::BadResponse(format!(
            "invalid TTL {} (must be >0)",
            raw.ttl
        )));
    }
    Ok(AuthState {
        identity: raw.identity,
        identity_url: raw.identity_url,
        authorizations,
        expires: now + Duration::from_secs(raw.ttl as u64),
    })
}

/// What nsqd tells the auth server about the client.
#[derive(Debug, Clone, Default)]
pub struct AuthRequest {
    /// The client's IP address.
    pub remote_ip: String,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The AUTH secret.
    pub secret: String,
    /// CN of the client's TLS certificate, or empty.
    pub common_name: String,
}

impl AuthRequest {
    /// The values sorted by name, as Go's `url.Values.Encode` and `json.Marshal` order them.
    fn values(&self) -> [(&'static str, &str); 4] {
        [
            ("common_name", &self.common_name),
            ("remote_ip", &self.remote_ip),
            ("secret", &self.secret),
            ("tls", if self.tls { "true" } else { "false" }),
        ]
    }

    /// `url.Values.Encode()`.
    pub fn query_string(&self) -> String {
        let mut q = String::new();
        for (i, (k, v)) in self.values().iter().enumerate() {
            if i > 0 {
                q.push('&');
            }
            q.push_str(k);
            q.push('=');
            q.push_str(&go_query_escape(v));
        }
        q
    }

    /// `json.Marshal(url.Values)`: every value in an array.
    pub fn json_body(&self) -> Vec<u8> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .values()
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::json!([v])))
            .collect();
        serde_json::to_vec(&map).unwrap_or_default()
    }
}

/// Go's `url.QueryEscape`.
fn go_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// How nsqd reaches its auth servers.
#[derive(Debug, Clone)]
pub struct AuthClient {
    /// `--auth-http-address` values.
    pub addresses: Vec<String>,
    /// `post` or `get`.
    pub post: bool,
    /// `--http-client-connect-timeout`.
    pub connect_timeout: Duration,
    /// `--http-client-request-timeout`.
    pub request_timeout: Duration,
    /// Trust for HTTPS auth servers (`--tls-root-ca-file`).
    pub tls: Option<std::sync::Arc<nsq_net::rustls::ClientConfig>>,
}

/// Go's endpoint rule.
pub fn endpoint(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}/auth")
    }
}

impl AuthClient {
    /// Go's `QueryAnyAuthd`: every server once, from a random start, until one answers.
    pub async fn query_any(&self, req: &AuthRequest) -> Result<AuthState, AuthError> {
        let n = self.addresses.len();
        if n == 0 {
            return Err(AuthError::All("no auth servers configured".into()));
        }
        let start = random_index(n);
        let mut errors: Vec<String> = Vec::new();
        for i in 0..n {
            let a = &self.addresses[(start + i) % n];
            match self.query(a, req).await {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(format!("failed to auth against {a} - {e}")),
            }
        }
        Err(AuthError::All(errors.join("; ")))
    }

    /// Go's `QueryAuthd` against one server.
    pub async fn query(&self, address: &str, req: &AuthRequest) -> Result<AuthState, AuthError> {
        let mut url = endpoint(address);
        for _ in 0..2 {
            let resp = self.request(&url, req).await?;
            if resp.status == 200 {
                return parse_response(&resp.body, Instant::now());
            }
            if resp.status == 403 && !url.starts_with("https") {
                url = https_endpoint(&url, &resp.body)?;
                continue;
            }
            return Err(AuthError::Status {
                status: resp.status,
                body: String::from_utf8_lossy(&resp.body).into_owned(),
            });
        }
        Err(AuthError::Transport(
            "HTTPS endpoint also answered 403".into(),
        ))
    }

    async fn request(&self, url: &str, req: &AuthRequest) -> Result<HttpResponse, AuthError> {
        let u = url::Url::parse(url).map_err(|_| AuthError::BadAddress(url.to_string()))?;
        let host = u
            .host_str()
            .ok_or_else(|| AuthError::BadAddress(url.to_string()))?
            .to_string();
        let https = match u.scheme() {
            "http" => false,
            "https" => true,
            _ => return Err(AuthError::BadAddress(url.to_string())),
        };
        let port = u.port_or_known_default().unwrap_or(80);
        let mut target = u.path().to_string();
        let mut head = String::new();
        let body = if self.post {
            if let Some(q) = u.query() {
                target.push('?');
                target.push_str(q);
            }
            let b = req.json_body();
            let _ = write!(
                head,
                "POST {target} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            );
            b
        } else {
            // Go appends "?" + the values to the endpoint as given.
            let sep = if u.query().is_some() { '&' } else { '?' };
            if let Some(q) = u.query() {
                target.push('?');
                target.push_str(q);
            }
            target.push(sep);
            target.push_str(&req.query_string());
            let _ = write!(head, "GET {target} HTTP/1.0\r\n");
            Vec::new()
        };
        let host_header = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.clone(),
        };
        let _ = write!(
            head,
            "Host: {host_header}\r\nAccept: application/vnd.nsq; version=1.0\r\nUser-Agent: nsqd/{}\r\n\r\n",
            nsq_protocol::NSQ_VERSION
        );
        let mut raw = head.into_bytes();
        raw.extend_from_slice(&body);

        let tcp = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| AuthError::Transport(format!("connect to {host}:{port} timed out")))?
        .map_err(|e| AuthError::Transport(format!("connect to {host}:{port}: {e}")))?;
        let exchange = async {
            let mut buf = Vec::new();
            if https {
                let cfg = self.tls.clone().ok_or_else(|| {
                    AuthError::Transport(
                        "an https auth server needs --tls-root-ca-file to verify it".into(),
                    )
                })?;
                let name = nsq_net::rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| AuthError::BadAddress(url.to_string()))?;
                let mut s = nsq_net::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| AuthError::Transport(format!("TLS: {e}")))?;
                s.write_all(&raw)
                    .await
                    .map_err(|e| AuthError::Transport(format!("write: {e}")))?;
                // Servers often close without close_notify; keep what arrived.
                let _ = (&mut s).take(MAX_RESPONSE).read_to_end(&mut buf).await;
            } else {
                let mut s = tcp;
                s.write_all(&raw)
                    .await
                    .map_err(|e| AuthError::Transport(format!("write: {e}")))?;
                s.take(MAX_RESPONSE)
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| AuthError::Transport(format!("read: {e}")))?;
            }
            parse_http_response(&buf)
        };
        tokio::time::timeout(self.request_timeout, exchange)
            .await
            .map_err(|_| {
                AuthError::Transport(format!(
                    "request timed out after {:?}",
                    self.request_timeout
                ))
            })?
    }
}

const MAX_RESPONSE: u64 = 4 << 20;

struct HttpResponse {
    status: u16,
    body: Vec<u8>,
}

fn parse_http_response(buf: &[u8]) -> Result<HttpResponse, AuthError> {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| AuthError::Transport("malformed HTTP response".into()))?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| AuthError::Transport("malformed HTTP status line".into()))?;
    Ok(HttpResponse {
        status,
        body: buf[split + 4..].to_vec(),
    })
}

/// Go's `httpsEndpoint`: the same URL with scheme https and the `https_port` of the body.
fn https_endpoint(url: &str, body: &[u8]) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Port {
        https_port: u16,
    }
    let p: Port = serde_json::from_slice(body)
        .map_err(|e| AuthError::BadResponse(format!("403 without a usable https_port: {e}")))?;
    let mut u = url::Url::parse(url).map_err(|_| AuthError::BadAddress(url.to_string()))?;
    u.set_scheme("https")
        .map_err(|_| AuthError::BadAddress(url.to_string()))?;
    u.set_port(Some(p.https_port))
        .map_err(|_| AuthError::BadAddress(url.to_string()))?;
    Ok(u.to_string())
}

fn random_index(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    (h.finish() % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(json: &str) -> Result<AuthState, AuthError> {
        parse_response(json.as_bytes(), Instant::now())
    }

    #[test]
    fn publish_needs_a_channel_regex_matching_empty() {
        let s = state(
            r#"{"ttl":60,"identity":"id","identity_url":"u","authorizations":[
                {"topic":"^foo","channels":[".*"],"permissions":["publish"]},
                {"topic":"bar","channels":["ch"],"permissions":["publish","subscribe"]}]}"#,
        )
        .unwrap();
        assert!(s.is_allowed("foo", ""));
        assert!(s.is_allowed("foobar", ""), "unanchored at the end");
        assert!(!s.is_allowed("xfoo", ""), "anchored by the regex itself");
        assert!(!s.is_allowed("foo", "c"), "publish only");
        // "ch" never matches the empty string: no publishing to bar.
        assert!(!s.is_allowed("bar", ""));
        assert!(
            s.is_allowed("xbarx", "my-ch"),
            "Go's MatchString is a search"
        );
        assert!(!s.is_allowed("bar", "other"));
        assert_eq!(s.identity, "id");
        assert_eq!(s.identity_url, "u");
    }

    #[test]
    fn invalid_answers_are_refused() {
        for (json, want) in [
            (r#"{"ttl":0,"authorizations":[]}"#, "invalid TTL 0"),
            (
                r#"{"ttl":5,"authorizations":[{"topic":".*","channels":[],"permissions":["admin"]}]}"#,
                "unknown permission admin",
            ),
            (
                r#"{"ttl":5,"authorizations":[{"topic":"(","channels":[],"permissions":[]}]}"#,
                "unable to compile topic",
            ),
            (
                r#"{"ttl":5,"authorizations":[{"topic":"t","channels":["["],"permissions":[]}]}"#,
                "unable to compile channel",
            ),
            ("not json", "invalid JSON"),
        ] {
            let e = state(json).unwrap_err().to_string();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn ttl_expiry() {
        let now = Instant::now();
        let s = parse_response(br#"{"ttl":2,"authorizations":[]}"#, now).unwrap();
        assert!(!s.is_expired(now + Duration::from_secs(1)));
        assert!(s.is_expired(now + Duration::from_secs(3)));
    }

    #[test]
    fn request_encoding_matches_go() {
        let r = AuthRequest {
            remote_ip: "127.0.0.1".into(),
            tls: true,
            secret: "s3cr3t &=+ ~*".into(),
            common_name: "".into(),
        };
        assert_eq!(
            r.query_string(),
            "common_name=&remote_ip=127.0.0.1&secret=s3cr3t+%26%3D%2B+~%2A&tls=true"
        );
        assert_eq!(
            String::from_utf8(r.json_body()).unwrap(),
            r#"{"common_name":[""],"remote_ip":["127.0.0.1"],"secret":["s3cr3t &=+ ~*"],"tls":["true"]}"#
        );
        assert_eq!(endpoint("127.0.0.1:4181"), "http://127.0.0.1:4181/auth");
        assert_eq!(endpoint("https://a/b?c=d"), "https://a/b?c=d");
    }

    #[test]
    fn https_retry_endpoint() {
        assert_eq!(
            https_endpoint(
                "http://127.0.0.1:4181/auth",
                br#"{"message":"TLS_REQUIRED","https_port":4182}"#
            )
            .unwrap(),
            "https://127.0.0.1:4182/auth"
        );
        assert!(https_endpoint("http://a/auth", b"{}").is_err());
    }
}
