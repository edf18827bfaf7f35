//! Message storage shared between a topic and its channels.
//!
//! A PUB or MPUB becomes one [`Batch`]: the bodies copied back to back into one exact-size
//! allocation, the end offset of each body, and the id counter of its first message.
//! Channels hold `Arc<Batch>` plus an index, so fanning a batch out to ten channels costs ten
//! reference-count increments and no copies, and a queued 100-byte message costs about
//! 104 bytes of RAM instead of a heap object per message.
//!
//! We copy the bodies out of the connection's read buffer (rather than keeping a slice of it)
//! so that a long-lived queued batch never pins a larger read buffer in memory.

use std::sync::OnceLock;

use bytes::Bytes;
use nsq_protocol::MessageId;

use super::guid::id_for;

/// Where a batch's ids and timestamps come from.
#[derive(Debug)]
pub enum BatchMeta {
    /// Published here: ids are consecutive counters, one timestamp for the batch.
    Generated {
        /// Counter of the first message (see [`super::guid`]).
        first_counter: u64,
        /// Node id bits.
        node_id: u64,
        /// Publish time, ns since the Unix epoch.
        timestamp: i64,
    },
    /// Loaded from elsewhere (disk): explicit id, timestamp and attempts per message.
    Explicit(Box<[(MessageId, i64, u16)]>),
}

/// Size of a topic-log record around a body (`nsq_store::record_len(0)`): framing plus the
/// fixed message fields. Positions of a batch's records follow from it and the body lengths.
pub const LOG_RECORD_OVERHEAD: u64 = 47;

/// Where a batch's messages sit in the topic log (durable mode only).
#[derive(Debug)]
enum LogPlace {
    /// Appended as one run starting at this position.
    Run(u64),
    /// Read back from the log: one position per message.
    Each(Box<[u64]>),
}

/// An immutable group of messages published together.
#[derive(Debug)]
pub struct Batch {
    bodies: Bytes,
    ends: Box<[u32]>,
    meta: BatchMeta,
    /// Set once the batch is in the topic log (durable mode).
    log: OnceLock<LogPlace>,
}

