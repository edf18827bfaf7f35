//! Unit tests of the whole crate.

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nsq_protocol::message::MessageId;

use crate::*;

fn msg(i: u64, len: usize) -> LogMessage {
    let mut body = format!("m{i}:").into_bytes();
    body.resize(len.max(body.len()), b'a' + (i % 26) as u8);
    LogMessage {
        timestamp: 1_700_000_000_000_000_000 + i as i64,
        attempts: (i % 3) as u16,
        id: MessageId::from_u64(i),
        defer_until: 0,
        body: Bytes::from(body),
    }
}

fn msgs(range: std::ops::Range<u64>, len: impl Fn(u64) -> usize) -> Vec<LogMessage> {
    range.map(|i| msg(i, len(i))).collect()
}

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        max_msg_size: 1 << 16,
    }
}

fn read_all(r: &mut LogReader, from: u64) -> Vec<(u64, LogMessage)> {
    let mut out = Vec::new();
    let mut pos = from;
    loop {
        let b = r.read_from(pos, 37, 3000).unwrap();
        if b.records.is_empty() {
            break;
        }
        assert!(b.next_pos > pos);
        pos = b.next_pos;
        out.extend(b.records);
    }
    out
}

fn ids(v: &[(u64, LogMessage)]) -> Vec<u64> {
    v.iter().map(|(_, m)| m.id.to_u64().unwrap()).collect()
}

fn seg_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------- topic log

#[test]
fn round_trip_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(4096)).unwrap();
    assert_eq!((log.start_pos(), log.end_pos()), (0, 0));
    assert!(
        seg_files(dir.path()).is_empty(),
        "no file before the first append"
    );
    let all = msgs(0..1000, |i| (i * 7 % 300) as usize);
    let mut expect_pos = Vec::new();
    for chunk in all.chunks(17) {
        let a = log.append(chunk).unwrap();
        assert_eq!(a.count, chunk.len());
        let p: Vec<u64> = a.positions(chunk.iter().map(|m| m.body.len())).collect();
        assert_eq!(
            a.end,
            p.last().unwrap() + record_len(chunk.last().unwrap().body.len())
        );
        expect_pos.extend(p);
    }
    // Not flushed yet except for rolls: readers only see what was written.
    log.flush().unwrap();
    assert_eq!(log.written_upto(), log.end_pos());
    let segs = log.segments();
    assert!(segs.len() > 20, "{} segments", segs.len());
    for f in seg_files(dir.path()) {
        let len = fs::metadata(dir.path().join(&f)).unwrap().len();
        assert!(len <= 4096, "{f} is {len} bytes");
    }
    let mut r = log.reader();
    let got = read_all(&mut r, 0);
    assert_eq!(got.len(), 1000);
    for ((pos, m), (want_pos, want)) in got.iter().zip(expect_pos.iter().zip(&all)) {
        assert_eq!(pos, want_pos);
        assert_eq!(m, want);
    }
    // Reading from the middle, from each position.
    let b = r.read_from(expect_pos[500], 1, usize::MAX).unwrap();
    assert_eq!(b.records[0].1, all[500]);
    assert_eq!(b.next_pos, expect_pos[501]);

    let end = log.end_pos();
    log.close().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(4096)).unwrap();
    assert_eq!(log.end_pos(), end);
    assert_eq!(log.recovered_end(), end);
    assert_eq!(log.segments(), segs);
    log.append(&msgs(1000..1010, |_| 100)).unwrap();
    log.sync().unwrap();
    assert_eq!(log.synced_upto(), log.end_pos());
    let got = read_all(&mut log.reader(), 0);
    assert_eq!(ids(&got), (0..1010).collect::<Vec<_>>());
}

#[test]
fn big_record_gets_its_own_segment_and_too_large_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(1000)).unwrap();
    log.append(&msgs(0..2, |_| 10)).unwrap();
    log.append(&msgs(2..3, |_| 5000)).unwrap();
    log.append(&msgs(3..4, |_| 10)).unwrap();
    log.flush().unwrap();
    assert_eq!(log.segments().len(), 3);
    let end = log.end_pos();
    let e = log.append(&[msg(9, 10), msg(10, 70_000)]).unwrap_err();
    assert!(
        matches!(e, StoreError::MessageTooLarge { size: 70_000, .. }),
        "{e}"
    );
    assert_eq!(log.end_pos(), end, "nothing of a refused batch is appended");
    assert_eq!(ids(&read_all(&mut log.reader(), 0)), vec![0, 1, 2, 3]);
}

