//! Fuzz target bodies, shared by the cargo-fuzz targets in `fuzz/` (nightly) and by the
//! corpus replay test `tests/fuzz_corpus.rs` (stable), so CI re-checks every input the
//! fuzzers ever kept without needing a nightly toolchain. See `docs/FUZZING.md`.
//!
//! Each function takes arbitrary bytes, must never panic, and asserts the invariants that
//! are cheap to check: decoding the same stream whole or in arbitrary chunks gives the same
//! result, a decoder never consumes bytes it was not given (nor any on "need more"), declared
//! sizes are held to the limits, and whatever decodes re-encodes to something that decodes
//! to the same value. Not part of the crate's API.

use bytes::{Bytes, BytesMut};

use crate::command::{Command, Decoder, Limits};
use crate::error::ProtocolError;
use crate::frame::{decode_frame, put_frame, Frame};
use crate::identify::{IdentifyRequest, IdentifyResponse};
use crate::lookup::{self, LookupCommand, LookupLimits, PeerIdentity, RequestDecoder};
use crate::message::{Message, MessageId, MSG_HEADER_LEN};
use crate::names::{is_ephemeral, is_valid_channel_name, is_valid_topic_name, EPHEMERAL_SUFFIX};

/// Deterministic chunk sizes from a seed byte: a small xorshift, sizes in `1..=max`.
struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    fn new(seed: u8, max: usize) -> Chunks {
        Chunks {
            state: 0x9e37_79b9 ^ (u32::from(seed) << 8 | u32::from(seed)),
            max: max.max(1),
        }
    }

    fn next_len(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        1 + (x as usize % self.max)
    }
}

/// Splits `data` into `(config byte, chunk seed, stream)`.
fn header(data: &[u8]) -> Option<(u8, u8, &[u8])> {
    match data {
        [cfg, seed, rest @ ..] => Some((*cfg, *seed, rest)),
        _ => None,
    }
}

/// Small limits make the size checks reachable with small inputs; the defaults check the
/// real configuration.
fn limits_for(cfg: u8) -> Limits {
    match cfg % 4 {
        0 => Limits::default(),
        1 => Limits {
            max_msg_size: 16,
            max_body_size: 64,
            max_line_len: 32,
        },
        2 => Limits {
            max_msg_size: 200,
            max_body_size: 100,
            max_line_len: 80,
        },
        _ => Limits {
            max_msg_size: 1,
            max_body_size: 5,
            max_line_len: 4,
        },
    }
}

/// What decoding a stream produced: the commands, then the error that stopped it (if any),
/// and how many bytes were left undecoded.
type Outcome<T> = (Vec<T>, Option<ProtocolError>, usize);

/// Runs `step` on `buf` until it needs more bytes or fails, checking the consumption rules.
fn drain<T>(
    buf: &mut BytesMut,
    out: &mut Vec<T>,
    mut step: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
) -> Option<ProtocolError> {
    loop {
        let before = buf.len();
        let snapshot = buf.clone();
        match step(buf) {
            Ok(Some(v)) => {
                assert!(buf.len() < before, "a decoded value must consume bytes");
                assert_eq!(
                    &snapshot[before - buf.len()..],
                    &buf[..],
                    "decoding must only take bytes from the front"
                );
                out.push(v);
            }
            Ok(None) => {
                assert_eq!(
                    &snapshot[..],
                    &buf[..],
                    "\"need more\" must not consume bytes"
                );
                return None;
            }
            Err(e) => return Some(e),
        }
    }
}

/// Decodes `stream` whole and in chunks; both must agree.
fn whole_and_chunked<T: PartialEq + std::fmt::Debug>(
    stream: &[u8],
    seed: u8,
    max_chunk: usize,
    mut new_step: impl FnMut() -> Box<dyn FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>>,
) -> Outcome<T> {
    let mut whole = BytesMut::from(stream);
    let mut whole_out = Vec::new();
    let whole_err = drain(&mut whole, &mut whole_out, new_step());

    let mut chunks = Chunks::new(seed, max_chunk);
    let mut step = new_step();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut err = None;
    let mut at = 0;
    while at < stream.len() {
        let n = chunks.next_len().min(stream.len() - at);
        buf.extend_from_slice(&stream[at..at + n]);
        at += n;
        if let Some(e) = drain(&mut buf, &mut out, &mut step) {
            err = Some(e);
            break;
        }
    }
    assert_eq!(
        whole_out, out,
        "whole vs chunked decoding disagree on values"
    );
    assert_eq!(
        whole_err, err,
        "whole vs chunked decoding disagree on the error"
    );
    if err.is_none() {
        assert_eq!(
            whole.len(),
            buf.len(),
            "whole vs chunked leave different rests"
        );
    }
    (whole_out, whole_err, whole.len())
}

