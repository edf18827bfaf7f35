//! Restarts: `nsqd.dat`, messages flushed at clean shutdown, Go nsqd 1.3.0 data directories,
//! the data-path lock, and damaged metadata.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_until, TestNsqd, READ_TIMEOUT};

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/go-nsqd-1.3.0")
        .join(name);
    assert!(p.is_dir(), "fixture {} not found", p.display());
    p
}

/// Copies a read-only fixture into a fresh writable temp dir.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        let to = dir.path().join(e.file_name());
        std::fs::copy(e.path(), &to).unwrap();
        let mut perm = std::fs::metadata(&to).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&to, perm).unwrap();
    }
    dir
}

fn bodies(nsqd: &TestNsqd, topic: &str, channel: &str, n: usize) -> Vec<String> {
    let mut c = nsqd.client();
    c.sub_ok(topic, channel, 1000);
    let mut out = Vec::new();
    for _ in 0..n {
        let m = c.read_message(READ_TIMEOUT);
        out.push(String::from_utf8_lossy(&m.body).into_owned());
        c.fin(&m.id);
    }
    c.expect_no_frame(Duration::from_millis(200));
    out
}

#[test]
fn clean_restart_keeps_topics_channels_paused_state_and_messages() {
    let mut nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.sub_ok("keep", "work", 10);
    let mut p = nsqd.client();
    for i in 0..5 {
        p.pub_ok("keep", format!("k{i}").as_bytes());
    }
    // Two in flight (one delivered twice already), the rest queued.
    let m0 = c.read_message(READ_TIMEOUT);
    c.req(&m0.id, 0);
    let _ = (0..5).map(|_| c.read_message(READ_TIMEOUT)).count();
    assert_eq!(
        nsqd.http_post("/topic/create?topic=empty_topic", b"")
            .status,
        200
    );
    assert_eq!(
        nsqd.http_post("/channel/create?topic=keep&channel=paused", b"")
            .status,
        200
    );
    assert_eq!(
        nsqd.http_post("/channel/pause?topic=keep&channel=paused", b"")
            .status,
        200
    );
    p.pub_ok("keep", b"k5");
    let mut e = nsqd.client();
    e.sub_ok("keep", "gone#ephemeral", 0);
    drop((c, p, e));
    nsqd.terminate();
    nsqd.restart(None);

    let s = nsqd.stats("");
    let names: Vec<&str> = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["empty_topic", "keep"]);
    let paused = nsqd.channel_stats("keep", "paused").unwrap();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["depth"], 1);
    assert!(nsqd.channel_stats("keep", "gone#ephemeral").is_none());
    let work = nsqd.channel_stats("keep", "work").unwrap();
    assert_eq!(
        work["depth"], 6,
        "in-flight messages were written back: {work}"
    );

    let mut c = nsqd.client();
    c.sub_ok("keep", "work", 10);
    let mut got = Vec::new();
    for _ in 0..6 {
        let m = c.read_message(READ_TIMEOUT);
        let b = String::from_utf8_lossy(&m.body).into_owned();
        if b == "k0" {
            assert_eq!(m.attempts, 3, "attempts survive the restart");
        }
        got.push(b);
        c.fin(&m.id);
    }
    got.sort();
    assert_eq!(got, ["k0", "k1", "k2", "k3", "k4", "k5"]);
}

#[test]
fn takes_over_go_clean_shutdown_fixture() {
    let dir = copy_fixture("clean-shutdown");
    let nsqd = TestNsqd::start_in(dir.path(), &[]);
    let shipping = nsqd.channel_stats("orders", "shipping").unwrap();
    assert_eq!(
        (shipping["paused"].clone(), shipping["depth"].clone()),
        (json!(true), json!(121))
    );
    let audit = nsqd.topic_stats("audit").unwrap();
    assert_eq!(
        (audit["paused"].clone(), audit["depth"].clone()),
        (json!(true), json!(3))
    );
    assert_eq!(nsqd.topic_stats("nochannels").unwrap()["depth"], 7);

    // Go flushed its memory queue (messages 1-5) after the disk queue at shutdown, so the
    // files hold 6..120, then 1..5, then the deferred `later`.
    let got = bodies(&nsqd, "orders", "billing", 121);
    let mut want: Vec<String> = (6..=120)
        .chain(1..=5)
        .map(|i| format!("order-{i:04} {}", "x".repeat(40)))
        .collect();
    want.push("later".into());
    assert_eq!(got, want);

    let mut got = bodies(&nsqd, "nochannels", "first", 7);
    got.sort();
    assert_eq!(
        got,
        (1..=7).map(|i| format!("pending-{i}")).collect::<Vec<_>>()
    );
}

