//! The data directory: `nsqd.dat` (topics, channels, paused flags) and the go-diskqueue files
//! that hold messages across a restart, in Go nsqd 1.3's formats so either daemon can take
//! over the other's directory.
//!
//! What happens when:
//! - **Start:** the directory is locked (`flock`, as Go's `dirlock`, so neither a second
//!   nsq-rs nor a Go nsqd can use it at the same time), `nsqd.dat` is read, topics and
//!   channels are recreated with their paused flags, and each queue's unread records are
//!   loaded with a read-only [`nsq_diskqueue::scan`]. The files stay as they are until the next
//!   clean shutdown, so a crash in between loses nothing that was on disk (messages already
//!   finished may be delivered again — at least once, never zero times).
//! - **Create, delete, pause:** the metadata is marked dirty and a background task rewrites
//!   `nsqd.dat` at most every [`METADATA_COALESCE`], so creating 10,000 topics costs a few
//!   writes, not 10,000 (Go rewrites the file on every creation).
//! - **Empty or delete** of a topic or channel also removes its queue files, so a restart
//!   cannot bring those messages back.
//! - **Clean shutdown (hand-back to Go):** every non-ephemeral channel's queued, in-flight and
//!   deferred messages — those in memory *and* those only in its topic log (the spilled or
//!   durable backlog) — and every topic's held messages (in memory and in its log) are written
//!   to their go-diskqueue files (deferral is lost, attempts are kept — Go's `Channel.flush`),
//!   then `nsqd.dat`. The directory is then complete for Go nsqd 1.3.0: it takes over every
//!   message. `nsqd --export-go-data` does the same for a stopped node (e.g. after a crash).
//! - **The hand-back marker** (`nsqd.nsqrs-handback.json`, [`HANDBACK_FILE`]) lets the next
//!   nsq-rs start keep using its topic logs instead of loading the whole export into memory:
//!   it records, per queue, how many records at the head of the go-diskqueue are *not* also in
//!   a topic log (they are written first), and the exact text of every go-diskqueue metadata
//!   file the export left. At start ([`DataDir::take_handback`]):
//!   - marker `exported` and every metadata file unchanged: the topic logs and journals are
//!     current; only each queue's head is loaded, and the marker becomes `running`;
//!   - marker `exported` but the files changed (Go nsqd ran on the directory, consumed and
//!     rewrote its queues): the topic logs are stale, so they and the journals are removed and
//!     every queue is loaded whole;
//!   - marker `running` (nsq-rs stopped without an export, e.g. a crash, after starting from
//!     an export) or `partial` (the stop left out what only the logs hold: more than
//!     `--export-go-data-max-bytes`, or more than the free disk space): logs are current,
//!     queue heads are loaded;
//!   - no marker (a Go directory, an older nsq-rs, or an export that failed part-way): every
//!     record of every queue is loaded and the logs are current too — a failed export can then
//!     deliver some messages twice, never zero times.
//!
//! The marker is removed before an export starts and written only after it succeeded.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsq_diskqueue::{DiskQueue, DiskQueueOptions};
use nsq_protocol::names::{is_ephemeral, is_valid_channel_name, is_valid_topic_name};
use nsq_protocol::{Message, MessageId};
use serde::{Deserialize, Serialize};

use crate::state::policy::{ChannelPolicy, TopicPolicy};
use tokio::sync::Notify;

use crate::config::Options;
use crate::state::batch::Batch;
use crate::state::channel::MsgRef;
use crate::Nsqd;

/// How long metadata changes are gathered before `nsqd.dat` is rewritten.
pub const METADATA_COALESCE: Duration = Duration::from_millis(200);

/// Messages per batch when loading a queue.
const LOAD_BATCH: usize = 4096;

/// Message payloads (go-diskqueue records of Go's message encoding) gathered for one
/// `DiskQueue::put_batch`.
#[derive(Default)]
struct PayloadBatch {
    bytes: BytesMut,
    ends: Vec<usize>,
}

