//! One NSQ channel's queue state machine.
//!
//! Inputs: [`ChannelState::put`] (new messages from the topic), [`ChannelState::put_deferred`],
//! [`ChannelState::pop`] (a consumer with RDY credit takes messages; they become in flight),
//! [`ChannelState::fin`], [`ChannelState::req`], [`ChannelState::touch`],
//! [`ChannelState::process_timeouts`] and [`ChannelState::empty`].
//! Output for the driver: [`ChannelState::next_deadline`], the earliest in-flight or
//! deferred deadline, so one timer per channel replaces Go's probabilistic `queueScanLoop`.
//!
//! Semantics follow Go nsqd's `channel.go`:
//! - RDY is a window: a consumer receives while its in-flight count is below its RDY.
//! - A timed-out message goes back to the tail of the ready queue with its attempts kept,
//!   and counts in `timeout_count`; an explicit REQ counts in `requeue_count`.
//! - `REQ id 0` requeues at once, `REQ id N` defers for N ms.
//! - FIN/REQ/TOUCH of a message owned by another consumer fail.
//! - A consumer that disconnects leaves its messages in flight until they time out.
//!
//! In-flight deadlines live in a binary heap with lazy deletion: FIN removes the map entry
//! only, and the heap is compacted when stale entries outnumber live ones, so each message
//! costs O(log n) amortised and memory stays proportional to what is in flight.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::batch::Batch;
use super::e2e::{E2eConfig, E2eWindow};
use super::topic::Held;

/// A reference to one message of a batch, with its delivery count.
#[derive(Debug, Clone)]
pub struct MsgRef {
    /// The batch holding the message.
    pub batch: Arc<Batch>,
    /// Index within the batch.
    pub idx: u32,
    /// Deliveries so far (after [`ChannelState::pop`]: including this one).
    pub attempts: u16,
}

impl PartialEq for MsgRef {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.batch, &o.batch) && self.idx == o.idx && self.attempts == o.attempts
    }
}

impl MsgRef {
    /// The numeric id (in-flight key).
    pub fn key(&self) -> u64 {
        self.batch.id_u64(self.idx)
    }

    /// Position in the topic log (durable mode).
    pub fn log_pos(&self) -> Option<u64> {
        self.batch.log_pos(self.idx)
    }
}

/// The in-flight map, keyed by message id (see [`IdHasher`]).
type InFlightMap = std::collections::HashMap<u64, InFlight, BuildHasherDefault<IdHasher>>;

/// Hashes message ids for the in-flight map so that consecutive ids land in consecutive
/// buckets. A batch's ids are consecutive (`GuidGen`: the low 12 bits are a sequence), and
/// consumers are sent and FIN messages in that order, so FIN walks the table's memory instead
/// of missing the cache once per message: with Fx hashing the bucket load in FIN was 8% of
/// nsqd's CPU while consuming (perf, `scripts/bench-vs-go.sh`).
///
/// The hash keeps the id's 12 sequence bits as the low bits (the bucket index), mixes the rest
/// (time and node) into the middle bits, and copies the sequence's low 7 bits into the top 7
/// (hashbrown's per-bucket tag), so neighbouring ids have distinct tags and a probe compares
/// one key, not sixteen. Ids not made by an NSQ node (`fold_id`) are already well mixed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for u64 keys; FNV-1a so any other key type still hashes correctly.
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        let seq = id & 0xFFF;
        let rest = (id >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = seq | (rest & 0x01FF_FFFF_FFFF_F000) | ((seq & 0x7F) << 57);
    }
}

/// A contiguous run of ready messages from one batch.
#[derive(Debug)]
struct Run {
    batch: Arc<Batch>,
    next: u32,
    end: u32,
    /// `None`: take each message's attempts from the batch (fresh messages).
    attempts: Option<u16>,
}

#[derive(Debug)]
struct InFlight {
    msg: MsgRef,
    client: u64,
    deadline: u64,
    delivered_at: u64,
}

#[derive(Debug)]
struct Deferred {
    due: u64,
    seq: u64,
    msg: MsgRef,
}

impl PartialEq for Deferred {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Deferred {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// Why FIN/REQ/TOUCH failed (Go's error texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InFlightError {
    /// No such message in flight.
    #[error("ID not in flight")]
    NotInFlight,
    /// In flight, but delivered to another consumer.
    #[error("client does not own message")]
    NotOwner,
}

/// Counters exposed in `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelCounters {
    /// Messages the channel received from its topic.
    pub message_count: u64,
    /// Explicit requeues (REQ).
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
    /// Messages dropped because a message with the same id was already in flight.
    pub duplicates_dropped: u64,
    /// Topology-aware consumption: deliveries to same-zone consumers (Go's
    /// `zone_local_msg_count`).
    pub zone_local_msg_count: u64,
    /// Topology-aware consumption: deliveries to same-region consumers.
    pub region_local_msg_count: u64,
    /// Topology-aware consumption: deliveries to the other consumers.
    pub global_msg_count: u64,
    /// Messages dropped instead of delivered because they outlived the ttl (policy).
    pub expired_count: u64,
    /// Messages moved to the dead-letter topic (policy `max_attempts`).
    pub dead_lettered_count: u64,
    /// Oldest ready messages dropped to stay within `max_depth` (`overflow: drop_oldest`).
    pub dropped_count: u64,
}

