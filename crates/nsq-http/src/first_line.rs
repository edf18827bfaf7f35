//! Non-HTTP bytes on an HTTP port are answered as Go's `net/http` answers them: once the
//! client's first line is complete, with Go's exact `400 Bad Request`, then the connection
//! closes.
//!
//! The case that matters is an NSQ client dialing the HTTP port by mistake: it sends the TCP
//! magic `"  V2"`, then a command such as `IDENTIFY\n`, and reads a response. Go reads the whole
//! first line before it judges it (`textproto.Reader.ReadLine` in `readRequest`), so the client
//! is still writing its command when nothing has been answered yet, and its first read returns
//! `HTTP/1.1 400 Bad Request…`, which client libraries show. hyper judges byte by byte: a
//! leading space is not a method, so it answers and closes after the 4 magic bytes, and the
//! client's write of `IDENTIFY` can fail with a reset before it reads anything.
//!
//! [`FirstLineListener`] wraps the listener the daemons give `axum::serve`; each connection's
//! [`FirstLineStream`] looks at the first bytes only until the method token ends. A request
//! (token characters, then a space) is handed to hyper unchanged and the stream is a
//! pass-through from then on: one branch per read, no copy (unless the method itself arrives
//! split over two reads). Anything else is never shown to hyper: the stream reads on to the
//! first `\n` and writes [`GO_BAD_REQUEST`], Go's bytes, then reports end of stream, which hyper
//! takes as a client that left before sending a request (it writes nothing and closes).
//!
//! Bounds: Go's server reads at most [`GO_FIRST_LINE_LIMIT`] bytes (`DefaultMaxHeaderBytes`
//! plus its 4096 slack) looking for the line's end, then answers [`GO_TOO_LARGE`]; so do we,
//! counting without buffering. Go's nsqd, nsqlookupd and nsqadmin set no `ReadHeaderTimeout`,
//! so Go waits for the newline without limit; we stop waiting after [`FIRST_LINE_TIMEOUT`]
//! (hyper's default header-read timeout) and close without answering, as Go's `net/http` does
//! when a `ReadHeaderTimeout` expires. Requests whose first line is HTTP-shaped but wrong
//! (`GET / HTTP/9.9`) and leading blank lines (which hyper skips, RFC 9112 §2.2) are still
//! judged by hyper.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The most Go's server reads looking for the end of a request's first line: Go's
/// `http.DefaultMaxHeaderBytes` (1 MiB) plus the 4096 bytes its `initialReadLimitSize` adds.
pub const GO_FIRST_LINE_LIMIT: usize = (1 << 20) + 4096;

/// How long a connection whose first bytes are not HTTP may take to end its first line before
/// it is closed without an answer.
pub const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Go's answer to a first line that is not a request line (`conn.serve` in `net/http`,
/// checked byte for byte against Go nsqd 1.3.0).
pub const GO_BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
    Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request";

/// Go's answer when [`GO_FIRST_LINE_LIMIT`] bytes came without a newline.
pub const GO_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
    Content-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n\
    431 Request Header Fields Too Large";

/// A method token longer than this is left to hyper (no real method comes close), so that
/// no more than this is held back from it.
const MAX_METHOD: usize = 32;

/// What the bytes seen so far say about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Only method characters so far.
    Undecided,
    /// A method and a space (or a leading blank line, or a very long token): hyper's to judge.
    Http,
    /// Not a request line; its end has not come yet.
    NotHttp,
    /// Not a request line, and it has ended: Go's 400.
    BadRequest,
    /// Not a request line, and [`GO_FIRST_LINE_LIMIT`] bytes passed without its end: Go's 431.
    TooLarge,
}

impl Verdict {
    /// Go's answer for a judged non-HTTP line, `None` while there is nothing to answer.
    fn reply(self) -> Option<&'static [u8]> {
        match self {
            Verdict::BadRequest => Some(GO_BAD_REQUEST),
            Verdict::TooLarge => Some(GO_TOO_LARGE),
            Verdict::Undecided | Verdict::Http | Verdict::NotHttp => None,
        }
    }
}

