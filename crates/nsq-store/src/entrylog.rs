//! An **entry log**: the append-only file of a consensus log (replicated topics, issue 14), on
//! the same record frame, checksum and torn-tail rules as the topic logs, so one storage engine
//! holds everything nsqd writes while running.
//!
//! A consensus log differs from a topic log in two ways that need their own file type: entries
//! are addressed by a dense index (1, 2, 3, ...) rather than a byte position, and a follower
//! must be able to **truncate** a suffix (entries the new leader does not have) and **purge** a
//! prefix (entries covered by a snapshot). Everything else is shared: records are framed by
//! [`crate::record`] (kind [`KIND_ENTRY`], payload = index `u64` big-endian + the caller's bytes),
//! written with one `pwrite` per append, made durable with `fdatasync`.
//!
//! ```text
//! <dir>/entries.log        the records; the first may have any index (after a purge)
//! <dir>/entries.log.tmp    a prefix purge being rewritten (ignored, overwritten)
//! <dir>/state              small atomic state (vote, committed): written as tmp + fsync + rename
//! ```
//!
//! **Recovery.** Open scans the whole file (an entry log is kept short by snapshots). A torn tail
//! (crash mid-write) is truncated with a warning. Unlike a topic log, a damaged record in the
//! middle cannot be skipped — the indexes after it would have a hole — so the log is cut there
//! (an error is logged): the entries after it come back from the leader. An index that does
//! not follow its predecessor is treated the same way.
//!
//! Only the index (offset and length per entry) is kept in memory; [`EntryLog::read`] `pread`s.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::record::{self, Item, Scanner};
use crate::StoreError;

/// Record kind of a consensus log entry.
pub const KIND_ENTRY: u8 = 32;
/// Record kind of the state file's one record.
const KIND_STATE: u8 = 33;
/// Largest entry accepted (the frame's length bound while scanning).
const MAX_ENTRY: u32 = 256 << 20;
/// A purged prefix is rewritten away once it is this large and more than half the file.
const REWRITE_AT: u64 = 64 << 20;

#[derive(Debug, Clone, Copy)]
struct Slot {
    off: u64,
    /// Whole record length (header, kind, index, data).
    len: u32,
}

/// One consensus log's file (see the module doc).
#[derive(Debug)]
pub struct EntryLog {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Index of `slots[0]`.
    first: u64,
    slots: std::collections::VecDeque<Slot>,
    /// File length (end of the last record).
    end: u64,
    /// Bytes before `slots[0]` that a purge made dead.
    dead: u64,
    buf: Vec<u8>,
    /// [`REWRITE_AT`], lowered by unit tests.
    rewrite_at: u64,
}

