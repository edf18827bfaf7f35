//! A topic: its channels, its held messages, its id generator.
//!
//! Publishing copies the bodies once into a [`Batch`] and hands an `Arc` of it to every
//! channel (Go copies the message struct per channel in `topic.messagePump`; we share the
//! bodies). While a topic has no channels, or is paused, batches are held by the topic and
//! handed to the first channel created (or to all channels on unpause), as Go does.
//!
//! Lock order: topic `inner`, then a channel's `state`. Nothing is awaited under either.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::channel::Channel;
use crate::clock::{unix_nanos, Clock};
use crate::persist::DataDir;
use crate::state::batch::Batch;
use crate::state::channel::MsgRef;
use crate::state::guid::GuidGen;

/// Publishing failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is being deleted or the daemon is shutting down.
    #[error("exiting")]
    Exiting,
}

enum Held {
    Ready(Arc<Batch>),
    Deferred(Arc<Batch>, u64),
}

impl Held {
    fn len(&self) -> u64 {
        match self {
            Held::Ready(b) | Held::Deferred(b, _) => b.len() as u64,
        }
    }
}

struct TopicInner {
    channels: BTreeMap<String, Arc<Channel>>,
    paused: bool,
    deleted: bool,
    held: VecDeque<Held>,
    held_count: u64,
}

/// One topic.
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Whether the name ends in `#ephemeral`.
    pub ephemeral: bool,
    inner: Mutex<TopicInner>,
    guid: Mutex<GuidGen>,
    /// Mirrors `inner.deleted` so connections can check their cached handle without a lock.
    deleted: AtomicBool,
    message_count: AtomicU64,
    message_bytes: AtomicU64,
    mem_queue_size: i64,
    clock: Clock,
    data: Option<Arc<DataDir>>,
}

impl Topic {
    pub(crate) fn new(
        name: &str,
        node_id: u16,
        mem_queue_size: i64,
        clock: Clock,
        data: Option<Arc<DataDir>>,
    ) -> Topic {
        let ephemeral = nsq_protocol::names::is_ephemeral(name);
        Topic {
            name: name.to_string(),
            ephemeral,
            inner: Mutex::new(TopicInner {
                channels: BTreeMap::new(),
                paused: false,
                deleted: false,
                held: VecDeque::new(),
                held_count: 0,
            }),
            guid: Mutex::new(GuidGen::new(node_id)),
            deleted: AtomicBool::new(false),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            mem_queue_size,
            clock,
            data: if ephemeral { None } else { data },
        }
    }