/// The sans-I/O judge of a connection's first line, fed the bytes as they arrive.
#[derive(Debug, Clone, Copy, Default)]
struct FirstLine {
    /// Bytes fed so far.
    read: usize,
    not_http: bool,
}

impl FirstLine {
    /// Feeds the next bytes. After `Http`, `BadRequest` or `TooLarge` the rest of `bytes` is
    /// not looked at (and nothing more should be fed).
    fn feed(&mut self, bytes: &[u8]) -> Verdict {
        for &b in bytes {
            if !self.not_http {
                match b {
                    b'\r' | b'\n' if self.read == 0 => return Verdict::Http,
                    b' ' if self.read > 0 => return Verdict::Http,
                    _ if is_tchar(b) => {
                        self.read += 1;
                        if self.read > MAX_METHOD {
                            return Verdict::Http;
                        }
                        continue;
                    }
                    _ => self.not_http = true,
                }
            }
            self.read += 1;
            if b == b'\n' {
                return Verdict::BadRequest;
            }
            if self.read >= GO_FIRST_LINE_LIMIT {
                return Verdict::TooLarge;
            }
        }
        if self.not_http {
            Verdict::NotHttp
        } else {
            Verdict::Undecided
        }
    }
}

/// RFC 9110 `tchar`, what a method is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An `axum::serve` listener whose connections are [`FirstLineStream`]s.
///
/// axum's `ConnectInfo<SocketAddr>` needs the listener's connections to come through
/// `ListenerExt::tap_io` (or a plain `TcpListener`): wrap first, then `tap_io` (which is also
/// where `set_nodelay` goes, through [`FirstLineStream::get_ref`]).
pub struct FirstLineListener<L> {
    inner: L,
    timeout: Duration,
}

impl<L> FirstLineListener<L> {
    /// Wraps `inner`, with [`FIRST_LINE_TIMEOUT`].
    pub fn new(inner: L) -> Self {
        FirstLineListener {
            inner,
            timeout: FIRST_LINE_TIMEOUT,
        }
    }

