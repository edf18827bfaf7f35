//! A minimal blocking keep-alive HTTP/1.1 client, kept **only** for the two figures that are
//! the client's own request rate: `bench_http_pub` (msg/s and latency of `POST /pub`) and
//! `bench_topics`' creation rate (`POST /topic/create` + `/channel/create`). Everything else
//! goes through the workspace's one HTTP client, `nsq-http-client` ([`crate::http`]).
//!
//! **Why (measured, 2026-12-04, this 2-core machine, loopback, release builds, the same nsqd
//! binary, runs interleaved, load average 3–4 from other work):** `bench_http_pub --runfor=5s
//! --concurrency=4 --size=100`, four runs each:
//!
//! | client | msg/s | p50 latency | nsqd CPU per message | client CPU per request |
//! |---|---|---|---|---|
//! | this one (4 threads) | 57.8k, 38.7k, 48.8k, 49.5k | 61, 80, 59, 57 µs | 17.7, 20.9, 18.3, 16.6 µs | 13.5–18.8 µs |
//! | nsq-http-client (4 tasks, current-thread runtime) | 32.0k, 23.5k, 30.3k, 39.6k | 116, 102, 108, 78 µs | 17.5, 22.7, 17.9, 18.8 µs | 13.4–20.3 µs |
//! | nsq-http-client (2 runtime threads) | 29.3k, 27.8k | 124, 123 µs | 16.9, 20.0 µs | 16.8–19.5 µs |
//!
//! nsqd's CPU per message is the same either way, but the pooled async client adds ~40 µs of
//! latency per request (four connections stayed four, so it is not reconnecting; its CPU per
//! request is about this one's), which caps four connections at ~30k requests/s: the reported
//! msg/s and latency would be the client's, not nsqd's. `bench_topics --num=5000` creation:
//! 17.1k and 26.3k topic+channel pairs/s with this client, 15.8k and 15.7k with
//! nsq-http-client (two requests per pair: the same ~31k requests/s cap). Conversely
//! `bench_topics`' `GET /stats` of 2 MiB is faster through nsq-http-client (median 10.9 and
//! 14.0 ms, against 21.7 and 23.8 ms for the chunked-body decoding the old client did), so
//! `/stats` uses it.
//!
//! This minimal version (POST only, `Content-Length` only) against the fuller hand-written
//! client it replaces, four interleaved runs as above (load average 4–5): 46.1k, 45.0k,
//! 28.9k, 43.6k msg/s against 47.1k, 50.1k, 33.4k, 40.8k, the same within the machine's
//! noise, so `bench_http_pub` figures stay comparable with earlier ones.
//!
//! What it does: one request at a time on one connection, reconnecting once when a reused
//! connection fails before answering (the server may have closed it while idle); responses
//! must be framed by `Content-Length` (as nsqd answers `/pub` and the create endpoints);
//! anything else is an error rather than a guess.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

/// Status and body of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// A keep-alive connection to one `host:port`, opened lazily.
#[derive(Debug)]
pub struct Conn {
    addr: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// Status, `Content-Length` and whether the server closes, with the head's length; `None`
/// while the head is incomplete.
fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(u16, usize, bool, usize)>> {
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
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| anyhow!("bad HTTP status line {status_line:?}"))?;
    let (mut length, mut close) = (None, version == "HTTP/1.0");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let length = length.ok_or_else(|| anyhow!("response without Content-Length"))?;
    Ok(Some((status, length, close, end + 4)))
}

impl Conn {
    /// A connection to `addr` (`host:port`).
    pub fn new(addr: &str) -> Conn {
        Conn {
            addr: addr.to_string(),
            stream: None,
            buf: Vec::new(),
        }
    }

    /// `POST path` with `body`, any status.
    pub fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Response> {
        let reused = self.stream.is_some();
        match self.try_post(path, body) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.stream = None;
                if !reused {
                    return Err(e);
                }
                self.try_post(path, body)
                    .with_context(|| format!("retry after: {e:#}"))
            }
        }
    }

    /// A bodiless `POST path` that must answer 2xx.
    pub fn expect_ok_post(&mut self, path: &str) -> anyhow::Result<()> {
        let r = self.post(path, &[])?;
        if !(200..300).contains(&r.status) {
            bail!("POST {path}: HTTP {} {}", r.status, r.text().trim());
        }
        Ok(())
    }

    fn try_post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Response> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr)
                .with_context(|| format!("connecting to http://{}", self.addr))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().expect("connected");
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nsq-bench\r\nAccept: */*\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        s.write_all(&req)?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((status, len, close, head)) = parse_head(&self.buf)? {
                if self.buf.len() >= head + len {
                    let body = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    if close {
                        self.stream = None;
                    }
                    return Ok(Response { status, body });
                }
            }
            let n = s.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed before the response to POST {path} ended");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsq_http_client::testing::{Mode, TestServer};

    #[test]
    fn parses_heads() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK";
        assert_eq!(
            parse_head(raw).unwrap(),
            Some((200, 2, false, raw.len() - 2))
        );
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\nContent-").unwrap(), None);
        let closing = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        assert!(parse_head(closing).unwrap().unwrap().2);
        let e = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap_err();
        assert!(e.to_string().contains("without Content-Length"), "{e}");
        assert!(parse_head(b"SMTP 220\r\n\r\n").is_err());
    }

    #[test]
    fn keep_alive_posts_against_a_real_server() {
        let srv = TestServer::start(Mode::Http, |r, _| {
            if r.body == b"x" {
                (200, b"OK".to_vec())
            } else {
                (400, br#"{"message":"MSG_EMPTY"}"#.to_vec())
            }
        });
        let mut c = Conn::new(&srv.addr.to_string());
        let r = c.post("/pub?topic=t", b"x").unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "OK"));
        let e = c.expect_ok_post("/pub?topic=t").unwrap_err().to_string();
        assert!(e.contains("HTTP 400 {\"message\":\"MSG_EMPTY\"}"), "{e}");
        assert_eq!(srv.request_count(), 2);
        assert_eq!(srv.connections(), 1, "kept alive");
    }
}