/// Protocol V2 command decoder ([`Decoder::decode`]): chunking, limits, round trip.
pub fn fuzz_command(data: &[u8]) {
    let Some((cfg, seed, stream)) = header(data) else {
        return;
    };
    let lim = limits_for(cfg);
    let dec = Decoder::new(lim);
    // The server's read buffer: capacity never grows beyond what the limits allow.
    let cap_bound = 2 * (lim.max_line_len + 6 + lim.max_body_size.max(lim.max_msg_size) as usize)
        + stream.len();
    let (cmds, _, _) = whole_and_chunked(stream, seed, 64, || {
        Box::new(move |buf: &mut BytesMut| {
            let cap = buf.capacity();
            let r = dec.decode(buf);
            assert!(
                buf.capacity() <= cap.max(cap_bound),
                "decoder reserved {} bytes (limits {lim:?})",
                buf.capacity()
            );
            r
        })
    });
    // Re-encoding may lengthen a line (`RDY` becomes `RDY 1`), so only the line limit is
    // relaxed for the round trip.
    let round_trip = Decoder::new(Limits {
        max_line_len: 1024,
        ..lim
    });
    for cmd in &cmds {
        check_command_limits(cmd, &lim);
        let mut enc = BytesMut::new();
        cmd.encode(&mut enc);
        let len = enc.len();
        // A line's last parameter cannot end in `\r` on the wire: a reader (Go's, and ours)
        // strips one `\r` before the `\n`. The decoder still accepts such a parameter when
        // more parameters follow it (`TOUCH <16 bytes ending in \r> x`, extra parameters being
        // ignored as in Go), so that command has no encoding that reads back the same.
        if enc.ends_with(b"\r\n") {
            continue;
        }
        let back = round_trip.decode(&mut enc);
        assert_eq!(
            back,
            Ok(Some(cmd.clone())),
            "re-encoded {cmd:?} ({len} bytes) does not decode back"
        );
        assert!(
            enc.is_empty(),
            "re-encoded {cmd:?} left {} bytes",
            enc.len()
        );
        if let Command::Identify { body } = cmd {
            fuzz_identify(body);
        }
    }
}

fn check_command_limits(cmd: &Command, lim: &Limits) {
    match cmd {
        Command::Pub { body, topic } | Command::Dpub { body, topic, .. } => {
            assert!(!body.is_empty() && body.len() as u64 <= lim.max_msg_size);
            assert!(is_valid_topic_name(topic.as_bytes()));
        }
        Command::Mpub { topic, batch } => {
            assert!(is_valid_topic_name(topic.as_bytes()));
            assert!(4 + batch.data.len() as u64 <= lim.max_body_size);
            let bodies: Vec<&[u8]> = batch.iter().collect();
            assert_eq!(bodies.len(), batch.count as usize, "MPUB count vs records");
            let mut total = 0;
            for (b, (off, len)) in bodies.iter().zip(batch.spans()) {
                assert!(!b.is_empty() && b.len() as u64 <= lim.max_msg_size);
                assert_eq!(&batch.data[off..off + len], *b);
                total += 4 + b.len();
            }
            assert_eq!(total, batch.data.len(), "MPUB records must fill the body");
        }
        Command::Identify { body } | Command::Auth { secret: body } => {
            assert!(!body.is_empty() && body.len() as u64 <= lim.max_body_size);
        }
        Command::Sub { topic, channel } => {
            assert!(is_valid_topic_name(topic.as_bytes()));
            assert!(is_valid_channel_name(channel.as_bytes()));
        }
        Command::Rdy { .. }
        | Command::Fin { .. }
        | Command::Req { .. }
        | Command::Touch { .. }
        | Command::Cls
        | Command::Nop => {}
    }
}

