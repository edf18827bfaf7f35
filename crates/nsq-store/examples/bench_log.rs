//! Micro-benchmark of the topic log: 200-byte messages in batches of 200.
//!
//! `cargo run --release -p nsq-store --example bench_log [-- DIR [MESSAGES]]`
//! (DIR defaults to a temporary directory under /tmp; MESSAGES to 2,000,000).

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nsq_protocol::message::MessageId;
use nsq_store::{
    Appended, LogMessage, LogOptions, LogWriterThread, StoreError, SyncPolicy, TopicLog,
};

const BODY: usize = 200;
const BATCH: usize = 200;

fn batch(start: u64) -> Vec<LogMessage> {
    let body = Bytes::from(vec![b'x'; BODY * BATCH]);
    (0..BATCH as u64)
        .map(|i| LogMessage {
            timestamp: 1,
            attempts: 0,
            id: MessageId::from_u64(start + i),
            defer_until: 0,
            body: body.slice(i as usize * BODY..(i as usize + 1) * BODY),
        })
        .collect()
}

fn report(what: &str, msgs: u64, bytes: u64, d: Duration) {
    let s = d.as_secs_f64();
    println!(
        "{what:<48} {:>10.0} msg/s {:>8.1} MB/s  ({msgs} msgs in {s:.2}s)",
        msgs as f64 / s,
        bytes as f64 / s / 1e6
    );
}

fn run_append(dir: &Path, topic: &str, total: u64, sync: bool) -> TopicLog {
    let mut log = TopicLog::open(dir, topic, LogOptions::default()).unwrap();
    let msgs = batch(0);
    let t0 = Instant::now();
    let mut n = 0;
    while n < total {
        log.append(&msgs).unwrap();
        if sync {
            log.sync().unwrap();
        } else {
            log.flush().unwrap();
        }
        n += BATCH as u64;
    }
    log.sync().unwrap();
    let what = if sync {
        "append+flush+fdatasync per batch of 200"
    } else {
        "append+flush per batch of 200 (no fsync)"
    };
    report(what, n, log.end_pos(), t0.elapsed());
    log
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tmp;
    let dir = match args.get(1) {
        Some(d) => Path::new(d).to_path_buf(),
        None => {
            tmp = tempfile::tempdir_in("/tmp").unwrap();
            tmp.path().to_path_buf()
        }
    };
    let total: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(2_000_000);
    println!(
        "dir {}, {BODY}-byte bodies, batches of {BATCH}",
        dir.display()
    );

    let log = run_append(&dir, "nosync", total, false);
    let mut reader = log.reader();
    let t0 = Instant::now();
    let (mut pos, mut n, mut bytes) = (0, 0u64, 0u64);
    loop {
        let b = reader.read_from(pos, 1000, 256 * 1024).unwrap();
        if b.records.is_empty() {
            break;
        }
        n += b.records.len() as u64;
        bytes += b.next_pos - pos;
        pos = b.next_pos;
    }
    report("read (batches of <=1000 / 256 KiB)", n, bytes, t0.elapsed());
    drop(log);

    run_append(&dir, "sync", total / 10, true);

    // Group commit: 16 publishers, each waiting for its batch to be fsynced.
    for publishers in [1u64, 16] {
        let log =
            TopicLog::open(&dir, &format!("group{publishers}"), LogOptions::default()).unwrap();
        let reader = log.reader();
        let w: Arc<LogWriterThread<mpsc::Sender<Result<Appended, StoreError>>>> = Arc::new(
            LogWriterThread::spawn(
                "bench-writer",
                SyncPolicy {
                    every: 1,
                    timeout: Duration::from_secs(2),
                },
            )
            .unwrap(),
        );
        let id = w.add_topic(log);
        let per = total / 10 / publishers;
        let t0 = Instant::now();
        let hs: Vec<_> = (0..publishers)
            .map(|p| {
                let w = w.clone();
                std::thread::spawn(move || {
                    let mut n = 0;
                    while n < per {
                        let (tx, rx) = mpsc::channel();
                        w.append(id, batch(p * per + n), tx);
                        rx.recv().unwrap().unwrap();
                        n += BATCH as u64;
                    }
                    n
                })
            })
            .collect();
        let n: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
        let d = t0.elapsed();
        report(
            &format!("writer thread, sync-every=1, {publishers} publisher(s)"),
            n,
            reader.written_upto(),
            d,
        );
    }
}
