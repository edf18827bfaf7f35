//! [`TopicLog`]: one append-only, segmented, checksummed log per topic, and [`LogReader`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use nsq_protocol::message::MessageId;
use tracing::{debug, info, warn};

use crate::error::StoreError;
use crate::record::{self, Item, Scanner, HEADER_LEN};
use crate::{list_dir, sync_dir, validate_name};

/// Record kind of a message in a topic log.
pub const KIND_MESSAGE: u8 = 1;

/// Fixed part of a message record's payload: timestamp, attempts, id, defer_until.
pub const MESSAGE_FIXED_LEN: usize = 8 + 2 + 16 + 8;

/// Bytes a message record takes on disk besides its body (header + kind + fixed fields): 47.
pub const MESSAGE_OVERHEAD: usize = HEADER_LEN + 1 + MESSAGE_FIXED_LEN;

/// The `len` field a scan accepts at least, whatever `max_msg_size` says now, so lowering
/// `--max-msg-size` never turns old records into "corruption".
const MIN_SCAN_LEN: u32 = 16 << 20;

/// Largest log position a segment may start or end at (see [`TopicLog::open_listed`]).
const MAX_POSITION: u64 = 1 << 63;

/// `append` writes the buffer out once it holds this much.
const FLUSH_AT: usize = 1 << 20;

/// Largest single read a reader does.
const MAX_READ_CHUNK: usize = 4 << 20;

/// On-disk size of a message record with a `body_len`-byte body.
#[inline]
pub fn record_len(body_len: usize) -> u64 {
    (MESSAGE_OVERHEAD + body_len) as u64
}

/// Options of a [`TopicLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOptions {
    /// Roll to a new segment when a record would take the current one past this size
    /// (`--max-bytes-per-file`). A single larger record still gets a segment of its own.
    pub segment_bytes: u64,
    /// Largest accepted message body (`--max-msg-size`).
    pub max_msg_size: u32,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 100 * 1024 * 1024,
            max_msg_size: 1024 * 1024,
        }
    }
}

/// A message as stored in a topic log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMessage {
    /// Publish time, ns since the Unix epoch.
    pub timestamp: i64,
    /// Delivery attempts so far (0 when published).
    pub attempts: u16,
    /// The message id.
    pub id: MessageId,
    /// For DPUB: when the message becomes deliverable (ns since the Unix epoch); 0 = now.
    pub defer_until: i64,
    /// The body.
    pub body: Bytes,
}

impl LogMessage {
    /// The borrowed form [`TopicLog::append_ref`] takes.
    pub fn as_ref(&self) -> MessageRef<'_> {
        MessageRef {
            timestamp: self.timestamp,
            attempts: self.attempts,
            id: self.id,
            defer_until: self.defer_until,
            body: &self.body,
        }
    }

    fn decode(payload: Bytes) -> Option<LogMessage> {
        if payload.len() < MESSAGE_FIXED_LEN {
            return None;
        }
        let p = &payload[..];
        let timestamp = i64::from_be_bytes(p[0..8].try_into().ok()?);
        let attempts = u16::from_be_bytes([p[8], p[9]]);
        let id = MessageId::from_slice(&p[10..26])?;
        let defer_until = i64::from_be_bytes(p[26..34].try_into().ok()?);
        Some(LogMessage {
            timestamp,
            attempts,
            id,
            defer_until,
            body: payload.slice(MESSAGE_FIXED_LEN..),
        })
    }
}

/// A message to append, borrowing its body (e.g. from nsqd's `Batch`).
#[derive(Debug, Clone, Copy)]
pub struct MessageRef<'a> {
    /// Publish time, ns since the Unix epoch.
    pub timestamp: i64,
    /// Delivery attempts so far.
    pub attempts: u16,
    /// The message id.
    pub id: MessageId,
    /// Due time for deferred messages (ns since the Unix epoch), 0 = now.
    pub defer_until: i64,
    /// The body.
    pub body: &'a [u8],
}