impl PayloadBatch {
    fn push(&mut self, ts: i64, attempts: u16, id: &MessageId, body: &[u8]) {
        nsq_protocol::message::put_message_payload(&mut self.bytes, ts, attempts, id, body);
        self.ends.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Appends everything gathered to `q` and starts over.
    fn write_to(&mut self, q: &mut DiskQueue) -> Result<(), nsq_diskqueue::DiskQueueError> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let mut start = 0;
        let payloads: Vec<&[u8]> = self
            .ends
            .iter()
            .map(|&end| {
                let p = &self.bytes[start..end];
                start = end;
                p
            })
            .collect();
        let res = q.put_batch(&payloads);
        self.bytes.clear();
        self.ends.clear();
        res
    }
}

/// The hand-back marker's file name (see the module docs).
pub const HANDBACK_FILE: &str = "nsqd.nsqrs-handback.json";

/// The hand-back marker: which go-diskqueue records are an export of the topic logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Handback {
    /// `exported` (written by a clean shutdown) or `running` (an nsq-rs started from it).
    state: String,
    /// Queue name (`topic` or `topic:channel`) → what the export left for it.
    queues: BTreeMap<String, QueueMark>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct QueueMark {
    /// Records at the head of the queue that are not in a topic log.
    own: u64,
    /// The text of its `.diskqueue.meta.dat` after the export.
    meta: String,
}

/// Which go-diskqueue records [`restore`] loads.
#[derive(Debug, Clone, Default)]
enum LoadPlan {
    /// Every unread record.
    #[default]
    All,
    /// Per queue, only this many head records (the rest are in topic logs); a queue not
    /// listed is loaded whole.
    Heads(BTreeMap<String, u64>),
}

/// Data directory failures.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The directory cannot be created or opened.
    #[error("cannot open data path {path}: {source}")]
    Open {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Another process holds the lock.
    #[error("cannot lock data path {path}: possibly in use by another instance of nsqd")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// Reading or writing `nsqd.dat` failed.
    #[error("{what} {path}: {source}")]
    Metadata {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A queue file operation failed.
    #[error(transparent)]
    Queue(#[from] nsq_diskqueue::DiskQueueError),
    /// Reading a topic log failed.
    #[error(transparent)]
    Log(#[from] nsq_store::StoreError),
    /// An export would not fit on the disk.
    #[error("exporting to go-diskqueue files in {path} needs about {need} bytes, {free} are free")]
    NoSpace {
        /// The data directory.
        path: PathBuf,
        /// Bytes the export would write (estimate).
        need: u64,
        /// Bytes free.
        free: u64,
    },
}

/// `nsqd.dat`, field for field as Go writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataFile {
    /// Topics.
    pub topics: Vec<TopicMeta>,
    /// Version that wrote the file.
    pub version: String,
}

/// One topic in `nsqd.dat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicMeta {
    /// Name.
    pub name: String,
    /// Paused flag.
    pub paused: bool,
    /// Channels; Go writes `null` for none.
    pub channels: Option<Vec<ChannelMeta>>,
    /// nsq-rs: the topic's policy (`/topic/config`), only when one is set. Go nsqd 1.3
    /// ignores unknown fields, so it still reads the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsqrs_config: Option<serde_json::Value>,
}

/// One channel in `nsqd.dat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelMeta {
    /// Name.
    pub name: String,
    /// Paused flag.
    pub paused: bool,
    /// nsq-rs: the channel's policy (`/channel/config`), only when one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsqrs_config: Option<serde_json::Value>,
}

/// An open, locked data directory.
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    queue_opts: DiskQueueOptions,
    dirty: Notify,
    plan: parking_lot::Mutex<LoadPlan>,
}

