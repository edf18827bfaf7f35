//! A small HTTP/1.1 client for talking to nsqd and nsqlookupd: one connection per request
//! (`Connection: close`), a connect timeout and a whole-request timeout, `GET` and `POST`
//! only. It is all nsqadmin needs and keeps the daemons' crates out of its dependencies.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response body accepted (a `/stats` of 10,000 topics is a few MiB).
pub const MAX_RESPONSE: usize = 256 << 20;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made.
    #[error("dial tcp: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// The cause.
        reason: String,
    },
    /// Connecting or the whole request took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(String),
    /// The bytes received are not an HTTP response.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    /// The upstream answered with a non-2xx status.
    #[error("got response {status} {body:?}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The body, truncated.
        body: String,
    },
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
}

/// Connect and request timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    /// `--http-client-connect-timeout`.
    pub connect_timeout: Duration,
    /// `--http-client-request-timeout` (covers connect, write and read).
    pub request_timeout: Duration,
    /// `--http-api-token`, sent as a bearer token (leaked once at start so `Client` stays
    /// `Copy`).
    pub bearer: Option<&'static str>,
}

/// Strips an `http://` scheme and any trailing slash: nsqadmin's address flags are
/// `host:port`, but a URL is forgiven.
pub fn host_port(addr: &str) -> &str {
    let a = addr.strip_prefix("http://").unwrap_or(addr);
    a.trim_end_matches('/')
}

impl Client {
    /// `GET http://addr{path_and_query}`; non-2xx is an error.
    pub async fn get(&self, addr: &str, path: &str) -> Result<Vec<u8>, ClientError> {
        let r = self.request("GET", addr, path, None).await?;
        ok_body(r)
    }

    /// `POST http://addr{path_and_query}` with an optional JSON body; non-2xx is an error.
    pub async fn post(
        &self,
        addr: &str,
        path: &str,
        json: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let r = self.request("POST", addr, path, json).await?;
        ok_body(r)
    }

    /// One request, any status.
    pub async fn request(
        &self,
        method: &str,
        addr: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let addr = host_port(addr);
        let fut = async {
            let mut stream =
                match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                    Err(_) => return Err(ClientError::Timeout(self.connect_timeout)),
                    Ok(Err(e)) => {
                        return Err(ClientError::Connect {
                            addr: addr.to_owned(),
                            reason: e.to_string(),
                        })
                    }
                    Ok(Ok(s)) => s,
                };
            let _ = stream.set_nodelay(true);
            let body = body.unwrap_or_default();
            let mut req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: nsqadmin/1.3.0\r\n\
                 Accept: application/vnd.nsq; version=1.0\r\nConnection: close\r\n\
                 Content-Length: {}\r\n",
                body.len()
            )
            .into_bytes();
            if !body.is_empty() {
                req.extend_from_slice(b"Content-Type: application/json\r\n");
            }
            if let Some(token) = self.bearer {
                req.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
            }
            req.extend_from_slice(b"\r\n");
            req.extend_from_slice(body);
            stream
                .write_all(&req)
                .await
                .map_err(|e| ClientError::Io(e.to_string()))?;
            let mut raw = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| ClientError::Io(e.to_string()))?;
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(ClientError::Malformed("response too large"));
                }
                // Stop early once a Content-Length response is complete.
                if let Some(done) = complete_len(&raw) {
                    raw.truncate(done);
                    break;
                }
            }
            parse_response(&raw)
        };
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout(self.request_timeout)),
        }
    }
}

fn ok_body(r: Response) -> Result<Vec<u8>, ClientError> {
    if (200..300).contains(&r.status) {
        Ok(r.body)
    } else {
        let mut body = String::from_utf8_lossy(&r.body).into_owned();
        body.truncate(200);
        Err(ClientError::Status {
            status: r.status,
            body,
        })
    }
}

fn find_header_end(raw: &[u8]) -> Option<usize> {
    raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The total length of a response whose head declares a Content-Length, once it is all in.
fn complete_len(raw: &[u8]) -> Option<usize> {
    let end = find_header_end(raw)?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let len: usize = header_value(head, "content-length")?.parse().ok()?;
    (raw.len() >= end + len).then_some(end + len)
}

/// Parses a complete response (the connection has been read to its end).
pub fn parse_response(raw: &[u8]) -> Result<Response, ClientError> {
    let end = find_header_end(raw).ok_or(ClientError::Malformed("incomplete head"))?;
    let head =
        std::str::from_utf8(&raw[..end]).map_err(|_| ClientError::Malformed("non-UTF-8 head"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ClientError::Malformed("not HTTP/1.x"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::Malformed("bad status line"))?;
    let rest = &raw[end..];
    let chunked = header_value(head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = header_value(head, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| ClientError::Malformed("bad content-length"))?;
        if rest.len() < len {
            return Err(ClientError::Malformed("truncated body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(ClientError::Malformed("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&data[..line_end])
            .map_err(|_| ClientError::Malformed("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| ClientError::Malformed("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(ClientError::Malformed("truncated chunk"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// A query-string value escaped as Go's `url.QueryEscape` does.
pub fn query_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOKjunk").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"OK"[..]));
        let r = parse_response(
            b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"abcde"[..]));
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\nuntil eof").unwrap();
        assert_eq!(r.body, b"until eof");
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
        assert_eq!(
            complete_len(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nO"),
            None
        );
        assert_eq!(
            complete_len(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK"),
            Some(40)
        );
    }

    #[test]
    fn escapes_like_go() {
        assert_eq!(query_escape("a#ephemeral"), "a%23ephemeral");
        assert_eq!(host_port("http://h:1/"), "h:1");
    }

    #[tokio::test]
    async fn connection_refused_and_timeout() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let c = Client {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            bearer: None,
        };
        assert!(matches!(
            c.get(&addr, "/").await,
            Err(ClientError::Connect { .. })
        ));
        // A listener that accepts but never answers.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let c = Client {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_millis(100),
            bearer: None,
        };
        assert_eq!(
            c.get(&addr, "/").await,
            Err(ClientError::Timeout(Duration::from_millis(100)))
        );
        drop(l);
    }
}
