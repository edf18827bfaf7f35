//! nsqlookupd discovery: `GET /lookup?topic=<topic>` through `nsq_http_client` (the
//! workspace's HTTP client: one pooled, kept-alive connection per lookupd across polls,
//! `http://` and `https://`). HTTPS trusts the system roots, as go-nsq's lookupd client does,
//! or [`Config::lookupd_tls_root_ca_file`](crate::Config::lookupd_tls_root_ca_file).
//!
//! Two response shapes exist (interface §2, §5.2): NSQ ≥ 1.0 sends
//! `{"channels":[...],"producers":[...]}` with the header `X-NSQ-Content-Type: nsq; version=1.0`;
//! older lookupds wrap it as `{"status_code":200,"status_txt":"OK","data":{...}}`. Both are
//! accepted whatever the headers say. A 404 (`TOPIC_NOT_FOUND`) means no producer has
//! registered the topic yet: not an error, the consumer polls again later (go-nsq logs it
//! and keeps polling).

use nsq_http::api::lookupd::Lookup;
use serde::Deserialize;

use crate::config::Config;
use crate::error::{Error, Result};

/// Largest response body accepted from nsqlookupd.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// The consumer's lookupd HTTP client, built once in `Consumer::new`: go-nsq's
/// `lookupd_poll_timeout` bounds the connect and the whole request, the `User-Agent` is the
/// config's.
pub(crate) fn http_client(config: &Config) -> Result<nsq_http_client::Client> {
    nsq_http_client::Client::new(nsq_http_client::Options {
        connect_timeout: config.lookupd_poll_timeout,
        request_timeout: config.lookupd_poll_timeout,
        max_response_bytes: MAX_RESPONSE,
        tls: nsq_http_client::TlsOptions {
            root_ca_file: config.lookupd_tls_root_ca_file.clone(),
            ..Default::default()
        },
        user_agent: Some(config.user_agent.clone()),
        pool_max_idle_per_host: 1,
        ..Default::default()
    })
    .map_err(|e| Error::Tls(format!("lookupd_tls_root_ca_file: {e}")))
}

/// One nsqd as nsqlookupd reports it (Go's `PeerInfo`): the shared
/// [`nsq_http::api::lookupd::Producer`], read leniently (missing fields are empty or 0).
pub use nsq_http::api::lookupd::Producer as LookupProducer;

/// The pre-1.0 envelope around `/lookup`'s body.
#[derive(Deserialize)]
struct Legacy {
    status_code: Option<u16>,
    #[serde(default)]
    status_txt: String,
    data: Option<Lookup>,
}

/// Parses a `/lookup` response body of either shape.
pub fn parse_lookup_response(body: &[u8]) -> Result<Vec<LookupProducer>> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Lookupd(format!("invalid JSON in /lookup response: {e}")))?;
    let invalid = |e: serde_json::Error| Error::Lookupd(format!("bad /lookup response: {e}"));
    if value.get("producers").is_some() {
        let b: Lookup = serde_json::from_value(value).map_err(invalid)?;
        return Ok(b.producers);
    }
    if value.get("data").is_some() || value.get("status_code").is_some() {
        let l: Legacy = serde_json::from_value(value).map_err(invalid)?;
        if let Some(code) = l.status_code {
            if code != 200 {
                return Err(Error::Lookupd(format!(
                    "status_code {code} {}",
                    l.status_txt
                )));
            }
        }
        return Ok(l.data.map(|d| d.producers).unwrap_or_default());
    }
    Err(Error::Lookupd("no producers in /lookup response".into()))
}

/// A parsed lookupd address: scheme, `host:port` and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LookupdAddr {
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    pub(crate) host_port: String,
    /// The request path, e.g. `/lookup`.
    pub(crate) path: String,
}

/// Accepts `host:port`, `http://host:port[/path]` and `https://host:port[/path]` (go-nsq: a
/// URL without a path gets `/lookup`).
pub(crate) fn parse_lookupd_addr(addr: &str) -> Result<LookupdAddr> {
    let a = addr.trim();
    let (scheme, rest) = if let Some(r) = a.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = a.strip_prefix("https://") {
        ("https", r)
    } else if a.contains("://") {
        return Err(Error::Unsupported(format!(
            "lookupd address {addr:?}: only http:// and https:// are supported"
        )));
    } else {
        ("http", a)
    };
    let (host_port, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host_port = crate::conn::normalize_addr(host_port)?;
    let path = if path.is_empty() || path == "/" {
        "/lookup".to_owned()
    } else {
        path.to_owned()
    };
    Ok(LookupdAddr {
        scheme,
        host_port,
        path,
    })
}

/// Percent-encodes a query value (topic names only contain `[.a-zA-Z0-9_#-]`, but be safe).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Queries one lookupd for `topic`. `Ok(vec![])` when the topic is unknown (404).
pub(crate) async fn lookup(
    client: &nsq_http_client::Client,
    addr: &LookupdAddr,
    topic: &str,
) -> Result<Vec<LookupProducer>> {
    let sep = if addr.path.contains('?') { '&' } else { '?' };
    let url = format!(
        "{}://{}{}{sep}topic={}",
        addr.scheme,
        addr.host_port,
        addr.path,
        query_escape(topic)
    );
    let r = client.get_nsq(&url).await.map_err(|e| match e {
        nsq_http_client::Error::Timeout { .. } => Error::Timeout,
        e => Error::Lookupd(e.to_string()),
    })?;
    match r.status {
        200 => parse_lookup_response(&r.body),
        404 => Ok(Vec::new()),
        status => Err(Error::Lookupd(format!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&r.body).trim()
        ))),
    }
}

