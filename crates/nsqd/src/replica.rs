//! Replicated topics in nsqd (nsq-rs extension, issue 14; consensus in `nsq-raft`).
//!
//! With `--raft-address` a node is a member of a replication cluster. A topic created with
//! `POST /topic/create?topic=T&replicas=N` lives in a Raft group of N members; every other
//! topic is exactly as in NSQ (one `OnceLock` read per publish is its whole cost).
//!
//! How a replicated topic is served, with unchanged NSQ clients:
//! - **Publishes** (TCP PUB/MPUB/DPUB, HTTP `/pub`, `/mpub`) on any member are committed to
//!   the topic's log — on the leader directly, from a follower forwarded to it — and answered
//!   `OK` only once a majority has them on disk. The message ids are given by the member that
//!   took the publish (ids carry the node id, so they are unique cluster-wide). While there is
//!   no leader (an election) the publish is retried for up to [`WRITE_DEADLINE`], then refused
//!   with `E_PUB_FAILED` / 503 naming the cause.
//! - **Delivery** happens on the leader only: when its own election entry is applied, the
//!   member creates a local, memory-only topic holding exactly what the log says each channel
//!   still owes (nsq-raft's `Deliver::activate`), registers it with nsqlookupd as any topic,
//!   and from then on hands each applied publish to it. A member that stops leading deletes
//!   its local copy (its consumers are disconnected and reconnect to the new leader, which
//!   lookupd lists instead). On a follower, SUB to a replicated topic is `E_SUB_FAILED` naming
//!   the leader.
//! - **FIN**s on the leader are applied locally at once and committed in batches (every
//!   [`FIN_BATCH_DELAY`]); channel creation and deletion are committed too. A failover
//!   redelivers what was in flight or FINed in the last batch — at least once, never lost.
//!
//! Not replicated yet (local to the leader, lost at a failover): REQ/timeouts and attempt
//! counts, pause, `/topic/empty`, `/channel/empty`, TTL expiry, `drop_oldest` and dead
//! letters (a message removed by them comes back after a failover). Replicated topics are
//! not written to `nsqd.dat` or exported to go-diskqueue files: the Raft log is their storage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use nsq_raft::{Cluster, Deliver, Msg, Op, TopicData};
use parking_lot::Mutex;

use crate::state::batch::Batch;
use crate::state::guid::GuidGen;
use crate::topic::{PublishError, Topic};
use crate::Nsqd;

/// How long a publish may wait for a leader (elections included) before it is refused.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// FINs are committed at most this long after the consumer sent them.
pub const FIN_BATCH_DELAY: Duration = Duration::from_millis(10);

/// This node's replicated topics.
pub struct Replicas {
    /// The Raft side.
    pub cluster: Arc<Cluster>,
    guid: Mutex<GuidGen>,
}

impl Replicas {
    pub(crate) fn new(cluster: Arc<Cluster>, node_id: u16) -> Replicas {
        Replicas {
            cluster,
            guid: Mutex::new(GuidGen::new(node_id)),
        }
    }

    /// Whether `topic` is replicated.
    pub fn is_replicated(&self, topic: &str) -> bool {
        self.cluster.is_replicated(topic)
    }

