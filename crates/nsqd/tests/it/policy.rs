//! Delivery policies (nsq-rs extension): `/topic/config` and `/channel/config`, ttl and
//! `max_depth` (`overflow: reject`) through the real wire, kept across restarts, ignored by
//! Go nsqd 1.3.0 taking the directory back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use nsq_protocol::{FrameType, Message};

use crate::harness::{describe, find_channel, go_nsqd_bin, wait_until, TestNsqd, READ_TIMEOUT};

fn post_json(n: &TestNsqd, path: &str, body: &str) -> (u16, Value) {
    let r = n.http_post(path, body.as_bytes());
    let status = r.status;
    (status, r.json())
}

fn get_json(n: &TestNsqd, path: &str) -> (u16, Value) {
    let r = n.http_get(path);
    let status = r.status;
    (status, r.json())
}

#[test]
fn config_api_validates_and_answers_back() {
    let n = TestNsqd::start(&[]);
    // No such topic yet.
    let (s, v) = get_json(&n, "/topic/config?topic=jobs");
    assert_eq!((s, &v["message"]), (404, &json!("TOPIC_NOT_FOUND")));
    assert_eq!(n.http_post("/topic/create?topic=jobs", b"").status, 200);
    assert_eq!(
        n.http_post("/channel/create?topic=jobs&channel=work", b"")
            .status,
        200
    );
    assert_eq!(get_json(&n, "/topic/config?topic=jobs"), (200, json!({})));

    let (s, v) = post_json(
        &n,
        "/topic/config?topic=jobs",
        r#"{"ttl":"1h","max_depth":5}"#,
    );
    assert_eq!(s, 200, "{v}");
    let want = json!({"ttl":"1h0m0s","max_depth":5,"overflow":"reject"});
    assert_eq!(v, want);
    assert_eq!(
        get_json(&n, "/topic/config?topic=jobs"),
        (200, want.clone())
    );

    // Refusals name the field and change nothing.
    for (body, needle) in [
        (r#"{"tll":"1h"}"#, "tll: unknown field"),
        (r#"{"ttl":"soon"}"#, "ttl: "),
        (
            r#"{"max_depth":"lots"}"#,
            "max_depth: expected a positive integer",
        ),
        (r#"{"overflow":"spill"}"#, "overflow: expected"),
        (
            r#"{"dedup_window":"10m","dedup_false_positive_rate":1}"#,
            "dedup_false_positive_rate: expected a number",
        ),
        ("not json", "body: invalid JSON"),
    ] {
        let (s, v) = post_json(&n, "/topic/config?topic=jobs", body);
        assert_eq!(s, 400, "{body}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.starts_with(needle), "{body}: {m}");
    }
    assert_eq!(get_json(&n, "/topic/config?topic=jobs"), (200, want));

    // A channel's ttl is at most its topic's, both ways round.
    let (s, v) = post_json(
        &n,
        "/channel/config?topic=jobs&channel=work",
        r#"{"ttl":"2h"}"#,
    );
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        v["message"],
        "ttl: 2h0m0s is longer than the topic's ttl 1h0m0s"
    );
    let (s, v) = post_json(
        &n,
        "/channel/config?topic=jobs&channel=work",
        r#"{"ttl":"30m"}"#,
    );
    assert_eq!((s, v), (200, json!({"ttl":"30m0s"})));
    let (s, v) = post_json(&n, "/topic/config?topic=jobs", r#"{"ttl":"10m"}"#);
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("channel work"),
        "{v}"
    );
    let (s, v) = post_json(
        &n,
        "/channel/config?topic=jobs&channel=work",
        r#"{"max_attempts":5}"#,
    );
    assert_eq!(s, 400);
    assert_eq!(
        v["message"],
        "max_attempts: needs a dead_letter_topic to send messages to"
    );
    let (s, _) = get_json(&n, "/channel/config?topic=jobs&channel=nope");
    assert_eq!(s, 404);
    // Clearing with null.
    let (s, v) = post_json(
        &n,
        "/topic/config?topic=jobs",
        r#"{"ttl":null,"max_depth":null}"#,
    );
    assert_eq!((s, v), (200, json!({})));
}

#[test]
fn ttl_drops_exactly_the_old_messages_deferred_ones_included() {
    ttl_case(&[]);
}

/// Durable mode: expired messages are acked in the journal like FINs, so a restart does not
/// bring them back.
#[test]
fn ttl_in_durable_mode_reclaims_like_a_fin() {
    let mut n = ttl_case(&["--mem-queue-size=0"]);
    n.terminate();
    n.restart(None);
    let ch = find_channel(&n.stats(""), "ttl", "ch").unwrap();
    assert_eq!(
        (ch["depth"].as_u64(), ch["deferred_count"].as_u64()),
        (Some(0), Some(0)),
        "{ch}"
    );
}

fn ttl_case(args: &[&str]) -> TestNsqd {
    let n = TestNsqd::start(args);
    let mut p = n.client();
    let mut c = n.client();
    c.sub_ok("ttl", "ch", 0);
    let (s, v) = post_json(
        &n,
        "/channel/config?topic=ttl&channel=ch",
        r#"{"ttl":"300ms"}"#,
    );
    assert_eq!(s, 200, "{v}");
    let old: Vec<String> = (0..5).map(|i| format!("old{i}")).collect();
    p.mpub("ttl", &old);
    p.expect_ok();
    // Deferred past the ttl: it becomes ready already expired.
    p.dpub("ttl", 500, b"late");
    p.expect_ok();
    // Deferred within the ttl: delivered.
    p.dpub("ttl", 100, b"early");
    p.expect_ok();
    let published = Instant::now();
    std::thread::sleep(Duration::from_millis(350));
    p.mpub("ttl", &["new0", "new1", "new2"]);
    p.expect_ok();
    c.rdy(100);
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = c.read_message(READ_TIMEOUT);
        got.push(String::from_utf8(m.body.to_vec()).unwrap());
        c.fin(&m.id);
    }
    got.sort();
    assert_eq!(got, ["new0", "new1", "new2"]);
    // "early" was ready at 100 ms but only taken now (at ≥ 350 ms): older than the ttl too.
    // "late" becomes ready at 500 ms, expired. Nothing else may arrive.
    while published.elapsed() < Duration::from_millis(700) {
        if let Ok(Some(f)) = c.try_read_frame(Duration::from_millis(100)) {
            panic!("unexpected frame after the ttl: {f:?}");
        }
    }
    wait_until(Duration::from_secs(5), "expired counted", || {
        find_channel(&n.stats(""), "ttl", "ch").is_some_and(|ch| {
            ch["expired_count"] == 7 && ch["depth"] == 0 && ch["deferred_count"] == 0
        })
    });
    let ch = find_channel(&n.stats(""), "ttl", "ch").unwrap();
    assert_eq!(ch["in_flight_count"], 0, "{ch}");
    let text = n.http_get("/stats").text();
    assert!(
        text.lines()
            .any(|l| l.contains("[ch ") && l.ends_with(" expired: 7")),
        "text /stats shows expired:\n{text}"
    );
    let metrics = n.http_get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"nsq_channel_expired_total{topic="ttl",channel="ch"} 7"#),
        "/metrics has no expired counter for ttl/ch:\n{metrics}"
    );
    // A channel without a policy shows no expired_count at all (NSQ's /stats shape).
    c.cls();
    let mut other = n.client();
    other.sub_ok("ttl", "plain", 0);
    let plain = find_channel(&n.stats(""), "ttl", "plain").unwrap();
    assert!(plain.get("expired_count").is_none(), "{plain}");
    n
}

#[test]
fn max_depth_rejects_the_exact_publish_that_would_cross_it() {
    let n = TestNsqd::start(&[]);
    let mut c = n.client();
    c.sub_ok("deep", "ch", 0);
    let (s, v) = post_json(&n, "/topic/config?topic=deep", r#"{"max_depth":10}"#);
    assert_eq!(s, 200, "{v}");
    let mut p = n.client();
    p.mpub("deep", &["x"; 8]);
    p.expect_ok();
    // 8 + 3 > 10: all of the MPUB is refused, none of it queued (MPUB's error code is
    // E_MPUB_FAILED, as for any failed MPUB; fatal, as in Go).
    p.mpub("deep", &["y"; 3]);
    let e = p.expect_error("E_MPUB_FAILED");
    assert!(e.contains("max_depth 10"), "{e}");
    assert!(e.contains("channel ch holds 8"), "{e}");
    let mut p = n.client();
    p.mpub("deep", &["z"; 2]);
    p.expect_ok();
    p.publish("deep", b"one too many");
    let e = p.expect_error("E_PUB_FAILED");
    assert!(e.contains("channel ch holds 10"), "{e}");
    // HTTP: 503 with the same reason.
    let r = n.http_post("/pub?topic=deep", b"h");
    assert_eq!(r.status, 503);
    let m = r.json()["message"].as_str().unwrap().to_owned();
    assert!(m.starts_with("E_PUB_FAILED max_depth 10"), "{m}");
    let r = n.http_post("/mpub?topic=deep", b"a\nb");
    assert_eq!(r.status, 503);
    assert_eq!(
        find_channel(&n.stats(""), "deep", "ch").unwrap()["depth"],
        10
    );
    // Consuming makes room again.
    c.rdy(5);
    for _ in 0..5 {
        let m = c.read_message(READ_TIMEOUT);
        c.fin(&m.id);
    }
    wait_until(Duration::from_secs(5), "room again", || {
        n.http_post("/pub?topic=deep", b"again").status == 200
    });
}

#[test]
fn policies_survive_restarts_and_go_ignores_them() {
    let mut n = TestNsqd::start(&[]);
    assert_eq!(n.http_post("/topic/create?topic=kept", b"").status, 200);
    assert_eq!(
        n.http_post("/channel/create?topic=kept&channel=ch", b"")
            .status,
        200
    );
    let (s, _) = post_json(
        &n,
        "/topic/config?topic=kept",
        r#"{"ttl":"2h","max_depth":99}"#,
    );
    assert_eq!(s, 200);
    let (s, _) = post_json(
        &n,
        "/channel/config?topic=kept&channel=ch",
        r#"{"ttl":"1h"}"#,
    );
    assert_eq!(s, 200);
    let dat = n.data_path().join("nsqd.dat");
    wait_until(Duration::from_secs(5), "nsqd.dat has the policies", || {
        std::fs::read_to_string(&dat).is_ok_and(|s| s.matches("nsqrs_config").count() == 2)
    });
    let topic_want = json!({"ttl":"2h0m0s","max_depth":99,"overflow":"reject"});
    let channel_want = json!({"ttl":"1h0m0s"});
    // /stats JSON carries them as `config` (omitted without a policy).
    let s = n.stats("");
    assert_eq!(
        crate::harness::find_topic(&s, "kept").unwrap()["config"],
        topic_want
    );
    assert_eq!(
        find_channel(&s, "kept", "ch").unwrap()["config"],
        channel_want
    );
    // After a crash (the file was already written) and after a clean stop.
    n.kill();
    n.restart(None);
    assert_eq!(
        get_json(&n, "/topic/config?topic=kept"),
        (200, topic_want.clone())
    );
    assert_eq!(
        get_json(&n, "/channel/config?topic=kept&channel=ch"),
        (200, channel_want.clone())
    );
    n.terminate();
    n.restart(None);
    assert_eq!(get_json(&n, "/topic/config?topic=kept"), (200, topic_want));
    assert_eq!(
        get_json(&n, "/channel/config?topic=kept&channel=ch"),
        (200, channel_want)
    );
    n.terminate();

    let Some(go) = go_nsqd_bin() else {
        eprintln!("*** NOT RUN: the Go nsqd 1.3.0 part (reference binary missing) ***");
        return;
    };
    let mut g = TestNsqd::start_bin(&go, n.data_path(), &[]);
    // Go reads the file (our extra fields ignored) and serves the topic and its channel.
    assert!(find_channel(&g.stats(""), "kept", "ch").is_some());
    let mut p = g.client();
    p.pub_ok("kept", b"from go");
    g.terminate();
}

/// A consumer that REQs everything: each message is delivered `max_attempts` times, then it
/// is on the dead-letter topic once, body and publish timestamp unchanged, its attempts
/// field carrying the source's count. Returns the node and the messages' (body, timestamp).
fn requeue_until_dead(args: &[&str]) -> (TestNsqd, Vec<(Vec<u8>, i64)>) {
    let n = TestNsqd::start(args);
    let mut c = n.client();
    c.sub_ok("jobs", "work", 0);
    let (s, v) = post_json(
        &n,
        "/channel/config?topic=jobs&channel=work",
        r#"{"max_attempts":3,"dead_letter_topic":"jobs.dead"}"#,
    );
    assert_eq!(s, 200, "{v}");
    let mut p = n.client();
    p.mpub("jobs", &["a", "b"]);
    p.expect_ok();
    c.rdy(10);
    let mut seen: std::collections::BTreeMap<Vec<u8>, (u32, i64)> = Default::default();
    for _ in 0..6 {
        let m = c.read_message(READ_TIMEOUT);
        let e = seen.entry(m.body.to_vec()).or_insert((0, m.timestamp));
        e.0 += 1;
        assert_eq!(u32::from(m.attempts), e.0, "attempts count deliveries");
        assert_eq!(m.timestamp, e.1);
        c.req(&m.id, 0);
    }
    assert!(
        c.try_read_frame(Duration::from_millis(200))
            .unwrap()
            .is_none(),
        "a fourth delivery"
    );
    assert!(seen.values().all(|&(k, _)| k == 3), "{seen:?}");
    wait_until(Duration::from_secs(5), "both dead-lettered", || {
        find_channel(&n.stats(""), "jobs", "work").is_some_and(|ch| {
            ch["dead_lettered_count"] == 2 && ch["depth"] == 0 && ch["in_flight_count"] == 0
        })
    });
    let text = n.http_get("/stats").text();
    assert!(
        text.lines()
            .any(|l| l.contains("[work ") && l.ends_with(" dead-lettered: 2")),
        "text /stats shows dead-lettered:\n{text}"
    );
    let msgs = seen.into_iter().map(|(b, (_, ts))| (b, ts)).collect();
    (n, msgs)
}

fn read_dead(n: &TestNsqd, want: &[(Vec<u8>, i64)], attempts: u16) {
    let mut d = n.client();
    d.sub_ok("jobs.dead", "inspect", 10);
    let mut got = Vec::new();
    for _ in 0..want.len() {
        let m = d.read_message(READ_TIMEOUT);
        assert_eq!(m.attempts, attempts, "the source's count");
        got.push((m.body.to_vec(), m.timestamp));
        d.fin(&m.id);
    }
    got.sort();
    assert_eq!(got, want, "bodies and publish timestamps unchanged");
    assert!(
        d.try_read_frame(Duration::from_millis(200))
            .unwrap()
            .is_none(),
        "each is on the dead-letter topic once"
    );
}

#[test]
fn max_attempts_moves_a_message_to_the_dead_letter_topic() {
    let (n, msgs) = requeue_until_dead(&[]);
    read_dead(&n, &msgs, 3);
}

#[test]
fn a_timed_out_last_attempt_is_dead_lettered_too() {
    let n = TestNsqd::start(&["--msg-timeout=200ms"]);
    let mut c = n.client();
    c.sub_ok("jobs", "work", 0);
    let (s, _) = post_json(
        &n,
        "/channel/config?topic=jobs&channel=work",
        r#"{"max_attempts":1,"dead_letter_topic":"jobs.dead"}"#,
    );
    assert_eq!(s, 200);
    let mut p = n.client();
    p.pub_ok("jobs", b"slow");
    c.rdy(1);
    let m = c.read_message(READ_TIMEOUT);
    // No FIN: after the timeout it has had its one attempt.
    wait_until(
        Duration::from_secs(5),
        "dead-lettered after the timeout",
        || {
            find_channel(&n.stats(""), "jobs", "work")
                .is_some_and(|ch| ch["dead_lettered_count"] == 1)
        },
    );
    read_dead(&n, &[(m.body.to_vec(), m.timestamp)], 1);
}

/// Durable mode: once the dead-letter topic's log has them and the source's acks reached its
/// journal, a SIGKILL neither loses them nor brings them back on the source.
#[test]
fn dead_letters_survive_a_sigkill_in_durable_mode() {
    let (mut n, msgs) = requeue_until_dead(&["--mem-queue-size=0"]);
    let journal = n.data_path().join("jobs:work.nsqrs.journal");
    let len0 = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
    wait_until(Duration::from_secs(5), "source acks in the journal", || {
        std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0) > len0
    });
    n.kill();
    n.restart(None);
    let ch = find_channel(&n.stats(""), "jobs", "work").unwrap();
    assert_eq!(ch["depth"], 0, "the source does not redeliver: {ch}");
    read_dead(&n, &msgs, 3);
    // The policy came back with it.
    assert_eq!(
        get_json(&n, "/channel/config?topic=jobs&channel=work").1,
        json!({"max_attempts":3,"dead_letter_topic":"jobs.dead"})
    );
}

#[test]
fn max_depth_drop_oldest_keeps_the_newest() {
    for args in [&[][..], &["--mem-queue-size=0"][..]] {
        let n = TestNsqd::start(args);
        let mut c = n.client();
        c.sub_ok("ring", "ch", 0);
        let (s, v) = post_json(
            &n,
            "/topic/config?topic=ring",
            r#"{"max_depth":5,"overflow":"drop_oldest"}"#,
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v, json!({"max_depth":5,"overflow":"drop_oldest"}));
        let mut p = n.client();
        let bodies: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        p.mpub("ring", &bodies);
        p.expect_ok();
        // Every publish is accepted; the channel keeps the newest 5.
        p.pub_ok("ring", b"m8");
        wait_until(Duration::from_secs(5), "trimmed", || {
            find_channel(&n.stats(""), "ring", "ch")
                .is_some_and(|ch| ch["depth"] == 5 && ch["dropped_count"] == 4)
        });
        c.rdy(10);
        let mut got = Vec::new();
        for _ in 0..5 {
            let m = c.read_message(READ_TIMEOUT);
            got.push(String::from_utf8(m.body.to_vec()).unwrap());
            c.fin(&m.id);
        }
        assert_eq!(got, ["m4", "m5", "m6", "m7", "m8"], "{args:?}");
        let metrics = n.http_get("/metrics").text();
        assert!(
            metrics
                .lines()
                .any(|l| l == r#"nsq_channel_dropped_total{topic="ring",channel="ch"} 4"#),
            "{metrics}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dedup window
// ---------------------------------------------------------------------------------------------

/// Reads messages (FIN-ing them) until none arrives for `quiet`; their bodies, sorted.
fn drain(c: &mut crate::harness::RawClient, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(f)) = c.try_read_frame(quiet) {
        if f.is_heartbeat() {
            continue;
        }
        assert_eq!(f.frame_type, FrameType::Message, "{}", describe(&f));
        let m = Message::decode(f.data).expect("valid message payload");
        got.push(String::from_utf8(m.body.to_vec()).unwrap());
        c.fin(&m.id);
    }
    got.sort();
    got
}

fn set_dedup(n: &TestNsqd, topic: &str, body: &str) -> Value {
    let (s, v) = post_json(n, &format!("/topic/config?topic={topic}"), body);
    assert_eq!(s, 200, "{body}: {v}");
    v
}

#[test]
fn dedup_config_answers_its_defaults_and_refusals_name_the_field() {
    let n = TestNsqd::start(&[]);
    assert_eq!(n.http_post("/topic/create?topic=dd", b"").status, 200);
    let v = set_dedup(&n, "dd", r#"{"dedup_window":"10m"}"#);
    let want = json!({"dedup_window":"10m0s","dedup_capacity":1000000,
                      "dedup_false_positive_rate":0.0001});
    assert_eq!(v, want);
    assert_eq!(get_json(&n, "/topic/config?topic=dd"), (200, want.clone()));
    for (body, needle) in [
        (
            r#"{"dedup_capacity":0}"#,
            "dedup_capacity: expected a positive integer",
        ),
        (
            r#"{"dedup_false_positive_rate":0.5}"#,
            "dedup_false_positive_rate: expected a number between 0 and 0.5",
        ),
        (r#"{"dedup_window":"-1s"}"#, "dedup_window: "),
        (
            r#"{"dedup_capacity":100000000000}"#,
            "dedup_capacity: 100000000000 messages",
        ),
        (
            r#"{"dedup_window":null,"dedup_capacity":5}"#,
            "dedup_capacity: needs dedup_window",
        ),
    ] {
        let (s, v) = post_json(&n, "/topic/config?topic=dd", body);
        assert_eq!(s, 400, "{body}: {v}");
        let m = v["message"].as_str().unwrap();
        assert!(m.starts_with(needle), "{body}: {m}");
    }
    assert_eq!(get_json(&n, "/topic/config?topic=dd"), (200, want));
    let v = set_dedup(&n, "dd", r#"{"dedup_capacity":5000,"max_depth":9}"#);
    assert_eq!(
        v,
        json!({"dedup_window":"10m0s","dedup_capacity":5000,
               "dedup_false_positive_rate":0.0001,"max_depth":9,"overflow":"reject"})
    );
    let v = set_dedup(&n, "dd", r#"{"dedup_window":null}"#);
    assert_eq!(v, json!({"max_depth":9,"overflow":"reject"}));
    let t = n.topic_stats("dd").unwrap();
    assert!(t.get("dedup").is_none(), "{t}");
}

#[test]
fn dedup_drops_repeats_of_pub_mpub_and_dpub() {
    dedup_case(&[]);
}

/// Durable mode: the publishes go through the topic log before they are answered.
#[test]
fn dedup_drops_repeats_in_durable_mode() {
    dedup_case(&["--mem-queue-size=0"]);
}

fn dedup_case(args: &[&str]) {
    let n = TestNsqd::start(args);
    let mut c = n.client();
    c.sub_ok("dd", "ch", 100);
    set_dedup(&n, "dd", r#"{"dedup_window":"10m"}"#);
    let mut p = n.client();
    // Both answered OK (a retry must not fail), queued once.
    p.publish("dd", b"a");
    p.expect_ok();
    p.publish("dd", b"a");
    p.expect_ok();
    // Each message of an MPUB on its own: repeats inside the batch and of earlier ones.
    p.mpub("dd", &["b", "a", "b", "c"]);
    p.expect_ok();
    p.mpub("dd", &["c", "d"]);
    p.expect_ok();
    p.dpub("dd", 10, b"d");
    p.expect_ok();
    p.dpub("dd", 10, b"e");
    p.expect_ok();
    // All repeats: OK, nothing queued.
    p.mpub("dd", &["a", "e"]);
    p.expect_ok();
    assert_eq!(
        drain(&mut c, Duration::from_millis(400)),
        ["a", "b", "c", "d", "e"]
    );
    let t = n.topic_stats("dd").unwrap();
    assert_eq!(t["message_count"], 5, "{t}");
    assert_eq!(t["deduplicated_count"], 7, "{t}");
    let d = &t["dedup"];
    assert_eq!(d["window"], "10m0s", "{t}");
    assert_eq!(d["capacity"], 1_000_000);
    assert_eq!(d["false_positive_rate"], 0.0001);
    assert_eq!(d["bits"], 2 * 19_170_176);
    assert_eq!(d["hashes"], 13);
    assert_eq!(d["deduplicated_count"], 7);
    let est = d["estimated_false_positive_rate"].as_f64().unwrap();
    assert!(est > 0.0 && est < 1e-60, "{est}");
    assert_eq!(t["channels"][0]["message_count"], 5, "{t}");
    // A topic without the policy keeps NSQ 1.3's shape.
    p.pub_ok("plain", b"a");
    p.pub_ok("plain", b"a");
    let plain = n.topic_stats("plain").unwrap();
    assert_eq!(plain["message_count"], 2);
    assert!(plain.get("deduplicated_count").is_none(), "{plain}");
    assert!(plain.get("dedup").is_none(), "{plain}");
}

#[test]
fn dedup_http_pub_keys_by_dedup_id() {
    let n = TestNsqd::start(&[]);
    let mut c = n.client();
    c.sub_ok("hd", "ch", 100);
    set_dedup(&n, "hd", r#"{"dedup_window":"10m"}"#);
    let post = |path: &str, body: &[u8]| {
        let r = n.http_post(path, body);
        (r.status, r.text())
    };
    let ok = (200, "OK".to_string());
    assert_eq!(post("/pub?topic=hd&dedup_id=order-1", b"first"), ok);
    assert_eq!(post("/pub?topic=hd&dedup_id=order-1", b"second"), ok);
    // The id is the key, not the body; ids and bodies are separate keys.
    assert_eq!(post("/pub?topic=hd&dedup_id=order-2", b"first"), ok);
    assert_eq!(post("/pub?topic=hd", b"order-1"), ok);
    // Without an id the body is the key, over HTTP as over TCP.
    assert_eq!(post("/pub?topic=hd", b"order-1"), ok);
    assert_eq!(post("/mpub?topic=hd", b"m1\nm2\nm1\norder-1"), ok);
    let (s, body) = post("/pub?topic=hd&dedup_id=", b"x");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("INVALID_DEDUP_ID"), "{body}");
    let (s, body) = post("/mpub?topic=hd&dedup_id=x", b"x");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("INVALID_DEDUP_ID"), "{body}");
    assert_eq!(
        drain(&mut c, Duration::from_millis(400)),
        ["first", "first", "m1", "m2", "order-1"]
    );
    assert_eq!(n.topic_stats("hd").unwrap()["deduplicated_count"], 4);
}

#[test]
fn dedup_forgets_after_the_window() {
    let n = TestNsqd::start(&[]);
    let mut c = n.client();
    c.sub_ok("dw", "ch", 100);
    set_dedup(&n, "dw", r#"{"dedup_window":"400ms"}"#);
    let mut p = n.client();
    let first = Instant::now();
    p.pub_ok("dw", b"r");
    // Within the window: dropped.
    std::thread::sleep(Duration::from_millis(150));
    p.pub_ok("dw", b"r");
    assert!(
        first.elapsed() < Duration::from_millis(400),
        "too slow to test"
    );
    // A key is remembered less than two windows: delivered again after 800 ms.
    std::thread::sleep(Duration::from_millis(850).saturating_sub(first.elapsed()));
    p.pub_ok("dw", b"r");
    assert_eq!(drain(&mut c, Duration::from_millis(300)), ["r", "r"]);
    assert_eq!(n.topic_stats("dw").unwrap()["deduplicated_count"], 1);
}

/// A refused publish (max_depth) remembers none of its keys, so its retry is queued once
/// there is room; a publish of repeats only is answered OK even at the limit.
#[test]
fn dedup_with_max_depth_checks_only_the_new_messages() {
    let n = TestNsqd::start(&[]);
    let mut c = n.client();
    c.sub_ok("dm", "ch", 0);
    set_dedup(&n, "dm", r#"{"dedup_window":"10m","max_depth":2}"#);
    let mut p = n.client();
    p.mpub("dm", &["x", "x", "y"]);
    p.expect_ok();
    p.mpub("dm", &["y", "x"]);
    p.expect_ok();
    p.publish("dm", b"z");
    let e = p.expect_error("E_PUB_FAILED");
    assert!(e.contains("max_depth 2"), "{e}");
    c.rdy(1);
    let m = c.read_message(READ_TIMEOUT);
    c.rdy(0);
    c.fin(&m.id);
    wait_until(Duration::from_secs(5), "room again", || {
        find_channel(&n.stats(""), "dm", "ch").is_some_and(|ch| ch["depth"] == 1)
    });
    let mut p = n.client();
    p.pub_ok("dm", b"z");
    c.rdy(10);
    let mut got = drain(&mut c, Duration::from_millis(300));
    got.push(String::from_utf8(m.body.to_vec()).unwrap());
    got.sort();
    assert_eq!(got, ["x", "y", "z"]);
}

/// The settings are kept in nsqd.dat; the filter is memory-only, so after a restart the
/// window starts empty.
#[test]
fn dedup_config_survives_restarts_the_window_starts_empty() {
    let mut n = TestNsqd::start(&[]);
    assert_eq!(n.http_post("/topic/create?topic=dr", b"").status, 200);
    let want = set_dedup(
        &n,
        "dr",
        r#"{"dedup_window":"1h","dedup_capacity":1000,"dedup_false_positive_rate":0.01}"#,
    );
    assert_eq!(
        want,
        json!({"dedup_window":"1h0m0s","dedup_capacity":1000,"dedup_false_positive_rate":0.01})
    );
    let mut p = n.client();
    p.pub_ok("dr", b"k");
    p.pub_ok("dr", b"k");
    assert_eq!(n.topic_stats("dr").unwrap()["message_count"], 1);
    n.terminate();
    n.restart(None);
    assert_eq!(get_json(&n, "/topic/config?topic=dr"), (200, want));
    let t = n.topic_stats("dr").unwrap();
    assert_eq!(t["dedup"]["capacity"], 1000, "{t}");
    assert_eq!(t["dedup"]["bits"], 2 * 9600, "{t}");
    assert_eq!(t["dedup"]["hashes"], 7, "{t}");
    assert!(t.get("deduplicated_count").is_none(), "{t}");
    // The message from before is still queued; its key is forgotten.
    assert_eq!(t["depth"], 1, "{t}");
    let mut p = n.client();
    p.pub_ok("dr", b"k");
    p.pub_ok("dr", b"k");
    let t = n.topic_stats("dr").unwrap();
    assert_eq!(
        (t["depth"].as_u64(), t["deduplicated_count"].as_u64()),
        (Some(2), Some(1))
    );
}
