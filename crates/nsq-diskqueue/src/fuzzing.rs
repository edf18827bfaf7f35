//! Fuzz target body for the go-diskqueue reader, shared by the cargo-fuzz target in `fuzz/`
//! (nightly) and the corpus replay test `tests/fuzz_corpus.rs` (stable). See
//! `docs/FUZZING.md`. Not part of the crate's API.
//!
//! The input describes a queue directory: a metadata file (arbitrary text) and up to four
//! data files (arbitrary bytes). The body writes them into a scratch directory, runs the
//! read-only [`scan`], then opens the queue and consumes it with [`DiskQueue::read_next`],
//! and checks that:
//! - nothing panics, loops without end or returns a record outside the size bounds;
//! - `scan` leaves every file as it was;
//! - the destructive reader returns exactly the records `scan` found (they implement the
//!   same recovery rules, one without touching the files);
//! - afterwards the queue is usable: depth 0, a `put` reads back, and a reopened queue is
//!   empty.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{scan, DiskQueue, DiskQueueOptions};

/// A scratch directory for this process (on tmpfs when there is one, so fsyncs are cheap),
/// emptied on every call.
fn scratch_dir(tag: &str) -> PathBuf {
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("nsq-fuzz-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("list scratch dir")
        .map(|e| {
            let e = e.expect("dir entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read file"),
            )
        })
        .collect()
}

/// A fuzz input split into `(config, metadata text, data files)`.
type QueueFiles<'a> = (u8, &'a [u8], Vec<&'a [u8]>);

/// Splits `data` into its [`QueueFiles`].
fn parse(data: &[u8]) -> Option<QueueFiles<'_>> {
    let (&cfg, rest) = data.split_first()?;
    let (&meta_len, rest) = rest.split_first()?;
    let meta_len = usize::from(meta_len).min(rest.len());
    let (meta, mut rest) = rest.split_at(meta_len);
    let nfiles = 1 + usize::from(cfg >> 6);
    let mut files = Vec::new();
    for i in 0..nfiles {
        if i + 1 == nfiles {
            files.push(rest);
            break;
        }
        let len = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_be_bytes([*a, *b])).min(rest.len())
            }
            _ => 0,
        };
        let (f, tail) = rest.split_at(len);
        files.push(f);
        rest = tail;
    }
    Some((cfg, meta, files))
}

/// go-diskqueue files: `scan` and the destructive reader agree and never misbehave.
pub fn fuzz_diskqueue(data: &[u8]) {
    let Some((cfg, meta, files)) = parse(data) else {
        return;
    };
    let (min, max) = match cfg & 3 {
        0 => (1, 50),
        1 => (26, 1024 * 1024 + 26),
        2 => (0, 8),
        _ => (4, 4),
    };
    let first_file = i64::from((cfg >> 2) & 3);
    let dir = scratch_dir("diskqueue");
    let name = "fz";
    fs::write(dir.join(format!("{name}.diskqueue.meta.dat")), meta).expect("write meta");
    for (i, f) in files.iter().enumerate() {
        let n = first_file + i as i64;
        fs::write(dir.join(format!("{name}.diskqueue.{n:06}.dat")), f).expect("write data");
    }

    let before = snapshot(&dir);
    let scanned = scan(&dir, name, min, max).expect("scan of a readable directory");
    assert_eq!(before, snapshot(&dir), "scan must not change any file");
    for r in &scanned.records {
        assert!(
            (min as usize..=max as usize).contains(&r.len()),
            "scan returned a {}-byte record outside [{min}, {max}]",
            r.len()
        );
    }

    let opts = DiskQueueOptions {
        max_bytes_per_file: 256,
        min_msg_size: min,
        max_msg_size: max,
        sync_every: 1,
        ..DiskQueueOptions::default()
    };
    let mut q = DiskQueue::open(&dir, name, opts.clone()).expect("open");
    let mut read = Vec::new();
    while let Some(r) = q.read_next().expect("read_next on tmpfs") {
        assert!((min as usize..=max as usize).contains(&r.len()));
        read.push(r);
        assert!(read.len() <= data.len(), "more records than input bytes");
    }
    if scanned.had_metadata {
        assert_eq!(
            scanned.records, read,
            "scan and read_next disagree (problems: {:?})",
            scanned.problems
        );
    }
    assert_eq!(q.depth(), 0, "depth after reading everything");
    let payload = vec![b'x'; min.max(1).min(max) as usize];
    q.put(&payload).expect("put after recovery");
    assert_eq!(
        q.read_next().expect("read back").as_deref(),
        Some(&payload[..])
    );
    q.put(&payload).expect("second put");
    q.close().expect("close");
    let mut q = DiskQueue::open(&dir, name, opts).expect("reopen");
    assert_eq!(
        q.read_next().expect("read after reopen").as_deref(),
        Some(&payload[..])
    );
    assert_eq!(q.read_next().expect("drained"), None);
    q.close().expect("close");
    let _ = fs::remove_dir_all(&dir);
}
