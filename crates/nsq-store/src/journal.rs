//! [`ChannelJournal`]: the per-channel ack/defer journal, and [`AckSet`].

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use crate::error::StoreError;
use crate::record::{self, Item, Scanner};
use crate::{sync_dir, validate_name};

/// `Start(pos)`: the channel sees log records from `pos` on (first record of a journal).
pub const KIND_START: u8 = 16;
/// `Ack(pos)`: FIN (or dropped).
pub const KIND_ACK: u8 = 17;
/// `AckRange(from, to)`: every record starting in `[from, to)` is acked (compaction output).
pub const KIND_ACK_RANGE: u8 = 18;
/// `Defer(pos, due_unix_ns, attempts)`: REQ with a delay / DPUB.
pub const KIND_DEFER: u8 = 19;
/// `Attempts(pos, n)`: delivery attempts of a message that is not deferred.
pub const KIND_ATTEMPTS: u8 = 20;
/// `Cursor(pos)`: checkpoint, every record below `pos` is acked (compaction, channel empty).
pub const KIND_CURSOR: u8 = 21;

/// Largest journal record payload (`Defer` is 8 + 8 + 2 bytes + kind).
const JOURNAL_MAX_LEN: u32 = 64;

/// `ack` & co. write the buffer out once it holds this much.
const FLUSH_AT: usize = 64 * 1024;

/// [`ChannelJournal::should_compact`] fires past `max(COMPACT_MIN, 4 × size after the last
/// compaction)`.
const COMPACT_MIN: u64 = 1 << 20;

/// `<dir>/<topic>:<channel>.nsqrs.journal`
pub fn journal_path(dir: &Path, topic: &str, channel: &str) -> PathBuf {
    dir.join(format!("{topic}:{channel}.nsqrs.journal"))
}

/// A set of acked log positions, as sorted, disjoint, half-open ranges `[from, to)`. A single
/// ack of record `p` is the range `[p, p + 1)`; `[from, to)` covers every record *starting* in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSet {
    ranges: Vec<(u64, u64)>,
}

impl AckSet {
    /// The empty set.
    pub fn new() -> AckSet {
        AckSet::default()
    }

    /// Everything in `[from, to)` except the (sorted, deduplicated) `unacked` positions: how an
    /// owner that tracks what is still outstanding describes what is acked.
    pub fn from_unacked(from: u64, to: u64, unacked: &[u64]) -> AckSet {
        let mut set = AckSet::new();
        let mut lo = from;
        for &u in unacked {
            if u < lo {
                continue;
            }
            if u >= to {
                break;
            }
            set.insert_range(lo, u);
            lo = u + 1;
        }
        set.insert_range(lo, to);
        set
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// True when nothing is acked.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Is the record at `pos` acked?
    pub fn contains(&self, pos: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= pos);
        self.ranges.get(i).is_some_and(|r| r.0 <= pos)
    }

    /// Adds the record at `pos`.
    pub fn insert(&mut self, pos: u64) {
        // No record can start at u64::MAX (a record is at least 14 bytes), so saturating
        // loses nothing and keeps a corrupt position from overflowing.
        self.insert_range(pos, pos.saturating_add(1));
    }

    /// Adds `[from, to)`, merging with overlapping or touching ranges. Cheap when appending
    /// at the end (the common case: acks arrive roughly in order).
    pub fn insert_range(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if from > last.1 {
                self.ranges.push((from, to));
                return;
            }
            if from >= last.0 {
                last.1 = last.1.max(to);
                return;
            }
        } else {
            self.ranges.push((from, to));
            return;
        }
        // General case: ranges [i, j) touch or overlap [from, to).
        let i = self.ranges.partition_point(|r| r.1 < from);
        let j = self.ranges.partition_point(|r| r.0 <= to);
        if i == j {
            self.ranges.insert(i, (from, to));
        } else {
            let lo = self.ranges[i].0.min(from);
            let hi = self.ranges[j - 1].1.max(to);
            self.ranges.drain(i + 1..j);
            self.ranges[i] = (lo, hi);
        }
    }

    /// Forgets everything below `pos`.
    pub fn remove_below(&mut self, pos: u64) {
        let i = self.ranges.partition_point(|r| r.1 <= pos);
        self.ranges.drain(..i);
        if let Some(first) = self.ranges.first_mut() {
            first.0 = first.0.max(pos);
        }
    }

    /// Forgets everything at or above `pos`.
    pub fn remove_from(&mut self, pos: u64) {
        let i = self.ranges.partition_point(|r| r.0 < pos);
        self.ranges.truncate(i);
        if let Some(last) = self.ranges.last_mut() {
            last.1 = last.1.min(pos);
        }
    }
}

