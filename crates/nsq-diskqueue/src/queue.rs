//! The queue itself. See the crate docs for the format and the reasons behind each behaviour.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use crate::error::DiskQueueError;
use crate::meta::Metadata;

/// Size of the big-endian length prefix in front of every record.
pub const RECORD_HEADER_LEN: i64 = 4;

/// Tuning of one queue; nsqd passes the same values to every topic and channel queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskQueueOptions {
    /// Roll to a new file before a write would push the current one past this many bytes
    /// (nsqd `--max-bytes-per-file`, default 100 MiB).
    pub max_bytes_per_file: i64,
    /// Smallest acceptable payload (nsqd: 26, the message header).
    pub min_msg_size: i32,
    /// Largest acceptable payload (nsqd: `--max-msg-size` + 26).
    pub max_msg_size: i32,
    /// fsync after this many reads + writes (nsqd `--sync-every`, default 2500).
    pub sync_every: i64,
    /// fsync at least this often while there is activity (nsqd `--sync-timeout`, default 2 s).
    pub sync_timeout: Duration,
}

impl Default for DiskQueueOptions {
    /// nsqd 1.3.0's defaults.
    fn default() -> Self {
        DiskQueueOptions {
            max_bytes_per_file: 100 * 1024 * 1024,
            min_msg_size: 26,
            max_msg_size: 1024 * 1024 + 26,
            sync_every: 2500,
            sync_timeout: Duration::from_secs(2),
        }
    }
}

/// A go-diskqueue v1.1.0 compatible, synchronous, single-owner FIFO queue of byte records.
///
/// Not thread-safe by itself (every operation takes `&mut self`); wrap it in a mutex or give it
/// to one task. It never spawns threads; the owner drives time-based syncing with
/// [`needs_sync`](DiskQueue::needs_sync) / [`maybe_sync`](DiskQueue::maybe_sync).
///
/// Dropping a queue does **not** sync it (like killing Go's nsqd): call
/// [`close`](DiskQueue::close) for an orderly shutdown.
#[derive(Debug)]
pub struct DiskQueue {
    name: String,
    dir: PathBuf,
    opts: DiskQueueOptions,

    // persisted state
    depth: i64,
    read_file_num: i64,
    read_pos: i64,
    write_file_num: i64,
    write_pos: i64,

    // open files
    reader: Option<BufReader<File>>,
    /// Final size of the read file once it is known to be complete (not the write file).
    read_file_end: Option<i64>,
    write_file: Option<File>,
    write_buf: Vec<u8>,

    // sync bookkeeping
    /// Reads + writes since the last sync (Go's `count`).
    count: i64,
    /// A significant state change (file roll, bad file, depth reset) wants a sync.
    need_sync: bool,
    last_sync: Instant,

    closed: bool,
}

/// Result of trying to read one record.
enum ReadOutcome {
    Record(Bytes),
    /// The reader is exactly at the end of a completed file: move on without consuming anything.
    EndOfFile,
}

/// Why a record could not be read.
enum ReadFailure {
    /// The file cannot be trusted: set it aside and skip to the next one.
    Corrupt(String),
    /// An I/O error that says nothing about the data (EIO, EMFILE...): report and retry later.
    Io(DiskQueueError),
}

impl DiskQueue {
    /// Opens (or starts) the queue `name` in `dir`, resuming from its metadata file.
    ///
    /// Startup repair follows go-diskqueue v1.1.0: if the metadata's write position is behind the
    /// real size of the write file (the process died between a write and the next sync), writing
    /// moves to a fresh file and the reader salvages the old one up to its real end.
    pub fn open(
        dir: &Path,
        name: &str,
        opts: DiskQueueOptions,
    ) -> Result<DiskQueue, DiskQueueError> {
        validate_options(&opts)?;
        if name.is_empty() {
            return Err(DiskQueueError::InvalidOptions(
                "queue name must not be empty".into(),
            ));
        }
        let mut q = DiskQueue {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            opts,
            depth: 0,
            read_file_num: 0,
            read_pos: 0,
            write_file_num: 0,
            write_pos: 0,
            reader: None,
            read_file_end: None,
            write_file: None,
            write_buf: Vec::new(),
            count: 0,
            need_sync: false,
            last_sync: Instant::now(),
            closed: false,
        };
        q.retrieve_metadata()?;
        Ok(q)
    }

