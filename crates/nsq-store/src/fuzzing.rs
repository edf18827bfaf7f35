//! Fuzz target bodies for the store's on-disk formats, shared by the cargo-fuzz targets in
//! `fuzz/` (nightly) and the corpus replay test `tests/fuzz_corpus.rs` (stable). See
//! `docs/FUZZING.md`. Not part of the crate's API.
//!
//! - [`fuzz_store_log`]: arbitrary bytes as topic log segments → open (torn-tail repair),
//!   read in batches, reopen, append.
//! - [`fuzz_store_journal`]: arbitrary bytes as a channel journal → open/replay, reopen,
//!   compact, reopen.
//! - [`fuzz_store_recover`]: a valid log plus a sequence of journal operations (with
//!   restarts, compactions and damage to the log) → [`recover_channel`] must yield exactly
//!   what a straightforward model of the journal's rules says is still owed.
//!
//! Files go to a per-process scratch directory on tmpfs when there is one (fsyncs are
//! cheap there), emptied on every call.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use nsq_protocol::message::MessageId;

use crate::journal::journal_path;
use crate::log::segment_path;
use crate::{
    recover_channel, AckSet, ChannelJournal, ChannelRecovery, DeferredEntry, Disposition,
    LogMessage, LogOptions, LogReader, TopicLog,
};

const TOPIC: &str = "fz";
const CHANNEL: &str = "c";

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

/// A little reader over the fuzz input; runs out gracefully (zeros).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_be_bytes(b)
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn rest(&mut self) -> &[u8] {
        std::mem::take(&mut self.0)
    }
}

/// Turns `[kind u8][len u8][payload]...` into valid, checksummed records, so the fuzzer
/// reaches the semantics behind the CRC (it cannot forge CRC-32s by mutation). A kind of
/// `0xff` instead copies `len` raw bytes (corruption at a known place).
fn framed(mut input: Input) -> Vec<u8> {
    let mut out = Vec::new();
    while !input.0.is_empty() {
        let kind = input.u8();
        let len = usize::from(input.u8());
        let payload = input.bytes(len);
        if kind == 0xff {
            out.extend_from_slice(payload);
            continue;
        }
        let start = crate::record::begin(&mut out, kind);
        out.extend_from_slice(payload);
        crate::record::finish(&mut out, start);
    }
    out
}

