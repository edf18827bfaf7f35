//! Stream layers of NSQ's TCP protocol, for the server (nsqd) and clients alike.
//!
//! An NSQ connection starts as plain TCP and may be upgraded in place after IDENTIFY:
//! first TLS, then one compression (snappy *or* deflate) on top. [`NsqStream`] is that
//! connection in whichever state it is in; its upgrade methods move it to the next layer.
//!
//! - [`tls`]: rustls configurations built from nsqd's flags, [`tls::TlsInfo`] for `/stats`.
//! - [`snappy`]: the snappy framing format as a sans-I/O codec.
//! - [`deflate`]: raw deflate with a sync flush per write batch, as a sans-I/O codec.
//! - [`compressed`]: the async stream that applies a codec to an inner stream.
//!
//! **Why an enum and not `Box<dyn AsyncRead + AsyncWrite>`:** the plain-TCP case is by far
//! the most common and the hottest; as the first variant it costs one predictable branch
//! per poll and no allocation or virtual call. Layers are boxed so the enum stays small.
//!
//! Writers must call `poll_flush` (e.g. `AsyncWriteExt::flush`) after writing: TLS and the
//! compressors buffer. [`NsqStream::needs_flush`] tells whether flushing can matter.

pub mod compressed;
pub mod deflate;
pub mod snappy;
pub mod tls;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use compressed::{Codec, Compressed};
pub use deflate::DeflateCodec;
pub use snappy::SnappyCodec;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};
/// The TLS crates, re-exported so users name the same versions.
pub use {rustls, tokio_rustls};

/// A snappy or deflate stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Bad snappy framing or data.
    #[error("snappy: {0}")]
    Snappy(String),
    /// Bad deflate data.
    #[error("deflate: {0}")]
    Deflate(String),
}

/// An upgrade could not be done.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The upgrade does not apply to the stream's current layers.
    #[error("cannot upgrade to {to}: connection is already {from}")]
    WrongState {
        /// Requested layer.
        to: &'static str,
        /// Current layers.
        from: &'static str,
    },
    /// The TLS handshake did not finish in time.
    #[error("TLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
}

/// Plain or TLS: what compression is layered on.
pub enum Transport<S> {
    /// Plain stream.
    Plain(S),
    /// TLS over the stream.
    Tls(Box<tokio_rustls::TlsStream<S>>),
}

/// An NSQ connection's stream with its negotiated layers.
pub enum NsqStream<S> {
    /// Plain stream.
    Plain(S),
    /// TLS.
    Tls(Box<tokio_rustls::TlsStream<S>>),
    /// Snappy framing over plain or TLS.
    Snappy(Box<Compressed<Transport<S>, SnappyCodec>>),
    /// Raw deflate over plain or TLS.
    Deflate(Box<Compressed<Transport<S>, DeflateCodec>>),
    /// Left behind by a failed upgrade; every operation fails.
    Broken,
}

