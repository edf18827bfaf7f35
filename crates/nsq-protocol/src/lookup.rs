//! The nsqd → nsqlookupd protocol V1 (Go: `nsqlookupd/lookup_protocol_v1.go`, and the client
//! side in `nsqd/lookup.go` / `nsqd/lookup_peer.go`), sans I/O.
//!
//! ```text
//! client → server   "  V1"                                   once, first
//!                   "IDENTIFY\n" [4-byte BE size][JSON]      once, before REGISTER/UNREGISTER
//!                   "REGISTER <topic> [<channel>]\n"
//!                   "UNREGISTER <topic> [<channel>]\n"
//!                   "PING\n"
//! server → client   [4-byte BE size][data]                   no frame type, unlike V2
//! ```
//!
//! A command line is trimmed of surrounding whitespace and split on single spaces, as Go's
//! `strings.TrimSpace` + `strings.Split(line, " ")` do, so `REGISTER  t` (two spaces) names the
//! empty topic. Responses are `OK`, the IDENTIFY JSON, or an error `"<E_CODE> <description>"`
//! sent the same way; every error is fatal (the server closes the connection after it).
//!
//! [`RequestDecoder`] is the server side. It carries the one bit of protocol state that
//! changes the grammar (whether the peer has identified), so that "cannot IDENTIFY again"
//! and "client must IDENTIFY" are reported in Go's order, before a body is awaited.
//! The client side is the `encode_*` functions plus [`decode_response`].
//!
//! Deliberate differences from Go, both bounding memory: the IDENTIFY body size must be in
//! `0..=max_identify_body` (Go allocates whatever is declared, and panics on a negative size),
//! and a command line may not exceed `max_line_len` (Go's reader has no limit).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ErrorCode, ProtocolError};
use crate::names::{is_valid_channel_name, is_valid_topic_name};

/// The 4 bytes an nsqd sends first to nsqlookupd.
pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// The response to REGISTER, UNREGISTER and PING.
pub const OK: &[u8] = b"OK";

/// Bounds applied while decoding requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupLimits {
    /// Longest command line, `\n` excluded.
    pub max_line_len: usize,
    /// Largest IDENTIFY body.
    pub max_identify_body: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            // The longest valid line is UNREGISTER with two 64-byte names; leave ample room.
            max_line_len: 4096,
            max_identify_body: 1024 * 1024,
        }
    }
}

/// What an nsqd tells nsqlookupd about itself in IDENTIFY (Go: `PeerInfo`'s JSON fields).
///
/// Decoding follows Go's `encoding/json` into that struct: every field is optional, `null`
/// counts as absent, unknown fields are ignored. Fields are declared in the order Go nsqd
/// writes them (it marshals a map, so keys are sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerIdentity {
    /// Address clients should connect to.
    #[serde(deserialize_with = "null_as_default")]
    pub broadcast_address: String,
    /// The nsqd host's name.
    #[serde(deserialize_with = "null_as_default")]
    pub hostname: String,
    /// nsqd's HTTP port.
    #[serde(deserialize_with = "null_as_default")]
    pub http_port: i64,
    /// nsqd's TCP port.
    #[serde(deserialize_with = "null_as_default")]
    pub tcp_port: i64,
    /// Topology experiment: the nsqd's region.
    #[serde(deserialize_with = "null_as_default")]
    pub topology_region: String,
    /// Topology experiment: the nsqd's zone.
    #[serde(deserialize_with = "null_as_default")]
    pub topology_zone: String,
    /// nsqd's version, e.g. `1.3.0`.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
}

impl PeerIdentity {
    /// Go's "require all fields" check: broadcast address, both ports and version must be set
    /// (non-empty / non-zero).
    pub fn has_required_fields(&self) -> bool {
        !self.broadcast_address.is_empty()
            && self.tcp_port != 0
            && self.http_port != 0
            && !self.version.is_empty()
    }
}

