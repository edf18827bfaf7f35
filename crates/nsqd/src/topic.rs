//! A topic: the shell around its [`TopicState`] (channels, held messages), its id generator
//! and its log.
//!
//! Publishing copies the bodies once into a [`Batch`] and hands an `Arc` of it to every
//! channel (Go copies the message struct per channel in `topic.messagePump`; we share the
//! bodies). While a topic has no channels, or is paused, batches are held by the topic and
//! handed to the first channel created (or to all channels on unpause), as Go does; those
//! decisions are [`TopicState`]'s, unit-tested there. This shell adds what needs I/O or
//! threads: the log append (durable and spilling mode), opening the log and creating
//! journals off the lock, and waking consumers.
//!
//! Lock order: topic `inner`, then a channel's `state`. Nothing is awaited under either.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::channel::Channel;
use crate::clock::{unix_nanos, Clock};
use crate::durable::{Store, TopicStore};
use crate::persist::DataDir;
use crate::state::batch::Batch;
use crate::state::channel::MsgRef;
use crate::state::dedup::{DedupFilter, Key, Keyer};
use crate::state::e2e::E2eConfig;
use crate::state::guid::GuidGen;
use crate::state::policy::TopicPolicy;
use crate::state::topic::{ChannelSink, Held, TopicState};

/// Publishing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is being deleted or the daemon is shutting down.
    #[error("exiting")]
    Exiting,
    /// The topic log could not be written (durable mode), e.g. a full disk.
    #[error("{0}")]
    Disk(String),
    /// A replicated topic's publish was not committed by a majority (`crate::replica`).
    #[error("{0}")]
    Replication(String),
    /// The publish would take a channel (or the channel-less topic) past the topic's
    /// `max_depth` (policy, `overflow: reject`); nothing of it was queued.
    #[error("max_depth {limit} reached: {what} holds {depth}, {count} more would exceed it")]
    MaxDepth {
        /// The limit.
        limit: u64,
        /// `channel NAME` or `topic NAME`.
        what: String,
        /// Its ready depth now.
        depth: u64,
        /// Messages in the refused publish.
        count: u64,
    },
}

/// The outcome of a publish that was accepted.
pub enum Published {
    /// The messages are queued.
    Done,
    /// Durable mode: the messages are on their way to the log; the receiver says when they
    /// are written (and synced, with `--sync-every=1`) or that writing failed.
    Pending(tokio::sync::oneshot::Receiver<Result<(), PublishError>>),
}

impl Published {
    /// Waits until the publish is acknowledged.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self {
            Published::Done => Ok(()),
            Published::Pending(rx) => rx
                .await
                .unwrap_or_else(|_| Err(PublishError::Disk("log writer stopped".into()))),
        }
    }
}

/// One topic.
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Whether the name ends in `#ephemeral`.
    pub ephemeral: bool,
    /// A replicated topic's local copy on its leader (`crate::replica`): memory-only, not in
    /// `nsqd.dat` nor exported (the Raft log is its storage).
    pub replicated: bool,
    /// The fan-out state (channels, held messages); see [`TopicState`].
    inner: Mutex<TopicState<Arc<Channel>>>,
    guid: Mutex<GuidGen>,
    /// Mirrors `inner.deleted` so connections can check their cached handle without a lock.
    deleted: AtomicBool,
    message_count: AtomicU64,
    message_bytes: AtomicU64,
    mem_queue_size: i64,
    clock: Clock,
    data: Option<Arc<DataDir>>,
    /// The log writer (non-ephemeral topics with a data directory).
    store: Option<Arc<Store>>,
    /// This topic's log: opened at creation in durable mode, at the first spill otherwise.
    log: OnceLock<TopicStore>,
    /// Durable mode (`--mem-queue-size=0`): every message goes through the log.
    always_log: bool,
    /// Default mode: a channel (or the topic itself) holds more than `--mem-queue-size`
    /// messages, so new messages go through the log and the channels keep at most
    /// `--mem-queue-size` of them in memory (Go's overflow to the disk queue).
    spilling: AtomicBool,
    /// A switch to spilling is under way (opening the log, creating journals).
    spill_starting: AtomicBool,
    /// Serialises channel creation (journal files are created outside `inner`'s lock).
    create_lock: Mutex<()>,
    /// `--e2e-processing-latency-percentile`: what each new channel tracks.
    pub(crate) e2e: Option<Arc<E2eConfig>>,
    /// Its policy (`/topic/config`).
    policy: Mutex<TopicPolicy>,
    /// `max_depth` with `overflow: reject` (0: none): publishes past it are refused. Read on
    /// every publish.
    reject_above: AtomicU64,
    /// `max_depth` with `overflow: drop_oldest` (0: none): channels past it are trimmed after
    /// the fan-out.
    trim_above: AtomicU64,
    /// Whether the dedup window is on (`dedup` holds a filter), read on every publish.
    dedup_on: AtomicBool,
    /// The dedup filter; locked briefly per publish (probes only, never I/O).
    dedup: Mutex<Option<DedupFilter>>,
    /// While lookupd's channels for a new topic are being fetched
    /// (`Nsqd::precreate_channels_from_lookupd`): the channels created or deleted here
    /// meanwhile, which the fetched list must not override (a deleted one stays deleted,
    /// though lookupd keeps listing it). `None` otherwise.
    precreating: Mutex<Option<std::collections::HashSet<String>>>,
    /// Hashes dedup keys (random seed per topic), outside the lock.
    dedup_keyer: Keyer,
    /// Messages acknowledged but not queued as repeats (since the topic was created).
    deduplicated: AtomicU64,
}