#[test]
fn unflushed_records_die_with_the_process_flushed_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    log.append(&msgs(0..10, |_| 50)).unwrap();
    log.flush().unwrap();
    let mut r = log.reader();
    log.append(&msgs(10..20, |_| 50)).unwrap();
    assert_eq!(
        read_all(&mut r, 0).len(),
        10,
        "readers see written records only"
    );
    drop(log); // crash: no flush
    let log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    assert_eq!(
        ids(&read_all(&mut log.reader(), 0)),
        (0..10).collect::<Vec<_>>()
    );
}

/// Cuts the last record of the last segment at every byte offset: reopening yields exactly the
/// complete records, truncates the file, and appends continue cleanly.
#[test]
fn torn_tail_at_every_offset() {
    let src = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(src.path(), "t", opts(600)).unwrap();
    log.append(&msgs(0..6, |_| 60)).unwrap();
    log.flush().unwrap();
    let before_last = log.end_pos();
    log.append(&[msg(6, 90)]).unwrap();
    log.close().unwrap();
    let listing = list_dir(src.path()).unwrap();
    let bases = listing.topics["t"].clone();
    assert!(
        bases.len() >= 2,
        "the last record must be in a later segment: {bases:?}"
    );
    let last_base = *bases.last().unwrap();
    let files: Vec<(String, Vec<u8>)> = seg_files(src.path())
        .into_iter()
        .map(|f| {
            let data = fs::read(src.path().join(&f)).unwrap();
            (f, data)
        })
        .collect();
    let last_len = files.last().unwrap().1.len() as u64;
    let rec_start = before_last - last_base;
    for cut in rec_start..=last_len {
        let dir = tempfile::tempdir().unwrap();
        for (i, (name, data)) in files.iter().enumerate() {
            let data = if i == files.len() - 1 {
                &data[..cut as usize]
            } else {
                &data[..]
            };
            fs::write(dir.path().join(name), data).unwrap();
        }
        let mut log = TopicLog::open(dir.path(), "t", opts(600)).unwrap();
        let complete = cut == last_len;
        let want: Vec<u64> = if complete {
            (0..7).collect()
        } else {
            (0..6).collect()
        };
        assert_eq!(ids(&read_all(&mut log.reader(), 0)), want, "cut at {cut}");
        let want_end = if complete {
            last_base + last_len
        } else {
            before_last
        };
        assert_eq!(log.end_pos(), want_end, "cut at {cut}");
        let name = &files.last().unwrap().0;
        assert_eq!(
            fs::metadata(dir.path().join(name)).unwrap().len(),
            want_end - last_base
        );
        log.append(&[msg(100, 20)]).unwrap();
        log.close().unwrap();
        let log = TopicLog::open(dir.path(), "t", opts(600)).unwrap();
        let mut want = want;
        want.push(100);
        assert_eq!(ids(&read_all(&mut log.reader(), 0)), want, "cut at {cut}");
    }
}

#[test]
fn garbage_tail_after_os_crash_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    log.append(&msgs(0..5, |_| 40)).unwrap();
    let end = {
        log.flush().unwrap();
        log.end_pos()
    };
    drop(log);
    let path = dir.path().join(&seg_files(dir.path())[0]);
    let mut data = fs::read(&path).unwrap();
    data.extend_from_slice(&[0u8; 4096]);
    data.extend_from_slice(b"NSQ1\x00\x00\x00\x10garbage");
    fs::write(&path, &data).unwrap();
    let log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    assert_eq!(log.end_pos(), end);
    assert_eq!(fs::metadata(&path).unwrap().len(), end);
    assert_eq!(read_all(&mut log.reader(), 0).len(), 5);
}

fn corrupt_case(segment_bytes: u64, what: &str, damage: impl Fn(&mut [u8], usize)) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(segment_bytes)).unwrap();
    let all = msgs(0..40, |_| 100);
    let a = log.append(&all).unwrap();
    log.close().unwrap();
    let positions: Vec<u64> = a.positions(all.iter().map(|m| m.body.len())).collect();
    let victim = 5;
    let pos = positions[victim];
    let bases = list_dir(dir.path()).unwrap().topics["t"].clone();
    let base = *bases.iter().rev().find(|&&b| b <= pos).unwrap();
    let path = log::segment_path(dir.path(), "t", base);
    let mut data = fs::read(&path).unwrap();
    damage(&mut data, (pos - base) as usize);
    fs::write(&path, &data).unwrap();

    let mut log = TopicLog::open(dir.path(), "t", opts(segment_bytes)).unwrap();
    assert_eq!(
        log.end_pos(),
        a.end,
        "{what}: no truncation for a mid-file corruption"
    );
    let want: Vec<u64> = (0..40).filter(|&i| i != victim as u64).collect();
    let got = read_all(&mut log.reader(), 0);
    assert_eq!(ids(&got), want, "{what}");
    for (p, m) in &got {
        assert_eq!(*p, positions[m.id.to_u64().unwrap() as usize]);
    }
    // Appends still work after it.
    log.append(&[msg(50, 10)]).unwrap();
    log.flush().unwrap();
    assert_eq!(read_all(&mut log.reader(), 0).len(), 40);
}

