//! The replicated state of one topic, **sans-I/O**: what every member applies from the
//! consensus log, in log order, so every member knows exactly which messages each channel
//! still owes. Plain data; unit-tested here without a cluster.
//!
//! Messages get a dense sequence number as they are applied. A channel is a low-water mark
//! (every sequence below it is done) plus the set of FINed sequences above it. A message is
//! dropped once every channel is past it; a topic without channels keeps everything for its
//! first channel (NSQ hands a channel-less topic's backlog to the first channel).
//!
//! What is *not* replicated: in-flight state, REQ, TOUCH, attempts. Only the leader delivers;
//! after a failover the new leader delivers every message not FINed through the log again
//! (at least once).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One message as the log carries it: the id and timestamp the proposing node gave it, so
/// every member (and every failover) shows the same message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    /// NSQ message id (16 ASCII hex bytes).
    pub id: [u8; 16],
    /// Publish time, unix ns.
    pub timestamp: i64,
    /// DPUB: not deliverable before this unix ns time (0: no deferral).
    pub defer_until: i64,
    /// The body.
    pub body: Bytes,
}

/// One replicated operation of a topic (the consensus log's application data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// PUB / MPUB / DPUB.
    Publish(#[serde(with = "msgs_codec")] Vec<Msg>),
    /// FINs of one channel, batched by the leader.
    Finish {
        /// Channel name.
        channel: String,
        /// FINed message ids.
        ids: Vec<[u8; 16]>,
    },
    /// A channel was created on the leader.
    CreateChannel(String),
    /// A channel was deleted.
    DeleteChannel(String),
}

/// A publish's messages on the wire and in the log as their fixed fields plus *one* byte
/// string of all bodies: decoding makes one allocation per entry (each body a slice of it)
/// instead of one per message, and encoding one copy.
mod msgs_codec {
    use bytes::{Bytes, BytesMut};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Msg;

    type Meta = ([u8; 16], i64, i64, u32);

    pub fn serialize<S: Serializer>(msgs: &[Msg], s: S) -> Result<S::Ok, S::Error> {
        let meta: Vec<Meta> = msgs
            .iter()
            .map(|m| (m.id, m.timestamp, m.defer_until, m.body.len() as u32))
            .collect();
        let total = msgs.iter().map(|m| m.body.len()).sum();
        let mut bodies = BytesMut::with_capacity(total);
        for m in msgs {
            bodies.extend_from_slice(&m.body);
        }
        (meta, bodies.freeze()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Msg>, D::Error> {
        let (meta, bodies): (Vec<Meta>, Bytes) = Deserialize::deserialize(d)?;
        let mut off = 0usize;
        let mut out = Vec::with_capacity(meta.len());
        for (id, timestamp, defer_until, len) in meta {
            let end = off + len as usize;
            if end > bodies.len() {
                return Err(serde::de::Error::custom(
                    "message bodies shorter than their lengths",
                ));
            }
            out.push(Msg {
                id,
                timestamp,
                defer_until,
                body: bodies.slice(off..end),
            });
            off = end;
        }
        Ok(out)
    }
}

/// The answer to an applied [`Op`] (nothing to say yet; the commit is the answer).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpReply {}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Chan {
    /// Every sequence below this is done for the channel.
    low: u64,
    /// FINed sequences ≥ `low`.
    done: BTreeSet<u64>,
}

/// The replicated state of one topic (see the module doc).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TopicData {
    next_seq: u64,
    msgs: BTreeMap<u64, Msg>,
    channels: BTreeMap<String, Chan>,
    /// id → sequence, rebuilt after a snapshot is read.
    #[serde(skip)]
    ids: HashMap<[u8; 16], u64>,
}

impl TopicData {
    /// Rebuilds the id index after deserializing.
    pub fn reindex(&mut self) {
        self.ids = self.msgs.iter().map(|(s, m)| (m.id, *s)).collect();
    }

