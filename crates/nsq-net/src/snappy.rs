//! The snappy *framing format* (what golang/snappy's `NewReader`/`NewWriter` speak, and what
//! NSQ negotiates with `"snappy": true`), as a sans-I/O codec.
//!
//! A stream is a stream-identifier chunk (`ff 06 00 00 "sNaPpY"`) followed by chunks of
//! `[type:1][length:3 LE][payload]`. Data chunks carry a masked CRC-32C of the *uncompressed*
//! bytes and at most 64 KiB of uncompressed data: type `0x00` is a snappy block, `0x01` the
//! bytes as they are. Types `0x80..=0xfe` are skipped, `0x02..=0x7f` are errors.
//!
//! Why our own framing over `snap::raw` rather than `snap::read::FrameDecoder` /
//! `snap::write::FrameEncoder`: those wrap blocking `Read`/`Write`, and a non-blocking socket
//! hands us arbitrary slices of a chunk. A `FrameDecoder` fed a half chunk reports an
//! unexpected EOF and cannot resume; this decoder keeps the partial chunk in its input
//! buffer and waits for the rest. The encoder is ours too so that each write batch becomes
//! complete chunks at once (Go's writer behaves the same: one `Write`, whole chunks), with no
//! hidden 64 KiB buffer to flush. Interoperability with `snap`'s own framing is tested below.

use bytes::{Buf, BytesMut};

use crate::compressed::Codec;
use crate::CodecError;

/// Most uncompressed bytes in one data chunk (the format's limit).
pub const MAX_BLOCK: usize = 65536;
const STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";
const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_PADDING: u8 = 0xfe;
const CHUNK_STREAM_ID: u8 = 0xff;

/// CRC-32C (Castagnoli), table driven, slice-by-8.
mod crc32c {
    const POLY: u32 = 0x82f6_3b78;

    const fn tables() -> [[u32; 256]; 8] {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut i = 0;
        while i < 256 {
            let mut j = 1;
            while j < 8 {
                let prev = t[j - 1][i];
                t[j][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
                j += 1;
            }
            i += 1;
        }
        t
    }

    static TABLES: [[u32; 256]; 8] = tables();

    pub fn checksum(data: &[u8]) -> u32 {
        let t = &TABLES;
        let mut crc = !0u32;
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            let lo = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) ^ crc;
            let hi = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            crc = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in chunks.remainder() {
            crc = (crc >> 8) ^ t[0][((crc ^ b as u32) & 0xff) as usize];
        }
        !crc
    }
}

