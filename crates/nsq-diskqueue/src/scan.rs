//! A read-only pass over a queue's unread records, leaving every file untouched.
//!
//! nsqd loads a queue's backlog at start-up with [`scan`] instead of consuming it with
//! [`crate::DiskQueue::read_next`], and rewrites the queue only at the next clean shutdown. If
//! the process dies in between, the same records are found again on the next start: they may be
//! delivered twice, but never lost (Go nsqd's destructive reads lose whatever it had read into
//! memory).
//!
//! Like go-diskqueue's start-up repair, each file is read to its real end, so records written
//! after the last metadata sync are salvaged. A corrupt record ends the scan of its file (there
//! is no way to find where the next record starts); the rest of the files are still scanned.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::{DiskQueueError, Metadata};

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The unread records' payloads, in queue order.
    pub records: Vec<Bytes>,
    /// Problems met on the way (corrupt or missing files), for the log.
    pub problems: Vec<String>,
    /// Whether a metadata file existed.
    pub had_metadata: bool,
}

fn data_path(dir: &Path, name: &str, n: i64) -> PathBuf {
    dir.join(format!("{name}.diskqueue.{n:06}.dat"))
}

/// The numbers of queue `name`'s data files in `dir` within `[from, to]`, ascending.
fn data_file_numbers(
    dir: &Path,
    name: &str,
    from: i64,
    to: i64,
) -> Result<Vec<i64>, DiskQueueError> {
    let prefix = format!("{name}.diskqueue.");
    let read_err = |source| DiskQueueError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_err)? {
        let fname = entry.map_err(read_err)?.file_name();
        let Some(digits) = fname
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|r| r.strip_suffix(".dat"))
        else {
            continue;
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        match digits.parse::<i64>() {
            Ok(n) if (from..=to).contains(&n) => out.push(n),
            _ => {}
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Reads the unread records of queue `name` in `dir` without changing anything on disk.
/// Records shorter than `min_msg_size` or longer than `max_msg_size` mark the rest of their
/// file corrupt.
pub fn scan(
    dir: &Path,
    name: &str,
    min_msg_size: i32,
    max_msg_size: i32,
) -> Result<Scan, DiskQueueError> {
    scan_first(dir, name, min_msg_size, max_msg_size, usize::MAX)
}

/// Like [`scan`], but stops after the first `limit` unread records (data files past them are
/// not read at all): nsqd's hand-back marker says how many records at the head of a queue are
/// not also in its topic log.
pub fn scan_first(
    dir: &Path,
    name: &str,
    min_msg_size: i32,
    max_msg_size: i32,
    limit: usize,
) -> Result<Scan, DiskQueueError> {
    let meta_path = dir.join(format!("{name}.diskqueue.meta.dat"));
    let text = match fs::read(&meta_path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Scan::default()),
        Err(source) => {
            return Err(DiskQueueError::Read {
                path: meta_path,
                source,
            })
        }
    };
    let mut out = Scan {
        had_metadata: true,
        ..Scan::default()
    };
    // Bytes, not `read_to_string`: metadata that is not UTF-8 is garbled metadata (as for
    // `DiskQueue::open`), not an I/O error.
    let parsed = std::str::from_utf8(&text)
        .map_err(|e| format!("not UTF-8: {e}"))
        .and_then(Metadata::parse);
    let meta = match parsed {
        Ok(m) => m,
        Err(e) => {
            out.problems.push(format!(
                "{}: unreadable metadata ({e}); its data files are left in place",
                meta_path.display()
            ));
            return Ok(out);
        }
    };
    // Walk the files that exist rather than every number in the range: garbled metadata can
    // name file 10^12, and stepping through a trillion missing files never finishes.
    let present = data_file_numbers(dir, name, meta.read_file_num, meta.write_file_num)?;
    let mut expect = meta.read_file_num;
    for n in present
        .iter()
        .copied()
        .chain(std::iter::once(meta.write_file_num + 1))
    {
        if out.records.len() >= limit {
            break;
        }
        let last_missing = if n > meta.write_file_num {
            // The write file may legitimately not exist yet (right after a roll).
            if meta.write_pos > 0 {
                meta.write_file_num
            } else {
                meta.write_file_num - 1
            }
        } else {
            n - 1
        };
        if expect < last_missing {
            out.problems.push(format!(
                "{} to {}: {} missing data files",
                data_path(dir, name, expect).display(),
                data_path(dir, name, last_missing).display(),
                last_missing - expect + 1
            ));
        } else if expect == last_missing {
            out.problems.push(format!(
                "{}: missing data file",
                data_path(dir, name, expect).display()
            ));
        }
        if n > meta.write_file_num {
            break;
        }
        expect = n + 1;
        let path = data_path(dir, name, n);
        let data = match fs::File::open(&path) {
            Ok(mut f) => {
                let mut v = Vec::new();
                f.read_to_end(&mut v)
                    .map_err(|source| DiskQueueError::Read {
                        path: path.clone(),
                        source,
                    })?;
                v
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                // Removed since the listing.
                out.problems
                    .push(format!("{}: missing data file", path.display()));
                continue;
            }
            Err(source) => return Err(DiskQueueError::Read { path, source }),
        };
        let data = Bytes::from(data);
        let mut pos = if n == meta.read_file_num {
            meta.read_pos as usize
        } else {
            0
        };
        while pos < data.len() && out.records.len() < limit {
            if data.len() - pos < 4 {
                out.problems.push(format!(
                    "{}: torn record header at offset {pos}",
                    path.display()
                ));
                break;
            }
            let len = i32::from_be_bytes(data[pos..pos + 4].try_into().expect("4 bytes"));
            if len < min_msg_size || len > max_msg_size {
                out.problems.push(format!(
                    "{}: invalid record length {len} at offset {pos}; rest of file skipped",
                    path.display()
                ));
                break;
            }
            let end = pos + 4 + len as usize;
            if end > data.len() {
                out.problems.push(format!(
                    "{}: torn record at offset {pos} ({} of {len} bytes)",
                    path.display(),
                    data.len() - pos - 4
                ));
                break;
            }
            out.records.push(data.slice(pos + 4..end));
            pos = end;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DiskQueue, DiskQueueOptions};

    fn opts() -> DiskQueueOptions {
        DiskQueueOptions {
            max_bytes_per_file: 100,
            min_msg_size: 1,
            max_msg_size: 50,
            ..DiskQueueOptions::default()
        }
    }

    #[test]
    fn scan_is_read_only_and_sees_unsynced_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), "t", opts()).unwrap();
        for i in 0..20 {
            q.put(format!("rec-{i:02}").as_bytes()).unwrap();
        }
        q.read_next().unwrap();
        q.sync().unwrap();
        q.put(b"unsynced").unwrap();
        drop(q); // a crash: no sync
        let s = scan(dir.path(), "t", 1, 50).unwrap();
        let got: Vec<String> = s
            .records
            .iter()
            .map(|r| String::from_utf8(r.to_vec()).unwrap())
            .collect();
        let mut want: Vec<String> = (1..20).map(|i| format!("rec-{i:02}")).collect();
        want.push("unsynced".into());
        assert_eq!(got, want);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        // Nothing changed: a second scan sees the same.
        assert_eq!(scan(dir.path(), "t", 1, 50).unwrap().records.len(), 20);
    }

    #[test]
    fn corrupt_file_is_reported_and_others_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(dir.path(), "t", opts()).unwrap();
        for i in 0..20 {
            q.put(format!("rec-{i:02}").as_bytes()).unwrap();
        }
        q.close().unwrap();
        let first = data_path(dir.path(), "t", 0);
        let mut bytes = fs::read(&first).unwrap();
        bytes[0..4].copy_from_slice(&9999i32.to_be_bytes());
        fs::write(&first, bytes).unwrap();
        let s = scan(dir.path(), "t", 1, 50).unwrap();
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(!s.records.is_empty() && s.records.len() < 20);
        assert_eq!(s.records.last().unwrap().as_ref(), b"rec-19");
    }

    /// Found by the `diskqueue` fuzz target: non-UTF-8 metadata made `scan` fail with an I/O
    /// error (nsqd then logged "failed to read queue") while `DiskQueue::open` treats the same
    /// file as garbled metadata. Both now report it as a problem and leave the files alone.
    #[test]
    fn non_utf8_metadata_is_a_problem_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("t.diskqueue.meta.dat");
        fs::write(&meta, b"49\n0,0\n0,\xff\xff1").unwrap();
        fs::write(data_path(dir.path(), "t", 0), b"\0\0\0\x06rec-00").unwrap();
        let s = scan(dir.path(), "t", 1, 50).expect("garbled metadata is not an I/O error");
        assert!(s.had_metadata && s.records.is_empty());
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
        assert!(s.problems[0].contains("not UTF-8"), "{:?}", s.problems);
        assert_eq!(
            fs::read(&meta).unwrap(),
            b"49\n0,0\n0,\xff\xff1",
            "left in place"
        );
    }

    #[test]
    fn no_metadata_means_no_queue() {
        let dir = tempfile::tempdir().unwrap();
        let s = scan(dir.path(), "none", 1, 50).unwrap();
        assert!(!s.had_metadata && s.records.is_empty());
    }
}
