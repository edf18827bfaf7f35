//! The async shell around one [`ChannelState`]: its lock, its consumers, and the one timer
//! task that requeues timed-out and due deferred messages.
//!
//! The state is behind a `parking_lot::Mutex` that is held only for short, non-awaiting
//! sections (a pop of up to a few hundred messages, a FIN, a put). Consumers pull: each
//! subscribed connection takes messages when it has RDY credit, and waits on
//! [`Channel::notify`] when there is nothing for it. That gives Go's load balancing between
//! consumers of a channel without a per-message hand-off between tasks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::ClientInfo;
use crate::clock::Clock;
use crate::durable::{journal_op, Store};
use crate::persist::DataDir;
use crate::state::channel::ChannelState;
use crate::state::e2e::E2eConfig;
use crate::state::policy::{effective_ttl, ChannelPolicy};
use nsq_store::ChannelJournal;

/// Why a consumer could not be added.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// `--max-channel-consumers` reached.
    #[error("consumers for {topic}:{channel} exceeds limit of {limit}")]
    TooManyConsumers {
        /// Topic name.
        topic: String,
        /// Channel name.
        channel: String,
        /// The limit.
        limit: i64,
    },
    /// The channel is being deleted.
    #[error("channel is exiting")]
    Exiting,
}

/// One channel of a topic.
pub struct Channel {
    /// Topic name.
    pub topic_name: String,
    /// Channel name.
    pub name: String,
    /// Whether the name ends in `#ephemeral`.
    pub ephemeral: bool,
    /// The queue state. Never hold across an `.await`.
    pub state: Mutex<ChannelState>,
    /// Woken (all waiters) when messages become ready or the channel is unpaused.
    pub notify: Notify,
    timer_notify: Notify,
    timer_at: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    /// Cancelled when the channel is deleted: its consumers disconnect.
    pub exit: CancellationToken,
    exiting: AtomicBool,
    clock: Clock,
    /// Where this channel's queue files live (`None` for ephemeral channels or no data dir).
    data: Option<Arc<DataDir>>,
    /// The log writer, the topic's log end, and this channel's journal: set at creation in
    /// durable mode, and when its topic starts spilling to its log in the default mode.
    durable: OnceLock<Durable>,
    /// Its own policy (`/channel/config`).
    policy: Mutex<ChannelPolicy>,
    /// The ttl in force (the shorter of its own and its topic's), in ns; 0: none. Read on
    /// every delivery, so an atomic rather than the policy's lock.
    ttl_ns: AtomicU64,
    /// Policy `dead_letter_topic`: the topic's name and the daemon that creates it.
    dead_letter: Mutex<Option<(String, std::sync::Weak<crate::Nsqd>)>>,
    /// A replicated topic's channel (on the leader): where FINs go to be committed.
    pub(crate) replica: OnceLock<Arc<crate::replica::FinQueue>>,
}

/// What a durable channel is created with: the log writer, the topic's log end, a reader
/// for its backlog, and its journal.
pub(crate) type DurableParts = (
    Arc<Store>,
    Arc<AtomicU64>,
    nsq_store::LogReader,
    Mutex<Option<ChannelJournal>>,
);

/// A durable channel's journal and what it needs to restart it (on empty).
pub(crate) struct Durable {
    store: Arc<Store>,
    log_end: Arc<AtomicU64>,
    reader: nsq_store::LogReader,
    /// `None` once deleted.
    pub(crate) journal: Mutex<Option<ChannelJournal>>,
    /// The journal's size when it was last fsynced (a new journal is fsynced when created):
    /// a shutdown with 10,000 idle channels then costs no fsync instead of 10,000.
    pub(crate) synced_size: AtomicU64,
}