#[test]
fn takes_over_go_sigkill_fixture() {
    let dir = copy_fixture("sigkill");
    let nsqd = TestNsqd::start_in(dir.path(), &[]);
    let mut c = nsqd.client();
    c.sub_ok("jobs", "workers", 100);
    let mut seen = std::collections::BTreeSet::new();
    while let Some(f) = c.try_read_frame(Duration::from_millis(500)).unwrap() {
        assert_eq!(
            f.frame_type,
            nsq_protocol::FrameType::Message,
            "{}",
            crate::harness::describe(&f)
        );
        let m = nsq_protocol::Message::decode(f.data).unwrap();
        seen.insert(String::from_utf8_lossy(&m.body).into_owned());
        c.fin(&m.id);
    }
    let want: std::collections::BTreeSet<String> =
        (1..=50).map(|i| format!("job-{i:03}")).collect();
    assert_eq!(seen, want, "every acknowledged job is delivered");
}

#[test]
fn second_instance_on_same_data_path_is_refused() {
    let first = TestNsqd::start(&[]);
    let out = std::process::Command::new(crate::harness::nsqd_bin())
        .args([
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            &format!("--data-path={}", first.data_path().display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("possibly in use by another instance"), "{err}");
    // The first keeps serving.
    first.client().pub_ok("still", b"ok");
}

#[test]
fn garbled_metadata_is_set_aside_and_daemon_starts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nsqd.dat"), b"{not json").unwrap();
    let nsqd = TestNsqd::start_in(dir.path(), &[]);
    nsqd.wait_for_log("failed to parse metadata", Duration::from_secs(5));
    assert!(dir.path().join("nsqd.dat.bad").exists());
    nsqd.client().pub_ok("fresh", b"x");
}

#[test]
fn metadata_follows_creation_and_deleted_topics_stay_deleted() {
    let mut nsqd = TestNsqd::start(&[]);
    let mut p = nsqd.client();
    p.pub_ok("short_lived", b"doomed");
    p.pub_ok("kept", b"k");
    let meta = nsqd.data_path().join("nsqd.dat");
    wait_until(
        Duration::from_secs(5),
        "nsqd.dat lists the new topics",
        || {
            std::fs::read_to_string(&meta)
                .map(|s| s.contains("\"short_lived\"") && s.contains("\"kept\""))
                .unwrap_or(false)
        },
    );
    nsqd.terminate();
    nsqd.restart(None);
    assert_eq!(nsqd.topic_stats("short_lived").unwrap()["depth"], 1);
    assert_eq!(
        nsqd.http_post("/topic/delete?topic=short_lived", b"")
            .status,
        200
    );
    // Killed right after: the delete must still hold.
    wait_until(Duration::from_secs(5), "nsqd.dat drops the topic", || {
        std::fs::read_to_string(&meta)
            .map(|s| !s.contains("short_lived"))
            .unwrap_or(false)
    });
    nsqd.kill();
    nsqd.restart(None);
    assert!(nsqd.topic_stats("short_lived").is_none());
    assert_eq!(nsqd.topic_stats("kept").unwrap()["depth"], 1);
}

#[test]
fn unusable_data_path_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = std::process::Command::new(crate::harness::nsqd_bin())
        .args([
            "--tcp-address=127.0.0.1:0",
            "--http-address=127.0.0.1:0",
            &format!("--data-path={}", file.display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open data path"), "{err}");
}
