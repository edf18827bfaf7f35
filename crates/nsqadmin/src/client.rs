//! nsqadmin's view of the workspace's HTTP client (`nsq_http_client`): one pooled client
//! (keep-alive to every nsqd and nsqlookupd), built from Go nsqadmin's flags:
//! `--http-client-connect-timeout`, `--http-client-request-timeout` and the
//! `--http-client-tls-*` options, which mean what they mean in Go: the CA file replaces the
//! system roots, the certificate and key are presented when a daemon asks, skip-verify accepts
//! any certificate.
//!
//! Addresses are `host:port` as in Go (plain HTTP), or, an nsq-rs extension, `https://host:port`
//! (`--nsqd-http-address`, `--lookupd-http-address`): such a host is then always spoken to over
//! HTTPS, also when it comes back as a bare `host:port` (a node page, a producer). As Go's
//! `http_api` client does, a `403` with an `https_port` from an nsqd with `--tls-required` is
//! retried over HTTPS on that port, which is how nsqds found through lookupd (which reports
//! only their HTTP port) are reached.
//!
//! `--http-api-token` (nsq-rs) is sent as a bearer token to the daemons, never to the
//! notification endpoint.
//!
//! Every request to a daemon goes through [`Client::get`] or [`Client::post`], which count
//! it as `ok` (a 2xx answer) or `error` (anything else: refused, timed out, non-2xx) in
//! [`UpstreamCounts`], served as `nsqadmin_upstream_requests_total{result}` on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use nsq_http_client::Method;

use crate::config::Options;

/// Largest response body accepted (a `/stats` of 10,000 topics is a few MiB).
pub const MAX_RESPONSE: usize = 256 << 20;

/// Why a request failed (the shared client's error: what failed, for which URL).
pub type ClientError = nsq_http_client::Error;

/// The client every fan-out and action uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    http: nsq_http_client::Client,
    /// `Authorization: Bearer <--http-api-token>`, when set.
    bearer: Option<Arc<str>>,
    /// `host:port` of the addresses configured as `https://`.
    https_hosts: Arc<Vec<String>>,
    /// Requests to daemons by outcome (shared by every clone).
    counts: Arc<UpstreamCounts>,
}

/// Requests to nsqd / nsqlookupd since start, by outcome (notifications not included).
#[derive(Debug, Default)]
pub struct UpstreamCounts {
    /// Answered with a 2xx status.
    pub ok: AtomicU64,
    /// Failed: no connection, timeout, or a non-2xx status.
    pub error: AtomicU64,
}

/// `host:port` of an address, with or without `http://`/`https://` and a trailing slash.
pub fn host_port(addr: &str) -> &str {
    nsq_http_client::host_port(addr)
}