/// How a [`watch`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WatchEnd {
    /// This lookupd has no `/lookup/watch` (Go's nsqlookupd, or a custom path): poll only.
    Unsupported,
    /// The stream broke or ended (lookupd restarting, network): worth trying again.
    Broken(String),
}

/// Largest event accepted from a `/lookup/watch` stream (a `/lookup` body).
const MAX_EVENT: usize = 4 << 20;

/// Follows nsq-rs nsqlookupd's `GET /lookup/watch?topic=` (Server-Sent Events, one `lookup`
/// event per change of the topic's producers) and calls `changed` for each event, so the
/// caller looks up at once instead of at its next poll. Returns when the stream ends.
pub(crate) async fn watch(
    client: &nsq_http_client::Client,
    addr: &LookupdAddr,
    topic: &str,
    changed: impl Fn(),
) -> WatchEnd {
    let Some(base) = addr.path.strip_suffix("/lookup") else {
        return WatchEnd::Unsupported;
    };
    let url = format!(
        "{}://{}{base}/lookup/watch?topic={}",
        addr.scheme,
        addr.host_port,
        query_escape(topic)
    );
    let mut s = match client
        .get_streaming(&url, &[("Accept", "text/event-stream")])
        .await
    {
        Ok(s) => s,
        Err(e) => return WatchEnd::Broken(e.to_string()),
    };
    let is_sse = s
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if s.status != 200 || !is_sse {
        // 404 from Go's nsqlookupd (no such route), or anything that is not a stream.
        return WatchEnd::Unsupported;
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        match s.chunk().await {
            None => return WatchEnd::Broken("the stream ended".into()),
            Some(Err(e)) => return WatchEnd::Broken(e),
            Some(Ok(data)) => buf.extend_from_slice(&data),
        }
        // Events end with a blank line; comments (keep-alives) are events without data.
        while let Some(end) = find_blank_line(&buf) {
            let event: Vec<u8> = buf.drain(..end).collect();
            if event
                .split(|&b| b == b'\n')
                .any(|l| l.starts_with(b"data:"))
            {
                changed();
            }
        }
        if buf.len() > MAX_EVENT {
            return WatchEnd::Broken(format!("an event longer than {MAX_EVENT} bytes"));
        }
    }
}

/// The end (past the separator) of the first event in `buf` (`\n\n` or `\r\n\r\n`).
fn find_blank_line(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"channels":["c1"],"producers":[
        {"remote_address":"127.0.0.1:50000","hostname":"h1","broadcast_address":"10.0.0.1",
         "tcp_port":4150,"http_port":4151,"version":"1.3.0","topology_zone":"","topology_region":""},
        {"remote_address":"[::1]:50001","hostname":"h2","broadcast_address":"::1",
         "tcp_port":4250,"http_port":4251,"version":"1.3.0"}]}"#;

    #[test]
    fn parses_v1_shape() {
        let p = parse_lookup_response(V1.as_bytes()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].tcp_address(), "10.0.0.1:4150");
        assert_eq!(p[0].hostname, "h1");
        assert_eq!(p[0].http_port, 4151);
        assert_eq!(p[1].tcp_address(), "[::1]:4250");
        let empty = parse_lookup_response(br#"{"channels":[],"producers":[]}"#).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn parses_legacy_shape() {
        let body = r#"{"status_code":200,"status_txt":"OK","data":{"channels":[],
            "producers":[{"broadcast_address":"nsqd-1","hostname":"nsqd-1","tcp_port":4150,
            "http_port":4151,"version":"0.3.8"}]}}"#;
        let p = parse_lookup_response(body.as_bytes()).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].tcp_address(), "nsqd-1:4150");
        let err = parse_lookup_response(
            br#"{"status_code":500,"status_txt":"INTERNAL_ERROR","data":null}"#,
        );
        assert!(matches!(err, Err(Error::Lookupd(_))));
        assert!(parse_lookup_response(b"not json").is_err());
        assert!(parse_lookup_response(br#"{"message":"x"}"#).is_err());
    }

    #[test]
    fn sse_events_end_at_a_blank_line() {
        assert_eq!(
            find_blank_line(b"event: lookup\ndata: {}\n\nrest"),
            Some(24)
        );
        assert_eq!(find_blank_line(b"data: x\r\n\r\n"), Some(11));
        assert_eq!(find_blank_line(b"data: x\n"), None);
    }

    #[test]
    fn lookupd_addresses() {
        let a = parse_lookupd_addr("127.0.0.1:4161").unwrap();
        assert_eq!(a.host_port, "127.0.0.1:4161");
        assert_eq!(a.path, "/lookup");
        let a = parse_lookupd_addr("http://lookupd:4161/").unwrap();
        assert_eq!(
            (a.host_port.as_str(), a.path.as_str()),
            ("lookupd:4161", "/lookup")
        );
        let a = parse_lookupd_addr("http://lookupd:4161/api/lookup").unwrap();
        assert_eq!(a.path, "/api/lookup");
        let a = parse_lookupd_addr("https://lookupd:4161").unwrap();
        assert_eq!(
            (a.scheme, a.host_port.as_str(), a.path.as_str()),
            ("https", "lookupd:4161", "/lookup")
        );
        assert_eq!(parse_lookupd_addr("lookupd:4161").unwrap().scheme, "http");
        assert!(parse_lookupd_addr("ftp://lookupd:4161").is_err());
        assert!(parse_lookupd_addr("lookupd").is_err());
        assert_eq!(query_escape("a.b_c-1#ephemeral"), "a.b_c-1%23ephemeral");
    }
}
