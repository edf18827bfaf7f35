//! Connection plumbing shared by producers and consumers: dialing, the V2 handshake
//! (magic, IDENTIFY, then the upgrades nsqd agreed to and AUTH), frame reading and bounded
//! writes.
//!
//! A connection is an [`nsq_net::NsqStream`] over TCP, upgraded in place in the order nsqd
//! uses (go-nsq `conn.go` `identify`): TLS, then snappy *or* deflate, each confirmed by an `OK`
//! frame read through the new layer; then `AUTH` if the IDENTIFY response says
//! `auth_required`. The producer and consumer loops only see `AsyncRead + AsyncWrite`, so they
//! are the same for every mode; plain TCP stays the enum's first variant (one branch per
//! poll, flushing it is a no-op).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use nsq_net::rustls::ClientConfig;
use nsq_net::NsqStream;
use nsq_protocol::frame::decode_frame;
use nsq_protocol::identify::IdentifyResponse;
use nsq_protocol::{Command, Frame, FrameType, MAGIC_V2};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Config;
use crate::error::{Error, Result};

/// A byte stream a connection can run over.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A connection's stream: TCP with the layers negotiated after IDENTIFY.
pub(crate) type Stream = NsqStream<TcpStream>;

/// Largest frame accepted from a server. nsqd's own limit is `--max-msg-size` (1 MiB by
/// default, configurable), which the client cannot learn, so only absurd sizes are refused.
const MAX_FRAME_SIZE: usize = i32::MAX as usize;

/// Longest TLS handshake (nsqd gives its side 5 s).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the IDENTIFY exchange told us.
#[derive(Debug, Clone)]
pub(crate) struct Negotiated {
    /// The server's `--max-rdy-count` (2500 when the server did not negotiate).
    pub(crate) max_rdy_count: u64,
    /// The server version, when reported.
    pub(crate) version: Option<String>,
    /// The layers in use: `plain`, `TLS`, `snappy`, `TLS+deflate`, ...
    pub(crate) layers: &'static str,
    /// The identity the auth server gave our secret, when AUTH was done.
    pub(crate) auth_identity: Option<String>,
}

/// nsqd's answer to `AUTH` (go-nsq `AuthResponse`).
#[derive(Debug, serde::Deserialize)]
struct AuthResponse {
    #[serde(default)]
    identity: String,
    #[serde(default)]
    identity_url: String,
    #[serde(default)]
    permission_count: i64,
}

/// Dials `addr` and runs the whole handshake; `tls` is the configuration built from the TLS
/// options (see [`crate::tls`]), needed if nsqd agrees to TLS.
pub(crate) async fn connect(
    addr: &str,
    config: &Config,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(Stream, FrameReader, Negotiated)> {
    let mut stream = NsqStream::Plain(dial(addr, config).await?);
    let mut reader = FrameReader::new();
    let negotiated = handshake(&mut stream, &mut reader, addr, config, tls).await?;
    Ok((stream, reader, negotiated))
}

/// Opens a TCP connection within `dial_timeout`, from `local_addr` when set.
async fn dial(addr: &str, config: &Config) -> Result<TcpStream> {
    let connect = async {
        let Some(local) = config.local_addr else {
            return TcpStream::connect(addr).await;
        };
        // go-nsq's net.Dialer{LocalAddr}: the first resolved address of the same family.
        let remote = tokio::net::lookup_host(addr)
            .await?
            .find(|a| a.is_ipv4() == local.is_ipv4())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::AddrNotAvailable,
                    format!("{addr} has no address of local_addr {local}'s family"),
                )
            })?;
        let socket = if local.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(local)?;
        socket.connect(remote).await
    };
    let stream = tokio::time::timeout(config.dial_timeout, connect)
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

    /// Hands over the bytes read past the last frame (they belong to the next stream layer).
    fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
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