/// A subscribed consumer's share of the channel.
#[derive(Debug, Default, Clone, Copy)]
struct Consumer {
    /// Messages in flight to it.
    in_flight: u32,
    /// It had RDY credit and found the ready queue empty (it is queued in `idle`).
    idle: bool,
    /// Topology-aware consumption only: how local it is to this nsqd ([`LOCAL_ZONE`],
    /// [`LOCAL_REGION`], 0 for anyone else).
    local: u8,
    /// Topology-aware consumption only: the RDY it last pulled with (0 after RDY 0 / CLS), so
    /// others can tell whether it still has credit.
    rdy: u64,
}

/// [`ChannelState::set_locality`]: the consumer identified the zone of this nsqd's
/// `--topology-zone`.
pub const LOCAL_ZONE: u8 = 2;
/// [`ChannelState::set_locality`]: the consumer identified the region of this nsqd's
/// `--topology-region` (and not its zone).
pub const LOCAL_REGION: u8 = 1;

/// The queue state of one channel.
#[derive(Debug, Default)]
pub struct ChannelState {
    ready: VecDeque<Run>,
    ready_len: u64,
    in_flight: InFlightMap,
    timeouts: BinaryHeap<Reverse<(u64, u64)>>,
    deferred: BinaryHeap<Deferred>,
    deferred_seq: u64,
    consumers: FxHashMap<u64, Consumer>,
    /// Consumers that found nothing to take while they had credit, oldest first: a new
    /// message wakes only as many of them as it can feed ([`ChannelState::take_idle`]).
    /// Entries whose consumer is gone or no longer idle are skipped lazily.
    idle: VecDeque<u64>,
    /// Paused channels deliver nothing.
    paused: bool,
    /// When set, `put` drops messages beyond this ready depth (ephemeral channels, which have
    /// no disk queue to overflow into, as in Go).
    drop_beyond: Option<u64>,
    /// Counters for `/stats`.
    counters: ChannelCounters,
    /// Durable mode: most ready messages kept in memory; beyond it new messages stay only in
    /// the topic log and are read back as the consumers catch up.
    mem_window: Option<u64>,
    /// Durable mode: messages from this log position on are in the log but not in memory.
    backlog: Option<u64>,
    /// How many messages the backlog holds.
    backlog_count: u64,
    /// Where the backlog ends: just past the last record that joined it. Records of the log
    /// past this point are not this channel's yet (e.g. held by a paused topic), so a read
    /// of the backlog stops here rather than at the log's end.
    backlog_end: u64,
    /// Positions inside the backlog that must not be read back (acked before a restart, or
    /// already restored as deferred).
    backlog_skip: Option<nsq_store::AckSet>,
    /// A backlog read is under way.
    refilling: bool,
    /// `--enable-experiment=topology-aware-consumption`: set by the first
    /// [`ChannelState::set_locality`]; off, nothing below costs more than this one test in
    /// [`ChannelState::pop`].
    topology: bool,
    /// Topology mode: a more local consumer lost its credit (or left) while messages were
    /// ready, so less local ones that were held back must be woken
    /// ([`ChannelState::take_topology_wake`]).
    topology_wake: bool,
    /// `--e2e-processing-latency-percentile`: FIN latencies over the window; `None` (one
    /// test per FIN batch) when not asked for.
    e2e: Option<Box<E2eWindow>>,
    /// Policy `max_attempts` with a dead-letter topic (0: none): a message delivered this
    /// many times is not requeued after a REQ or timeout but set aside in `dead`.
    max_attempts: u16,
    /// Messages set aside for the dead-letter topic, for the shell to publish
    /// ([`ChannelState::take_dead_letters`]); out of flight, not ready.
    dead: Vec<MsgRef>,
    /// Taken for publishing and not yet confirmed, by key: still this channel's (their log
    /// positions stay unacked and a shutdown exports them) until the dead-letter topic has
    /// them.
    dead_sent: FxHashMap<u64, MsgRef>,
}

impl ChannelState {
    /// An empty channel.
    pub fn new() -> ChannelState {
        ChannelState::default()
    }

    /// An empty channel with its limits: `drop_beyond` drops `put` messages beyond that ready
    /// depth (ephemeral channels: no disk queue to overflow into, as in Go); `mem_window` keeps
    /// at most that many ready messages of a logged topic in memory, the rest as the backlog.
    pub fn with_limits(
        paused: bool,
        drop_beyond: Option<u64>,
        mem_window: Option<u64>,
    ) -> ChannelState {
        ChannelState {
            paused,
            drop_beyond,
            mem_window,
            ..ChannelState::default()
        }
    }

    /// Starts tracking end-to-end latency (`now`: wall-clock ns).
    pub fn enable_e2e(&mut self, cfg: &E2eConfig, now: i64) {
        self.e2e = Some(Box::new(E2eWindow::new(cfg, now)));
    }

    /// Whether end-to-end latency is tracked (so the caller reads the clock only then).
    #[inline]
    pub fn tracks_e2e(&self) -> bool {
        self.e2e.is_some()
    }