impl Client {
    /// Builds the client from the options (Go's checks and messages for the TLS files).
    pub fn new(opts: &Options) -> Result<Client, String> {
        let path = |s: &str| (!s.is_empty()).then(|| std::path::PathBuf::from(s));
        let tls = nsq_http_client::TlsOptions {
            root_ca_file: path(&opts.http_client_tls_root_ca_file),
            cert: path(&opts.http_client_tls_cert),
            key: path(&opts.http_client_tls_key),
            insecure_skip_verify: opts.http_client_tls_insecure_skip_verify,
            ..Default::default()
        };
        tls.check_pair()?;
        let http = nsq_http_client::Client::new(nsq_http_client::Options {
            connect_timeout: opts.http_client_connect_timeout,
            request_timeout: opts.http_client_request_timeout,
            max_response_bytes: MAX_RESPONSE,
            tls,
            user_agent: Some(format!(
                "nsqadmin/1.3.0 nsq-rs/{}",
                env!("CARGO_PKG_VERSION")
            )),
            follow_tls_required: true,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let https_hosts = opts
            .nsqd_http_addresses
            .iter()
            .chain(&opts.lookupd_http_addresses)
            .filter(|a| a.trim().starts_with("https://"))
            .map(|a| host_port(a).to_owned())
            .collect();
        Ok(Client {
            http,
            bearer: (!opts.http_api_token.is_empty())
                .then(|| Arc::from(opts.http_api_token.as_str())),
            https_hosts: Arc::new(https_hosts),
            counts: Arc::default(),
        })
    }

    /// The request counters (`/metrics`).
    pub fn counts(&self) -> Arc<UpstreamCounts> {
        self.counts.clone()
    }

    fn count(
        &self,
        r: Result<nsq_http_client::Response, ClientError>,
    ) -> Result<Bytes, ClientError> {
        let r = r.and_then(nsq_http_client::Response::ok);
        let n = if r.is_ok() {
            &self.counts.ok
        } else {
            &self.counts.error
        };
        n.fetch_add(1, Ordering::Relaxed);
        r.map(|r| r.body)
    }

    /// The URL of `path_and_query` on daemon `addr`: its own scheme if it has one, `https`
    /// for a host configured as `https://`, else `http`.
    pub fn url(&self, addr: &str, path_and_query: &str) -> String {
        let a = addr.trim();
        if a.starts_with("http://") || a.starts_with("https://") {
            return nsq_http_client::endpoint(a, path_and_query);
        }
        let hp = host_port(a);
        if self.https_hosts.iter().any(|h| h == hp) {
            format!("https://{hp}{path_and_query}")
        } else {
            format!("http://{hp}{path_and_query}")
        }
    }

    /// `GET path` on daemon `addr`; non-2xx is an error.
    pub async fn get(&self, addr: &str, path: &str) -> Result<Bytes, ClientError> {
        let url = self.url(addr, path);
        self.count(self.daemon(Method::GET, &url, None).await)
    }

    /// `POST path` on daemon `addr` with an optional JSON body; non-2xx is an error.
    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<Bytes, ClientError> {
        let url = self.url(addr, path);
        self.count(self.daemon(Method::POST, &url, json).await)
    }

    /// `GET url` of a non-NSQ server (Prometheus' API): no NSQ headers, no bearer token;
    /// non-2xx is an error.
    pub async fn get_url(&self, url: &str) -> Result<Bytes, ClientError> {
        let r = self.http.request(Method::GET, url, &[], Bytes::new()).await;
        self.count(r)
    }

    /// `POST url` of a JSON body to a non-NSQ endpoint (`--notification-http-endpoint`):
    /// no NSQ headers, no bearer token.
    pub async fn post_json_to(&self, url: &str, json: &[u8]) -> Result<(), ClientError> {
        self.http
            .request(
                Method::POST,
                url,
                &[("Content-Type", "application/json")],
                Bytes::copy_from_slice(json),
            )
            .await?
            .ok()
            .map(|_| ())
    }

    async fn daemon(
        &self,
        method: Method,
        url: &str,
        json: Option<&[u8]>,
    ) -> Result<nsq_http_client::Response, ClientError> {
        let auth = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![nsq_http_client::ACCEPT_NSQ_V1];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        if json.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let body = json.map_or_else(Bytes::new, Bytes::copy_from_slice);
        self.http.request(method, url, &headers, body).await
    }
}

/// A query-string value escaped as Go's `url.QueryEscape` does.
pub fn query_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn opts(nsqds: &[&str]) -> Options {
        Options {
            nsqd_http_addresses: nsqds.iter().map(|s| (*s).to_owned()).collect(),
            http_client_connect_timeout: Duration::from_secs(1),
            http_client_request_timeout: Duration::from_millis(200),
            ..Options::default()
        }
    }

    #[test]
    fn escapes_like_go_and_keeps_https_hosts() {
        assert_eq!(query_escape("a#ephemeral"), "a%23ephemeral");
        assert_eq!(host_port("http://h:1/"), "h:1");
        let c = Client::new(&opts(&["https://10.0.0.1:4152", "10.0.0.2:4151"])).unwrap();
        assert_eq!(
            c.url("10.0.0.1:4152", "/stats"),
            "https://10.0.0.1:4152/stats"
        );
        assert_eq!(
            c.url("10.0.0.2:4151", "/stats"),
            "http://10.0.0.2:4151/stats"
        );
        assert_eq!(c.url("https://h:1/", "/ping"), "https://h:1/ping");
    }

    #[test]
    fn half_a_key_pair_is_refused_as_go_does() {
        let mut o = opts(&["h:1"]);
        o.http_client_tls_cert = "c.pem".into();
        assert_eq!(
            Client::new(&o).unwrap_err(),
            "--http-client-tls-key must be specified with --http-client-tls-cert"
        );
    }

    #[tokio::test]
    async fn connection_refused_and_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let c = Client::new(&opts(&[&addr])).unwrap();
        assert!(matches!(
            c.get(&addr, "/").await,
            Err(ClientError::Connect { .. })
        ));
        // A listener that accepts but never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let e = c.get(&addr, "/").await.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        drop(l);
        assert_eq!(c.counts().error.load(Ordering::Relaxed), 2);
        assert_eq!(c.counts().ok.load(Ordering::Relaxed), 0);
    }
}
