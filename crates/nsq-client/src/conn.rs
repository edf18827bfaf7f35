//! Connection plumbing shared by producers and consumers: dialing, the V2 handshake
//! (magic + IDENTIFY), frame reading and bounded writes.
//!
//! Everything after dialing is generic over [`Transport`] (any `AsyncRead + AsyncWrite`), so
//! TLS and compression can be added later as stream wrappers applied right after the
//! IDENTIFY response (the order nsqd uses: TLS, then snappy or deflate, each confirmed by an
//! `OK` frame) without touching the producer and consumer loops.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use nsq_protocol::frame::decode_frame;
use nsq_protocol::identify::IdentifyResponse;
use nsq_protocol::{Command, Frame, FrameType, MAGIC_V2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{Error, Result};

/// A byte stream a connection can run over (plain TCP today; TLS/compression wrappers later).
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// Largest frame accepted from a server. nsqd's own limit is `--max-msg-size` (1 MiB by
/// default, configurable), which the client cannot learn, so only absurd sizes are refused.
const MAX_FRAME_SIZE: usize = i32::MAX as usize;

/// What the IDENTIFY exchange told us.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// The server's `--max-rdy-count` (2500 when the server did not negotiate).
    pub(crate) max_rdy_count: u64,
    /// The server version, when reported.
    pub(crate) version: Option<String>,
}

/// Opens a TCP connection within `dial_timeout`.
pub(crate) async fn dial(addr: &str, config: &Config) -> Result<TcpStream> {
    let stream = tokio::time::timeout(config.dial_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Timeout)??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Buffered frame decoding over any reader.
pub(crate) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    pub(crate) fn new() -> FrameReader {
        FrameReader {
            buf: BytesMut::with_capacity(16 * 1024),
        }
    }

    /// A complete frame already buffered, if any.
    pub(crate) fn next_buffered(&mut self) -> Result<Option<Frame>> {
        Ok(decode_frame(&mut self.buf, MAX_FRAME_SIZE)?)
    }

    /// Reads more bytes (cancel safe: `read_buf` either reads or does nothing).
    pub(crate) async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<()> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let n = r.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            )));
        }
        Ok(())
    }

    /// Reads the next frame, answering nothing; bounded by `timeout`.
    pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut R,
        timeout: Duration,
    ) -> Result<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(f) = self.next_buffered()? {
                return Ok(f);
            }
            tokio::time::timeout_at(deadline, self.fill(r))
                .await
                .map_err(|_| Error::Timeout)??;
        }
    }
}

/// Writes all of `data` within `timeout`.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    timeout: Duration,
) -> Result<()> {
    tokio::time::timeout(timeout, w.write_all(data))
        .await
        .map_err(|_| Error::Timeout)??;
    Ok(())
}

/// Reads frames until a non-heartbeat one, answering heartbeats with NOP.
pub(crate) async fn read_response<S: Transport>(
    stream: &mut S,
    reader: &mut FrameReader,
    config: &Config,
) -> Result<Frame> {
    loop {
        let frame = reader.read_frame(stream, config.read_timeout).await?;
        if frame.is_heartbeat() {
            write_all(stream, b"NOP\n", config.write_timeout).await?;
            continue;
        }
        if frame.frame_type == FrameType::Error {
            return Err(Error::from_error_frame(&frame.data));
        }
        return Ok(frame);
    }
}

/// Sends the magic and IDENTIFY and interprets the answer.
pub(crate) async fn handshake<S: Transport>(
    stream: &mut S,
    reader: &mut FrameReader,
    config: &Config,
) -> Result<Negotiated> {
    let body = serde_json::to_vec(&config.identify_request())
        .map_err(|e| Error::Protocol(format!("cannot encode IDENTIFY: {e}")))?;
    let mut buf = BytesMut::with_capacity(body.len() + 32);
    buf.put_slice(MAGIC_V2);
    Command::Identify { body: body.into() }.encode(&mut buf);
    write_all(stream, &buf, config.write_timeout).await?;
    let frame = read_response(stream, reader, config).await?;
    if frame.frame_type != FrameType::Response {
        return Err(Error::Protocol(
            "unexpected frame in reply to IDENTIFY".into(),
        ));
    }
    if frame.data.as_ref() == nsq_protocol::OK {
        // A server that does not negotiate features: use NSQ's defaults.
        return Ok(Negotiated {
            max_rdy_count: 2500,
            version: None,
        });
    }
    let resp: IdentifyResponse = serde_json::from_slice(&frame.data)
        .map_err(|e| Error::Protocol(format!("bad IDENTIFY response: {e}")))?;
    // We never ask for these; a server that turns them on anyway would switch the stream
    // format under us. (This is where TLS/compression upgrades will go.)
    if resp.tls_v1 || resp.snappy || resp.deflate {
        return Err(Error::Unsupported(
            "server enabled TLS or compression that was not requested".into(),
        ));
    }
    if resp.auth_required {
        return Err(Error::Unsupported("AUTH (the server requires it)".into()));
    }
    Ok(Negotiated {
        max_rdy_count: resp.max_rdy_count.max(0) as u64,
        version: Some(resp.version),
    })
}

/// Accepts `host:port`, `[v6]:port` or a bare `host:port` with surrounding spaces.
pub(crate) fn normalize_addr(addr: &str) -> Result<String> {
    let a = addr.trim();
    let ok = match a.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "address {addr:?} is not host:port"
        )));
    }
    Ok(a.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            normalize_addr(" 127.0.0.1:4150 ").unwrap(),
            "127.0.0.1:4150"
        );
        assert!(normalize_addr("[::1]:4150").is_ok());
        assert!(normalize_addr("localhost").is_err());
        assert!(normalize_addr(":4150").is_err());
        assert!(normalize_addr("h:notaport").is_err());
    }
}