    /// Applies one operation.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Publish(msgs) => {
                for m in msgs {
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.ids.insert(m.id, seq);
                    self.msgs.insert(seq, m.clone());
                }
            }
            Op::CreateChannel(name) => {
                if self.channels.contains_key(name) {
                    return;
                }
                let low = if self.channels.is_empty() {
                    // The first channel takes what the topic held.
                    self.msgs.keys().next().copied().unwrap_or(self.next_seq)
                } else {
                    self.next_seq
                };
                self.channels.insert(
                    name.clone(),
                    Chan {
                        low,
                        done: BTreeSet::new(),
                    },
                );
            }
            Op::DeleteChannel(name) => {
                if self.channels.remove(name).is_some() {
                    if self.channels.is_empty() {
                        // What the last channel owed goes with it (as in NSQ); the topic
                        // holds only what is published from now on.
                        self.msgs.clear();
                        self.ids.clear();
                    } else {
                        self.collect();
                    }
                }
            }
            Op::Finish { channel, ids } => {
                let Some(ch) = self.channels.get_mut(channel) else {
                    return;
                };
                for id in ids {
                    if let Some(&seq) = self.ids.get(id) {
                        if seq >= ch.low {
                            ch.done.insert(seq);
                        }
                    }
                }
                let before = ch.low;
                while ch.done.remove(&ch.low) {
                    ch.low += 1;
                }
                if ch.low != before {
                    self.collect();
                }
            }
        }
    }

    /// Drops the messages every channel is past.
    fn collect(&mut self) {
        let Some(min) = self.channels.values().map(|c| c.low).min() else {
            return;
        };
        while let Some(e) = self.msgs.first_entry() {
            if *e.key() >= min {
                break;
            }
            let m = e.remove();
            self.ids.remove(&m.id);
        }
    }

    /// Channel names.
    pub fn channel_names(&self) -> impl Iterator<Item = &str> {
        self.channels.keys().map(String::as_str)
    }

    /// What `channel` still owes, in publish order.
    pub fn owed<'a>(&'a self, channel: &str) -> impl Iterator<Item = &'a Msg> + 'a {
        let ch = self.channels.get(channel);
        let low = ch.map_or(u64::MAX, |c| c.low);
        self.msgs
            .range(low..)
            .filter(move |(s, _)| ch.is_some_and(|c| !c.done.contains(s)))
            .map(|(_, m)| m)
    }

    /// What the topic holds for its first channel while it has none.
    pub fn held(&self) -> impl Iterator<Item = &Msg> {
        let none = self.channels.is_empty();
        self.msgs.values().filter(move |_| none)
    }

    /// How many messages `channel` still owes (0 for an unknown channel). O(1): a channel's
    /// messages are the dense sequences from its low-water mark on, less its FINed set.
    pub fn owed_count(&self, channel: &str) -> u64 {
        self.channels
            .get(channel)
            .map_or(0, |c| self.next_seq - c.low - c.done.len() as u64)
    }

    /// Messages kept (owed to at least one channel, or held; a FINed message stays until
    /// every channel's low-water mark is past it).
    pub fn message_count(&self) -> usize {
        self.msgs.len()
    }

    /// Whether a channel exists.
    pub fn has_channel(&self, name: &str) -> bool {
        self.channels.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(i: u8) -> Msg {
        let mut id = [b'0'; 16];
        id[15] = b'a' + i % 26;
        id[14] = b'a' + i / 26;
        Msg {
            id,
            timestamp: i as i64,
            defer_until: 0,
            body: Bytes::from(vec![i]),
        }
    }

    fn bodies<'a>(it: impl Iterator<Item = &'a Msg>) -> Vec<u8> {
        it.map(|m| m.body[0]).collect()
    }

    #[test]
    fn the_first_channel_takes_the_held_messages_later_ones_start_at_the_end() {
        let mut t = TopicData::default();
        t.apply(&Op::Publish(vec![msg(0), msg(1)]));
        assert_eq!(bodies(t.held()), vec![0, 1]);
        t.apply(&Op::CreateChannel("a".into()));
        assert_eq!(bodies(t.held()), Vec::<u8>::new());
        t.apply(&Op::Publish(vec![msg(2)]));
        t.apply(&Op::CreateChannel("b".into()));
        t.apply(&Op::Publish(vec![msg(3)]));
        assert_eq!(bodies(t.owed("a")), vec![0, 1, 2, 3]);
        assert_eq!(bodies(t.owed("b")), vec![3]);
        t.apply(&Op::Finish {
            channel: "a".into(),
            ids: vec![msg(1).id, msg(0).id, msg(3).id],
        });
        assert_eq!(bodies(t.owed("a")), vec![2]);
        // 0 and 1 are done by every channel (b started after them): dropped.
        assert_eq!(t.message_count(), 2);
        t.apply(&Op::DeleteChannel("b".into()));
        // 3 is FINed by `a` but above its low-water mark (2): kept until 2 is FINed.
        assert_eq!(t.message_count(), 2);
        t.apply(&Op::Finish {
            channel: "a".into(),
            ids: vec![msg(2).id],
        });
        assert_eq!(t.message_count(), 0);
        assert_eq!(bodies(t.owed("b")), Vec::<u8>::new());
    }

    #[test]
    fn a_publish_encodes_its_bodies_as_one_byte_string() {
        let op = Op::Publish(vec![msg(1), msg(2), msg(3)]);
        let enc = bincode::serialize(&op).unwrap();
        let Op::Publish(back) = bincode::deserialize::<Op>(&enc).unwrap() else {
            panic!("not a publish")
        };
        assert_eq!(back, vec![msg(1), msg(2), msg(3)]);
        // The bodies share one buffer.
        assert_eq!(
            back[1].body.as_ptr() as usize,
            back[0].body.as_ptr() as usize + 1
        );
        // Truncated bodies are refused, not read past.
        let mut bad = enc.clone();
        bad.truncate(enc.len() - 1);
        assert!(bincode::deserialize::<Op>(&bad).is_err());
    }

    #[test]
    fn a_snapshot_round_trip_keeps_fins_working() {
        let mut t = TopicData::default();
        t.apply(&Op::CreateChannel("a".into()));
        t.apply(&Op::Publish(vec![msg(0), msg(1), msg(2)]));
        let mut u: TopicData = bincode::deserialize(&bincode::serialize(&t).unwrap()).unwrap();
        u.reindex();
        u.apply(&Op::Finish {
            channel: "a".into(),
            ids: vec![msg(0).id, msg(2).id],
        });
        assert_eq!(bodies(u.owed("a")), vec![1]);
        assert_eq!(u.message_count(), 2);
    }

    proptest! {
        /// Against a model (per channel: the set of message indexes still owed), over random
        /// publishes, channel creations/deletions and FINs (including unknown and repeated ids).
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((0u8..4, 0u8..3, 0u8..40), 1..120)) {
            let mut t = TopicData::default();
            let mut published = 0u8;
            let mut held: Vec<u8> = Vec::new();
            let mut model: BTreeMap<String, BTreeSet<u8>> = BTreeMap::new();
            for (kind, ch, n) in ops {
                let name = format!("c{ch}");
                match kind {
                    0 if published < 200 => {
                        let k = n % 4 + 1;
                        let ms: Vec<Msg> = (published..published + k).map(msg).collect();
                        for i in published..published + k {
                            if model.is_empty() { held.push(i); }
                            for owed in model.values_mut() { owed.insert(i); }
                        }
                        published += k;
                        t.apply(&Op::Publish(ms));
                    }
                    1 => {
                        if !model.contains_key(&name) {
                            let start: BTreeSet<u8> = if model.is_empty() {
                                held.drain(..).collect()
                            } else { BTreeSet::new() };
                            model.insert(name.clone(), start);
                        }
                        t.apply(&Op::CreateChannel(name));
                    }
                    2 => {
                        model.remove(&name);
                        t.apply(&Op::DeleteChannel(name));
                    }
                    _ => {
                        let ids: Vec<[u8; 16]> = (n..n.saturating_add(3)).map(|i| msg(i).id).collect();
                        if let Some(owed) = model.get_mut(&name) {
                            for i in n..n.saturating_add(3) { owed.remove(&i); }
                        }
                        t.apply(&Op::Finish { channel: name, ids });
                    }
                }
                for (name, owed) in &model {
                    prop_assert_eq!(bodies(t.owed(name)), owed.iter().copied().collect::<Vec<_>>());
                    prop_assert_eq!(t.owed_count(name), owed.len() as u64);
                }
                prop_assert_eq!(bodies(t.held()), held.clone());
                // Nothing is kept that no channel owes (beyond each channel's done-set window).
                let needed: BTreeSet<u8> = model.values().flatten().copied().chain(held.iter().copied()).collect();
                prop_assert!(t.message_count() >= needed.len());
            }
        }
    }
}
