//! TLS, snappy and deflate for the benchmark clients, so `bench_writer` / `bench_reader` can
//! record the cost of each layer next to plain TCP.
//!
//! The benchmarks are blocking `std` I/O on threads (see the crate docs), while `nsq-net`'s
//! `NsqStream` is async; so this module applies the same pieces in blocking form: rustls's own
//! blocking `StreamOwned` for TLS, and `nsq-net`'s sans-I/O snappy and deflate codecs behind a
//! small blocking adapter ([`Compressed`]). The wire bytes are the ones nsq-client and go-nsq
//! produce. Without any layer, [`connect_layered`] is exactly the plain handshake of
//! [`crate::wire`] (no feature negotiation), so plain numbers stay comparable with earlier runs.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use nsq_net::rustls::pki_types::ServerName;
use nsq_net::rustls::{self, ClientConfig, ClientConnection, StreamOwned};
use nsq_net::{Codec, DeflateCodec, SnappyCodec};
use nsq_protocol::{Command, FrameType, MAGIC_V2};

use crate::wire::{connect, handshake, BenchStream, FrameReader};

/// Which layers to negotiate.
#[derive(Clone, Debug, Default)]
pub struct Layers {
    /// TLS configuration and the name to check, when TLS is wanted.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Snappy compression.
    pub snappy: bool,
    /// Deflate compression at this level.
    pub deflate: Option<u32>,
}

/// The layer flags `bench_writer` and `bench_reader` share (flattened into their `Args`).
#[derive(Debug, Clone, clap::Args)]
pub struct LayerArgs {
    /// negotiate TLS (nsq-rs extension; needs --tls-root-ca-file)
    #[arg(long)]
    pub tls: bool,
    /// PEM CA certificate(s) nsqd's certificate must chain to (with --tls)
    #[arg(long, default_value = "")]
    pub tls_root_ca_file: String,
    /// negotiate snappy compression (nsq-rs extension)
    #[arg(long)]
    pub snappy: bool,
    /// negotiate deflate compression (nsq-rs extension)
    #[arg(long)]
    pub deflate: bool,
    /// deflate level 1-9 (with --deflate)
    #[arg(long, default_value_t = 6)]
    pub deflate_level: u32,
}

impl LayerArgs {
    /// The layers these flags ask for, for connections to `addr`.
    pub fn layers(&self, addr: &str) -> anyhow::Result<Layers> {
        Layers::from_flags(
            addr,
            self.tls,
            &self.tls_root_ca_file,
            self.snappy,
            self.deflate,
            self.deflate_level,
        )
    }
}

impl Layers {
    /// From the tools' flags: `--tls` (with `--tls-root-ca-file`), `--snappy`, `--deflate`.
    pub fn from_flags(
        addr: &str,
        tls: bool,
        root_ca: &str,
        snappy: bool,
        deflate: bool,
        deflate_level: u32,
    ) -> anyhow::Result<Layers> {
        if snappy && deflate {
            bail!("--snappy and --deflate are exclusive");
        }
        let tls = if tls {
            if root_ca.is_empty() {
                bail!("--tls needs --tls-root-ca-file (the CA that signed nsqd's certificate)");
            }
            let config = nsq_net::tls::client_config(root_ca.as_ref(), None)?;
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| anyhow!("{host:?} is not a TLS server name: {e}"))?;
            Some((config, name))
        } else {
            None
        };
        Ok(Layers {
            tls,
            snappy,
            deflate: deflate.then_some(deflate_level),
        })
    }

    fn any(&self) -> bool {
        self.tls.is_some() || self.snappy || self.deflate.is_some()
    }

    /// `plain`, `TLS`, `TLS+snappy`, ... for the tools' banner.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.tls.is_some() {
            parts.push("TLS".to_string());
        }
        if self.snappy {
            parts.push("snappy".to_string());
        }
        if let Some(level) = self.deflate {
            parts.push(format!("deflate({level})"));
        }
        if parts.is_empty() {
            "plain TCP".into()
        } else {
            parts.join("+")
        }
    }
}

