//! Topic logs. In durable mode (`--mem-queue-size=0`) every message of a non-ephemeral topic
//! is written to the topic's log (`nsq-store`) before the publisher gets `OK`, and leaves
//! durable storage only when a consumer FINs it (or its channel is emptied or deleted).
//!
//! In the default mode the same machinery is the overflow to disk (Go's disk queue): when a
//! channel (or a channel-less topic) holds `--mem-queue-size` messages, the topic switches
//! to *spilling* ([`crate::topic::Topic::start_spill`]): from then on new messages go through
//! its log like in durable mode, and each channel keeps at most `--mem-queue-size` ready
//! messages in memory, reading the rest back as its consumers catch up. When every channel
//! is back under half the limit with nothing left on disk, the topic stops spilling.
//! Messages that only ever lived in memory are lost by a crash; spilled ones survive it. A
//! clean shutdown writes all of them, logged or not, to go-diskqueue files so Go nsqd can take
//! the directory back (`crate::persist`).
//!
//! - **Publish:** the batch is handed to the log writer thread; once written (and fsynced when
//!   `--sync-every=1`; concurrent publishers share fsyncs through group commit) the
//!   completion, on the writer thread, hands the batch to the channels in log order and
//!   answers the publisher. Nothing touches the disk on a runtime worker thread.
//! - **Channels** keep a journal: `Start` (which log position the channel begins at),
//!   `Ack` on FIN, `Defer` on REQ with a delay (so deferred messages keep their due time
//!   across restarts; DPUB's due time is in the log record itself).
//! - **Restart:** each channel replays the log from its start, skipping acked positions:
//!   messages that were queued, in flight or deferred at a crash come back.
//! - **Retention:** every few seconds, log segments that no channel still needs are removed
//!   and journals that have grown are compacted.
//!
//! A topic's own held messages (no channel yet, or a paused topic) are in the log and, up to
//! the memory window, in memory; the rest is the topic's held backlog. They are not journaled:
//! `/topic/empty` of a channel-less topic rolls the log instead, and of a paused topic with
//! channels is not yet durable (its channels' journals replay the emptied messages).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use nsq_store::{
    Appended, ChannelJournal, LogMessage, LogOptions, LogWriterThread, StoreError, SyncPolicy,
    TopicId, TopicLog,
};
use parking_lot::Mutex;

use crate::config::Options;

/// Ready messages a durable channel keeps in memory; the rest stays in the topic log until
/// consumers catch up. About 12 MB per channel with 200-byte messages.
pub const MEMORY_WINDOW: u64 = 50_000;

/// How the writer thread reports an append.
pub type Done = Box<dyn FnOnce(Result<Appended, StoreError>) + Send>;

/// The daemon's log writer and where the files live.
pub struct Store {
    dir: PathBuf,
    writer: LogWriterThread<Done>,
    log_opts: LogOptions,
    /// Segment files found at start, by topic, taken by the first open of each topic's log.
    /// Listing the directory once instead of per topic keeps opening 10,000 logs linear:
    /// after the start, every segment file is one this process created for a log it has
    /// open (a deleted topic's files are removed with it).
    found: Mutex<std::collections::BTreeMap<String, Vec<u64>>>,
}

