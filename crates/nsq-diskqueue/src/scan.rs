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

/// Reads the unread records of queue `name` in `dir` without changing anything on disk.
/// Records shorter than `min_msg_size` or longer than `max_msg_size` mark the rest of their
/// file corrupt.
pub fn scan(
    dir: &Path,
    name: &str,
    min_msg_size: i32,
    max_msg_size: i32,
) -> Result<Scan, DiskQueueError> {
    let meta_path = dir.join(format!("{name}.diskqueue.meta.dat"));
    let text = match fs::read_to_string(&meta_path) {
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
    let meta = match Metadata::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            out.problems.push(format!(
                "{}: unreadable metadata ({e}); its data files are left in place",
                meta_path.display()
            ));
            return Ok(out);
        }
    };
    for n in meta.read_file_num..=meta.write_file_num {
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
                if n < meta.write_file_num || meta.write_pos > 0 {
                    out.problems
                        .push(format!("{}: missing data file", path.display()));
                }
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
        while pos < data.len() {
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

    #[test]
    fn no_metadata_means_no_queue() {
        let dir = tempfile::tempdir().unwrap();
        let s = scan(dir.path(), "none", 1, 50).unwrap();
        assert!(!s.had_metadata && s.records.is_empty());
    }
}
