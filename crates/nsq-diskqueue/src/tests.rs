use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{DiskQueue, DiskQueueError, DiskQueueOptions, Metadata};

fn opts(max_bytes_per_file: i64) -> DiskQueueOptions {
    DiskQueueOptions {
        max_bytes_per_file,
        min_msg_size: 1,
        max_msg_size: 1000,
        sync_every: 10_000,
        sync_timeout: Duration::from_secs(3600),
    }
}

fn payload(i: usize) -> Vec<u8> {
    // varying sizes, 8..=40 bytes
    let mut p = format!("msg-{i:05}-").into_bytes();
    p.resize(8 + (i * 7) % 33, b'a' + (i % 26) as u8);
    p
}

fn read_all(q: &mut DiskQueue) -> Vec<Bytes> {
    let mut out = Vec::new();
    while let Some(b) = q.read_next().unwrap() {
        out.push(b);
    }
    out
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn data_files(dir: &Path, name: &str) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.starts_with(&format!("{name}.diskqueue.0")) && f.ends_with(".dat"))
        .collect()
}

fn meta_text(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(format!("{name}.diskqueue.meta.dat"))).unwrap()
}

#[test]
fn round_trip_across_many_rolled_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "t:c", opts(256)).unwrap();
    let n = 500;
    for i in 0..n {
        q.put(&payload(i)).unwrap();
    }
    assert_eq!(q.depth(), n as i64);
    let before = data_files(dir.path(), "t:c");
    assert!(before.len() > 20, "expected many files, got {before:?}");
    for f in &before {
        let len = fs::metadata(dir.path().join(f)).unwrap().len();
        assert!(len <= 256, "{f} is {len} bytes");
    }
    let got = read_all(&mut q);
    assert_eq!(got.len(), n);
    for (i, b) in got.iter().enumerate() {
        assert_eq!(&b[..], &payload(i)[..], "record {i}");
    }
    assert_eq!(q.depth(), 0);
    // every fully read file is gone; at most the current write file remains
    assert!(data_files(dir.path(), "t:c").len() <= 1);
    q.close().unwrap();
}

#[test]
fn roll_rule_matches_go() {
    // 4-byte header + 46-byte payload = 50 bytes per record
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "q", opts(120)).unwrap();
    let p = [b'x'; 46];
    q.put(&p).unwrap(); // 0..50
    q.put(&p).unwrap(); // 50..100
    q.put(&p).unwrap(); // 100+50 > 120 -> rolls first
    let m = q.metadata();
    assert_eq!((m.write_file_num, m.write_pos), (1, 50));
    // roll synced the metadata: it names the new file (not yet written) at position 0
    assert_eq!(meta_text(dir.path(), "q"), "2\n0,0\n1,0\n");
    // a single record bigger than the file limit still goes into an empty file
    let mut q2 = DiskQueue::open(dir.path(), "big", opts(10)).unwrap();
    q2.put(&[1u8; 30]).unwrap();
    q2.put(&[2u8; 30]).unwrap();
    assert_eq!(q2.metadata().write_file_num, 1);
    assert_eq!(read_all(&mut q2).len(), 2);
}

#[test]
fn interleaved_reads_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "q", opts(200)).unwrap();
    let mut next_write = 0;
    let mut next_read = 0;
    for round in 0..200 {
        for _ in 0..(round % 5) {
            q.put(&payload(next_write)).unwrap();
            next_write += 1;
        }
        for _ in 0..(round % 4) {
            match q.read_next().unwrap() {
                Some(b) => {
                    assert_eq!(&b[..], &payload(next_read)[..]);
                    next_read += 1;
                }
                None => assert_eq!(next_read, next_write),
            }
        }
        assert_eq!(q.depth(), (next_write - next_read) as i64);
    }
    for b in read_all(&mut q) {
        assert_eq!(&b[..], &payload(next_read)[..]);
        next_read += 1;
    }
    assert_eq!(next_read, next_write);
    assert!(!files(dir.path()).iter().any(|f| f.ends_with(".bad")));
}