impl Store {
    /// Starts the writer thread for `dir`.
    pub fn new(dir: &Path, opts: &Options) -> std::io::Result<Store> {
        let policy = SyncPolicy {
            every: opts.sync_every.max(0) as u64,
            timeout: opts.sync_timeout,
        };
        let found = match nsq_store::list_dir(dir) {
            Ok(l) => l.topics,
            Err(e) => {
                tracing::error!("cannot list topic logs in {}: {e}", dir.display());
                Default::default()
            }
        };
        Ok(Store {
            found: Mutex::new(found),
            dir: dir.to_path_buf(),
            writer: LogWriterThread::spawn("nsqd-log-writer", policy)?,
            log_opts: LogOptions {
                segment_bytes: opts.max_bytes_per_file.max(1) as u64,
                max_msg_size: opts.max_msg_size.clamp(1, u32::MAX as i64) as u32,
            },
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (or creates) a topic's log; returns it unregistered, for recovery.
    pub fn open_log(&self, topic: &str) -> Result<TopicLog, StoreError> {
        let bases = self.found.lock().remove(topic).unwrap_or_default();
        TopicLog::open_listed(&self.dir, topic, self.log_opts, bases)
    }

    /// Frees the log of a topic that has no channel and holds nothing (emptied, or its last
    /// channel deleted): starts a new segment and removes the old ones, so a restart does not
    /// hand old messages to the next channel. Decided on the writer thread, and only if every
    /// record written has been accepted (none is on its way to being held).
    pub fn drop_idle_log(&self, topic: Arc<crate::topic::Topic>) {
        let Some((_, ts)) = topic.store() else {
            return;
        };
        let accepted = ts.end.clone();
        let t = topic.clone();
        self.call(ts, move |log| {
            let Some(log) = log else {
                return;
            };
            let end = accepted.load(Ordering::Acquire);
            if t.channel_count() != 0 || t.held_start().is_some() || log.end_pos() != end {
                return;
            }
            if let Err(e) = log.roll() {
                tracing::error!("TOPIC({}): cannot start a new log segment: {e}", t.name);
                return;
            }
            match log.remove_segments_before(end) {
                Ok(removed) if removed.count() == 0 => {}
                Ok(removed) => {
                    tracing::debug!(
                        "TOPIC({}): removed {} idle log segments",
                        t.name,
                        removed.count()
                    );
                    free_off_writer(removed);
                }
                Err(e) => tracing::error!("TOPIC({}): removing idle log segments: {e}", t.name),
            }
        });
    }

    /// Hands a log to the writer thread.
    pub fn register(&self, log: TopicLog) -> TopicStore {
        let end = log.end_pos();
        let reader = log.reader();
        TopicStore {
            id: self.writer.add_topic(log),
            end: Arc::new(AtomicU64::new(end)),
            reader,
        }
    }

    /// Appends messages; `done` runs on the writer thread.
    pub fn append(&self, t: &TopicStore, msgs: Vec<LogMessage>, done: Done) {
        self.writer.append(t.id, msgs, done);
    }

    /// Runs `f` with the topic's log on the writer thread.
    pub fn call(&self, t: &TopicStore, f: impl FnOnce(Option<&mut TopicLog>) + Send + 'static) {
        self.writer.call(t.id, f);
    }

    /// Removes a topic's log files.
    pub fn delete_log(&self, t: &TopicStore) {
        self.writer.remove_topic(t.id, |log| {
            if let Some(log) = log {
                match log.delete_all() {
                    Ok(removed) => free_off_writer(removed),
                    Err(e) => tracing::error!("failed to delete topic log: {e}"),
                }
            }
        });
    }

    /// Creates a channel's journal starting at `start`.
    pub fn create_journal(
        &self,
        topic: &str,
        channel: &str,
        start: u64,
    ) -> Option<Mutex<Option<ChannelJournal>>> {
        // Two fsyncs: keep them off the runtime's worker (channel creation and /channel/empty
        // run on it; spilling calls this on the writer thread).
        match off_runtime(|| ChannelJournal::create(&self.dir, topic, channel, start)) {
            Ok(j) => Some(Mutex::new(Some(j))),
            Err(e) => {
                tracing::error!("failed to create journal for {topic}:{channel}: {e}");
                None
            }
        }
    }
}

/// Runs blocking file I/O called from synchronous code: on a multi-threaded runtime's worker
/// through `block_in_place`, so the worker's other tasks move to another thread meanwhile;
/// anywhere else (the writer thread, the blocking pool, unit tests) directly.
pub fn off_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A topic's handle on its log.
pub struct TopicStore {
    id: TopicId,
    /// Position just past the last record handed to the channels (updated in log order).
    pub end: Arc<AtomicU64>,
    /// For reading channel backlogs back (cloned per read).
    pub reader: nsq_store::LogReader,
}

impl TopicStore {
    /// The log end as the channels know it.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }
}

/// Appends to a channel journal, logging (not returning) failures: a lost ack only means the
/// message is delivered again after a crash.
pub fn journal_op(
    j: &Mutex<Option<ChannelJournal>>,
    what: &str,
    f: impl FnOnce(&mut ChannelJournal) -> Result<(), StoreError>,
) {
    if let Some(j) = j.lock().as_mut() {
        if let Err(e) = f(j) {
            tracing::error!("journal {what} failed for {}: {e}", j.path().display());
        }
    }
}

/// A batch of messages read back from a topic log, each with its log position.
pub(crate) fn batch_from_log<'a>(
    records: impl Iterator<Item = (u64, &'a LogMessage)>,
) -> Arc<crate::state::batch::Batch> {
    let (positions, msgs): (Vec<u64>, Vec<nsq_protocol::Message>) = records
        .map(|(pos, m)| {
            let msg = nsq_protocol::Message {
                timestamp: m.timestamp,
                attempts: m.attempts,
                id: m.id,
                body: m.body.clone(),
            };
            (pos, msg)
        })
        .unzip();
    let b = Arc::new(crate::state::batch::Batch::explicit(&msgs));
    b.set_log_positions(positions.into_boxed_slice());
    b
}

/// Messages per batch while replaying a log.
const REPLAY_RECORDS: usize = 4096;
/// Bytes per batch while replaying a log.
const REPLAY_BYTES: usize = 4 << 20;

/// Restores a durable topic from its log and its channels from their journals: messages
/// that were queued, in flight or deferred come back (deferred ones with their due time).
/// `channels` are the non-ephemeral channels `nsqd.dat` lists, with their paused flags.
pub fn restore_topic(
    nsqd: &crate::Nsqd,
    store: &Arc<Store>,
    name: &str,
    channels: &[(String, bool)],
) -> Result<(Arc<crate::topic::Topic>, usize), StoreError> {
    use crate::state::channel::MsgRef;

    let log = store.open_log(name)?;
    let log_end = log.recovered_end();
    let log_start = log.start_pos();
    let reader = log.reader();
    // Open journals before anything new can be appended (their positions must refer to
    // records as found at open).
    let mut journals = Vec::new();
    for (ch, paused) in channels {
        let j = nsq_store::ChannelJournal::open(store.dir(), name, ch, log_end)?;
        journals.push((ch.clone(), *paused, j));
    }
    let topic = nsqd.restore_topic_with_log(name, store.register(log));
    let mut n = 0usize;
    let now_mono = nsqd.clock.now();
    let now_unix = crate::clock::unix_nanos();
    for (ch_name, paused, j) in journals {
        let Some((journal, recovery)) = j else {
            // No journal (e.g. the channel was created before durable mode): it starts at
            // the end of the log.
            if let Ok((ch, _)) = topic.get_or_create_channel(&ch_name) {
                ch.set_paused(paused);
            }
            continue;
        };
        if recovery.corrupt_bytes > 0 {
            tracing::error!(
                "journal of {name}:{ch_name}: skipped {} corrupt bytes",
                recovery.corrupt_bytes
            );
        }
        let Some(ch) = topic.restore_channel_durable(&ch_name, journal) else {
            continue;
        };
        ch.set_paused(paused);
        let mut replay =
            nsq_store::recover_channel(reader.clone(), &recovery, REPLAY_RECORDS, REPLAY_BYTES);
        {
            // Reading the backlog back later must skip what was acked before the restart and
            // what is restored as deferred now.
            let mut skip = recovery.acked.clone();
            for d in &recovery.deferred {
                skip.insert(d.pos);
            }
            ch.state.lock().set_backlog_skip(skip);
        }
        let mut progress = std::time::Instant::now();
        while let Some(batch) = replay.next_batch()? {
            n += batch.len();
            if progress.elapsed() >= std::time::Duration::from_secs(5) {
                progress = std::time::Instant::now();
                tracing::info!("restoring {name}:{ch_name} from its log: {n} messages read so far");
            }
            // First decide where each record goes, so that only those kept in memory are
            // copied: beyond the memory window a ready message is only counted (it stays in
            // the log as the backlog), which keeps restoring a deep queue cheap.
            let mut keep = Vec::new();
            {
                let mut st = ch.state.lock();
                let mut ready_pending = 0u64;
                for (i, r) in batch.iter().enumerate() {
                    match r.disposition {
                        nsq_store::Disposition::Ready => {
                            if st.admit_replayed(r.pos, log_end, ready_pending) {
                                keep.push(i);
                                ready_pending += 1;
                            }
                        }
                        nsq_store::Disposition::Deferred { .. } => {
                            // Restored in memory now, so a later backlog read must skip it.
                            st.skip_in_backlog(r.pos);
                            keep.push(i);
                        }
                    }
                }
            }
            if keep.is_empty() {
                continue;
            }
            let b = batch_from_log(keep.iter().map(|&i| (batch[i].pos, &batch[i].msg)));
            let mut next_due = None::<u64>;
            let mut st = ch.state.lock();
            // Ready messages go back as one-message runs in log order; deferred ones keep
            // their due time.
            for (j, &i) in keep.iter().enumerate() {
                let r = &batch[i];
                let m = MsgRef {
                    batch: b.clone(),
                    idx: j as u32,
                    attempts: r.msg.attempts,
                };
                match r.disposition {
                    nsq_store::Disposition::Ready => st.restore_one(m),
                    nsq_store::Disposition::Deferred { due_unix_ns } => {
                        let wait = (due_unix_ns - now_unix).max(0) as u64;
                        let due = now_mono + wait;
                        st.restore_deferred(m, due);
                        next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    }
                }
            }
            drop(st);
            if let Some(due) = next_due {
                ch.schedule(due);
            }
        }
    }
    if channels.is_empty() {
        // A topic without channels holds its whole log for the first channel.
        let mut r = reader;
        let mut pos = log_start;
        loop {
            let rb = r.read_range(pos, log_end, REPLAY_RECORDS, REPLAY_BYTES)?;
            if rb.records.is_empty() {
                break;
            }
            n += rb.records.len();
            let to_batch =
                |recs: &[&(u64, LogMessage)]| batch_from_log(recs.iter().map(|(p, m)| (*p, m)));
            // DPUBs still due later keep their delay; the rest is ready, in log order.
            let (deferred, ready): (Vec<_>, Vec<_>) = rb
                .records
                .iter()
                .partition(|(_, m)| m.defer_until > now_unix);
            if !ready.is_empty() {
                topic.restore_held(to_batch(&ready));
            }
            for r in deferred {
                let delay = (r.1.defer_until - now_unix) as u64;
                topic.restore_held_deferred(to_batch(&[r]), delay);
            }
            if rb.next_pos <= pos {
                break;
            }
            pos = rb.next_pos;
        }
    }
    Ok((topic, n))
}

/// Every topic, unsorted: the maintenance tick walks all topics every second, and with
/// 10,000 of them sorting by name (as `Nsqd::topics` does for `/stats`) was most of its cost.
fn topic_list(nsqd: &crate::Nsqd) -> Vec<Arc<crate::topic::Topic>> {
    nsqd.topics.read().values().cloned().collect()
}

/// Flushes (and, with `sync`, fsyncs) every durable channel's journal.
pub fn flush_journals(nsqd: &crate::Nsqd, sync: bool) {
    for t in topic_list(nsqd) {
        if !t.has_log() {
            continue;
        }
        for ch in t.channels() {
            if let Some(d) = ch.durable() {
                journal_op(&d.journal, "flush", |j| {
                    j.flush()?;
                    if sync && j.size_bytes() != d.synced_size.load(Ordering::Relaxed) {
                        j.sync()?;
                        d.synced_size.store(j.size_bytes(), Ordering::Relaxed);
                    }
                    Ok(())
                });
            }
        }
    }
}

/// Log retention and journal compaction, for every durable topic: segments no channel still
/// needs are removed; journals that have grown are rewritten from what is still unacked.
pub fn maintain(nsqd: &crate::Nsqd) {
    let now_mono = nsqd.clock.now();
    let now_unix = crate::clock::unix_nanos();
    for t in topic_list(nsqd) {
        let Some((store, ts)) = t.store() else {
            continue;
        };
        let end = ts.end();
        let mut keep_from = t.held_start().unwrap_or(end);
        let channels = t.channels();
        for ch in &channels {
            let (mut unacked, deferred, backlog, backlog_skip) = {
                let st = ch.state.lock();
                (
                    st.unacked_positions(),
                    st.deferred_entries(),
                    st.backlog_start(),
                    st.backlog_skip().cloned(),
                )
            };
            unacked.sort_unstable();
            let lowest = unacked.first().copied().unwrap_or(end);
            keep_from = keep_from.min(lowest);
            if let Some(d) = ch.durable() {
                let mut guard = d.journal.lock();
                if let Some(j) = guard.as_mut() {
                    if j.should_compact() {
                        // Everything in [lowest, upto) that is not unacked has been acked;
                        // the on-disk backlog from `upto` on was never delivered, except
                        // what an earlier run acked (kept in `backlog_skip`).
                        // Messages the topic still holds (paused topic) are not the
                        // channel's yet either.
                        let upto = backlog.unwrap_or(end).min(t.held_start().unwrap_or(end));
                        let below: Vec<u64> =
                            unacked.iter().copied().filter(|&p| p < upto).collect();
                        let mut acked = nsq_store::AckSet::from_unacked(lowest, upto, &below);
                        if let Some(skip) = &backlog_skip {
                            // `unacked` (sorted) still holds the deferred messages restored
                            // from the backlog region: they must not be marked acked.
                            let hi: Vec<u64> =
                                unacked.iter().copied().filter(|&p| p >= upto).collect();
                            for &(from, to) in skip.ranges() {
                                let start = from.max(upto);
                                let mut cur = start;
                                for &p in hi.iter().filter(|&&p| p >= start && p < to) {
                                    acked.insert_range(cur, p);
                                    cur = p + 1;
                                }
                                if cur < to {
                                    acked.insert_range(cur, to);
                                }
                            }
                        }
                        let defs: Vec<nsq_store::DeferredEntry> = deferred
                            .iter()
                            .map(|&(pos, due, attempts)| nsq_store::DeferredEntry {
                                pos,
                                due_unix_ns: now_unix + due.saturating_sub(now_mono) as i64,
                                attempts,
                            })
                            .collect();
                        if let Err(e) = j.compact(lowest, &acked, &defs, &[]) {
                            tracing::error!("compacting journal {}: {e}", j.path().display());
                        }
                    }
                }
            }
        }
        if channels.is_empty() && t.held_start().is_none() {
            store.drop_idle_log(t.clone());
            continue;
        }
        store.call(ts, move |log| {
            if let Some(log) = log {
                match log.remove_segments_before(keep_from) {
                    Ok(removed) if removed.count() == 0 => {}
                    Ok(removed) => {
                        tracing::debug!(
                            "removed {} log segments of {}",
                            removed.count(),
                            log.topic()
                        );
                        free_off_writer(removed);
                    }
                    Err(e) => tracing::error!("log retention for {}: {e}", log.topic()),
                }
            }
        });
    }
}

/// Frees removed log segments' space (closes their unlinked files: ~35 ms per 100 MB segment
/// on an idle ext4 VM disk) on a short-lived `nsqd-free-segments` thread instead of the log
/// writer thread, where it would hold up every topic's appends (see
/// [`nsq_store::RemovedSegments`]). Retention removes a segment at most once per maintenance
/// tick and topic, so these threads are few and brief; if one cannot be started, the files
/// are closed here.
fn free_off_writer(removed: nsq_store::RemovedSegments) {
    if removed.holds_nothing() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("nsqd-free-segments".into())
        .spawn(move || drop(removed));
    if let Err(e) = spawned {
        // `spawn` dropped the closure, and with it the files, on this thread.
        tracing::warn!("freed removed log segments on the log writer thread: {e}");
    }
}

/// Syncs a topic's log and waits for it (shutdown).
pub fn sync_log_blocking(store: &Store, t: &TopicStore) {
    let (tx, rx) = std::sync::mpsc::channel();
    store.call(t, move |log| {
        if let Some(log) = log {
            if let Err(e) = log.sync() {
                tracing::error!("syncing topic log {}: {e}", log.topic());
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(10));
}

/// Runs journal flushes and the end of spilling (every second) and retention (every 10 s)
/// until shutdown.
pub async fn maintenance_loop(nsqd: Arc<crate::Nsqd>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = nsqd.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        n += 1;
        let nsqd2 = nsqd.clone();
        for t in topic_list(&nsqd) {
            t.maybe_stop_spilling();
        }
        let _ = tokio::task::spawn_blocking(move || {
            flush_journals(&nsqd2, false);
            if n.is_multiple_of(10) {
                maintain(&nsqd2);
            }
        })
        .await;
    }
}