    /// `n` FINs of messages published at `timestamp` happened at `now` (wall-clock ns).
    #[inline]
    pub fn record_e2e(&mut self, now: i64, timestamp: i64, n: u64) {
        if let Some(w) = &mut self.e2e {
            w.record_n(now, timestamp, n);
        }
    }

    /// The latency window's two halves merged, as of `now`; `None` when not tracked.
    pub fn e2e_sketch(&mut self, now: i64) -> Option<sketches_ddsketch::DDSketch> {
        self.e2e.as_mut().map(|w| w.merged(now))
    }

    /// Whether delivery is paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Pauses or resumes delivery (`pop` hands out nothing while paused).
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Counters for `/stats`.
    pub fn counters(&self) -> ChannelCounters {
        self.counters
    }

    /// Most ready messages of a logged topic kept in memory (`None`: no limit, the topic
    /// cannot log).
    pub fn mem_window(&self) -> Option<u64> {
        self.mem_window
    }

    /// Where the on-disk backlog starts, if there is one.
    pub fn backlog_start(&self) -> Option<u64> {
        self.backlog
    }

    /// Positions inside the backlog that a read must skip.
    pub fn backlog_skip(&self) -> Option<&nsq_store::AckSet> {
        self.backlog_skip.as_ref()
    }

    /// Whether a backlog read must skip the record at `pos`.
    pub fn skips(&self, pos: u64) -> bool {
        self.backlog_skip.as_ref().is_some_and(|s| s.contains(pos))
    }

    /// Restart: the backlog read must skip these positions (acked before the restart, or
    /// restored as deferred).
    pub fn set_backlog_skip(&mut self, skip: nsq_store::AckSet) {
        self.backlog_skip = Some(skip);
    }

    /// Restart: a ready record at `pos` of a log ending at `log_end` is being replayed, with
    /// `pending` ready records already chosen for memory but not yet restored. Returns `true`
    /// when it fits in the memory window (the caller restores it with `restore_one`);
    /// otherwise it joins the backlog (counted, left in the log) and `false` is returned.
    pub fn admit_replayed(&mut self, pos: u64, log_end: u64, pending: u64) -> bool {
        let full = self
            .mem_window
            .is_some_and(|w| self.backlog.is_some() || self.ready_len + pending >= w);
        if !full {
            return true;
        }
        self.backlog.get_or_insert(pos);
        self.backlog_end = log_end;
        self.backlog_count += 1;
        false
    }

    /// Takes a batch from the topic at time `now`; consumers to wake are appended to
    /// `woken` (as many idle ones as the batch can feed; one for a batch that stayed in the
    /// log, whose pull starts reading it back). Returns the due time when the batch is
    /// deferred, for the channel's timer.
    pub fn take_from_topic(&mut self, held: &Held, now: u64, woken: &mut Vec<u64>) -> Option<u64> {
        match held {
            Held::Ready(b) => {
                let n = if self.put_windowed(b.clone(), 0, b.len()) {
                    b.len() as u64
                } else {
                    1
                };
                self.take_idle(n, woken);
                None
            }
            Held::Deferred(b, delay) => {
                let due = now + delay;
                for idx in 0..b.len() {
                    if let Some(p) = b.log_pos(idx) {
                        self.skip_in_backlog(p);
                    }
                    let msg = MsgRef {
                        batch: b.clone(),
                        idx,
                        attempts: 0,
                    };
                    self.put_deferred(msg, due);
                }
                Some(due)
            }
        }
    }

    /// A backlog read failed: the next `start_refill` may try again.
    pub fn refill_failed(&mut self) {
        self.refilling = false;
    }

    /// Messages waiting to be delivered: in memory plus the on-disk backlog (Go's `depth`).
    pub fn depth(&self) -> u64 {
        self.ready_len + self.backlog_count
    }

    /// Ready messages in memory.
    pub fn ready_count(&self) -> u64 {
        self.ready_len
    }

    /// Messages waiting only on disk (Go's `backend_depth`).
    pub fn backend_depth(&self) -> u64 {
        self.backlog_count
    }

    /// Durable mode: appends messages `start..end` of a logged batch, or leaves them in the
    /// log when the memory window is full (or a backlog exists, to keep log order).
    /// Returns whether they went to memory.
    /// A batch that is not in the log (default mode while the topic is not spilling) always
    /// goes to memory.
    pub fn put_windowed(&mut self, batch: Arc<Batch>, start: u32, end: u32) -> bool {
        if let Some(win) = self.mem_window {
            let logged = batch.log_pos(start).is_some();
            if logged && (self.backlog.is_some() || self.ready_len >= win) {
                if self.backlog.is_none() {
                    self.backlog = batch.log_pos(start);
                }
                if let Some(e) = batch.log_end(end - 1) {
                    self.backlog_end = self.backlog_end.max(e);
                }
                let n = (end - start) as u64;
                self.backlog_count += n;
                self.counters.message_count += n;
                return false;
            }
        }
        self.put(batch, start, end);
        true
    }