/// TCP or TLS over TCP.
pub enum Transport {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// A blocking stream with a sans-I/O codec applied in both directions: each `write` is
/// encoded whole (complete snappy chunks or a sync-flushed deflate block) and sent.
pub struct Compressed {
    inner: Transport,
    codec: Box<dyn Codec + Send>,
    raw_in: BytesMut,
    plain: Vec<u8>,
    plain_pos: usize,
    out: BytesMut,
}

impl Compressed {
    /// Wraps `inner`; `early` are wire bytes already read past the upgrade point.
    pub fn new(inner: Transport, codec: Box<dyn Codec + Send>, early: &[u8]) -> Compressed {
        Compressed {
            inner,
            codec,
            raw_in: BytesMut::from(early),
            plain: Vec::new(),
            plain_pos: 0,
            out: BytesMut::new(),
        }
    }
}

impl Read for Compressed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.plain_pos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.plain_pos);
                buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
                self.plain_pos += n;
                if self.plain_pos == self.plain.len() {
                    self.plain.clear();
                    self.plain_pos = 0;
                }
                return Ok(n);
            }
            let progressed = self
                .codec
                .decode(
                    &mut self.raw_in,
                    &mut self.plain,
                    nsq_net::compressed::DECODE_BUDGET,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if progressed && !self.plain.is_empty() {
                continue;
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return Ok(0);
            }
            self.raw_in.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Write for Compressed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.codec
            .encode(buf, &mut self.out)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.inner.write_all(&self.out)?;
        self.out.clear();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A benchmark connection with its negotiated layers.
pub enum Layered {
    /// Plain TCP (the default, and what earlier results were measured with).
    Plain(TcpStream),
    /// TLS without compression.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Snappy or deflate, over plain TCP or TLS.
    Compressed(Box<Compressed>),
}

impl Read for Layered {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Layered::Plain(s) => s.read(buf),
            Layered::Tls(t) => t.read(buf),
            Layered::Compressed(c) => c.read(buf),
        }
    }
}

impl Write for Layered {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Layered::Plain(s) => s.write(buf),
            Layered::Tls(t) => t.write(buf),
            Layered::Compressed(c) => c.write(buf),
        }
    }

    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Layered::Plain(s) => s.flush(),
            Layered::Tls(t) => t.flush(),
            Layered::Compressed(c) => c.flush(),
        }
    }
}

impl BenchStream for Layered {
    fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Layered::Plain(s) => s.set_read_timeout(d),
            Layered::Tls(t) => t.sock.set_read_timeout(d),
            Layered::Compressed(c) => c.inner.tcp().set_read_timeout(d),
        }
    }
}