#[test]
fn reader_caught_up_then_writer_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "q", opts(100)).unwrap();
    let p = [b'y'; 36]; // 40 bytes per record
    q.put(&p).unwrap();
    q.put(&p).unwrap();
    assert_eq!(read_all(&mut q).len(), 2); // reader at 0,80 == writer
    q.put(&p).unwrap(); // rolls to file 1
    assert_eq!(read_all(&mut q).len(), 1);
    assert!(!files(dir.path()).iter().any(|f| f.ends_with(".bad")));
    assert_eq!(data_files(dir.path(), "q"), vec!["q.diskqueue.000001.dat"]);
    assert_eq!(q.depth(), 0);
}

#[test]
fn reopen_after_close_keeps_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "t", opts(300)).unwrap();
    for i in 0..40 {
        q.put(&payload(i)).unwrap();
    }
    for i in 0..15 {
        assert_eq!(&q.read_next().unwrap().unwrap()[..], &payload(i)[..]);
    }
    let m = q.metadata();
    q.close().unwrap();
    assert!(q.is_closed());
    assert!(matches!(q.put(b"x"), Err(DiskQueueError::Closed(_))));
    assert!(matches!(q.read_next(), Err(DiskQueueError::Closed(_))));
    q.close().unwrap(); // idempotent
    assert_eq!(meta_text(dir.path(), "t"), m.to_text());

    let mut q = DiskQueue::open(dir.path(), "t", opts(300)).unwrap();
    assert_eq!(q.metadata(), m);
    assert_eq!(q.depth(), 25);
    q.put(&payload(40)).unwrap();
    let rest = read_all(&mut q);
    assert_eq!(rest.len(), 26);
    for (k, b) in rest.iter().enumerate() {
        assert_eq!(&b[..], &payload(15 + k)[..]);
    }
    q.close().unwrap();
}

#[test]
fn meta_text_is_go_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "orders:billing", opts(1000)).unwrap();
    for _ in 0..3 {
        q.put(&[7u8; 10]).unwrap();
    }
    q.read_next().unwrap();
    q.sync().unwrap();
    assert_eq!(meta_text(dir.path(), "orders:billing"), "2\n0,14\n0,42\n");
    // no tmp files left behind
    assert!(!files(dir.path()).iter().any(|f| f.ends_with(".tmp")));
}

#[test]
fn crash_without_sync_loses_nothing_that_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut q = DiskQueue::open(dir.path(), "c", opts(10_000)).unwrap();
        for i in 0..5 {
            q.put(&payload(i)).unwrap();
        }
        q.sync().unwrap();
        for i in 5..10 {
            q.put(&payload(i)).unwrap();
        }
        // consumed but not synced: will be re-delivered
        q.read_next().unwrap().unwrap();
        drop(q); // crash: no sync
    }
    let meta = Metadata::parse(&meta_text(dir.path(), "c")).unwrap();
    assert_eq!((meta.depth, meta.read_pos), (5, 0));

    // the OS kept the unsynced writes: startup repair salvages all 10
    let mut q = DiskQueue::open(dir.path(), "c", opts(10_000)).unwrap();
    let m = q.metadata();
    assert_eq!((m.write_file_num, m.write_pos), (1, 0), "writer moved on");
    assert_eq!(q.depth(), 5, "depth from the stale metadata, as in Go");
    let got = read_all(&mut q);
    assert_eq!(got.len(), 10);
    for (i, b) in got.iter().enumerate() {
        assert_eq!(&b[..], &payload(i)[..]);
    }
    assert_eq!(
        q.depth(),
        0,
        "eventually consistent depth reset at the tail"
    );
    q.put(&payload(99)).unwrap();
    assert_eq!(&q.read_next().unwrap().unwrap()[..], &payload(99)[..]);
    q.close().unwrap();
}

