//! nsqlookupd discovery: `GET /lookup?topic=<topic>` over a minimal HTTP/1.1 client.
//!
//! Two response shapes exist (interface §2, §5.2): NSQ ≥ 1.0 sends
//! `{"channels":[...],"producers":[...]}` with the header `X-NSQ-Content-Type: nsq; version=1.0`;
//! older lookupds wrap it as `{"status_code":200,"status_txt":"OK","data":{...}}`. Both are
//! accepted whatever the headers say. A 404 (`TOPIC_NOT_FOUND`) means no producer has
//! registered the topic yet: not an error, the consumer polls again later (go-nsq logs it
//! and keeps polling).

use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{Error, Result};

/// Largest response body accepted from nsqlookupd.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// One nsqd as nsqlookupd reports it (`PeerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LookupProducer {
    /// The address nsqd asked clients to use.
    #[serde(default)]
    pub broadcast_address: String,
    /// nsqd's host name.
    #[serde(default)]
    pub hostname: String,
    /// nsqd's TCP port.
    pub tcp_port: u16,
    /// nsqd's HTTP port.
    #[serde(default)]
    pub http_port: u16,
    /// nsqd's version.
    #[serde(default)]
    pub version: String,
}

impl LookupProducer {
    /// `broadcast_address:tcp_port`, with brackets around IPv6 literals.
    pub fn tcp_address(&self) -> String {
        let host = if self.broadcast_address.is_empty() {
            &self.hostname
        } else {
            &self.broadcast_address
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.tcp_port)
        } else {
            format!("{host}:{}", self.tcp_port)
        }
    }
}

#[derive(Deserialize)]
struct LookupBody {
    #[serde(default)]
    producers: Vec<LookupProducer>,
}

#[derive(Deserialize)]
struct Legacy {
    status_code: Option<u16>,
    #[serde(default)]
    status_txt: String,
    data: Option<LookupBody>,
}

/// Parses a `/lookup` response body of either shape.
pub fn parse_lookup_response(body: &[u8]) -> Result<Vec<LookupProducer>> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Lookupd(format!("invalid JSON in /lookup response: {e}")))?;
    let invalid = |e: serde_json::Error| Error::Lookupd(format!("bad /lookup response: {e}"));
    if value.get("producers").is_some() {
        let b: LookupBody = serde_json::from_value(value).map_err(invalid)?;
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

/// A parsed lookupd address: `host:port` plus a path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LookupdAddr {
    pub(crate) host_port: String,
    /// The request path, e.g. `/lookup`.
    pub(crate) path: String,
}

/// Accepts `host:port`, `http://host:port` and `http://host:port/path` (go-nsq: a URL
/// without a path gets `/lookup`).
pub(crate) fn parse_lookupd_addr(addr: &str) -> Result<LookupdAddr> {
    let a = addr.trim();
    let rest = if let Some(r) = a.strip_prefix("http://") {
        r
    } else if a.contains("://") {
        return Err(Error::Unsupported(format!(
            "lookupd address {addr:?}: only http:// is supported"
        )));
    } else {
        a
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
    Ok(LookupdAddr { host_port, path })
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
    addr: &LookupdAddr,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<LookupProducer>> {
    let sep = if addr.path.contains('?') { '&' } else { '?' };
    let target = format!("{}{sep}topic={}", addr.path, query_escape(topic));
    let (status, body) = tokio::time::timeout(timeout, http_get(&addr.host_port, &target))
        .await
        .map_err(|_| Error::Timeout)??;
    match status {
        200 => parse_lookup_response(&body),
        404 => Ok(Vec::new()),
        _ => Err(Error::Lookupd(format!(
            "GET {target}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ))),
    }
}

/// A bare HTTP/1.1 GET with `Connection: close`; returns status and (de-chunked) body.
async fn http_get(host_port: &str, target: &str) -> Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(host_port).await?;
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {host_port}\r\nAccept: application/vnd.nsq; version=1.0\r\nUser-Agent: nsq-rs-client/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err(Error::Lookupd("response too large".into()));
        }
        // Stop early once a Content-Length body is complete (servers may keep the socket).
        if let Some((status, body)) = parse_http_response(&raw, false)? {
            return Ok((status, body));
        }
    }
    parse_http_response(&raw, true)?.ok_or_else(|| Error::Lookupd("truncated HTTP response".into()))
}

/// Parses a complete HTTP/1.1 response; `Ok(None)` if more bytes are needed. With `eof`,
/// a body without length runs to the end of the data.
fn parse_http_response(raw: &[u8], eof: bool) -> Result<Option<(u16, Vec<u8>)>> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let body = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Lookupd(format!("bad HTTP status line {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                content_length = v.parse::<usize>().ok();
            } else if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    if chunked {
        return Ok(dechunk(body)?.map(|b| (status, b)));
    }
    match content_length {
        Some(n) if body.len() >= n => Ok(Some((status, body[..n].to_vec()))),
        Some(_) => Ok(None),
        None if eof => Ok(Some((status, body.to_vec()))),
        None => Ok(None),
    }
}

/// Decodes a chunked body; `Ok(None)` until the last chunk has arrived.
fn dechunk(mut data: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| Error::Lookupd(format!("bad chunk size {size_text:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(Some(out));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
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
        assert!(parse_lookupd_addr("https://lookupd:4161").is_err());
        assert!(parse_lookupd_addr("lookupd").is_err());
        assert_eq!(query_escape("a.b_c-1#ephemeral"), "a.b_c-1%23ephemeral");
    }

    #[test]
    fn http_parsing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-NSQ-Content-Type: nsq; version=1.0\r\n\r\n{}";
        assert_eq!(
            parse_http_response(raw, false).unwrap(),
            Some((200, b"{}".to_vec()))
        );
        assert_eq!(
            parse_http_response(&raw[..raw.len() - 1], false).unwrap(),
            None
        );
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"me\r\n3\r\nx\"}\r\n0\r\n\r\n";
        assert_eq!(
            parse_http_response(chunked, false).unwrap(),
            Some((404, b"{\"mex\"}".to_vec()))
        );
        let no_len = b"HTTP/1.0 200 OK\r\n\r\nabc";
        assert_eq!(parse_http_response(no_len, false).unwrap(), None);
        assert_eq!(
            parse_http_response(no_len, true).unwrap(),
            Some((200, b"abc".to_vec()))
        );
    }
}
