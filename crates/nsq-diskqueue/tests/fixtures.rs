//! Reads data directories written by the real Go nsqd 1.3.0 (kept in the repository at
//! `crates/nsqd/tests/fixtures/go-nsqd-1.3.0`, see its README.md). The fixtures are read-only,
//! so every test copies the directory to a temp dir first.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use nsq_diskqueue::{DiskQueue, DiskQueueOptions, Metadata};
use nsq_protocol::message::Message;

fn fixtures_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nsqd/tests/fixtures/go-nsqd-1.3.0");
    assert!(
        root.is_dir(),
        "Go nsqd 1.3.0 fixtures not found at {} (they are part of the repository)",
        root.display()
    );
    root
}

/// Copies fixture directory `which` into a fresh temp dir (files made writable).
fn copy_fixture(which: &str) -> tempfile::TempDir {
    let src = fixtures_root().join(which);
    let dst = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.path().join(entry.file_name());
        fs::copy(entry.path(), &to).unwrap();
        let mut perms = fs::metadata(&to).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(&to, perms).unwrap();
    }
    dst
}

/// nsqd's options for these runs: `--max-bytes-per-file=4096` for clean-shutdown (the default
/// 100 MiB for sigkill), min 26, max = default `--max-msg-size` + 26.
fn nsqd_opts(max_bytes_per_file: i64) -> DiskQueueOptions {
    DiskQueueOptions {
        max_bytes_per_file,
        min_msg_size: 26,
        max_msg_size: 1024 * 1024 + 26,
        sync_every: 2500,
        sync_timeout: Duration::from_secs(2),
    }
}

fn drain_bodies(q: &mut DiskQueue) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(rec) = q.read_next().unwrap() {
        out.push(body(rec));
    }
    out
}

fn body(rec: Bytes) -> String {
    let msg = Message::decode(rec).expect("valid nsq message payload");
    String::from_utf8(msg.body.to_vec()).unwrap()
}

/// The order Go nsqd wrote the channel's records in: with `--mem-queue-size=5` messages 1-5 sat
/// in the channel's memory queue while 6-120 overflowed to disk; at SIGTERM the memory queue was
/// flushed after them, then the deferred `later`. FIFO over the files gives exactly this order.
fn billing_order() -> Vec<String> {
    let order = |i: usize| format!("order-{i:04} {}", "x".repeat(40));
    (6..=120)
        .chain(1..=5)
        .map(order)
        .chain(std::iter::once("later".to_string()))
        .collect()
}

fn no_bad_files(dir: &Path) {
    let bad: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".bad"))
        .collect();
    assert!(bad.is_empty(), "unexpected bad files: {bad:?}");
}

#[test]
fn clean_shutdown_orders_billing_yields_121_in_file_order() {
    let dir = copy_fixture("clean-shutdown");
    let mut q = DiskQueue::open(dir.path(), "orders:billing", nsqd_opts(4096)).unwrap();
    assert_eq!(q.depth(), 121);
    let bodies = drain_bodies(&mut q);
    assert_eq!(bodies, billing_order());
    assert_eq!(q.depth(), 0);
    no_bad_files(dir.path());
    // the two completed segment files were deleted; file 2 is still the write file
    assert!(!q.data_file_path(0).exists());
    assert!(!q.data_file_path(1).exists());
    assert!(q.data_file_path(2).exists());
    q.close().unwrap();
    assert_eq!(
        fs::read_to_string(q.meta_file_path()).unwrap(),
        "0\n2,1655\n2,1655\n"
    );
}

