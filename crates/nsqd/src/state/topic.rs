//! One topic's fan-out state machine: its channels, the messages it holds, and where a new
//! channel starts.
//!
//! A published batch is either handed to every channel (shared, never copied) or *held* by
//! the topic: while it has no channel, while it is paused, and while nsqd is starting (the
//! channels nsqlookupd knows of are not created yet). Held messages go to the channels that
//! exist when holding ends — the first channel created, or every channel on unpause — as Go's
//! `topic.messagePump` does. In a logged topic (durable mode, or the default mode once it
//! spills), held messages beyond the memory window stay only in the log: the *held backlog*,
//! a log range handed to the channels as their backlog when holding ends.
//!
//! Everything here is plain data: the shell in [`crate::topic`] owns a `TopicState` behind
//! the topic lock, and channels are reached through [`ChannelSink`], which the real channel
//! implements by locking its [`ChannelState`](super::channel::ChannelState) and waking its
//! consumers, and which the unit tests implement over a bare `ChannelState`. Storage is not
//! touched: log positions come in on the batches, the log's end as an argument.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::batch::Batch;
use super::channel::MsgRef;

/// A batch on its way to the channels.
#[derive(Debug, Clone)]
pub enum Held {
    /// Ready at once.
    Ready(Arc<Batch>),
    /// Deferred (DPUB): due this many nanoseconds after it reaches a channel.
    Deferred(Arc<Batch>, u64),
}

impl Held {
    /// The batch.
    pub fn batch(&self) -> &Arc<Batch> {
        match self {
            Held::Ready(b) | Held::Deferred(b, _) => b,
        }
    }

    fn len(&self) -> u64 {
        self.batch().len() as u64
    }
}

/// What the topic state needs of a channel.
pub trait ChannelSink {
    /// Hands the channel a batch at time `now`; returns how many ready messages the channel
    /// now keeps in memory if that counts towards spilling (0 for an ephemeral channel, which
    /// drops its overflow instead).
    fn deliver(&self, held: &Held, now: u64) -> u64;
    /// Gives the channel the topic's held backlog: `count` messages only in the log, in
    /// `[from, end)`, except positions in `skip` (delivered from memory instead). Returns
    /// `false` when the channel cannot read the log back (ephemeral, or no journal).
    fn take_backlog(&self, from: u64, end: u64, count: u64, skip: &[u64]) -> bool;
    /// Whether the channel has an on-disk backlog, and how many ready messages it keeps in
    /// memory.
    fn queued(&self) -> (bool, u64);
}

/// The topic has been deleted (or nsqd is exiting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("topic deleted")]
pub struct Deleted;

/// Held messages that are only in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeldBacklog {
    from: u64,
    /// Just past the last record that joined it.
    end: u64,
    count: u64,
}

/// The fan-out state of one topic.
#[derive(Debug)]
pub struct TopicState<C> {
    channels: BTreeMap<String, C>,
    paused: bool,
    deleted: bool,
    /// Holding messages until channels known to nsqlookupd exist.
    starting: bool,
    held: VecDeque<Held>,
    held_count: u64,
    /// Log position of the first held message (where a channel created meanwhile starts).
    held_start: Option<u64>,
    held_backlog: Option<HeldBacklog>,
    /// Most ready held messages kept in memory once they are logged.
    memory_window: u64,
    /// Ephemeral topics (no disk queue, as in Go) discard what they hold beyond this.
    drop_beyond: Option<u64>,
}

impl<C: ChannelSink> TopicState<C> {
    /// A topic with no channels. `memory_window`: most held messages kept in memory once the
    /// topic logs them; `drop_beyond`: an ephemeral topic's `--mem-queue-size`.
    pub fn new(memory_window: u64, drop_beyond: Option<u64>) -> TopicState<C> {
        TopicState {
            channels: BTreeMap::new(),
            paused: false,
            deleted: false,
            starting: false,
            held: VecDeque::new(),
            held_count: 0,
            held_start: None,
            held_backlog: None,
            memory_window,
            drop_beyond,
        }
    }