/// nsqlookupd's answer to IDENTIFY. Go marshals a map, so keys are sorted; the fields are
/// declared in that order. nsqd learns lookupd's HTTP address from it
/// (`broadcast_address:http_port`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifyResponse {
    /// lookupd's `--broadcast-address`.
    pub broadcast_address: String,
    /// lookupd's host name.
    pub hostname: String,
    /// The port lookupd's HTTP API listens on.
    pub http_port: u16,
    /// The port lookupd's TCP protocol listens on.
    pub tcp_port: u16,
    /// lookupd's version, e.g. `1.3.0`.
    pub version: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A request from an nsqd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupCommand {
    /// Liveness; also what keeps the peer in `/lookup` answers.
    Ping,
    /// The peer's identity (required fields already checked).
    Identify(PeerIdentity),
    /// Registers the peer as a producer of the topic (and of the channel, if given).
    Register {
        /// Valid topic name.
        topic: String,
        /// Valid channel name, if given.
        channel: Option<String>,
    },
    /// Withdraws a registration; without a channel it withdraws the topic and all its
    /// channels.
    Unregister {
        /// Valid topic name.
        topic: String,
        /// Valid channel name, if given.
        channel: Option<String>,
    },
}

/// Server-side request decoder for one connection (after the magic).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestDecoder {
    /// The bounds in force.
    pub limits: LookupLimits,
    identified: bool,
}

fn invalid(desc: impl Into<std::borrow::Cow<'static, str>>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, desc)
}

fn bad_body(desc: impl Into<std::borrow::Cow<'static, str>>) -> ProtocolError {
    ProtocolError::new(ErrorCode::BadBody, desc)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Go's `strings.TrimSpace` for ASCII whitespace (`\t \n \v \f \r` and space).
fn trim_space(mut b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    while b.first().is_some_and(ws) {
        b = &b[1..];
    }
    while b.last().is_some_and(ws) {
        b = &b[..b.len() - 1];
    }
    b
}

/// Go's `getTopicChan`: params after the command name.
fn topic_chan(cmd: &str, params: &[&[u8]]) -> Result<(String, Option<String>), ProtocolError> {
    let Some(&topic) = params.first() else {
        return Err(invalid(format!("{cmd} insufficient number of params")));
    };
    let channel = params.get(1).copied().unwrap_or_default();
    if !is_valid_topic_name(topic) {
        return Err(ProtocolError::new(
            ErrorCode::BadTopic,
            format!("{cmd} topic name '{}' is not valid", lossy(topic)),
        ));
    }
    if !channel.is_empty() && !is_valid_channel_name(channel) {
        return Err(ProtocolError::new(
            ErrorCode::BadChannel,
            format!("{cmd} channel name '{}' is not valid", lossy(channel)),
        ));
    }
    // Valid names are ASCII.
    let channel = (!channel.is_empty()).then(|| lossy(channel));
    Ok((lossy(topic), channel))
}

impl RequestDecoder {
    /// A decoder for a connection that has not identified yet.
    pub fn new(limits: LookupLimits) -> RequestDecoder {
        RequestDecoder {
            limits,
            identified: false,
        }
    }

    /// Whether an IDENTIFY has been decoded on this connection.
    pub fn is_identified(&self) -> bool {
        self.identified
    }

    /// Decodes one request from the front of `buf`, consuming its bytes only when complete.
    /// `Ok(None)` means more bytes are needed. Every error is fatal for the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<LookupCommand>, ProtocolError> {
        let scan = buf.len().min(self.limits.max_line_len + 1);
        let Some(nl) = buf[..scan].iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_line_len {
                return Err(invalid(format!(
                    "command line longer than {} bytes",
                    self.limits.max_line_len
                )));
            }
            return Ok(None);
        };
        let line = trim_space(&buf[..nl]);
        let mut fields: [&[u8]; 4] = [&[]; 4];
        let mut n = 0;
        for f in line.split(|&b| b == b' ').take(fields.len()) {
            fields[n] = f;
            n += 1;
        }
        let params = &fields[1..n];
        let cmd = match fields[0] {
            b"PING" => LookupCommand::Ping,
            b"REGISTER" | b"UNREGISTER" => {
                let name = if fields[0] == b"REGISTER" {
                    "REGISTER"
                } else {
                    "UNREGISTER"
                };
                if !self.identified {
                    return Err(invalid("client must IDENTIFY"));
                }
                let (topic, channel) = topic_chan(name, params)?;
                if name == "REGISTER" {
                    LookupCommand::Register { topic, channel }
                } else {
                    LookupCommand::Unregister { topic, channel }
                }
            }
            b"IDENTIFY" => {
                if self.identified {
                    return Err(invalid("cannot IDENTIFY again"));
                }
                let at = nl + 1;
                let Some(size) = buf.get(at..at + 4) else {
                    return Ok(None);
                };
                let size = i32::from_be_bytes([size[0], size[1], size[2], size[3]]);
                let len = usize::try_from(size)
                    .ok()
                    .filter(|&n| n <= self.limits.max_identify_body)
                    .ok_or_else(|| bad_body(format!("IDENTIFY invalid body size {size}")))?;
                let body_at = at + 4;
                let Some(body) = buf.get(body_at..body_at + len) else {
                    return Ok(None);
                };
                let peer: PeerIdentity = serde_json::from_slice(body)
                    .map_err(|_| bad_body("IDENTIFY failed to decode JSON body"))?;
                if !peer.has_required_fields() {
                    return Err(bad_body("IDENTIFY missing fields"));
                }
                buf.advance(body_at + len);
                self.identified = true;
                return Ok(Some(LookupCommand::Identify(peer)));
            }
            other => return Err(invalid(format!("invalid command {}", lossy(other)))),
        };
        buf.advance(nl + 1);
        Ok(Some(cmd))
    }
}

