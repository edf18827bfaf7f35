//! Client → server commands.
//!
//! A command is a text line `NAME [param ...]\n` (a trailing `\r` is stripped, parameters are
//! split on single spaces), followed for IDENTIFY, AUTH, PUB, DPUB and MPUB by a body
//! `[4-byte BE size][size bytes]`. MPUB's body is `[4-byte count]([4-byte size][bytes])*`.
//!
//! [`Decoder::decode`] takes bytes from the front of a buffer and returns a typed [`Command`],
//! `Ok(None)` when more bytes are needed, or a [`ProtocolError`] (always fatal).
//! Declared sizes are checked against [`Limits`] *before* the decoder waits for the body, so
//! a hostile length prefix never makes a server buffer more than the limits allow.
//!
//! Error texts follow Go nsqd 1.3 (`nsqd/protocol_v2.go`) so that clients and operators see
//! the same messages. One deliberate difference: Go reads MPUB's messages straight from the
//! stream and never checks that they add up to the declared body size; we treat the declared
//! size as the frame boundary and reject a body whose messages do not fill it exactly, since
//! otherwise the stream would silently fall out of step.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{ErrorCode, ProtocolError};
use crate::message::{MessageId, MSG_ID_LEN};
use crate::names::{is_valid_channel_name, is_valid_topic_name};

/// Size limits applied while decoding (nsqd's `--max-msg-size` and `--max-body-size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest single message body.
    pub max_msg_size: u64,
    /// Largest command body (IDENTIFY, AUTH, MPUB).
    pub max_body_size: u64,
    /// Longest command line, `\n` excluded. Go's reader fails on lines longer than its
    /// 16 KiB buffer.
    pub max_line_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1_048_576,
            max_body_size: 5_242_880,
            max_line_len: 16 * 1024,
        }
    }
}

/// The messages of an MPUB, validated: `count` records of `[4-byte BE size][body]` filling
/// `data` exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpubBody {
    /// The records, starting after the count.
    pub data: Bytes,
    /// How many records `data` holds.
    pub count: u32,
}

impl MpubBody {
    /// Iterates over the message bodies as slices of `data`.
    pub fn iter(&self) -> MpubIter<'_> {
        MpubIter { rest: &self.data }
    }

    /// Iterates over `(offset, len)` of each body within `data`.
    pub fn spans(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let base = self.data.as_ptr() as usize;
        self.iter()
            .map(move |b| (b.as_ptr() as usize - base, b.len()))
    }
}

/// Iterator over the bodies of a validated MPUB.
#[derive(Clone)]
pub struct MpubIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for MpubIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.len() < 4 {
            return None;
        }
        let n =
            u32::from_be_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]) as usize;
        let body = self.rest.get(4..4 + n)?;
        self.rest = &self.rest[4 + n..];
        Some(body)
    }
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `IDENTIFY` with its JSON body (decoded by the server, see [`crate::identify`]).
    Identify {
        /// The raw JSON.
        body: Bytes,
    },
    /// `AUTH` with the secret.
    Auth {
        /// The secret.
        secret: Bytes,
    },
    /// `SUB <topic> <channel>`.
    Sub {
        /// Topic name (validated).
        topic: String,
        /// Channel name (validated).
        channel: String,
    },
    /// `PUB <topic>` with one body.
    Pub {
        /// Topic name (validated).
        topic: String,
        /// The message body (non-empty, within `max_msg_size`).
        body: Bytes,
    },
    /// `MPUB <topic>` with a batch.
    Mpub {
        /// Topic name (validated).
        topic: String,
        /// The messages.
        batch: MpubBody,
    },
    /// `DPUB <topic> <defer_ms>` with one body.
    Dpub {
        /// Topic name (validated).
        topic: String,
        /// Requested delay in milliseconds (range-checked by the server).
        defer_ms: u64,
        /// The message body.
        body: Bytes,
    },
    /// `RDY [count]` (count defaults to 1).
    Rdy {
        /// The requested count (range-checked by the server).
        count: u64,
    },
    /// `FIN <id>`.
    Fin {
        /// The message id.
        id: MessageId,
    },
    /// `REQ <id> <timeout_ms>`.
    Req {
        /// The message id.
        id: MessageId,
        /// Requested delay in milliseconds (clamped by the server).
        timeout_ms: u64,
    },
    /// `TOUCH <id>`.
    Touch {
        /// The message id.
        id: MessageId,
    },
    /// `CLS`.
    Cls,
    /// `NOP`.
    Nop,
}