/// Writes all of `data` and flushes it (TLS and the compressors buffer; for plain TCP the
/// flush is a no-op) within `timeout`.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    data: &[u8],
    timeout: Duration,
) -> Result<()> {
    tokio::time::timeout(timeout, async {
        w.write_all(data).await?;
        w.flush().await
    })
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

/// Sends the magic and IDENTIFY, performs the upgrades nsqd agreed to and AUTH if required.
pub(crate) async fn handshake(
    stream: &mut Stream,
    reader: &mut FrameReader,
    addr: &str,
    config: &Config,
    tls: Option<&Arc<ClientConfig>>,
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
    if !frame.data.starts_with(b"{") {
        // A server that does not negotiate features (go-nsq: not JSON): NSQ's defaults.
        return Ok(Negotiated {
            max_rdy_count: 2500,
            version: None,
            layers: stream.describe(),
            auth_identity: None,
        });
    }
    let resp: IdentifyResponse = serde_json::from_slice(&frame.data)
        .map_err(|e| Error::Protocol(format!("bad IDENTIFY response: {e}")))?;

    if config.tls_v1 && !resp.tls_v1 {
        // go-nsq carries on in plain text too; say so loudly.
        tracing::warn!(%addr, "TLS requested but nsqd declined it (no certificate?): the connection is NOT encrypted");
    }
    if resp.tls_v1 {
        let Some(tls) = tls else {
            return Err(Error::Protocol(
                "nsqd enabled TLS although it was not requested".into(),
            ));
        };
        if !reader.take_buffered().is_empty() {
            return Err(Error::Protocol(
                "nsqd sent data before the TLS handshake".into(),
            ));
        }
        stream
            .upgrade_tls_client(
                tls.clone(),
                crate::tls::server_name(addr, config)?,
                TLS_HANDSHAKE_TIMEOUT.min(config.read_timeout),
            )
            .await
            .map_err(|e| {
                let hint = if config.tls_root_ca_file.is_none()
                    && e.to_string().contains("UnknownIssuer")
                {
                    " (no tls_root_ca_file is set, so the system CA bundle was used)"
                } else {
                    ""
                };
                Error::Tls(format!("{addr}: {e}{hint}"))
            })?;
        // With TLS 1.3 the server checks our certificate after our side of the handshake
        // is done, so its refusal shows up here, as an alert or a closed connection.
        expect_ok(stream, reader, config, "TLS")
            .await
            .map_err(|e| match e {
                Error::Io(e) => Error::Tls(format!(
                    "{addr}: nsqd closed the connection after the handshake: {e}"
                )),
                other => other,
            })?;
    }
    if resp.snappy && resp.deflate {
        return Err(Error::Protocol(
            "nsqd enabled both snappy and deflate".into(),
        ));
    }
    if resp.deflate || resp.snappy {
        // Bytes already read past the last frame are the start of the compressed stream.
        let early = reader.take_buffered();
        let (upgraded, what) = if resp.deflate {
            (
                stream.upgrade_deflate(config.deflate_level, &early),
                "deflate",
            )
        } else {
            (stream.upgrade_snappy(&early), "snappy")
        };
        upgraded.map_err(|e| Error::Protocol(e.to_string()))?;
        expect_ok(stream, reader, config, what).await?;
    }
    let mut auth_identity = None;
    if resp.auth_required {
        let Some(secret) = config.auth_secret.as_deref() else {
            return Err(Error::Auth(format!(
                "nsqd at {addr} requires AUTH and no auth_secret is configured"
            )));
        };
        let mut buf = BytesMut::new();
        Command::Auth {
            secret: Bytes::copy_from_slice(secret.as_bytes()),
        }
        .encode(&mut buf);
        write_all(stream, &buf, config.write_timeout).await?;
        // A refused secret is an error frame (E_UNAUTHORIZED, E_AUTH_FAILED), kept as is.
        let frame = read_response(stream, reader, config).await?;
        let auth: AuthResponse = serde_json::from_slice(&frame.data).map_err(|e| {
            Error::Protocol(format!(
                "bad AUTH response {:?}: {e}",
                String::from_utf8_lossy(&frame.data)
            ))
        })?;
        tracing::info!(
            %addr,
            identity = %auth.identity,
            identity_url = %auth.identity_url,
            permissions = auth.permission_count,
            "AUTH accepted"
        );
        auth_identity = Some(auth.identity);
    }
    Ok(Negotiated {
        max_rdy_count: resp.max_rdy_count.max(0) as u64,
        version: Some(resp.version),
        layers: stream.describe(),
        auth_identity,
    })
}

/// Reads the `OK` that confirms an upgrade, through the new layer.
async fn expect_ok(
    stream: &mut Stream,
    reader: &mut FrameReader,
    config: &Config,
    what: &str,
) -> Result<()> {
    let frame = read_response(stream, reader, config).await?;
    if frame.frame_type != FrameType::Response || frame.data.as_ref() != nsq_protocol::OK {
        return Err(Error::Protocol(format!(
            "invalid response from {what} upgrade: {:?}",
            String::from_utf8_lossy(&frame.data)
        )));
    }
    Ok(())
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