impl DataDir {
    /// Creates (if needed) and locks the directory.
    pub fn open(path: &Path, opts: &Options) -> Result<Arc<DataDir>, PersistError> {
        fs::create_dir_all(path).map_err(|source| PersistError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let lock = File::open(path).map_err(|source| PersistError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // flock(LOCK_EX|LOCK_NB) on the directory itself, like Go's internal/dirlock.
        lock.try_lock().map_err(|_| PersistError::Locked {
            path: path.to_path_buf(),
        })?;
        Ok(Arc::new(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
            queue_opts: DiskQueueOptions {
                max_bytes_per_file: opts.max_bytes_per_file,
                min_msg_size: nsq_protocol::message::MSG_HEADER_LEN as i32,
                max_msg_size: (opts.max_msg_size as i32)
                    .saturating_add(nsq_protocol::message::MSG_HEADER_LEN as i32),
                sync_every: opts.sync_every,
                sync_timeout: opts.sync_timeout,
            },
            dirty: Notify::new(),
            plan: parking_lot::Mutex::new(LoadPlan::All),
        }))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn metadata_path(&self) -> PathBuf {
        self.path.join("nsqd.dat")
    }

    /// Asks the metadata task to rewrite `nsqd.dat` soon.
    pub fn mark_dirty(&self) {
        self.dirty.notify_one();
    }

    /// Reads `nsqd.dat`; `None` when absent. A garbled file is renamed to `nsqd.dat.bad`
    /// (kept for the operator) and treated as absent, so the daemon still starts.
    pub fn read_metadata(&self) -> Result<Option<MetadataFile>, PersistError> {
        let path = self.metadata_path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(PersistError::Metadata {
                    what: "failed to read",
                    path,
                    source,
                })
            }
        };
        match serde_json::from_slice::<MetadataFile>(&text) {
            Ok(m) => Ok(Some(m)),
            Err(e) => {
                let bad = self.path.join("nsqd.dat.bad");
                tracing::error!(
                    "failed to parse metadata {}: {e}; moving it to {} and starting without it",
                    path.display(),
                    bad.display()
                );
                let _ = fs::rename(&path, &bad);
                Ok(None)
            }
        }
    }

    /// Writes `nsqd.dat` atomically: temp file, fsync, rename, fsync of the directory.
    pub fn write_metadata(&self, meta: &MetadataFile) -> Result<(), PersistError> {
        let data = serde_json::to_vec(meta).expect("metadata serialises");
        write_atomic(&self.path, "nsqd.dat", &data)
    }

    /// Removes every file of queue `name` (topic, or `topic:channel`). Called from admin
    /// operations (empty, delete) on runtime workers, so it runs through `block_in_place`.
    pub fn remove_queue(&self, name: &str) {
        crate::durable::off_runtime(|| self.remove_queue_now(name))
    }

    fn remove_queue_now(&self, name: &str) {
        match DiskQueue::open(&self.path, name, self.queue_opts.clone()) {
            Ok(mut q) => {
                if let Err(e) = q.delete() {
                    tracing::error!("failed to remove queue files of {name}: {e}");
                }
            }
            Err(e) => tracing::error!("failed to open queue {name} to remove it: {e}"),
        }
    }