#[test]
fn power_loss_keeps_synced_records() {
    // the unsynced tail never reached the disk: the file is cut back to the synced size
    let dir = tempfile::tempdir().unwrap();
    let synced_pos;
    {
        let mut q = DiskQueue::open(dir.path(), "p", opts(10_000)).unwrap();
        for i in 0..5 {
            q.put(&payload(i)).unwrap();
        }
        q.sync().unwrap();
        synced_pos = q.metadata().write_pos;
        for i in 5..10 {
            q.put(&payload(i)).unwrap();
        }
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("p.diskqueue.000000.dat"))
        .unwrap();
    f.set_len(synced_pos as u64 + 3).unwrap(); // plus a torn partial record
    drop(f);
    let mut q = DiskQueue::open(dir.path(), "p", opts(10_000)).unwrap();
    let got = read_all(&mut q);
    assert_eq!(got.len(), 5);
    for (i, b) in got.iter().enumerate() {
        assert_eq!(&b[..], &payload(i)[..]);
    }
    // the torn file was set aside
    assert!(files(dir.path()).contains(&"p.diskqueue.000000.dat.bad".to_string()));
    assert_eq!(q.depth(), 0);
}

fn corrupt_u32(path: &Path, offset: usize, value: u32) {
    let mut data = fs::read(path).unwrap();
    data[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
    fs::write(path, data).unwrap();
}

#[test]
fn corrupt_length_in_the_middle_skips_to_next_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = [b'z'; 46]; // 50 bytes per record, 4 records per 200-byte file
    let mut q = DiskQueue::open(dir.path(), "bad", opts(200)).unwrap();
    for _ in 0..12 {
        q.put(&p).unwrap();
    }
    q.close().unwrap();
    assert_eq!(data_files(dir.path(), "bad").len(), 3);
    // second record of file 1 gets an impossible length
    corrupt_u32(
        &dir.path().join("bad.diskqueue.000001.dat"),
        50,
        0xdead_beef,
    );

    let mut q = DiskQueue::open(dir.path(), "bad", opts(200)).unwrap();
    let got = read_all(&mut q);
    // file 0: 4 records, file 1: 1 record before the corruption, file 2: 4 records
    assert_eq!(got.len(), 9);
    assert!(files(dir.path()).contains(&"bad.diskqueue.000001.dat.bad".to_string()));
    assert_eq!(q.depth(), 0, "depth reset at the tail");
    // the queue keeps working
    q.put(&p).unwrap();
    assert_eq!(read_all(&mut q).len(), 1);
    q.close().unwrap();
}

#[test]
fn corrupt_write_file_moves_writer_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "w", opts(10_000)).unwrap();
    for i in 0..4 {
        q.put(&payload(i)).unwrap();
    }
    q.close().unwrap();
    corrupt_u32(&dir.path().join("w.diskqueue.000000.dat"), 0, 0);
    let mut q = DiskQueue::open(dir.path(), "w", opts(10_000)).unwrap();
    assert_eq!(q.depth(), 4);
    assert!(read_all(&mut q).is_empty());
    assert_eq!(q.depth(), 0, "corrected right away");
    let m = q.metadata();
    assert_eq!((m.read_file_num, m.write_file_num), (1, 1));
    q.put(&payload(7)).unwrap();
    assert_eq!(&q.read_next().unwrap().unwrap()[..], &payload(7)[..]);
    assert!(files(dir.path()).contains(&"w.diskqueue.000000.dat.bad".to_string()));
}

#[test]
fn missing_data_file_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let p = [b'm'; 46];
    let mut q = DiskQueue::open(dir.path(), "gap", opts(100)).unwrap();
    for _ in 0..6 {
        q.put(&p).unwrap(); // 2 records per file: files 0, 1, 2
    }
    q.close().unwrap();
    fs::remove_file(dir.path().join("gap.diskqueue.000001.dat")).unwrap();
    let mut q = DiskQueue::open(dir.path(), "gap", opts(100)).unwrap();
    assert_eq!(read_all(&mut q).len(), 4);
    assert_eq!(q.depth(), 0);
}

#[test]
fn invalid_sizes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(1000);
    o.min_msg_size = 5;
    o.max_msg_size = 10;
    let mut q = DiskQueue::open(dir.path(), "s", o).unwrap();
    let e = q.put(b"1234").unwrap_err();
    assert!(matches!(
        e,
        DiskQueueError::InvalidMessageSize {
            size: 4,
            min: 5,
            max: 10
        }
    ));
    assert_eq!(
        e.to_string(),
        "invalid message write size (4) minMsgSize=5 maxMsgSize=10"
    );
    assert!(q.put(&[0u8; 11]).is_err());
    q.put(b"12345").unwrap();
    q.put(&[0u8; 10]).unwrap();
    assert_eq!(q.depth(), 2);
    assert!(DiskQueue::open(dir.path(), "s", opts(0)).is_err());
}