#[test]
fn corrupt_record_in_the_middle_is_skipped() {
    for seg in [1 << 20, 1500] {
        corrupt_case(seg, "body byte", |d, at| d[at + 60] ^= 0x40);
        corrupt_case(seg, "crc byte", |d, at| d[at + 9] ^= 1);
        corrupt_case(seg, "magic", |d, at| d[at] = b'X');
        corrupt_case(seg, "impossible length", |d, at| {
            d[at + 4..at + 8].copy_from_slice(&u32::MAX.to_be_bytes())
        });
        corrupt_case(seg, "zero length", |d, at| {
            d[at + 4..at + 8].copy_from_slice(&0u32.to_be_bytes())
        });
        corrupt_case(seg, "length off by 3", |d, at| {
            let l = u32::from_be_bytes(d[at + 4..at + 8].try_into().unwrap());
            d[at + 4..at + 8].copy_from_slice(&(l + 3).to_be_bytes())
        });
    }
}

#[test]
fn reader_bounds_and_removed_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(1000)).unwrap();
    let all = msgs(0..50, |_| 100);
    let a = log.append(&all).unwrap();
    log.flush().unwrap();
    let positions: Vec<u64> = a.positions(all.iter().map(|m| m.body.len())).collect();
    let mut r = log.reader();
    // Past the end: nothing, and next_pos stays.
    let b = r.read_from(log.end_pos() + 100, 10, 1 << 20).unwrap();
    assert!(b.records.is_empty());
    // max_bytes smaller than a record still yields one.
    let b = r.read_from(0, 10, 1).unwrap();
    assert_eq!(b.records.len(), 1);
    assert_eq!(b.next_pos, positions[1]);
    // max_bytes caps the batch.
    let b = r.read_from(0, 100, 3 * record_len(100) as usize).unwrap();
    assert_eq!(b.records.len(), 3);
    // read_range stops at upto.
    let b = r.read_range(0, positions[4], 100, 1 << 20).unwrap();
    assert_eq!(b.records.len(), 4);
    assert_eq!(b.next_pos, positions[4]);

    let segs = log.segments();
    assert!(segs.len() >= 5);
    // Nothing before the second segment's base: only segment 0 can go.
    assert_eq!(log.remove_segments_before(segs[1] + 1).unwrap().count(), 1);
    assert_eq!(log.start_pos(), segs[1]);
    assert_eq!(r.start_pos(), segs[1]);
    // A reader in a removed segment continues at the first retained position.
    let b = r.read_from(positions[1], 1, 1 << 20).unwrap();
    assert_eq!(b.records[0].0, segs[1]);
    let got = read_all(&mut r, 0);
    assert_eq!(got[0].0, segs[1]);
    assert_eq!(got.last().unwrap().1, all[49]);
    // Everything: the active segment stays.
    let removed = log.remove_segments_before(u64::MAX).unwrap();
    // The names are gone at once; the files stay open (their space is freed on drop).
    assert!(!removed.holds_nothing());
    assert_eq!(seg_files(dir.path()).len(), 1);
    let n = removed.count();
    drop(removed);
    assert_eq!(n, segs.len() - 2);
    assert_eq!(log.segments(), vec![*segs.last().unwrap()]);
    assert_eq!(seg_files(dir.path()).len(), 1);
    // Roll, then even that can go.
    log.roll().unwrap();
    assert_eq!(
        log.remove_segments_before(log.end_pos()).unwrap().count(),
        1
    );
    assert!(read_all(&mut r, 0).is_empty());
    log.append(&[msg(99, 5)]).unwrap();
    log.flush().unwrap();
    assert_eq!(ids(&read_all(&mut r, 0)), vec![99]);
    // A reopen sees the same thing.
    let end = log.end_pos();
    log.close().unwrap();
    let log = TopicLog::open(dir.path(), "t", opts(1000)).unwrap();
    assert_eq!(log.start_pos(), a.end);
    assert_eq!(log.end_pos(), end);

    let mut r = log.reader();
    assert_eq!(read_all(&mut r, 0).len(), 1);
    drop(log.delete_all().unwrap());
    assert!(seg_files(dir.path()).is_empty());
    assert!(read_all(&mut r, 0).is_empty());
}