    /// Loads a queue's unread messages without changing its files (only its head when the
    /// hand-back marker says the rest is in a topic log).
    fn load_queue(&self, name: &str) -> Vec<Message> {
        let limit = match &*self.plan.lock() {
            LoadPlan::All => usize::MAX,
            LoadPlan::Heads(h) => h.get(name).map_or(usize::MAX, |&n| n as usize),
        };
        if limit == 0 {
            return Vec::new();
        }
        let s = match nsq_diskqueue::scan_first(
            &self.path,
            name,
            self.queue_opts.min_msg_size,
            self.queue_opts.max_msg_size,
            limit,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("failed to read queue {name}: {e}");
                return Vec::new();
            }
        };
        for p in &s.problems {
            tracing::error!("queue {name}: {p}");
        }
        let mut out = Vec::with_capacity(s.records.len());
        for r in s.records {
            match Message::decode(r) {
                Ok(m) => out.push(m),
                Err(e) => tracing::error!("queue {name}: skipping undecodable record: {e}"),
            }
        }
        out
    }

    /// Replaces a queue's contents with, in this order, `own` (messages no topic log holds),
    /// `logged` (in memory and in a log) and the records of `backlog` (only in a log), and
    /// syncs it. Returns the text of its metadata file, or `None` when there was nothing to
    /// write (leftover files are removed).
    fn export_queue(
        &self,
        name: &str,
        own: &[MsgRef],
        logged: &[MsgRef],
        backlog: Option<LogRange>,
    ) -> Result<Option<String>, PersistError> {
        let total = (own.len() + logged.len()) as u64 + backlog.as_ref().map_or(0, |b| b.count);
        if total == 0 {
            // Nothing to keep: remove leftover files if there are any, and otherwise touch
            // nothing, so a shutdown with 10,000 idle topics costs no fsyncs.
            if self
                .path
                .join(format!("{name}.diskqueue.meta.dat"))
                .exists()
            {
                self.remove_queue(name);
            }
            return Ok(None);
        }
        let mut q = DiskQueue::open(&self.path, name, self.queue_opts.clone())?;
        q.empty()?;
        // Records go out through `DiskQueue::put_batch`, up to LOAD_BATCH at a time: one
        // `write` per batch and data file instead of one per message.
        let mut batch = PayloadBatch::default();
        for m in own.iter().chain(logged) {
            let b = &m.batch;
            batch.push(b.timestamp(m.idx), m.attempts, &b.id(m.idx), b.body(m.idx));
            if batch.len() >= LOAD_BATCH {
                batch.write_to(&mut q)?;
            }
        }
        batch.write_to(&mut q)?;
        if let Some(mut r) = backlog {
            let mut pos = r.from;
            let mut written = 0u64;
            let mut progress = std::time::Instant::now();
            while pos < r.end {
                let rb = r.reader.read_range(pos, r.end, LOAD_BATCH, 4 << 20)?;
                for (p, m) in &rb.records {
                    if r.skip.as_ref().is_some_and(|s| s.contains(*p)) {
                        continue;
                    }
                    batch.push(m.timestamp, m.attempts, &m.id, &m.body);
                    written += 1;
                }
                batch.write_to(&mut q)?;
                if progress.elapsed() >= Duration::from_secs(5) {
                    progress = std::time::Instant::now();
                    tracing::info!(
                        "exporting {name}: {written} of {} messages from its topic log written so far",
                        r.count
                    );
                }
                if rb.records.is_empty() || rb.next_pos <= pos {
                    break;
                }
                pos = rb.next_pos;
            }
            if written != r.count {
                tracing::warn!(
                    "exporting {name}: its topic log gave {written} messages, {} were expected",
                    r.count
                );
            }
        }
        q.close()?;
        let meta = q.meta_file_path();
        fs::read_to_string(&meta)
            .map(Some)
            .map_err(|source| PersistError::Metadata {
                what: "failed to read back",
                path: meta,
                source,
            })
    }

    /// Every go-diskqueue metadata file in the directory: queue name → its text.
    fn diskqueue_metas(&self) -> Result<BTreeMap<String, String>, PersistError> {
        let io = |source| PersistError::Open {
            path: self.path.clone(),
            source,
        };
        let mut out = BTreeMap::new();
        for e in fs::read_dir(&self.path).map_err(io)? {
            let e = e.map_err(io)?;
            let file = e.file_name();
            let Some(queue) = file
                .to_str()
                .and_then(|f| f.strip_suffix(".diskqueue.meta.dat"))
            else {
                continue;
            };
            // Unreadable counts as changed (the text cannot match).
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            out.insert(queue.to_string(), text);
        }
        Ok(out)
    }

    /// Reads the hand-back marker at start, before the topic logs are opened, and decides
    /// what [`restore`] loads from the go-diskqueue files (see the module docs). Removes the
    /// topic logs and journals when Go nsqd has taken the directory over since the export.
    pub fn take_handback(&self) -> Result<(), PersistError> {
        let path = self.path.join(HANDBACK_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(PersistError::Metadata {
                    what: "failed to read",
                    path,
                    source,
                })
            }
        };
        let hb: Handback = match serde_json::from_slice(&text) {
            Ok(h) => h,
            Err(e) => {
                // Without it every queue is loaded whole and the logs are used too: at worst
                // some messages are delivered twice.
                tracing::error!(
                    "unreadable hand-back marker {}: {e}; loading every go-diskqueue record",
                    path.display()
                );
                let _ = fs::remove_file(&path);
                return Ok(());
            }
        };
        if hb.state == "partial" {
            tracing::info!(
                "{}: the last stop wrote only the messages that are not in topic logs to go-diskqueue files; continuing from the topic logs",
                self.path.display()
            );
        }
        if hb.state == "exported" {
            let found = self.diskqueue_metas()?;
            let exported: BTreeMap<String, String> = hb
                .queues
                .iter()
                .map(|(q, m)| (q.clone(), m.meta.clone()))
                .collect();
            if found != exported {
                let removed = remove_store_files(&self.path);
                tracing::warn!(
                    "{}: the go-diskqueue files changed since nsq-rs exported them (Go nsqd ran \
                     on this directory): taking them as they are and removing {removed} stale \
                     topic log and journal files",
                    self.path.display()
                );
                fs::remove_file(&path).map_err(|source| PersistError::Metadata {
                    what: "failed to remove",
                    path: path.clone(),
                    source,
                })?;
                sync_dir(&self.path);
                return Ok(());
            }
            tracing::info!(
                "{}: the go-diskqueue files are nsq-rs's own export; continuing from the topic logs",
                self.path.display()
            );
            let running = Handback {
                state: "running".into(),
                queues: hb.queues.clone(),
            };
            self.write_handback(&running)?;
        }
        *self.plan.lock() =
            LoadPlan::Heads(hb.queues.iter().map(|(q, m)| (q.clone(), m.own)).collect());
        Ok(())
    }

    fn write_handback(&self, hb: &Handback) -> Result<(), PersistError> {
        let data = serde_json::to_vec_pretty(hb).expect("marker serialises");
        write_atomic(&self.path, HANDBACK_FILE, &data)
    }

    /// Removes the hand-back marker (before an export rewrites the queues), durably.
    fn remove_handback(&self) -> Result<(), PersistError> {
        let path = self.path.join(HANDBACK_FILE);
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.path);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PersistError::Metadata {
                what: "failed to remove",
                path,
                source,
            }),
        }
    }
}

