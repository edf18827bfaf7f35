//! Protocol V2 semantics through the real binary and our raw client: publish, fan-out,
//! RDY windows, FIN/REQ/TOUCH, timeouts, deferral, CLS, ephemeral channels, heartbeats.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{RawClient, TestNsqd, READ_TIMEOUT};

fn body(m: &nsq_protocol::Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

#[test]
fn pub_mpub_and_fan_out_to_every_channel() {
    let nsqd = TestNsqd::start(&[]);
    let mut a = nsqd.client();
    a.sub_ok("fan", "one", 100);
    let mut b = nsqd.client();
    b.sub_ok("fan", "two", 100);
    let mut p = nsqd.client();
    p.pub_ok("fan", b"m0");
    p.mpub("fan", &[b"m1".as_slice(), b"m2", b"m3"]);
    p.expect_ok();
    for c in [&mut a, &mut b] {
        let got: Vec<String> = (0..4)
            .map(|_| body(&c.read_message(READ_TIMEOUT)))
            .collect();
        assert_eq!(
            got,
            ["m0", "m1", "m2", "m3"],
            "every channel gets every message, in order"
        );
    }
}

#[test]
fn message_frame_layout_and_unique_ids() {
    let nsqd = TestNsqd::start(&["--node-id=77"]);
    let mut c = nsqd.client();
    c.sub_ok("ids", "c", 1000);
    let mut p = nsqd.client();
    let bodies: Vec<Vec<u8>> = (0..500).map(|i| format!("{i}").into_bytes()).collect();
    p.mpub("ids", &bodies);
    p.expect_ok();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut ids = std::collections::HashSet::new();
    for i in 0..500 {
        let m = c.read_message(READ_TIMEOUT);
        assert_eq!(body(&m), i.to_string());
        assert_eq!(m.attempts, 1);
        assert!(
            (before - m.timestamp).abs() < 60_000_000_000,
            "timestamp is ns since epoch"
        );
        let n = m.id.to_u64().expect("ids are 16 lowercase hex digits");
        assert_eq!((n >> 12) & 0x3ff, 77, "node id is stamped into the id");
        assert!(ids.insert(m.id));
    }
}

#[test]
fn rdy_window_spreads_messages_over_consumers() {
    let nsqd = TestNsqd::start(&[]);
    let mut c1 = nsqd.client();
    c1.sub_ok("rdy", "c", 0);
    let mut c2 = nsqd.client();
    c2.sub_ok("rdy", "c", 0);
    let mut p = nsqd.client();
    let bodies: Vec<Vec<u8>> = (0..10).map(|i| format!("{i}").into_bytes()).collect();
    p.mpub("rdy", &bodies);
    p.expect_ok();
    c1.expect_no_frame(Duration::from_millis(200));
    c1.rdy(3);
    let got1: Vec<_> = (0..3).map(|_| c1.read_message(READ_TIMEOUT)).collect();
    c1.expect_no_frame(Duration::from_millis(200));
    c2.rdy(100);
    let got2: Vec<_> = (0..7).map(|_| c2.read_message(READ_TIMEOUT)).collect();
    let mut all: Vec<String> = got1.iter().chain(&got2).map(body).collect();
    all.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(all, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    // FIN opens the window again.
    c1.fin(&got1[0].id);
    p.pub_ok("rdy", b"late");
    // Either consumer may take it; with c2 idle-waiting both have credit.
    let _ = (&got2, &mut c2);
}

#[test]
fn req_defers_and_counts_attempts() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.sub_ok("req", "c", 10);
    let mut p = nsqd.client();
    p.pub_ok("req", b"x");
    let m = c.read_message(READ_TIMEOUT);
    assert_eq!(m.attempts, 1);
    c.req(&m.id, 0);
    let m2 = c.read_message(READ_TIMEOUT);
    assert_eq!((m2.id, m2.attempts), (m.id, 2));
    let t = Instant::now();
    c.req(&m2.id, 300);
    let m3 = c.read_message(READ_TIMEOUT);
    assert_eq!(m3.attempts, 3);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(290),
        "deferred for {waited:?}"
    );
    assert!(waited < Duration::from_secs(2), "deferred for {waited:?}");
    c.fin(&m3.id);
    c.fin(&m3.id);
    let e = c.expect_error("E_FIN_FAILED");
    assert_eq!(
        e,
        format!("E_FIN_FAILED FIN {} failed ID not in flight", m3.id)
    );
    // Non-fatal: the connection still works.
    p.pub_ok("req", b"y");
    assert_eq!(body(&c.read_message(READ_TIMEOUT)), "y");
}