#[test]
fn concurrent_reader_sees_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(8192)).unwrap();
    let mut r = log.reader();
    let reader = std::thread::spawn(move || {
        let mut pos = 0;
        let mut next_id = 0;
        while next_id < 3000 {
            let b = r.read_from(pos, 100, 1 << 16).unwrap();
            for (_, m) in &b.records {
                assert_eq!(m.id.to_u64().unwrap(), next_id);
                next_id += 1;
            }
            pos = b.next_pos;
            if b.records.is_empty() {
                std::thread::yield_now();
            }
        }
    });
    for c in 0..300 {
        log.append(&msgs(c * 10..c * 10 + 10, |i| (i % 200) as usize))
            .unwrap();
        log.flush().unwrap();
        // Old segments disappear while the reader may be in them... not here: the reader
        // must see everything.
    }
    reader.join().unwrap();
}

#[test]
fn failed_write_leaves_no_partial_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    log.append(&msgs(0..5, |_| 100)).unwrap();
    log.sync().unwrap();
    let good = log.end_pos();
    log.append(&msgs(5..10, |_| 100)).unwrap();
    log.faults.write_fail_after = Some(333);
    let e = log.flush().unwrap_err();
    assert!(e.is_disk_full(), "{e}");
    assert!(e.to_string().contains("writing"), "{e}");
    assert_eq!(log.end_pos(), good);
    assert_eq!(log.written_upto(), good);
    let path = dir.path().join(&seg_files(dir.path())[0]);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        good,
        "partial write cut off"
    );
    // The log keeps working and nothing is garbled.
    log.append(&msgs(20..22, |_| 100)).unwrap();
    log.sync().unwrap();
    let want: Vec<u64> = (0..5).chain(20..22).collect();
    assert_eq!(ids(&read_all(&mut log.reader(), 0)), want);

    // If even the truncation fails, the log refuses further work until reopened.
    log.append(&msgs(30..31, |_| 100)).unwrap();
    log.faults.write_fail_after = Some(10);
    log.faults.fail_truncate = true;
    log.flush().unwrap_err();
    let e = log.append(&msgs(31..32, |_| 100)).unwrap_err();
    assert!(matches!(e, StoreError::Poisoned { .. }), "{e}");
    assert!(matches!(log.sync(), Err(StoreError::Poisoned { .. })));
    drop(log);
    let log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    assert_eq!(
        ids(&read_all(&mut log.reader(), 0)),
        want,
        "torn 10 bytes truncated"
    );
}

#[test]
fn failed_fsync_poisons() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    log.append(&msgs(0..5, |_| 100)).unwrap();
    log.faults.fail_sync = true;
    let e = log.sync().unwrap_err();
    assert!(e.to_string().contains("syncing"), "{e}");
    assert_eq!(log.synced_upto(), 0);
    log.faults.fail_sync = false;
    assert!(matches!(log.sync(), Err(StoreError::Poisoned { .. })));
}

#[test]
fn listing_and_names() {
    let dir = tempfile::tempdir().unwrap();
    for n in [
        "a.nsqrs.00000000000000000000.log",
        "a.nsqrs.00000000000000001000.log",
        "a.b.nsqrs.00000000000000000007.log",
        "x.nsqrs.0000000000000000000.log", // 19 digits
        "a:c1.nsqrs.journal",
        "a:c1.nsqrs.journal.tmp",
        "orders.diskqueue.000000.dat",
    ] {
        fs::write(dir.path().join(n), b"").unwrap();
    }
    let l = list_dir(dir.path()).unwrap();
    assert_eq!(l.topics.len(), 2);
    assert_eq!(l.topics["a"], vec![0, 1000]);
    assert_eq!(l.topics["a.b"], vec![7]);
    assert_eq!(l.journals, vec![("a".to_string(), "c1".to_string())]);
    assert!(TopicLog::open(dir.path(), "../x", LogOptions::default()).is_err());
    assert!(ChannelJournal::create(dir.path(), "a", "b:c", 0).is_err());
    assert_eq!(
        list_dir(&dir.path().join("missing")).unwrap(),
        DirListing::default()
    );
}

// ---------------------------------------------------------------- journal