impl EntryLog {
    /// Opens (creating) the entry log in `dir`, recovering as the module doc says.
    pub fn open(dir: &Path) -> Result<EntryLog, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io("creating", dir, e))?;
        let path = dir.join("entries.log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::io("opening", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("reading metadata of", &path, e))?
            .len();
        let mut slots = std::collections::VecDeque::new();
        let mut first = 0;
        let mut end = 0;
        let mut cut = None;
        {
            let mut sc = Scanner::new(&file, 0, len, MAX_ENTRY, 1 << 20);
            while let Some(item) = sc
                .next_item()
                .map_err(|e| StoreError::io("reading", &path, e))?
            {
                match item {
                    Item::Record { off, kind, payload } => {
                        let idx = (kind == KIND_ENTRY && payload.len() >= 8)
                            .then(|| u64::from_be_bytes(payload[..8].try_into().unwrap()));
                        let Some(idx) = idx else {
                            cut = Some((off, "a record that is not an entry"));
                            break;
                        };
                        if slots.is_empty() {
                            first = idx;
                        } else if idx != first + slots.len() as u64 {
                            cut = Some((off, "an entry index out of sequence"));
                            break;
                        }
                        let total = record::HEADER_LEN as u64 + 1 + payload.len() as u64;
                        slots.push_back(Slot {
                            off,
                            len: total as u32,
                        });
                        end = off + total;
                    }
                    Item::Skipped { from, .. } => {
                        cut = Some((from, "a damaged record"));
                        break;
                    }
                    Item::Torn { at } => {
                        tracing::warn!(
                            "{}: torn tail at offset {at} (of {len}) truncated",
                            path.display()
                        );
                        break;
                    }
                }
            }
        }
        if let Some((off, why)) = cut {
            tracing::error!(
                "{}: {why} at offset {off}; the log is cut there ({} bytes dropped), \
                 the entries after it will be fetched from the leader",
                path.display(),
                len - off
            );
        }
        let dead = slots.front().map_or(end, |s| s.off);
        if end < len {
            file.set_len(end)
                .and_then(|_| file.sync_data())
                .map_err(|e| StoreError::io("truncating", &path, e))?;
        }
        Ok(EntryLog {
            dir: dir.to_path_buf(),
            path,
            file,
            first,
            slots,
            end,
            dead,
            buf: Vec::new(),
            rewrite_at: REWRITE_AT,
        })
    }

    /// `(first, last)` index held, or `None` when empty.
    pub fn range(&self) -> Option<(u64, u64)> {
        (!self.slots.is_empty()).then(|| (self.first, self.first + self.slots.len() as u64 - 1))
    }

    /// Appends entries (each `(index, data)`); the first must follow the last held one (any
    /// index when empty). Written with one `pwrite`; durable after [`EntryLog::sync`].
    pub fn append<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (u64, &'a [u8])>,
    ) -> Result<(), StoreError> {
        self.buf.clear();
        let mut new = Vec::new();
        let mut next = self.range().map(|(_, l)| l + 1);
        for (idx, data) in entries {
            if let Some(n) = next {
                if idx != n {
                    return Err(StoreError::Invalid(format!(
                        "entry {idx} does not follow {}",
                        n - 1
                    )));
                }
            }
            next = Some(idx + 1);
            let start = record::begin(&mut self.buf, KIND_ENTRY);
            self.buf.extend_from_slice(&idx.to_be_bytes());
            self.buf.extend_from_slice(data);
            record::finish(&mut self.buf, start);
            new.push((idx, start, self.buf.len() - start));
        }
        if new.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all_at(&self.buf, self.end) {
            // Leave no partial record behind: later appends must start on a boundary.
            let _ = self.file.set_len(self.end);
            return Err(StoreError::io("writing", &self.path, e));
        }
        if self.slots.is_empty() {
            self.first = new[0].0;
            self.dead = self.end;
        }
        for (_, start, len) in new {
            self.slots.push_back(Slot {
                off: self.end + start as u64,
                len: len as u32,
            });
        }
        self.end += self.buf.len() as u64;
        Ok(())
    }

    /// `fdatasync`: everything appended survives an OS crash from now on.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("syncing", &self.path, e))
    }

    /// The data of entries `[from, to)` that are held, in order.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let Some((first, last)) = self.range() else {
            return Ok(Vec::new());
        };
        let from = from.max(first);
        let to = to.min(last + 1);
        if from >= to {
            return Ok(Vec::new());
        }
        let a = self.slots[(from - first) as usize];
        let b = self.slots[(to - 1 - first) as usize];
        let mut buf = vec![0u8; (b.off + b.len as u64 - a.off) as usize];
        self.file
            .read_exact_at(&mut buf, a.off)
            .map_err(|e| StoreError::io("reading", &self.path, e))?;
        let buf = Bytes::from(buf);
        let head = record::HEADER_LEN + 1 + 8;
        Ok((from..to)
            .map(|i| {
                let s = self.slots[(i - first) as usize];
                let o = (s.off - a.off) as usize;
                (i, buf.slice(o + head..o + s.len as usize))
            })
            .collect())
    }

    /// Removes every entry with index ≥ `from` (a follower's conflicting suffix); synced before
    /// returning.
    pub fn truncate(&mut self, from: u64) -> Result<(), StoreError> {
        let Some((first, last)) = self.range() else {
            return Ok(());
        };
        if from > last {
            return Ok(());
        }
        let keep = from.saturating_sub(first) as usize;
        let new_end = if keep == 0 {
            self.dead
        } else {
            let s = self.slots[keep - 1];
            s.off + s.len as u64
        };
        self.file
            .set_len(new_end)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| StoreError::io("truncating", &self.path, e))?;
        self.slots.truncate(keep);
        self.end = new_end;
        Ok(())
    }

    /// Forgets every entry with index ≤ `upto` (covered by a snapshot). The space is reclaimed
    /// by rewriting the file once the dead prefix is large (64 MiB and more than half the file).
    pub fn purge(&mut self, upto: u64) -> Result<(), StoreError> {
        let Some((first, last)) = self.range() else {
            return Ok(());
        };
        if upto < first {
            return Ok(());
        }
        if upto >= last {
            // Everything goes: start an empty file (the next append sets the first index).
            self.rewrite(None)?;
            return Ok(());
        }
        let n = (upto + 1 - first) as usize;
        self.slots.drain(..n);
        self.first = upto + 1;
        self.dead = self.slots[0].off;
        if self.dead >= self.rewrite_at && self.dead * 2 > self.end {
            let skip = self.dead;
            self.rewrite(Some(skip))?;
        }
        Ok(())
    }

    /// Rewrites the file without its first `skip` bytes, or empty with `None` (through a synced
    /// temporary file).
    fn rewrite(&mut self, skip: Option<u64>) -> Result<(), StoreError> {
        let tmp = self.dir.join("entries.log.tmp");
        // File to file (the kernel's copy_file_range where it can), no buffer of the tail's
        // size in this process.
        (|| -> std::io::Result<()> {
            let mut out = File::create(&tmp)?;
            if let Some(skip) = skip {
                use std::io::{Read, Seek, SeekFrom};
                let mut src = File::open(&self.path)?;
                src.seek(SeekFrom::Start(skip))?;
                std::io::copy(&mut src.take(self.end - skip), &mut out)?;
            }
            out.sync_all()
        })()
        .map_err(|e| StoreError::io("writing", &tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| StoreError::io("renaming", &tmp, e))?;
        crate::sync_dir(&self.dir)?;
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StoreError::io("opening", &self.path, e))?;
        match skip {
            None => {
                self.slots.clear();
                self.end = 0;
            }
            Some(skip) => {
                for s in self.slots.iter_mut() {
                    s.off -= skip;
                }
                self.end -= skip;
            }
        }
        self.dead = 0;
        Ok(())
    }

    /// Reads the state file (`None` if there is none or it is damaged, which is logged).
    pub fn read_state(&self) -> Result<Option<Bytes>, StoreError> {
        read_small(&self.dir.join("state"))
    }

    /// Replaces the state file atomically (tmp + fsync + rename + directory fsync).
    pub fn write_state(&self, data: &[u8]) -> Result<(), StoreError> {
        write_small(&self.dir, "state", data)
    }
}

