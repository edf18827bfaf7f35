//! Durable storage core for nsqd: one append-only **topic log** per non-ephemeral topic, and one
//! **channel journal** per non-ephemeral channel recording which log records the channel is done
//! with. A message leaves durable storage only when every channel has FINed it (or the channel was
//! emptied or deleted): messages in flight or deferred at a crash are still in the log, and the
//! journal says which of them are still owed, so they are redelivered after a restart
//! (at-least-once). Synchronous, no async runtime; see [`commit`] for how an async daemon drives
//! it without blocking its workers.
//!
//! # Files
//!
//! ```text
//! <dir>/<topic>.nsqrs.<first_pos:020>.log        topic log segments (Kafka-style names: the
//! <dir>/<topic>.nsqrs.00000000000000104857.log     global byte position of the first record)
//! <dir>/<topic>:<channel>.nsqrs.journal          one journal per channel
//! <dir>/<topic>:<channel>.nsqrs.journal.tmp      compaction in progress (ignored, overwritten)
//! ```
//!
//! A **position** is one `u64`: the byte offset of a record in the topic's whole history, so
//! segment `base` holds positions `[base, next_base)` and the record at `pos` is at file offset
//! `pos - base`. Positions only grow; a new segment starts where the previous one ended.
//!
//! Every record in both kinds of file has the same frame (big-endian):
//!
//! ```text
//!  0        4        8        12   13
//! +--------+--------+--------+----+---------------------------+
//! | magic  |  len   |  crc   |kind| payload (len - 1 bytes)   |
//! | "NSQ1" |  u32   |  u32   | u8 |                           |
//! +--------+--------+--------+----+---------------------------+
//!   len = bytes after crc;  crc = CRC-32 (IEEE) of kind..end
//!
//! topic log, kind 1 = message (record = 47 bytes + body):
//! +-----------+----------+----------+-----------------+--------+
//! | timestamp | attempts | id       | defer_until     | body   |
//! | i64 ns    | u16      | 16 bytes | i64 unix ns / 0 |        |
//! +-----------+----------+----------+-----------------+--------+
//!
//! channel journal (payload after the kind byte):
//!   16 Start(pos u64)            the channel's messages are the records from pos on
//!   17 Ack(pos u64)              FIN
//!   18 AckRange(from u64, to u64) every record starting in [from, to) is acked
//!   19 Defer(pos u64, due i64, attempts u16)   REQ with delay
//!   20 Attempts(pos u64, n u16)  attempt count of a non-deferred message
//!   21 Cursor(pos u64)           every record below pos is acked (checkpoint / channel empty)
//! ```
//!
//! A journal is replayed in order: `Start`/`Cursor` raise the low-water mark and forget
//! everything below it; `Ack`/`AckRange` add to the acked set and cancel defers; `Defer`
//! (re)defers an unacked message. Compaction rewrites the file as `Cursor(lowest unacked)` +
//! `AckRange`s + `Defer`s + `Attempts`, so its size is proportional to the unacked window, not to
//! history.
//!
//! # Corruption
//!
//! A record is valid when its magic, length (`1..=max`, inside the file) and CRC all check out.
//! When the record at some offset is not valid, the scanner looks for the next offset where a
//! `"NSQ1"` magic starts a *valid* record, logs the skipped byte range and carries on from there,
//! so one bad record costs that record only. If no valid record follows, the rest of the file is
//! a **torn tail**: in the segment being written (and in a journal) it is truncated at open, after
//! a warning; in an older segment readers skip to the next segment. Open scans only the last
//! segment (where a crash can tear a write); older segments are checked as they are read, every
//! record, every time. An impossible length is just an invalid record: nothing ever allocates
//! more than what remains of the file. (A body containing a complete, valid frame could in
//! theory be taken for a record while resynchronising after corruption just before it; the
//! CRC makes accidental matches negligible.) A segment whose file name puts it near the end
//! of the `u64` position space is refused at open rather than overflowing.
//!
//! The fuzz targets `store_log`, `store_journal` and `store_recover` (bodies in the hidden
//! `fuzzing` module; see `docs/FUZZING.md`) feed all of this damaged and hand-made files and
//! check recovery against a model of the journal's rules.
//!
//! # Crash safety
//!
//! *What is durable when.* [`TopicLog::append`] only encodes into a buffer.
//! [`TopicLog::flush`] writes it (one `pwrite`): from then on the records survive a **process**
//! crash (they are in the page cache) and readers see them (`written_upto`). [`TopicLog::sync`]
//! adds `fdatasync`: from then on they survive an **OS** crash or power loss (`synced_upto`).
//! Segments are synced when they are completed, and the directory is fsynced when a segment is
//! created, so `synced_upto` always covers a prefix of the log. With `--sync-every=1` a PUB is
//! answered OK only after the sync covering it ([`LogWriterThread`] does this with group commit).
//!
//! *Crash at each point.*
//! - Before flush: the buffered records are lost; nobody was told OK (with sync-every=1) and no
//!   reader saw them.
//! - During a `pwrite`: the file ends with a partial record. At open the last segment is scanned
//!   and the torn tail truncated, so appends continue on a record boundary.
//! - After flush, before fsync, process crash: everything is in the page cache; nothing lost.
//! - After flush, before fsync, OS crash: an unsynced suffix may be lost (or be garbage). Open
//!   truncates whatever is not valid records. Journals may already refer to lost positions
//!   (a consumer may have FINed a record that was written but never synced), and new appends
//!   will reuse those positions. So [`ChannelJournal::open`] takes the log's
//!   [`TopicLog::recovered_end`] and drops (and rewrites away) every reference at or past it; a
//!   start position past it is lowered to it. References below it are to records that did survive
//!   (the log is append-only, so the surviving part is unchanged).
//! - A failed write (e.g. `ENOSPC`): the file is truncated back to the last complete record and
//!   the unwritten records are discarded, and the error is returned — a PUB gets
//!   `E_PUB_FAILED`, never a false OK. If even the truncation fails, or an fsync fails, the log is
//!   **poisoned** (every later call fails) until it is reopened and rescanned: after a failed
//!   fsync Linux may have dropped the dirty pages, so retrying could report success falsely.
//!   Nothing already synced is touched by any of this.
//! - Journal records are buffered and flushed like the log. Losing acks only causes redelivery;
//!   losing a `Defer` makes the message deliverable early. `Start` is fsynced (with the
//!   directory) when a channel is created; compaction writes a temporary file, fsyncs it and
//!   renames it over the journal, so a crash leaves the old or the new journal, never a mix.
//!
//! *Why recovery is correct.* A channel's messages are the log records from its `start` on.
//! Recovery ([`recover_channel`]) yields every valid record in `[start, written_upto)` that the
//! journal does not ack, in log order, deferred ones with their due time. A message can be
//! missing from this set only if an `Ack`/`Cursor` for it was journaled, i.e. it was FINed (or
//! the channel was emptied), or if its record was never written/was lost before being
//! acknowledged to its publisher. In-flight messages have no ack, so they come back.
//!
//! # Retention
//!
//! A channel's **lowest unacked position** is the smallest position it still owes (ready, in
//! flight, deferred or not yet read); a topic without channels keeps everything (NSQ gives the
//! backlog to the first channel). Segment `i` may be deleted when every channel's lowest
//! unacked position is at or beyond the base of segment `i + 1`, i.e. call
//! [`TopicLog::remove_segments_before`] with the minimum over channels. A channel being deleted
//! or emptied simply stops holding segments back. Removal unlinks the names at once but hands
//! back the open files ([`RemovedSegments`]): the space is freed where that is dropped, so the
//! slow part of deleting a large file stays off the log writer thread.
//!
//! # Sizes and costs
//!
//! Open reads one directory listing ([`list_dir`], shared by all topics), scans each topic's last
//! segment and each journal; an idle topic costs no file until its first append. Readers use
//! `pread` on their own descriptors and return bodies as slices of the read buffer (no copy; a
//! body keeps its read chunk of at most `max_bytes` alive).

