//! Raw DEFLATE (RFC 1951, no zlib or gzip header) as NSQ negotiates it with
//! `"deflate": true`: Go's `compress/flate` on both ends, the writer flushed after every write
//! batch (a *sync flush*: the batch is complete on the wire, followed by an empty stored
//! block `00 00 ff ff`), so the peer can decode each response without waiting for more.
//!
//! Built on `flate2`'s streaming `Compress`/`Decompress` (the pure-Rust miniz_oxide backend).

use bytes::{Buf, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::compressed::Codec;
use crate::CodecError;

/// Raw deflate, both directions of one stream.
pub struct DeflateCodec {
    compress: Compress,
    decompress: Decompress,
    finished: bool,
    scratch: Vec<u8>,
}

impl DeflateCodec {
    /// A codec compressing at `level` (clamped to 1..=9, as Go's levels).
    pub fn new(level: u32) -> DeflateCodec {
        DeflateCodec {
            compress: Compress::new(Compression::new(level.clamp(1, 9)), false),
            decompress: Decompress::new(false),
            finished: false,
            scratch: Vec::new(),
        }
    }
}

impl Codec for DeflateCodec {
    fn encode(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), CodecError> {
        if input.is_empty() {
            return Ok(());
        }
        // `compress_vec` writes only into spare capacity: keep giving it room until the whole
        // batch and the sync-flush marker are out (room left over means nothing is pending).
        let buf = &mut self.scratch;
        buf.clear();
        loop {
            if buf.capacity() - buf.len() < 64 + input.len() / 2 {
                buf.reserve(8192 + input.len() / 2);
            }
            let before_in = self.compress.total_in();
            self.compress
                .compress_vec(input, buf, FlushCompress::Sync)
                .map_err(|e| CodecError::Deflate(e.to_string()))?;
            input = &input[(self.compress.total_in() - before_in) as usize..];
            if input.is_empty() && buf.len() < buf.capacity() {
                break;
            }
        }
        out.extend_from_slice(buf);
        Ok(())
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, CodecError> {
        let mut progressed = false;
        // Runs even without input: the inflater may hold output that did not fit last time.
        while !self.finished && out.len() < limit {
            // Room for at most what the budget still allows (zeroed: no `unsafe` here).
            let start = out.len();
            let room = (limit - start).min(64 * 1024);
            out.resize(start + room, 0);
            let before_in = self.decompress.total_in();
            let before_out = self.decompress.total_out();
            let r = self
                .decompress
                .decompress(input, &mut out[start..], FlushDecompress::None);
            let consumed = (self.decompress.total_in() - before_in) as usize;
            let produced = (self.decompress.total_out() - before_out) as usize;
            out.truncate(start + produced);
            let status = r.map_err(|e| CodecError::Deflate(e.to_string()))?;
            input.advance(consumed);
            if consumed > 0 || produced > 0 {
                progressed = true;
            }
            if status == Status::StreamEnd {
                self.finished = true;
            }
            let filled = produced == room;
            if (consumed == 0 && produced == 0) || (input.is_empty() && !filled) {
                break;
            }
        }
        Ok(progressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"deflate me please "[i % 18] ^ ((i / 777) as u8))
            .collect()
    }

    #[test]
    fn each_batch_ends_with_a_sync_flush_and_round_trips_in_pieces() {
        let data = sample(300_000);
        let mut enc = DeflateCodec::new(6);
        let mut wire = BytesMut::new();
        enc.encode(&data[..10], &mut wire).unwrap();
        assert!(wire.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
        enc.encode(&data[10..], &mut wire).unwrap();
        assert!(wire.ends_with(&[0, 0, 0xff, 0xff]));
        assert!(wire.len() < data.len() / 2);

        let mut dec = DeflateCodec::new(6);
        let mut input = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(5) {
            input.extend_from_slice(piece);
            dec.decode(&mut input, &mut out, usize::MAX).unwrap();
        }
        assert_eq!(out, data);
    }

    #[test]
    fn flate2_reads_ours_and_we_read_flate2() {
        let data = sample(50_000);
        let mut wire = BytesMut::new();
        DeflateCodec::new(1).encode(&data, &mut wire).unwrap();
        let mut back = Vec::new();
        // A sync-flushed stream has no final block: read what is there.
        let mut r = flate2::read::DeflateDecoder::new(&wire[..]);
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => back.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        assert_eq!(back, data);

        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(9));
        w.write_all(&data).unwrap();
        let theirs = w.finish().unwrap();
        let mut input = BytesMut::from(&theirs[..]);
        let mut out = Vec::new();
        DeflateCodec::new(6)
            .decode(&mut input, &mut out, usize::MAX)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_decompression_bomb_is_decoded_within_the_budget() {
        let data = vec![0u8; 20 << 20];
        let mut wire = BytesMut::new();
        DeflateCodec::new(9).encode(&data, &mut wire).unwrap();
        assert!(wire.len() < 100_000, "{}", wire.len());
        let mut dec = DeflateCodec::new(6);
        let mut out = Vec::new();
        dec.decode(&mut wire, &mut out, 256 * 1024).unwrap();
        assert_eq!(out.len(), 256 * 1024);
        assert!(!wire.is_empty(), "the rest waits");
        let mut total = out.len();
        while total < data.len() {
            out.clear();
            assert!(dec.decode(&mut wire, &mut out, 256 * 1024).unwrap());
            total += out.len();
        }
        assert_eq!(total, data.len());
    }

    #[test]
    fn garbage_is_an_error() {
        let mut input = BytesMut::from(&[0xffu8; 64][..]);
        let err = DeflateCodec::new(6)
            .decode(&mut input, &mut Vec::new(), usize::MAX)
            .unwrap_err();
        assert!(err.to_string().contains("deflate"), "{err}");
    }
}