/// Writes `dir/name` atomically as one framed record: a temporary file, fsynced, renamed over
/// it, the directory fsynced. Used for consensus state and snapshots.
pub fn write_small(dir: &Path, name: &str, data: &[u8]) -> Result<(), StoreError> {
    let mut buf = Vec::with_capacity(data.len() + record::HEADER_LEN + 1);
    let start = record::begin(&mut buf, KIND_STATE);
    buf.extend_from_slice(data);
    record::finish(&mut buf, start);
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    fs::write(&tmp, &buf)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .map_err(|e| StoreError::io("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("renaming", &tmp, e))?;
    crate::sync_dir(dir)
}

/// Reads a file written by [`write_small`]: `None` when missing; a damaged one is logged and
/// read as missing.
pub fn read_small(path: &Path) -> Result<Option<Bytes>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io("opening", path, e)),
    };
    let len = file
        .metadata()
        .map_err(|e| StoreError::io("reading metadata of", path, e))?
        .len();
    let mut sc = Scanner::new(&file, 0, len, u32::MAX >> 1, 1 << 20);
    match sc
        .next_item()
        .map_err(|e| StoreError::io("reading", path, e))?
    {
        Some(Item::Record {
            off: 0,
            kind: KIND_STATE,
            payload,
        }) => Ok(Some(payload)),
        _ => {
            tracing::error!("{}: damaged, ignored", path.display());
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(log: &EntryLog) -> Vec<(u64, Vec<u8>)> {
        let Some((a, b)) = log.range() else {
            return Vec::new();
        };
        log.read(a, b + 1)
            .unwrap()
            .into_iter()
            .map(|(i, d)| (i, d.to_vec()))
            .collect()
    }

    #[test]
    fn append_read_truncate_purge_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(log.range(), None);
        log.append([(1, &b"a"[..]), (2, b"bb"), (3, b"ccc")])
            .unwrap();
        log.sync().unwrap();
        assert_eq!(log.range(), Some((1, 3)));
        assert!(log.append([(5, &b"x"[..])]).is_err(), "a gap is refused");
        log.truncate(3).unwrap();
        log.append([(3, &b"C"[..]), (4, b"d")]).unwrap();
        assert_eq!(
            entries(&log),
            vec![
                (1, b"a".to_vec()),
                (2, b"bb".to_vec()),
                (3, b"C".to_vec()),
                (4, b"d".to_vec())
            ]
        );
        log.purge(2).unwrap();
        assert_eq!(log.range(), Some((3, 4)));
        drop(log);
        // Reopen: the purged prefix is still in the file (not rewritten yet), so the first
        // index comes back lower; callers purge again from their own state.
        let mut log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(log.range(), Some((1, 4)));
        assert_eq!(log.read(3, 5).unwrap()[0].1.as_ref(), b"C");
        log.purge(4).unwrap();
        assert_eq!(log.range(), None);
        log.append([(5, &b"e"[..])]).unwrap();
        drop(log);
        let log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(entries(&log), vec![(5, b"e".to_vec())]);
    }

    #[test]
    fn a_large_purged_prefix_is_rewritten_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EntryLog::open(dir.path()).unwrap();
        log.rewrite_at = 100;
        let body = [7u8; 40];
        for i in 1..=10u64 {
            log.append([(i, &body[..])]).unwrap();
        }
        let before = fs::metadata(dir.path().join("entries.log")).unwrap().len();
        log.purge(7).unwrap();
        let after = fs::metadata(dir.path().join("entries.log")).unwrap().len();
        assert!(after * 3 < before, "{before} -> {after}");
        assert_eq!(log.range(), Some((8, 10)));
        log.append([(11, &b"x"[..])]).unwrap();
        assert_eq!(log.read(8, 12).unwrap().len(), 4);
        drop(log);
        let log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(log.range(), Some((8, 11)));
        assert_eq!(log.read(11, 12).unwrap()[0].1.as_ref(), b"x");
    }

    #[test]
    fn a_torn_tail_and_a_damaged_record_cut_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EntryLog::open(dir.path()).unwrap();
        log.append([(1, &b"one"[..]), (2, b"two"), (3, b"three")])
            .unwrap();
        let slots: Vec<Slot> = log.slots.iter().copied().collect();
        drop(log);
        let path = dir.path().join("entries.log");
        // Torn tail: half of the last record.
        let full = fs::read(&path).unwrap();
        let cut = slots[2].off as usize + 5;
        fs::write(&path, &full[..cut]).unwrap();
        let log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(log.range(), Some((1, 2)));
        assert_eq!(fs::metadata(&path).unwrap().len(), slots[2].off);
        drop(log);
        // A flipped byte in the middle record: everything from it on is dropped.
        let mut data = fs::read(&path).unwrap();
        data[slots[1].off as usize + 20] ^= 0xff;
        fs::write(&path, &data).unwrap();
        let log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(entries(&log), vec![(1, b"one".to_vec())]);
    }

    #[test]
    fn state_files_are_replaced_atomically_and_damage_reads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let log = EntryLog::open(dir.path()).unwrap();
        assert_eq!(log.read_state().unwrap(), None);
        log.write_state(b"vote=1").unwrap();
        log.write_state(b"vote=2").unwrap();
        assert_eq!(log.read_state().unwrap().unwrap().as_ref(), b"vote=2");
        let p = dir.path().join("state");
        let mut d = fs::read(&p).unwrap();
        let n = d.len();
        d[n - 1] ^= 1;
        fs::write(&p, d).unwrap();
        assert_eq!(log.read_state().unwrap(), None);
    }
}