    /// Whether new messages are held rather than handed to the channels.
    pub fn holding(&self) -> bool {
        self.channels.is_empty() || self.paused || self.starting
    }

    /// A published batch: handed to every channel, or held. Returns the most ready messages
    /// that any channel (or the topic itself, holding) now keeps in memory, for the spill
    /// decision; 0 when an ephemeral topic discarded the batch.
    pub fn accept(&mut self, held: Held, now: u64) -> Result<u64, Deleted> {
        if self.deleted {
            return Err(Deleted);
        }
        if self.holding() {
            if self.drop_beyond.is_some_and(|max| self.held_count >= max) {
                return Ok(0);
            }
            self.hold(held);
            return Ok(self.held_count);
        }
        Ok(self.fan_out(&held, now))
    }

    /// A batch restored from disk at start-up: held if the topic has no channels or is
    /// paused, otherwise handed to the channels (Go's topic pump does the same after a
    /// restart). Unlike [`TopicState::accept`] it ignores `starting`: restoring runs before
    /// the channels from nsqlookupd are asked for.
    pub fn restore(&mut self, held: Held, now: u64) {
        if self.channels.is_empty() || self.paused {
            self.hold(held);
        } else {
            self.fan_out(&held, now);
        }
    }

    fn fan_out(&self, held: &Held, now: u64) -> u64 {
        self.channels
            .values()
            .map(|c| c.deliver(held, now))
            .max()
            .unwrap_or(0)
    }

    /// Holds a batch. A logged ready batch beyond the memory window (or behind a held backlog,
    /// to keep log order) stays only in the log, as the held backlog.
    fn hold(&mut self, held: Held) {
        let b = held.batch();
        if self.held_start.is_none() {
            self.held_start = b.log_pos(0);
        }
        if let (Held::Ready(b), Some(pos)) = (&held, b.log_pos(0)) {
            if self.held_backlog.is_some() || self.held_count >= self.memory_window {
                let end = b.log_end(b.len() - 1).unwrap_or(pos);
                let hb = self.held_backlog.get_or_insert(HeldBacklog {
                    from: pos,
                    end,
                    count: 0,
                });
                hb.end = hb.end.max(end);
                hb.count += b.len() as u64;
                return;
            }
        }
        self.held_count += held.len();
        self.held.push_back(held);
    }

    /// Ends holding: every held batch goes to every channel, then the held backlog.
    fn release(&mut self, now: u64) {
        let held = std::mem::take(&mut self.held);
        self.held_count = 0;
        self.held_start = None;
        let backlog = self.held_backlog.take();
        // Deferred messages inside the held backlog's range are delivered from memory; the
        // channels' backlog reads must skip them.
        let mut skip = Vec::new();
        for h in &held {
            if let (Some(hb), Held::Deferred(b, _)) = (backlog, h) {
                skip.extend(
                    (0..b.len())
                        .filter_map(|i| b.log_pos(i))
                        .filter(|&p| p >= hb.from),
                );
            }
            self.fan_out(h, now);
        }
        if let Some(hb) = backlog {
            for c in self.channels.values() {
                c.take_backlog(hb.from, hb.end, hb.count, &skip);
            }
        }
    }

    /// Adds a channel (the caller checked there is none of that name). The first channel
    /// ends holding unless the topic is paused or starting.
    pub fn insert_channel(&mut self, name: &str, channel: C, now: u64) {
        self.channels.insert(name.to_string(), channel);
        if self.channels.len() == 1 && !self.paused && !self.starting {
            self.release(now);
        }
    }

    /// Removes a channel.
    pub fn remove_channel(&mut self, name: &str) -> Option<C> {
        self.channels.remove(name)
    }

    /// Where a channel created now starts in a log that ends at `log_end`. The first channel
    /// inherits what the topic holds; later ones start at the end of the log, as Go's channels
    /// only see messages published after them. Never decreases while the topic lives.
    pub fn channel_start(&self, log_end: u64) -> u64 {
        let holding_any = self.held_count > 0 || self.held_backlog.is_some();
        if self.channels.is_empty() || self.starting || holding_any {
            self.held_start.unwrap_or(log_end)
        } else {
            log_end
        }
    }

