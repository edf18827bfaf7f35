//! A synchronous re-implementation of [go-diskqueue] v1.1.0, the segmented file queue behind
//! Go nsqd's `--data-path`: messages beyond `--mem-queue-size`, and everything left over at
//! shutdown. The files are byte-compatible in both directions, so nsq-rs can take over a Go
//! nsqd's data directory and hand it back.
//!
//! [go-diskqueue]: https://github.com/nsqio/go-diskqueue
//!
//! # Files
//!
//! One queue per topic (`<topic>`) and per non-ephemeral channel (`<topic>:<channel>`, built by
//! the caller), all in the same directory:
//!
//! ```text
//! <dir>/<name>.diskqueue.000000.dat     data files, numbered %06d (more digits past 999999)
//! <dir>/<name>.diskqueue.000001.dat
//! <dir>/<name>.diskqueue.meta.dat       metadata, ASCII text:
//!
//!     <depth>\n                              e.g.  121\n
//!     <readFileNum>,<readPos>\n                    0,0\n
//!     <writeFileNum>,<writePos>\n                  2,1655\n
//!
//! data file = records back to back, no file header:
//!
//!     +--------+--------+--------+--------+------------------------+
//!     |  length (int32, big-endian)       |  payload (length bytes) | ...
//!     +--------+--------+--------+--------+------------------------+
//!
//! nsqd's payload = 8-byte timestamp (ns) | 2-byte attempts | 16-byte ASCII id | body
//! ```
//!
//! # Behaviour copied from Go, and why
//!
//! * **Size bounds.** `put` rejects payloads outside `[min_msg_size, max_msg_size]`; on read a
//!   length outside those bounds means the file is corrupt, because there is no way to find where
//!   the next record starts.
//! * **Roll before a write** when `writePos > 0 && writePos + 4 + len > max_bytes_per_file`, so a
//!   file never exceeds the limit unless a single record does; the queue syncs on every roll so
//!   the metadata never points into a file that has been left behind.
//! * **Destructive reads.** [`DiskQueue::read_next`] advances the read position and depth before
//!   returning the record (Go advances when the record is taken from `ReadChan`). A message the
//!   caller holds in memory is therefore lost on a crash, exactly as with Go nsqd.
//! * **Fully read files are deleted** as the reader moves on, and that move triggers a sync
//!   ("sync every time we start reading from a new file"), so a crash cannot point the reader
//!   back into a deleted file.
//! * **A completed file is read to its real size**, not to `max_bytes_per_file`, since the
//!   limit may have changed since the file was written (Go's `maxBytesPerFileRead`).
//! * **Sync policy.** After `sync_every` operations (reads + writes), whenever a state change asks
//!   for it (roll, new read file, bad file, depth reset), and — driven by the owner through
//!   [`DiskQueue::needs_sync`]/[`DiskQueue::maybe_sync`] — every `sync_timeout` while there was
//!   activity. A sync fsyncs the write file, then writes the metadata to
//!   `<meta>.<random>.tmp`, fsyncs it and renames it over the metadata file, so the metadata is
//!   always either the old or the new version. Failed automatic syncs are logged and retried.
//! * **Corruption** (bad length, short read, missing file) is logged, the file is renamed to
//!   `*.bad` for the operator, and reading continues at the next file; if it was the file being
//!   written, writing also moves to a new file. Nothing panics and nothing is returned to the
//!   caller: the queue keeps flowing.
//! * **Eventually consistent depth.** The depth in the metadata can be stale after a crash. When
//!   the reader catches up with the writer a non-zero depth is logged and reset to 0.
//! * **Startup repair.** If the metadata's `writePos` is smaller than the write file's real size
//!   (the process died after writing and before syncing), writing moves to a new file and the
//!   reader salvages the old one up to its real end. Records between the stale `readPos` and the
//!   real read position may be delivered again — better twice than never. (Go nsqd's `sigkill`
//!   fixture is this case: the metadata says depth 49 / writePos 1813, the file holds 50 records
//!   = 1850 bytes, and all 50 are delivered; `depth()` starts at 49 and is reset from -1 to 0 at
//!   the end, as in Go.)
//! * **Stray `<meta>.<n>.tmp` files** left by a crash mid-sync are ignored.
//! * **`empty`** deletes the data files from the read file to the write file, moves to a fresh
//!   file number and deletes the metadata file; **`delete`** does the same and closes the queue.
//!
//! # Deliberate differences from Go
//!
//! * No goroutine/thread and no channel: the owner calls [`DiskQueue::put`] and
//!   [`DiskQueue::read_next`] and drives the sync timer. There is no read-ahead, so nothing is
//!   read from disk before the caller asks for it.
//! * The directory is fsynced after the metadata rename, so the rename itself survives a power
//!   loss.
//! * **Missing metadata with data files present** (Go would start at file 0 and write over them):
//!   a warning names the files, they are left alone, and the empty queue starts at the file
//!   number after the highest one present.
//! * **Garbled metadata** (unparsable, negative positions, reader ahead of writer) — Go logs the
//!   parse error and carries on with whatever fields it managed to scan. We log it, rename the
//!   metadata file to `<meta>.bad`, leave every data file in place (the operator can inspect or
//!   replay them; renaming them would only hide them), and start empty at a fresh file number
//!   after the highest data file present, so nothing is overwritten.
//! * If the metadata's `writePos` is *larger* than the write file (file truncated or missing),
//!   writing also moves to a new file instead of seeking past the end and leaving a hole of zero
//!   bytes that would read back as corruption.
//! * If a write fails part-way (e.g. disk full), the file is truncated back to the last complete
//!   record, so a reader never meets a torn record.
//! * A reader that has consumed the write file and then sees the writer roll moves on cleanly to
//!   the next file instead of hitting end-of-file.
//! * I/O errors that say nothing about the data (`EMFILE`, `EIO`, permission denied) are returned
//!   from `read_next` with the position unchanged instead of marking the file bad; a *missing*
//!   file is still treated as corrupt, like Go.
//! * After skipping a bad file that was the last one, the depth is corrected immediately rather
//!   than at the next successful read.
//! * Dropping a [`DiskQueue`] does not sync (call [`DiskQueue::close`]); this is what a crash
//!   looks like, and tests rely on it.
//! * Metadata naming a file number above 2^48 or a position above 2^48 is garbled (no real
//!   queue gets there; the bound keeps `file number + 1` from overflowing).
//! * A run of missing data files is skipped in one step, to the next file present (Go steps
//!   one number per read, so metadata naming file 10^12 would never finish); [`scan`] walks
//!   the files present for the same reason.
//! * A read position past the end of its file is corruption (skip to the next file), not an
//!   I/O error retried for ever (seeking past a filesystem's maximum file size fails).
//! * A stale depth is reset to 0 at open when there is nothing to read, rather than after the
//!   next read.
//! * A data file opened for writing is first cut to the write position: bytes past it are
//!   stale (a file the metadata does not know about), and writing over them, as Go does,
//!   leaves old records to resurface behind the new ones.
//!
//! The last five came out of fuzzing (the `diskqueue` target, whose body is the hidden
//! `fuzzing` module; see `docs/FUZZING.md`).

mod error;
#[doc(hidden)]
pub mod fuzzing;
mod meta;
mod queue;
mod scan;

pub use error::DiskQueueError;
pub use meta::Metadata;
pub use queue::{DiskQueue, DiskQueueOptions, RECORD_HEADER_LEN};
pub use scan::{scan, scan_first, Scan};

#[cfg(test)]
mod tests;