#[test]
fn clean_shutdown_shipping_reopens_with_depth_121_and_writes_continue() {
    let dir = copy_fixture("clean-shutdown");
    let mut q = DiskQueue::open(dir.path(), "orders:shipping", nsqd_opts(4096)).unwrap();
    assert_eq!(
        q.metadata(),
        Metadata {
            depth: 121,
            read_file_num: 0,
            read_pos: 0,
            write_file_num: 2,
            write_pos: 1655
        }
    );
    // appending to Go's write file continues exactly where Go stopped
    let mut extra = Vec::new();
    extra.extend_from_slice(&0i64.to_be_bytes());
    extra.extend_from_slice(&1u16.to_be_bytes());
    extra.extend_from_slice(b"0123456789abcdef");
    extra.extend_from_slice(b"from-rust");
    q.put(&extra).unwrap();
    q.close().unwrap();
    assert_eq!(
        fs::read_to_string(q.meta_file_path()).unwrap(),
        "122\n0,0\n2,1694\n"
    );
    let mut q = DiskQueue::open(dir.path(), "orders:shipping", nsqd_opts(4096)).unwrap();
    let bodies = drain_bodies(&mut q);
    let mut want = billing_order();
    want.push("from-rust".to_string());
    assert_eq!(bodies, want);
}

#[test]
fn clean_shutdown_nochannels_yields_pending_1_to_7() {
    // on disk in Go's write order: 6 and 7 overflowed, 1-5 were flushed from memory at exit
    let dir = copy_fixture("clean-shutdown");
    let mut q = DiskQueue::open(dir.path(), "nochannels", nsqd_opts(4096)).unwrap();
    assert_eq!(q.depth(), 7);
    let want: Vec<String> = [6, 7, 1, 2, 3, 4, 5]
        .iter()
        .map(|i| format!("pending-{i}"))
        .collect();
    assert_eq!(drain_bodies(&mut q), want);
    assert_eq!(q.depth(), 0);
    no_bad_files(dir.path());
}

#[test]
fn clean_shutdown_audit_yields_a1_a2_a3() {
    let dir = copy_fixture("clean-shutdown");
    let mut q = DiskQueue::open(dir.path(), "audit", nsqd_opts(4096)).unwrap();
    assert_eq!(q.depth(), 3);
    assert_eq!(drain_bodies(&mut q), vec!["a1", "a2", "a3"]);
    // the channel queue Go left behind is empty
    let mut ch = DiskQueue::open(dir.path(), "audit:archive", nsqd_opts(4096)).unwrap();
    assert_eq!(ch.depth(), 0);
    assert!(ch.read_next().unwrap().is_none());
    // and the empty topic queue of `orders`
    let mut t = DiskQueue::open(dir.path(), "orders", nsqd_opts(4096)).unwrap();
    assert!(t.read_next().unwrap().is_none());
    no_bad_files(dir.path());
}

#[test]
fn sigkill_jobs_workers_yields_all_50() {
    let dir = copy_fixture("sigkill");
    let mut q = DiskQueue::open(dir.path(), "jobs:workers", nsqd_opts(100 * 1024 * 1024)).unwrap();
    // stale metadata: depth 49, writePos 1813 < 1850 bytes on disk -> writer moves to file 1
    assert_eq!(
        q.metadata(),
        Metadata {
            depth: 49,
            read_file_num: 0,
            read_pos: 0,
            write_file_num: 1,
            write_pos: 0
        }
    );
    let bodies = drain_bodies(&mut q);
    let want: Vec<String> = (1..=50).map(|i| format!("job-{i:03}")).collect();
    assert_eq!(bodies, want);
    assert_eq!(q.depth(), 0, "depth -1 at the tail is reset to 0, as in Go");
    no_bad_files(dir.path());
    // the stray tmp files are still there, untouched
    assert!(dir
        .path()
        .join("jobs:workers.diskqueue.meta.dat.1124701036104352050.tmp")
        .exists());
    q.close().unwrap();
    assert_eq!(
        fs::read_to_string(q.meta_file_path()).unwrap(),
        "0\n1,0\n1,0\n"
    );
}

#[test]
fn sigkill_topic_queue_resumes_at_its_read_position() {
    // topic `jobs`: metadata 1 / 0,1813 / 0,1850 matches the file size, so no repair; the one
    // unread record is job-050
    let dir = copy_fixture("sigkill");
    let mut q = DiskQueue::open(dir.path(), "jobs", nsqd_opts(100 * 1024 * 1024)).unwrap();
    assert_eq!(q.depth(), 1);
    assert_eq!(drain_bodies(&mut q), vec!["job-050"]);
    assert_eq!(q.depth(), 0);
    no_bad_files(dir.path());
}