/// The checksum stored in a data chunk: CRC-32C rotated and offset, as the format defines.
pub fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c::checksum(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// Snappy framing, both directions of one stream.
pub struct SnappyCodec {
    encoder: snap::raw::Encoder,
    decoder: snap::raw::Decoder,
    scratch: Vec<u8>,
    wrote_identifier: bool,
    read_identifier: bool,
}

impl Default for SnappyCodec {
    fn default() -> Self {
        SnappyCodec::new()
    }
}

impl SnappyCodec {
    /// A codec at the start of a stream (the identifier is written with the first data).
    pub fn new() -> SnappyCodec {
        SnappyCodec {
            encoder: snap::raw::Encoder::new(),
            decoder: snap::raw::Decoder::new(),
            scratch: Vec::new(),
            wrote_identifier: false,
            read_identifier: false,
        }
    }
}

fn put_chunk_header(out: &mut BytesMut, kind: u8, len: usize, crc: u32) {
    let len = len as u32;
    out.extend_from_slice(&[kind, len as u8, (len >> 8) as u8, (len >> 16) as u8]);
    out.extend_from_slice(&crc.to_le_bytes());
}

impl Codec for SnappyCodec {
    fn encode(&mut self, input: &[u8], out: &mut BytesMut) -> Result<(), CodecError> {
        if input.is_empty() {
            return Ok(());
        }
        if !self.wrote_identifier {
            out.extend_from_slice(STREAM_IDENTIFIER);
            self.wrote_identifier = true;
        }
        for block in input.chunks(MAX_BLOCK) {
            let crc = masked_crc(block);
            self.scratch
                .resize(snap::raw::max_compress_len(block.len()), 0);
            let n = self
                .encoder
                .compress(block, &mut self.scratch)
                .map_err(|e| CodecError::Snappy(e.to_string()))?;
            // golang/snappy's rule: keep the compressed form only if it saves 1/8 or more.
            if n < block.len() - block.len() / 8 {
                put_chunk_header(out, CHUNK_COMPRESSED, 4 + n, crc);
                out.extend_from_slice(&self.scratch[..n]);
            } else {
                put_chunk_header(out, CHUNK_UNCOMPRESSED, 4 + block.len(), crc);
                out.extend_from_slice(block);
            }
        }
        Ok(())
    }

    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<bool, CodecError> {
        let mut progressed = false;
        loop {
            if input.len() < 4 || out.len() >= limit {
                return Ok(progressed);
            }
            let kind = input[0];
            let len = input[1] as usize | (input[2] as usize) << 8 | (input[3] as usize) << 16;
            if !self.read_identifier && kind != CHUNK_STREAM_ID {
                return Err(CodecError::Snappy(format!(
                    "stream does not start with the snappy stream identifier (chunk type {kind:#04x})"
                )));
            }
            if input.len() < 4 + len {
                return Ok(progressed);
            }
            let payload = &input[4..4 + len];
            match kind {
                CHUNK_STREAM_ID => {
                    if payload != &STREAM_IDENTIFIER[4..] {
                        return Err(CodecError::Snappy("bad stream identifier".into()));
                    }
                    self.read_identifier = true;
                }
                CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                    if len < 4 {
                        return Err(CodecError::Snappy(format!("data chunk too short ({len})")));
                    }
                    let crc = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    let data = &payload[4..];
                    let start = out.len();
                    if kind == CHUNK_COMPRESSED {
                        let n = snap::raw::decompress_len(data)
                            .map_err(|e| CodecError::Snappy(e.to_string()))?;
                        if n > MAX_BLOCK {
                            return Err(CodecError::Snappy(format!(
                                "chunk decompresses to {n} bytes (max {MAX_BLOCK})"
                            )));
                        }
                        out.resize(start + n, 0);
                        self.decoder
                            .decompress(data, &mut out[start..])
                            .map_err(|e| CodecError::Snappy(e.to_string()))?;
                    } else {
                        if data.len() > MAX_BLOCK {
                            return Err(CodecError::Snappy(format!(
                                "uncompressed chunk of {} bytes (max {MAX_BLOCK})",
                                data.len()
                            )));
                        }
                        out.extend_from_slice(data);
                    }
                    if masked_crc(&out[start..]) != crc {
                        out.truncate(start);
                        return Err(CodecError::Snappy("checksum mismatch".into()));
                    }
                }
                CHUNK_PADDING | 0x80..=0xfd => {}
                _ => {
                    return Err(CodecError::Snappy(format!(
                        "reserved unskippable chunk type {kind:#04x}"
                    )))
                }
            }
            input.advance(4 + len);
            progressed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: a message-like pattern with a counter.
        (0..n)
            .map(|i| b"nsq message body "[i % 17] ^ ((i / 1000) as u8))
            .collect()
    }

    #[test]
    fn crc32c_known_value() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c::checksum(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::checksum(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_trip_in_arbitrary_pieces() {
        let data = sample(200_000);
        let mut enc = SnappyCodec::new();
        let mut wire = BytesMut::new();
        enc.encode(&data[..1000], &mut wire).unwrap();
        enc.encode(&data[1000..], &mut wire).unwrap();
        assert!(wire.len() < data.len(), "compressible input got smaller");

        // Feed the decoder 7 bytes at a time, as a slow socket would.
        let mut dec = SnappyCodec::new();
        let mut input = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(7) {
            input.extend_from_slice(piece);
            dec.decode(&mut input, &mut out, usize::MAX).unwrap();
        }
        assert!(input.is_empty());
        assert_eq!(out, data);
    }

    #[test]
    fn snap_frame_decoder_reads_our_stream() {
        let data = sample(150_000);
        let mut wire = BytesMut::new();
        SnappyCodec::new().encode(&data, &mut wire).unwrap();
        let mut back = Vec::new();
        snap::read::FrameDecoder::new(&wire[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn we_read_snap_frame_encoder_stream() {
        let data = sample(150_000);
        let mut enc = snap::write::FrameEncoder::new(Vec::new());
        enc.write_all(&data).unwrap();
        let wire = enc.into_inner().unwrap();
        let mut input = BytesMut::from(&wire[..]);
        let mut out = Vec::new();
        SnappyCodec::new()
            .decode(&mut input, &mut out, usize::MAX)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn decoding_stops_at_the_budget_and_resumes() {
        // 64 KiB of zeros compresses to a few bytes per chunk: a small input, a big output.
        let data = vec![0u8; 10 * MAX_BLOCK];
        let mut wire = BytesMut::new();
        SnappyCodec::new().encode(&data, &mut wire).unwrap();
        assert!(wire.len() < 50_000);
        let mut dec = SnappyCodec::new();
        let mut out = Vec::new();
        dec.decode(&mut wire, &mut out, 100_000).unwrap();
        assert!(
            out.len() >= 100_000 && out.len() <= 100_000 + MAX_BLOCK,
            "{}",
            out.len()
        );
        assert!(!wire.is_empty(), "the rest waits");
        while !wire.is_empty() {
            let limit = out.len() + 100_000;
            dec.decode(&mut wire, &mut out, limit).unwrap();
        }
        assert_eq!(out, data);
    }

    #[test]
    fn incompressible_data_goes_in_uncompressed_chunks() {
        let mut x = 0x1234_5678u32;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let mut wire = BytesMut::new();
        SnappyCodec::new().encode(&data, &mut wire).unwrap();
        assert_eq!(wire[STREAM_IDENTIFIER.len()], CHUNK_UNCOMPRESSED);
        let mut out = Vec::new();
        SnappyCodec::new()
            .decode(&mut wire, &mut out, usize::MAX)
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn corrupt_checksum_and_missing_identifier_are_errors() {
        let mut wire = BytesMut::new();
        SnappyCodec::new()
            .encode(b"hello hello hello", &mut wire)
            .unwrap();
        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let err = SnappyCodec::new()
            .decode(&mut bad, &mut Vec::new(), usize::MAX)
            .unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        let mut headless = BytesMut::from(&wire[STREAM_IDENTIFIER.len()..]);
        let err = SnappyCodec::new()
            .decode(&mut headless, &mut Vec::new(), usize::MAX)
            .unwrap_err();
        assert!(err.to_string().contains("identifier"), "{err}");
    }
}