/// A random seed (the standard library's per-process random keys).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_nanos() as u64);
    h.finish()
}

impl Topic {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: &str,
        node_id: u16,
        mem_queue_size: i64,
        clock: Clock,
        data: Option<Arc<DataDir>>,
        store: Option<Arc<Store>>,
        log: Option<TopicStore>,
        e2e: Option<Arc<E2eConfig>>,
    ) -> Topic {
        let ephemeral = nsq_protocol::names::is_ephemeral(name);
        let store = if ephemeral { None } else { store };
        let log_cell = OnceLock::new();
        if let (Some(l), Some(_)) = (log, &store) {
            let _ = log_cell.set(l);
        }
        Topic {
            name: name.to_string(),
            ephemeral,
            replicated: false,
            inner: Mutex::new(TopicState::new(
                if mem_queue_size > 0 {
                    mem_queue_size as u64
                } else {
                    crate::durable::MEMORY_WINDOW
                },
                // Go's ephemeral topics have no disk queue: overflow is discarded.
                (ephemeral && mem_queue_size > 0).then_some(mem_queue_size as u64),
            )),
            guid: Mutex::new(GuidGen::new(node_id)),
            deleted: AtomicBool::new(false),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            mem_queue_size,
            clock,
            data: if ephemeral { None } else { data },
            store,
            log: log_cell,
            always_log: mem_queue_size <= 0,
            spilling: AtomicBool::new(false),
            spill_starting: AtomicBool::new(false),
            create_lock: Mutex::new(()),
            e2e,
            policy: Mutex::new(TopicPolicy::default()),
            reject_above: AtomicU64::new(0),
            trim_above: AtomicU64::new(0),
            precreating: Mutex::new(None),
            dedup_on: AtomicBool::new(false),
            dedup: Mutex::new(None),
            dedup_keyer: Keyer::new(random_seed()),
            deduplicated: AtomicU64::new(0),
        }
    }

    /// Whether the topic has a log (always in durable mode; after its first spill in the
    /// default mode).
    pub fn has_log(&self) -> bool {
        self.log.get().is_some()
    }

    /// The log writer and this topic's log handle, once it has a log.
    pub(crate) fn store(&self) -> Option<(&Arc<Store>, &TopicStore)> {
        Some((self.store.as_ref()?, self.log.get()?))
    }

    /// Log position of the first message the topic itself holds (durable mode).
    pub(crate) fn held_start(&self) -> Option<u64> {
        self.inner.lock().held_start()
    }

    /// Publishes `count` bodies; with `defer_ns`, each channel receives them deferred.
    /// In durable mode the result is [`Published::Pending`] until the log has them.
    ///
    /// With a dedup window, repeats are acknowledged like the rest but not queued.
    pub fn publish<'a>(
        self: &Arc<Self>,
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        count: u32,
        defer_ns: Option<u64>,
    ) -> Result<Published, PublishError> {
        self.publish_keyed(bodies, count, defer_ns, None)
    }

    /// [`Topic::publish`], with HTTP `/pub`'s `dedup_id` as the dedup key of its one
    /// message instead of the body.
    pub fn publish_keyed<'a>(
        self: &Arc<Self>,
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        count: u32,
        defer_ns: Option<u64>,
        dedup_id: Option<&[u8]>,
    ) -> Result<Published, PublishError> {
        if count == 0 {
            return Ok(Published::Done);
        }
        if self.is_deleted() {
            return Err(PublishError::Exiting);
        }
        if self.dedup_on.load(Ordering::Relaxed) {
            return self.publish_dedup(bodies, count, defer_ns, dedup_id);
        }
        let limit = self.reject_above.load(Ordering::Relaxed);
        if limit != 0 {
            self.check_depth(limit, count as u64)?;
        }
        self.publish_checked(bodies, count, defer_ns)
    }

    /// A publish to a topic with a dedup window: each message is judged on its own (the new
    /// ones of an MPUB are queued, the repeats counted in `deduplicated_count`), and the
    /// publish succeeds as a whole. Keys are hashed before the filter's lock is taken.
    ///
    /// With `max_depth`, the limit is checked against the new messages only, before any key
    /// is remembered, so a refused publish can be retried. If the log write of a durable
    /// publish fails, its keys are already remembered: the filter is then emptied, so the
    /// retry is queued (a repeat may then get through; none is lost).
    fn publish_dedup<'a>(
        self: &Arc<Self>,
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        count: u32,
        defer_ns: Option<u64>,
        dedup_id: Option<&[u8]>,
    ) -> Result<Published, PublishError> {
        let keys: Vec<Key> = match dedup_id {
            Some(id) if count == 1 => vec![self.dedup_keyer.id(id)],
            _ => bodies.clone().map(|b| self.dedup_keyer.body(b)).collect(),
        };
        let now = self.clock.now();
        let limit = self.reject_above.load(Ordering::Relaxed);
        if limit != 0 {
            let new = match self.dedup.lock().as_mut() {
                Some(f) => f.count_new(&keys, now),
                None => keys.len(),
            };
            if new > 0 {
                self.check_depth(limit, new as u64)?;
            }
        }
        let keep: Vec<bool> = match self.dedup.lock().as_mut() {
            Some(f) => {
                let mut v = f.check_and_insert_all(&keys, now);
                v.iter_mut().for_each(|repeat| *repeat = !*repeat);
                v
            }
            // Turned off meanwhile.
            None => vec![true; keys.len()],
        };
        let kept = keep.iter().filter(|k| **k).count() as u32;
        if kept < count {
            self.deduplicated
                .fetch_add(u64::from(count - kept), Ordering::Relaxed);
        }
        if kept == count {
            self.publish_checked(bodies, count, defer_ns)
        } else if kept == 0 {
            Ok(Published::Done)
        } else {
            let new = bodies.zip(keep).filter(|(_, k)| *k).map(|(b, _)| b);
            self.publish_checked(new, kept, defer_ns)
        }
    }

    /// Empties the dedup filter (a publish whose keys it remembered failed).
    fn dedup_forget(&self) {
        if let Some(f) = self.dedup.lock().as_mut() {
            f.clear();
            tracing::warn!(
                "TOPIC({}): dedup window emptied after a failed publish (its retry must be queued)",
                self.name
            );
        }
    }

    /// Publishes messages that passed the policies' checks.
    fn publish_checked<'a>(
        self: &Arc<Self>,
        bodies: impl Iterator<Item = &'a [u8]> + Clone,
        count: u32,
        defer_ns: Option<u64>,
    ) -> Result<Published, PublishError> {
        let ts = unix_nanos();
        let (first, node) = {
            let mut g = self.guid.lock();
            (g.reserve(count as u64, ts), g.node_id())
        };
        // Copy outside the topic lock: only the fan-out needs it.
        let batch = Arc::new(Batch::generated(bodies, first, node, ts));
        self.publish_built(batch, defer_ns)
    }

    /// Publishes messages that keep their original timestamp and attempts (a dead-letter
    /// topic receiving another channel's messages); ids are this topic's own.
    pub fn publish_moved(
        self: &Arc<Self>,
        msgs: impl ExactSizeIterator<Item = (Bytes, i64, u16)>,
    ) -> Result<Published, PublishError> {
        let count = msgs.len() as u64;
        if count == 0 {
            return Ok(Published::Done);
        }
        if self.is_deleted() {
            return Err(PublishError::Exiting);
        }
        let limit = self.reject_above.load(Ordering::Relaxed);
        if limit != 0 {
            self.check_depth(limit, count)?;
        }
        let (first, node) = {
            let mut g = self.guid.lock();
            (g.reserve(count, unix_nanos()), g.node_id())
        };
        let msgs: Vec<nsq_protocol::Message> = msgs
            .enumerate()
            .map(|(i, (body, timestamp, attempts))| nsq_protocol::Message {
                timestamp,
                attempts,
                id: nsq_protocol::MessageId::from_u64(crate::state::guid::id_for(
                    node,
                    first + i as u64,
                )),
                body,
            })
            .collect();
        self.publish_built(Arc::new(Batch::explicit(&msgs)), None)
    }

    fn publish_built(
        self: &Arc<Self>,
        batch: Arc<Batch>,
        defer_ns: Option<u64>,
    ) -> Result<Published, PublishError> {
        let ts = batch.timestamp(0);
        let logged = match self.store() {
            Some(s) if self.always_log || self.spilling.load(Ordering::Acquire) => Some(s),
            _ => None,
        };
        let Some((store, ts_store)) = logged else {
            if self.accept(batch, defer_ns)? {
                self.start_spill();
            }
            return Ok(Published::Done);
        };
        let defer_until = match defer_ns {
            Some(d) if d > 0 => ts.saturating_add(d as i64),
            _ => 0,
        };
        let msgs: Vec<nsq_store::LogMessage> = (0..batch.len())
            .map(|i| nsq_store::LogMessage {
                timestamp: batch.timestamp(i),
                attempts: batch.initial_attempts(i),
                id: batch.id(i),
                defer_until,
                body: batch.body_shared(i),
            })
            .collect();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let topic = self.clone();
        store.append(
            ts_store,
            msgs,
            Box::new(move |r| {
                let res = match r {
                    Ok(a) => {
                        batch.set_log_first(a.first);
                        if let Some(t) = topic.log.get() {
                            t.end.store(a.end, Ordering::Release);
                        }
                        topic.accept(batch, defer_ns).map(|_| ())
                    }
                    Err(e) => {
                        tracing::error!(
                            "TOPIC({}): failed to write to the topic log: {e}",
                            topic.name
                        );
                        topic.dedup_forget();
                        Err(PublishError::Disk(e.to_string()))
                    }
                };
                let _ = tx.send(res);
            }),
        );
        Ok(Published::Pending(rx))
    }

    /// A replicated topic's leader hands it a committed publish (ids and timestamps from the
    /// log). The local copy is memory-only, so this is the fan-out alone.
    pub(crate) fn publish_replicated(&self, batch: Arc<Batch>, defer_ns: Option<u64>) {
        if let Err(e) = self.accept(batch, defer_ns) {
            tracing::warn!(
                "TOPIC({}): committed publish not delivered locally: {e}",
                self.name
            );
        }
    }

    /// `max_depth` with `overflow: reject`: refuses a publish of `count` messages that would
    /// take any channel (or the topic, when it holds messages itself) past `limit`. Checked
    /// before the publish, not under one lock with it: concurrent publishers can overshoot
    /// the limit by at most one batch each.
    fn check_depth(&self, limit: u64, count: u64) -> Result<(), PublishError> {
        let over = |what: String, depth: u64| {
            Err(PublishError::MaxDepth {
                limit,
                what,
                depth,
                count,
            })
        };
        let channels = self.channels();
        if channels.is_empty() || self.is_paused() {
            let depth = self.depth();
            if depth.saturating_add(count) > limit {
                return over(format!("topic {}", self.name), depth);
            }
        }
        for c in channels {
            let depth = c.state.lock().depth();
            if depth.saturating_add(count) > limit {
                return over(format!("channel {}", c.name), depth);
            }
        }
        Ok(())
    }

    /// Whether `/metrics` shows it (policy `"metrics": false` hides it).
    pub fn metrics_enabled(&self) -> bool {
        self.policy.lock().metrics != Some(false)
    }

    /// `overflow: drop_oldest`: every channel above `limit` ready messages drops its oldest
    /// (acked in its journal as FINs). Exact while the channel's ready messages are in
    /// memory (`max_depth` within `--mem-queue-size`, or the durable memory window).
    fn trim_to(&self, limit: u64) {
        for c in self.channels() {
            let acked = {
                let mut st = c.state.lock();
                let depth = st.depth();
                if depth <= limit {
                    continue;
                }
                st.drop_oldest(depth - limit)
            };
            c.journal_acks(&acked);
        }
    }

    /// Messages acknowledged but not queued as repeats (dedup window), since creation.
    pub fn deduplicated_count(&self) -> u64 {
        self.deduplicated.load(Ordering::Relaxed)
    }

    /// The dedup filter's figures for `/stats`: (bits, probes per key, estimated false
    /// positive rate now); `None` without a dedup window.
    pub fn dedup_figures(&self) -> Option<(u64, u32, f64)> {
        let now = self.clock.now();
        self.dedup
            .lock()
            .as_mut()
            .map(|f| (f.bits(), f.hashes(), f.estimated_false_positive_rate(now)))
    }

    /// Its policy.
    pub fn policy(&self) -> TopicPolicy {
        self.policy.lock().clone()
    }

    /// Sets its policy: the limits apply to the next publish and delivery; marks the
    /// metadata for rewriting. A change of the dedup settings builds a new, empty filter;
    /// other changes keep it.
    pub fn set_policy(&self, p: TopicPolicy) {
        let ttl = p.ttl;
        let limit = p.max_depth.unwrap_or(0);
        let trim = p.overflow == crate::state::policy::Overflow::DropOldest;
        self.reject_above
            .store(if trim { 0 } else { limit }, Ordering::Relaxed);
        self.trim_above
            .store(if trim { limit } else { 0 }, Ordering::Relaxed);
        let old = {
            let mut g = self.policy.lock();
            let changed = g.dedup != p.dedup;
            let dedup = p.dedup;
            *g = p;
            // Under the policy lock, so two concurrent changes leave the last one's filter.
            changed.then(|| {
                // Built (allocated) before the filter's lock is taken.
                let f = dedup.map(|c| DedupFilter::new(c, self.clock.now()));
                let on = f.is_some();
                if !on {
                    self.dedup_on.store(false, Ordering::Relaxed);
                }
                let old = std::mem::replace(&mut *self.dedup.lock(), f);
                if on {
                    self.dedup_on.store(true, Ordering::Relaxed);
                }
                old
            })
        };
        // The old filter (megabytes) is freed outside both locks.
        drop(old);
        for c in self.channels() {
            c.topic_ttl_changed(ttl);
        }
        if let Some(d) = &self.data {
            d.mark_dirty();
        }
    }

    /// Hands a published batch to the channels, or holds it while there are none (or the
    /// topic is paused). Returns whether the topic should start spilling to its log (default
    /// mode: a channel, or the topic itself, now holds `--mem-queue-size` messages or more).
    fn accept(&self, batch: Arc<Batch>, defer_ns: Option<u64>) -> Result<bool, PublishError> {
        let count = batch.len() as u64;
        let bytes = batch.body_bytes() as u64;
        let held = match defer_ns {
            Some(d) if d > 0 => Held::Deferred(batch, d),
            _ => Held::Ready(batch),
        };
        let now = self.clock.now();
        let most = self
            .inner
            .lock()
            .accept(held, now)
            .map_err(|_| PublishError::Exiting)?;
        self.message_count.fetch_add(count, Ordering::Relaxed);
        self.message_bytes.fetch_add(bytes, Ordering::Relaxed);
        let limit = self.trim_above.load(Ordering::Relaxed);
        if limit != 0 {
            self.trim_to(limit);
        }
        Ok(self.over_memory_limit(most))
    }

    /// Whether `queued` in-memory messages call for spilling (default mode only).
    fn over_memory_limit(&self, queued: u64) -> bool {
        !self.always_log
            && self.store.is_some()
            && self.mem_queue_size > 0
            && queued >= self.mem_queue_size as u64
            && !self.spilling.load(Ordering::Relaxed)
    }

    /// Default mode: switches the topic to spilling — opens its log if needed (on the
    /// blocking pool), then, on the log writer thread and under the topic lock, gives every
    /// channel a journal starting at the log's end and routes new messages through the log.
    /// Channels then keep at most `--mem-queue-size` ready messages in memory; the rest is
    /// read back from the log as consumers catch up.
    pub(crate) fn start_spill(self: &Arc<Self>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        if self.spill_starting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.spill_starting.store(false, Ordering::Release);
            return;
        };
        let topic = self.clone();
        rt.spawn_blocking(move || {
            if topic.log.get().is_none() {
                match store.open_log(&topic.name) {
                    Ok(log) => {
                        let _ = topic.log.set(store.register(log));
                    }
                    Err(e) => {
                        // Leave `spill_starting` set: retrying on every publish would only
                        // repeat this error; messages stay in memory as before.
                        tracing::error!(
                            "TOPIC({}): cannot open its log to spill to; messages beyond --mem-queue-size stay in memory: {e}",
                            topic.name
                        );
                        return;
                    }
                }
            }
            let Some(ts) = topic.log.get() else {
                return;
            };
            // Journals for the channels that have none, created here (two fsyncs each) rather
            // than on the log writer thread, which every topic shares, or under the topic lock.
            // Nothing appends to this topic's log until spilling is on, so they start at its
            // end as known now; `begin_spilling` corrects that if it moved.
            let provisional = ts.end();
            // Which channels need one: taken under `create_lock`, so a creation that was under
            // way (it decided on its journal before the log existed) has finished and is in
            // the list, and every later one sees the log and makes its own journal
            // (`get_or_create_channel`). So `begin_spilling` never has to make one under the
            // topic lock.
            let channels = {
                let _creating = topic.create_lock.lock();
                topic.channels()
            };
            let made: Vec<(String, Mutex<Option<nsq_store::ChannelJournal>>)> = channels
                .into_iter()
                .filter(|c| !c.ephemeral && c.durable().is_none())
                .filter_map(|c| {
                    let j = store.create_journal(&topic.name, &c.name, provisional)?;
                    Some((c.name.clone(), j))
                })
                .collect();
            let t2 = topic.clone();
            store.call(ts, move |log| {
                let Some(log) = log else {
                    t2.spill_starting.store(false, Ordering::Release);
                    return;
                };
                t2.begin_spilling(log.end_pos(), provisional, made);
            });
        });
    }

    /// Runs on the log writer thread: every record appended from now on is at `start` or
    /// later, so journals starting there cover all of them. `made` are journals created at
    /// `provisional` (≤ `start`) for the channels that had none.
    fn begin_spilling(
        &self,
        start: u64,
        provisional: u64,
        made: Vec<(String, Mutex<Option<nsq_store::ChannelJournal>>)>,
    ) {
        let (Some(store), Some(ts)) = (&self.store, self.log.get()) else {
            return;
        };
        let mut made: BTreeMap<String, Mutex<Option<nsq_store::ChannelJournal>>> =
            made.into_iter().collect();
        let inner = self.inner.lock();
        let deleted = inner.is_deleted();
        if !deleted {
            for ch in inner.channels() {
                if ch.ephemeral || ch.durable().is_some() {
                    continue;
                }
                let j = match made.remove(&ch.name) {
                    Some(j) => {
                        if start > provisional {
                            crate::durable::journal_op(&j, "start", |j| j.cursor(start));
                        }
                        Some(j)
                    }
                    // Not reachable through a concurrent creation (see `start_spill`); only a
                    // journal that failed to be created there (logged) gets a second try here.
                    None => store.create_journal(&self.name, &ch.name, start),
                };
                if let Some(j) = j {
                    ch.attach_durable((store.clone(), ts.end.clone(), ts.reader.clone(), j));
                }
            }
            self.spilling.store(true, Ordering::Release);
            tracing::info!(
                "TOPIC({}): over --mem-queue-size={}: new messages go through its log on disk",
                self.name,
                self.mem_queue_size
            );
        }
        drop(inner);
        // Journals of channels deleted meanwhile. A channel of the same name created since has
        // its own journal at the same path: leave that one alone (`create_lock` keeps a
        // creation from starting while we look). A deleted topic may already have a successor
        // of the same name, whose journals these paths may be: its files are left as they are.
        let _creating = self.create_lock.lock();
        for (name, j) in made {
            if deleted || self.channel(&name).is_some() {
                continue;
            }
            if let Some(j) = j.into_inner() {
                if let Err(e) = j.delete() {
                    tracing::error!(
                        "CHANNEL({}:{name}): removing its unused journal: {e}",
                        self.name
                    );
                }
            }
        }
        self.spill_starting.store(false, Ordering::Release);
    }

    /// Default mode: stops spilling once the topic and every channel are back well under
    /// `--mem-queue-size` with no backlog on disk (checked every second). Returns whether it
    /// stopped.
    pub(crate) fn maybe_stop_spilling(&self) -> bool {
        if self.always_log || !self.spilling.load(Ordering::Acquire) {
            return false;
        }
        let low = (self.mem_queue_size.max(1) as u64).div_ceil(2);
        if !self.inner.lock().below(low) {
            return false;
        }
        self.spilling.store(false, Ordering::Release);
        tracing::info!(
            "TOPIC({}): back under --mem-queue-size={}: messages stay in memory",
            self.name,
            self.mem_queue_size
        );
        true
    }

    /// After a restart: spill if what was restored is over the memory limit.
    pub(crate) fn spill_if_needed(self: &Arc<Self>) {
        let most = self.inner.lock().most_queued();
        if self.over_memory_limit(most) {
            self.start_spill();
        }
    }

    /// Returns the channel, creating it if needed (`true` when created).
    ///
    /// A channel that needs a journal (the topic has a log) gets it without the topic lock
    /// held: creating the file costs two fsyncs, and publishers of this topic must not wait for
    /// them. The journal starts where the channel would have started when creation began; if
    /// messages were handed out meanwhile (they went to the other channels only), a `Cursor`
    /// record marks them as not this channel's, under the lock that inserts the channel.
    /// Creations on one topic are serialised by `create_lock`, never by the topic lock.
    pub fn get_or_create_channel(&self, name: &str) -> Result<(Arc<Channel>, bool), PublishError> {
        if let Some(ch) = self.existing_channel(name)? {
            return Ok((ch, false));
        }
        let _creating = self.create_lock.lock();
        let journal = match self.store() {
            Some((store, t)) if !nsq_protocol::names::is_ephemeral(name) => {
                let provisional = {
                    let inner = self.inner.lock();
                    if inner.is_deleted() {
                        return Err(PublishError::Exiting);
                    }
                    if let Some(ch) = inner.channel(name) {
                        return Ok((ch.clone(), false));
                    }
                    inner.channel_start(t.end())
                };
                store
                    .create_journal(&self.name, name, provisional)
                    .map(|j| {
                        (
                            provisional,
                            (store.clone(), t.end.clone(), t.reader.clone(), j),
                        )
                    })
            }
            _ => None,
        };
        let mut inner = self.inner.lock();
        if inner.is_deleted() {
            return Err(PublishError::Exiting);
        }
        if let Some(ch) = inner.channel(name) {
            // Only `create_lock` holders insert channels, so this is a restore racing us.
            return Ok((ch.clone(), false));
        }
        let journal = journal.map(|(provisional, parts)| {
            if let Some((_, t)) = self.store() {
                let start = inner.channel_start(t.end());
                if start > provisional {
                    crate::durable::journal_op(&parts.3, "start", |j| j.cursor(start));
                }
            }
            parts
        });
        let ch = Channel::new(
            &self.name,
            name,
            self.mem_queue_size,
            self.clock,
            self.e2e.as_deref(),
            false,
            self.data.clone(),
            self.store.is_some(),
            journal,
        );
        ch.topic_ttl_changed(self.policy.lock().ttl);
        inner.insert_channel(name, ch.clone(), self.clock.now());
        self.note_channel_change(name);
        if let (Some(d), false) = (&self.data, ch.ephemeral) {
            d.mark_dirty();
        }
        tracing::info!("TOPIC({}): new channel({})", self.name, name);
        Ok((ch, true))
    }

    fn existing_channel(&self, name: &str) -> Result<Option<Arc<Channel>>, PublishError> {
        let inner = self.inner.lock();
        if inner.is_deleted() {
            return Err(PublishError::Exiting);
        }
        Ok(inner.channel(name).cloned())
    }

    /// Recreates a durable channel around its existing journal (restart).
    pub(crate) fn restore_channel_durable(
        &self,
        name: &str,
        journal: nsq_store::ChannelJournal,
    ) -> Option<Arc<Channel>> {
        let (store, t) = self.store()?;
        let mut inner = self.inner.lock();
        if inner.is_deleted() {
            return None;
        }
        if let Some(ch) = inner.channel(name) {
            return Some(ch.clone());
        }
        let ch = Channel::new(
            &self.name,
            name,
            self.mem_queue_size,
            self.clock,
            self.e2e.as_deref(),
            false,
            self.data.clone(),
            true,
            Some((
                store.clone(),
                t.end.clone(),
                t.reader.clone(),
                Mutex::new(Some(journal)),
            )),
        );
        ch.topic_ttl_changed(self.policy.lock().ttl);
        inner.insert_channel(name, ch.clone(), self.clock.now());
        Some(ch)
    }

    /// An existing channel.
    pub fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.inner.lock().channel(name).cloned()
    }

    /// All channels, sorted by name.
    pub fn channels(&self) -> Vec<Arc<Channel>> {
        self.inner.lock().channels().cloned().collect()
    }

    /// Number of channels.
    pub fn channel_count(&self) -> usize {
        self.inner.lock().channel_count()
    }

    /// Removes and closes a channel; `false` if there was none. Deleting the last channel
    /// frees the topic's log (nobody needs its messages any more).
    pub(crate) fn remove_channel(self: &Arc<Self>, name: &str) -> bool {
        self.note_channel_change(name);
        let ch = self.inner.lock().remove_channel(name);
        match ch {
            Some(ch) => {
                ch.delete();
                tracing::info!("TOPIC({}): deleting channel {}", self.name, name);
                if let Some((store, _)) = self.store() {
                    store.drop_idle_log(self.clone());
                }
                true
            }
            None => false,
        }
    }

    /// Starts recording channel creations and deletions (see `precreating`).
    pub(crate) fn begin_precreate(&self) {
        *self.precreating.lock() = Some(Default::default());
    }

    /// Whether `name` was created or deleted here since [`Topic::begin_precreate`].
    pub(crate) fn changed_during_precreate(&self, name: &str) -> bool {
        self.precreating
            .lock()
            .as_ref()
            .is_some_and(|s| s.contains(name))
    }

    /// Stops recording.
    pub(crate) fn end_precreate(&self) {
        *self.precreating.lock() = None;
    }

    fn note_channel_change(&self, name: &str) {
        if let Some(s) = self.precreating.lock().as_mut() {
            s.insert(name.to_owned());
        }
    }

    /// While starting, the topic holds messages even if it has channels; ending it hands the
    /// held messages to every channel.
    pub(crate) fn set_starting(&self, starting: bool) {
        self.inner.lock().set_starting(starting, self.clock.now());
    }

    /// Pauses or unpauses the topic (a paused topic holds new messages).
    pub fn set_paused(&self, paused: bool) {
        self.inner.lock().set_paused(paused, self.clock.now());
        if let Some(d) = &self.data {
            d.mark_dirty();
        }
    }

    /// Adds a batch restored from disk: held if the topic has no channels or is paused,
    /// otherwise handed to the channels (Go's topic pump does the same after a restart).
    pub(crate) fn restore_held(&self, batch: Arc<Batch>) {
        self.restore_held_as(Held::Ready(batch));
    }

    /// Adds a deferred message restored from the log (a DPUB the topic held), due in
    /// `delay_ns`.
    pub(crate) fn restore_held_deferred(&self, batch: Arc<Batch>, delay_ns: u64) {
        self.restore_held_as(Held::Deferred(batch, delay_ns.max(1)));
    }

    fn restore_held_as(&self, held: Held) {
        self.inner.lock().restore(held, self.clock.now());
    }

    /// Takes the messages the topic holds (for flushing to disk at shutdown).
    pub(crate) fn drain_held(&self) -> Vec<MsgRef> {
        self.inner.lock().drain_held()
    }

    /// Messages the topic holds in memory, and the log bytes of its held backlog (for
    /// sizing an export).
    pub(crate) fn held_extent(&self) -> (u64, u64) {
        self.inner.lock().held_extent()
    }

    /// Takes the held backlog out (the messages the topic holds only in its log), for
    /// exporting it at shutdown: the log range `[from, end)` and how many messages it holds.
    pub(crate) fn take_held_backlog(&self) -> Option<(u64, u64, u64)> {
        self.inner.lock().take_held_backlog()
    }

    /// Whether the topic is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.lock().is_paused()
    }

    /// Drops the messages held by the topic itself (not its channels'), as Go's
    /// `/topic/empty` does. A topic without channels also frees its log, so the emptied
    /// messages do not come back after a restart.
    pub fn empty(self: &Arc<Self>) {
        self.inner.lock().drop_held();
        if let Some(d) = &self.data {
            d.remove_queue(&self.name);
        }
        if let Some((store, _)) = self.store() {
            store.drop_idle_log(self.clone());
        }
    }

    /// Messages held by the topic: in memory plus those only in its log.
    pub fn depth(&self) -> u64 {
        self.inner.lock().depth()
    }

    /// Messages held by the topic only in its log (Go's `backend_depth`).
    pub fn backend_depth(&self) -> u64 {
        self.inner.lock().backend_depth()
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
        self.deleted.store(true, Ordering::Release);
        for ch in inner.close() {
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
        if let Some((store, t)) = self.store() {
            store.delete_log(t);
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

/// The topic state reaches its channels through this: the channel's queue state changes under
/// its own lock (taken inside the topic lock: topic, then channel), and the consumers it can
/// now feed are woken after that lock is released.
impl ChannelSink for Arc<Channel> {
    fn deliver(&self, held: &Held, now: u64) -> u64 {
        let mut woken = Vec::new();
        let (due, ready) = {
            let mut st = self.state.lock();
            let due = st.take_from_topic(held, now, &mut woken);
            (due, st.ready_count())
        };
        self.wake_clients(&woken);
        if let Some(due) = due {
            self.schedule(due);
            return 0;
        }
        if self.ephemeral {
            0
        } else {
            ready
        }
    }

    fn take_backlog(&self, from: u64, end: u64, count: u64, skip: &[u64]) -> bool {
        if self.ephemeral || self.durable().is_none() {
            // Ephemeral channels drop what does not fit in memory; a channel without a
            // journal cannot read the log back.
            tracing::warn!(
                "CHANNEL({}): {count} messages the topic held on disk are not given to it",
                self.queue_name()
            );
            return false;
        }
        self.state.lock().add_backlog(from, end, count, skip);
        self.wake_consumers();
        true
    }

    fn queued(&self) -> (bool, u64) {
        let st = self.state.lock();
        (st.backlog_start().is_some(), st.ready_count())
    }
}
