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
//! retried once over HTTPS on the `https_port` its body names (Go's `httpsEndpoint`). HTTPS
//! trusts `--tls-root-ca-file`, or the system roots without it, and offers nothing older than
//! `--tls-min-version` (Go's `buildClientTLSConfig`; no client certificate is presented, as in
//! Go). The requests go through the workspace's one
//! HTTP client, `nsq-http-client`, with `--http-client-connect-timeout` and
//! `--http-client-request-timeout`, one connection per query as Go (see
//! `AuthClient::http_client`).
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
    /// Trust for HTTPS auth servers (`--tls-root-ca-file`, `--tls-min-version`); `None`
    /// trusts the system roots at the default versions, as Go's `buildClientTLSConfig` does
    /// without a CA file.
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

/// The largest auth server answer read.
const MAX_RESPONSE: usize = 4 << 20;

/// The system roots (read once per process, as Go's `crypto/x509` does): the trust of an
/// [`AuthClient`] without `--tls-root-ca-file`, and of the lookupd channel queries.
pub(crate) fn system_roots() -> std::sync::Arc<nsq_net::rustls::ClientConfig> {
    static ROOTS: std::sync::OnceLock<std::sync::Arc<nsq_net::rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let opts = nsq_net::tls::ClientTlsOptions::default();
            let cfg = nsq_net::tls::client_config_from(&opts).unwrap_or_else(|_| {
                // Only a bad client certificate can fail, and none is given.
                unreachable!("a TLS client configuration without files cannot fail")
            });
            std::sync::Arc::new(cfg)
        })
        .clone()
}

/// An `nsq_http_client::Error` as an [`AuthError`], without the URL: a GET's URL carries the
/// secret, which must not reach the log.
fn transport_error(e: nsq_http_client::Error) -> AuthError {
    use nsq_http_client::Error as E;
    match e {
        E::InvalidUrl { url, .. } => AuthError::BadAddress(url),
        E::Connect { reason, .. } => AuthError::Transport(format!("connect: {reason}")),
        E::Request { reason, .. } => AuthError::Transport(reason),
        E::Timeout { after, .. } => {
            AuthError::Transport(format!("request timed out after {after:?}"))
        }
        E::BodyTooLarge { limit, .. } => {
            AuthError::BadResponse(format!("response larger than {limit} bytes"))
        }
        E::Status { status, body, .. } => AuthError::Status { status, body },
        other @ (E::InvalidHeader { .. } | E::Tls(_)) => AuthError::Transport(other.to_string()),
    }
}

impl AuthClient {
    /// The HTTP client for one AUTH query (the workspace's `nsq-http-client`): Go's
    /// `http_api.NewClient(clientTLSConfig, connectTimeout, requestTimeout)`, which Go
    /// `QueryAuthd` builds anew for every query, so Go never reuses a connection to the auth
    /// server across AUTH commands. Neither do we, but where Go's abandoned transport keeps
    /// the connection open and idle for 90 s, ours keeps no idle connection and closes it once
    /// the answer is read. `connect_timeout` bounds the TCP connect, `request_timeout` each
    /// exchange (a 403's HTTPS retry gets its own, as Go's second `Do`).
    fn http_client(&self) -> nsq_http_client::Client {
        let tls = self.tls.clone().unwrap_or_else(system_roots);
        nsq_http_client::Client::with_tls_config(
            nsq_http_client::Options {
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                max_response_bytes: MAX_RESPONSE,
                user_agent: Some(format!("nsqd/{}", nsq_protocol::NSQ_VERSION)),
                pool_max_idle_per_host: 0,
                follow_tls_required: false,
                ..nsq_http_client::Options::default()
            },
            tls,
        )
    }

    /// Go's `QueryAnyAuthd`: every server once, from a random start, until one answers.
    pub async fn query_any(&self, req: &AuthRequest) -> Result<AuthState, AuthError> {
        let n = self.addresses.len();
        if n == 0 {
            return Err(AuthError::All("no auth servers configured".into()));
        }
        let http = self.http_client();
        let start = random_index(n);
        let mut errors: Vec<String> = Vec::new();
        for i in 0..n {
            let a = &self.addresses[(start + i) % n];
            match self.query_with(&http, a, req).await {
                Ok(s) => return Ok(s),
                Err(e) => errors.push(format!("failed to auth against {a} - {e}")),
            }
        }
        Err(AuthError::All(errors.join("; ")))
    }

    /// Go's `QueryAuthd` against one server.
    pub async fn query(&self, address: &str, req: &AuthRequest) -> Result<AuthState, AuthError> {
        self.query_with(&self.http_client(), address, req).await
    }

    async fn query_with(
        &self,
        http: &nsq_http_client::Client,
        address: &str,
        req: &AuthRequest,
    ) -> Result<AuthState, AuthError> {
        let mut url = endpoint(address);
        if !self.post {
            // Go appends "?" and the values to the endpoint as given; we join an endpoint
            // that already has a query with '&', so the server can still parse both.
            let sep = if url.contains('?') { '&' } else { '?' };
            url.push(sep);
            url.push_str(&req.query_string());
        }
        for _ in 0..2 {
            let resp = self.request(http, &url, req).await?;
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

    /// One exchange: Go's `GETV1` (Accept: the NSQ V1 type) or `POSTV1` (the values as JSON,
    /// `Content-Type: application/json`).
    async fn request(
        &self,
        http: &nsq_http_client::Client,
        url: &str,
        req: &AuthRequest,
    ) -> Result<nsq_http_client::Response, AuthError> {
        let r = if self.post {
            http.request(
                nsq_http_client::Method::POST,
                url,
                &[
                    nsq_http_client::ACCEPT_NSQ_V1,
                    ("Content-Type", "application/json"),
                ],
                req.json_body().into(),
            )
            .await
        } else {
            http.get_nsq(url).await
        };
        r.map_err(transport_error)
    }
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