/// IDENTIFY JSON: whatever parses re-serializes to JSON that parses to the same value.
pub fn fuzz_identify(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<IdentifyRequest>(data) {
        let json = serde_json::to_vec(&req).expect("serialize IdentifyRequest");
        let back: IdentifyRequest = serde_json::from_slice(&json).expect("reparse own JSON");
        assert_eq!(req, back);
    }
    if let Ok(resp) = serde_json::from_slice::<IdentifyResponse>(data) {
        let json = serde_json::to_vec(&resp).expect("serialize IdentifyResponse");
        let back: IdentifyResponse = serde_json::from_slice(&json).expect("reparse own JSON");
        assert_eq!(resp, back);
    }
    if let Ok(peer) = serde_json::from_slice::<PeerIdentity>(data) {
        let json = serde_json::to_vec(&peer).expect("serialize PeerIdentity");
        let back: PeerIdentity = serde_json::from_slice(&json).expect("reparse own JSON");
        assert_eq!(peer, back);
    }
}

/// Message payloads ([`Message::decode`]) and message ids: decode → encode is the identity.
pub fn fuzz_message(data: &[u8]) {
    match Message::decode(Bytes::copy_from_slice(data)) {
        Ok(msg) => {
            assert!(data.len() >= MSG_HEADER_LEN);
            let mut enc = BytesMut::new();
            msg.encode(&mut enc);
            assert_eq!(&enc[..], data, "message re-encoding differs");
            check_id(&msg.id);
        }
        Err(_) => assert!(data.len() < MSG_HEADER_LEN, "valid-length payload rejected"),
    }
    if let Some(id) = data.get(..16).and_then(MessageId::from_slice) {
        check_id(&id);
    }
}

fn check_id(id: &MessageId) {
    if let Some(n) = id.to_u64() {
        let canonical = MessageId::from_u64(n);
        assert_eq!(canonical.to_u64(), Some(n));
        assert!(
            canonical.0.eq_ignore_ascii_case(&id.0),
            "{id:?} vs {canonical:?}"
        );
    } else {
        assert!(
            !id.0.iter().all(u8::is_ascii_hexdigit),
            "hex id {id:?} not parsed"
        );
    }
}

/// Server → client frames ([`decode_frame`]): chunking and round trip.
pub fn fuzz_frame(data: &[u8]) {
    let Some((cfg, seed, stream)) = header(data) else {
        return;
    };
    let max = match cfg % 3 {
        0 => 1 << 20,
        1 => 64,
        _ => 4,
    };
    let (frames, _, _) = whole_and_chunked(stream, seed, 48, || {
        Box::new(move |buf: &mut BytesMut| decode_frame(buf, max))
    });
    for f in frames {
        assert!(4 + f.data.len() <= max);
        let mut enc = BytesMut::new();
        put_frame(&mut enc, f.frame_type, &f.data);
        let back: Option<Frame> = decode_frame(&mut enc, max).expect("own frame decodes");
        assert_eq!(back, Some(f));
        assert!(enc.is_empty());
    }
}

/// Topic/channel names against a straightforward restatement of Go's rule.
pub fn fuzz_names(data: &[u8]) {
    let reference = {
        let base = data
            .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
            .unwrap_or(data);
        (1..=64).contains(&data.len())
            && !base.is_empty()
            && base
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
    };
    let topic = is_valid_topic_name(data);
    assert_eq!(
        topic,
        reference,
        "topic name {:?}",
        String::from_utf8_lossy(data)
    );
    assert_eq!(is_valid_channel_name(data), reference);
    if topic {
        let s = std::str::from_utf8(data).expect("valid names are ASCII");
        assert_eq!(is_ephemeral(s), data.ends_with(EPHEMERAL_SUFFIX.as_bytes()));
    }
}