impl<S> NsqStream<S> {
    /// Layers, for messages: `plain`, `TLS`, `snappy`, `TLS+snappy`, ...
    pub fn describe(&self) -> &'static str {
        match self {
            NsqStream::Plain(_) => "plain",
            NsqStream::Tls(_) => "TLS",
            NsqStream::Snappy(c) => match c.get_ref() {
                Transport::Plain(_) => "snappy",
                Transport::Tls(_) => "TLS+snappy",
            },
            NsqStream::Deflate(c) => match c.get_ref() {
                Transport::Plain(_) => "deflate",
                Transport::Tls(_) => "TLS+deflate",
            },
            NsqStream::Broken => "broken",
        }
    }

    /// Whether writes may sit in a buffer until flushed (false for plain TCP).
    pub fn needs_flush(&self) -> bool {
        !matches!(self, NsqStream::Plain(_))
    }

    /// The TLS session's parameters, when TLS is on.
    pub fn tls_info(&self) -> Option<tls::TlsInfo> {
        let t = match self {
            NsqStream::Tls(t) => t,
            NsqStream::Snappy(c) => match c.get_ref() {
                Transport::Tls(t) => t,
                Transport::Plain(_) => return None,
            },
            NsqStream::Deflate(c) => match c.get_ref() {
                Transport::Tls(t) => t,
                Transport::Plain(_) => return None,
            },
            _ => return None,
        };
        Some(tls::TlsInfo::from_state(t.get_ref().1))
    }

    /// The plain stream, for a TLS upgrade; any other state is left as it was.
    fn take_plain(&mut self) -> Result<S, UpgradeError> {
        match std::mem::replace(self, NsqStream::Broken) {
            NsqStream::Plain(s) => Ok(s),
            other => {
                let from = other.describe();
                *self = other;
                Err(UpgradeError::WrongState { to: "TLS", from })
            }
        }
    }

    fn take_transport(&mut self, to: &'static str) -> Result<Transport<S>, UpgradeError> {
        match std::mem::replace(self, NsqStream::Broken) {
            NsqStream::Plain(s) => Ok(Transport::Plain(s)),
            NsqStream::Tls(t) => Ok(Transport::Tls(t)),
            other => {
                let from = other.describe();
                *self = other;
                Err(UpgradeError::WrongState { to, from })
            }
        }
    }

    /// Puts snappy framing on top. `already_read` are bytes read from the stream past the
    /// upgrade point (they belong to the compressed stream).
    pub fn upgrade_snappy(&mut self, already_read: &[u8]) -> Result<(), UpgradeError> {
        let t = self.take_transport("snappy")?;
        *self = NsqStream::Snappy(Box::new(Compressed::new(
            t,
            SnappyCodec::new(),
            already_read,
        )));
        Ok(())
    }

    /// Puts raw deflate at `level` on top (see [`NsqStream::upgrade_snappy`]).
    pub fn upgrade_deflate(&mut self, level: u32, already_read: &[u8]) -> Result<(), UpgradeError> {
        let t = self.take_transport("deflate")?;
        *self = NsqStream::Deflate(Box::new(Compressed::new(
            t,
            DeflateCodec::new(level),
            already_read,
        )));
        Ok(())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> NsqStream<S> {
    /// Runs the server side of a TLS handshake over the plain stream, within `timeout`
    /// (Go gives 5 s). On failure the stream is [`NsqStream::Broken`].
    pub async fn upgrade_tls_server(
        &mut self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> Result<(), UpgradeError> {
        let s = self.take_plain()?;
        let t = tokio::time::timeout(timeout, acceptor.accept(s))
            .await
            .map_err(|_| UpgradeError::Timeout(timeout))?
            .map_err(UpgradeError::Handshake)?;
        *self = NsqStream::Tls(Box::new(tokio_rustls::TlsStream::Server(t)));
        Ok(())
    }

    /// Runs the client side of a TLS handshake (for clients upgrading after IDENTIFY).
    pub async fn upgrade_tls_client(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
        timeout: Duration,
    ) -> Result<(), UpgradeError> {
        let s = self.take_plain()?;
        let connector = TlsConnector::from(config);
        let t = tokio::time::timeout(timeout, connector.connect(server_name, s))
            .await
            .map_err(|_| UpgradeError::Timeout(timeout))?
            .map_err(UpgradeError::Handshake)?;
        *self = NsqStream::Tls(Box::new(tokio_rustls::TlsStream::Client(t)));
        Ok(())
    }
}

fn broken() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection broken by a failed upgrade",
    )
}