/// A message deferred on a channel (REQ with a delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredEntry {
    /// Log position.
    pub pos: u64,
    /// When it becomes deliverable, ns since the Unix epoch.
    pub due_unix_ns: i64,
    /// Delivery attempts so far.
    pub attempts: u16,
}

/// What a journal says about its channel after a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRecovery {
    /// The channel's messages are the log records from here on, minus `acked`.
    pub start: u64,
    /// Acked positions `>= start`.
    pub acked: AckSet,
    /// Deferred, unacked positions `>= start`, ascending by position.
    pub deferred: Vec<DeferredEntry>,
    /// Attempt counts of unacked, non-deferred positions, ascending by position.
    pub attempts: Vec<(u64, u16)>,
    /// Bytes of corrupt journal data that were skipped or truncated.
    pub corrupt_bytes: u64,
}

/// The journal of one non-ephemeral channel. Writes are buffered: [`ChannelJournal::flush`]
/// hands them to the OS (enough to survive a process crash), [`ChannelJournal::sync`] to the
/// disk. Losing buffered acks only means redelivery; see the crate docs.
#[derive(Debug)]
pub struct ChannelJournal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
    buf: Vec<u8>,
    compacted_len: u64,
}

#[derive(Default)]
struct Replay {
    start: u64,
    acked: AckSet,
    deferred: BTreeMap<u64, (i64, u16)>,
    attempts: BTreeMap<u64, u16>,
    saw_start: bool,
}

impl Replay {
    fn low_water(&mut self, pos: u64) {
        self.saw_start = true;
        if pos <= self.start {
            return;
        }
        self.start = pos;
        self.acked.remove_below(pos);
        self.deferred = self.deferred.split_off(&pos);
        self.attempts = self.attempts.split_off(&pos);
    }

    fn ack_range(&mut self, from: u64, to: u64) {
        let from = from.max(self.start);
        if from >= to {
            return;
        }
        self.acked.insert_range(from, to);
        let d: Vec<u64> = self.deferred.range(from..to).map(|(k, _)| *k).collect();
        for k in d {
            self.deferred.remove(&k);
        }
        let a: Vec<u64> = self.attempts.range(from..to).map(|(k, _)| *k).collect();
        for k in a {
            self.attempts.remove(&k);
        }
    }

    fn live(&self, pos: u64) -> bool {
        pos >= self.start && !self.acked.contains(pos)
    }

    fn apply(&mut self, kind: u8, p: &[u8]) -> bool {
        let u = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().expect("length checked"));
        match (kind, p.len()) {
            (KIND_START, 8) | (KIND_CURSOR, 8) => self.low_water(u(0)),
            // Saturating: `Ack(u64::MAX)` read from a damaged or hostile journal overflowed
            // here (found by the `store_journal` fuzz target); no record starts there.
            (KIND_ACK, 8) => self.ack_range(u(0), u(0).saturating_add(1)),
            (KIND_ACK_RANGE, 16) => self.ack_range(u(0), u(8)),
            (KIND_DEFER, 18) => {
                let pos = u(0);
                if self.live(pos) {
                    let due = u(8) as i64;
                    let attempts = u16::from_be_bytes([p[16], p[17]]);
                    self.deferred.insert(pos, (due, attempts));
                    self.attempts.remove(&pos);
                }
            }
            (KIND_ATTEMPTS, 10) => {
                let pos = u(0);
                if self.live(pos) {
                    let n = u16::from_be_bytes([p[8], p[9]]);
                    match self.deferred.get_mut(&pos) {
                        Some(d) => d.1 = n,
                        None => {
                            self.attempts.insert(pos, n);
                        }
                    }
                }
            }
            _ => return false,
        }
        true
    }
}