#[test]
fn ack_set_operations() {
    let mut s = AckSet::new();
    s.insert(10);
    s.insert(20);
    s.insert(11);
    s.insert(5);
    assert_eq!(s.ranges(), &[(5, 6), (10, 12), (20, 21)]);
    s.insert_range(6, 10);
    assert_eq!(s.ranges(), &[(5, 12), (20, 21)]);
    s.insert_range(0, 100);
    assert_eq!(s.ranges(), &[(0, 100)]);
    assert!(s.contains(0) && s.contains(99) && !s.contains(100));
    s.remove_below(50);
    assert_eq!(s.ranges(), &[(50, 100)]);
    s.remove_from(60);
    assert_eq!(s.ranges(), &[(50, 60)]);
    let u = AckSet::from_unacked(100, 200, &[50, 100, 150, 151, 199, 300]);
    assert_eq!(u.ranges(), &[(101, 150), (152, 199)]);
    assert!(!u.contains(100) && u.contains(101) && !u.contains(151) && !u.contains(199));
    assert_eq!(AckSet::from_unacked(0, 10, &[]).ranges(), &[(0, 10)]);
}

#[test]
fn journal_survives_reopen_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut j = ChannelJournal::create(d, "t", "c", 100).unwrap();
    for p in [100, 300, 200, 500] {
        j.ack(p).unwrap();
    }
    j.defer(400, 1_234, 3).unwrap();
    j.defer(600, 5_678, 1).unwrap();
    j.defer(500, 9, 9).unwrap(); // acked already: ignored
    j.attempts(700, 4).unwrap();
    j.attempts(600, 2).unwrap(); // updates the deferred entry
    j.ack(50).unwrap(); // below start: ignored
    j.flush().unwrap();
    drop(j);
    let (mut j, rec) = ChannelJournal::open(d, "t", "c", 10_000).unwrap().unwrap();
    let want = ChannelRecovery {
        start: 100,
        acked: {
            let mut s = AckSet::new();
            for p in [100, 200, 300, 500] {
                s.insert(p);
            }
            s
        },
        deferred: vec![
            DeferredEntry {
                pos: 400,
                due_unix_ns: 1_234,
                attempts: 3,
            },
            DeferredEntry {
                pos: 600,
                due_unix_ns: 5_678,
                attempts: 2,
            },
        ],
        attempts: vec![(700, 4)],
        corrupt_bytes: 0,
    };
    assert_eq!(rec, want);
    // Ack of a deferred message cancels the deferral; a cursor forgets everything below it.
    j.ack(400).unwrap();
    j.cursor(250).unwrap();
    j.sync().unwrap();
    drop(j);
    let (mut j, rec) = ChannelJournal::open(d, "t", "c", 10_000).unwrap().unwrap();
    assert_eq!(rec.start, 250);
    assert_eq!(rec.acked.ranges(), &[(300, 301), (400, 401), (500, 501)]);
    assert_eq!(rec.deferred, vec![want.deferred[1]]);
    assert_eq!(rec.attempts, vec![(700, 4)]);

    // Compaction with the same state: same recovery, smaller file.
    let before = j.size_bytes();
    j.compact(rec.start, &rec.acked, &rec.deferred, &rec.attempts)
        .unwrap();
    drop(j);
    let (j, rec2) = ChannelJournal::open(d, "t", "c", 10_000).unwrap().unwrap();
    assert_eq!(rec2, rec);
    assert!(j.size_bytes() < before, "{} < {before}", j.size_bytes());
    assert!(!d.join("t:c.nsqrs.journal.tmp").exists());

    // create() replaces a stale journal.
    drop(j);
    let j = ChannelJournal::create(d, "t", "c", 7).unwrap();
    drop(j);
    let (j, rec) = ChannelJournal::open(d, "t", "c", 10_000).unwrap().unwrap();
    assert_eq!(
        rec,
        ChannelRecovery {
            start: 7,
            ..Default::default()
        }
    );
    j.delete().unwrap();
    assert!(ChannelJournal::open(d, "t", "c", 0).unwrap().is_none());
}

#[test]
fn journal_size_stays_proportional_to_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut j = ChannelJournal::create(d, "t", "c", 0).unwrap();
    // A consumer FINs 1M messages of 100 bytes; 10 stay outstanding at any time.
    let mut compactions = 0;
    let mut unacked: std::collections::VecDeque<u64> = (0..10).map(|i| i * 100).collect();
    let mut next = 1000;
    for _ in 0..200_000 {
        let p = unacked.pop_front().unwrap();
        j.ack(p).unwrap();
        unacked.push_back(next);
        next += 100;
        if j.should_compact() {
            let lowest = *unacked.front().unwrap();
            j.compact(lowest, &AckSet::new(), &[], &[]).unwrap();
            compactions += 1;
        }
    }
    assert!(compactions >= 2, "{compactions}");
    assert!(j.size_bytes() < 2 << 20);
    j.flush().unwrap();
    drop(j);
    let (_, rec) = ChannelJournal::open(d, "t", "c", u64::MAX)
        .unwrap()
        .unwrap();
    let lowest = *unacked.front().unwrap();
    assert!(rec.start <= lowest);
    for &u in &unacked {
        assert!(!rec.acked.contains(u));
    }
}