/// Where an [`TopicLog::append`] put its records: they occupy `[first, end)` back to back, so
/// record `i` starts at `first + sum(record_len(body_j) for j < i)` (see
/// [`Appended::positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Position of the first record.
    pub first: u64,
    /// Position just past the last record.
    pub end: u64,
    /// Number of records.
    pub count: usize,
}

impl Appended {
    /// The position of each record, given the body lengths in append order.
    pub fn positions<I>(&self, body_lens: I) -> impl Iterator<Item = u64>
    where
        I: IntoIterator<Item = usize>,
    {
        let mut pos = self.first;
        body_lens.into_iter().map(move |len| {
            let p = pos;
            pos += record_len(len);
            p
        })
    }
}

/// A batch of records returned by [`LogReader::read_from`].
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// `(position, message)` in log order.
    pub records: Vec<(u64, LogMessage)>,
    /// Where the next read should start.
    pub next_pos: u64,
}

/// State shared by a log and its readers.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    topic: String,
    /// Base positions of the segments, ascending; the last one is being written.
    segments: RwLock<Vec<u64>>,
    written: AtomicU64,
    synced: AtomicU64,
    scan_max_len: u32,
}

impl Shared {
    fn segment_path(&self, base: u64) -> PathBuf {
        segment_path(&self.dir, &self.topic, base)
    }
}

/// `<dir>/<topic>.nsqrs.<base:020>.log`
pub(crate) fn segment_path(dir: &Path, topic: &str, base: u64) -> PathBuf {
    dir.join(format!("{topic}.nsqrs.{base:020}.log"))
}

#[derive(Debug)]
struct Active {
    base: u64,
    file: File,
    path: PathBuf,
    /// Bytes in the file (all written by complete `write` calls).
    len: u64,
}

/// Test hook: make the next write stop after this many bytes and fail with `ENOSPC`.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) write_fail_after: Option<usize>,
    pub(crate) fail_truncate: bool,
    pub(crate) fail_sync: bool,
}

/// The log of one topic. Single writer (`&mut self`); any number of [`LogReader`]s on other
/// threads. See the crate docs for the format and the crash-safety argument.
///
/// Dropping a `TopicLog` does **not** write its buffer out (that is what a crash looks like);
/// call [`TopicLog::close`].
#[derive(Debug)]
pub struct TopicLog {
    shared: Arc<Shared>,
    opts: LogOptions,
    active: Option<Active>,
    buf: Vec<u8>,
    poisoned: Option<String>,
    recovered_end: u64,
    #[cfg(test)]
    pub(crate) faults: Faults,
}

impl TopicLog {
    /// Opens (or prepares to create) the log of `topic` in `dir`, listing `dir` to find its
    /// segments. With many topics, list the directory once with [`list_dir`] and use
    /// [`TopicLog::open_listed`].
    pub fn open(dir: &Path, topic: &str, opts: LogOptions) -> Result<TopicLog, StoreError> {
        let listing = list_dir(dir)?;
        let bases = listing.topics.get(topic).cloned().unwrap_or_default();
        TopicLog::open_listed(dir, topic, opts, bases)
    }