    /// Publishes `count` bodies; with `defer_ns`, each channel receives them deferred.
    pub fn publish<'a>(
        &self,
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        count: u32,
        defer_ns: Option<u64>,
    ) -> Result<(), PublishError> {
        if count == 0 {
            return Ok(());
        }
        let ts = unix_nanos();
        let (first, node) = {
            let mut g = self.guid.lock();
            (g.reserve(count as u64, ts), g.node_id())
        };
        // Copy outside the topic lock: only the fan-out below needs it.
        let batch = Arc::new(Batch::generated(bodies, first, node, ts));
        let bytes = batch.body_bytes() as u64;
        let mut inner = self.inner.lock();
        if inner.deleted {
            return Err(PublishError::Exiting);
        }
        self.message_count
            .fetch_add(count as u64, Ordering::Relaxed);
        self.message_bytes.fetch_add(bytes, Ordering::Relaxed);
        let held = match defer_ns {
            Some(d) if d > 0 => Held::Deferred(batch, d),
            _ => Held::Ready(batch),
        };
        if inner.channels.is_empty() || inner.paused {
            if self.ephemeral
                && self.mem_queue_size > 0
                && inner.held_count >= self.mem_queue_size as u64
            {
                // Go's ephemeral topics have no disk queue: overflow is discarded.
                return Ok(());
            }
            inner.held_count += held.len();
            inner.held.push_back(held);
            return Ok(());
        }
        let now = self.clock.now();
        for ch in inner.channels.values() {
            deliver(ch, &held, now);
        }
        Ok(())
    }

    /// Returns the channel, creating it if needed (`true` when created).
    pub fn get_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool), PublishError> {
        let mut inner = self.inner.lock();
        if inner.deleted {
            return Err(PublishError::Exiting);
        }
        if let Some(ch) = inner.channels.get(name) {
            return Ok((ch.clone(), false));
        }
        let ch = Channel::new(
            &self.name,
            name,
            self.mem_queue_size,
            self.clock,
            false,
            self.data.clone(),
        );
        inner.channels.insert(name.to_string(), ch.clone());
        if let (Some(d), false) = (&self.data, ch.ephemeral) {
            d.mark_dirty();
        }
        if inner.channels.len() == 1 && !inner.paused {
            Self::flush_held(&mut inner, self.clock.now());
        }
        tracing::info!("TOPIC({}): new channel({})", self.name, name);
        Ok((ch, true))
    }

    fn flush_held(inner: &mut TopicInner, now: u64) {
        let held = std::mem::take(&mut inner.held);
        inner.held_count = 0;
        for h in &held {
            for ch in inner.channels.values() {
                deliver(ch, h, now);
            }
        }
    }

    /// An existing channel.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.lock().channels.get(name).cloned()
    }

    /// All channels, sorted by name.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.inner.lock().channels.values().cloned().collect()
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.inner.lock().channels.len()
    }

    /// Removes and closes a channel; `false` if there was none.
    pub(crate) fn remove_channel(&self, name: &str) -> bool {
        let ch = self.inner.lock().channels.remove(name);
        match ch {
            Some(ch) => {
                ch.delete();
                tracing::info!("TOPIC({}): deleting channel {}", self.name, name);
                true
            }
            None => false,
        }
    }

    /// Pauses or unpauses the topic (a paused topic holds new messages).
    pub fn set_paused(&self, paused: bool) {
        let mut inner = self.inner.lock();
        inner.paused = paused;
        if !paused && !inner.channels.is_empty() {
            Self::flush_held(&mut inner, self.clock.now());
        }
        if let Some(d) = &self.data {
            d.mark_dirty();
        }
    }

    /// Adds a batch restored from disk: held if the topic has no channels or is paused,
    /// otherwise handed to the channels (Go's topic pump does the same after a restart).
    pub(crate) fn restore_held(&self, batch: Arc<Batch>) {
        let mut inner = self.inner.lock();
        let held = Held::Ready(batch);
        if inner.channels.is_empty() || inner.paused {
            inner.held_count += held.len();
            inner.held.push_back(held);
        } else {
            let now = self.clock.now();
            for ch in inner.channels.values() {
                deliver(ch, &held, now);
            }
        }
    }

    /// Takes the messages the topic holds (for flushing to disk at shutdown).
    pub(crate) fn drain_held(&self) -> Vec<MsgRef> {
        let mut inner = self.inner.lock();
        inner.held_count = 0;
        let mut out = Vec::new();
        for h in std::mem::take(&mut inner.held) {
            let (Held::Ready(b) | Held::Deferred(b, _)) = h;
            for idx in 0..b.len() {
                out.push(MsgRef {
                    batch: b.clone(),
                    idx,
                    attempts: b.initial_attempts(idx),
                });
            }
        }
        out
    }

    /// Whether the topic is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.lock().paused
    }

    /// Drops the messages held by the topic itself (not its channels'), as Go's
    /// `/topic/empty` does.
    pub fn empty(&self) {
        {
            let mut inner = self.inner.lock();
            inner.held.clear();
            inner.held_count = 0;
        }
        if let Some(d) = &self.data {
            d.remove_queue(&self.name);
        }
    }

    /// Messages held by the topic (in memory).
    pub fn depth(&self) -> u64 {
        self.inner.lock().held_count
    }

    /// Messages published to the topic.
    pub fn message_count(&self) -> u64 {
        self.message_count.load(Ordering::Relaxed)
    }

    /// Body bytes published to the topic.
    pub fn message_bytes(&self) -> u64 {
        self.message_bytes.load(Ordering::Relaxed)
    }

    /// Marks the topic deleted and closes its channels.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        inner.deleted = true;
        self.deleted.store(true, Ordering::Release);
        inner.held.clear();
        inner.held_count = 0;
        for ch in std::mem::take(&mut inner.channels).into_values() {
            ch.close();
        }
    }

    /// Deletes the topic for good: closes it and removes its and its channels' queue files.
    pub(crate) fn delete(&self) {
        let channels = self.channels();
        self.close();
        for ch in channels {
            ch.delete();
        }
        if let Some(d) = &self.data {
            d.remove_queue(&self.name);
            d.mark_dirty();
        }
    }

    /// Whether the topic has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }
}

fn deliver(ch: &Channel, held: &Held, now: u64) {
    match held {
        Held::Ready(b) => {
            ch.state.lock().put(b.clone(), 0, b.len());
            ch.wake_consumers();
        }
        Held::Deferred(b, d) => {
            let due = now + d;
            {
                let mut st = ch.state.lock();
                for idx in 0..b.len() {
                    st.put_deferred(
                        MsgRef {
                            batch: b.clone(),
                            idx,
                            attempts: 0,
                        },
                        due,
                    );
                }
            }
            ch.schedule(due);
        }
    }
}