/// Part of a topic log to export: `[from, end)` except `skip`, `count` messages.
struct LogRange {
    reader: nsq_store::LogReader,
    from: u64,
    end: u64,
    skip: Option<nsq_store::AckSet>,
    count: u64,
}

/// fsyncs a directory (errors ignored: the rename or removal itself succeeded).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `dir/name` atomically: temp file, fsync, rename, fsync of the directory.
fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), PersistError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let io = |what, source| PersistError::Metadata {
        what,
        path: path.clone(),
        source,
    };
    let mut f = File::create(&tmp).map_err(|e| io("failed to create temp file for", e))?;
    f.write_all(data).map_err(|e| io("failed to write", e))?;
    f.sync_all().map_err(|e| io("failed to sync", e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| io("failed to rename temp file onto", e))?;
    sync_dir(dir);
    Ok(())
}

/// Removes every topic log segment and channel journal in `dir`; returns how many.
fn remove_store_files(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let ours = name.ends_with(".nsqrs.journal")
            || (name.ends_with(".log") && name.contains(".nsqrs."));
        if ours {
            match fs::remove_file(e.path()) {
                Ok(()) => n += 1,
                Err(err) => tracing::error!("cannot remove {}: {err}", e.path().display()),
            }
        }
    }
    sync_dir(dir);
    n
}

fn batches(msgs: &[Message]) -> impl Iterator<Item = Arc<Batch>> + '_ {
    msgs.chunks(LOAD_BATCH)
        .map(|c| Arc::new(Batch::explicit(c)))
}

/// The current topics and channels, as `nsqd.dat` records them (ephemeral ones excluded).
pub fn snapshot(nsqd: &Nsqd) -> MetadataFile {
    let topics = nsqd
        .topics()
        .into_iter()
        .filter(|t| !t.ephemeral && !t.replicated)
        .map(|t| {
            let channels: Vec<ChannelMeta> = t
                .channels()
                .into_iter()
                .filter(|c| !c.ephemeral)
                .map(|c| {
                    let p = c.policy();
                    ChannelMeta {
                        name: c.name.clone(),
                        paused: c.is_paused(),
                        nsqrs_config: (!p.is_empty()).then(|| p.to_json()),
                    }
                })
                .collect();
            let p = t.policy();
            TopicMeta {
                name: t.name.clone(),
                paused: t.is_paused(),
                channels: (!channels.is_empty()).then_some(channels),
                nsqrs_config: (!p.is_empty()).then(|| p.to_json()),
            }
        })
        .collect();
    MetadataFile {
        topics,
        version: nsq_protocol::NSQ_VERSION.to_string(),
    }
}