#[test]
fn error_messages_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = DiskQueue::open(&missing, "x", opts(100)).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("reading {}: ", missing.display())),
        "{msg}"
    );
}

#[test]
fn empty_deletes_files_and_meta_and_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "e", opts(100)).unwrap();
    for i in 0..10 {
        q.put(&payload(i)).unwrap();
    }
    q.sync().unwrap();
    let wfn = q.metadata().write_file_num;
    q.empty().unwrap();
    assert_eq!(q.depth(), 0);
    assert!(data_files(dir.path(), "e").is_empty());
    assert!(!dir.path().join("e.diskqueue.meta.dat").exists());
    let m = q.metadata();
    assert_eq!(
        m,
        Metadata {
            depth: 0,
            read_file_num: wfn + 1,
            read_pos: 0,
            write_file_num: wfn + 1,
            write_pos: 0
        }
    );
    assert!(q.read_next().unwrap().is_none());
    q.put(&payload(42)).unwrap();
    q.close().unwrap();
    let mut q = DiskQueue::open(dir.path(), "e", opts(100)).unwrap();
    assert_eq!(read_all(&mut q), vec![Bytes::from(payload(42))]);
}

#[test]
fn delete_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "d", opts(100)).unwrap();
    for i in 0..10 {
        q.put(&payload(i)).unwrap();
    }
    q.sync().unwrap();
    q.delete().unwrap();
    assert!(q.is_closed());
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
    assert!(q.put(b"x").is_err());
    // close after delete must not resurrect the metadata
    q.close().unwrap();
    assert!(files(dir.path()).is_empty());
}

#[test]
fn garbled_meta_starts_fresh_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "g", opts(100)).unwrap();
    for i in 0..10 {
        q.put(&payload(i)).unwrap();
    }
    q.close().unwrap();
    let before = data_files(dir.path(), "g");
    let max = before.len() as i64 - 1;
    fs::write(dir.path().join("g.diskqueue.meta.dat"), "garbage\n").unwrap();

    let mut q = DiskQueue::open(dir.path(), "g", opts(100)).unwrap();
    assert_eq!(q.depth(), 0);
    assert_eq!(q.metadata().write_file_num, max + 1);
    assert!(q.read_next().unwrap().is_none());
    assert!(dir.path().join("g.diskqueue.meta.dat.bad").exists());
    q.put(&payload(1)).unwrap();
    q.close().unwrap();
    for f in &before {
        assert!(dir.path().join(f).exists(), "{f} must be left alone");
    }
    let mut q = DiskQueue::open(dir.path(), "g", opts(100)).unwrap();
    assert_eq!(read_all(&mut q), vec![Bytes::from(payload(1))]);
}

#[test]
fn missing_meta_with_orphans_does_not_overwrite_them() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("o.diskqueue.000003.dat"), b"old").unwrap();
    fs::write(dir.path().join("o.diskqueue.000005.dat.bad"), b"old").unwrap();
    // other queues' files do not count
    fs::write(dir.path().join("o:c.diskqueue.000009.dat"), b"x").unwrap();
    fs::write(
        dir.path().join("o.diskqueue.000007.diskqueue.000000.dat"),
        b"x",
    )
    .unwrap();
    let q = DiskQueue::open(dir.path(), "o", opts(100)).unwrap();
    assert_eq!(q.metadata().write_file_num, 6);
    assert_eq!(q.depth(), 0);

    // no files at all: a brand-new queue starts at 0
    let fresh = DiskQueue::open(dir.path(), "new", opts(100)).unwrap();
    assert_eq!(fresh.metadata(), Metadata::default());
}

