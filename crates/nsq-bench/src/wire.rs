//! Blocking NSQ client loops shared by the tools, built on the sans-I/O `nsq-protocol` codec.
//!
//! [`publish_until`] is `bench_writer`'s loop (write one MPUB, read its response, repeat)
//! and [`consume_until`] is `bench_reader`'s loop (read whatever arrived, FIN every message
//! in it with one write). `tcp_ceiling` runs the same two loops against a trivial server, so
//! the difference between its numbers and nsqd's is nsqd's own cost.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::BytesMut;
use nsq_protocol::command::{encode_fin, encode_mpub};
use nsq_protocol::frame::decode_frame;
use nsq_protocol::{Command, Frame, FrameType, Message, MAGIC_V2};

/// A blocking byte stream the loops run over: a `TcpStream`, or a connection with TLS or
/// compression from [`crate::layers`]. Writers flush after each batch (a no-op on TCP).
pub trait BenchStream: Read + Write {
    /// Bounds each read, so loops can check their deadline.
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl BenchStream for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
}

/// Largest frame we accept (Go's tools use 1 MiB).
pub const MAX_FRAME: usize = 1024 * 1024;

/// Connects with Go's 1-second dial timeout and disables Nagle (as Go does by default).
pub fn connect(addr: &str) -> anyhow::Result<TcpStream> {
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .ok_or_else(|| anyhow!("{addr} resolves to nothing"))?;
    let s = TcpStream::connect_timeout(&sa, Duration::from_secs(1))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A blocking frame reader over a stream.
pub struct FrameReader {
    buf: BytesMut,
    chunk: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(256 * 1024),
            chunk: vec![0; 256 * 1024],
        }
    }
}

impl FrameReader {
    /// Reads once from `s` into the buffer. `Ok(0)` is end of stream; timeouts surface as
    /// `io::ErrorKind::WouldBlock`/`TimedOut` errors.
    pub fn fill<S: Read>(&mut self, s: &mut S) -> std::io::Result<usize> {
        let n = s.read(&mut self.chunk)?;
        self.buf.extend_from_slice(&self.chunk[..n]);
        Ok(n)
    }

    /// Hands over the bytes read past the last frame (they belong to the next stream layer).
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// The next complete buffered frame, if any.
    pub fn next_buffered(&mut self) -> anyhow::Result<Option<Frame>> {
        decode_frame(&mut self.buf, MAX_FRAME).map_err(|e| anyhow!("bad frame: {e}"))
    }

    /// Blocks until a whole frame has arrived.
    pub fn read_frame<S: Read>(&mut self, s: &mut S) -> anyhow::Result<Frame> {
        loop {
            if let Some(f) = self.next_buffered()? {
                return Ok(f);
            }
            if self.fill(s)? == 0 {
                bail!("connection closed by server");
            }
        }
    }

    /// Sends `SUB topic channel` and waits for its `OK`.
    pub fn subscribe<S: Read + Write>(
        &mut self,
        s: &mut S,
        topic: &str,
        channel: &str,
    ) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        Command::Sub {
            topic: topic.to_string(),
            channel: channel.to_string(),
        }
        .encode(&mut out);
        s.write_all(&out)?;
        s.flush()?;
        self.read_ok(s, "SUB")?;
        Ok(())
    }

    /// Blocks until a non-heartbeat response; fails on an error frame.
    pub fn read_ok<S: Read + Write>(&mut self, s: &mut S, what: &str) -> anyhow::Result<Frame> {
        loop {
            let f = self.read_frame(s)?;
            match f.frame_type {
                FrameType::Error => {
                    bail!("{what}: {}", String::from_utf8_lossy(&f.data))
                }
                FrameType::Response if f.is_heartbeat() => {
                    let mut out = BytesMut::new();
                    Command::Nop.encode(&mut out);
                    s.write_all(&out)?;
                    s.flush()?;
                }
                FrameType::Response => return Ok(f),
                FrameType::Message => bail!("{what}: unexpected message frame"),
            }
        }
    }
}

/// The IDENTIFY body the tools send: `feature_negotiation` off so the answer is plain `OK`.
pub fn identify_body(client_id: &str, tool: &str) -> Vec<u8> {
    serde_json::json!({
        "client_id": client_id,
        "hostname": client_id,
        "user_agent": format!("nsq-bench {tool}/{}", env!("CARGO_PKG_VERSION")),
        "feature_negotiation": false,
    })
    .to_string()
    .into_bytes()
}

/// Sends the magic and IDENTIFY, and reads IDENTIFY's `OK`.
pub fn handshake(
    s: &mut TcpStream,
    r: &mut FrameReader,
    client_id: &str,
    tool: &str,
) -> anyhow::Result<()> {
    let mut out = BytesMut::new();
    out.extend_from_slice(MAGIC_V2);
    Command::Identify {
        body: identify_body(client_id, tool).into(),
    }
    .encode(&mut out);
    s.write_all(&out)?;
    r.read_ok(s, "IDENTIFY")?;
    Ok(())
}