/// Recreates topics, channels and their messages from the data directory: `nsqd.dat`, the
/// go-diskqueue files of a clean shutdown (ours or Go's), and in durable mode the topic logs
/// and channel journals (including topics created too recently to be in `nsqd.dat`).
pub fn restore(nsqd: &Nsqd, dir: &DataDir) -> Result<(), PersistError> {
    let meta = dir.read_metadata()?.unwrap_or_default();
    // topic -> (paused, channel -> paused)
    let mut topics: BTreeMap<String, (bool, BTreeMap<String, bool>)> = BTreeMap::new();
    // Policies (nsq-rs's extra fields), applied once the topics and channels exist.
    let mut topic_policies: BTreeMap<String, TopicPolicy> = BTreeMap::new();
    let mut channel_policies: BTreeMap<(String, String), ChannelPolicy> = BTreeMap::new();
    for tm in &meta.topics {
        if !is_valid_topic_name(tm.name.as_bytes()) || is_ephemeral(&tm.name) {
            tracing::warn!("skipping topic {:?} from metadata: invalid name", tm.name);
            continue;
        }
        let entry = topics.entry(tm.name.clone()).or_default();
        entry.0 = tm.paused;
        if let Some(v) = &tm.nsqrs_config {
            match TopicPolicy::from_json(v) {
                Ok(p) => {
                    topic_policies.insert(tm.name.clone(), p);
                }
                Err(e) => tracing::error!(
                    "TOPIC({}): ignoring its config in metadata ({v}): {e}",
                    tm.name
                ),
            }
        }
        for cm in tm.channels.iter().flatten() {
            if !is_valid_channel_name(cm.name.as_bytes()) || is_ephemeral(&cm.name) {
                tracing::warn!(
                    "skipping channel {:?} of topic {} from metadata: invalid name",
                    cm.name,
                    tm.name
                );
                continue;
            }
            entry.1.insert(cm.name.clone(), cm.paused);
            if let Some(v) = &cm.nsqrs_config {
                match ChannelPolicy::from_json(v) {
                    Ok(p) => {
                        channel_policies.insert((tm.name.clone(), cm.name.clone()), p);
                    }
                    Err(e) => tracing::error!(
                        "TOPIC({}): ignoring channel({})'s config in metadata ({v}): {e}",
                        tm.name,
                        cm.name
                    ),
                }
            }
        }
    }
    let mut log_topics = std::collections::BTreeSet::new();
    if nsqd.store.is_some() {
        match nsq_store::list_dir(dir.path()) {
            Ok(listing) => {
                log_topics.extend(listing.topics.keys().cloned());
                for t in listing.topics.keys() {
                    if is_valid_topic_name(t.as_bytes()) && !is_ephemeral(t) {
                        topics.entry(t.clone()).or_default();
                    }
                }
                for (t, c) in listing.journals {
                    if is_valid_topic_name(t.as_bytes())
                        && !is_ephemeral(&t)
                        && is_valid_channel_name(c.as_bytes())
                        && !is_ephemeral(&c)
                    {
                        topics.entry(t).or_default().1.entry(c).or_insert(false);
                    }
                }
            }
            Err(e) => tracing::error!("cannot list topic logs in {}: {e}", dir.path().display()),
        }
    }
    // Topics with a log on disk: all of them in durable mode; in the default mode, those
    // that spilled.
    let logged: std::collections::BTreeSet<String> = match &nsqd.store {
        Some(_) if nsqd.opts.mem_queue_size <= 0 => topics.keys().cloned().collect(),
        Some(_) => log_topics,
        None => Default::default(),
    };
    let mut n_msgs = 0usize;
    for (name, (paused, channels)) in &topics {
        let topic = match &nsqd.store {
            Some(store) if logged.contains(name) => {
                let chans: Vec<(String, bool)> =
                    channels.iter().map(|(c, p)| (c.clone(), *p)).collect();
                match crate::durable::restore_topic(nsqd, store, name, &chans) {
                    Ok((t, n)) => {
                        n_msgs += n;
                        t
                    }
                    Err(e) => {
                        tracing::error!("failed to restore topic {name} from its log: {e}");
                        nsqd.get_or_create_topic(name)
                    }
                }
            }
            _ => nsqd.get_or_create_topic(name),
        };
        // Pause first so held topic messages stay held when the topic was paused.
        topic.set_paused(*paused);
        if let Some(p) = topic_policies.remove(name) {
            topic.set_policy(p);
        }
        for (cname, cpaused) in channels {
            let Ok((ch, _)) = topic.get_or_create_channel(cname) else {
                continue;
            };
            ch.set_paused(*cpaused);
            if let Some(p) = channel_policies.remove(&(name.clone(), cname.clone())) {
                ch.set_policy(p, topic.policy().ttl, nsqd.weak());
            }
            let msgs = dir.load_queue(&format!("{name}:{cname}"));
            n_msgs += msgs.len();
            let mut st = ch.state.lock();
            for b in batches(&msgs) {
                let n = b.len();
                st.restore(b, n);
            }
        }
        let msgs = dir.load_queue(name);
        n_msgs += msgs.len();
        for b in batches(&msgs) {
            topic.restore_held(b);
        }
        topic.spill_if_needed();
    }
    if !topics.is_empty() {
        tracing::info!(
            "restored {} topics and {n_msgs} messages from {}",
            topics.len(),
            dir.path().display()
        );
    }
    Ok(())
}

