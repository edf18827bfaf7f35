//! openraft's two storage halves for one replicated topic.
//!
//! - [`LogStore`]: the consensus log on [`nsq_store::EntryLog`] (nsq-store's framing and torn-tail
//!   rules), entries bincode-encoded. Appends are written and, with `sync`, `fdatasync`ed on the
//!   blocking pool before openraft is told they are durable — a leader counts its own vote for
//!   an entry only then, and a follower acknowledges it only then, so a publish answered `OK` is
//!   on disk on a majority. The vote and the last purged id are in the log's state file
//!   (tmp + fsync + rename). Only each entry's offset is in memory.
//! - [`StateMachine`]: [`TopicData`] applied in log order, plus the hand-over to the node's
//!   local delivery ([`Deliver`]): the member that leads, once it has applied every entry its
//!   log held when its leadership began (later entries are its own), becomes the one that
//!   delivers, with exactly the state the log gives; it stops at the first applied entry of
//!   another leader, or when it loses leadership ([`StateMachine::step_down`]). (Not at its
//!   election entry: openraft can resume a leadership after a restart without one, and an old
//!   term's election entry re-applied then would start a stale copy — seen in the five-kills
//!   test before this rule.) Snapshots are the whole [`TopicData`], written to a file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, RaftLogReader, RaftMetrics, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::topic::{Msg, OpReply, TopicData};
use crate::{NodeId, TypeConfig};

type SErr = StorageError<NodeId>;