    /// Whether the backlog should be read into memory now (and marks the read as started):
    /// the range to read.
    pub fn start_refill(&mut self) -> Option<(u64, u64)> {
        let win = self.mem_window?;
        let from = self.backlog?;
        if self.refilling || self.ready_len > win / 2 {
            return None;
        }
        self.refilling = true;
        Some((from, self.backlog_end))
    }

    /// Gives the channel messages that are only in the log, in `start..end`, except the
    /// positions in `skip` (which it gets otherwise): a topic's held backlog, released to
    /// its channels. `count` messages.
    pub fn add_backlog(&mut self, start: u64, end: u64, count: u64, skip: &[u64]) {
        self.counters.message_count += count;
        self.backlog_count += count;
        self.backlog = Some(self.backlog.map_or(start, |b| b.min(start)));
        self.backlog_end = self.backlog_end.max(end);
        if !skip.is_empty() {
            let set = self.backlog_skip.get_or_insert_with(nsq_store::AckSet::new);
            for &p in skip {
                set.insert(p);
            }
        }
    }

    /// A message that is also in this channel's backlog range is being delivered another
    /// way (a deferred publish): the backlog read must skip it.
    pub fn skip_in_backlog(&mut self, pos: u64) {
        // Not bounded by `backlog_end`: later batches joining the backlog extend the range
        // past this position.
        if self.backlog.is_some_and(|b| pos >= b) {
            self.backlog_skip
                .get_or_insert_with(nsq_store::AckSet::new)
                .insert(pos);
        }
    }

    /// Ends a backlog read: `read` messages left the backlog (added with
    /// [`ChannelState::restore_one`] or as deferred) and reading stopped at `next`. Compared
    /// with the backlog's end under the same lock that `put_windowed` extends it
    /// under, so a batch that joined the backlog meanwhile is read next time, never missed.
    pub fn finish_refill(&mut self, read: u64, next: u64) {
        self.refilling = false;
        self.backlog_count = self.backlog_count.saturating_sub(read);
        if next >= self.backlog_end {
            self.backlog = None;
            self.backlog_count = 0;
            self.backlog_skip = None;
        } else {
            self.backlog = Some(next);
            // What lies below the read point can no longer be read: keep the set small.
            if let Some(skip) = &mut self.backlog_skip {
                skip.remove_below(next);
            }
        }
    }

    /// Messages in flight.
    pub fn in_flight_count(&self) -> u64 {
        self.in_flight.len() as u64
    }

    /// Messages deferred.
    pub fn deferred_count(&self) -> u64 {
        self.deferred.len() as u64
    }

    /// In-flight count of one consumer.
    pub fn consumer_in_flight(&self, client: u64) -> u32 {
        self.consumers.get(&client).map_or(0, |c| c.in_flight)
    }

    /// Number of subscribed consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Registers a consumer.
    pub fn add_consumer(&mut self, client: u64) {
        self.consumers.entry(client).or_default();
    }

    /// Unregisters a consumer. Its in-flight messages stay until they time out (Go behaviour).
    pub fn remove_consumer(&mut self, client: u64) {
        if self.topology {
            self.lost_credit(client);
        }
        self.consumers.remove(&client);
    }

    /// Appends messages `start..end` of a fresh batch. Returns how many were dropped
    /// because of `drop_beyond`.
    pub fn put(&mut self, batch: Arc<Batch>, start: u32, end: u32) -> u32 {
        let mut end = end;
        let mut dropped = 0;
        if let Some(limit) = self.drop_beyond {
            let room = limit.saturating_sub(self.ready_len);
            let n = (end - start) as u64;
            if n > room {
                dropped = (n - room) as u32;
                end -= dropped;
            }
        }
        let n = end - start;
        self.counters.message_count += n as u64;
        if n > 0 {
            self.ready_len += n as u64;
            self.ready.push_back(Run {
                batch,
                next: start,
                end,
                attempts: None,
            });
        }
        dropped
    }

    /// Appends the first `n` messages of a batch restored from disk. Unlike
    /// [`ChannelState::put`] this does not count them as new (`message_count` restarts at 0
    /// after a restart, as in Go).
    pub fn restore(&mut self, batch: Arc<Batch>, n: u32) {
        if n > 0 {
            self.ready_len += n as u64;
            self.ready.push_back(Run {
                batch,
                next: 0,
                end: n,
                attempts: None,
            });
        }
    }

    /// Adds a message that becomes ready at `due` (DPUB).
    pub fn put_deferred(&mut self, msg: MsgRef, due: u64) {
        self.counters.message_count += 1;
        self.push_deferred(msg, due);
    }

    fn push_deferred(&mut self, msg: MsgRef, due: u64) {
        self.deferred_seq += 1;
        self.deferred.push(Deferred {
            due,
            seq: self.deferred_seq,
            msg,
        });
    }

    fn requeue_ready(&mut self, msg: MsgRef) {
        self.ready_len += 1;
        self.ready.push_back(Run {
            end: msg.idx + 1,
            next: msg.idx,
            batch: msg.batch,
            attempts: Some(msg.attempts),
        });
    }

    /// How many messages `client` may take now with the given RDY.
    pub fn credit(&self, client: u64, rdy: u64) -> u64 {
        if self.paused {
            return 0;
        }
        rdy.saturating_sub(self.consumer_in_flight(client) as u64)
    }

