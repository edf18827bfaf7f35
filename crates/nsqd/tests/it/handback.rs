//! Hand-back to Go: a clean stop leaves a data directory that Go nsqd 1.3.0 takes over with
//! every queued message — in memory, spilled to the topic log (default mode with a small
//! `--mem-queue-size`) or durable (`--mem-queue-size=0`); of two channels, a channel-less
//! topic and a paused topic; deferred and in flight — and nsq-rs takes it back from Go.
//!
//! Each message is checked to arrive exactly once per channel: read from the go-diskqueue
//! files with our reader, delivered by the real Go nsqd (when `../shared/reference/` is beside
//! the repository; otherwise that part says it did not run), and by nsq-rs again, both from its
//! own export (the hand-back marker: topic logs, no duplicates) and after Go consumed part of it
//! (stale logs dropped).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nsq_protocol::{FrameType, Message};

use crate::harness::{go_nsqd_bin, wait_until, RawClient, TestNsqd};

/// Body sets per queue (`topic` or `topic:channel`), sorted.
type Expected = BTreeMap<String, Vec<String>>;

fn post(n: &TestNsqd, path: &str) {
    let r = n.http_post(path, b"");
    assert_eq!(r.status, 200, "POST {path}: {}", r.text());
}

fn mpub(c: &mut RawClient, topic: &str, bodies: &[String]) {
    c.mpub(topic, bodies);
    c.expect_ok();
}

fn batch(prefix: &str, from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("{prefix}-{i:04}"))
        .collect()
}