fn io_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::write_logs(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> SErr {
    StorageIOError::read_logs(&e).into()
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct LogMeta {
    vote: Option<Vote<NodeId>>,
    purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

struct LogInner {
    log: nsq_store::EntryLog,
    meta: LogMeta,
    last: Option<LogId<NodeId>>,
    /// The most recent entries as appended (consecutive, ending at `last`): replication reads
    /// them back right away, so they are served from here instead of a `pread` and a decode.
    recent: std::collections::VecDeque<Entry<TypeConfig>>,
    /// Body bytes held by `recent`.
    recent_bytes: usize,
}

/// Bound on [`LogInner::recent`].
const RECENT_MAX_ENTRIES: usize = 4096;
/// Bound on the bodies [`LogInner::recent`] holds.
const RECENT_MAX_BYTES: usize = 64 << 20;

fn entry_bytes(e: &Entry<TypeConfig>) -> usize {
    match &e.payload {
        EntryPayload::Normal(crate::Op::Publish(m)) => m.iter().map(|m| m.body.len()).sum(),
        _ => 0,
    }
}

impl LogInner {
    fn remember(&mut self, entries: Vec<Entry<TypeConfig>>) {
        for e in entries {
            self.recent_bytes += entry_bytes(&e);
            self.recent.push_back(e);
        }
        while self.recent.len() > RECENT_MAX_ENTRIES || self.recent_bytes > RECENT_MAX_BYTES {
            match self.recent.pop_front() {
                Some(e) => self.recent_bytes -= entry_bytes(&e),
                None => break,
            }
        }
    }

    /// Entries `[from, to)` from `recent`, if it holds all of them.
    fn cached(&self, from: u64, to: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.recent.front()?.log_id.index;
        let last = self.recent.back()?.log_id.index;
        let to = to.min(last + 1);
        if from < first || from >= to {
            return None;
        }
        Some(
            self.recent
                .range((from - first) as usize..(to - first) as usize)
                .cloned()
                .collect(),
        )
    }

    /// Forgets cached entries with index ≥ `from` (truncate) or ≤ `upto` (purge).
    fn forget_from(&mut self, from: u64) {
        while self.recent.back().is_some_and(|e| e.log_id.index >= from) {
            let e = self.recent.pop_back().unwrap();
            self.recent_bytes -= entry_bytes(&e);
        }
    }

    fn forget_upto(&mut self, upto: u64) {
        while self.recent.front().is_some_and(|e| e.log_id.index <= upto) {
            let e = self.recent.pop_front().unwrap();
            self.recent_bytes -= entry_bytes(&e);
        }
    }
}

/// The consensus log of one group (see the module doc). Clones share the file.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    sync: bool,
}

impl LogStore {
    /// Opens (creating) the log in `dir`; `sync`: fdatasync every append before it counts.
    pub fn open(dir: &Path, sync: bool) -> Result<LogStore, nsq_store::StoreError> {
        let mut log = nsq_store::EntryLog::open(dir)?;
        let meta: LogMeta = match log.read_state()? {
            Some(b) => bincode::deserialize(&b).unwrap_or_else(|e| {
                tracing::error!(
                    "{}: unreadable consensus state ({e}), starting empty",
                    dir.display()
                );
                LogMeta::default()
            }),
            None => LogMeta::default(),
        };
        if let Some(p) = meta.purged {
            // A purge is recorded before the file forgets the prefix.
            log.purge(p.index)?;
        }
        let last = match log.range() {
            Some((_, l)) => {
                let e = log.read(l, l + 1)?;
                let ent: Entry<TypeConfig> = bincode::deserialize(&e[0].1)
                    .map_err(|e| nsq_store::StoreError::Invalid(format!("entry {l}: {e}")))?;
                Some(ent.log_id)
            }
            None => meta.purged,
        };
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                log,
                meta,
                last,
                recent: Default::default(),
                recent_bytes: 0,
            })),
            sync,
        })
    }

    fn save_meta(inner: &LogInner) -> Result<(), SErr> {
        let b = bincode::serialize(&inner.meta).map_err(io_err)?;
        inner.log.write_state(&b).map_err(io_err)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut LogInner) -> Result<T, SErr> + Send + 'static,
    ) -> Result<T, SErr> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut inner.lock()))
            .await
            .map_err(io_err)?
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        use std::ops::Bound;
        let from = match range.start_bound() {
            Bound::Included(&a) => a,
            Bound::Excluded(&a) => a + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&b) => b + 1,
            Bound::Excluded(&b) => b,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(hit) = self.inner.lock().cached(from, to) {
            return Ok(hit);
        }
        self.blocking(move |i| {
            let raw = i.log.read(from, to).map_err(read_err)?;
            raw.iter()
                .map(|(_, b)| bincode::deserialize(b).map_err(read_err))
                .collect()
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let i = self.inner.lock();
        Ok(LogState {
            last_purged_log_id: i.meta.purged,
            last_log_id: i.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let vote = *vote;
        self.blocking(move |i| {
            i.meta.vote = Some(vote);
            LogStore::save_meta(i)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(self.inner.lock().meta.vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // Kept in memory and written with the next vote or purge: losing it only means a
        // restarted member re-applies less at start and catches up from the leader.
        self.inner.lock().meta.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        Ok(self.inner.lock().meta.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut enc = Vec::new();
        let mut last = None;
        let mut kept = Vec::new();
        for e in entries {
            last = Some(e.log_id);
            enc.push((e.log_id.index, bincode::serialize(&e).map_err(io_err)?));
            kept.push(e);
        }
        let sync = self.sync;
        let inner = self.inner.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut i = inner.lock();
            i.log
                .append(enc.iter().map(|(idx, b)| (*idx, b.as_slice())))
                .and_then(|_| if sync { i.log.sync() } else { Ok(()) })?;
            if last.is_some() {
                i.last = last;
            }
            // Only a run that continues the cached one is cached.
            let follows = match (i.recent.back(), kept.first()) {
                (Some(b), Some(f)) => f.log_id.index == b.log_id.index + 1,
                _ => true,
            };
            if !follows {
                i.recent.clear();
                i.recent_bytes = 0;
            }
            i.remember(kept);
            Ok::<_, nsq_store::StoreError>(())
        })
        .await
        .map_err(io_err)?;
        match r {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                tracing::error!("consensus log append failed: {e}");
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(io_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.blocking(move |i| {
            i.forget_from(log_id.index);
            i.log.truncate(log_id.index).map_err(io_err)?;
            i.last = match i.log.range() {
                Some((_, l)) => {
                    let e = i.log.read(l, l + 1).map_err(read_err)?;
                    let ent: Entry<TypeConfig> = bincode::deserialize(&e[0].1).map_err(read_err)?;
                    Some(ent.log_id)
                }
                None => i.meta.purged,
            };
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.blocking(move |i| {
            i.meta.purged = Some(log_id);
            i.forget_upto(log_id.index);
            LogStore::save_meta(i)?;
            i.log.purge(log_id.index).map_err(io_err)?;
            if i.last.is_none_or(|l| l.index < log_id.index) {
                i.last = Some(log_id);
            }
            Ok(())
        })
        .await
    }
}

/// How a member's applied state reaches its local delivery (implemented by nsqd). Called on
/// the group's state-machine task, in log order, never concurrently for one topic.
pub trait Deliver: Send + Sync + 'static {
    /// This member now delivers the topic: `data` is everything the log says is owed.
    fn activate(&self, data: &TopicData);
    /// This member no longer delivers (another leader's entry was applied, or it lost
    /// leadership): drop the local copy and its consumers.
    fn deactivate(&self);
    /// Newly applied messages, while active.
    fn published(&self, msgs: &[Msg]);
    /// A channel applied as created, while active.
    fn channel_created(&self, name: &str);
    /// A channel applied as deleted, while active.
    fn channel_deleted(&self, name: &str);
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SmFile {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    data: TopicData,
}

/// A snapshot's meta and encoded bytes.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Arc<Vec<u8>>);

struct SmInner {
    file: SmFile,
    active: bool,
    /// The term `active` was set in.
    active_term: Option<u64>,
    /// This node leads in `term`, and every entry up to `target` (the log's last index when
    /// the leadership was first seen) must be applied before delivery starts: entries after it
    /// are this leader's own, so from then on the state plus what is applied next is exactly
    /// what the log says. (openraft may resume a leadership after a restart without a new
    /// election entry, so an election entry is not a safe trigger.)
    lead: Option<(u64, u64)>,
    /// A term delivery was stepped down in (lost majority contact): not started again in it.
    stepped: Option<u64>,
    /// The last snapshot built or installed (its encoded bytes and meta).
    snapshot: Option<StoredSnapshot>,
}

/// The state machine of one group (see the module doc). Clones share it.
#[derive(Clone)]
pub struct StateMachine {
    me: NodeId,
    dir: PathBuf,
    inner: Arc<Mutex<SmInner>>,
    deliver: Arc<dyn Deliver>,
    /// Set once the `Raft` is built: entries re-applied at start never activate delivery.
    live: Arc<AtomicBool>,
    /// The group's metrics (set with `live`): whether this node leads, and in which term.
    metrics: Arc<std::sync::OnceLock<tokio::sync::watch::Receiver<RaftMetrics<NodeId, BasicNode>>>>,
}

impl StateMachine {
    /// Opens the state machine of `dir`, from its snapshot file if any.
    pub fn open(
        dir: &Path,
        me: NodeId,
        deliver: Arc<dyn Deliver>,
    ) -> Result<StateMachine, nsq_store::StoreError> {
        let (file, snapshot) = match nsq_store::entrylog::read_small(&dir.join("snapshot"))? {
            Some(b) => {
                match bincode::deserialize::<(SnapshotMeta<NodeId, BasicNode>, SmFile)>(&b) {
                    Ok((meta, mut f)) => {
                        f.data.reindex();
                        (f, Some((meta, Arc::new(b.to_vec()))))
                    }
                    Err(e) => {
                        tracing::error!(
                            "{}: unreadable snapshot ({e}); the leader will send one",
                            dir.display()
                        );
                        (SmFile::default(), None)
                    }
                }
            }
            None => (SmFile::default(), None),
        };
        Ok(StateMachine {
            me,
            dir: dir.to_path_buf(),
            inner: Arc::new(Mutex::new(SmInner {
                file,
                active: false,
                active_term: None,
                lead: None,
                stepped: None,
                snapshot,
            })),
            deliver,
            live: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Entries applied from now on may activate delivery; `metrics` tells whether (and in which
    /// term) this node leads.
    pub fn set_live(&self, metrics: tokio::sync::watch::Receiver<RaftMetrics<NodeId, BasicNode>>) {
        let _ = self.metrics.set(metrics);
        self.live.store(true, Ordering::Release);
    }

    /// Starts delivery once this node leads and has applied everything up to its leadership's
    /// target (see `SmInner::lead`), unless it is already on for that term (a copy from an
    /// older term is replaced). Called after each applied entry and when the metrics change.
    fn try_activate(&self, i: &mut SmInner) {
        let Some((t, target)) = i.lead else { return };
        if !self.live.load(Ordering::Acquire) || i.active_term == Some(t) {
            return;
        }
        if i.file.last_applied.map_or(0, |l| l.index) < target {
            return;
        }
        let leads = self.metrics.get().is_some_and(|rx| {
            let m = rx.borrow();
            m.state == openraft::ServerState::Leader && m.current_term == t
        });
        if !leads {
            return;
        }
        if i.active {
            self.deliver.deactivate();
        }
        i.active = true;
        i.active_term = Some(t);
        self.deliver.activate(&i.file.data);
    }

    /// Takes note of the role openraft reports (called when its metrics change): a new
    /// leadership gets its target, a lost one none; then delivery starts if it can.
    pub fn observe_role(&self) {
        let Some(rx) = self.metrics.get() else { return };
        let (leader, term, last) = {
            let m = rx.borrow();
            (
                m.state == openraft::ServerState::Leader,
                m.current_term,
                m.last_log_index.unwrap_or(0),
            )
        };
        let mut i = self.inner.lock();
        if !leader {
            i.lead = None;
            return;
        }
        if i.lead.is_none_or(|(t, _)| t != term) && i.stepped != Some(term) {
            i.lead = Some((term, last));
        }
        self.try_activate(&mut i);
    }

    /// Leadership lost without a new entry (e.g. cut off from the majority): stop delivering.
    pub fn step_down(&self) {
        let mut i = self.inner.lock();
        // Not again in this term: a new election starts it again.
        i.stepped = i.lead.map(|(t, _)| t).or(i.active_term);
        i.lead = None;
        if i.active {
            i.active = false;
            i.active_term = None;
            self.deliver.deactivate();
        }
    }

    /// Whether this member delivers.
    pub fn is_active(&self) -> bool {
        self.inner.lock().active
    }

    /// Messages the replicated state keeps, and the number of channels.
    pub fn figures(&self) -> (usize, BTreeMap<String, u64>) {
        let i = self.inner.lock();
        let d = &i.file.data;
        (
            d.message_count(),
            d.channel_names()
                .map(|c| (c.to_string(), d.owed_count(c)))
                .collect(),
        )
    }

    /// Channel names in the replicated state.
    pub fn channel_names(&self) -> Vec<String> {
        self.inner
            .lock()
            .file
            .data
            .channel_names()
            .map(str::to_string)
            .collect()
    }

    fn write_snapshot(
        dir: &Path,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        file: &SmFile,
    ) -> Result<Vec<u8>, SErr> {
        let b = bincode::serialize(&(meta, file))
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        nsq_store::entrylog::write_small(dir, "snapshot", &b)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(b)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        let (meta, enc) = {
            let i = self.inner.lock();
            let last = i.file.last_applied;
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: i.file.membership.clone(),
                snapshot_id: last.map_or_else(
                    || "0".to_string(),
                    |l| format!("{}-{}", l.leader_id, l.index),
                ),
            };
            let enc = bincode::serialize(&(&meta, &i.file))
                .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            (meta, enc)
        };
        let dir = self.dir.clone();
        let enc2 = enc.clone();
        tokio::task::spawn_blocking(move || {
            nsq_store::entrylog::write_small(&dir, "snapshot", &enc2)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let enc = Arc::new(enc);
        self.inner.lock().snapshot = Some((meta.clone(), enc.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(enc.to_vec())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SErr> {
        let i = self.inner.lock();
        Ok((i.file.last_applied, i.file.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<OpReply>, SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
    {
        let mut out = Vec::new();
        let mut i = self.inner.lock();
        for e in entries {
            let leader = e.log_id.leader_id.node_id;
            i.file.last_applied = Some(e.log_id);
            // After delivery started, entries are this leader's own; one of another leader's
            // means it was deposed.
            if leader != self.me && i.active {
                i.active = false;
                i.active_term = None;
                i.lead = None;
                self.deliver.deactivate();
            }
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(op) => {
                    i.file.data.apply(&op);
                    if i.active {
                        match &op {
                            crate::Op::Publish(msgs) => self.deliver.published(msgs),
                            crate::Op::CreateChannel(c) => self.deliver.channel_created(c),
                            crate::Op::DeleteChannel(c) => self.deliver.channel_deleted(c),
                            crate::Op::Finish { .. } => {}
                        }
                    }
                }
                EntryPayload::Membership(m) => {
                    i.file.membership = StoredMembership::new(Some(e.log_id), m);
                }
            }
            if !i.active && i.lead.is_some() {
                self.try_activate(&mut i);
            }
            out.push(OpReply::default());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let bytes = snapshot.into_inner();
        let (_, mut file): (SnapshotMeta<NodeId, BasicNode>, SmFile) = bincode::deserialize(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        file.data.reindex();
        file.last_applied = meta.last_log_id;
        file.membership = meta.last_membership.clone();
        let dir = self.dir.clone();
        let meta2 = meta.clone();
        let enc = {
            let f = std::mem::take(&mut file);
            let (enc, f) = tokio::task::spawn_blocking(move || {
                let r = StateMachine::write_snapshot(&dir, &meta2, &f);
                (r, f)
            })
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
            file = f;
            enc?
        };
        let mut i = self.inner.lock();
        i.lead = None;
        if i.active {
            i.active = false;
            i.active_term = None;
            self.deliver.deactivate();
        }
        i.file = file;
        i.snapshot = Some((meta.clone(), Arc::new(enc)));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let i = self.inner.lock();
        Ok(i.snapshot.as_ref().map(|(meta, b)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(b.to_vec())),
        }))
    }
}