    /// Opens the log of `topic` whose segment bases are already known (from [`list_dir`]).
    ///
    /// Only the last segment is scanned (that is where a crash can leave a torn record): a torn
    /// tail is truncated after a warning, corrupt records before it are logged and left for
    /// readers to skip. Older segments are checked record by record as they are read. No file is
    /// created until the first append.
    pub fn open_listed(
        dir: &Path,
        topic: &str,
        opts: LogOptions,
        mut bases: Vec<u64>,
    ) -> Result<TopicLog, StoreError> {
        validate_name(topic)?;
        if opts.segment_bytes == 0 {
            return Err(StoreError::Invalid("segment_bytes must be > 0".into()));
        }
        bases.sort_unstable();
        bases.dedup();
        let scan_max_len = (1 + MESSAGE_FIXED_LEN as u32)
            .saturating_add(opts.max_msg_size)
            .max(MIN_SCAN_LEN);
        let mut active = None;
        let mut end = 0;
        if let Some(&base) = bases.last() {
            let path = segment_path(dir, topic, base);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::io("opening", &path, e))?;
            let len = scan_last_segment(&file, &path, scan_max_len)?;
            // A base near u64::MAX (a hand-made or damaged file name) would overflow every
            // position computed from it. No real log gets past 2^63 bytes.
            end = base
                .checked_add(len)
                .filter(|&e| e <= MAX_POSITION)
                .ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "{}: segment base {base} is beyond any real log position",
                        path.display()
                    ))
                })?;
            active = Some(Active {
                base,
                file,
                path,
                len,
            });
        }
        debug!(topic, segments = bases.len(), end, "opened topic log");
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            topic: topic.to_string(),
            segments: RwLock::new(bases),
            written: AtomicU64::new(end),
            synced: AtomicU64::new(end),
            scan_max_len,
        });
        Ok(TopicLog {
            shared,
            opts,
            active,
            buf: Vec::new(),
            poisoned: None,
            recovered_end: end,
            #[cfg(test)]
            faults: Faults::default(),
        })
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// The options in force.
    pub fn options(&self) -> LogOptions {
        self.opts
    }

    /// The end position found by `open`, before any append. Channel journals are opened against
    /// it (see [`crate::ChannelJournal::open`]).
    pub fn recovered_end(&self) -> u64 {
        self.recovered_end
    }

    /// Position the next appended record gets (includes buffered, unwritten records).
    pub fn end_pos(&self) -> u64 {
        match &self.active {
            Some(a) => a.base + a.len + self.buf.len() as u64,
            None => self.shared.written.load(Ordering::Acquire),
        }
    }

    /// First retained position (the base of the oldest segment), or `end_pos` when empty.
    pub fn start_pos(&self) -> u64 {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        segs.first().copied().unwrap_or_else(|| self.end_pos())
    }

    /// Everything below this position has been handed to the OS (`write`): readers see it and a
    /// process crash keeps it.
    pub fn written_upto(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// Everything below this position has been `fdatasync`ed: an OS crash keeps it.
    pub fn synced_upto(&self) -> u64 {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Bases of the current segments, oldest first.
    pub fn segments(&self) -> Vec<u64> {
        self.shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A reader with its own file handles, for any thread.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
            cur: None,
        }
    }

    fn check_poisoned(&self) -> Result<(), StoreError> {
        match &self.poisoned {
            Some(cause) => Err(StoreError::Poisoned {
                path: self
                    .active
                    .as_ref()
                    .map(|a| a.path.clone())
                    .unwrap_or_else(|| self.shared.dir.clone()),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn check_size(&self, len: usize) -> Result<(), StoreError> {
        if len > self.opts.max_msg_size as usize {
            return Err(StoreError::MessageTooLarge {
                size: len,
                max: self.opts.max_msg_size,
            });
        }
        Ok(())
    }

    /// Appends messages (buffered; see [`TopicLog::flush`] / [`TopicLog::sync`]).
    ///
    /// On `Err` nothing of this call is in the log, **and neither is anything appended since the
    /// last successful flush** (the buffer is discarded and the file truncated back to
    /// `written_upto()`), so those positions will be reused. Sizes are checked before anything is
    /// buffered, so `MessageTooLarge` leaves the log untouched.
    pub fn append(&mut self, msgs: &[LogMessage]) -> Result<Appended, StoreError> {
        self.check_poisoned()?;
        for m in msgs {
            self.check_size(m.body.len())?;
        }
        let first = self.end_pos();
        for m in msgs {
            self.append_ref(m.as_ref())?;
        }
        Ok(Appended {
            first,
            end: self.end_pos(),
            count: msgs.len(),
        })
    }

    /// Appends one message, returning its position. Same error contract as [`TopicLog::append`].
    pub fn append_ref(&mut self, m: MessageRef<'_>) -> Result<u64, StoreError> {
        self.check_poisoned()?;
        self.check_size(m.body.len())?;
        let rec = record_len(m.body.len());
        let seg_len = match &self.active {
            Some(a) => a.len + self.buf.len() as u64,
            None => {
                let base = self.shared.written.load(Ordering::Acquire);
                self.new_segment(base)?;
                0
            }
        };
        if seg_len > 0 && seg_len + rec > self.opts.segment_bytes {
            self.roll()?;
        }
        let pos = self.end_pos();
        let start = record::begin(&mut self.buf, KIND_MESSAGE);
        self.buf.extend_from_slice(&m.timestamp.to_be_bytes());
        self.buf.extend_from_slice(&m.attempts.to_be_bytes());
        self.buf.extend_from_slice(&m.id.0);
        self.buf.extend_from_slice(&m.defer_until.to_be_bytes());
        self.buf.extend_from_slice(m.body);
        record::finish(&mut self.buf, start);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(pos)
    }

    /// Starts a new segment now (e.g. so [`TopicLog::remove_segments_before`] can free all of
    /// the current one). No-op when the current segment is empty.
    pub fn roll(&mut self) -> Result<(), StoreError> {
        self.check_poisoned()?;
        let Some(a) = &self.active else {
            return Ok(());
        };
        if a.len + self.buf.len() as u64 == 0 {
            return Ok(());
        }
        // The old segment is complete: make it durable before anything lands in the new one,
        // so synced_upto only ever covers a prefix of the log.
        self.sync()?;
        let end = self.end_pos();
        self.new_segment(end)
    }

    fn new_segment(&mut self, base: u64) -> Result<(), StoreError> {
        let path = self.shared.segment_path(base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| StoreError::io("creating", &path, e))?;
        // The new name must survive a power loss before records in it are reported synced.
        sync_dir(&self.shared.dir)?;
        debug!(topic = %self.shared.topic, base, "new segment");
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(base);
        self.active = Some(Active {
            base,
            file,
            path,
            len: 0,
        });
        Ok(())
    }

    /// Writes the buffer to the file (one `write` syscall, no fsync); readers see the records
    /// afterwards. On failure the buffered records are discarded and any partial write is cut
    /// off, so the file still ends with a complete record.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.check_poisoned()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(a) = &mut self.active else {
            self.buf.clear();
            return Ok(());
        };
        #[cfg(test)]
        let res = match self.faults.write_fail_after.take() {
            Some(n) => {
                let n = n.min(self.buf.len());
                a.file
                    .write_all_at(&self.buf[..n], a.len)
                    .and(Err(io::Error::from_raw_os_error(28)))
            }
            None => a.file.write_all_at(&self.buf, a.len),
        };
        #[cfg(not(test))]
        let res = a.file.write_all_at(&self.buf, a.len);
        match res {
            Ok(()) => {
                a.len += self.buf.len() as u64;
                self.buf.clear();
                self.shared.written.store(a.base + a.len, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let n = self.buf.len();
                self.buf.clear();
                let err = StoreError::io("writing", &a.path, e);
                warn!(error = %err, records_bytes = n, "append failed, discarding unwritten records");
                #[cfg(test)]
                let tr = if self.faults.fail_truncate {
                    Err(io::Error::other("injected truncate failure"))
                } else {
                    a.file.set_len(a.len)
                };
                #[cfg(not(test))]
                let tr = a.file.set_len(a.len);
                if let Err(te) = tr {
                    let cause = format!("{err}; then truncating back failed: {te}");
                    warn!(path = %a.path.display(), %cause, "log poisoned");
                    self.poisoned = Some(cause);
                }
                Err(err)
            }
        }
    }

    /// Starts a sync that another thread finishes: flushes, then returns a handle on the
    /// active segment and the position the sync will cover (`None` if all is synced). Call
    /// [`TopicLog::finish_background_sync`] with the outcome. Appends may continue meanwhile.
    pub fn begin_background_sync(
        &mut self,
    ) -> Result<Option<(std::fs::File, u64, PathBuf)>, StoreError> {
        self.flush()?;
        let written = self.shared.written.load(Ordering::Acquire);
        if self.shared.synced.load(Ordering::Acquire) >= written {
            return Ok(None);
        }
        let Some(a) = &self.active else {
            return Ok(None);
        };
        let f = a
            .file
            .try_clone()
            .map_err(|e| StoreError::io("cloning handle of", &a.path, e))?;
        Ok(Some((f, written, a.path.clone())))
    }

    /// Records the outcome of a sync started with [`TopicLog::begin_background_sync`].
    pub fn finish_background_sync(
        &mut self,
        upto: u64,
        path: &Path,
        res: io::Result<()>,
    ) -> Result<(), StoreError> {
        match res {
            Ok(()) => {
                self.shared.synced.fetch_max(upto, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                let err = StoreError::io("syncing", path, e);
                warn!(error = %err, "fsync failed, log poisoned");
                self.poisoned = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Flushes, then `fdatasync`s the current segment (older segments were synced when they were
    /// completed). Afterwards `synced_upto() == written_upto() == end_pos()`.
    ///
    /// A failed fsync poisons the log: the kernel may have dropped the dirty pages, so a retry
    /// could "succeed" without the data; reopen the log to rescan what really is on disk.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.flush()?;
        let written = self.shared.written.load(Ordering::Acquire);
        if self.shared.synced.load(Ordering::Acquire) >= written {
            return Ok(());
        }
        let Some(a) = &self.active else {
            return Ok(());
        };
        #[cfg(test)]
        let res = if self.faults.fail_sync {
            Err(io::Error::from_raw_os_error(5))
        } else {
            a.file.sync_data()
        };
        #[cfg(not(test))]
        let res = crate::observe::sync_data(&a.file);
        match res {
            Ok(()) => {
                self.shared.synced.store(written, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let err = StoreError::io("syncing", &a.path, e);
                warn!(error = %err, "fsync failed, log poisoned");
                self.poisoned = Some(err.to_string());
                Err(err)
            }
        }
    }

    /// Syncs and closes.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.sync()
    }

    /// Deletes every complete segment whose records all lie below `pos` (segment `i` goes when
    /// the base of segment `i + 1` is `<= pos`). The segment being written is never deleted.
    /// Readers positioned in a removed segment continue at the first retained position.
    ///
    /// The segments' names are gone when this returns, but their space is freed only when the
    /// returned [`RemovedSegments`] is dropped (see there: do that off the log writer thread).
    pub fn remove_segments_before(&self, pos: u64) -> Result<RemovedSegments, StoreError> {
        let doomed: Vec<u64> = {
            let mut segs = self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner());
            // Segments 0..k go, where k = number of segments whose successor starts <= pos.
            let k = segs.windows(2).take_while(|w| w[1] <= pos).count();
            segs.drain(..k).collect()
        };
        let mut removed = RemovedSegments {
            files: Vec::with_capacity(doomed.len()),
            count: doomed.len(),
        };
        for &base in &doomed {
            let path = self.shared.segment_path(base);
            // Opened first, so the unlink only removes the name; if it cannot be opened, the
            // unlink frees the space at once (slow, but still removed).
            let file = File::open(&path).ok();
            match fs::remove_file(&path) {
                Ok(()) => removed.files.extend(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("removing", &path, e)),
            }
            debug!(topic = %self.shared.topic, base, "removed segment");
        }
        Ok(removed)
    }

    /// Deletes every segment of the topic (topic deletion). Readers then read nothing.
    ///
    /// The names are gone (and the directory fsynced) when this returns; the space is freed
    /// when the returned [`RemovedSegments`] is dropped (off the log writer thread, see there).
    /// On an error the segments not yet unlinked stay on disk; the first error is returned.
    pub fn delete_all(mut self) -> Result<RemovedSegments, StoreError> {
        self.buf.clear();
        self.active = None;
        let doomed: Vec<u64> = std::mem::take(
            &mut *self
                .shared
                .segments
                .write()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut removed = RemovedSegments {
            files: Vec::with_capacity(doomed.len()),
            count: doomed.len(),
        };
        let mut first_err = None;
        for base in doomed {
            let path = self.shared.segment_path(base);
            let file = File::open(&path).ok();
            match fs::remove_file(&path) {
                Ok(()) => removed.files.extend(file),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_err.get_or_insert(StoreError::io("removing", &path, e));
                }
            }
        }
        info!(topic = %self.shared.topic, "deleted topic log");
        match first_err {
            Some(e) => Err(e),
            None => sync_dir(&self.shared.dir).map(|()| removed),
        }
    }
}

/// Scans the segment being written at open: returns the length of its valid prefix, after
/// truncating a torn tail.
fn scan_last_segment(file: &File, path: &Path, max_len: u32) -> Result<u64, StoreError> {
    let file_len = file
        .metadata()
        .map_err(|e| StoreError::io("reading", path, e))?
        .len();
    let mut sc = Scanner::new(file, 0, file_len, max_len, 1 << 20);
    let mut records = 0u64;
    let mut end = 0;
    loop {
        match sc.next_item() {
            Ok(None) => break,
            Ok(Some(Item::Record { .. })) => {
                records += 1;
                end = sc.offset();
            }
            Ok(Some(Item::Skipped { from, to })) => {
                warn!(
                    path = %path.display(),
                    from,
                    to,
                    "corrupt bytes in log segment; readers will skip them"
                );
                end = to;
            }
            Ok(Some(Item::Torn { at })) => {
                end = at;
                break;
            }
            Err(e) => return Err(StoreError::io("reading", path, e)),
        }
    }
    if end < file_len {
        warn!(
            path = %path.display(),
            valid_bytes = end,
            file_bytes = file_len,
            records,
            "truncating torn tail of log segment (process or OS died mid-write)"
        );
        file.set_len(end)
            .map_err(|e| StoreError::io("truncating", path, e))?;
        file.sync_data()
            .map_err(|e| StoreError::io("syncing", path, e))?;
    }
    Ok(end)
}

/// Segments [`TopicLog::remove_segments_before`] took out of a log: their names are gone from
/// the directory, but each file is still open here, so the kernel frees its blocks and cached
/// pages only when this is dropped.
///
/// Why: the last close of an unlinked file is where the filesystem does the work (page-cache
/// invalidation, freeing extents through its journal). For a 100 MB segment that took ~35 ms
/// on this project's idle ext4 VM disk (`rm` of a synced file), more under write load; on the
/// log writer thread, where retention runs in order with appends, every topic's appends (and
/// so every durable publisher's `OK`) would wait for it. Drop this on another thread.
#[derive(Debug, Default)]
#[must_use = "dropping it frees the removed segments' space on the current thread"]
pub struct RemovedSegments {
    files: Vec<File>,
    count: usize,
}

impl RemovedSegments {
    /// How many segments were removed.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether dropping this has nothing to free (no file is held open).
    pub fn holds_nothing(&self) -> bool {
        self.files.is_empty()
    }
}

/// Reads a topic log from another thread. Keeps one segment file open; cheap to create.
#[derive(Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
    cur: Option<(u64, File)>,
}

impl Clone for LogReader {
    fn clone(&self) -> Self {
        LogReader {
            shared: self.shared.clone(),
            cur: None,
        }
    }
}

impl LogReader {
    /// See [`TopicLog::written_upto`]: reads stop here.
    pub fn written_upto(&self) -> u64 {
        self.shared.written.load(Ordering::Acquire)
    }

    /// See [`TopicLog::synced_upto`].
    pub fn synced_upto(&self) -> u64 {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// First retained position, or `written_upto` when the log has no segment.
    pub fn start_pos(&self) -> u64 {
        let segs = self
            .shared
            .segments
            .read()
            .unwrap_or_else(|e| e.into_inner());
        segs.first().copied().unwrap_or_else(|| self.written_upto())
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    /// Reads up to `max_records` records / about `max_bytes` bytes (at least one record if any)
    /// from `pos` up to `written_upto()`. A position in a removed segment reads from the first
    /// retained one; corrupt records are logged and skipped. `next_pos` is where to continue.
    pub fn read_from(
        &mut self,
        pos: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, StoreError> {
        self.read_range(pos, u64::MAX, max_records, max_bytes)
    }

    /// Like [`LogReader::read_from`] but stops at `upto` too (e.g. `synced_upto()` to deliver
    /// only records an OS crash cannot take back).
    pub fn read_range(
        &mut self,
        mut pos: u64,
        upto: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadBatch, StoreError> {
        let upto = upto.min(self.written_upto());
        let mut records = Vec::new();
        let mut bytes = 0usize;
        'outer: while records.len() < max_records && pos < upto {
            let (base, next) = {
                let segs = self
                    .shared
                    .segments
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                let Some(&first) = segs.first() else {
                    break;
                };
                if pos < first {
                    pos = first;
                }
                let idx = segs.partition_point(|&b| b <= pos) - 1;
                (segs[idx], segs.get(idx + 1).copied())
            };
            if pos >= upto {
                break;
            }
            let seg_limit = next.unwrap_or(u64::MAX).min(upto);
            if pos >= seg_limit {
                match next {
                    Some(n) => {
                        pos = n;
                        continue;
                    }
                    None => break,
                }
            }
            if self.cur.as_ref().map(|c| c.0) != Some(base) {
                let path = self.shared.segment_path(base);
                match File::open(&path) {
                    Ok(f) => self.cur = Some((base, f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        let still_listed = self
                            .shared
                            .segments
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(&base);
                        if !still_listed {
                            continue; // removed meanwhile: re-locate
                        }
                        warn!(path = %path.display(), "log segment missing; skipping it");
                        match next {
                            Some(n) => {
                                pos = n;
                                continue;
                            }
                            None => break,
                        }
                    }
                    Err(e) => return Err(StoreError::io("opening", &path, e)),
                }
            }
            let Some((_, file)) = &self.cur else {
                break;
            };
            let chunk = max_bytes.saturating_sub(bytes).clamp(4096, MAX_READ_CHUNK);
            let mut sc = Scanner::new(
                file,
                pos - base,
                seg_limit - base,
                self.shared.scan_max_len,
                chunk,
            );
            loop {
                let item = sc
                    .next_item()
                    .map_err(|e| StoreError::io("reading", self.shared.segment_path(base), e))?;
                match item {
                    Some(Item::Record { off, kind, payload }) => {
                        let total = HEADER_LEN + 1 + payload.len();
                        if kind != KIND_MESSAGE {
                            debug!(kind, pos = base + off, "skipping unknown record kind");
                        } else if let Some(msg) = LogMessage::decode(payload) {
                            if !records.is_empty() && bytes + total > max_bytes {
                                break 'outer;
                            }
                            records.push((base + off, msg));
                            bytes += total;
                        } else {
                            warn!(
                                topic = %self.shared.topic,
                                pos = base + off,
                                "message record too short; skipping"
                            );
                        }
                        pos = base + sc.offset();
                        if records.len() >= max_records {
                            break 'outer;
                        }
                    }
                    Some(Item::Skipped { from, to }) => {
                        warn!(
                            path = %self.shared.segment_path(base).display(),
                            from,
                            to,
                            "corrupt log bytes skipped"
                        );
                        pos = base + to;
                    }
                    Some(Item::Torn { at }) => {
                        warn!(
                            path = %self.shared.segment_path(base).display(),
                            at,
                            "no valid record until end of segment; skipping rest"
                        );
                        pos = seg_limit;
                        break;
                    }
                    None => {
                        if base + sc.limit() < seg_limit {
                            // The file is shorter than the next segment's base says.
                            match next {
                                Some(n) if n <= upto => {
                                    warn!(
                                        path = %self.shared.segment_path(base).display(),
                                        missing = seg_limit - base - sc.limit(),
                                        "log segment shorter than expected"
                                    );
                                    pos = n;
                                }
                                _ => break 'outer,
                            }
                        } else {
                            pos = seg_limit;
                        }
                        break;
                    }
                }
            }
        }
        Ok(ReadBatch {
            records,
            next_pos: pos,
        })
    }
}