    /// The queue name (`topic` or `topic:channel`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the queue's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the queue was opened with.
    pub fn options(&self) -> &DiskQueueOptions {
        &self.opts
    }

    /// Number of records not yet read. Like Go's, this is "eventually consistent": after a crash
    /// it can be off until the reader reaches the end, where it is reset to 0.
    pub fn depth(&self) -> i64 {
        self.depth
    }

    /// The in-memory state, as the next sync would persist it.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            depth: self.depth,
            read_file_num: self.read_file_num,
            read_pos: self.read_pos,
            write_file_num: self.write_file_num,
            write_pos: self.write_pos,
        }
    }

    /// Path of `<name>.diskqueue.meta.dat`.
    pub fn meta_file_path(&self) -> PathBuf {
        meta_file_path(&self.dir, &self.name)
    }

    /// Path of `<name>.diskqueue.<num:06>.dat`.
    pub fn data_file_path(&self, file_num: i64) -> PathBuf {
        data_file_path(&self.dir, &self.name, file_num)
    }

    /// `true` after [`close`](DiskQueue::close) or [`delete`](DiskQueue::delete).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Appends one record (`[4-byte BE length][payload]`).
    ///
    /// Rolls to the next file first when `write_pos > 0 && write_pos + 4 + len >
    /// max_bytes_per_file` (and syncs, as Go does on every roll). Sizes outside
    /// `[min_msg_size, max_msg_size]` are rejected with
    /// [`DiskQueueError::InvalidMessageSize`]. On a write error the partial record is cut off
    /// again, so the file never holds a torn record that a later reader would trip over.
    pub fn put(&mut self, payload: &[u8]) -> Result<(), DiskQueueError> {
        self.check_open()?;
        let len = payload.len();
        self.check_size(len)?;
        let total = RECORD_HEADER_LEN + len as i64;

        if self.write_pos > 0 && self.write_pos + total > self.opts.max_bytes_per_file {
            self.roll_write_file();
        }

        if self.write_file.is_none() {
            self.open_write_file()?;
        }
        self.write_buf.clear();
        self.write_buf
            .extend_from_slice(&(len as i32).to_be_bytes());
        self.write_buf.extend_from_slice(payload);
        // one write call per record, like Go ("only write to the file once")
        self.write_pending()?;
        self.write_pos += total;
        self.depth += 1;
        self.count += 1;
        self.sync_if_due();
        Ok(())
    }

    /// Appends `payloads` in order, leaving the same files and bytes as one
    /// [`put`](DiskQueue::put) per payload, but with one `write` per data file the batch
    /// lands in (Go and `put` make one per record) and one sync check at the end instead of
    /// one per record: with `sync_every` the fsync comes at the end of the batch that crosses
    /// it, and a file roll still syncs as in Go.
    ///
    /// For bulk writers (nsqd's export to go-diskqueue files): one write per record made a
    /// 5 M-message export issue 5 M `write` calls. Every size is checked before anything is
    /// written (a bad one fails the whole batch). On a write error the records of that file's
    /// chunk are cut off again and the error returned; the chunks before it stay written.
    pub fn put_batch(&mut self, payloads: &[&[u8]]) -> Result<(), DiskQueueError> {
        self.check_open()?;
        for p in payloads {
            self.check_size(p.len())?;
        }
        let mut i = 0;
        while i < payloads.len() {
            let first = RECORD_HEADER_LEN + payloads[i].len() as i64;
            if self.write_pos > 0 && self.write_pos + first > self.opts.max_bytes_per_file {
                self.roll_write_file();
            }
            if self.write_file.is_none() {
                self.open_write_file()?;
            }
            // The records that fit in this file, by `put`'s roll rule.
            self.write_buf.clear();
            let start = i;
            let mut end = self.write_pos;
            while i < payloads.len() {
                let total = RECORD_HEADER_LEN + payloads[i].len() as i64;
                if i > start && end + total > self.opts.max_bytes_per_file {
                    break;
                }
                self.write_buf
                    .extend_from_slice(&(payloads[i].len() as i32).to_be_bytes());
                self.write_buf.extend_from_slice(payloads[i]);
                end += total;
                i += 1;
            }
            self.write_pending()?;
            let n = (i - start) as i64;
            self.write_pos = end;
            self.depth += n;
            self.count += n;
        }
        self.sync_if_due();
        Ok(())
    }

    /// Writes `write_buf` (whole records) at `write_pos` of the open write file in one call.
    /// On failure whatever part made it is cut off again, and the next put reopens the file
    /// and seeks to `write_pos`.
    fn write_pending(&mut self) -> Result<(), DiskQueueError> {
        let file = self
            .write_file
            .as_mut()
            .expect("write file opened by the caller");
        let Err(source) = file.write_all(&self.write_buf) else {
            return Ok(());
        };
        let cut = file.set_len(self.write_pos as u64);
        self.write_file = None;
        let path = self.data_file_path(self.write_file_num);
        if let Err(e) = cut {
            warn!(queue = %self.name, "DISKQUEUE({}) failed to truncate {} back to {} after a failed write - {e}",
                self.name, path.display(), self.write_pos);
        }
        Err(DiskQueueError::Write { path, source })
    }

    fn check_size(&self, len: usize) -> Result<(), DiskQueueError> {
        if len > i32::MAX as usize
            || (len as i64) < i64::from(self.opts.min_msg_size)
            || (len as i64) > i64::from(self.opts.max_msg_size)
        {
            return Err(DiskQueueError::InvalidMessageSize {
                size: len,
                min: self.opts.min_msg_size,
                max: self.opts.max_msg_size,
            });
        }
        Ok(())
    }

    /// Reads and consumes the next record, or `Ok(None)` when the queue is empty.
    ///
    /// The read is destructive, as in Go: the read position and depth advance before the record
    /// is returned, and a fully read file is deleted as the reader leaves it. Corrupt data
    /// (length outside `[min, max]`, short read, missing file) is logged, the file is renamed to
    /// `*.bad` and reading continues with the next file; it is never returned as an error.
    ///
    /// `Err` is only returned for the closed state and for I/O errors that say nothing about the
    /// data (e.g. `EMFILE`, `EIO` opening the file); the position is then unchanged and the call
    /// can be retried later.
    pub fn read_next(&mut self) -> Result<Option<Bytes>, DiskQueueError> {
        self.check_open()?;
        loop {
            if !self.has_unread() {
                return Ok(None);
            }
            match self.read_one() {
                Ok(ReadOutcome::Record(buf)) => {
                    self.count += 1;
                    self.sync_if_due();
                    return Ok(Some(buf));
                }
                Ok(ReadOutcome::EndOfFile) => {
                    let old = self.read_file_num;
                    self.read_file_num += 1;
                    self.read_pos = 0;
                    self.leave_read_file(old);
                    self.check_tail_corruption();
                    self.sync_if_due();
                }
                Err(ReadFailure::Corrupt(reason)) => {
                    error!(queue = %self.name, "DISKQUEUE({}) reading at {} of {} - {reason}",
                        self.name, self.read_pos, self.data_file_path(self.read_file_num).display());
                    self.handle_read_error();
                    self.sync_if_due();
                }
                Err(ReadFailure::Io(e)) => return Err(e),
            }
        }
    }

    /// fsyncs the data file being written, then atomically replaces the metadata file
    /// (`<meta>.<random>.tmp`, fsync, rename, fsync of the directory).
    pub fn sync(&mut self) -> Result<(), DiskQueueError> {
        if self.closed {
            return Ok(());
        }
        if let Some(file) = &self.write_file {
            if let Err(source) = file.sync_all() {
                self.write_file = None;
                return Err(DiskQueueError::Sync {
                    path: self.data_file_path(self.write_file_num),
                    source,
                });
            }
        }
        self.persist_metadata()?;
        self.need_sync = false;
        self.count = 0;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Whether a sync is due at `now`: a state change asked for one, `sync_every` operations
    /// happened, or there was activity and `sync_timeout` passed since the last sync.
    pub fn needs_sync(&self, now: Instant) -> bool {
        if self.closed {
            return false;
        }
        self.need_sync
            || (self.count > 0
                && (self.count >= self.opts.sync_every.max(1)
                    || now.saturating_duration_since(self.last_sync) >= self.opts.sync_timeout))
    }

    /// When the owner should call [`maybe_sync`](DiskQueue::maybe_sync) next, or `None` if there
    /// is nothing unsynced.
    pub fn next_sync_deadline(&self) -> Option<Instant> {
        if self.closed {
            None
        } else if self.need_sync {
            Some(self.last_sync)
        } else if self.count > 0 {
            Some(self.last_sync + self.opts.sync_timeout)
        } else {
            None
        }
    }

    /// Syncs if [`needs_sync`](DiskQueue::needs_sync) says so; returns whether it did.
    pub fn maybe_sync(&mut self, now: Instant) -> Result<bool, DiskQueueError> {
        if !self.needs_sync(now) {
            return Ok(false);
        }
        self.sync().map(|()| true)
    }

    /// Destructively drops every unread record, as Go's `Empty`: deletes the data files from the
    /// read file to the write file, moves to a fresh file number, and deletes the metadata file
    /// (the next sync writes a new one).
    pub fn empty(&mut self) -> Result<(), DiskQueueError> {
        self.check_open()?;
        info!(queue = %self.name, "DISKQUEUE({}): emptying", self.name);
        let files = self.skip_to_next_rw_file();
        let meta = remove_if_exists(&self.meta_file_path());
        self.count = 0;
        meta.and(files)
    }

    /// Removes the data files and the metadata file and closes the queue (for topic/channel
    /// deletion). `*.bad` files are left for the operator.
    pub fn delete(&mut self) -> Result<(), DiskQueueError> {
        if self.closed {
            return Err(DiskQueueError::Closed(self.name.clone()));
        }
        info!(queue = %self.name, "DISKQUEUE({}): deleting", self.name);
        let files = self.skip_to_next_rw_file();
        let meta = remove_if_exists(&self.meta_file_path());
        self.closed = true;
        meta.and(files)
    }

    /// Syncs and closes the files. Further operations return [`DiskQueueError::Closed`];
    /// closing twice is a no-op.
    pub fn close(&mut self) -> Result<(), DiskQueueError> {
        if self.closed {
            return Ok(());
        }
        info!(queue = %self.name, "DISKQUEUE({}): closing", self.name);
        let res = self.sync();
        self.reader = None;
        self.read_file_end = None;
        self.write_file = None;
        self.closed = true;
        res
    }

    // ---------------------------------------------------------------- internals

    fn check_open(&self) -> Result<(), DiskQueueError> {
        if self.closed {
            Err(DiskQueueError::Closed(self.name.clone()))
        } else {
            Ok(())
        }
    }

    fn has_unread(&self) -> bool {
        self.read_file_num < self.write_file_num || self.read_pos < self.write_pos
    }

    /// Go's ioLoop syncs when `count == syncEvery` or a state change set `needSync`; here that
    /// happens at the end of the operation. Like Go, a failed sync is logged (and retried on the
    /// next operation), not returned: the operation itself succeeded.
    fn sync_if_due(&mut self) {
        if self.need_sync || self.count >= self.opts.sync_every.max(1) {
            if let Err(e) = self.sync() {
                error!(queue = %self.name, "DISKQUEUE({}) failed to sync - {e}", self.name);
                self.need_sync = true;
            }
        }
    }

    fn retrieve_metadata(&mut self) -> Result<(), DiskQueueError> {
        let meta_path = self.meta_file_path();
        let text = match fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new (or emptied) queue. Data files without metadata are orphans: keep them,
                // but never write over them.
                let orphans = self.list_data_files()?;
                if let Some(max) = orphans.iter().map(|(n, _)| *n).max() {
                    warn!(queue = %self.name,
                        "DISKQUEUE({}) no metadata file {} but data files exist: {}; leaving them alone and starting empty at file {}",
                        self.name, meta_path.display(), join_paths(&orphans), max + 1);
                    self.start_fresh_at(max + 1);
                }
                return Ok(());
            }
            Err(source) => {
                return Err(DiskQueueError::Read {
                    path: meta_path,
                    source,
                })
            }
        };

        let parsed = std::str::from_utf8(&text)
            .map_err(|e| format!("not UTF-8: {e}"))
            .and_then(Metadata::parse);
        let m = match parsed {
            Ok(m) => m,
            Err(reason) => {
                // We cannot know where the records are: start empty, keep every file for the
                // operator, and keep the garbled metadata too (as `*.bad`) before the next sync
                // overwrites it.
                let files = self.list_data_files()?;
                let next = files.iter().map(|(n, _)| *n).max().map_or(0, |n| n + 1);
                let bad = append_to_path(&meta_path, ".bad");
                error!(queue = %self.name,
                    "DISKQUEUE({}) failed to retrieveMetaData - {}: {reason}; saving it as {} and starting empty at file {next} (data files left in place: {})",
                    self.name, meta_path.display(), bad.display(), join_paths(&files));
                if let Err(e) = fs::rename(&meta_path, &bad) {
                    error!(queue = %self.name, "DISKQUEUE({}) failed to rename bad metadata file {} to {} - {e}",
                        self.name, meta_path.display(), bad.display());
                }
                self.start_fresh_at(next);
                self.need_sync = true;
                return Ok(());
            }
        };
        self.depth = m.depth;
        self.read_file_num = m.read_file_num;
        self.read_pos = m.read_pos;
        self.write_file_num = m.write_file_num;
        self.write_pos = m.write_pos;

        // go-diskqueue 1.1.0: if the metadata was not synced at the last shutdown, the write file
        // can be longer than writePos; skip to a new file for writes and let the reader salvage
        // the old one up to its real size (records after the stale readPos may be re-delivered).
        let write_path = self.data_file_path(self.write_file_num);
        match fs::metadata(&write_path) {
            Ok(st) => {
                let size = st.len() as i64;
                if self.write_pos < size {
                    warn!(queue = %self.name,
                        "DISKQUEUE({}) {} metadata writePos {} < file size of {}, skipping to new file",
                        self.name, write_path.display(), self.write_pos, size);
                    self.write_file_num += 1;
                    self.write_pos = 0;
                } else if self.write_pos > size {
                    // Not in Go (it would seek past the end and leave a hole of zeros that reads
                    // back as corruption): treat the file as complete and write a new one.
                    warn!(queue = %self.name,
                        "DISKQUEUE({}) {} metadata writePos {} > file size of {}, skipping to new file",
                        self.name, write_path.display(), self.write_pos, size);
                    self.write_file_num += 1;
                    self.write_pos = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Normal right after a roll: the meta already names the next file, which has
                // not been created yet (writePos 0).
                if self.write_pos > 0 {
                    warn!(queue = %self.name,
                        "DISKQUEUE({}) {} is missing but metadata writePos is {}, skipping to new file",
                        self.name, write_path.display(), self.write_pos);
                    self.write_file_num += 1;
                    self.write_pos = 0;
                }
            }
            Err(e) => {
                warn!(queue = %self.name, "DISKQUEUE({}) cannot stat {} - {e}",
                    self.name, write_path.display());
            }
        }
        // Not in Go (which fixes a stale depth only after the next read): if there is nothing
        // to read, the depth is 0 now. Found by the `diskqueue` fuzz target.
        self.check_tail_corruption();
        debug!(queue = %self.name, ?m, repaired = ?self.metadata(), "DISKQUEUE({}) metadata loaded", self.name);
        Ok(())
    }

    fn start_fresh_at(&mut self, file_num: i64) {
        self.depth = 0;
        self.read_file_num = file_num;
        self.read_pos = 0;
        self.write_file_num = file_num;
        self.write_pos = 0;
    }

    /// `(file number, path)` of this queue's data files, including `*.bad` ones (so fresh file
    /// numbers never collide with them). Sorted by number.
    fn list_data_files(&self) -> Result<Vec<(i64, PathBuf)>, DiskQueueError> {
        let prefix = format!("{}.diskqueue.", self.name);
        let entries = fs::read_dir(&self.dir).map_err(|source| DiskQueueError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| DiskQueueError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let fname = entry.file_name();
            let Some(fname) = fname.to_str() else {
                continue;
            };
            let Some(rest) = fname.strip_prefix(&prefix) else {
                continue;
            };
            let rest = rest.strip_suffix(".bad").unwrap_or(rest);
            let Some(digits) = rest.strip_suffix(".dat") else {
                continue;
            };
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Ok(n) = digits.parse::<i64>() {
                out.push((n, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    fn persist_metadata(&mut self) -> Result<(), DiskQueueError> {
        let meta_path = self.meta_file_path();
        let tmp = append_to_path(&meta_path, &format!(".{}.tmp", random_suffix()));
        let text = self.metadata().to_text();
        let written = (|| -> io::Result<()> {
            let mut f = create_options().open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })();
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(DiskQueueError::Write { path: tmp, source });
        }
        if let Err(source) = fs::rename(&tmp, &meta_path) {
            let _ = fs::remove_file(&tmp);
            return Err(DiskQueueError::Rename {
                from: tmp,
                to: meta_path,
                source,
            });
        }
        // Not in Go: make the rename itself durable.
        if let Err(e) = sync_dir(&self.dir) {
            warn!(queue = %self.name, "DISKQUEUE({}) failed to fsync directory {} - {e}",
                self.name, self.dir.display());
        }
        Ok(())
    }

    fn open_write_file(&mut self) -> Result<(), DiskQueueError> {
        let path = self.data_file_path(self.write_file_num);
        let mut f = create_options()
            .open(&path)
            .map_err(|source| DiskQueueError::Open {
                path: path.clone(),
                source,
            })?;
        info!(queue = %self.name, "DISKQUEUE({}): writeOne() opened {}", self.name, path.display());
        // Not in Go: bytes past the write position are stale (a data file the metadata does
        // not know about, e.g. the file the startup repair moved the writer to). Go writes over
        // them and leaves the rest, so old records resurface behind the new ones after the
        // next repair (found by the `diskqueue` fuzz target). Cut them off first.
        let len = f
            .metadata()
            .map_err(|source| DiskQueueError::Open {
                path: path.clone(),
                source,
            })?
            .len();
        if len > self.write_pos as u64 {
            warn!(queue = %self.name, "DISKQUEUE({}) {} holds {} bytes past the write position {}; discarding them",
                self.name, path.display(), len - self.write_pos as u64, self.write_pos);
            f.set_len(self.write_pos as u64)
                .map_err(|source| DiskQueueError::Write {
                    path: path.clone(),
                    source,
                })?;
        }
        if self.write_pos > 0 {
            f.seek(SeekFrom::Start(self.write_pos as u64))
                .map_err(|source| DiskQueueError::Seek {
                    path,
                    offset: self.write_pos,
                    source,
                })?;
        }
        self.write_file = Some(f);
        Ok(())
    }

    /// Go's roll: bump the file number, sync (fsyncs the old file and persists the new
    /// position), close the old file.
    fn roll_write_file(&mut self) {
        if self.read_file_num == self.write_file_num && self.reader.is_some() {
            // The reader is in the file being completed: it now ends where the writer stopped.
            self.read_file_end = Some(self.write_pos);
        }
        self.write_file_num += 1;
        self.write_pos = 0;
        if let Err(e) = self.sync() {
            error!(queue = %self.name, "DISKQUEUE({}) failed to sync - {e}", self.name);
            self.need_sync = true;
        }
        self.write_file = None;
    }

    /// The final size of the current read file, which must be complete (`read < write` file).
    fn completed_read_file_end(&mut self) -> i64 {
        if let Some(end) = self.read_file_end {
            return end;
        }
        let end = match self.reader.as_ref().map(|r| r.get_ref().metadata()) {
            Some(Ok(st)) => st.len() as i64,
            // Go falls back to maxBytesPerFile when stat fails
            _ => self.opts.max_bytes_per_file,
        };
        self.read_file_end = Some(end);
        end
    }

    fn read_one(&mut self) -> Result<ReadOutcome, ReadFailure> {
        let path = self.data_file_path(self.read_file_num);
        if self.reader.is_none() {
            let mut f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ReadFailure::Corrupt(format!("file is missing: {e}")))
                }
                Err(source) => return Err(ReadFailure::Io(DiskQueueError::Open { path, source })),
            };
            info!(queue = %self.name, "DISKQUEUE({}): readOne() opened {}", self.name, path.display());
            // Not in Go: a position past the end of the file is corrupt metadata, not an I/O
            // error (seeking past a filesystem's maximum file size fails with EINVAL, which
            // would otherwise be retried forever).
            if let Ok(st) = f.metadata() {
                if self.read_pos > st.len() as i64 {
                    return Err(ReadFailure::Corrupt(format!(
                        "read position {} is past the end of the file ({} bytes)",
                        self.read_pos,
                        st.len()
                    )));
                }
            }
            if self.read_pos > 0 {
                if let Err(source) = f.seek(SeekFrom::Start(self.read_pos as u64)) {
                    return Err(ReadFailure::Io(DiskQueueError::Seek {
                        path,
                        offset: self.read_pos,
                        source,
                    }));
                }
            }
            self.reader = Some(BufReader::new(f));
            self.read_file_end = None;
        }

        let complete = self.read_file_num < self.write_file_num;
        let end = if complete {
            let end = self.completed_read_file_end();
            if self.read_pos == end {
                return Ok(ReadOutcome::EndOfFile);
            }
            if self.read_pos > end {
                return Err(ReadFailure::Corrupt(format!(
                    "read position is past the end of the file ({end} bytes)"
                )));
            }
            end
        } else {
            self.write_pos
        };

        let reader = self.reader.as_mut().expect("reader opened above");
        let mut len_buf = [0u8; 4];
        if let Err(e) = reader.read_exact(&mut len_buf) {
            self.reader = None;
            return Err(classify_read_error(e, path, "message size"));
        }
        let size = i32::from_be_bytes(len_buf);
        if size < self.opts.min_msg_size || size > self.opts.max_msg_size {
            // this file is corrupt and we have no reasonable guarantee on where a new message
            // should begin
            self.reader = None;
            return Err(ReadFailure::Corrupt(format!(
                "invalid message read size ({size})"
            )));
        }
        let next_pos = self.read_pos + RECORD_HEADER_LEN + i64::from(size);
        if next_pos > end {
            self.reader = None;
            return Err(ReadFailure::Corrupt(format!(
                "message of {size} bytes at {} runs past the end of the data ({end})",
                self.read_pos
            )));
        }
        let mut buf = vec![0u8; size as usize];
        if let Err(e) = reader.read_exact(&mut buf) {
            self.reader = None;
            return Err(classify_read_error(e, path, "message body"));
        }

        // move forward (Go's moveForward; the record is handed out right away)
        let old = self.read_file_num;
        self.read_pos = next_pos;
        self.depth -= 1;
        if complete && next_pos >= end {
            self.read_file_num += 1;
            self.read_pos = 0;
            self.leave_read_file(old);
        }
        self.check_tail_corruption();
        Ok(ReadOutcome::Record(Bytes::from(buf)))
    }

    /// The reader moved past file `old`: close it, delete it, and sync soon (Go: "sync every time
    /// we start reading from a new file").
    fn leave_read_file(&mut self, old: i64) {
        self.reader = None;
        self.read_file_end = None;
        self.need_sync = true;
        let path = self.data_file_path(old);
        if let Err(e) = fs::remove_file(&path) {
            error!(queue = %self.name, "DISKQUEUE({}) failed to Remove({}) - {e}", self.name, path.display());
        }
    }

    /// Go's handleReadError: rename the current read file to `*.bad` and jump to the next one; if
    /// it was also the write file, the writer jumps too.
    fn handle_read_error(&mut self) {
        self.reader = None;
        self.read_file_end = None;
        if self.read_file_num == self.write_file_num {
            self.write_file = None;
            self.write_file_num += 1;
            self.write_pos = 0;
        }
        let bad = self.data_file_path(self.read_file_num);
        let renamed = append_to_path(&bad, ".bad");
        warn!(queue = %self.name, "DISKQUEUE({}) jump to next file and saving bad file as {}",
            self.name, renamed.display());
        if let Err(e) = fs::rename(&bad, &renamed) {
            if e.kind() != io::ErrorKind::NotFound {
                error!(queue = %self.name, "DISKQUEUE({}) failed to rename bad diskqueue file {} to {} - {e}",
                    self.name, bad.display(), renamed.display());
            }
        }
        self.read_file_num += 1;
        self.read_pos = 0;
        self.skip_missing_files();
        // significant state change, sync soon
        self.need_sync = true;
        // Not in Go 1.1.0 (it waits for the next successful read): if that was the end of the
        // queue, fix the depth now so depth() does not report records that are gone.
        self.check_tail_corruption();
    }

    /// Not in Go: if the new read file does not exist, jump over the whole run of missing
    /// files at once, to the next data file present (or the write file). Go steps one file
    /// number per read, so metadata naming file 10^12 (found by the `diskqueue` fuzz target)
    /// would keep it renaming non-existent files for ever.
    fn skip_missing_files(&mut self) {
        if self.read_file_num >= self.write_file_num
            || self.data_file_path(self.read_file_num).exists()
        {
            return;
        }
        let Ok(files) = self.list_data_files() else {
            return;
        };
        let next = files
            .iter()
            .filter(|(n, p)| *n > self.read_file_num && p.extension().is_some_and(|e| e == "dat"))
            .map(|(n, _)| *n)
            .min()
            .map_or(self.write_file_num, |n| n.min(self.write_file_num));
        if next > self.read_file_num + 1 {
            warn!(queue = %self.name, "DISKQUEUE({}) data files {} to {} are missing, skipping to {}",
                self.name, self.read_file_num, next - 1, self.data_file_path(next).display());
        }
        self.read_file_num = next;
    }

    /// Go's checkTailCorruption: once the reader has caught up with the writer the depth must be
    /// 0 ("eventually consistent depth"); a reader ahead of the writer means corrupt positions.
    fn check_tail_corruption(&mut self) {
        if self.has_unread() {
            return;
        }
        if self.depth != 0 {
            if self.depth < 0 {
                error!(queue = %self.name, "DISKQUEUE({}) negative depth at tail ({}), metadata corruption, resetting 0...",
                    self.name, self.depth);
            } else {
                error!(queue = %self.name, "DISKQUEUE({}) positive depth at tail ({}), data loss, resetting 0...",
                    self.name, self.depth);
            }
            self.depth = 0;
            self.need_sync = true;
        }
        if self.read_file_num != self.write_file_num || self.read_pos != self.write_pos {
            if self.read_file_num > self.write_file_num {
                error!(queue = %self.name, "DISKQUEUE({}) readFileNum > writeFileNum ({} > {}), corruption, skipping to next writeFileNum and resetting 0...",
                    self.name, self.read_file_num, self.write_file_num);
            }
            if self.read_pos > self.write_pos {
                error!(queue = %self.name, "DISKQUEUE({}) readPos > writePos ({} > {}), corruption, skipping to next writeFileNum and resetting 0...",
                    self.name, self.read_pos, self.write_pos);
            }
            if let Err(e) = self.skip_to_next_rw_file() {
                error!(queue = %self.name, "DISKQUEUE({}) {e}", self.name);
            }
            self.need_sync = true;
        }
    }

    /// Go's skipToNextRWFile: delete the files from the read file to the write file and start
    /// over, empty, at the next file number.
    fn skip_to_next_rw_file(&mut self) -> Result<(), DiskQueueError> {
        self.reader = None;
        self.read_file_end = None;
        self.write_file = None;
        let mut result = Ok(());
        for n in self.read_file_num..=self.write_file_num {
            if let Err(e) = remove_if_exists(&self.data_file_path(n)) {
                error!(queue = %self.name, "DISKQUEUE({}) failed to remove data file - {e}", self.name);
                result = Err(e);
            }
        }
        let next = self.read_file_num.max(self.write_file_num) + 1;
        self.start_fresh_at(next);
        result
    }
}