impl ChannelJournal {
    /// Creates a fresh journal for a new channel whose messages start at log position `start`
    /// (`TopicLog::end_pos()` for a new channel, or `start_pos()` for the first channel of a
    /// topic that kept its backlog). Replaces any stale journal of that name. The file is
    /// fsynced, with its directory entry, before this returns.
    pub fn create(
        dir: &Path,
        topic: &str,
        channel: &str,
        start: u64,
    ) -> Result<ChannelJournal, StoreError> {
        validate_name(topic)?;
        validate_name(channel)?;
        let path = journal_path(dir, topic, channel);
        let mut buf = Vec::new();
        put_u64(&mut buf, KIND_START, start);
        let (file, len) = write_new(dir, &path, &buf)?;
        debug!(path = %path.display(), start, "created channel journal");
        Ok(ChannelJournal {
            dir: dir.to_path_buf(),
            path,
            file,
            len,
            buf: Vec::new(),
            compacted_len: len,
        })
    }

    /// Opens an existing journal at startup and replays it. `Ok(None)` if there is none.
    ///
    /// `log_end` must be the topic log's [`crate::TopicLog::recovered_end`], i.e. its end
    /// *before anything new was appended*: if an OS crash took back log records the journal
    /// already refers to (start, acks, defers at or past `log_end`), those references are
    /// dropped and the journal is rewritten, so they cannot match new records that will reuse
    /// those positions.
    ///
    /// Torn tails are truncated, corrupt records skipped (both logged).
    pub fn open(
        dir: &Path,
        topic: &str,
        channel: &str,
        log_end: u64,
    ) -> Result<Option<(ChannelJournal, ChannelRecovery)>, StoreError> {
        validate_name(topic)?;
        validate_name(channel)?;
        let path = journal_path(dir, topic, channel);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("opening", &path, e)),
        };
        let file_len = file
            .metadata()
            .map_err(|e| StoreError::io("reading", &path, e))?
            .len();
        let mut rp = Replay::default();
        let mut corrupt = 0u64;
        let mut end = 0;
        {
            let mut sc = Scanner::new(&file, 0, file_len, JOURNAL_MAX_LEN, 1 << 20);
            loop {
                match sc.next_item() {
                    Ok(None) => break,
                    Ok(Some(Item::Record { off, kind, payload })) => {
                        if !rp.apply(kind, &payload) {
                            warn!(path = %path.display(), off, kind, "unknown journal record; skipping");
                        }
                        end = sc.offset();
                    }
                    Ok(Some(Item::Skipped { from, to })) => {
                        warn!(path = %path.display(), from, to, "corrupt journal bytes skipped");
                        corrupt += to - from;
                        end = to;
                    }
                    Ok(Some(Item::Torn { at })) => {
                        end = at;
                        break;
                    }
                    Err(e) => return Err(StoreError::io("reading", &path, e)),
                }
            }
        }
        if end < file_len {
            warn!(
                path = %path.display(),
                valid_bytes = end,
                file_bytes = file_len,
                "truncating torn tail of channel journal"
            );
            corrupt += file_len - end;
            file.set_len(end)
                .map_err(|e| StoreError::io("truncating", &path, e))?;
        }
        if !rp.saw_start {
            warn!(path = %path.display(), "channel journal has no start record; replaying the whole log");
        }
        // Drop references the log no longer backs (see above).
        let mut clamped = false;
        if rp.start > log_end {
            clamped = true;
            rp.start = log_end;
        }
        if rp.acked.ranges().last().is_some_and(|r| r.1 > log_end) {
            clamped = true;
            rp.acked.remove_from(log_end);
        }
        if rp.deferred.range(log_end..).next().is_some()
            || rp.attempts.range(log_end..).next().is_some()
        {
            clamped = true;
            rp.deferred.split_off(&log_end);
            rp.attempts.split_off(&log_end);
        }
        let recovery = ChannelRecovery {
            start: rp.start,
            acked: rp.acked,
            deferred: rp
                .deferred
                .into_iter()
                .map(|(pos, (due_unix_ns, attempts))| DeferredEntry {
                    pos,
                    due_unix_ns,
                    attempts,
                })
                .collect(),
            attempts: rp.attempts.into_iter().collect(),
            corrupt_bytes: corrupt,
        };
        let mut journal = ChannelJournal {
            dir: dir.to_path_buf(),
            path,
            file,
            len: end,
            buf: Vec::new(),
            compacted_len: 0,
        };
        if clamped || !rp.saw_start {
            warn!(
                path = %journal.path.display(),
                log_end,
                "channel journal refers past the end of the topic log (lost in an OS crash?); rewriting it"
            );
            journal.compact(
                recovery.start,
                &recovery.acked,
                &recovery.deferred,
                &recovery.attempts,
            )?;
        } else {
            journal.compacted_len = end.min(COMPACT_MIN);
        }
        Ok(Some((journal, recovery)))
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file plus buffered bytes.
    pub fn size_bytes(&self) -> u64 {
        self.len + self.buf.len() as u64
    }

    /// True when the journal has grown enough since the last compaction that the owner should
    /// call [`ChannelJournal::compact`].
    pub fn should_compact(&self) -> bool {
        self.size_bytes() > COMPACT_MIN.max(self.compacted_len.saturating_mul(4))
    }

    fn maybe_flush(&mut self) -> Result<(), StoreError> {
        if self.buf.len() >= FLUSH_AT {
            self.flush()
        } else {
            Ok(())
        }
    }

    /// Records that the message at `pos` is done with (FIN).
    pub fn ack(&mut self, pos: u64) -> Result<(), StoreError> {
        put_u64(&mut self.buf, KIND_ACK, pos);
        self.maybe_flush()
    }

    /// Records that every message starting in `[from, to)` is done with.
    pub fn ack_range(&mut self, from: u64, to: u64) -> Result<(), StoreError> {
        let s = record::begin(&mut self.buf, KIND_ACK_RANGE);
        self.buf.extend_from_slice(&from.to_be_bytes());
        self.buf.extend_from_slice(&to.to_be_bytes());
        record::finish(&mut self.buf, s);
        self.maybe_flush()
    }

    /// Records that the message at `pos` is deferred until `due_unix_ns`.
    pub fn defer(&mut self, pos: u64, due_unix_ns: i64, attempts: u16) -> Result<(), StoreError> {
        let s = record::begin(&mut self.buf, KIND_DEFER);
        self.buf.extend_from_slice(&pos.to_be_bytes());
        self.buf.extend_from_slice(&due_unix_ns.to_be_bytes());
        self.buf.extend_from_slice(&attempts.to_be_bytes());
        record::finish(&mut self.buf, s);
        self.maybe_flush()
    }

    /// Records the attempt count of the message at `pos` (so `--max-attempts` survives restarts).
    pub fn attempts(&mut self, pos: u64, attempts: u16) -> Result<(), StoreError> {
        let s = record::begin(&mut self.buf, KIND_ATTEMPTS);
        self.buf.extend_from_slice(&pos.to_be_bytes());
        self.buf.extend_from_slice(&attempts.to_be_bytes());
        record::finish(&mut self.buf, s);
        self.maybe_flush()
    }

    /// Records that every message below `pos` is done with (checkpoint; channel empty uses the
    /// log's `end_pos()`).
    pub fn cursor(&mut self, pos: u64) -> Result<(), StoreError> {
        put_u64(&mut self.buf, KIND_CURSOR, pos);
        self.maybe_flush()
    }

    /// Writes buffered records to the file (no fsync). On failure they are discarded and the
    /// file is cut back to its last complete record.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match self.file.write_all_at(&self.buf, self.len) {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                self.buf.clear();
                let err = StoreError::io("writing", &self.path, e);
                if let Err(te) = self.file.set_len(self.len) {
                    // A half record at the end is found and truncated at the next open.
                    warn!(path = %self.path.display(), error = %te, "truncating journal after failed write");
                }
                Err(err)
            }
        }
    }

    /// Flushes and fsyncs.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        crate::observe::sync_data(&self.file).map_err(|e| StoreError::io("syncing", &self.path, e))
    }

    /// Rewrites the journal to hold only the live state: `Cursor(cursor)`, the ack ranges at or
    /// above it, the deferred messages and attempt counts. The new file is written to
    /// `<journal>.tmp`, fsynced and renamed over the old one (then the directory is fsynced), so
    /// a crash leaves either the old or the new journal, both complete.
    ///
    /// The arguments must describe the whole state: buffered records not yet written are
    /// superseded and dropped. `acked` typically comes from [`AckSet::from_unacked`].
    pub fn compact(
        &mut self,
        cursor: u64,
        acked: &AckSet,
        deferred: &[DeferredEntry],
        attempts: &[(u64, u16)],
    ) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(64 + 24 * (acked.ranges().len() + deferred.len()));
        put_u64(&mut buf, KIND_CURSOR, cursor);
        for &(from, to) in acked.ranges() {
            let from = from.max(cursor);
            if from >= to {
                continue;
            }
            let s = record::begin(&mut buf, KIND_ACK_RANGE);
            buf.extend_from_slice(&from.to_be_bytes());
            buf.extend_from_slice(&to.to_be_bytes());
            record::finish(&mut buf, s);
        }
        for d in deferred.iter().filter(|d| d.pos >= cursor) {
            let s = record::begin(&mut buf, KIND_DEFER);
            buf.extend_from_slice(&d.pos.to_be_bytes());
            buf.extend_from_slice(&d.due_unix_ns.to_be_bytes());
            buf.extend_from_slice(&d.attempts.to_be_bytes());
            record::finish(&mut buf, s);
        }
        for &(pos, n) in attempts.iter().filter(|a| a.0 >= cursor) {
            let s = record::begin(&mut buf, KIND_ATTEMPTS);
            buf.extend_from_slice(&pos.to_be_bytes());
            buf.extend_from_slice(&n.to_be_bytes());
            record::finish(&mut buf, s);
        }
        let (file, len) = write_new(&self.dir, &self.path, &buf)?;
        debug!(path = %self.path.display(), old = self.size_bytes(), new = len, "compacted channel journal");
        self.file = file;
        self.len = len;
        self.buf.clear();
        self.compacted_len = len;
        Ok(())
    }

    /// Deletes the journal (channel or topic deletion).
    pub fn delete(self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("removing", &self.path, e)),
        }
        sync_dir(&self.dir)
    }
}

fn put_u64(buf: &mut Vec<u8>, kind: u8, v: u64) {
    let s = record::begin(buf, kind);
    buf.extend_from_slice(&v.to_be_bytes());
    record::finish(buf, s);
}

/// Writes `data` to `<path>.tmp`, fsyncs, renames it to `path`, fsyncs `dir`; returns the open
/// file (positioned for appends at the returned length).
fn write_new(dir: &Path, path: &Path, data: &[u8]) -> Result<(File, u64), StoreError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io("creating", &tmp, e))?;
    let res = file
        .write_all_at(data, 0)
        .map_err(|e| StoreError::io("writing", &tmp, e))
        .and_then(|()| {
            file.sync_data()
                .map_err(|e| StoreError::io("syncing", &tmp, e))
        })
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| StoreError::io("renaming", &tmp, e)));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok((file, data.len() as u64))
}