#[test]
fn req_delay_above_max_is_clamped_not_rejected() {
    let nsqd = TestNsqd::start(&["--max-req-timeout=500ms"]);
    let mut c = nsqd.client();
    c.sub_ok("clamp", "c", 10);
    let mut p = nsqd.client();
    p.pub_ok("clamp", b"x");
    let m = c.read_message(READ_TIMEOUT);
    let t = Instant::now();
    c.req(&m.id, 3_600_000);
    let m2 = c.read_message(READ_TIMEOUT);
    assert_eq!(m2.id, m.id);
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn timeout_redelivers_and_touch_extends() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    let resp = c.identify_negotiate(&json!({"msg_timeout": 1000}));
    assert_eq!(resp["msg_timeout"], 1000);
    c.sub_ok("to", "c", 10);
    let mut p = nsqd.client();
    p.pub_ok("to", b"slow");
    let m = c.read_message(READ_TIMEOUT);
    let t = Instant::now();
    // Touch twice over ~1.4 s: the message must not come back before the last touch + 1 s.
    std::thread::sleep(Duration::from_millis(700));
    c.touch(&m.id);
    std::thread::sleep(Duration::from_millis(700));
    c.touch(&m.id);
    let m2 = c.read_message(Duration::from_secs(5));
    let elapsed = t.elapsed();
    assert_eq!((m2.id, m2.attempts), (m.id, 2));
    assert!(
        elapsed >= Duration::from_millis(2300),
        "redelivered after {elapsed:?}"
    );
    // A FIN for the first delivery's id now refers to the redelivery: still ours, so it works.
    c.fin(&m2.id);
    c.expect_no_frame(Duration::from_millis(1300));
}

#[test]
fn dpub_delivers_after_the_delay() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.sub_ok("dpub", "c", 10);
    let mut p = nsqd.client();
    let t = Instant::now();
    p.dpub("dpub", 400, b"later");
    p.expect_ok();
    p.pub_ok("dpub", b"now");
    assert_eq!(body(&c.read_message(READ_TIMEOUT)), "now");
    let m = c.read_message(READ_TIMEOUT);
    assert_eq!(body(&m), "later");
    assert!(t.elapsed() >= Duration::from_millis(390));
}

#[test]
fn topic_without_channels_keeps_messages_for_the_first_channel() {
    let nsqd = TestNsqd::start(&[]);
    let mut p = nsqd.client();
    for i in 0..5 {
        p.pub_ok("early", format!("e{i}").as_bytes());
    }
    let mut c = nsqd.client();
    c.sub_ok("early", "first", 10);
    for i in 0..5 {
        assert_eq!(body(&c.read_message(READ_TIMEOUT)), format!("e{i}"));
    }
    // A second channel only sees what is published after it exists.
    let mut c2 = nsqd.client();
    c2.sub_ok("early", "second", 10);
    c2.expect_no_frame(Duration::from_millis(200));
}

#[test]
fn cls_answers_close_wait_and_stops_delivery() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.sub_ok("cls", "c", 10);
    let mut p = nsqd.client();
    p.pub_ok("cls", b"a");
    let m = c.read_message(READ_TIMEOUT);
    c.cls();
    c.expect_response(b"CLOSE_WAIT");
    // RDY after CLS is ignored, FIN still accepted.
    c.rdy(10);
    c.fin(&m.id);
    p.pub_ok("cls", b"b");
    c.expect_no_frame(Duration::from_millis(300));
}

#[test]
fn ephemeral_channel_goes_away_with_its_last_consumer() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.sub_ok("eph", "tail#ephemeral", 10);
    let mut p = nsqd.client();
    p.pub_ok("eph", b"x");
    c.read_message(READ_TIMEOUT);
    assert!(nsqd.channel_stats("eph", "tail#ephemeral").is_some());
    c.close();
    crate::harness::wait_until(Duration::from_secs(5), "ephemeral channel deleted", || {
        nsqd.channel_stats("eph", "tail#ephemeral").is_none()
    });
    // Ephemeral topic goes away with its last channel.
    let mut c = nsqd.client();
    c.sub_ok("gone#ephemeral", "c#ephemeral", 1);
    assert!(nsqd.topic_stats("gone#ephemeral").is_some());
    c.close();
    crate::harness::wait_until(Duration::from_secs(5), "ephemeral topic deleted", || {
        nsqd.topic_stats("gone#ephemeral").is_none()
    });
}