#![warn(missing_docs)]

pub mod commit;
pub mod entrylog;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal;
pub mod log;
pub mod observe;
pub mod record;
pub mod recover;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::Path;

pub use commit::{Committer, Completion, LogWriterThread, SyncPolicy, TopicId};
pub use entrylog::EntryLog;
pub use error::StoreError;
pub use journal::{journal_path, AckSet, ChannelJournal, ChannelRecovery, DeferredEntry};
pub use log::{
    record_len, Appended, LogMessage, LogOptions, LogReader, MessageRef, ReadBatch,
    RemovedSegments, TopicLog, MESSAGE_OVERHEAD,
};
pub use recover::{recover_channel, ChannelReplay, Disposition, Recovered};

/// The store files found in a directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirListing {
    /// Topic name → segment bases, ascending.
    pub topics: BTreeMap<String, Vec<u64>>,
    /// `(topic, channel)` of every journal.
    pub journals: Vec<(String, String)>,
}

/// Lists the topic logs and channel journals in `dir` (one `readdir` for all topics). A missing
/// directory is an empty listing.
pub fn list_dir(dir: &Path) -> Result<DirListing, StoreError> {
    let mut out = DirListing::default();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io("listing", dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io("listing", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".nsqrs.journal") {
            if let Some((t, c)) = stem.split_once(':') {
                out.journals.push((t.to_string(), c.to_string()));
            }
        } else if let Some(rest) = name.strip_suffix(".log") {
            // <topic>.nsqrs.<20 digits>
            if rest.len() > 27 && rest.is_char_boundary(rest.len() - 27) {
                let (topic, tail) = rest.split_at(rest.len() - 27);
                if let Some(digits) = tail.strip_prefix(".nsqrs.") {
                    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
                        if let Ok(base) = digits.parse::<u64>() {
                            out.topics.entry(topic.to_string()).or_default().push(base);
                        }
                    }
                }
            }
        }
    }
    for bases in out.topics.values_mut() {
        bases.sort_unstable();
    }
    out.journals.sort();
    Ok(out)
}

/// fsyncs a directory so created, renamed or removed names survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

/// Names become file names: refuse what would escape the directory or break the naming scheme.
pub(crate) fn validate_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0', ':']) {
        return Err(StoreError::Invalid(format!(
            "bad topic/channel name {name:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