/// Reads everything from `from` with the given batch limits; checks batch invariants.
fn read_all(
    r: &mut LogReader,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Vec<(u64, LogMessage)> {
    let mut out: Vec<(u64, LogMessage)> = Vec::new();
    let mut pos = from;
    let end = r.written_upto();
    for _ in 0..100_000 {
        let b = r.read_from(pos, max_records, max_bytes).expect("read_from");
        assert!(b.records.len() <= max_records.max(1));
        for (p, _) in &b.records {
            assert!(
                *p >= pos && *p < end,
                "record at {p} outside [{pos}, {end})"
            );
            if let Some((last, _)) = out.last() {
                assert!(p > last, "positions must increase ({last} then {p})");
            }
        }
        let progressed = b.next_pos > pos || !b.records.is_empty();
        out.extend(b.records);
        if !progressed || b.next_pos >= end {
            return out;
        }
        pos = b.next_pos;
    }
    panic!("reader did not reach the end of a small log");
}

/// Topic log segments made of arbitrary bytes.
pub fn fuzz_store_log(data: &[u8]) {
    let mut input = Input(data);
    let cfg = input.u8();
    let two = cfg & 1 != 0;
    let gap = u64::from((cfg >> 1) & 7) * 13;
    let max_msg_size = if cfg & 0x10 != 0 { 8 } else { 1 << 20 };
    let first_len = usize::from(input.u16());
    let structured = cfg & 0x80 != 0;
    let seg0 = input.bytes(first_len).to_vec();
    let seg1 = input.rest().to_vec();
    let (seg0, seg1) = if structured {
        (framed(Input(&seg0)), framed(Input(&seg1)))
    } else {
        (seg0, seg1)
    };
    let dir = scratch_dir("store-log");
    let base0 = 0u64;
    fs::write(segment_path(&dir, TOPIC, base0), &seg0).expect("write segment");
    let mut last = (base0, seg0.clone());
    let base1 = seg0.len() as u64 + gap;
    let two = two && base1 != base0;
    if two {
        fs::write(segment_path(&dir, TOPIC, base1), &seg1).expect("write segment");
        last = (base1, seg1.clone());
    }
    let opts = LogOptions {
        segment_bytes: 512,
        max_msg_size,
    };
    let log = TopicLog::open(&dir, TOPIC, opts).expect("open log");
    let end = log.end_pos();
    assert_eq!(end, log.recovered_end());
    assert_eq!(end, log.written_upto());
    let last_len = fs::metadata(segment_path(&dir, TOPIC, last.0))
        .expect("stat")
        .len();
    assert_eq!(
        end,
        last.0 + last_len,
        "end must be the last segment's repaired length"
    );
    assert!(last_len <= last.1.len() as u64);
    assert_eq!(
        &fs::read(segment_path(&dir, TOPIC, last.0)).expect("read")[..],
        &last.1[..last_len as usize],
        "open may only cut a tail off"
    );
    if two {
        assert_eq!(
            fs::read(segment_path(&dir, TOPIC, base0)).expect("read"),
            seg0,
            "older segment untouched"
        );
    }

    let mut r = log.reader();
    let all = read_all(&mut r, 0, usize::MAX, usize::MAX);
    let batched = read_all(&mut r, 0, 1 + usize::from(cfg >> 5), 64);
    assert_eq!(all, batched, "batched reads must see the same records");

    // Reopening without changes finds the same log.
    drop(log);
    let mut log = TopicLog::open(&dir, TOPIC, opts).expect("reopen log");
    assert_eq!(log.end_pos(), end, "reopen is idempotent");
    assert_eq!(read_all(&mut log.reader(), 0, usize::MAX, usize::MAX), all);

    // And it accepts appends at the end.
    let msg = LogMessage {
        timestamp: 1,
        attempts: 0,
        id: MessageId::from_u64(7),
        defer_until: 0,
        body: Bytes::from_static(b"appended"),
    };
    let msg = LogMessage {
        body: msg.body.slice(..(max_msg_size as usize).min(8)),
        ..msg
    };
    let a = log.append(std::slice::from_ref(&msg)).expect("append");
    assert_eq!(a.first, end);
    log.flush().expect("flush");
    let tail = read_all(&mut log.reader(), end, usize::MAX, usize::MAX);
    assert_eq!(
        tail,
        vec![(end, msg)],
        "the appended record reads back at the old end"
    );
    let _ = fs::remove_dir_all(&dir);
}

fn check_recovery(rec: &ChannelRecovery, log_end: u64) {
    assert!(
        rec.start <= log_end,
        "start {} past log end {log_end}",
        rec.start
    );
    let mut prev_end = None;
    for &(from, to) in rec.acked.ranges() {
        assert!(from < to, "empty ack range");
        assert!(
            from >= rec.start && to <= log_end,
            "ack range [{from}, {to}) outside [{}, {log_end}]",
            rec.start
        );
        if let Some(p) = prev_end {
            assert!(from > p, "ack ranges must be sorted and disjoint");
        }
        prev_end = Some(to);
    }
    for w in rec.deferred.windows(2) {
        assert!(w[0].pos < w[1].pos, "deferred sorted by position");
    }
    for d in &rec.deferred {
        assert!(d.pos >= rec.start && d.pos < log_end && !rec.acked.contains(d.pos));
    }
    for w in rec.attempts.windows(2) {
        assert!(w[0].0 < w[1].0, "attempts sorted by position");
    }
    for &(p, _) in &rec.attempts {
        assert!(p >= rec.start && p < log_end && !rec.acked.contains(p));
        assert!(
            !rec.deferred.iter().any(|d| d.pos == p),
            "attempts of a deferred position"
        );
    }
}

fn same_state(a: &ChannelRecovery, b: &ChannelRecovery) -> bool {
    a.start == b.start && a.acked == b.acked && a.deferred == b.deferred && a.attempts == b.attempts
}

/// A channel journal made of arbitrary bytes.
pub fn fuzz_store_journal(data: &[u8]) {
    let mut input = Input(data);
    let cfg = input.u8();
    let log_end = match cfg & 3 {
        0 => u64::MAX,
        1 => u64::from(input.u16()),
        2 => input.u64(),
        _ => 0,
    };
    let bytes = if cfg & 0x10 != 0 {
        framed(input)
    } else {
        input.rest().to_vec()
    };
    let dir = scratch_dir("store-journal");
    let path = journal_path(&dir, TOPIC, CHANNEL);
    fs::write(&path, &bytes).expect("write journal");
    let (mut j, rec) = ChannelJournal::open(&dir, TOPIC, CHANNEL, log_end)
        .expect("open journal")
        .expect("journal exists");
    check_recovery(&rec, log_end);
    let len = fs::metadata(&path).expect("stat").len();
    assert_eq!(j.size_bytes(), len);
    drop(j);
    let (_, again) = ChannelJournal::open(&dir, TOPIC, CHANNEL, log_end)
        .expect("reopen journal")
        .expect("journal exists");
    assert!(
        same_state(&rec, &again),
        "reopen changed the state:\n{rec:?}\n{again:?}"
    );
    assert!(again.corrupt_bytes <= rec.corrupt_bytes);
    // Compaction keeps the state and removes the corruption.
    let (mut j2, _) = ChannelJournal::open(&dir, TOPIC, CHANNEL, log_end)
        .expect("reopen journal")
        .expect("journal exists");
    j2.compact(rec.start, &rec.acked, &rec.deferred, &rec.attempts)
        .expect("compact");
    drop(j2);
    let (_, compacted) = ChannelJournal::open(&dir, TOPIC, CHANNEL, log_end)
        .expect("reopen compacted")
        .expect("journal exists");
    assert!(
        same_state(&rec, &compacted),
        "compaction changed the state:\n{rec:?}\n{compacted:?}"
    );
    assert_eq!(compacted.corrupt_bytes, 0);
    j = ChannelJournal::open(&dir, TOPIC, CHANNEL, log_end)
        .expect("reopen")
        .expect("exists")
        .0;
    j.sync().expect("sync");
    let _ = fs::remove_dir_all(&dir);
}

/// The journal's rules, restated plainly (see the crate docs).
#[derive(Default, Debug)]
struct Model {
    start: u64,
    acked: Vec<(u64, u64)>,
    deferred: BTreeMap<u64, (i64, u16)>,
    attempts: BTreeMap<u64, u16>,
}

impl Model {
    fn acked(&self, p: u64) -> bool {
        self.acked.iter().any(|&(f, t)| f <= p && p < t)
    }
    fn live(&self, p: u64) -> bool {
        p >= self.start && !self.acked(p)
    }
    fn cursor(&mut self, p: u64) {
        if p > self.start {
            self.start = p;
            self.deferred = self.deferred.split_off(&p);
            self.attempts = self.attempts.split_off(&p);
        }
    }
    fn ack_range(&mut self, from: u64, to: u64) {
        let from = from.max(self.start);
        if from < to {
            self.acked.push((from, to));
            self.deferred.retain(|&k, _| !(from..to).contains(&k));
            self.attempts.retain(|&k, _| !(from..to).contains(&k));
        }
    }
    fn defer(&mut self, p: u64, due: i64, n: u16) {
        if self.live(p) {
            self.deferred.insert(p, (due, n));
            self.attempts.remove(&p);
        }
    }
    fn set_attempts(&mut self, p: u64, n: u16) {
        if self.live(p) {
            match self.deferred.get_mut(&p) {
                Some(d) => d.1 = n,
                None => {
                    self.attempts.insert(p, n);
                }
            }
        }
    }
    fn ack_set(&self) -> AckSet {
        let mut s = AckSet::new();
        for &(f, t) in &self.acked {
            if t > self.start {
                s.insert_range(f.max(self.start), t);
            }
        }
        s
    }
}

/// A valid log, a journal driven through its API (with restarts and compactions), optional
/// damage to the log: `recover_channel` yields exactly the records the model says are owed.
pub fn fuzz_store_recover(data: &[u8]) {
    let mut input = Input(data);
    let cfg = input.u8();
    let dir = scratch_dir("store-recover");
    let opts = LogOptions {
        segment_bytes: 200 + u64::from(cfg & 0x3f) * 8,
        max_msg_size: 1 << 16,
    };
    let mut log = TopicLog::open(&dir, TOPIC, opts).expect("open log");
    let nmsgs = usize::from(input.u8() % 24);
    let mut msgs = Vec::new();
    for i in 0..nmsgs {
        let len = usize::from(input.u8() % 40);
        let defer_until = if input.u8() % 4 == 0 {
            1_000 + i as i64
        } else {
            0
        };
        msgs.push(LogMessage {
            timestamp: i as i64,
            attempts: 0,
            id: MessageId::from_u64(i as u64),
            defer_until,
            body: Bytes::copy_from_slice(input.bytes(len)),
        });
    }
    let appended = log.append(&msgs).expect("append");
    log.flush().expect("flush");
    let positions: Vec<u64> = appended
        .positions(msgs.iter().map(|m| m.body.len()))
        .collect();
    let mut j = ChannelJournal::create(&dir, TOPIC, CHANNEL, 0).expect("create journal");
    let mut m = Model::default();
    let pos_arg = |input: &mut Input| -> u64 {
        let k = input.u8();
        if positions.is_empty() || k == 0xff {
            u64::from(input.u16())
        } else {
            positions[usize::from(k) % positions.len()]
        }
    };
    let nops = usize::from(input.u8() % 32);
    for _ in 0..nops {
        match input.u8() % 8 {
            0 | 1 => {
                let p = pos_arg(&mut input);
                j.ack(p).expect("ack");
                m.ack_range(p, p + 1);
            }
            2 => {
                let (a, b) = (pos_arg(&mut input), pos_arg(&mut input));
                j.ack_range(a, b).expect("ack_range");
                m.ack_range(a, b);
            }
            3 => {
                let p = pos_arg(&mut input);
                let due = i64::from(input.u16());
                let n = input.u16();
                j.defer(p, due, n).expect("defer");
                m.defer(p, due, n);
            }
            4 => {
                let p = pos_arg(&mut input);
                let n = input.u16();
                j.attempts(p, n).expect("attempts");
                m.set_attempts(p, n);
            }
            5 => {
                let p = pos_arg(&mut input);
                j.cursor(p).expect("cursor");
                m.cursor(p);
            }
            6 => {
                let deferred: Vec<DeferredEntry> = m
                    .deferred
                    .iter()
                    .map(|(&pos, &(due_unix_ns, attempts))| DeferredEntry {
                        pos,
                        due_unix_ns,
                        attempts,
                    })
                    .collect();
                let attempts: Vec<(u64, u16)> = m.attempts.iter().map(|(&p, &n)| (p, n)).collect();
                j.compact(m.start, &m.ack_set(), &deferred, &attempts)
                    .expect("compact");
            }
            _ => {
                // Restart: flush, reopen both files.
                j.flush().expect("flush journal");
                drop(j);
                log.close().expect("close log");
                log = TopicLog::open(&dir, TOPIC, opts).expect("reopen log");
                let end = log.recovered_end();
                j = ChannelJournal::open(&dir, TOPIC, CHANNEL, end)
                    .expect("reopen journal")
                    .expect("journal exists")
                    .0;
                // The journal forgets what lies past the log's end; so does the model.
                m.start = m.start.min(end);
                m.deferred.split_off(&end);
                m.attempts.split_off(&end);
            }
        }
    }
    j.flush().expect("flush journal");
    drop(j);
    log.close().expect("close log");
    // Optional damage to the log: overwrite a few bytes.
    let ndamage = input.u8() % 4;
    for _ in 0..ndamage {
        let bases = crate::list_dir(&dir)
            .expect("list")
            .topics
            .remove(TOPIC)
            .unwrap_or_default();
        if bases.is_empty() {
            break;
        }
        let base = bases[usize::from(input.u8()) % bases.len()];
        let path = segment_path(&dir, TOPIC, base);
        let mut bytes = fs::read(&path).expect("read segment");
        if bytes.is_empty() {
            continue;
        }
        let at = usize::from(input.u16()) % bytes.len();
        bytes[at] ^= input.u8() | 1;
        fs::write(&path, bytes).expect("write segment");
    }

    let log = TopicLog::open(&dir, TOPIC, opts).expect("reopen log");
    let log_end = log.recovered_end();
    let (_, rec) = ChannelJournal::open(&dir, TOPIC, CHANNEL, log_end)
        .expect("open journal")
        .expect("journal exists");
    check_recovery(&rec, log_end);
    // The journal's replay agrees with the model (below the surviving log end).
    assert_eq!(rec.start, m.start.min(log_end), "start");
    for &p in &positions {
        if p < log_end {
            assert_eq!(
                rec.acked.contains(p) || p < rec.start,
                m.acked(p) || p < m.start,
                "acked({p})"
            );
        }
    }

    let reader = log.reader();
    let max_records = 1 + usize::from(cfg >> 6);
    let mut replay = recover_channel(reader.clone(), &rec, max_records, 50);
    let mut got = Vec::new();
    while let Some(batch) = replay.next_batch().expect("replay") {
        assert!(!batch.is_empty() && batch.len() <= max_records);
        got.extend(batch);
    }
    let mut r = reader;
    let expected: Vec<(u64, LogMessage, Disposition)> =
        read_all(&mut r, rec.start, usize::MAX, usize::MAX)
            .into_iter()
            .filter(|(p, _)| !m.acked(*p) && *p >= m.start)
            .map(|(p, mut msg)| {
                let disp = match m.deferred.get(&p) {
                    Some(&(due, n)) => {
                        msg.attempts = n;
                        Disposition::Deferred { due_unix_ns: due }
                    }
                    None => {
                        if let Some(&n) = m.attempts.get(&p) {
                            msg.attempts = n;
                        }
                        if msg.defer_until > 0 {
                            Disposition::Deferred {
                                due_unix_ns: msg.defer_until,
                            }
                        } else {
                            Disposition::Ready
                        }
                    }
                };
                (p, msg, disp)
            })
            .collect();
    let got: Vec<(u64, LogMessage, Disposition)> = got
        .into_iter()
        .map(|r| (r.pos, r.msg, r.disposition))
        .collect();
    assert_eq!(got, expected, "recovered set differs from the model");
    assert_eq!(replay.delivered(), expected.len() as u64);
    assert_eq!(replay.lowest_unacked(), expected.first().map(|e| e.0));
    let _ = fs::remove_dir_all(&dir);
}