/// One encoded `MPUB <topic>` with `batch` bodies of `size` bytes of `'a'`.
pub fn mpub_buffer(topic: &str, size: usize, batch: usize) -> BytesMut {
    let body = vec![b'a'; size];
    let bodies = vec![&body[..]; batch];
    let mut buf = BytesMut::new();
    encode_mpub(&mut buf, topic, &bodies);
    buf
}

/// Where each body starts in an [`mpub_buffer`] (after `MPUB <topic>\n`, the body size and
/// the count, each body follows its 4-byte length).
pub fn mpub_body_offsets(topic: &str, size: usize, batch: usize) -> Vec<usize> {
    let header = "MPUB ".len() + topic.len() + 1 + 8;
    (0..batch).map(|i| header + i * (4 + size) + 4).collect()
}

/// Makes every body of an [`mpub_buffer`] distinct from every other one sent: writes `tag`
/// (e.g. the connection's index) and a running sequence number, 8 bytes each little-endian,
/// at the start of each body (as much of it as fits). For benchmarks of the dedup window,
/// which would drop the identical bodies of a plain `mpub_buffer`.
#[derive(Debug, Clone)]
pub struct UniqueBodies {
    offsets: Vec<usize>,
    size: usize,
    tag: u64,
    seq: u64,
}

impl UniqueBodies {
    /// For an [`mpub_buffer`] of `batch` bodies of `size` bytes to `topic`.
    pub fn new(topic: &str, size: usize, batch: usize, tag: u64) -> UniqueBodies {
        UniqueBodies {
            offsets: mpub_body_offsets(topic, size, batch),
            size,
            tag,
            seq: 0,
        }
    }

    /// Stamps the next batch's bodies into `mpub`.
    pub fn stamp(&mut self, mpub: &mut [u8]) {
        let n = self.size.min(16);
        for &o in &self.offsets {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.tag.to_le_bytes());
            id[8..].copy_from_slice(&self.seq.to_le_bytes());
            mpub[o..o + n].copy_from_slice(&id[..n]);
            self.seq += 1;
        }
    }
}

/// What one publishing connection achieved.
#[derive(Debug, Default)]
pub struct PubResult {
    /// Messages acknowledged.
    pub msgs: u64,
    /// Round-trip time of every MPUB (write start to response), nanoseconds.
    pub latencies_ns: Vec<u64>,
}

/// Publishes the pre-encoded `mpub` (holding `per_batch` messages) until `end`, reading and
/// checking the response to each before sending the next, like Go's `bench_writer`.
/// At least one batch is sent. Latency samples are recorded when `record` is set.
pub fn publish_until<S: BenchStream>(
    s: &mut S,
    r: &mut FrameReader,
    mpub: &[u8],
    per_batch: u64,
    end: Instant,
    record: bool,
) -> anyhow::Result<PubResult> {
    publish_until_with(s, r, &mut mpub.to_vec(), None, per_batch, end, record)
}

/// [`publish_until`], with each batch's bodies made distinct by `unique` first (outside the
/// timed round trip).
pub fn publish_until_with<S: BenchStream>(
    s: &mut S,
    r: &mut FrameReader,
    mpub: &mut [u8],
    mut unique: Option<&mut UniqueBodies>,
    per_batch: u64,
    end: Instant,
    record: bool,
) -> anyhow::Result<PubResult> {
    let mut res = PubResult::default();
    loop {
        if let Some(u) = unique.as_deref_mut() {
            u.stamp(mpub);
        }
        let t0 = Instant::now();
        s.write_all(mpub).context("writing MPUB")?;
        s.flush().context("writing MPUB")?;
        r.read_ok(s, "MPUB")?;
        let now = Instant::now();
        if record {
            res.latencies_ns.push((now - t0).as_nanos() as u64);
        }
        res.msgs += per_batch;
        if now >= end {
            return Ok(res);
        }
    }
}

/// What one consuming connection achieved.
#[derive(Debug, Default)]
pub struct ConsumeResult {
    /// Messages received and FINed.
    pub msgs: u64,
    /// Body bytes received.
    pub body_bytes: u64,
    /// When the last message arrived, if any.
    pub last_msg: Option<Instant>,
    /// Error frames received (logged, not fatal: e.g. `E_FIN_FAILED`).
    pub errors: u64,
}

