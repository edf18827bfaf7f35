//! An async stream that compresses what is written and decompresses what is read, over any
//! inner `AsyncRead + AsyncWrite` (a TCP or TLS stream), with the codec kept sans-I/O
//! ([`Codec`]) so that snappy and deflate share the buffering logic.
//!
//! Writing: each `poll_write` encodes the whole slice at once into complete chunks (snappy)
//! or a sync-flushed block (deflate), appends them to an output buffer and returns the full
//! length, so one write batch of the caller is one unit on the wire. The output buffer is
//! pushed to the inner stream opportunistically and completely by `poll_flush`; callers must
//! flush after writing (as with any buffered writer). `poll_write` returns `Pending` only
//! while more than [`HIGH_WATER`] encoded bytes wait for a slow peer.
//!
//! Reading: compressed bytes are read into an input buffer and decoded as far as they go; a
//! partial chunk stays buffered until the rest arrives.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::CodecError;

/// Encoded bytes allowed to wait for the inner stream before `poll_write` pushes back.
pub const HIGH_WATER: usize = 256 * 1024;
/// Most decoded bytes produced per decode step, so a small compressed input (a
/// "decompression bomb") cannot make us allocate without bound before anyone reads.
pub const DECODE_BUDGET: usize = 256 * 1024;

/// A sans-I/O transform of both directions of a stream.
pub trait Codec {
    /// Encodes all of `input`, appending wire bytes to `out`; the result must be decodable by
    /// the peer without further input (complete chunks, or a flushed block).
    fn encode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), CodecError>;
    /// Decodes as much of `input` as is complete, consuming it and appending plain bytes to
    /// `out`, stopping once `out` holds `limit` bytes or more (unconsumed input stays in
    /// `input`). Returns whether anything was consumed or produced.
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, CodecError>;
}

/// `inner` with codec `C` applied in both directions.
pub struct Compressed<S, C> {
    inner: S,
    codec: C,
    /// Wire bytes read but not yet decoded (a partial chunk).
    raw_in: BytesMut,
    /// Decoded bytes not yet handed to the reader, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encoded bytes not yet written to `inner`.
    out: BytesMut,
    eof: bool,
}

impl<S, C: Codec> Compressed<S, C> {
    /// Wraps `inner`. `already_read` are wire bytes the caller read from `inner` past the
    /// point where compression starts (they are decoded first).
    pub fn new(inner: S, codec: C, already_read: &[u8]) -> Compressed<S, C> {
        Compressed {
            inner,
            codec,
            raw_in: BytesMut::from(already_read),
            plain: Vec::new(),
            plain_pos: 0,
            out: BytesMut::new(),
            eof: false,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

fn codec_err(e: CodecError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: AsyncWrite + Unpin, C> Compressed<S, C> {
    /// Writes buffered output to `inner` until it is empty or `inner` is not ready.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin, C: Codec + Unpin> AsyncRead for Compressed<S, C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain.clear();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            // Also without new input: a codec may hold output that exceeded the last budget.
            if this
                .codec
                .decode(&mut this.raw_in, &mut this.plain, DECODE_BUDGET)
                .map_err(codec_err)?
                && !this.plain.is_empty()
            {
                continue;
            }
            if this.eof {
                if this.raw_in.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream ended inside a compressed chunk",
                )));
            }
            // Read more wire bytes (into zeroed room: the workspace forbids `unsafe`).
            let old = this.raw_in.len();
            this.raw_in.resize(old + 16 * 1024, 0);
            let mut rb = ReadBuf::new(&mut this.raw_in[old..]);
            let r = Pin::new(&mut this.inner).poll_read(cx, &mut rb);
            let n = rb.filled().len();
            this.raw_in.truncate(old + n);
            ready!(r)?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin, C: Codec + Unpin> AsyncWrite for Compressed<S, C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= HIGH_WATER {
            // Push back on the caller only while the peer is this far behind.
            if this.poll_drain(cx)?.is_pending() && this.out.len() >= HIGH_WATER {
                return Poll::Pending;
            }
        }
        this.codec.encode(data, &mut this.out).map_err(codec_err)?;
        // Start sending now; what does not fit waits for the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