    /// Moves up to `max` ready messages (bounded by RDY credit) in flight for `client`,
    /// appending them to `out` with attempts already incremented. A non-zero `sample_rate`
    /// (1..=99) discards messages the sampler rejects, as Go does.
    ///
    /// With topology-aware consumption on ([`ChannelState::set_locality`]) a consumer takes
    /// nothing while a more local one has credit; see [`ChannelState::pop_by_locality`].
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn pop(
        &mut self,
        client: u64,
        rdy: u64,
        max: usize,
        msg_timeout: u64,
        now: u64,
        sample: Option<(u8, &mut u64)>,
        out: &mut Vec<MsgRef>,
    ) -> usize {
        // The only cost of the experiment when it is off: this one test per pull.
        if self.topology {
            return self.pop_by_locality(client, rdy, max, msg_timeout, now, sample, out);
        }
        self.pop_any(client, rdy, max, msg_timeout, now, sample, out)
    }

    /// Topology-aware [`ChannelState::pop`]: records `client`'s RDY; while a more local
    /// consumer has credit and messages are ready, `client` takes nothing and waits in the
    /// idle queue (a publish wakes the more local idle consumers first; when they run out of
    /// credit or leave, [`ChannelState::take_topology_wake`] says to wake everyone).
    ///
    /// Go (nsqd/channel.go `put`, after v1.3.0) offers each message to an unbuffered
    /// zone-local channel, then zone- or region-local, then the memory channel, so whichever
    /// pump of the best tier is waiting in `select` at that instant wins. Here "waiting" is
    /// "has credit": a local consumer that is busy writing keeps its claim.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn pop_by_locality(
        &mut self,
        client: u64,
        rdy: u64,
        max: usize,
        msg_timeout: u64,
        now: u64,
        sample: Option<(u8, &mut u64)>,
        out: &mut Vec<MsgRef>,
    ) -> usize {
        let Some(me) = self.consumers.get_mut(&client) else {
            return self.pop_any(client, rdy, max, msg_timeout, now, sample, out);
        };
        let had_credit = (me.in_flight as u64) < me.rdy;
        me.rdy = rdy;
        let local = me.local;
        let has_credit = (me.in_flight as u64) < rdy;
        if has_credit && !self.paused && self.ready_len > 0 && local < LOCAL_ZONE {
            let outranked = self
                .consumers
                .values()
                .any(|c| c.local > local && (c.in_flight as u64) < c.rdy);
            if outranked {
                self.set_idle(client, true);
                return 0;
            }
        }
        let n = self.pop_any(client, rdy, max, msg_timeout, now, sample, out);
        let counter = match local {
            LOCAL_ZONE => &mut self.counters.zone_local_msg_count,
            LOCAL_REGION => &mut self.counters.region_local_msg_count,
            _ => &mut self.counters.global_msg_count,
        };
        *counter += n as u64;
        let left = self.consumer_in_flight(client) as u64;
        if local > 0 && (has_credit || had_credit) && left >= rdy && self.ready_len > 0 {
            // Its credit is used up (or its RDY lowered) with messages left: the less local
            // ones may take them.
            self.topology_wake = true;
        }
        n
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn pop_any(
        &mut self,
        client: u64,
        rdy: u64,
        max: usize,
        msg_timeout: u64,
        now: u64,
        sample: Option<(u8, &mut u64)>,
        out: &mut Vec<MsgRef>,
    ) -> usize {
        let credit = self.credit(client, rdy).min(max as u64) as usize;
        if credit == 0 || self.ready_len == 0 || !self.consumers.contains_key(&client) {
            self.set_idle(client, credit > 0 && self.ready_len == 0);
            return 0;
        }
        let mut sample = sample;
        let deadline = now + msg_timeout;
        let mut taken = 0;
        while taken < credit {
            let Some(run) = self.ready.front_mut() else {
                break;
            };
            let idx = run.next;
            run.next += 1;
            let attempts = run
                .attempts
                .unwrap_or_else(|| run.batch.initial_attempts(idx));
            let batch = if run.next >= run.end {
                let run = self.ready.pop_front().expect("front exists");
                run.batch
            } else {
                run.batch.clone()
            };
            self.ready_len -= 1;
            if let Some((rate, rng)) = sample.as_mut() {
                if xorshift(rng) % 100 > *rate as u64 {
                    continue;
                }
            }
            let msg = MsgRef {
                batch,
                idx,
                attempts: attempts.wrapping_add(1),
            };
            let key = msg.key();
            // One probe of the in-flight map per delivery (`entry`, not `contains_key` then
            // `insert`): the second probe was a third of this function's time (perf).
            match self.in_flight.entry(key) {
                Entry::Occupied(_) => {
                    // The same message twice (a Go data directory can hold a record in both
                    // the topic's and the channel's queue after a crash). Go would send both
                    // and fail the second FIN; delivering it once is enough and keeps RDY
                    // accounting right.
                    self.counters.duplicates_dropped += 1;
                    continue;
                }
                Entry::Vacant(slot) => {
                    out.push(msg.clone());
                    slot.insert(InFlight {
                        msg,
                        client,
                        deadline,
                        delivered_at: now,
                    });
                }
            }
            self.timeouts.push(Reverse((deadline, key)));
            taken += 1;
        }
        let c = self.consumers.get_mut(&client).expect("checked above");
        c.in_flight += taken as u32;
        let idle = self.ready_len == 0 && (c.in_flight as u64) < rdy;
        self.set_idle(client, idle);
        taken
    }

    /// Topology-aware consumption (`--enable-experiment=topology-aware-consumption`): how
    /// local `client` is ([`LOCAL_ZONE`], [`LOCAL_REGION`] or 0). From then on this channel
    /// gives its messages to the most local consumers that have credit; the others take
    /// messages only while none of those has any.
    pub fn set_locality(&mut self, client: u64, local: u8) {
        self.topology = true;
        if let Some(c) = self.consumers.get_mut(&client) {
            c.local = local;
        }
    }

    /// Topology mode: whether less local consumers must be woken because a more local one
    /// lost its credit or left while messages were ready (cleared by the call).
    #[inline]
    pub fn take_topology_wake(&mut self) -> bool {
        if self.topology_wake {
            self.topology_wake = false;
            return true;
        }
        false
    }

    /// Topology mode: `client` will take nothing until it sends RDY again.
    fn lost_credit(&mut self, client: u64) {
        if let Some(c) = self.consumers.get_mut(&client) {
            let had = c.local > 0 && (c.in_flight as u64) < c.rdy;
            c.rdy = 0;
            if had && self.ready_len > 0 {
                self.topology_wake = true;
            }
        }
    }

    /// Records whether `client` waits for new messages with credit to spare.
    fn set_idle(&mut self, client: u64, idle: bool) {
        let Some(c) = self.consumers.get_mut(&client) else {
            return;
        };
        if c.idle == idle {
            return;
        }
        c.idle = idle;
        if idle {
            self.idle.push_back(client);
            if self.idle.len() > 2 * self.consumers.len() + 64 {
                self.compact_idle();
            }
        }
    }

    /// Drops stale and repeated entries from the idle queue.
    fn compact_idle(&mut self) {
        let mut seen = rustc_hash::FxHashSet::default();
        let consumers = &self.consumers;
        self.idle
            .retain(|id| consumers.get(id).is_some_and(|c| c.idle) && seen.insert(*id));
    }

    /// The consumer will not take messages until it asks again (RDY 0, CLS): a new message
    /// must not spend its wake-up on it.
    pub fn not_idle(&mut self, client: u64) {
        if self.topology {
            self.lost_credit(client);
        }
        self.set_idle(client, false);
    }

    /// Takes up to `n` idle consumers, oldest first, to be woken for `n` new ready messages
    /// (none while paused). Each is idle no more until it finds the queue empty again.
    pub fn take_idle(&mut self, n: u64, out: &mut Vec<u64>) {
        if self.paused {
            return;
        }
        if self.topology {
            return self.take_idle_by_locality(n, out);
        }
        while (out.len() as u64) < n {
            let Some(id) = self.idle.pop_front() else {
                break;
            };
            if let Some(c) = self.consumers.get_mut(&id) {
                if c.idle {
                    c.idle = false;
                    out.push(id);
                }
            }
        }
    }

    /// Topology mode's [`ChannelState::take_idle`]: same-zone idle consumers first, then
    /// same-region ones, then the others, each group oldest first.
    #[cold]
    fn take_idle_by_locality(&mut self, n: u64, out: &mut Vec<u64>) {
        for local in [LOCAL_ZONE, LOCAL_REGION, 0] {
            for &id in &self.idle {
                if out.len() as u64 >= n {
                    break;
                }
                if let Some(c) = self.consumers.get_mut(&id) {
                    if c.idle && c.local == local {
                        c.idle = false;
                        out.push(id);
                    }
                }
            }
        }
        let consumers = &self.consumers;
        self.idle
            .retain(|id| consumers.get(id).is_some_and(|c| c.idle));
    }

    fn take_in_flight(&mut self, client: u64, key: u64) -> Result<InFlight, InFlightError> {
        // One probe of the map (as in `pop`).
        let f = match self.in_flight.entry(key) {
            Entry::Vacant(_) => return Err(InFlightError::NotInFlight),
            Entry::Occupied(f) if f.get().client != client => return Err(InFlightError::NotOwner),
            Entry::Occupied(f) => f.remove(),
        };
        if let Some(c) = self.consumers.get_mut(&client) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        self.maybe_compact();
        Ok(f)
    }

    /// FIN: the consumer is done with the message.
    /// Returns the finished message (its log position is what a durable channel acks).
    pub fn fin(&mut self, client: u64, key: u64) -> Result<MsgRef, InFlightError> {
        self.take_in_flight(client, key).map(|f| f.msg)
    }

    /// `overflow: drop_oldest`: drops up to `n` of the oldest ready messages in memory (the
    /// head of the queue), counted in `dropped_count`. Returns their log positions, for the
    /// caller to ack in the journal as FINs. A disk backlog (beyond the memory window) is
    /// newer than the memory head and is left alone.
    pub fn drop_oldest(&mut self, mut n: u64) -> Vec<u64> {
        let mut acked = Vec::new();
        while n > 0 {
            let Some(run) = self.ready.front_mut() else {
                break;
            };
            let take = u64::from(run.end - run.next).min(n) as u32;
            acked.extend((run.next..run.next + take).filter_map(|i| run.batch.log_pos(i)));
            run.next += take;
            n -= u64::from(take);
            self.ready_len -= u64::from(take);
            self.counters.dropped_count += u64::from(take);
            if run.next == run.end {
                self.ready.pop_front();
            }
        }
        acked
    }

    /// Sets `max_attempts` (0: none; only with a dead-letter topic, which the shell owns).
    pub fn set_max_attempts(&mut self, n: u16) {
        self.max_attempts = n;
    }

    /// Whether a message taken out of flight has had all its attempts.
    fn exhausted(&self, m: &MsgRef) -> bool {
        self.max_attempts != 0 && m.attempts >= self.max_attempts
    }

    /// The messages a REQ or a timeout set aside for the dead-letter topic since the last
    /// call. The caller publishes them there, then calls [`ChannelState::dead_lettered`]
    /// (or [`ChannelState::dead_letter_failed`] to keep them here).
    pub fn take_dead_letters(&mut self) -> Vec<MsgRef> {
        let out = std::mem::take(&mut self.dead);
        for m in &out {
            self.dead_sent.insert(m.key(), m.clone());
        }
        out
    }

    /// These messages (keys) reached the dead-letter topic: they are no longer this
    /// channel's. Returns their log positions, to ack in the journal.
    pub fn dead_lettered(&mut self, keys: &[u64]) -> Vec<u64> {
        let mut acked = Vec::new();
        for k in keys {
            if let Some(m) = self.dead_sent.remove(k) {
                self.counters.dead_lettered_count += 1;
                acked.extend(m.log_pos());
            }
        }
        acked
    }

    /// The dead-letter topic refused them: they go back to the ready queue (nothing lost;
    /// the next REQ or timeout tries again).
    pub fn dead_letter_failed(&mut self, keys: &[u64]) {
        for k in keys {
            if let Some(m) = self.dead_sent.remove(k) {
                self.requeue_ready(m);
            }
        }
    }

    /// A message [`ChannelState::pop`] just gave `client` outlived the ttl: it is removed as
    /// a FIN would remove it (the caller journals its log position) and counted in
    /// `expired_count` instead of being delivered.
    pub fn expire(&mut self, client: u64, key: u64) -> Option<MsgRef> {
        let m = self.fin(client, key).ok()?;
        self.counters.expired_count += 1;
        Some(m)
    }

    /// REQ: put the message back now (`delay == 0`) or after `delay` ns. Returns the
    /// requeued message (a durable channel journals a delayed one).
    pub fn req(
        &mut self,
        client: u64,
        key: u64,
        delay: u64,
        now: u64,
    ) -> Result<MsgRef, InFlightError> {
        let f = self.take_in_flight(client, key)?;
        let msg = f.msg.clone();
        if self.exhausted(&msg) {
            self.dead.push(f.msg);
            return Ok(msg);
        }
        self.counters.requeue_count += 1;
        if delay == 0 {
            self.requeue_ready(f.msg);
        } else {
            self.push_deferred(f.msg, now + delay);
        }
        Ok(msg)
    }

    /// Appends one message restored from disk (not counted as new).
    pub fn restore_one(&mut self, msg: MsgRef) {
        self.ready_len += 1;
        self.ready.push_back(Run {
            end: msg.idx + 1,
            next: msg.idx,
            batch: msg.batch,
            attempts: Some(msg.attempts),
        });
    }

    /// Deferred messages as `(log position, due time, attempts)` (journal compaction).
    pub fn deferred_entries(&self) -> Vec<(u64, u64, u16)> {
        self.deferred
            .iter()
            .filter_map(|d| d.msg.log_pos().map(|p| (p, d.due, d.msg.attempts)))
            .collect()
    }

    /// Adds a message restored from disk that becomes ready at `due` (not counted as new).
    pub fn restore_deferred(&mut self, msg: MsgRef, due: u64) {
        self.push_deferred(msg, due);
    }

    /// Log positions of every message the channel still owes (ready, in flight, deferred),
    /// for log retention and journal compaction. O(messages held).
    pub fn unacked_positions(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(
            self.ready_len as usize + self.in_flight.len() + self.deferred.len(),
        );
        for run in &self.ready {
            for idx in run.next..run.end {
                if let Some(p) = run.batch.log_pos(idx) {
                    out.push(p);
                }
            }
        }
        out.extend(self.backlog);
        out.extend(self.in_flight.values().filter_map(|f| f.msg.log_pos()));
        out.extend(self.deferred.iter().filter_map(|d| d.msg.log_pos()));
        out.extend(self.dead.iter().filter_map(MsgRef::log_pos));
        out.extend(self.dead_sent.values().filter_map(MsgRef::log_pos));
        out
    }

    /// TOUCH: extend the deadline to `now + timeout`, but never beyond
    /// `delivery + max_timeout` (Go: `TouchMessage`).
    pub fn touch(
        &mut self,
        client: u64,
        key: u64,
        timeout: u64,
        max_timeout: u64,
        now: u64,
    ) -> Result<(), InFlightError> {
        let f = match self.in_flight.get_mut(&key) {
            None => return Err(InFlightError::NotInFlight),
            Some(f) if f.client != client => return Err(InFlightError::NotOwner),
            Some(f) => f,
        };
        let mut deadline = now + timeout;
        if deadline - f.delivered_at >= max_timeout {
            deadline = f.delivered_at + max_timeout;
        }
        f.deadline = deadline;
        self.timeouts.push(Reverse((deadline, key)));
        Ok(())
    }

    /// Requeues timed-out in-flight messages and releases due deferred ones.
    /// Returns how many messages became ready.
    pub fn process_timeouts(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&Reverse((deadline, key))) = self.timeouts.peek() {
            if deadline > now {
                break;
            }
            self.timeouts.pop();
            let live = matches!(self.in_flight.get(&key), Some(f) if f.deadline == deadline);
            if !live {
                continue;
            }
            let f = self.in_flight.remove(&key).expect("checked above");
            if let Some(c) = self.consumers.get_mut(&f.client) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
            self.counters.timeout_count += 1;
            if self.exhausted(&f.msg) {
                self.dead.push(f.msg);
                continue;
            }
            self.requeue_ready(f.msg);
            n += 1;
        }
        while let Some(d) = self.deferred.peek() {
            if d.due > now {
                break;
            }
            let d = self.deferred.pop().expect("peeked");
            self.requeue_ready(d.msg);
            n += 1;
        }
        n
    }

    /// The earliest time [`ChannelState::process_timeouts`] has work to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let a = self.timeouts.peek().map(|r| r.0 .0);
        let b = self.deferred.peek().map(|d| d.due);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops every ready, in-flight and deferred message (HTTP `/channel/empty`).
    /// Consumers' in-flight counts go to zero, as Go's `client.Empty()` does.
    pub fn empty(&mut self) {
        self.ready.clear();
        self.ready_len = 0;
        self.backlog = None;
        self.backlog_count = 0;
        self.backlog_skip = None;
        self.in_flight.clear();
        self.timeouts.clear();
        self.deferred.clear();
        self.dead.clear();
        self.dead_sent.clear();
        for c in self.consumers.values_mut() {
            c.in_flight = 0;
        }
    }

    /// Messages in memory (ready, in flight, deferred) and the log bytes of the on-disk
    /// backlog (for sizing an export).
    pub fn extent(&self) -> (u64, u64) {
        let backlog = self
            .backlog
            .map_or(0, |from| self.backlog_end.saturating_sub(from));
        (
            self.ready_len + self.in_flight.len() as u64 + self.deferred.len() as u64,
            backlog,
        )
    }

    /// Takes the on-disk backlog out, for exporting it at shutdown: the log range
    /// `[from, end)`, the positions in it that are not this channel's to deliver, and how many
    /// messages it holds. Nothing reads it back afterwards (a refill under way sees no backlog).
    pub fn take_backlog(&mut self) -> Option<(u64, u64, Option<nsq_store::AckSet>, u64)> {
        let from = self.backlog.take()?;
        let count = std::mem::take(&mut self.backlog_count);
        Some((from, self.backlog_end, self.backlog_skip.take(), count))
    }

    /// Takes every message out (ready, then in flight, then deferred), for flushing to disk
    /// at shutdown. Deferral and in-flight status are lost, as in Go's `Channel.flush`.
    pub fn drain_all(&mut self) -> Vec<MsgRef> {
        let mut out = Vec::with_capacity((self.ready_len as usize) + self.in_flight.len());
        for run in self.ready.drain(..) {
            for idx in run.next..run.end {
                let attempts = run
                    .attempts
                    .unwrap_or_else(|| run.batch.initial_attempts(idx));
                out.push(MsgRef {
                    batch: run.batch.clone(),
                    idx,
                    attempts,
                });
            }
        }
        self.ready_len = 0;
        out.extend(self.in_flight.drain().map(|(_, f)| f.msg));
        self.timeouts.clear();
        out.extend(self.deferred.drain().map(|d| d.msg));
        out.append(&mut self.dead);
        out.extend(self.dead_sent.drain().map(|(_, m)| m));
        for c in self.consumers.values_mut() {
            c.in_flight = 0;
        }
        out
    }

    /// Rebuilds the deadline heap when stale entries (FINed or touched messages) dominate,
    /// keeping memory proportional to the in-flight set.
    fn maybe_compact(&mut self) {
        if self.timeouts.len() <= 2 * self.in_flight.len() + 1024 {
            return;
        }
        let live: Vec<Reverse<(u64, u64)>> = self
            .in_flight
            .iter()
            .map(|(&k, f)| Reverse((f.deadline, k)))
            .collect();
        self.timeouts = BinaryHeap::from(live);
    }

    /// Size of the deadline heap (for tests of compaction).
    pub fn timeout_heap_len(&self) -> usize {
        self.timeouts.len()
    }
}

fn xorshift(s: &mut u64) -> u64 {
    let mut x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    x
}

#[cfg(test)]
mod tests;