impl Command {
    /// The command's name as sent on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Identify { .. } => "IDENTIFY",
            Command::Auth { .. } => "AUTH",
            Command::Sub { .. } => "SUB",
            Command::Pub { .. } => "PUB",
            Command::Mpub { .. } => "MPUB",
            Command::Dpub { .. } => "DPUB",
            Command::Rdy { .. } => "RDY",
            Command::Fin { .. } => "FIN",
            Command::Req { .. } => "REQ",
            Command::Touch { .. } => "TOUCH",
            Command::Cls => "CLS",
            Command::Nop => "NOP",
        }
    }

    /// Appends the wire encoding to `buf` (client side).
    pub fn encode(&self, buf: &mut BytesMut) {
        match self {
            Command::Identify { body } => encode_with_body(buf, b"IDENTIFY", &[], body),
            Command::Auth { secret } => encode_with_body(buf, b"AUTH", &[], secret),
            Command::Sub { topic, channel } => {
                encode_line(buf, b"SUB", &[topic.as_bytes(), channel.as_bytes()])
            }
            Command::Pub { topic, body } => {
                encode_with_body(buf, b"PUB", &[topic.as_bytes()], body)
            }
            Command::Mpub { topic, batch } => {
                encode_line(buf, b"MPUB", &[topic.as_bytes()]);
                buf.put_u32(4 + batch.data.len() as u32);
                buf.put_u32(batch.count);
                buf.put_slice(&batch.data);
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => encode_with_body(
                buf,
                b"DPUB",
                &[topic.as_bytes(), defer_ms.to_string().as_bytes()],
                body,
            ),
            Command::Rdy { count } => encode_line(buf, b"RDY", &[count.to_string().as_bytes()]),
            Command::Fin { id } => encode_line(buf, b"FIN", &[&id.0]),
            Command::Req { id, timeout_ms } => {
                encode_line(buf, b"REQ", &[&id.0, timeout_ms.to_string().as_bytes()])
            }
            Command::Touch { id } => encode_line(buf, b"TOUCH", &[&id.0]),
            Command::Cls => encode_line(buf, b"CLS", &[]),
            Command::Nop => encode_line(buf, b"NOP", &[]),
        }
    }
}

fn encode_line(buf: &mut BytesMut, name: &[u8], params: &[&[u8]]) {
    buf.put_slice(name);
    for p in params {
        buf.put_u8(b' ');
        buf.put_slice(p);
    }
    buf.put_u8(b'\n');
}

fn encode_with_body(buf: &mut BytesMut, name: &[u8], params: &[&[u8]], body: &[u8]) {
    encode_line(buf, name, params);
    buf.put_u32(body.len() as u32);
    buf.put_slice(body);
}

/// Appends `MPUB <topic>` with the given bodies to `buf` (client side).
pub fn encode_mpub<B: AsRef<[u8]>>(buf: &mut BytesMut, topic: &str, bodies: &[B]) {
    let total: usize = bodies.iter().map(|b| 4 + b.as_ref().len()).sum();
    buf.reserve(8 + topic.len() + 8 + total);
    encode_line(buf, b"MPUB", &[topic.as_bytes()]);
    buf.put_u32(4 + total as u32);
    buf.put_u32(bodies.len() as u32);
    for b in bodies {
        buf.put_u32(b.as_ref().len() as u32);
        buf.put_slice(b.as_ref());
    }
}

/// Appends `PUB <topic>` with one body to `buf` (client side).
pub fn encode_pub(buf: &mut BytesMut, topic: &str, body: &[u8]) {
    encode_with_body(buf, b"PUB", &[topic.as_bytes()], body);
}

/// Appends `FIN <id>` to `buf` (client side).
pub fn encode_fin(buf: &mut BytesMut, id: &MessageId) {
    encode_line(buf, b"FIN", &[&id.0]);
}

/// Parses decimal digits as Go's `protocol.ByteToBase10` does: only ASCII digits, and an
/// empty parameter is 0. Overflow is an error (Go silently wraps).
pub fn parse_base10(b: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(n)
}