#[test]
fn journal_torn_tail_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut j = ChannelJournal::create(d, "t", "c", 0).unwrap();
    for p in 0..10u64 {
        j.ack(p * 10).unwrap();
    }
    j.flush().unwrap();
    let len_before_last = j.size_bytes();
    j.defer(500, 42, 1).unwrap();
    j.flush().unwrap();
    drop(j);
    let path = journal_path(d, "t", "c");
    let full = fs::read(&path).unwrap();
    for cut in len_before_last as usize..full.len() {
        fs::write(&path, &full[..cut]).unwrap();
        let (j, rec) = ChannelJournal::open(d, "t", "c", 10_000).unwrap().unwrap();
        assert!(rec.deferred.is_empty(), "cut {cut}");
        assert_eq!(rec.acked.ranges().len(), 10);
        assert_eq!(j.size_bytes(), len_before_last);
        assert_eq!(fs::metadata(&path).unwrap().len(), len_before_last);
    }
    // A corrupt record in the middle: that ack is lost (the message would be redelivered),
    // the rest still applies.
    let mut data = full.clone();
    let rec_len = 12 + 1 + 8;
    let fifth = 21 + 4 * rec_len; // Start record, then acks 0..4
    data[fifth + 15] ^= 0xff;
    fs::write(&path, &data).unwrap();
    let (_, rec) = ChannelJournal::open(d, "t", "c", 10_000).unwrap().unwrap();
    assert_eq!(rec.acked.ranges().len(), 9);
    assert!(!rec.acked.contains(40));
    assert_eq!(rec.deferred.len(), 1);
    assert!(rec.corrupt_bytes > 0);
}

#[test]
fn journal_references_past_the_log_end_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut j = ChannelJournal::create(d, "t", "c", 1000).unwrap();
    j.ack(1000).unwrap();
    j.ack(1100).unwrap();
    j.defer(1200, 5, 1).unwrap();
    j.flush().unwrap();
    drop(j);
    // The log only has up to 1100 after an OS crash.
    let (_, rec) = ChannelJournal::open(d, "t", "c", 1100).unwrap().unwrap();
    assert_eq!(rec.start, 1000);
    assert_eq!(rec.acked.ranges(), &[(1000, 1001)]);
    assert!(rec.deferred.is_empty());
    // ... and they stay dropped once the log has grown past them again.
    let (_, rec) = ChannelJournal::open(d, "t", "c", 5000).unwrap().unwrap();
    assert_eq!(rec.acked.ranges(), &[(1000, 1001)]);
    assert!(rec.deferred.is_empty());
    // A start beyond the log end is lowered to it.
    let (_, rec) = ChannelJournal::open(d, "t", "c", 500).unwrap().unwrap();
    assert_eq!(rec.start, 500);
    assert!(rec.acked.is_empty());
}

// ---------------------------------------------------------------- recovery