#[test]
fn stray_tmp_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "s", opts(1000)).unwrap();
    q.put(&payload(1)).unwrap();
    q.close().unwrap();
    fs::write(
        dir.path().join("s.diskqueue.meta.dat.12345.tmp"),
        "9\n0,0\n9,9\n",
    )
    .unwrap();
    let mut q = DiskQueue::open(dir.path(), "s", opts(1000)).unwrap();
    assert_eq!(read_all(&mut q), vec![Bytes::from(payload(1))]);
}

#[test]
fn sync_every_and_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(10_000);
    o.sync_every = 3;
    o.sync_timeout = Duration::from_millis(50);
    let mut q = DiskQueue::open(dir.path(), "y", o).unwrap();
    let t0 = Instant::now();
    assert!(!q.needs_sync(t0));
    assert_eq!(q.next_sync_deadline(), None);
    q.put(&payload(0)).unwrap();
    q.put(&payload(1)).unwrap();
    assert!(!dir.path().join("y.diskqueue.meta.dat").exists());
    assert!(q.next_sync_deadline().is_some());
    q.read_next().unwrap(); // third operation (reads count too) -> sync
    assert_eq!(meta_text(dir.path(), "y"), "1\n0,12\n0,31\n");
    assert!(!q.needs_sync(Instant::now()));

    q.put(&payload(2)).unwrap();
    assert!(!q.needs_sync(Instant::now()));
    let later = Instant::now() + Duration::from_millis(60);
    assert!(q.needs_sync(later));
    assert!(q.maybe_sync(later).unwrap());
    assert_eq!(meta_text(dir.path(), "y"), "2\n0,12\n0,57\n");
    assert!(!q.maybe_sync(later).unwrap(), "no activity, no sync");
}

#[test]
fn sync_every_one_persists_each_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(10_000);
    o.sync_every = 1;
    let mut q = DiskQueue::open(dir.path(), "one", o).unwrap();
    q.put(&[1u8; 10]).unwrap();
    assert_eq!(meta_text(dir.path(), "one"), "1\n0,0\n0,14\n");
    q.put(&[1u8; 10]).unwrap();
    assert_eq!(meta_text(dir.path(), "one"), "2\n0,0\n0,28\n");
}

#[test]
fn takes_over_go_state_mid_file() {
    // hand-built Go state: reader in file 1 at the second record, writer in file 2
    let dir = tempfile::tempdir().unwrap();
    let rec = |b: u8| {
        let mut v = 10u32.to_be_bytes().to_vec();
        v.extend_from_slice(&[b; 10]);
        v
    };
    fs::write(
        dir.path().join("go.diskqueue.000001.dat"),
        [rec(1), rec(2), rec(3)].concat(),
    )
    .unwrap();
    fs::write(dir.path().join("go.diskqueue.000002.dat"), rec(4)).unwrap();
    fs::write(dir.path().join("go.diskqueue.meta.dat"), "3\n1,14\n2,14\n").unwrap();
    let mut q = DiskQueue::open(dir.path(), "go", opts(1000)).unwrap();
    assert_eq!(q.depth(), 3);
    let got: Vec<u8> = read_all(&mut q).iter().map(|b| b[0]).collect();
    assert_eq!(got, vec![2, 3, 4]);
    assert!(!dir.path().join("go.diskqueue.000001.dat").exists());
    q.close().unwrap();
    assert_eq!(meta_text(dir.path(), "go"), "0\n2,14\n2,14\n");
}

/// Found by the `diskqueue` fuzz target: metadata naming a write file far beyond the files
/// present (here 10^12) made `read_next` and `scan` step through every missing file number,
/// i.e. never return. Both now jump over the run of missing files; the records present are
/// still delivered, in order, by both.
#[test]
fn metadata_naming_a_distant_write_file_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |p: &[u8]| [&(p.len() as u32).to_be_bytes()[..], p].concat();
    fs::write(dir.path().join("t.diskqueue.000000.dat"), rec(b"first")).unwrap();
    fs::write(dir.path().join("t.diskqueue.000007.dat"), rec(b"second")).unwrap();
    fs::write(
        dir.path().join("t.diskqueue.meta.dat"),
        "2\n0,0\n999999999999,0\n",
    )
    .unwrap();
    let s = crate::scan(dir.path(), "t", 1, 1000).unwrap();
    assert_eq!(s.records, vec![&b"first"[..], &b"second"[..]]);
    assert_eq!(s.problems.len(), 2, "{:?}", s.problems);
    assert!(
        s.problems[1].contains("999999999991 missing data files"),
        "{:?}",
        s.problems
    );
    let mut q = DiskQueue::open(dir.path(), "t", opts(1000)).unwrap();
    let t = Instant::now();
    assert_eq!(read_all(&mut q), vec![&b"first"[..], &b"second"[..]]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(q.depth(), 0);
    q.put(b"after").unwrap();
    assert_eq!(q.read_next().unwrap().as_deref(), Some(&b"after"[..]));
}