macro_rules! dispatch {
    ($self:expr, $s:ident => $e:expr, $broken:expr) => {
        match $self.get_mut() {
            NsqStream::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            NsqStream::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            NsqStream::Snappy($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            NsqStream::Deflate($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            NsqStream::Broken => $broken,
        }
    };
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for NsqStream<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_read(cx, buf), Poll::Ready(Err(broken())))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for NsqStream<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(self, s => s.poll_write(cx, buf), Poll::Ready(Err(broken())))
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_flush(cx), Poll::Ready(Err(broken())))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(self, s => s.poll_shutdown(cx), Poll::Ready(Err(broken())))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(t) => Pin::new(&mut **t).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(t) => Pin::new(&mut **t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(t) => Pin::new(&mut **t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(t) => Pin::new(&mut **t).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Pki {
        _dir: std::path::PathBuf,
        ca: std::path::PathBuf,
        server_cert: std::path::PathBuf,
        server_key: std::path::PathBuf,
    }

    fn pki(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("nsq-net-test-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let p = Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            _dir: dir,
        };
        std::fs::write(&p.ca, ca.pem()).unwrap();
        std::fs::write(&p.server_cert, cert.pem()).unwrap();
        std::fs::write(&p.server_key, key.serialize_pem()).unwrap();
        p
    }

    /// Both ends upgrade plain → TLS → compression over a real loopback socket, exchange
    /// more than one chunk each way, and read in small pieces.
    async fn layered_round_trip(compression: &'static str) {
        let p = pki(compression);
        let server_cfg = tls::server_config(&tls::ServerTlsOptions {
            cert: p.server_cert.clone(),
            key: p.server_key.clone(),
            ..Default::default()
        })
        .unwrap();
        let client_cfg = tls::client_config(&p.ca, None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();

        let expected = payload.clone();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = NsqStream::Plain(s);
            s.upgrade_tls_server(&TlsAcceptor::from(server_cfg), Duration::from_secs(5))
                .await
                .unwrap();
            match compression {
                "snappy" => s.upgrade_snappy(&[]).unwrap(),
                _ => s.upgrade_deflate(6, &[]).unwrap(),
            }
            let mut got = vec![0u8; expected.len()];
            let mut filled = 0;
            while filled < got.len() {
                let n = s
                    .read(&mut got[filled..(filled + 1000).min(expected.len())])
                    .await
                    .unwrap();
                assert!(n > 0, "early EOF");
                filled += n;
            }
            assert_eq!(got, expected);
            s.write_all(b"echo:").await.unwrap();
            s.write_all(&got).await.unwrap();
            s.flush().await.unwrap();
            let info = s.tls_info().unwrap();
            assert!(info.version.starts_with("TLS1."));
            assert!(
                info.cipher_suite.starts_with("TLS_"),
                "{}",
                info.cipher_suite
            );
            s.describe()
        });

        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = NsqStream::Plain(c);
        c.upgrade_tls_client(
            client_cfg,
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        match compression {
            "snappy" => c.upgrade_snappy(&[]).unwrap(),
            _ => c.upgrade_deflate(1, &[]).unwrap(),
        }
        // An upgrade does not apply twice.
        assert!(c.upgrade_snappy(&[]).is_err());
        for piece in payload.chunks(70_000) {
            c.write_all(piece).await.unwrap();
            c.flush().await.unwrap();
        }
        let mut back = vec![0u8; 5 + payload.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back[..5], b"echo:");
        assert_eq!(&back[5..], &payload[..]);
        let desc = server.await.unwrap();
        assert_eq!(
            desc,
            if compression == "snappy" {
                "TLS+snappy"
            } else {
                "TLS+deflate"
            }
        );
    }

    #[tokio::test]
    async fn tls_then_snappy() {
        layered_round_trip("snappy").await;
    }

    #[tokio::test]
    async fn tls_then_deflate() {
        layered_round_trip("deflate").await;
    }

    #[tokio::test]
    async fn bytes_read_before_the_upgrade_are_decoded_first() {
        let (a, b) = tokio::io::duplex(1 << 20);
        let mut wire = bytes::BytesMut::new();
        SnappyCodec::new()
            .encode(b"early bytes, then more", &mut wire)
            .unwrap();
        let (early, rest) = wire.split_at(9);
        let mut reader = NsqStream::Plain(a);
        reader.upgrade_snappy(early).unwrap();
        let mut writer = b;
        writer.write_all(rest).await.unwrap();
        let mut got = vec![0u8; 22];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early bytes, then more");
    }

    /// Highly compressible batches decode to more than one budget: everything still arrives
    /// although no further wire bytes follow the last batch.
    #[tokio::test]
    async fn output_beyond_the_decode_budget_is_not_stranded() {
        for kind in ["snappy", "deflate"] {
            let (a, b) = tokio::io::duplex(1 << 20);
            let mut writer = NsqStream::Plain(b);
            let mut reader = NsqStream::Plain(a);
            if kind == "snappy" {
                writer.upgrade_snappy(&[]).unwrap();
                reader.upgrade_snappy(&[]).unwrap();
            } else {
                writer.upgrade_deflate(9, &[]).unwrap();
                reader.upgrade_deflate(9, &[]).unwrap();
            }
            let data = vec![7u8; 3 * compressed::DECODE_BUDGET + 12345];
            writer.write_all(&data).await.unwrap();
            writer.flush().await.unwrap();
            let mut got = vec![0u8; data.len()];
            tokio::time::timeout(Duration::from_secs(5), reader.read_exact(&mut got))
                .await
                .unwrap_or_else(|_| panic!("{kind}: decoded output stranded"))
                .unwrap();
            assert_eq!(got, data, "{kind}");
        }
    }

    #[tokio::test]
    async fn corrupt_input_is_an_invalid_data_error() {
        let (a, mut b) = tokio::io::duplex(1024);
        let mut reader = NsqStream::Plain(a);
        reader.upgrade_deflate(6, &[]).unwrap();
        b.write_all(&[0xff; 32]).await.unwrap();
        let err = reader.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