fn validate_options(o: &DiskQueueOptions) -> Result<(), DiskQueueError> {
    let bad = |m: String| Err(DiskQueueError::InvalidOptions(m));
    if o.max_bytes_per_file <= 0 {
        return bad(format!(
            "max_bytes_per_file must be > 0 (got {})",
            o.max_bytes_per_file
        ));
    }
    if o.min_msg_size < 0 || o.max_msg_size < o.min_msg_size {
        return bad(format!(
            "need 0 <= min_msg_size <= max_msg_size (got {} and {})",
            o.min_msg_size, o.max_msg_size
        ));
    }
    Ok(())
}

fn meta_file_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.diskqueue.meta.dat"))
}

fn data_file_path(dir: &Path, name: &str, file_num: i64) -> PathBuf {
    dir.join(format!("{name}.diskqueue.{file_num:06}.dat"))
}

fn append_to_path(p: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(p.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

fn join_paths(files: &[(i64, PathBuf)]) -> String {
    files
        .iter()
        .map(|(_, p)| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn classify_read_error(e: io::Error, path: PathBuf, what: &str) -> ReadFailure {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadFailure::Corrupt(format!("short read of {what}: {e}"))
    } else {
        ReadFailure::Io(DiskQueueError::Read { path, source: e })
    }
}

fn remove_if_exists(path: &Path) -> Result<(), DiskQueueError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DiskQueueError::Remove {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read-write, create, no truncation, mode 0600 (Go: `os.O_RDWR|os.O_CREATE, 0600`).
fn create_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// A non-negative 63-bit random number, like Go's `rand.Int()` in the tmp file name.
fn random_suffix() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() >> 1
}