#[test]
fn recovery_replays_exactly_the_unacked_set() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut log = TopicLog::open(d, "t", opts(2000)).unwrap();
    // 50 messages before the channel exists.
    log.append(&msgs(0..50, |_| 30)).unwrap();
    let mut j = ChannelJournal::create(d, "t", "c", log.end_pos()).unwrap();
    let mut all = msgs(50..1050, |i| (i % 120) as usize);
    all[100].defer_until = 777; // DPUB
    let a = log.append(&all).unwrap();
    let positions: Vec<u64> = a.positions(all.iter().map(|m| m.body.len())).collect();
    let mut want = Vec::new();
    for (k, &p) in positions.iter().enumerate() {
        if k % 3 == 0 {
            j.ack(p).unwrap();
        } else if k % 7 == 0 {
            j.defer(p, 10_000 + k as i64, 2).unwrap();
            want.push((
                p,
                Disposition::Deferred {
                    due_unix_ns: 10_000 + k as i64,
                },
                2,
            ));
        } else if k % 11 == 0 {
            j.attempts(p, 5).unwrap();
            want.push((p, Disposition::Ready, 5));
        } else if k == 100 {
            want.push((
                p,
                Disposition::Deferred { due_unix_ns: 777 },
                all[k].attempts,
            ));
        } else {
            want.push((p, Disposition::Ready, all[k].attempts));
        }
    }
    j.flush().unwrap();
    log.flush().unwrap();
    drop(j); // crash
    drop(log);

    let log = TopicLog::open(d, "t", opts(2000)).unwrap();
    let (_, rec) = ChannelJournal::open(d, "t", "c", log.recovered_end())
        .unwrap()
        .unwrap();
    let mut replay = recover_channel(log.reader(), &rec, 25, 1 << 20);
    let mut got = Vec::new();
    let mut batches = 0;
    for batch in replay.by_ref() {
        let batch = batch.unwrap();
        assert!(!batch.is_empty() && batch.len() <= 25);
        batches += 1;
        got.extend(batch);
    }
    assert!(batches >= want.len() / 25);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!((g.pos, g.disposition, g.msg.attempts), *w);
        let k = positions.iter().position(|&p| p == g.pos).unwrap();
        assert_eq!(g.msg.body, all[k].body);
    }
    assert_eq!(replay.lowest_unacked(), Some(want[0].0));
    assert_eq!(replay.upto(), log.end_pos());
    assert_eq!(replay.position(), log.end_pos());
}

#[test]
fn recovery_after_segments_were_removed_and_empty_channel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut log = TopicLog::open(d, "t", opts(1000)).unwrap();
    let mut j = ChannelJournal::create(d, "t", "c", 0).unwrap();
    log.append(&msgs(0..100, |_| 50)).unwrap();
    log.flush().unwrap();
    // Channel emptied: everything so far is dropped.
    j.cursor(log.end_pos()).unwrap();
    let a = log.append(&msgs(100..110, |_| 50)).unwrap();
    drop(log.remove_segments_before(a.first).unwrap());
    log.close().unwrap();
    j.flush().unwrap();
    drop(j);
    let log = TopicLog::open(d, "t", opts(1000)).unwrap();
    let (_, rec) = ChannelJournal::open(d, "t", "c", log.recovered_end())
        .unwrap()
        .unwrap();
    let got: Vec<u64> = recover_channel(log.reader(), &rec, 1000, 1 << 20)
        .flat_map(|b| b.unwrap())
        .map(|r| r.msg.id.to_u64().unwrap())
        .collect();
    assert_eq!(got, (100..110).collect::<Vec<_>>());
    // A channel whose start lies in removed segments starts at the first retained record.
    let rec0 = ChannelRecovery::default();
    let got = recover_channel(log.reader(), &rec0, 1000, 1 << 20)
        .flat_map(|b| b.unwrap())
        .count();
    assert!((10..100).contains(&got), "{got}");
}

// ---------------------------------------------------------------- group commit

#[test]
fn committer_policy() {
    let t0 = Instant::now();
    let mut c = Committer::new(SyncPolicy {
        every: 3,
        timeout: Duration::from_millis(100),
    });
    assert!(!c.should_sync(t0) && c.deadline().is_none());
    c.appended(2, t0);
    assert!(!c.should_sync(t0));
    assert_eq!(c.deadline(), Some(t0 + Duration::from_millis(100)));
    assert!(c.should_sync(t0 + Duration::from_millis(100)));
    c.appended(1, t0 + Duration::from_millis(1));
    assert!(c.should_sync(t0));
    c.synced();
    assert!(!c.should_sync(t0 + Duration::from_secs(10)));
    let c1 = Committer::new(SyncPolicy {
        every: 0,
        timeout: Duration::from_secs(1),
    });
    assert!(c1.policy().ack_after_sync());
    let mut c1 = c1;
    c1.appended(1, t0);
    assert!(c1.should_sync(t0));
}