/// Found by the `diskqueue` fuzz target: a write file number of `i64::MAX` overflowed
/// `write_file_num + 1` at open. Such metadata is now garbled: set aside, queue starts empty.
#[test]
fn metadata_with_absurd_file_number_is_garbled() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("t.diskqueue.meta.dat"),
        "0\n0,0\n9223372036854775807,5\n",
    )
    .unwrap();
    let mut q = DiskQueue::open(dir.path(), "t", opts(1000)).unwrap();
    assert_eq!(q.read_next().unwrap(), None);
    assert!(dir.path().join("t.diskqueue.meta.dat.bad").exists());
    q.put(b"x").unwrap();
    assert_eq!(q.read_next().unwrap().as_deref(), Some(&b"x"[..]));
}

/// Found by the `diskqueue` fuzz target: metadata whose reader has caught up with its writer
/// but whose depth is not 0 (a crash between a read and the next sync) kept reporting the
/// stale depth until the next read. It is corrected at open.
#[test]
fn stale_depth_of_an_empty_queue_is_reset_at_open() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("t.diskqueue.meta.dat"), "3\n6,0\n6,0").unwrap();
    let mut q = DiskQueue::open(dir.path(), "t", opts(1000)).unwrap();
    assert_eq!(q.depth(), 0);
    assert_eq!(q.read_next().unwrap(), None);
    q.close().unwrap();
    let text = fs::read_to_string(dir.path().join("t.diskqueue.meta.dat")).unwrap();
    assert_eq!(text, "0\n6,0\n6,0\n");
}

/// A read position far past the end of its file (2^47: beyond ext4's largest file, where
/// seeking fails with EINVAL) used to be returned from `read_next` as an I/O error, on every
/// call, for ever. It is corruption: the file is set aside and reading moves on.
#[test]
fn read_position_past_the_end_is_corruption_not_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |p: &[u8]| [&(p.len() as u32).to_be_bytes()[..], p].concat();
    fs::write(dir.path().join("t.diskqueue.000000.dat"), rec(b"gone")).unwrap();
    fs::write(dir.path().join("t.diskqueue.000001.dat"), rec(b"next")).unwrap();
    fs::write(
        dir.path().join("t.diskqueue.meta.dat"),
        "2\n0,140737488355328\n1,8\n",
    )
    .unwrap();
    let mut q = DiskQueue::open(dir.path(), "t", opts(1000)).unwrap();
    assert_eq!(q.read_next().unwrap().as_deref(), Some(&b"next"[..]));
    assert_eq!(q.read_next().unwrap(), None);
    assert!(dir.path().join("t.diskqueue.000000.dat.bad").exists());
}