/// How much of what the topic logs hold [`flush`] writes to go-diskqueue files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// A clean stop: at most this many bytes (estimated; negative: no limit), and only if
    /// they fit on the disk; otherwise only what no log holds, and the stop says how to hand
    /// the directory to Go later.
    AtStop(i64),
    /// `--export-go-data`: everything, or an error before anything is written when it does
    /// not fit on the disk.
    Full,
}

/// Bytes an export of what the topic logs hold would write (estimated from the log ranges
/// and the topics' average message size; memory counts every message as logged).
fn logged_bytes_estimate(nsqd: &Nsqd) -> u64 {
    let mut total = 0u64;
    for t in nsqd.topics() {
        if t.ephemeral || !t.has_log() {
            continue;
        }
        let count = t.message_count().max(1);
        let per_msg = t.message_bytes() / count + MSG_OVERHEAD_ON_DISK;
        let (held, held_backlog) = t.held_extent();
        total += held * per_msg + held_backlog;
        for ch in t.channels() {
            if ch.ephemeral {
                continue;
            }
            let (mem, backlog) = ch.state.lock().extent();
            total += mem * per_msg + backlog;
        }
    }
    total
}

/// A go-diskqueue record's bytes beyond its body: 4-byte length, 8-byte timestamp, 2-byte
/// attempts, 16-byte id.
const MSG_OVERHEAD_ON_DISK: u64 = 30;

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Writes every queued message and the metadata to disk in Go nsqd 1.3's format (clean
/// shutdown, `--export-go-data`): what is in memory and what only the topic logs hold, so Go
/// nsqd can take the directory over. Then writes the hand-back marker, so the next nsq-rs start
/// continues from its topic logs instead (see the module docs). With [`Export::AtStop`], what
/// only the logs hold is left out when it is over the limit or does not fit on the disk (the
/// marker then says `partial`).
pub fn flush(nsqd: &Nsqd, dir: &DataDir, export: Export) -> Result<(), PersistError> {
    let need = logged_bytes_estimate(nsqd);
    let free = free_bytes(dir.path());
    // Leave a tenth of the free space (and what the memory part needs) to the rest.
    let fits = free.is_none_or(|f| need <= f / 10 * 9);
    let export_logged = match export {
        Export::Full if !fits => {
            return Err(PersistError::NoSpace {
                path: dir.path().to_path_buf(),
                need,
                free: free.unwrap_or(0),
            })
        }
        Export::Full => true,
        Export::AtStop(max) => fits && (max < 0 || need <= max as u64),
    };
    if !export_logged && need > 0 {
        tracing::warn!(
            "not writing the ~{} MB of messages that are only in topic logs to go-diskqueue files ({}): nsq-rs continues from its logs; to hand this directory to Go nsqd, stop nsq-rs and run nsqd --export-go-data --data-path={}",
            need >> 20,
            if fits {
                "over --export-go-data-max-bytes"
            } else {
                "not enough free disk space"
            },
            dir.path().display()
        );
    }
    dir.remove_handback()?;
    let mut first_err = None;
    let (mut n_msgs, mut n_logged) = (0u64, 0u64);
    let mut marks = BTreeMap::new();
    let started = std::time::Instant::now();
    for t in nsqd.topics() {
        if t.ephemeral || t.replicated {
            continue;
        }
        let reader = t.store().map(|(_, ts)| ts.reader.clone());
        let range = |from, end, skip, count| match &reader {
            Some(r) => Some(LogRange {
                reader: r.clone(),
                from,
                end,
                skip,
                count,
            }),
            None => {
                tracing::error!(
                    "TOPIC({}): {count} messages on disk but no log to read",
                    t.name
                );
                None
            }
        };
        let mut queues = Vec::new();
        for ch in t.channels() {
            if ch.ephemeral {
                continue;
            }
            let (msgs, backlog) = {
                let mut st = ch.state.lock();
                (st.drain_all(), st.take_backlog())
            };
            // Messages in a topic log come back from it at the next nsq-rs start when the
            // channel's journal replays them; the rest only from the go-diskqueue file.
            let journaled = ch.durable().is_some();
            let (logged, own): (Vec<MsgRef>, Vec<MsgRef>) = msgs
                .into_iter()
                .partition(|m| journaled && m.log_pos().is_some());
            let (logged, backlog) = match export_logged {
                true => (
                    logged,
                    backlog.and_then(|(f, e, skip, n)| range(f, e, skip, n)),
                ),
                false => (Vec::new(), None),
            };
            queues.push((format!("{}:{}", t.name, ch.name), own, logged, backlog));
        }
        // A topic's held messages with a log position are replayed from its log (no channel)
        // or by its channels' journals (paused topic).
        let (logged, own): (Vec<MsgRef>, Vec<MsgRef>) = t
            .drain_held()
            .into_iter()
            .partition(|m| m.log_pos().is_some());
        let held_backlog = t.take_held_backlog();
        let (logged, backlog) = match export_logged {
            true => (
                logged,
                held_backlog.and_then(|(f, e, n)| range(f, e, None, n)),
            ),
            false => (Vec::new(), None),
        };
        queues.push((t.name.clone(), own, logged, backlog));
        for (name, own, logged, backlog) in queues {
            let in_log = logged.len() as u64 + backlog.as_ref().map_or(0, |b| b.count);
            match dir.export_queue(&name, &own, &logged, backlog) {
                Ok(meta) => {
                    n_msgs += own.len() as u64 + in_log;
                    n_logged += in_log;
                    if let Some(meta) = meta {
                        let own = own.len() as u64;
                        marks.insert(name, QueueMark { own, meta });
                    }
                }
                Err(e) => {
                    tracing::error!("failed to persist {name}: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if let Err(e) = dir.write_metadata(&snapshot(nsqd)) {
        tracing::error!("{e}");
        first_err.get_or_insert(e);
    }
    match &first_err {
        None => {
            let hb = Handback {
                state: if export_logged { "exported" } else { "partial" }.into(),
                queues: marks,
            };
            if let Err(e) = dir.write_handback(&hb) {
                tracing::error!("{e}");
                first_err.get_or_insert(e);
            }
            if export_logged {
                tracing::info!(
                    "persisted {n_msgs} messages ({n_logged} of them also in topic logs) to {} in {:.1?}: Go nsqd 1.3 can take this directory over",
                    dir.path().display(),
                    started.elapsed()
                );
            } else {
                tracing::info!(
                    "persisted {n_msgs} messages that are not in topic logs to {} in {:.1?}",
                    dir.path().display(),
                    started.elapsed()
                );
            }
        }
        Some(_) => tracing::error!(
            "the go-diskqueue files in {} are incomplete: Go nsqd must not take this directory over; nsq-rs restarts from its topic logs (free space, then run nsqd --export-go-data)",
            dir.path().display()
        ),
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Rewrites `nsqd.dat` whenever it is marked dirty, at most once per [`METADATA_COALESCE`].
pub async fn metadata_loop(nsqd: Arc<Nsqd>, dir: Arc<DataDir>) {
    loop {
        tokio::select! {
            _ = nsqd.shutdown.cancelled() => return,
            _ = dir.dirty.notified() => {}
        }
        tokio::select! {
            _ = nsqd.shutdown.cancelled() => return,
            _ = tokio::time::sleep(METADATA_COALESCE) => {}
        }
        let meta = snapshot(&nsqd);
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || d.write_metadata(&meta)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("metadata writer failed: {e}"),
        }
    }
}