#[test]
fn writer_thread_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let log = TopicLog::open(d, "t", opts(64 * 1024)).unwrap();
    let mut reader = log.reader();
    let w: LogWriterThread<mpsc::Sender<Result<Appended, StoreError>>> = LogWriterThread::spawn(
        "store-writer",
        SyncPolicy {
            every: 1,
            timeout: Duration::from_secs(1),
        },
    )
    .unwrap();
    let w = std::sync::Arc::new(w);
    let id = w.add_topic(log);
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for k in 0..100u64 {
                    let (tx, rx) = mpsc::channel();
                    let base = t * 1000 + k * 2;
                    w.append(id, msgs(base..base + 2, |_| 200), tx);
                    let a = rx.recv().unwrap().unwrap();
                    assert_eq!(a.count, 2);
                    got.push(a);
                }
                got
            })
        })
        .collect();
    let mut appended: Vec<Appended> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    appended.sort_by_key(|a| a.first);
    for w2 in appended.windows(2) {
        assert_eq!(
            w2[0].end, w2[1].first,
            "positions are contiguous and unique"
        );
    }
    let end = appended.last().unwrap().end;
    assert_eq!(reader.synced_upto(), end, "completed only after fsync");
    assert_eq!(read_all(&mut reader, 0).len(), 1600);

    // Errors: unknown topic, too large.
    let (tx, rx) = mpsc::channel();
    w.append(TopicId(999), msgs(0..1, |_| 1), tx);
    assert!(matches!(
        rx.recv().unwrap(),
        Err(StoreError::UnknownTopic(999))
    ));
    let (tx, rx) = mpsc::channel();
    w.append(id, msgs(0..1, |_| 100_000), tx);
    assert!(matches!(
        rx.recv().unwrap(),
        Err(StoreError::MessageTooLarge { .. })
    ));

    // call + remove.
    let (tx, rx) = mpsc::channel();
    w.call(id, move |l| tx.send(l.map(|l| l.end_pos())).unwrap());
    assert_eq!(rx.recv().unwrap(), Some(end));
    let (tx, rx) = mpsc::channel();
    w.remove_topic(id, move |l| tx.send(l).unwrap());
    let log = rx.recv().unwrap().unwrap();
    assert_eq!(log.synced_upto(), end);
    drop(log.delete_all().unwrap());
    std::sync::Arc::into_inner(w).unwrap().shutdown();
}

#[test]
fn writer_thread_timeout_sync_and_closures() {
    let dir = tempfile::tempdir().unwrap();
    let log = TopicLog::open(dir.path(), "t", opts(1 << 20)).unwrap();
    let reader = log.reader();
    type Done = Box<dyn FnOnce(Result<Appended, StoreError>) + Send>;
    let w: LogWriterThread<Done> = LogWriterThread::spawn(
        "store-writer",
        SyncPolicy {
            every: 1_000_000,
            timeout: Duration::from_millis(30),
        },
    )
    .unwrap();
    let id = w.add_topic(log);
    let (tx, rx) = mpsc::channel();
    w.append(
        id,
        msgs(0..10, |_| 10),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    let a = rx.recv().unwrap().unwrap();
    // Completed after the write; the sync follows within the timeout.
    assert_eq!(reader.written_upto(), a.end);
    let t0 = Instant::now();
    while reader.synced_upto() < a.end {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "timeout sync never happened"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Shutdown syncs what is pending.
    let (tx, rx) = mpsc::channel();
    w.append(
        id,
        msgs(10..11, |_| 10),
        Box::new(move |r| tx.send(r).unwrap()),
    );
    let a = rx.recv().unwrap().unwrap();
    drop(w);
    assert_eq!(reader.synced_upto(), a.end);
}

/// Found by the `store_journal` fuzz target: a journal record `Ack(u64::MAX)` (damaged or
/// hand-made) overflowed `pos + 1` while replaying. It now acks nothing (no record starts
/// there) and the rest of the journal still applies.
#[test]
fn journal_ack_at_u64_max_does_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut j = ChannelJournal::create(d, "t", "c", 0).unwrap();
    j.ack(u64::MAX).unwrap();
    j.ack(47).unwrap();
    j.sync().unwrap();
    drop(j);
    let (_, rec) = ChannelJournal::open(d, "t", "c", u64::MAX)
        .unwrap()
        .unwrap();
    assert_eq!(rec.acked.ranges(), &[(47, 48)]);
    let mut set = AckSet::new();
    set.insert(u64::MAX);
    assert!(set.is_empty());
}

/// Found while fuzzing the log (by reading the code the fuzzer exercises): a segment file
/// named with a base near `u64::MAX` overflowed `base + length` at open. It is refused.
#[test]
fn segment_base_near_u64_max_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut log = TopicLog::open(d, "t", opts(1 << 20)).unwrap();
    log.append(&msgs(0..2, |_| 10)).unwrap();
    log.close().unwrap();
    let seg = d.join(format!("t.nsqrs.{:020}.log", 0));
    fs::rename(&seg, d.join(format!("t.nsqrs.{:020}.log", u64::MAX - 10))).unwrap();
    let err = TopicLog::open(d, "t", opts(1 << 20)).unwrap_err();
    assert!(
        err.to_string().contains("beyond any real log position"),
        "{err}"
    );
}
