//! The NSQ message payload, identical on the wire and in go-diskqueue records
//! (Go: `nsqd/message.go`, `decodeMessage`):
//!
//! ```text
//! [x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x][x]...
//! |       (int64)        ||    ||      (hex string encoded in ASCII)           || (binary)
//! |       8-byte         ||    ||                 16-byte                      || N-byte
//! ------------------------------------------------------------------------------------------...
//!   nanosecond timestamp    ^^                   message ID                       message body
//!                        (uint16)
//!                         2-byte
//!                        attempts
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ErrorCode, ProtocolError};

/// Length of a message id on the wire.
pub const MSG_ID_LEN: usize = 16;

/// Length of the fixed header before the body: timestamp, attempts, id.
pub const MSG_HEADER_LEN: usize = 8 + 2 + MSG_ID_LEN;

/// A 16-byte message id. nsqd renders its 64-bit ids as lowercase hex;
/// clients treat ids as opaque and echo them verbatim in FIN/REQ/TOUCH.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub [u8; MSG_ID_LEN]);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl MessageId {
    /// Renders a 64-bit id as 16 lowercase hex digits.
    pub fn from_u64(n: u64) -> MessageId {
        let mut out = [0u8; MSG_ID_LEN];
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
        }
        MessageId(out)
    }

    /// Parses 16 hex digits back into a 64-bit id; `None` when not hex.
    pub fn to_u64(&self) -> Option<u64> {
        let mut n = 0u64;
        for &b in &self.0 {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return None,
            };
            n = (n << 4) | d as u64;
        }
        Some(n)
    }

    /// Takes an id from exactly 16 bytes.
    pub fn from_slice(s: &[u8]) -> Option<MessageId> {
        <[u8; MSG_ID_LEN]>::try_from(s).ok().map(MessageId)
    }

    /// The id as text (lossy if the bytes are not UTF-8).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({})", self.as_str())
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// A decoded message, as a client receives it or as it is read from a disk record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Nanoseconds since the Unix epoch, set when the message was published.
    pub timestamp: i64,
    /// How many times nsqd has delivered the message (the first delivery is 1).
    pub attempts: u16,
    /// The message id.
    pub id: MessageId,
    /// The body.
    pub body: Bytes,
}

impl Message {
    /// Decodes a message payload (a message frame's data, or a disk record).
    pub fn decode(mut data: Bytes) -> Result<Message, ProtocolError> {
        if data.len() < MSG_HEADER_LEN {
            return Err(ProtocolError::new(
                ErrorCode::BadMessage,
                format!("invalid message buffer size ({})", data.len()),
            ));
        }
        let timestamp = i64::from_be_bytes(data[0..8].try_into().expect("8 bytes checked above"));
        let attempts = u16::from_be_bytes([data[8], data[9]]);
        let id = MessageId::from_slice(&data[10..26]).expect("16 bytes checked above");
        let body = data.split_off(MSG_HEADER_LEN);
        Ok(Message {
            timestamp,
            attempts,
            id,
            body,
        })
    }

    /// Appends the payload encoding (no frame header) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        put_message_payload(buf, self.timestamp, self.attempts, &self.id, &self.body);
    }
}

/// Appends a message payload (no frame header) to `buf`.
#[inline]
pub fn put_message_payload(
    buf: &mut BytesMut,
    timestamp: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    buf.reserve(MSG_HEADER_LEN + body.len());
    buf.put_i64(timestamp);
    buf.put_u16(attempts);
    buf.put_slice(&id.0);
    buf.put_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hex_round_trip() {
        for n in [0u64, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = MessageId::from_u64(n);
            assert_eq!(id.to_u64(), Some(n));
        }
        assert_eq!(&MessageId::from_u64(0xab).0, b"00000000000000ab");
        assert_eq!(MessageId(*b"zzzzzzzzzzzzzzzz").to_u64(), None);
    }

    #[test]
    fn payload_round_trip() {
        let msg = Message {
            timestamp: 1_700_000_000_123_456_789,
            attempts: 3,
            id: MessageId::from_u64(42),
            body: Bytes::from_static(b"hello"),
        };
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        assert_eq!(buf.len(), MSG_HEADER_LEN + 5);
        assert_eq!(Message::decode(buf.freeze()).unwrap(), msg);
        assert!(Message::decode(Bytes::from_static(b"short")).is_err());
    }
}
