//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`, and helpers for nsqd's
//! HTTP API.
//!
//! The benchmarks only talk to nsqd on loopback, send bodiless requests and need keep-alive
//! (creating 10,000 topics over fresh connections would measure the kernel's connection
//! setup, not nsqd). That is little enough that a few dozen lines beat pulling in an HTTP
//! crate: responses are framed by `Content-Length`, `Transfer-Encoding: chunked`, or the
//! connection closing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// `Content-Length`, if present.
    pub content_length: Option<usize>,
    /// Whether the body is chunked.
    pub chunked: bool,
    /// Whether the server will close the connection after this response.
    pub close: bool,
}

/// Parses a response head from the front of `buf`. Returns the head and its length
/// (including the blank line), or `None` if the head is incomplete.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(Head, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            bail!("HTTP response head too long");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("HTTP head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        bail!("bad HTTP status line {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let mut head = Head {
        status,
        content_length: None,
        chunked: false,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                head.content_length = Some(value.parse().context("bad Content-Length")?)
            }
            "transfer-encoding" => head.chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    head.close = true;
                } else if v.contains("keep-alive") {
                    head.close = false;
                }
            }
            _ => {}
        }
    }
    Ok(Some((head, end + 4)))
}

/// Decodes a complete chunked body from the front of `buf`. Returns the body and the
/// number of bytes consumed (through the final CRLF), or `None` if incomplete.
/// Trailers are skipped.
pub fn decode_chunked(buf: &[u8]) -> anyhow::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_line = std::str::from_utf8(&buf[at..at + nl]).context("bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size {size_hex:?}"))?;
        at += nl + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(nl) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                at += nl + 2;
                if nl == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        if &buf[at + size..at + size + 2] != b"\r\n" {
            bail!("chunk not terminated by CRLF");
        }
        at += size + 2;
    }
}

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A keep-alive connection to one server, reconnecting when the server closes it.
pub struct Client {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Client {
    /// A client for `addr` (`host:port`); connects lazily.
    pub fn new(addr: &str) -> Client {
        Client {
            addr: addr.to_string(),
            stream: None,
            buf: Vec::new(),
            timeout: Duration::from_secs(30),
        }
    }