impl Batch {
    /// Builds a batch from bodies; `first_counter` is the id counter reserved for the first.
    pub fn generated<'a>(
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        first_counter: u64,
        node_id: u64,
        timestamp: i64,
    ) -> Batch {
        let total: usize = bodies.clone().map(|b| b.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(bodies.size_hint().0);
        for b in bodies {
            buf.extend_from_slice(b);
            ends.push(buf.len() as u32);
        }
        Batch {
            bodies: Bytes::from(buf),
            ends: ends.into_boxed_slice(),
            meta: BatchMeta::Generated {
                first_counter,
                node_id,
                timestamp,
            },
            log: OnceLock::new(),
        }
    }

    /// Records that the batch was appended to the topic log starting at `first`.
    pub fn set_log_first(&self, first: u64) {
        let _ = self.log.set(LogPlace::Run(first));
    }

    /// Records the log position of each message (messages read back from the log).
    pub fn set_log_positions(&self, positions: Box<[u64]>) {
        let _ = self.log.set(LogPlace::Each(positions));
    }

    /// The topic-log position of message `i`, if the batch is in a log.
    #[inline]
    pub fn log_pos(&self, i: u32) -> Option<u64> {
        match self.log.get()? {
            LogPlace::Run(first) => {
                let before = if i == 0 {
                    0
                } else {
                    self.ends[i as usize - 1] as u64
                };
                Some(first + i as u64 * LOG_RECORD_OVERHEAD + before)
            }
            LogPlace::Each(p) => p.get(i as usize).copied(),
        }
    }

    /// The topic-log position just past message `i`'s record, if the batch is in a log.
    #[inline]
    pub fn log_end(&self, i: u32) -> Option<u64> {
        Some(self.log_pos(i)? + LOG_RECORD_OVERHEAD + self.body(i).len() as u64)
    }

    /// Body of message `i` as a zero-copy `Bytes`.
    pub fn body_shared(&self, i: u32) -> Bytes {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.bodies.slice(start..self.ends[i] as usize)
    }

    /// Builds a batch of messages with known ids (e.g. read back from disk).
    pub fn explicit(msgs: &[nsq_protocol::Message]) -> Batch {
        let total: usize = msgs.iter().map(|m| m.body.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(msgs.len());
        let mut meta = Vec::with_capacity(msgs.len());
        for m in msgs {
            buf.extend_from_slice(&m.body);
            ends.push(buf.len() as u32);
            meta.push((m.id, m.timestamp, m.attempts));
        }
        Batch {
            bodies: Bytes::from(buf),
            ends: ends.into_boxed_slice(),
            meta: BatchMeta::Explicit(meta.into_boxed_slice()),
            log: OnceLock::new(),
        }
    }

    /// Number of messages.
    #[inline]
    pub fn len(&self) -> u32 {
        self.ends.len() as u32
    }

    /// Whether the batch holds no messages.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Body of message `i`.
    #[inline]
    pub fn body(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bodies[start..self.ends[i] as usize]
    }

    /// Total body bytes.
    pub fn body_bytes(&self) -> usize {
        self.bodies.len()
    }

    /// The numeric id of message `i`: the key for in-flight lookups.
    #[inline]
    pub fn id_u64(&self, i: u32) -> u64 {
        match &self.meta {
            BatchMeta::Generated {
                first_counter,
                node_id,
                ..
            } => id_for(*node_id, first_counter + i as u64),
            BatchMeta::Explicit(m) => m[i as usize].0.to_u64().unwrap_or_else(|| {
                // Ids not written by an NSQ node: hash the 16 bytes so FIN can still find it.
                fold_id(&m[i as usize].0)
            }),
        }
    }

    /// The wire id of message `i`.
    #[inline]
    pub fn id(&self, i: u32) -> MessageId {
        match &self.meta {
            BatchMeta::Generated { .. } => MessageId::from_u64(self.id_u64(i)),
            BatchMeta::Explicit(m) => m[i as usize].0,
        }
    }

    /// Publish timestamp of message `i` (ns since the Unix epoch).
    #[inline]
    pub fn timestamp(&self, i: u32) -> i64 {
        match &self.meta {
            BatchMeta::Generated { timestamp, .. } => *timestamp,
            BatchMeta::Explicit(m) => m[i as usize].1,
        }
    }

    /// Attempts recorded when the batch was built (0 for fresh messages).
    pub fn initial_attempts(&self, i: u32) -> u16 {
        match &self.meta {
            BatchMeta::Generated { .. } => 0,
            BatchMeta::Explicit(m) => m[i as usize].2,
        }
    }
}

/// Turns an arbitrary 16-byte id into a lookup key. Used only for ids that are not hex, which
/// NSQ never writes; a FIN for such an id is parsed the same way, so lookups still match.
pub fn fold_id(id: &MessageId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in &id.0 {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Parses a client-supplied id into the lookup key used by [`Batch::id_u64`].
pub fn id_key(id: &MessageId) -> u64 {
    id.to_u64().unwrap_or_else(|| fold_id(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_ids() {
        let b = Batch::generated([b"ab".as_slice(), b"", b"cde"].into_iter(), 100, 5, 42);
        assert_eq!(b.len(), 3);
        assert_eq!(b.body(0), b"ab");
        assert_eq!(b.body(1), b"");
        assert_eq!(b.body(2), b"cde");
        assert_eq!(b.id_u64(1), id_for(5, 101));
        assert_eq!(id_key(&b.id(2)), b.id_u64(2));
        assert_eq!(b.timestamp(2), 42);
        assert_eq!(b.log_pos(0), None);
        b.set_log_first(1000);
        assert_eq!(b.log_pos(0), Some(1000));
        assert_eq!(b.log_pos(1), Some(1000 + 47 + 2));
        assert_eq!(b.log_pos(2), Some(1000 + 2 * 47 + 2));
        assert_eq!(b.body_shared(2).as_ref(), b"cde");
    }
}