impl Channel {
    /// Creates a channel and starts its timer task. `spill` says whether its topic can keep
    /// messages in a log (a non-ephemeral topic with a data directory): the channel then keeps
    /// at most `--mem-queue-size` ready messages in memory once the topic logs them
    /// ([`crate::durable::MEMORY_WINDOW`] in durable mode).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        topic_name: &str,
        name: &str,
        mem_queue_size: i64,
        clock: Clock,
        e2e: Option<&E2eConfig>,
        paused: bool,
        data: Option<Arc<DataDir>>,
        spill: bool,
        journal: Option<DurableParts>,
    ) -> Arc<Channel> {
        let ephemeral = nsq_protocol::names::is_ephemeral(name);
        let data = if ephemeral { None } else { data };
        let drop_beyond = (ephemeral && mem_queue_size > 0).then_some(mem_queue_size as u64);
        let mem_window = (!ephemeral && spill).then_some(if mem_queue_size > 0 {
            mem_queue_size as u64
        } else {
            crate::durable::MEMORY_WINDOW
        });
        let mut state = ChannelState::with_limits(paused, drop_beyond, mem_window);
        if let Some(cfg) = e2e {
            state.enable_e2e(cfg, crate::clock::unix_nanos());
        }
        let ch = Arc::new(Channel {
            topic_name: topic_name.to_string(),
            name: name.to_string(),
            ephemeral,
            state: Mutex::new(state),
            notify: Notify::new(),
            timer_notify: Notify::new(),
            timer_at: AtomicU64::new(u64::MAX),
            clients: Mutex::new(BTreeMap::new()),
            exit: CancellationToken::new(),
            exiting: AtomicBool::new(false),
            clock,
            data,
            durable: OnceLock::new(),
            policy: Mutex::new(ChannelPolicy::default()),
            ttl_ns: AtomicU64::new(0),
            dead_letter: Mutex::new(None),
            replica: OnceLock::new(),
        });
        if let Some(parts) = journal {
            ch.attach_durable(parts);
        }
        tokio::spawn(timer_loop(ch.clone()));
        ch
    }

    /// Gives the channel its journal (and what reading its backlog needs); a no-op if it
    /// already has one.
    pub(crate) fn attach_durable(&self, (store, log_end, reader, journal): DurableParts) {
        let size = journal.lock().as_ref().map_or(0, |j| j.size_bytes());
        let _ = self.durable.set(Durable {
            store,
            log_end,
            reader,
            journal,
            synced_size: AtomicU64::new(size),
        });
    }

    /// The clock shared with the daemon.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Whether the channel is being deleted.
    pub fn is_exiting(&self) -> bool {
        self.exiting.load(Ordering::Acquire)
    }

    /// Adds a consumer connection.
    pub fn add_client(
        &self,
        client: Arc<ClientInfo>,
        max_consumers: i64,
    ) -> Result<(), SubscribeError> {
        if self.is_exiting() {
            return Err(SubscribeError::Exiting);
        }
        let mut clients = self.clients.lock();
        if max_consumers > 0 && clients.len() as i64 >= max_consumers {
            return Err(SubscribeError::TooManyConsumers {
                topic: self.topic_name.clone(),
                channel: self.name.clone(),
                limit: max_consumers,
            });
        }
        self.state.lock().add_consumer(client.id);
        clients.insert(client.id, client);
        Ok(())
    }

    /// Removes a consumer; returns how many remain.
    pub fn remove_client(&self, id: u64) -> usize {
        let mut clients = self.clients.lock();
        clients.remove(&id);
        let wake = {
            let mut st = self.state.lock();
            st.remove_consumer(id);
            st.take_topology_wake()
        };
        if wake {
            // Topology-aware consumption: a local consumer left; the others may take over.
            self.wake_consumers();
        }
        clients.len()
    }

    /// Snapshot of the consumers.
    pub fn clients(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.lock().values().cloned().collect()
    }

    /// Number of consumers.
    pub fn client_count(&self) -> usize {
        self.clients.lock().len()
    }

    /// Tells the timer task about a deadline; wakes it only if it is earlier than planned.
    pub fn schedule(&self, deadline: u64) {
        if deadline < self.timer_at.load(Ordering::Relaxed) {
            self.timer_at.store(deadline, Ordering::Relaxed);
            self.timer_notify.notify_one();
        }
    }

    /// Wakes every consumer waiting for messages (timeouts, REQ, unpause, a backlog read,
    /// `/channel/empty`: rare events where who can take what is not tracked).
    pub fn wake_consumers(&self) {
        self.notify.notify_waiters();
    }

    /// Wakes the given consumers (those [`ChannelState::take_idle`] chose for new messages)
    /// through their own `Notify`: its permit covers a consumer that is between its pull
    /// and its wait, so no wake-up is lost.
    pub fn wake_clients(&self, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let clients = self.clients.lock();
        for id in ids {
            if let Some(c) = clients.get(id) {
                c.wake.notify_one();
            }
        }
    }

    /// Pauses or unpauses delivery.
    pub fn set_paused(&self, paused: bool) {
        self.state.lock().set_paused(paused);
        if !paused {
            self.wake_consumers();
        }
        if let Some(d) = &self.data {
            d.mark_dirty();
        }
    }

    /// Starts reading the on-disk backlog into memory if the memory window has room
    /// (durable mode; the read runs on the blocking pool).
    pub fn maybe_refill(self: &Arc<Self>) {
        let Some(d) = self.durable.get() else {
            return;
        };
        let Some((from, end)) = self.state.lock().start_refill() else {
            return;
        };
        let reader = d.reader.clone();
        let ch = self.clone();
        tokio::task::spawn_blocking(move || ch.refill(reader, from, end));
    }

    fn refill(&self, mut reader: nsq_store::LogReader, from: u64, end: u64) {
        use crate::state::channel::MsgRef;
        if self.durable.get().is_none() {
            return;
        }
        let window = self
            .state
            .lock()
            .mem_window()
            .unwrap_or(crate::durable::MEMORY_WINDOW);
        let max = (window / 2).max(1) as usize;
        let rb = match reader.read_range(from, end, max, 8 << 20) {
            Ok(rb) => rb,
            Err(e) => {
                tracing::error!("reading the backlog of {}: {e}", self.queue_name());
                self.state.lock().refill_failed();
                return;
            }
        };
        // Positions to skip (acked before a restart, or delivered another way): checked
        // under the lock rather than cloning the set, which can be large after a restart.
        let records: Vec<(u64, nsq_store::LogMessage)> = {
            let st = self.state.lock();
            match st.backlog_skip() {
                Some(_) => rb
                    .records
                    .into_iter()
                    .filter(|(p, _)| !st.skips(*p))
                    .collect(),
                None => rb.records,
            }
        };
        let batch = crate::durable::batch_from_log(records.iter().map(|(p, m)| (*p, m)));
        let now = self.clock.now();
        let now_unix = crate::clock::unix_nanos();
        let mut next_due = None::<u64>;
        {
            let mut st = self.state.lock();
            for (i, (_, m)) in records.iter().enumerate() {
                let msg = MsgRef {
                    batch: batch.clone(),
                    idx: i as u32,
                    attempts: m.attempts,
                };
                if m.defer_until > now_unix {
                    let due = now + (m.defer_until - now_unix) as u64;
                    st.restore_deferred(msg, due);
                    next_due = Some(next_due.map_or(due, |d: u64| d.min(due)));
                } else {
                    st.restore_one(msg);
                }
            }
            let next = if records.is_empty() && rb.next_pos <= from {
                tracing::error!(
                    "backlog of {} unreadable from position {from}; skipping it",
                    self.queue_name()
                );
                u64::MAX
            } else {
                rb.next_pos
            };
            // Compared with the backlog's end under the channel lock: a batch accepted after
            // this point sees either the backlog still open (and joins it) or closed (and goes
            // to memory), never neither.
            st.finish_refill(records.len() as u64, next);
        }
        if let Some(due) = next_due {
            self.schedule(due);
        }
        self.wake_consumers();
    }

    /// The durable-mode journal, if any.
    pub(crate) fn durable(&self) -> Option<&Durable> {
        self.durable.get()
    }

    /// Journals acks for finished messages (durable mode; no-op otherwise).
    pub fn journal_acks(&self, positions: &[u64]) {
        if positions.is_empty() {
            return;
        }
        if let Some(d) = self.durable.get() {
            journal_op(&d.journal, "ack", |j| {
                for &p in positions {
                    j.ack(p)?;
                }
                Ok(())
            });
        }
    }

    /// Journals a delayed requeue so its due time survives a restart (durable mode).
    pub fn journal_defer(&self, pos: u64, due_unix_ns: i64, attempts: u16) {
        if let Some(d) = self.durable.get() {
            journal_op(&d.journal, "defer", |j| j.defer(pos, due_unix_ns, attempts));
        }
    }

    /// The disk queue name (`topic:channel`).
    pub fn queue_name(&self) -> String {
        format!("{}:{}", self.topic_name, self.name)
    }

    /// Removes this channel's queue files (after empty or delete), so a restart cannot bring
    /// the messages back. Blocking file I/O: only called from rare admin operations.
    fn remove_disk_queue(&self) {
        if let Some(d) = &self.data {
            d.remove_queue(&self.queue_name());
        }
    }

    /// Whether delivery is paused.
    pub fn is_paused(&self) -> bool {
        self.state.lock().paused()
    }

    /// Its own policy.
    pub fn policy(&self) -> ChannelPolicy {
        self.policy.lock().clone()
    }

    /// Sets its policy (`topic_ttl`: its topic's, for the ttl in force; `nsqd`: where a
    /// dead-letter topic is created) and marks the metadata for rewriting.
    pub fn set_policy(
        &self,
        p: ChannelPolicy,
        topic_ttl: Option<std::time::Duration>,
        nsqd: std::sync::Weak<crate::Nsqd>,
    ) {
        let own = p.ttl;
        let dead = p.dead_letter_topic.clone().zip(p.max_attempts);
        *self.dead_letter.lock() = dead.as_ref().map(|(t, _)| (t.clone(), nsqd));
        self.state
            .lock()
            .set_max_attempts(dead.map_or(0, |(_, n)| n));
        *self.policy.lock() = p;
        self.apply_topic_ttl(topic_ttl, own);
        if let Some(d) = &self.data {
            d.mark_dirty();
        }
    }

    /// Publishes messages a REQ or timeout set aside (policy `max_attempts`) to the
    /// dead-letter topic, body, timestamp and attempts unchanged, and forgets them here only
    /// once that topic accepted them (durable mode: once its log has them). If it refuses
    /// them (deleted, `max_depth`, disk error) they go back to this channel's queue.
    pub(crate) fn dead_letter(self: &Arc<Self>, msgs: Vec<crate::state::channel::MsgRef>) {
        if msgs.is_empty() {
            return;
        }
        let keys: Vec<u64> = msgs.iter().map(|m| m.key()).collect();
        let target = self.dead_letter.lock().clone();
        let topic = target
            .as_ref()
            .and_then(|(name, nsqd)| Some(nsqd.upgrade()?.get_or_create_topic(name)));
        let Some(topic) = topic else {
            tracing::warn!(
                "TOPIC({}): channel({}): no dead-letter topic any more; {} messages requeued",
                self.topic_name,
                self.name,
                msgs.len()
            );
            self.dead_letters_refused(&keys);
            return;
        };
        // The frame's attempts field then carries the source's count on its first delivery
        // from the dead-letter topic (a delivery adds one).
        let items = msgs.iter().map(|m| {
            (
                m.batch.body_shared(m.idx),
                m.batch.timestamp(m.idx),
                m.attempts.saturating_sub(1),
            )
        });
        match topic.publish_moved(items) {
            Ok(crate::topic::Published::Done) => self.dead_letters_accepted(&keys),
            Ok(pending) => {
                let ch = self.clone();
                tokio::spawn(async move {
                    match pending.wait().await {
                        Ok(()) => ch.dead_letters_accepted(&keys),
                        Err(e) => {
                            tracing::error!(
                                "TOPIC({}): channel({}): dead-letter topic {} could not take {} messages, requeued: {e}",
                                ch.topic_name,
                                ch.name,
                                topic.name,
                                keys.len()
                            );
                            ch.dead_letters_refused(&keys);
                        }
                    }
                });
            }
            Err(e) => {
                tracing::error!(
                    "TOPIC({}): channel({}): dead-letter topic {} refused {} messages, requeued: {e}",
                    self.topic_name,
                    self.name,
                    topic.name,
                    keys.len()
                );
                self.dead_letters_refused(&keys);
            }
        }
    }

    fn dead_letters_accepted(&self, keys: &[u64]) {
        let acked = self.state.lock().dead_lettered(keys);
        self.journal_acks(&acked);
    }

    fn dead_letters_refused(&self, keys: &[u64]) {
        self.state.lock().dead_letter_failed(keys);
        self.wake_consumers();
    }

    /// Recomputes the ttl in force after its topic's changed.
    pub(crate) fn topic_ttl_changed(&self, topic_ttl: Option<std::time::Duration>) {
        let own = self.policy.lock().ttl;
        self.apply_topic_ttl(topic_ttl, own);
    }

    fn apply_topic_ttl(
        &self,
        topic_ttl: Option<std::time::Duration>,
        own: Option<std::time::Duration>,
    ) {
        let ns = effective_ttl(topic_ttl, own).map_or(0, |d| {
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
        });
        self.ttl_ns.store(ns, Ordering::Relaxed);
    }

    /// The ttl in force in ns (0: none).
    #[inline]
    pub fn ttl_ns(&self) -> u64 {
        self.ttl_ns.load(Ordering::Relaxed)
    }

    /// Drops every queued, in-flight and deferred message.
    pub fn empty(&self) {
        self.state.lock().empty();
        self.remove_disk_queue();
        if let Some(d) = self.durable.get() {
            // Start the journal over at the end of the log: everything before is gone.
            let start = d.log_end.load(Ordering::Acquire);
            if let Some(j) = d.store.create_journal(&self.topic_name, &self.name, start) {
                *d.journal.lock() = j.into_inner();
            }
        }
        // Consumers whose in-flight count dropped to zero may take new messages.
        self.wake_consumers();
    }

    /// Marks the channel deleted and disconnects its consumers.
    pub(crate) fn close(&self) {
        self.exiting.store(true, Ordering::Release);
        self.exit.cancel();
        self.state.lock().empty();
    }

    /// Deletes the channel for good: closes it and removes its queue files.
    pub(crate) fn delete(&self) {
        self.close();
        self.remove_disk_queue();
        if let Some(d) = self.durable.get() {
            let journal = d.journal.lock().take();
            if let Some(j) = journal {
                // An unlink and a directory fsync: off the runtime's worker (HTTP
                // `/channel/delete` and `/topic/delete` call this from a handler).
                if let Err(e) = crate::durable::off_runtime(|| j.delete()) {
                    tracing::error!("failed to delete journal of {}: {e}", self.queue_name());
                }
            }
        }
        if let Some(d) = &self.data {
            d.mark_dirty();
        }
    }
}

/// Requeues timed-out in-flight messages and releases deferred ones when due.
async fn timer_loop(ch: Arc<Channel>) {
    loop {
        // Publish the planned wake-up while holding the state lock: whoever adds an earlier
        // deadline does so under the same lock and calls schedule() afterwards, so it either
        // sees this value and notifies, or its deadline is already included in `next`.
        // A notification that arrives before we wait is kept as a Notify permit.
        let next = {
            let st = ch.state.lock();
            let next = st.next_deadline();
            ch.timer_at
                .store(next.unwrap_or(u64::MAX), Ordering::Relaxed);
            next
        };
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(ch.clock.instant(t)).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = ch.exit.cancelled() => return,
            _ = ch.timer_notify.notified() => continue,
            _ = sleep => {
                let now = ch.clock.now();
                let (n, dead) = {
                    let mut st = ch.state.lock();
                    (st.process_timeouts(now), st.take_dead_letters())
                };
                if n > 0 {
                    ch.wake_consumers();
                }
                ch.dead_letter(dead);
            }
        }
    }
}