    /// Pauses or unpauses; unpausing a topic with channels hands them what it held.
    pub fn set_paused(&mut self, paused: bool, now: u64) {
        self.paused = paused;
        if !paused && !self.channels.is_empty() && !self.starting {
            self.release(now);
        }
    }

    /// While starting the topic holds messages even with channels; ending it releases them.
    pub fn set_starting(&mut self, starting: bool, now: u64) {
        self.starting = starting;
        if !starting && !self.paused && !self.channels.is_empty() {
            self.release(now);
        }
    }

    /// Marks the topic deleted, drops what it holds and hands back its channels (to close).
    pub fn close(&mut self) -> Vec<C> {
        self.deleted = true;
        self.drop_held();
        std::mem::take(&mut self.channels).into_values().collect()
    }

    /// Drops the messages held by the topic itself (Go's `/topic/empty`).
    pub fn drop_held(&mut self) {
        self.held.clear();
        self.held_count = 0;
        self.held_start = None;
        self.held_backlog = None;
    }

    /// Takes the messages held in memory (for flushing to disk at shutdown).
    pub fn drain_held(&mut self) -> Vec<MsgRef> {
        self.held_count = 0;
        let mut out = Vec::new();
        for h in std::mem::take(&mut self.held) {
            let b = h.batch();
            out.extend((0..b.len()).map(|idx| MsgRef {
                batch: b.clone(),
                idx,
                attempts: b.initial_attempts(idx),
            }));
        }
        out
    }

    /// Takes the held backlog out, for exporting it at shutdown: the log range `[from, end)`
    /// and how many messages it holds.
    pub fn take_held_backlog(&mut self) -> Option<(u64, u64, u64)> {
        self.held_backlog
            .take()
            .map(|hb| (hb.from, hb.end, hb.count))
    }

    /// Messages held in memory, and the log bytes of the held backlog.
    pub fn held_extent(&self) -> (u64, u64) {
        let backlog = self
            .held_backlog
            .map_or(0, |hb| hb.end.saturating_sub(hb.from));
        (self.held_count, backlog)
    }

    /// Log position of the first held message.
    pub fn held_start(&self) -> Option<u64> {
        self.held_start
    }

    /// Messages held: in memory plus those only in the log (Go's topic `depth`).
    pub fn depth(&self) -> u64 {
        self.held_count + self.backend_depth()
    }

    /// Messages held only in the log (Go's `backend_depth`).
    pub fn backend_depth(&self) -> u64 {
        self.held_backlog.map_or(0, |hb| hb.count)
    }

    /// The most messages that the topic or any channel keeps in memory (`u64::MAX` when one
    /// has an on-disk backlog): after a restart, whether to spill at once.
    pub fn most_queued(&self) -> u64 {
        let own = if self.held_backlog.is_some() {
            u64::MAX
        } else {
            self.held_count
        };
        self.channels
            .values()
            .map(|c| match c.queued() {
                (true, _) => u64::MAX,
                (false, n) => n,
            })
            .fold(own, u64::max)
    }

    /// Whether the topic and every channel hold fewer than `low` messages in memory and
    /// nothing only on disk (the default mode may stop spilling).
    pub fn below(&self, low: u64) -> bool {
        self.held_count < low
            && self.held_backlog.is_none()
            && self.channels.values().all(|c| {
                let (backlog, ready) = c.queued();
                !backlog && ready < low
            })
    }

    /// A channel by name.
    pub fn channel(&self, name: &str) -> Option<&C> {
        self.channels.get(name)
    }

    /// The channels, sorted by name.
    pub fn channels(&self) -> impl Iterator<Item = &C> {
        self.channels.values()
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Whether the topic is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Whether the topic has been deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
}

#[cfg(test)]
mod tests;