    /// Builds the messages (ids from this node, timestamp now) of a publish.
    fn build<'a>(
        &self,
        bodies: impl Iterator<Item = &'a [u8]>,
        n: u32,
        defer_ns: Option<u64>,
    ) -> Vec<Msg> {
        let now = crate::clock::unix_nanos();
        let (first, node) = {
            let mut g = self.guid.lock();
            (g.reserve(n as u64, now), g.node_id())
        };
        let defer_until = match defer_ns {
            Some(d) if d > 0 => now.saturating_add(d as i64),
            _ => 0,
        };
        // One allocation for all bodies; each message's body is a slice of it.
        let mut buf = bytes::BytesMut::new();
        let mut ends = Vec::with_capacity(n as usize);
        for b in bodies {
            buf.extend_from_slice(b);
            ends.push(buf.len());
        }
        let all = buf.freeze();
        let mut start = 0;
        ends.into_iter()
            .enumerate()
            .map(|(i, end)| {
                let body = all.slice(start..end);
                start = end;
                Msg {
                    id: nsq_protocol::MessageId::from_u64(crate::state::guid::id_for(
                        node,
                        first + i as u64,
                    ))
                    .0,
                    timestamp: now,
                    defer_until,
                    body,
                }
            })
            .collect()
    }

    /// A publish to a replicated topic: committed in the background, answered through the
    /// returned receiver.
    pub fn publish<'a>(
        self: &Arc<Self>,
        topic: &str,
        bodies: impl Iterator<Item = &'a [u8]>,
        n: u32,
        defer_ns: Option<u64>,
    ) -> tokio::sync::oneshot::Receiver<Result<(), PublishError>> {
        let msgs = self.build(bodies, n, defer_ns);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        let topic = topic.to_string();
        tokio::spawn(async move {
            let r = me
                .cluster
                .write(&topic, Op::Publish(msgs), WRITE_DEADLINE)
                .await
                .map_err(|e| {
                    tracing::warn!("TOPIC({topic}): replicated publish failed: {e}");
                    PublishError::Replication(e)
                });
            let _ = tx.send(r);
        });
        rx
    }

    /// Commits a channel creation or deletion (in the background; failures are logged).
    pub fn channel_changed(self: &Arc<Self>, topic: &str, channel: &str, created: bool) {
        let me = self.clone();
        let (topic, channel) = (topic.to_string(), channel.to_string());
        tokio::spawn(async move {
            let op = if created {
                Op::CreateChannel(channel.clone())
            } else {
                Op::DeleteChannel(channel.clone())
            };
            if let Err(e) = me.cluster.write(&topic, op, WRITE_DEADLINE).await {
                tracing::error!(
                    "TOPIC({topic}): channel {channel} {} on this node but not replicated: {e}",
                    if created { "created" } else { "deleted" }
                );
            }
        });
    }

    /// Gives a channel of a replicated topic its FIN queue (once).
    pub(crate) fn attach(self: &Arc<Self>, ch: &crate::channel::Channel) {
        let _ = ch.replica.get_or_init(|| {
            Arc::new(FinQueue {
                topic: ch.topic_name.clone(),
                channel: ch.name.clone(),
                ids: Mutex::new(Vec::new()),
                scheduled: AtomicBool::new(false),
                replicas: Arc::downgrade(self),
            })
        });
    }

    /// The leader this node knows for `topic`, for error messages.
    pub fn leader_of(&self, topic: &str) -> String {
        if let Some(m) = self.cluster.remote_members(topic) {
            return format!("this node is not a member; members are nodes {m:?}");
        }
        match self.cluster.status(topic).and_then(|s| s.leader) {
            Some(l) => format!("node {l}"),
            None => "not elected yet".into(),
        }
    }
}

/// FINs of one channel of a replicated topic waiting to be committed.
pub struct FinQueue {
    topic: String,
    channel: String,
    ids: Mutex<Vec<[u8; 16]>>,
    scheduled: AtomicBool,
    replicas: Weak<Replicas>,
}

impl FinQueue {
    /// Queues FINed ids; the first one of a batch schedules its commit.
    pub fn push(self: &Arc<Self>, ids: impl Iterator<Item = [u8; 16]>) {
        self.ids.lock().extend(ids);
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let q = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FIN_BATCH_DELAY).await;
            q.scheduled.store(false, Ordering::Release);
            let ids = std::mem::take(&mut *q.ids.lock());
            let Some(r) = q.replicas.upgrade() else {
                return;
            };
            if ids.is_empty() {
                return;
            }
            let n = ids.len();
            let op = Op::Finish {
                channel: q.channel.clone(),
                ids,
            };
            if let Err(e) = r.cluster.write(&q.topic, op, WRITE_DEADLINE).await {
                // Not lost: the messages stay owed in the log and are delivered again after a
                // failover (at least once).
                tracing::warn!(
                    "TOPIC({}): {n} FINs on channel {} not replicated: {e}",
                    q.topic,
                    q.channel
                );
            }
        });
    }
}

/// The local delivery of one replicated topic (see the module doc).
pub(crate) struct Delivery {
    pub(crate) nsqd: Weak<Nsqd>,
    pub(crate) topic: String,
}