fn invalid(desc: impl Into<std::borrow::Cow<'static, str>>) -> ProtocolError {
    ProtocolError::new(ErrorCode::Invalid, desc)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse_id(p: &[u8]) -> Result<MessageId, ProtocolError> {
    if p.len() != MSG_ID_LEN {
        return Err(invalid("Invalid Message ID"));
    }
    Ok(MessageId::from_slice(p).expect("length checked"))
}

fn topic_param(cmd: &str, p: &[u8], repeat_code: bool) -> Result<String, ProtocolError> {
    if !is_valid_topic_name(p) {
        // Go's MPUB repeats the code inside the description; keep it byte-identical.
        let prefix = if repeat_code { "E_BAD_TOPIC " } else { "" };
        return Err(ProtocolError::new(
            ErrorCode::BadTopic,
            format!("{prefix}{cmd} topic name {:?} is not valid", lossy(p)),
        ));
    }
    Ok(String::from_utf8(p.to_vec()).expect("valid names are ASCII"))
}

/// Stateless decoder bound to a set of limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Decoder {
    /// The limits in force.
    pub limits: Limits,
}

/// Reads the 4-byte size at `at`; `None` if not yet buffered.
fn size_at(buf: &[u8], at: usize) -> Option<i32> {
    buf.get(at..at + 4)
        .map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

impl Decoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> Decoder {
        Decoder { limits }
    }

    /// Decodes one command from the front of `buf`, consuming its bytes only when complete.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        let scan = buf.len().min(self.limits.max_line_len + 2);
        let Some(nl) = buf[..scan].iter().position(|&b| b == b'\n') else {
            if buf.len() > self.limits.max_line_len + 1 {
                return Err(invalid(format!(
                    "command line longer than {} bytes",
                    self.limits.max_line_len
                )));
            }
            return Ok(None);
        };
        let mut line = &buf[..nl];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        let line_len = nl + 1;
        // Split without allocating: no command takes more than 3 parameters, and Go ignores
        // extra ones, so keep the first 4 fields and count the rest.
        let mut fields: [&[u8]; 4] = [&[]; 4];
        let mut nfields = 0;
        for f in line.split(|&b| b == b' ') {
            if nfields < fields.len() {
                fields[nfields] = f;
            }
            nfields += 1;
        }
        let params = &fields[..nfields.min(fields.len())];
        let name = params[0];
        let lim = self.limits;

        // Commands without a body complete at the end of the line.
        let simple = match name {
            b"NOP" => Some(Command::Nop),
            b"CLS" => Some(Command::Cls),
            b"RDY" => {
                let count = match params.get(1) {
                    None => 1,
                    Some(p) => parse_base10(p).ok_or_else(|| {
                        invalid(format!("RDY could not parse count {}", lossy(p)))
                    })?,
                };
                Some(Command::Rdy { count })
            }
            b"FIN" => {
                let p = params
                    .get(1)
                    .ok_or_else(|| invalid("FIN insufficient number of params"))?;
                Some(Command::Fin { id: parse_id(p)? })
            }
            b"TOUCH" => {
                let p = params
                    .get(1)
                    .ok_or_else(|| invalid("TOUCH insufficient number of params"))?;
                Some(Command::Touch { id: parse_id(p)? })
            }
            b"REQ" => {
                if params.len() < 3 {
                    return Err(invalid("REQ insufficient number of params"));
                }
                let id = parse_id(params[1])?;
                let timeout_ms = parse_base10(params[2]).ok_or_else(|| {
                    invalid(format!("REQ could not parse timeout {}", lossy(params[2])))
                })?;
                Some(Command::Req { id, timeout_ms })
            }
            b"SUB" => {
                if params.len() < 3 {
                    return Err(invalid("SUB insufficient number of parameters"));
                }
                let topic = topic_param("SUB", params[1], false)?;
                if !is_valid_channel_name(params[2]) {
                    return Err(ProtocolError::new(
                        ErrorCode::BadChannel,
                        format!("SUB channel name {:?} is not valid", lossy(params[2])),
                    ));
                }
                let channel = lossy(params[2]);
                Some(Command::Sub { topic, channel })
            }
            _ => None,
        };
        if let Some(cmd) = simple {
            buf.advance(line_len);
            return Ok(Some(cmd));
        }

        // Body-carrying commands: validate the line, then the declared size, then wait.
        enum Kind {
            Identify,
            Auth,
            Pub(String),
            Dpub(String, u64),
            Mpub(String),
        }
        let kind = match name {
            b"IDENTIFY" => Kind::Identify,
            b"AUTH" => {
                if nfields != 1 {
                    return Err(invalid("AUTH invalid number of parameters"));
                }
                Kind::Auth
            }
            b"PUB" => {
                if params.len() < 2 {
                    return Err(invalid("PUB insufficient number of parameters"));
                }
                Kind::Pub(topic_param("PUB", params[1], false)?)
            }
            b"DPUB" => {
                if params.len() < 3 {
                    return Err(invalid("DPUB insufficient number of parameters"));
                }
                let topic = topic_param("DPUB", params[1], false)?;
                let ms = parse_base10(params[2]).ok_or_else(|| {
                    invalid(format!("DPUB could not parse timeout {}", lossy(params[2])))
                })?;
                Kind::Dpub(topic, ms)
            }
            b"MPUB" => {
                if params.len() < 2 {
                    return Err(invalid("MPUB insufficient number of parameters"));
                }
                Kind::Mpub(topic_param("MPUB", params[1], true)?)
            }
            other => {
                return Err(invalid(format!("invalid command {}", lossy(other))));
            }
        };

        let Some(size) = size_at(buf, line_len) else {
            return Ok(None);
        };
        let (what, max, code) = match &kind {
            Kind::Identify => ("IDENTIFY", lim.max_body_size, ErrorCode::BadBody),
            Kind::Auth => ("AUTH", lim.max_body_size, ErrorCode::BadBody),
            Kind::Mpub(_) => ("MPUB", lim.max_body_size, ErrorCode::BadBody),
            Kind::Pub(_) => ("PUB", lim.max_msg_size, ErrorCode::BadMessage),
            Kind::Dpub(..) => ("DPUB", lim.max_msg_size, ErrorCode::BadMessage),
        };
        if size <= 0 {
            let desc = match code {
                ErrorCode::BadMessage => format!("{what} invalid message body size {size}"),
                _ => format!("{what} invalid body size {size}"),
            };
            return Err(ProtocolError::new(code, desc));
        }
        if size as u64 > max {
            let desc = match code {
                ErrorCode::BadMessage => format!("{what} message too big {size} > {max}"),
                _ => format!("{what} body too big {size} > {max}"),
            };
            return Err(ProtocolError::new(code, desc));
        }
        let total = line_len + 4 + size as usize;
        if buf.len() < total {
            // Make room for the whole body at once instead of growing step by step.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let body_start = line_len + 4;
        if let Kind::Mpub(_) = &kind {
            validate_mpub(&buf[body_start..total], lim)?;
        }
        buf.advance(body_start);
        let body = buf.split_to(size as usize).freeze();
        Ok(Some(match kind {
            Kind::Identify => Command::Identify { body },
            Kind::Auth => Command::Auth { secret: body },
            Kind::Pub(topic) => Command::Pub { topic, body },
            Kind::Dpub(topic, defer_ms) => Command::Dpub {
                topic,
                defer_ms,
                body,
            },
            Kind::Mpub(topic) => {
                let count = u32::from_be_bytes(body[..4].try_into().expect("validated"));
                Command::Mpub {
                    topic,
                    batch: MpubBody {
                        data: body.slice(4..),
                        count,
                    },
                }
            }
        }))
    }
}

fn validate_mpub(body: &[u8], lim: Limits) -> Result<(), ProtocolError> {
    let Some(count) = size_at(body, 0) else {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            "MPUB failed to read message count",
        ));
    };
    let max_count = (lim.max_body_size.saturating_sub(4) / 5) as i64;
    if count <= 0 || count as i64 > max_count {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!("MPUB invalid message count {count}"),
        ));
    }
    let mut at = 4usize;
    for i in 0..count {
        let Some(n) = size_at(body, at) else {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                format!("MPUB failed to read message({i}) body size"),
            ));
        };
        if n <= 0 {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                format!("MPUB invalid message({i}) body size {n}"),
            ));
        }
        if n as u64 > lim.max_msg_size {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                format!("MPUB message too big {n} > {}", lim.max_msg_size),
            ));
        }
        at += 4;
        if body.len() < at + n as usize {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                "MPUB failed to read message body",
            ));
        }
        at += n as usize;
    }
    if at != body.len() {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!(
                "MPUB body size {} does not match its {count} messages ({at} bytes)",
                body.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