/// Consumes until `end`: every read is decoded into frames, a `FIN` is appended for each
/// message (and a `NOP` for each heartbeat), and everything is written back with a single
/// write. Go's `bench_reader` writes each FIN into a `bufio.Writer` and flushes when the
/// count crosses 75% of RDY; batching per read keeps the client's syscall count low so the
/// benchmark measures the server. `s` gets a short read timeout so `end` is honoured.
pub fn consume_until<S: BenchStream>(
    s: &mut S,
    r: &mut FrameReader,
    end: Instant,
    tool: &str,
) -> anyhow::Result<ConsumeResult> {
    let mut res = ConsumeResult::default();
    let mut out = BytesMut::with_capacity(64 * 1024);
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    // Frames may already be buffered from the handshake.
    loop {
        while let Some(f) = r.next_buffered()? {
            match f.frame_type {
                FrameType::Message => {
                    let m = Message::decode(f.data).map_err(|e| anyhow!("bad message: {e}"))?;
                    encode_fin(&mut out, &m.id);
                    res.msgs += 1;
                    res.body_bytes += m.body.len() as u64;
                }
                FrameType::Response if f.is_heartbeat() => Command::Nop.encode(&mut out),
                FrameType::Response => {}
                FrameType::Error => {
                    res.errors += 1;
                    if res.errors <= 10 {
                        eprintln!("[{tool}] error frame: {}", String::from_utf8_lossy(&f.data));
                    }
                }
            }
        }
        if !out.is_empty() {
            res.last_msg = Some(Instant::now());
            s.write_all(&out).context("writing FINs")?;
            s.flush().context("writing FINs")?;
            out.clear();
        }
        if Instant::now() >= end {
            return Ok(res);
        }
        match r.fill(s) {
            Ok(0) => return Ok(res),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e).context("reading messages"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nsq_protocol::frame::{put_frame, put_message_frame};
    use nsq_protocol::{Decoder, MessageId};
    use std::net::TcpListener;

    #[test]
    fn mpub_buffer_decodes() {
        let mut buf = mpub_buffer("sub_bench", 200, 3);
        match Decoder::default().decode(&mut buf).unwrap().unwrap() {
            Command::Mpub { topic, batch } => {
                assert_eq!(topic, "sub_bench");
                assert_eq!(batch.count, 3);
                assert!(batch.iter().all(|b| b == [b'a'; 200]));
            }
            other => panic!("{other:?}"),
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn unique_bodies_are_distinct_across_batches() {
        let mut raw = mpub_buffer("sub_bench", 20, 3);
        let mut u = UniqueBodies::new("sub_bench", 20, 3, 7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 {
            u.stamp(&mut raw);
            let mut buf = raw.clone();
            match Decoder::default().decode(&mut buf).unwrap().unwrap() {
                Command::Mpub { batch, .. } => {
                    for b in batch.iter() {
                        assert_eq!(b.len(), 20);
                        assert_eq!(&b[..8], 7u64.to_le_bytes());
                        assert_eq!(&b[16..], b"aaaa");
                        assert!(seen.insert(b.to_vec()));
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seen.len(), 6);
    }

    /// A fake nsqd: answers IDENTIFY and each MPUB with OK, then sends two messages and a
    /// heartbeat and checks the FINs and NOP come back.
    #[test]
    fn loops_against_a_fake_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut magic = [0u8; 4];
            s.read_exact(&mut magic).unwrap();
            assert_eq!(&magic, MAGIC_V2);
            let dec = Decoder::default();
            let mut buf = BytesMut::new();
            let mut chunk = [0u8; 65536];
            let mut mpubs = 0;
            let mut fins = 0;
            let mut nops = 0;
            while fins < 2 || nops < 1 {
                let cmd = loop {
                    if let Some(c) = dec.decode(&mut buf).unwrap() {
                        break c;
                    }
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                };
                let mut out = BytesMut::new();
                match cmd {
                    Command::Identify { .. } => put_frame(&mut out, FrameType::Response, b"OK"),
                    Command::Mpub { .. } => {
                        mpubs += 1;
                        put_frame(&mut out, FrameType::Response, b"OK");
                        if mpubs == 2 {
                            put_message_frame(&mut out, 1, 1, &MessageId::from_u64(1), b"x");
                            put_message_frame(&mut out, 1, 1, &MessageId::from_u64(2), b"y");
                            put_frame(&mut out, FrameType::Response, b"_heartbeat_");
                        }
                    }
                    Command::Fin { .. } => fins += 1,
                    Command::Nop => nops += 1,
                    other => panic!("{other:?}"),
                }
                s.write_all(&out).unwrap();
            }
            (mpubs, fins, nops)
        });
        let mut s = connect(&addr).unwrap();
        let mut r = FrameReader::default();
        handshake(&mut s, &mut r, "test", "test").unwrap();
        let mpub = mpub_buffer("t", 10, 5);
        // Ends after the first batch since `end` is already past; then once more.
        let p = publish_until(&mut s, &mut r, &mpub, 5, Instant::now(), true).unwrap();
        assert_eq!((p.msgs, p.latencies_ns.len()), (5, 1));
        let p = publish_until(&mut s, &mut r, &mpub, 5, Instant::now(), false).unwrap();
        assert_eq!((p.msgs, p.latencies_ns.len()), (5, 0));
        let c = consume_until(
            &mut s,
            &mut r,
            Instant::now() + Duration::from_millis(300),
            "t",
        )
        .unwrap();
        assert_eq!((c.msgs, c.body_bytes, c.errors), (2, 2, 0));
        assert_eq!(server.join().unwrap(), (2, 2, 1));
    }
}