/// Found by the `diskqueue` fuzz target: the startup repair (write file longer than the
/// metadata's `writePos`) moves the writer to the next file number; when that file already
/// existed (unknown to the metadata), new records were written over its start and its old
/// records resurfaced behind them after the next restart. The stale bytes are now cut off
/// when the file is opened for writing.
#[test]
fn stale_bytes_in_the_next_write_file_never_resurface() {
    let dir = tempfile::tempdir().unwrap();
    let rec = |p: &[u8]| [&(p.len() as u32).to_be_bytes()[..], p].concat();
    let f0 = [rec(b"rec-00"), rec(b"rec-01"), rec(b"rec-02")].concat();
    let f1 = [rec(b"rec-03"), rec(b"rec-04")].concat();
    fs::write(dir.path().join("t.diskqueue.000000.dat"), &f0).unwrap();
    fs::write(dir.path().join("t.diskqueue.000001.dat"), &f1).unwrap();
    fs::write(dir.path().join("t.diskqueue.meta.dat"), "5\n0,0\n0,20\n").unwrap();
    let mut q = DiskQueue::open(dir.path(), "t", opts(1000)).unwrap();
    assert_eq!(read_all(&mut q), vec![&b"rec-00"[..], b"rec-01", b"rec-02"]);
    q.put(b"x").unwrap();
    assert_eq!(q.read_next().unwrap().as_deref(), Some(&b"x"[..]));
    q.put(b"y").unwrap();
    q.close().unwrap();
    let mut q = DiskQueue::open(dir.path(), "t", opts(1000)).unwrap();
    assert_eq!(
        read_all(&mut q),
        vec![&b"y"[..]],
        "no stale record after the new ones"
    );
}

/// `scan_first` returns the head of the queue only, across data files, and reads no file
/// past the limit (a missing later file is not even noticed).
#[test]
fn scan_first_stops_at_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "h", opts(30)).unwrap();
    for i in 0..10u8 {
        q.put(&[b'a' + i; 8]).unwrap();
    }
    q.close().unwrap();
    let all = crate::scan(dir.path(), "h", 1, 1000).unwrap();
    assert_eq!(all.records.len(), 10);
    for limit in [0usize, 1, 3, 4, 9, 10, 11] {
        let s = crate::scan_first(dir.path(), "h", 1, 1000, limit).unwrap();
        assert_eq!(s.records, all.records[..limit.min(10)], "limit {limit}");
        assert!(s.problems.is_empty(), "{:?}", s.problems);
    }
    // Records are 12 bytes on disk, so a 30-byte file holds 3: file 3 holds the last one.
    fs::remove_file(dir.path().join("h.diskqueue.000003.dat")).unwrap();
    let s = crate::scan_first(dir.path(), "h", 1, 1000, 5).unwrap();
    assert_eq!(s.records.len(), 5);
    assert!(s.problems.is_empty(), "{:?}", s.problems);
}

/// `put_batch` leaves byte-for-byte what one `put` per payload leaves (files, rolls, meta),
/// whatever the batch boundaries, and reads back the same records.
#[test]
fn put_batch_writes_what_puts_write() {
    let all: Vec<Vec<u8>> = (0..500).map(payload).collect();
    let one = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(one.path(), "q", opts(1000)).unwrap();
    for p in &all {
        q.put(p).unwrap();
    }
    q.close().unwrap();
    for batch in [1usize, 7, 64, 500] {
        let many = tempfile::tempdir().unwrap();
        let mut q = DiskQueue::open(many.path(), "q", opts(1000)).unwrap();
        for chunk in all.chunks(batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            q.put_batch(&refs).unwrap();
        }
        assert_eq!(q.depth(), all.len() as i64);
        q.close().unwrap();
        let names = files(one.path());
        assert!(names.len() > 10, "rolled over many files: {names:?}");
        assert_eq!(files(many.path()), names, "batch {batch}");
        for name in &names {
            assert_eq!(
                fs::read(one.path().join(name)).unwrap(),
                fs::read(many.path().join(name)).unwrap(),
                "{name}, batch {batch}"
            );
        }
        let mut q = DiskQueue::open(many.path(), "q", opts(1000)).unwrap();
        let got = read_all(&mut q);
        assert_eq!(got.len(), all.len());
        assert!(got.iter().zip(&all).all(|(g, w)| g[..] == w[..]));
    }
}

/// A payload of a bad size fails the whole batch before anything is written.
#[test]
fn put_batch_checks_every_size_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut q = DiskQueue::open(dir.path(), "q", opts(1000)).unwrap();
    let big = vec![b'x'; 1001];
    let err = q.put_batch(&[b"fine", &big]).unwrap_err();
    assert!(
        matches!(err, DiskQueueError::InvalidMessageSize { size: 1001, .. }),
        "{err}"
    );
    assert_eq!(q.depth(), 0);
    assert!(data_files(dir.path(), "q").is_empty());
}