/// Appends a response (`[4-byte BE size][data]`) to `buf`.
pub fn put_response(buf: &mut BytesMut, data: &[u8]) {
    buf.reserve(4 + data.len());
    buf.put_u32(data.len() as u32);
    buf.put_slice(data);
}

/// Appends an error response (`"<E_CODE> <description>"`) to `buf`.
pub fn put_error(buf: &mut BytesMut, err: &ProtocolError) {
    put_response(buf, err.wire_text().as_bytes());
}

/// Client side: decodes one response from the front of `buf`. Responses larger than
/// `max_size` are an error (the stream cannot be trusted after one).
pub fn decode_response(
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<Option<Bytes>, ProtocolError> {
    let Some(size) = buf.get(..4) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size > max_size {
        return Err(bad_body(format!("response of {size} bytes is too big")));
    }
    if buf.len() < 4 + size {
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Whether a response is an error (`E_...`). nsqd treats a response of exactly `E_INVALID`
/// as a reason to close the connection.
pub fn is_error_response(data: &[u8]) -> bool {
    data.starts_with(b"E_")
}

/// Client side: appends `IDENTIFY\n[size][JSON]`.
pub fn encode_identify(buf: &mut BytesMut, peer: &PeerIdentity) {
    let body = serde_json::to_vec(peer).expect("serializing a struct of strings and ints");
    buf.put_slice(b"IDENTIFY\n");
    put_response(buf, &body);
}

fn encode_topic_chan(buf: &mut BytesMut, cmd: &str, topic: &str, channel: Option<&str>) {
    buf.put_slice(cmd.as_bytes());
    buf.put_u8(b' ');
    buf.put_slice(topic.as_bytes());
    if let Some(c) = channel {
        buf.put_u8(b' ');
        buf.put_slice(c.as_bytes());
    }
    buf.put_u8(b'\n');
}

/// Client side: appends `REGISTER <topic> [<channel>]\n`.
pub fn encode_register(buf: &mut BytesMut, topic: &str, channel: Option<&str>) {
    encode_topic_chan(buf, "REGISTER", topic, channel);
}

/// Client side: appends `UNREGISTER <topic> [<channel>]\n`.
pub fn encode_unregister(buf: &mut BytesMut, topic: &str, channel: Option<&str>) {
    encode_topic_chan(buf, "UNREGISTER", topic, channel);
}

/// Client side: appends `PING\n`.
pub fn encode_ping(buf: &mut BytesMut) {
    buf.put_slice(b"PING\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerIdentity {
        PeerIdentity {
            broadcast_address: "h".into(),
            hostname: "host".into(),
            http_port: 4151,
            tcp_port: 4150,
            version: "1.3.0".into(),
            ..Default::default()
        }
    }

    fn decode_all(
        d: &mut RequestDecoder,
        bytes: &[u8],
    ) -> (Vec<LookupCommand>, Option<String>, usize) {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf) {
                Ok(Some(c)) => out.push(c),
                Ok(None) => return (out, None, buf.len()),
                Err(e) => return (out, Some(e.wire_text()), buf.len()),
            }
        }
    }

    fn identified() -> RequestDecoder {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::new();
        encode_identify(&mut buf, &peer());
        assert!(matches!(
            d.decode(&mut buf),
            Ok(Some(LookupCommand::Identify(_)))
        ));
        d
    }

    #[test]
    fn client_encoding_round_trips() {
        let mut buf = BytesMut::new();
        encode_identify(&mut buf, &peer());
        encode_register(&mut buf, "t", None);
        encode_register(&mut buf, "t", Some("c#ephemeral"));
        encode_ping(&mut buf);
        encode_unregister(&mut buf, "t", Some("c"));
        encode_unregister(&mut buf, "t", None);
        let mut d = RequestDecoder::default();
        let (cmds, err, rest) = decode_all(&mut d, &buf);
        assert_eq!(err, None);
        assert_eq!(rest, 0);
        assert_eq!(
            cmds,
            vec![
                LookupCommand::Identify(peer()),
                LookupCommand::Register {
                    topic: "t".into(),
                    channel: None
                },
                LookupCommand::Register {
                    topic: "t".into(),
                    channel: Some("c#ephemeral".into())
                },
                LookupCommand::Ping,
                LookupCommand::Unregister {
                    topic: "t".into(),
                    channel: Some("c".into())
                },
                LookupCommand::Unregister {
                    topic: "t".into(),
                    channel: None
                },
            ]
        );
    }

    #[test]
    fn identify_json_is_go_shaped() {
        let json = String::from_utf8(serde_json::to_vec(&peer()).unwrap()).unwrap();
        assert_eq!(
            json,
            r#"{"broadcast_address":"h","hostname":"host","http_port":4151,"tcp_port":4150,"topology_region":"","topology_zone":"","version":"1.3.0"}"#
        );
        // Nulls and unknown fields are tolerated, like Go's encoding/json.
        let p: PeerIdentity = serde_json::from_str(
            r#"{"broadcast_address":"b","tcp_port":1,"http_port":2,"version":"v","hostname":null,"extra":[1]}"#,
        )
        .unwrap();
        assert!(p.has_required_fields());
        assert_eq!(p.hostname, "");
        let r = IdentifyResponse {
            broadcast_address: "b".into(),
            hostname: "h".into(),
            http_port: 4161,
            tcp_port: 4160,
            version: "1.3.0".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"broadcast_address":"b","hostname":"h","http_port":4161,"tcp_port":4160,"version":"1.3.0"}"#
        );
    }

    #[test]
    fn identify_waits_for_the_whole_body() {
        let mut full = BytesMut::new();
        encode_identify(&mut full, &peer());
        let mut d = RequestDecoder::default();
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(d.decode(&mut part), Ok(None), "cut at {cut}");
            assert_eq!(part.len(), cut);
        }
        assert!(!d.is_identified());
    }

    #[test]
    fn identify_errors_follow_go() {
        let body = |json: &str| {
            let mut b = BytesMut::from(&b"IDENTIFY\n"[..]);
            put_response(&mut b, json.as_bytes());
            b
        };
        let err = |bytes: &[u8]| decode_all(&mut RequestDecoder::default(), bytes).1;
        assert_eq!(
            err(&body(r#"{"tcp_port":1}"#)).as_deref(),
            Some("E_BAD_BODY IDENTIFY missing fields")
        );
        assert_eq!(
            err(&body("not json")).as_deref(),
            Some("E_BAD_BODY IDENTIFY failed to decode JSON body")
        );
        assert_eq!(
            err(&body(r#"{"tcp_port":"4150"}"#)).as_deref(),
            Some("E_BAD_BODY IDENTIFY failed to decode JSON body")
        );
        assert_eq!(
            err(&body("")).as_deref(),
            Some("E_BAD_BODY IDENTIFY failed to decode JSON body")
        );
        // Hostile sizes are refused before anything is buffered.
        for size in [i32::MAX, -1, 1024 * 1024 + 1] {
            let mut b = BytesMut::from(&b"IDENTIFY\n"[..]);
            b.put_i32(size);
            assert_eq!(
                err(&b),
                Some(format!("E_BAD_BODY IDENTIFY invalid body size {size}"))
            );
        }
        let mut d = identified();
        assert_eq!(
            decode_all(&mut d, b"IDENTIFY\n").1.as_deref(),
            Some("E_INVALID cannot IDENTIFY again")
        );
    }

    #[test]
    fn register_rules() {
        let err = |d: &mut RequestDecoder, line: &[u8]| decode_all(d, line).1;
        let mut fresh = RequestDecoder::default();
        assert_eq!(
            err(&mut fresh, b"REGISTER t\n").as_deref(),
            Some("E_INVALID client must IDENTIFY")
        );
        assert_eq!(
            err(&mut fresh, b"UNREGISTER bad name\n").as_deref(),
            Some("E_INVALID client must IDENTIFY")
        );
        let mut d = identified();
        assert_eq!(
            err(&mut d, b"REGISTER\n").as_deref(),
            Some("E_INVALID REGISTER insufficient number of params")
        );
        assert_eq!(
            err(&mut d, b"REGISTER a/b\n").as_deref(),
            Some("E_BAD_TOPIC REGISTER topic name 'a/b' is not valid")
        );
        assert_eq!(
            err(&mut d, b"UNREGISTER  t\n").as_deref(),
            Some("E_BAD_TOPIC UNREGISTER topic name '' is not valid")
        );
        assert_eq!(
            err(&mut d, b"UNREGISTER t c!\n").as_deref(),
            Some("E_BAD_CHANNEL UNREGISTER channel name 'c!' is not valid")
        );
        // Surrounding whitespace is trimmed; extra params are ignored.
        let (cmds, e, _) = decode_all(&mut d, b"  REGISTER t c extra\r\n\tPING \r\n");
        assert_eq!(e, None);
        assert_eq!(
            cmds,
            vec![
                LookupCommand::Register {
                    topic: "t".into(),
                    channel: Some("c".into())
                },
                LookupCommand::Ping
            ]
        );
        // PING needs no IDENTIFY.
        assert_eq!(
            decode_all(&mut RequestDecoder::default(), b"PING\n").0,
            vec![LookupCommand::Ping]
        );
    }

    #[test]
    fn unknown_and_oversized_lines() {
        let err = |bytes: &[u8]| decode_all(&mut RequestDecoder::default(), bytes).1;
        assert_eq!(
            err(b"FOO bar\n").as_deref(),
            Some("E_INVALID invalid command FOO")
        );
        assert_eq!(
            err(b"ping\n").as_deref(),
            Some("E_INVALID invalid command ping")
        );
        assert_eq!(err(b"\n").as_deref(), Some("E_INVALID invalid command "));
        let long = vec![b'A'; 5000];
        assert_eq!(
            err(&long).as_deref(),
            Some("E_INVALID command line longer than 4096 bytes")
        );
        assert_eq!(err(&long[..4096]), None);
    }

    #[test]
    fn responses() {
        let mut buf = BytesMut::new();
        put_response(&mut buf, OK);
        put_error(&mut buf, &invalid("invalid command X"));
        assert_eq!(&buf[..6], b"\0\0\0\x02OK");
        let mut partial = BytesMut::from(&buf[..5]);
        assert_eq!(decode_response(&mut partial, 100), Ok(None));
        assert_eq!(decode_response(&mut buf, 100).unwrap().unwrap(), &b"OK"[..]);
        let e = decode_response(&mut buf, 100).unwrap().unwrap();
        assert!(is_error_response(&e));
        assert_eq!(&e[..], b"E_INVALID invalid command X");
        assert!(buf.is_empty());
        let mut big = BytesMut::new();
        put_response(&mut big, &[0; 10]);
        assert!(decode_response(&mut big, 9).is_err());
    }
}