/// Publishes `prefix` batches of 10 until `spilled` holds (at most 30 batches).
fn publish_until(
    c: &mut RawClient,
    topic: &str,
    prefix: &str,
    all: &mut Vec<String>,
    mut spilled: impl FnMut() -> bool,
) {
    for round in 0..30 {
        let b = batch(prefix, round * 10, 10);
        mpub(c, topic, &b);
        all.extend(b);
        if round >= 2 && spilled() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{topic}: nothing went to the topic log");
}

fn backend_depth(n: &TestNsqd, topic: &str, channel: Option<&str>) -> u64 {
    let s = match channel {
        Some(c) => n.channel_stats(topic, c),
        None => n.topic_stats(topic),
    };
    s.and_then(|s| s["backend_depth"].as_u64()).unwrap_or(0)
}

/// Fills a node: topic `hb` with channels `a` (3 in flight at the stop) and `b` (5 FINed),
/// 2 DPUBs; channel-less `lone`; paused `pz` with channel `c`. In the default mode each of
/// them is published to until part of it is only in the topic log. Returns what each queue
/// must hold, and the consumer that keeps `hb/a`'s messages in flight (drop it after the stop).
fn fill(n: &TestNsqd, durable: bool) -> (Expected, RawClient) {
    post(n, "/topic/create?topic=hb");
    post(n, "/channel/create?topic=hb&channel=a");
    post(n, "/channel/create?topic=hb&channel=b");
    post(n, "/topic/create?topic=pz");
    post(n, "/channel/create?topic=pz&channel=c");
    post(n, "/topic/pause?topic=pz");
    let mut p = n.client();
    // Deferred for 2 s: still deferred at the stop, ready soon after any restart.
    let deferred = ["hb-dpub-0".to_string(), "hb-dpub-1".to_string()];
    for d in &deferred {
        p.dpub("hb", 2000, d.as_bytes());
        p.expect_ok();
    }
    let mut hb = Vec::new();
    let mut lone = Vec::new();
    let mut pz = Vec::new();
    if durable {
        for (topic, all) in [("hb", &mut hb), ("lone", &mut lone), ("pz", &mut pz)] {
            let b = batch(topic, 0, 40);
            mpub(&mut p, topic, &b);
            all.extend(b);
        }
    } else {
        publish_until(&mut p, "hb", "hb", &mut hb, || {
            backend_depth(n, "hb", Some("a")) > 0 && backend_depth(n, "hb", Some("b")) > 0
        });
        publish_until(&mut p, "lone", "lone", &mut lone, || {
            backend_depth(n, "lone", None) > 0
        });
        publish_until(&mut p, "pz", "pz", &mut pz, || {
            backend_depth(n, "pz", None) > 0
        });
    }
    // Three in flight on hb/a, five FINed on hb/b.
    let mut a = n.client();
    a.sub_ok("hb", "a", 3);
    for _ in 0..3 {
        a.read_message(Duration::from_secs(5));
    }
    let mut b = n.client();
    b.sub_ok("hb", "b", 5);
    let mut fined = Vec::new();
    let msgs: Vec<Message> = (0..5)
        .map(|_| b.read_message(Duration::from_secs(5)))
        .collect();
    // No more credit before the FINs, so nothing else goes in flight.
    b.rdy(0);
    for m in msgs {
        fined.push(String::from_utf8(m.body.to_vec()).unwrap());
        b.fin(&m.id);
    }
    b.cls();
    wait_until(Duration::from_secs(5), "hb/b FINs applied", || {
        n.channel_stats("hb", "b")
            .is_some_and(|s| s["in_flight_count"].as_u64() == Some(0))
    });
    let mut all_hb: Vec<String> = hb.iter().chain(&deferred).cloned().collect();
    all_hb.sort();
    let mut hb_b = all_hb.clone();
    hb_b.retain(|m| !fined.contains(m));
    let mut exp = Expected::new();
    exp.insert("hb:a".into(), all_hb);
    exp.insert("hb:b".into(), hb_b);
    lone.sort();
    exp.insert("lone".into(), lone);
    pz.sort();
    exp.insert("pz".into(), pz);
    exp.insert("pz:c".into(), Vec::new());
    (exp, a)
}

/// Every unread record of go-diskqueue `name` in `dir`, as sorted bodies.
fn read_queue(dir: &Path, name: &str) -> Vec<String> {
    let s = nsq_diskqueue::scan(dir, name, 26, 1 << 20).unwrap();
    assert!(s.problems.is_empty(), "{name}: {:?}", s.problems);
    let mut v: Vec<String> = s
        .records
        .into_iter()
        .map(|r| String::from_utf8(Message::decode(r).unwrap().body.to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

/// Subscribes to `topic/channel`, FINs `want` messages (waiting up to 20 s: deferred ones
/// come late) and checks nothing more arrives. Sorted bodies.
fn consume(n: &TestNsqd, topic: &str, channel: &str, want: usize) -> Vec<String> {
    let mut c = n.client();
    c.sub_ok(topic, channel, 50);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_until = None;
    loop {
        if out.len() >= want {
            let q = *quiet_until.get_or_insert_with(|| Instant::now() + Duration::from_millis(700));
            if Instant::now() >= q {
                break;
            }
        } else if Instant::now() >= deadline {
            break;
        }
        let f = match c.try_read_frame(Duration::from_millis(100)).unwrap() {
            Some(f) => f,
            None => continue,
        };
        match f.frame_type {
            FrameType::Message => {
                let m = Message::decode(f.data).unwrap();
                out.push(String::from_utf8(m.body.to_vec()).unwrap());
                c.fin(&m.id);
            }
            FrameType::Response if &f.data[..] == b"_heartbeat_" => c.nop(),
            _ => panic!("{topic}/{channel}: unexpected frame {:?}", f.frame_type),
        }
    }
    c.cls();
    out.sort();
    out
}

fn assert_same(what: &str, got: &[String], want: &[String]) {
    let dup: Vec<&String> = got
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| &w[0])
        .collect();
    assert!(dup.is_empty(), "{what}: delivered twice: {dup:?}");
    let missing: Vec<&String> = want.iter().filter(|m| !got.contains(m)).collect();
    let extra: Vec<&String> = got.iter().filter(|m| !want.contains(m)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} missing {missing:?}, {} unexpected {extra:?}",
        missing.len(),
        extra.len()
    );
}

/// Delivers everything `exp` says the node holds, exactly once per channel: `lone` to a new
/// channel, `pz` after unpausing.
fn consume_all(n: &TestNsqd, exp: &Expected, who: &str) {
    for (q, ch) in [("hb:a", ("hb", "a")), ("hb:b", ("hb", "b"))] {
        let got = consume(n, ch.0, ch.1, exp[q].len());
        assert_same(&format!("{who} {q}"), &got, &exp[q]);
    }
    let got = consume(n, "lone", "first", exp["lone"].len());
    assert_same(&format!("{who} lone"), &got, &exp["lone"]);
    post(n, "/topic/unpause?topic=pz");
    let got = consume(n, "pz", "c", exp["pz"].len());
    assert_same(&format!("{who} pz:c"), &got, &exp["pz"]);
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.path().join(e.file_name())).unwrap();
    }
    to
}

