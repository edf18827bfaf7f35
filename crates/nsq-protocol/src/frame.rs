//! Server → client framing (Go: `internal/protocol/protocol.go`, `SendFramedResponse`):
//!
//! ```text
//! [4-byte BE size = 4 + len(data)][4-byte BE frame type][data]
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{ErrorCode, ProtocolError};
use crate::message::{put_message_payload, MessageId, MSG_HEADER_LEN};

/// The three frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// `OK`, `_heartbeat_`, `CLOSE_WAIT` or a JSON document.
    Response = 0,
    /// `"<E_CODE> <description>"`.
    Error = 1,
    /// A message payload.
    Message = 2,
}

impl FrameType {
    fn from_i32(n: i32) -> Option<FrameType> {
        match n {
            0 => Some(FrameType::Response),
            1 => Some(FrameType::Error),
            2 => Some(FrameType::Message),
            _ => None,
        }
    }
}

/// A decoded frame (client side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The frame type.
    pub frame_type: FrameType,
    /// The frame data.
    pub data: Bytes,
}

impl Frame {
    /// Whether this is the heartbeat response.
    pub fn is_heartbeat(&self) -> bool {
        self.frame_type == FrameType::Response && self.data.as_ref() == crate::HEARTBEAT
    }
}

/// Appends a frame to `buf`.
#[inline]
pub fn put_frame(buf: &mut BytesMut, frame_type: FrameType, data: &[u8]) {
    buf.reserve(8 + data.len());
    buf.put_u32(4 + data.len() as u32);
    buf.put_i32(frame_type as i32);
    buf.put_slice(data);
}

/// Appends a complete message frame to `buf` without building the payload first.
#[inline]
pub fn put_message_frame(
    buf: &mut BytesMut,
    timestamp: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    buf.reserve(8 + MSG_HEADER_LEN + body.len());
    buf.put_u32((4 + MSG_HEADER_LEN + body.len()) as u32);
    buf.put_i32(FrameType::Message as i32);
    put_message_payload(buf, timestamp, attempts, id, body);
}

/// The exact number of bytes [`put_message_frame`] appends for a body of `body_len` bytes.
pub const fn message_frame_len(body_len: usize) -> usize {
    8 + MSG_HEADER_LEN + body_len
}

/// Decodes one frame from the front of `buf` (client side).
/// Returns `Ok(None)` when more bytes are needed; `max_size` bounds the declared size
/// before any body is buffered.
pub fn decode_frame(buf: &mut BytesMut, max_size: usize) -> Result<Option<Frame>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(4..=max_size).contains(&size) {
        return Err(ProtocolError::new(
            ErrorCode::BadBody,
            format!("invalid frame size {size}"),
        ));
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let ft = buf.get_i32();
    let frame_type = FrameType::from_i32(ft).ok_or_else(|| {
        ProtocolError::new(ErrorCode::BadBody, format!("invalid frame type {ft}"))
    })?;
    let data = buf.split_to(size - 4).freeze();
    Ok(Some(Frame { frame_type, data }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trip_and_partial() {
        let mut buf = BytesMut::new();
        put_frame(&mut buf, FrameType::Response, b"OK");
        put_frame(&mut buf, FrameType::Error, b"E_INVALID bad");
        put_message_frame(&mut buf, 7, 1, &MessageId::from_u64(9), b"body");
        assert_eq!(&buf[..8], &[0, 0, 0, 6, 0, 0, 0, 0]);
        let full = buf.clone();
        // Feed byte by byte: the decoder must wait, then produce each frame exactly once.
        let mut partial = BytesMut::new();
        let mut frames = Vec::new();
        for b in full.iter() {
            partial.put_u8(*b);
            while let Some(f) = decode_frame(&mut partial, 1 << 20).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].data.as_ref(), b"OK");
        assert_eq!(frames[1].frame_type, FrameType::Error);
        assert_eq!(frames[2].frame_type, FrameType::Message);
        assert_eq!(frames[2].data.len(), MSG_HEADER_LEN + 4);
        assert_eq!(message_frame_len(4), full.len() - 10 - 21);
    }

    #[test]
    fn rejects_bad_sizes() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0][..]);
        assert!(decode_frame(&mut buf, 1 << 20).is_err());
        let mut buf = BytesMut::from(&[0, 0, 0, 6, 0, 0, 0, 9, b'O', b'K'][..]);
        assert!(decode_frame(&mut buf, 1 << 20).is_err());
    }
}