    /// Another limit for the first line of a non-HTTP connection.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<L: axum::serve::Listener> axum::serve::Listener for FirstLineListener<L> {
    type Io = FirstLineStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        (FirstLineStream::new(io, self.timeout), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A server-side connection that answers a non-HTTP first line as Go does (see the module
/// documentation) and is a plain pass-through once it has seen a request.
pub struct FirstLineStream<S> {
    io: S,
    state: State,
    timeout: Duration,
}

enum State {
    /// Reading the method; `held` keeps it while it is split over reads.
    Sniffing {
        line: FirstLine,
        held: Vec<u8>,
    },
    /// Giving hyper the held bytes, then `Http`.
    Releasing {
        held: Vec<u8>,
        pos: usize,
    },
    /// A request: everything goes straight through.
    Http,
    /// Not HTTP: discarding up to the end of the first line.
    Draining {
        line: FirstLine,
        deadline: Pin<Box<Sleep>>,
    },
    /// Writing Go's answer.
    Replying {
        reply: &'static [u8],
        pos: usize,
    },
    Flushing,
    /// Done: reads report end of stream.
    Closed,
}

impl<S> FirstLineStream<S> {
    /// Wraps a freshly accepted connection; `timeout` bounds a non-HTTP first line.
    pub fn new(io: S, timeout: Duration) -> Self {
        FirstLineStream {
            io,
            state: State::Sniffing {
                line: FirstLine::default(),
                held: Vec::new(),
            },
            timeout,
        }
    }

    /// The connection (e.g. for `TcpStream::set_nodelay`).
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FirstLineStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Http => return Pin::new(&mut this.io).poll_read(cx, buf),
                State::Releasing { held, pos } => {
                    let n = (held.len() - *pos).min(buf.remaining());
                    buf.put_slice(&held[*pos..*pos + n]);
                    *pos += n;
                    if *pos == held.len() {
                        this.state = State::Http;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Sniffing { line, held } => {
                    let verdict = if held.is_empty() {
                        // The usual case: read into the caller's buffer, and leave the bytes
                        // there if they start a request.
                        let before = buf.filled().len();
                        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
                        let new = &buf.filled()[before..];
                        let verdict = if new.is_empty() {
                            Verdict::Http // end of stream: hyper sees it
                        } else {
                            line.feed(new)
                        };
                        match verdict {
                            Verdict::Http => {
                                this.state = State::Http;
                                return Poll::Ready(Ok(()));
                            }
                            Verdict::Undecided => held.extend_from_slice(new),
                            _ => {}
                        }
                        buf.set_filled(before);
                        verdict
                    } else {
                        let mut scratch = [0u8; 256];
                        let mut more = ReadBuf::new(&mut scratch);
                        ready!(Pin::new(&mut this.io).poll_read(cx, &mut more))?;
                        let new = more.filled();
                        if new.is_empty() {
                            Verdict::Http // end of stream after part of a method
                        } else {
                            let verdict = line.feed(new);
                            if matches!(verdict, Verdict::Undecided | Verdict::Http) {
                                held.extend_from_slice(new);
                            }
                            verdict
                        }
                    };
                    this.state = match verdict {
                        Verdict::Undecided => continue,
                        Verdict::Http => State::Releasing {
                            held: std::mem::take(held),
                            pos: 0,
                        },
                        Verdict::NotHttp => State::Draining {
                            line: *line,
                            deadline: Box::pin(tokio::time::sleep(this.timeout)),
                        },
                        v @ (Verdict::BadRequest | Verdict::TooLarge) => State::Replying {
                            reply: v.reply().expect("a judged line has an answer"),
                            pos: 0,
                        },
                    };
                }
                State::Draining { line, deadline } => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 4096];
                    let mut more = ReadBuf::new(&mut scratch);
                    let read = ready!(Pin::new(&mut this.io).poll_read(cx, &mut more));
                    let new = more.filled();
                    this.state = if read.is_err() || new.is_empty() {
                        // Gone before the line ended: no answer, as in Go.
                        State::Closed
                    } else {
                        match line.feed(new).reply() {
                            Some(reply) => State::Replying { reply, pos: 0 },
                            None => continue,
                        }
                    };
                }
                State::Replying { reply, pos } => {
                    match ready!(Pin::new(&mut this.io).poll_write(cx, &reply[*pos..])) {
                        Ok(n) if n > 0 => {
                            *pos += n;
                            if *pos < reply.len() {
                                continue;
                            }
                            this.state = State::Flushing;
                        }
                        _ => this.state = State::Closed,
                    }
                }
                State::Flushing => {
                    // Best effort: the connection closes either way.
                    let _ = ready!(Pin::new(&mut this.io).poll_flush(cx));
                    this.state = State::Closed;
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstLineStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn verdicts(chunks: &[&[u8]]) -> Vec<Verdict> {
        let mut line = FirstLine::default();
        chunks.iter().map(|c| line.feed(c)).collect()
    }

    #[test]
    fn requests_are_recognised_by_their_method() {
        use Verdict::*;
        assert_eq!(verdicts(&[b"GET /ping HTTP/1.1\r\n"]), [Http]);
        assert_eq!(
            verdicts(&[b"G", b"ET", b" /"]),
            [Undecided, Undecided, Http]
        );
        assert_eq!(verdicts(&[b"PRI * HTTP/2.0\r\n"]), [Http]);
        assert_eq!(verdicts(&[b"M-SEARCH * HTTP/1.1\r\n"]), [Http]);
        // Blank lines before the request are hyper's business.
        assert_eq!(verdicts(&[b"\r\nGET / HTTP/1.1\r\n"]), [Http]);
        assert_eq!(verdicts(&[b"\n"]), [Http]);
        // A token too long to be a method is left to hyper too.
        assert_eq!(verdicts(&[&[b'A'; MAX_METHOD], b"A"]), [Undecided, Http]);
    }

    #[test]
    fn other_first_lines_are_judged_once_they_end() {
        use Verdict::*;
        assert_eq!(verdicts(&[b"  V2", b"IDENTIFY\n"]), [NotHttp, BadRequest]);
        assert_eq!(verdicts(&[b"  V2IDENTIFY\nmore"]), [BadRequest]);
        assert_eq!(verdicts(&[b"  V1", b"\n"]), [NotHttp, BadRequest]);
        assert_eq!(verdicts(&[b"GET", b"\r\n"]), [Undecided, BadRequest]);
        assert_eq!(verdicts(&[b" GET / HTTP/1.1\r\n"]), [BadRequest]);
        assert_eq!(verdicts(&[b"\x16\x03\x01\x02\x00"]), [NotHttp]);
    }

    #[test]
    fn a_first_line_without_end_is_too_large_at_gos_limit() {
        let mut line = FirstLine::default();
        let chunk = vec![b' '; 4096];
        let mut fed = 0;
        let verdict = loop {
            let v = line.feed(&chunk);
            fed += chunk.len();
            if v != Verdict::NotHttp {
                break v;
            }
        };
        assert_eq!(
            (verdict, line.read),
            (Verdict::TooLarge, GO_FIRST_LINE_LIMIT)
        );
        assert!(fed >= GO_FIRST_LINE_LIMIT);
        // A newline as the last byte within the limit still gets the 400.
        let mut line = FirstLine::default();
        let mut bytes = vec![b' '; GO_FIRST_LINE_LIMIT];
        *bytes.last_mut().unwrap() = b'\n';
        assert_eq!(line.feed(&bytes), Verdict::BadRequest);
    }

    /// Drives a [`FirstLineStream`] over an in-memory pipe; returns the client end and a
    /// task that reads the server end to its end of stream, as hyper would.
    fn serve(timeout: Duration) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<Vec<u8>>) {
        let (client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(async move {
            let mut s = FirstLineStream::new(server, timeout);
            let mut seen = Vec::new();
            let mut buf = [0u8; 24];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            seen
        });
        (client, task)
    }

    async fn read_all(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_request_passes_through_unchanged_even_when_split() {
        let (mut client, server) = serve(FIRST_LINE_TIMEOUT);
        let req = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
        client.write_all(&req[..2]).await.unwrap();
        tokio::task::yield_now().await;
        client.write_all(&req[2..]).await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(server.await.unwrap(), req);
    }

    #[tokio::test]
    async fn the_tcp_magic_gets_gos_400_after_the_first_line() {
        let (mut client, server) = serve(FIRST_LINE_TIMEOUT);
        client.write_all(b"  V2").await.unwrap();
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(100), client.read(&mut byte)).await;
        assert!(early.is_err(), "answered before the line ended: {early:?}");
        client.write_all(b"IDENTIFY\n").await.unwrap();
        assert_eq!(read_all(&mut client).await, GO_BAD_REQUEST);
        // hyper's side never saw a byte: to it the client left without a request.
        assert_eq!(server.await.unwrap(), b"");
    }

    #[tokio::test]
    async fn an_unfinished_line_is_closed_without_answer_after_the_timeout() {
        let (mut client, server) = serve(Duration::from_millis(200));
        client.write_all(b"  V2").await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), read_all(&mut client))
            .await
            .expect("closed after the first-line timeout");
        assert_eq!(answer, b"");
        assert_eq!(server.await.unwrap(), b"");
    }

    #[tokio::test]
    async fn a_client_leaving_mid_line_gets_no_answer() {
        let (mut client, server) = serve(FIRST_LINE_TIMEOUT);
        client.write_all(b"  V2").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(server.await.unwrap(), b"");
        assert_eq!(read_all(&mut client).await, b"");
    }

    /// Through axum's real server: the 400 is Go's, and ordinary requests still work.
    #[tokio::test]
    async fn behind_axum_serve() {
        use axum::serve::ListenerExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/ping", axum::routing::get(|| async { "OK" }));
        let listener = FirstLineListener::new(listener).tap_io(|io| {
            let _ = io.get_ref().set_nodelay(true);
        });
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let exchange = |first: &'static [u8], second: &'static [u8]| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(first).await.unwrap();
            s.write_all(second).await.unwrap();
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
                .await
                .expect("the server closes")
                .unwrap();
            out
        };
        assert_eq!(exchange(b"  V2", b"IDENTIFY\n").await, GO_BAD_REQUEST);
        let ok = exchange(b"GE", b"T /ping HTTP/1.1\r\nConnection: close\r\n\r\n").await;
        let ok = String::from_utf8(ok).unwrap();
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nOK"),
            "{ok}"
        );
        server.abort();
    }
}