fn handback(args: &[&str], durable: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNsqd::start_in(dir.path(), args);
    let (exp, inflight) = fill(&n, durable);
    assert!(n.terminate().success());
    drop(inflight);
    n.wait_for_log(
        "Go nsqd 1.3 can take this directory over",
        Duration::from_secs(1),
    );

    // 1. Our go-diskqueue reader: every queue holds exactly its messages.
    for (q, want) in &exp {
        assert_same(
            &format!("go-diskqueue file {q}"),
            &read_queue(dir.path(), q),
            want,
        );
    }

    // 2. nsq-rs from its own export (on a copy): topic logs plus queue heads, no duplicates.
    let copy = copy_dir(dir.path());
    let again = TestNsqd::start_in(copy.path(), args);
    again.wait_for_log("nsq-rs's own export", Duration::from_secs(1));
    consume_all(&again, &exp, "nsq-rs restarted");
    drop(again);

    // 3. Go nsqd 1.3.0 takes the directory over, consumes hb/a and part of hb/b; nsq-rs takes
    //    it back (stale logs dropped) and delivers the rest; Go takes over once more.
    let Some(go) = go_nsqd_bin() else {
        eprintln!(
            "NOT RUN: the Go nsqd 1.3.0 part of this test (../shared/reference/go-nsq-1.3.0-linux-amd64/nsqd is not beside the repository)"
        );
        return;
    };
    let mut g = TestNsqd::start_bin(&go, dir.path(), &[]);
    let got = consume(&g, "hb", "a", exp["hb:a"].len());
    assert_same("Go nsqd hb:a", &got, &exp["hb:a"]);
    let mut half = g.client();
    half.sub_ok("hb", "b", 10);
    let mut taken = Vec::new();
    let msgs: Vec<Message> = (0..10)
        .map(|_| half.read_message(Duration::from_secs(5)))
        .collect();
    half.rdy(0);
    for m in msgs {
        taken.push(String::from_utf8(m.body.to_vec()).unwrap());
        half.fin(&m.id);
    }
    half.cls();
    wait_until(Duration::from_secs(5), "Go applied the FINs", || {
        g.channel_stats("hb", "b")
            .is_some_and(|s| s["in_flight_count"].as_u64() == Some(0))
    });
    assert!(g.terminate().success());
    drop(half);

    let mut rest = exp.clone();
    rest.insert("hb:a".into(), Vec::new());
    rest.get_mut("hb:b").unwrap().retain(|m| !taken.contains(m));
    let mut back = TestNsqd::start_in(dir.path(), args);
    back.wait_for_log("Go nsqd ran on this directory", Duration::from_secs(1));
    consume_all(&back, &rest, "nsq-rs after Go");
    // New messages, partly spilled in the default mode, go back to Go.
    let mut p = back.client();
    let mut round2 = Vec::new();
    for i in 0..3 {
        let b = batch("round2", i * 10, 10);
        mpub(&mut p, "hb", &b);
        round2.extend(b);
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(p);
    assert!(back.terminate().success());
    let mut g = TestNsqd::start_bin(&go, dir.path(), &[]);
    for ch in ["a", "b"] {
        let got = consume(&g, "hb", ch, round2.len());
        assert_same(&format!("Go nsqd again hb:{ch}"), &got, &round2);
    }
    assert!(g.terminate().success());
}

#[test]
fn default_mode_spilled_messages_are_handed_back_to_go() {
    handback(&["--mem-queue-size=5"], false);
}

#[test]
fn durable_mode_messages_are_handed_back_to_go() {
    handback(&["--mem-queue-size=0"], true);
}

/// `nsqd --export-go-data` after a SIGKILL: what the topic logs hold (durable mode: every
/// acknowledged message) goes to go-diskqueue files, and the node is not served meanwhile.
#[test]
fn export_go_data_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = TestNsqd::start_in(dir.path(), &["--mem-queue-size=0"]);
    post(&n, "/topic/create?topic=crash");
    post(&n, "/channel/create?topic=crash&channel=x");
    let mut p = n.client();
    let bodies = batch("crash", 0, 100);
    mpub(&mut p, "crash", &bodies);
    n.kill();
    drop(p);
    assert!(read_queue(dir.path(), "crash:x").is_empty());
    let out = std::process::Command::new(crate::harness::nsqd_bin())
        .arg("--export-go-data")
        .arg(format!("--data-path={}", dir.path().display()))
        .arg("--mem-queue-size=0")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("listening on"), "{log}");
    assert!(
        log.contains("Go nsqd 1.3 can take this directory over"),
        "{log}"
    );
    assert_same(
        "exported crash:x",
        &read_queue(dir.path(), "crash:x"),
        &bodies,
    );
    // A second export of the same directory gives the same files.
    let out = std::process::Command::new(crate::harness::nsqd_bin())
        .arg("--export-go-data")
        .arg(format!("--data-path={}", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same(
        "exported twice crash:x",
        &read_queue(dir.path(), "crash:x"),
        &bodies,
    );
    if let Some(go) = go_nsqd_bin() {
        let g = TestNsqd::start_bin(&go, dir.path(), &[]);
        assert_same("Go nsqd crash:x", &consume(&g, "crash", "x", 100), &bodies);
    } else {
        eprintln!(
            "NOT RUN: the Go nsqd part of export_go_data_after_a_crash (no ../shared/reference)"
        );
    }
}

/// Over `--export-go-data-max-bytes` a clean stop writes only what no topic log holds and says
/// how to hand the directory over; nsq-rs continues from its logs (exactly once), and
/// `--export-go-data` then writes the rest.
#[test]
fn a_stop_over_the_export_limit_leaves_the_logs_for_later() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--mem-queue-size=0", "--export-go-data-max-bytes=0"];
    let mut n = TestNsqd::start_in(dir.path(), &args);
    post(&n, "/topic/create?topic=big");
    post(&n, "/channel/create?topic=big&channel=x");
    let mut p = n.client();
    let bodies = batch("big", 0, 50);
    mpub(&mut p, "big", &bodies);
    assert!(n.terminate().success());
    n.wait_for_log("nsqd --export-go-data --data-path=", Duration::from_secs(1));
    assert!(read_queue(dir.path(), "big:x").is_empty());
    let mut again = TestNsqd::start_in(dir.path(), &args);
    again.wait_for_log("continuing from the topic logs", Duration::from_secs(1));
    assert_same(
        "nsq-rs after a partial stop",
        &consume(&again, "big", "x", 50),
        &bodies,
    );
    drop(p);
    let mut p = again.client();
    let later = batch("later", 0, 20);
    mpub(&mut p, "big", &later);
    assert!(again.terminate().success());
    drop(p);
    assert!(read_queue(dir.path(), "big:x").is_empty());
    let out = std::process::Command::new(crate::harness::nsqd_bin())
        .arg("--export-go-data")
        .arg(format!("--data-path={}", dir.path().display()))
        .arg("--mem-queue-size=0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same("exported big:x", &read_queue(dir.path(), "big:x"), &later);
}
