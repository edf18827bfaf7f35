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
//! - **Clean shutdown:** every non-ephemeral channel's ready, in-flight and deferred messages
//!   and every topic's held messages are written to their queues (deferral is lost, attempts
//!   are kept — Go's `Channel.flush`), then `nsqd.dat`.
//!
//! Not yet: messages beyond `--mem-queue-size` stay in memory instead of spilling to disk, and
//! a crash loses what was only in memory (tracked by the durability issue).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nsq_diskqueue::{DiskQueue, DiskQueueOptions};
use nsq_protocol::names::{is_ephemeral, is_valid_channel_name, is_valid_topic_name};
use nsq_protocol::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::Options;
use crate::state::batch::Batch;
use crate::state::channel::MsgRef;
use crate::Nsqd;

/// How long metadata changes are gathered before `nsqd.dat` is rewritten.
pub const METADATA_COALESCE: Duration = Duration::from_millis(200);

/// Messages per batch when loading a queue.
const LOAD_BATCH: usize = 4096;

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
}

/// One channel in `nsqd.dat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelMeta {
    /// Name.
    pub name: String,
    /// Paused flag.
    pub paused: bool,
}

/// An open, locked data directory.
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    queue_opts: DiskQueueOptions,
    dirty: Notify,
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
        let path = self.metadata_path();
        let tmp = self
            .path
            .join(format!("nsqd.dat.{}.tmp", std::process::id()));
        let data = serde_json::to_vec(meta).expect("metadata serialises");
        let io = |what, source| PersistError::Metadata {
            what,
            path: path.clone(),
            source,
        };
        let mut f = File::create(&tmp).map_err(|e| io("failed to create temp file for", e))?;
        f.write_all(&data).map_err(|e| io("failed to write", e))?;
        f.sync_all().map_err(|e| io("failed to sync", e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io("failed to rename temp file onto", e))?;
        if let Ok(d) = File::open(&self.path) {
            let _ = d.sync_all();
        }
        Ok(())
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

    /// Loads a queue's unread messages without changing its files.
    fn load_queue(&self, name: &str) -> Vec<Message> {
        let s = match nsq_diskqueue::scan(
            &self.path,
            name,
            self.queue_opts.min_msg_size,
            self.queue_opts.max_msg_size,
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

    /// Replaces a queue's contents with `msgs` and syncs it.
    fn write_queue(&self, name: &str, msgs: &[MsgRef]) -> Result<(), PersistError> {
        if msgs.is_empty() {
            // Nothing to keep: remove leftover files if there are any, and otherwise touch
            // nothing, so a shutdown with 10,000 idle topics costs no fsyncs.
            if self
                .path
                .join(format!("{name}.diskqueue.meta.dat"))
                .exists()
            {
                self.remove_queue(name);
            }
            return Ok(());
        }
        let mut q = DiskQueue::open(&self.path, name, self.queue_opts.clone())?;
        q.empty()?;
        let mut buf = BytesMut::new();
        for m in msgs {
            buf.clear();
            let b = &m.batch;
            nsq_protocol::message::put_message_payload(
                &mut buf,
                b.timestamp(m.idx),
                m.attempts,
                &b.id(m.idx),
                b.body(m.idx),
            );
            q.put(&buf)?;
        }
        q.close()?;
        Ok(())
    }
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
        .filter(|t| !t.ephemeral)
        .map(|t| {
            let channels: Vec<ChannelMeta> = t
                .channels()
                .into_iter()
                .filter(|c| !c.ephemeral)
                .map(|c| ChannelMeta {
                    name: c.name.clone(),
                    paused: c.is_paused(),
                })
                .collect();
            TopicMeta {
                name: t.name.clone(),
                paused: t.is_paused(),
                channels: (!channels.is_empty()).then_some(channels),
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
    use std::collections::BTreeMap;
    let meta = dir.read_metadata()?.unwrap_or_default();
    // topic -> (paused, channel -> paused)
    let mut topics: BTreeMap<String, (bool, BTreeMap<String, bool>)> = BTreeMap::new();
    for tm in &meta.topics {
        if !is_valid_topic_name(tm.name.as_bytes()) || is_ephemeral(&tm.name) {
            tracing::warn!("skipping topic {:?} from metadata: invalid name", tm.name);
            continue;
        }
        let entry = topics.entry(tm.name.clone()).or_default();
        entry.0 = tm.paused;
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
        for (cname, cpaused) in channels {
            let Ok((ch, _)) = topic.get_or_create_channel(cname) else {
                continue;
            };
            ch.set_paused(*cpaused);
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

/// Writes every message and the metadata to disk (clean shutdown).
pub fn flush(nsqd: &Nsqd, dir: &DataDir) -> Result<(), PersistError> {
    let mut first_err = None;
    let mut n_msgs = 0usize;
    for t in nsqd.topics() {
        if t.ephemeral {
            continue;
        }
        for ch in t.channels() {
            if ch.ephemeral {
                continue;
            }
            let mut msgs = ch.state.lock().drain_all();
            // Messages in a topic log are safe there when the channel's journal replays them
            // at the next start; only the rest is written.
            let journaled = ch.durable().is_some();
            msgs.retain(|m| m.log_pos().is_none() || !journaled);
            n_msgs += msgs.len();
            if let Err(e) = dir.write_queue(&format!("{}:{}", t.name, ch.name), &msgs) {
                tracing::error!("failed to persist channel {}:{}: {e}", t.name, ch.name);
                first_err.get_or_insert(e);
            }
        }
        let mut msgs = t.drain_held();
        msgs.retain(|m| m.log_pos().is_none());
        n_msgs += msgs.len();
        if let Err(e) = dir.write_queue(&t.name, &msgs) {
            tracing::error!("failed to persist topic {}: {e}", t.name);
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = dir.write_metadata(&snapshot(nsqd)) {
        tracing::error!("{e}");
        first_err.get_or_insert(e);
    }
    tracing::info!("persisted {n_msgs} messages to {}", dir.path().display());
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