#[test]
fn heartbeats_sent_and_silent_clients_dropped() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.answer_heartbeats = false;
    c.identify(&json!({"heartbeat_interval": 1000}));
    c.expect_ok();
    let f = c.read_frame(Duration::from_secs(3));
    assert!(f.is_heartbeat(), "got {}", crate::harness::describe(&f));
    // Never answer: after two intervals without data the server closes the connection.
    let t = Instant::now();
    c.expect_closed();
    assert!(t.elapsed() < Duration::from_secs(4));
    // A client that answers stays connected.
    let mut ok = nsqd.client();
    ok.identify(&json!({"heartbeat_interval": 1000}));
    ok.expect_ok();
    ok.expect_no_frame(Duration::from_millis(3500));
    assert!(ok.heartbeats_seen >= 2);
    ok.pub_ok("hb", b"still here");
}

#[test]
fn sub_requires_heartbeats_and_happens_once() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    c.identify(&json!({"heartbeat_interval": -1}));
    c.expect_ok();
    c.sub("t", "c");
    c.expect_error("E_INVALID cannot SUB with heartbeats disabled");
    c.expect_closed();
    let mut c = nsqd.client();
    c.sub_ok("t", "c", 0);
    c.sub("t", "c");
    c.expect_error("E_INVALID cannot SUB in current state");
    c.expect_closed();
}

#[test]
fn identify_validates_and_negotiates() {
    let nsqd = TestNsqd::start(&[]);
    let mut c = nsqd.client();
    let r = c.identify_negotiate(&json!({
        "client_id": "me", "hostname": "box", "user_agent": "test/1.0",
        "output_buffer_size": 1024, "output_buffer_timeout": 50,
        "tls_v1": true, "snappy": false, "deflate": false, "short_id": "legacy"
    }));
    assert_eq!(r["max_rdy_count"], 2500);
    assert_eq!(r["version"], "1.3.0");
    assert_eq!(r["max_msg_timeout"], 900000);
    assert_eq!(r["msg_timeout"], 60000);
    assert_eq!(r["output_buffer_size"], 1024);
    assert_eq!(r["output_buffer_timeout"], 50);
    // No --tls-cert, so TLS is not offered (snappy is not asked for): plain text continues.
    // Negotiated compression and TLS are tested in tls.rs.
    assert_eq!(r["tls_v1"], false);
    assert_eq!(r["snappy"], false);
    assert_eq!(r["auth_required"], false);
    c.pub_ok("ident", b"plain");

    for (field, value, text) in [
        (
            "heartbeat_interval",
            999,
            "E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid",
        ),
        (
            "output_buffer_size",
            70000,
            "E_BAD_BODY IDENTIFY output buffer size (70000) is invalid",
        ),
        (
            "output_buffer_timeout",
            10,
            "E_BAD_BODY IDENTIFY output buffer timeout (10) is invalid",
        ),
        (
            "sample_rate",
            100,
            "E_BAD_BODY IDENTIFY sample rate (100) is invalid",
        ),
        (
            "msg_timeout",
            999,
            "E_BAD_BODY IDENTIFY msg timeout (999) is invalid",
        ),
    ] {
        let mut c = nsqd.client();
        c.identify(&json!({ field: value }));
        assert_eq!(c.expect_error("E_BAD_BODY"), text);
        c.expect_closed();
    }
    let mut c = nsqd.client();
    c.send_raw(b"IDENTIFY\n\x00\x00\x00\x03{x}");
    c.expect_error("E_BAD_BODY IDENTIFY failed to decode JSON body");
    c.expect_closed();
}

#[test]
fn max_channel_consumers_enforced() {
    let nsqd = TestNsqd::start(&["--max-channel-consumers=1"]);
    let mut a = nsqd.client();
    a.sub_ok("mcc", "c", 0);
    let mut b = nsqd.client();
    b.sub("mcc", "c");
    b.expect_error("E_SUB_FAILED");
    b.expect_closed();
    let _ = RawClient::connect(nsqd.tcp_addr());
}