/// Connects and identifies, negotiating `layers` (IDENTIFY with `feature_negotiation`, then
/// TLS, then compression, each confirmed by an `OK` read through the new layer, the order
/// nsqd uses). Without layers this is [`crate::wire::handshake`] unchanged.
pub fn connect_layered(
    addr: &str,
    client_id: &str,
    tool: &str,
    layers: &Layers,
) -> anyhow::Result<(Layered, FrameReader)> {
    let mut s = connect(addr)?;
    let mut r = FrameReader::default();
    if !layers.any() {
        handshake(&mut s, &mut r, client_id, tool).context("IDENTIFY")?;
        return Ok((Layered::Plain(s), r));
    }
    let body = serde_json::json!({
        "client_id": client_id,
        "hostname": client_id,
        "user_agent": format!("nsq-bench {tool}/{}", env!("CARGO_PKG_VERSION")),
        "feature_negotiation": true,
        "tls_v1": layers.tls.is_some(),
        "snappy": layers.snappy,
        "deflate": layers.deflate.is_some(),
        "deflate_level": layers.deflate.unwrap_or(6),
    })
    .to_string();
    let mut out = BytesMut::new();
    out.extend_from_slice(MAGIC_V2);
    Command::Identify {
        body: body.into_bytes().into(),
    }
    .encode(&mut out);
    s.write_all(&out)?;
    let f = r.read_ok(&mut s, "IDENTIFY")?;
    let resp: serde_json::Value =
        serde_json::from_slice(&f.data).context("IDENTIFY response is not JSON")?;
    let agreed = |k: &str| resp[k].as_bool().unwrap_or(false);
    let mut transport = Transport::Plain(s);
    if let Some((config, name)) = &layers.tls {
        if !agreed("tls_v1") {
            bail!("nsqd declined TLS (start it with --tls-cert/--tls-key)");
        }
        if !r.take_buffered().is_empty() {
            bail!("nsqd sent data before the TLS handshake");
        }
        let Transport::Plain(tcp) = transport else {
            unreachable!("TLS is the first layer")
        };
        let conn = ClientConnection::new(config.clone(), name.clone())
            .map_err(|e: rustls::Error| anyhow!("TLS: {e}"))?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .context("TLS handshake")?;
        }
        let mut layered = Layered::Tls(Box::new(tls));
        r.read_ok(&mut layered, "TLS upgrade")?;
        let Layered::Tls(tls) = layered else {
            unreachable!()
        };
        transport = Transport::Tls(tls);
    }
    let codec: Option<(Box<dyn Codec + Send>, &str)> = match layers.deflate {
        Some(level) => Some((Box::new(DeflateCodec::new(level)), "deflate")),
        None if layers.snappy => Some((Box::new(SnappyCodec::new()), "snappy")),
        None => None,
    };
    let Some((codec, what)) = codec else {
        return Ok((
            match transport {
                Transport::Plain(s) => Layered::Plain(s),
                Transport::Tls(t) => Layered::Tls(t),
            },
            r,
        ));
    };
    if !agreed(what) {
        bail!("nsqd declined {what} (--{what}=false?)");
    }
    let early = r.take_buffered();
    let mut layered = Layered::Compressed(Box::new(Compressed::new(transport, codec, &early)));
    let f = r.read_frame(&mut layered)?;
    if f.frame_type != FrameType::Response || f.data.as_ref() != b"OK" {
        bail!(
            "{what} upgrade: unexpected answer {:?}",
            String::from_utf8_lossy(&f.data)
        );
    }
    Ok((layered, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn codec(kind: &str) -> Box<dyn Codec + Send> {
        match kind {
            "snappy" => Box::new(SnappyCodec::new()),
            _ => Box::new(DeflateCodec::new(6)),
        }
    }

    /// Both ends over loopback: more than one snappy chunk each way, read with a read
    /// timeout in small pieces (as `consume_until` does), echoed back intact.
    #[test]
    fn compressed_streams_round_trip_over_loopback() {
        for kind in ["snappy", "deflate"] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let len = payload.len();
            let server = std::thread::spawn(move || {
                let (s, _) = l.accept().unwrap();
                let mut c = Layered::Compressed(Box::new(Compressed::new(
                    Transport::Plain(s),
                    codec(kind),
                    &[],
                )));
                let mut got = vec![0u8; len];
                c.read_exact(&mut got).unwrap();
                c.write_all(&got).unwrap();
                c.flush().unwrap();
            });
            let s = TcpStream::connect(addr).unwrap();
            let mut c = Layered::Compressed(Box::new(Compressed::new(
                Transport::Plain(s),
                codec(kind),
                &[],
            )));
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            c.write_all(&payload).unwrap();
            c.flush().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1000];
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while got.len() < len {
                assert!(std::time::Instant::now() < deadline, "{kind}: timed out");
                match c.read(&mut buf) {
                    Ok(0) => panic!("{kind}: early EOF"),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => panic!("{kind}: {e}"),
                }
            }
            assert!(got == payload, "{kind}: echo differs");
            server.join().unwrap();
        }
    }

    #[test]
    fn flags_are_checked() {
        assert!(Layers::from_flags("127.0.0.1:4150", false, "", true, true, 6).is_err());
        let e = Layers::from_flags("127.0.0.1:4150", true, "", false, false, 6).unwrap_err();
        assert!(e.to_string().contains("--tls-root-ca-file"), "{e}");
        let l = Layers::from_flags("127.0.0.1:4150", false, "", false, true, 9).unwrap();
        assert_eq!(l.describe(), "deflate(9)");
        assert_eq!(Layers::default().describe(), "plain TCP");
    }
}