impl Delivery {
    /// A channel the log says exists: created locally without committing it again.
    fn attach(
        &self,
        n: &Arc<Nsqd>,
        t: &Topic,
        channel: &str,
    ) -> Option<Arc<crate::channel::Channel>> {
        let (ch, created) = t.get_or_create_channel(channel).ok()?;
        if created {
            n.lookup.notify(&t.name, Some(channel));
        }
        if let Some(r) = n.replicas() {
            r.attach(&ch);
        }
        Some(ch)
    }
}

/// Splits messages into ready ones (a batch) and deferred ones (each with its delay in ns).
fn batches<'a>(
    msgs: impl Iterator<Item = &'a Msg>,
) -> (
    Vec<nsq_protocol::Message>,
    Vec<(nsq_protocol::Message, u64)>,
) {
    let now = crate::clock::unix_nanos();
    let mut ready = Vec::new();
    let mut deferred = Vec::new();
    for m in msgs {
        let msg = nsq_protocol::Message {
            timestamp: m.timestamp,
            attempts: 0,
            id: nsq_protocol::MessageId(m.id),
            body: m.body.clone(),
        };
        if m.defer_until > now {
            deferred.push((msg, (m.defer_until - now) as u64));
        } else {
            ready.push(msg);
        }
    }
    (ready, deferred)
}

impl Deliver for Delivery {
    fn activate(&self, data: &TopicData) {
        let Some(n) = self.nsqd.upgrade() else { return };
        // A copy left from an earlier term is stale: start from the log's state.
        let _ = n.delete_topic(&self.topic);
        let t = n.create_replica_topic(&self.topic);
        let mut count = 0;
        for c in data.channel_names() {
            let Some(ch) = self.attach(&n, &t, c) else {
                continue;
            };
            let (ready, deferred) = batches(data.owed(c));
            count += ready.len() + deferred.len();
            let now = n.clock.now();
            let mut st = ch.state.lock();
            if !ready.is_empty() {
                let b = Arc::new(Batch::explicit(&ready));
                let len = b.len();
                st.restore(b, len);
            }
            let mut earliest = u64::MAX;
            for (m, delay) in deferred {
                let b = Arc::new(Batch::explicit(std::slice::from_ref(&m)));
                let due = now + delay;
                earliest = earliest.min(due);
                st.restore_deferred(
                    crate::state::channel::MsgRef {
                        batch: b,
                        idx: 0,
                        attempts: 0,
                    },
                    due,
                );
            }
            drop(st);
            if earliest != u64::MAX {
                ch.schedule(earliest);
            }
            ch.wake_consumers();
        }
        let (ready, deferred) = batches(data.held());
        count += ready.len() + deferred.len();
        if !ready.is_empty() {
            t.restore_held(Arc::new(Batch::explicit(&ready)));
        }
        for (m, delay) in deferred {
            t.restore_held_deferred(Arc::new(Batch::explicit(std::slice::from_ref(&m))), delay);
        }
        tracing::info!(
            "TOPIC({}): replicated; this node (leader) now delivers it: {} channels, {count} messages owed",
            self.topic,
            t.channel_count()
        );
    }

    fn deactivate(&self) {
        let Some(n) = self.nsqd.upgrade() else { return };
        if n.delete_topic(&self.topic).is_ok() {
            tracing::info!(
                "TOPIC({}): replicated; this node no longer leads it: local copy dropped, consumers disconnected",
                self.topic
            );
        }
    }

    fn published(&self, msgs: &[Msg]) {
        let Some(n) = self.nsqd.upgrade() else { return };
        let Some(t) = n.topic(&self.topic) else {
            return;
        };
        let (ready, deferred) = batches(msgs.iter());
        if !ready.is_empty() {
            t.publish_replicated(Arc::new(Batch::explicit(&ready)), None);
        }
        for (m, delay) in deferred {
            t.publish_replicated(
                Arc::new(Batch::explicit(std::slice::from_ref(&m))),
                Some(delay),
            );
        }
    }

    fn channel_created(&self, name: &str) {
        let Some(n) = self.nsqd.upgrade() else { return };
        if let Some(t) = n.topic(&self.topic) {
            self.attach(&n, &t, name);
        }
    }

    fn channel_deleted(&self, name: &str) {
        let Some(n) = self.nsqd.upgrade() else { return };
        let _ = n.delete_channel(&self.topic, name);
    }
}