    fn connect(&mut self) -> anyhow::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)
                .with_context(|| format!("connecting to http://{}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        Ok(self.stream.as_mut().expect("just connected"))
    }

    /// Sends a bodiless request and reads the response. A request on a reused connection
    /// that fails before any response byte arrives is retried once on a new connection
    /// (the server may have closed an idle keep-alive connection).
    pub fn request(&mut self, method: &str, path: &str) -> anyhow::Result<Response> {
        self.request_with_body(method, path, &[])
    }

    /// Like [`Client::request`], with a request body.
    pub fn request_with_body(
        &mut self,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> anyhow::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_request(method, path, body) {
            Ok(r) => Ok(r),
            Err(e) if reused => {
                self.stream = None;
                self.try_request(method, path, body)
                    .with_context(|| format!("retry after: {e:#}"))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    fn try_request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<Response> {
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nsq-bench\r\n\
             Accept: */*\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.connect()?.write_all(&req)?;
        let mut chunk = [0u8; 16 * 1024];
        let (head, head_len) = loop {
            if let Some(h) = parse_head(&self.buf)? {
                break h;
            }
            let n = self.stream.as_mut().expect("connected").read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed before a response to {method} {path}");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        self.buf.drain(..head_len);
        let body = if method == "HEAD" || head.status == 204 || head.status == 304 {
            Vec::new()
        } else if head.chunked {
            loop {
                if let Some((body, used)) = decode_chunked(&self.buf)? {
                    self.buf.drain(..used);
                    break body;
                }
                let n = self.stream.as_mut().expect("connected").read(&mut chunk)?;
                if n == 0 {
                    bail!("connection closed inside a chunked body");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(len) = head.content_length {
            while self.buf.len() < len {
                let n = self.stream.as_mut().expect("connected").read(&mut chunk)?;
                if n == 0 {
                    bail!("connection closed inside a body");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            self.buf.drain(..len).collect()
        } else {
            // Delimited by the connection closing.
            let s = self.stream.as_mut().expect("connected");
            s.read_to_end(&mut self.buf)?;
            self.stream = None;
            std::mem::take(&mut self.buf)
        };
        if head.close {
            self.stream = None;
        }
        Ok(Response {
            status: head.status,
            body,
        })
    }

    /// Sends a request and fails unless the status is 2xx.
    pub fn expect_ok(&mut self, method: &str, path: &str) -> anyhow::Result<Response> {
        let r = self.request(method, path)?;
        if !(200..300).contains(&r.status) {
            bail!("{method} {path}: HTTP {} {}", r.status, r.text().trim());
        }
        Ok(r)
    }
}

/// Percent-encodes a query parameter value (topic and channel names are `[.a-zA-Z0-9_-]`
/// plus `#ephemeral`, so only `#` and oddities need escaping).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Creates a topic (`POST /topic/create`).
pub fn create_topic(c: &mut Client, topic: &str) -> anyhow::Result<()> {
    c.expect_ok(
        "POST",
        &format!("/topic/create?topic={}", query_escape(topic)),
    )?;
    Ok(())
}

/// Creates a channel (`POST /channel/create`).
pub fn create_channel(c: &mut Client, topic: &str, channel: &str) -> anyhow::Result<()> {
    c.expect_ok(
        "POST",
        &format!(
            "/channel/create?topic={}&channel={}",
            query_escape(topic),
            query_escape(channel)
        ),
    )?;
    Ok(())
}

/// Fetches `/stats?format=json` (optionally filtered to one topic) as JSON.
pub fn stats(c: &mut Client, topic: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let path = match topic {
        Some(t) => format!("/stats?format=json&topic={}", query_escape(t)),
        None => "/stats?format=json".to_string(),
    };
    let r = c.expect_ok("GET", &path)?;
    serde_json::from_slice(&r.body).context("parsing /stats JSON")
}

/// The depth of every channel of `topic` in a `/stats?format=json` document, in order.
/// Accepts both NSQ 1.x's plain document and the older `{"status_code":..,"data":{..}}`
/// envelope. `None` if the topic is absent.
pub fn channel_depths(stats: &serde_json::Value, topic: &str) -> Option<Vec<(String, u64)>> {
    let doc = stats.get("data").unwrap_or(stats);
    let t = doc
        .get("topics")?
        .as_array()?
        .iter()
        .find(|t| t.get("topic_name").and_then(|n| n.as_str()) == Some(topic))?;
    let chans = t.get("channels")?.as_array()?;
    Some(
        chans
            .iter()
            .map(|c| {
                let name = c
                    .get("channel_name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
                    .to_string();
                let depth = c.get("depth").and_then(|d| d.as_u64()).unwrap_or(0);
                (name, depth)
            })
            .collect(),
    )
}

/// Waits until `GET /ping` answers 2xx, up to `timeout`.
pub fn wait_for_ping(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let end = std::time::Instant::now() + timeout;
    loop {
        let mut c = Client::new(addr);
        match c.expect_ok("GET", "/ping") {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= end => {
                return Err(e.context(format!("nsqd at {addr} did not answer /ping")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 2\r\n\r\nOK";
        let (h, n) = parse_head(raw).unwrap().unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(2));
        assert!(!h.chunked && !h.close);
        assert_eq!(&raw[n..], b"OK");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-")
            .unwrap()
            .is_none());
        let (h, _) = parse_head(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 404);
        assert!(h.chunked && h.close);
        assert!(parse_head(b"SMTP 220\r\n\r\n").is_err());
    }

    #[test]
    fn decodes_chunked() {
        let raw = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let (body, used) = decode_chunked(raw).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia");
        assert_eq!(&raw[used..], b"NEXT");
        assert!(decode_chunked(b"4\r\nWi").unwrap().is_none());
        assert!(decode_chunked(b"4\r\nWiki\r\n0\r\n").unwrap().is_none());
        assert!(decode_chunked(b"zz\r\n").is_err());
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("sub_bench"), "sub_bench");
        assert_eq!(query_escape("t#ephemeral"), "t%23ephemeral");
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
    }

    #[test]
    fn finds_channel_depths() {
        let plain = serde_json::json!({
            "version": "1.3.0", "health": "OK",
            "topics": [
                {"topic_name": "other", "channels": []},
                {"topic_name": "mem_bench", "depth": 5, "channels": [
                    {"channel_name": "ch0", "depth": 5},
                    {"channel_name": "ch1", "depth": 3}
                ]}
            ]
        });
        assert_eq!(
            channel_depths(&plain, "mem_bench").unwrap(),
            vec![("ch0".to_string(), 5), ("ch1".to_string(), 3)]
        );
        assert!(channel_depths(&plain, "missing").is_none());
        let wrapped = serde_json::json!({"status_code": 200, "data": plain});
        assert_eq!(channel_depths(&wrapped, "other").unwrap(), vec![]);
    }

    #[test]
    fn keep_alive_round_trips_against_a_tiny_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let mut served = 0;
            while served < 2 {
                let n = s.read(&mut chunk).unwrap();
                buf.extend_from_slice(&chunk[..n]);
                while let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.drain(..p + 4);
                    let resp: &[u8] = if served == 0 {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"
                    } else {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                    };
                    s.write_all(resp).unwrap();
                    served += 1;
                }
            }
        });
        let mut c = Client::new(&addr);
        assert_eq!(c.expect_ok("GET", "/ping").unwrap().text(), "OK");
        assert_eq!(c.expect_ok("GET", "/stats").unwrap().text(), "{}");
    }
}