/// nsqd → nsqlookupd protocol V1: request decoder (chunking, round trip) and responses.
pub fn fuzz_lookup(data: &[u8]) {
    let Some((cfg, seed, stream)) = header(data) else {
        return;
    };
    let limits = if cfg % 2 == 0 {
        LookupLimits::default()
    } else {
        LookupLimits {
            max_line_len: 40,
            max_identify_body: 200,
        }
    };
    // Start identified half of the time so REGISTER/UNREGISTER are reachable without a
    // valid IDENTIFY in the input.
    let start_identified = cfg & 2 != 0;
    let fresh = move || {
        let mut d = RequestDecoder::new(limits);
        if start_identified {
            let mut b = BytesMut::new();
            lookup::encode_identify(&mut b, &valid_peer());
            assert!(matches!(
                d.decode(&mut b),
                Ok(Some(LookupCommand::Identify(_)))
            ));
        }
        d
    };
    let (cmds, _, _) = whole_and_chunked(stream, seed, 64, || {
        let mut d = fresh();
        Box::new(move |buf: &mut BytesMut| d.decode(buf))
    });
    for cmd in cmds {
        let mut enc = BytesMut::new();
        let mut d = match &cmd {
            LookupCommand::Ping => {
                lookup::encode_ping(&mut enc);
                fresh()
            }
            LookupCommand::Identify(peer) => {
                assert!(peer.has_required_fields());
                lookup::encode_identify(&mut enc, peer);
                // Our own encoding may be larger than the small test limit; use the default.
                RequestDecoder::default()
            }
            LookupCommand::Register { topic, channel } => {
                lookup::encode_register(&mut enc, topic, channel.as_deref());
                identified(limits)
            }
            LookupCommand::Unregister { topic, channel } => {
                lookup::encode_unregister(&mut enc, topic, channel.as_deref());
                identified(limits)
            }
        };
        assert_eq!(
            d.decode(&mut enc),
            Ok(Some(cmd.clone())),
            "round trip of {cmd:?}"
        );
        assert!(enc.is_empty());
    }
    // The same bytes as a stream of responses (client side).
    let max = if cfg % 2 == 0 { 1 << 20 } else { 32 };
    let (responses, _, _) = whole_and_chunked(stream, seed, 32, || {
        Box::new(move |buf: &mut BytesMut| lookup::decode_response(buf, max))
    });
    for r in responses {
        assert!(r.len() <= max);
        let mut enc = BytesMut::new();
        lookup::put_response(&mut enc, &r);
        assert_eq!(lookup::decode_response(&mut enc, max), Ok(Some(r)));
    }
}

fn valid_peer() -> PeerIdentity {
    PeerIdentity {
        broadcast_address: "fuzz".into(),
        hostname: "fuzz".into(),
        http_port: 1,
        tcp_port: 2,
        version: "1.3.0".into(),
        ..PeerIdentity::default()
    }
}

fn identified(limits: LookupLimits) -> RequestDecoder {
    let mut d = RequestDecoder::new(limits);
    let mut b = BytesMut::new();
    lookup::encode_identify(&mut b, &valid_peer());
    assert!(matches!(
        d.decode(&mut b),
        Ok(Some(LookupCommand::Identify(_)))
    ));
    d
}

#[cfg(test)]
mod tests {
    /// Found by the fuzz smoke (`command` target): `TOUCH` with a 16-byte id ending in `\r`,
    /// followed by another parameter, must not fail the round-trip property.
    #[test]
    fn an_id_ending_in_cr_before_more_parameters_is_not_a_round_trip_failure() {
        let input: &[u8] = &[
            0, 7, 82, 69, 81, 32, 102, 101, 97, 116, 117, 114, 101, 95, 110, 101, 103, 111, 95,
            105, 100, 70, 32, 49, 48, 48, 10, 84, 79, 85, 67, 72, 32, 48, 49, 60, 51, 52, 53, 13,
            13, 13, 13, 93, 13, 13, 13, 48, 13, 32, 32, 32, 32, 58, 96, 32, 110, 34, 58, 32, 116,
            44, 32, 34, 96, 34, 58, 32, 116, 97, 32, 116, 114, 117, 101, 44, 32, 34, 197, 49, 110,
            101, 51, 112, 46, 49, 46, 46, 108, 10, 0, 0, 0, 5, 9, 25, 9, 9, 9, 105, 101, 110, 105,
        ];
        super::fuzz_command(input);
    }
}
