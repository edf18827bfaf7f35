//! `--e2e-processing-latency-percentile`: publish-to-FIN latency percentiles in `/stats`,
//! checked against a reference computed here from the same messages.
//!
//! The reference latency of a message is the time this test sent its FIN minus the
//! message's timestamp (the frame carries the publish time). nsqd applies the FIN a little
//! later, so its true latencies are each at least the reference one: a reported percentile
//! must be ≥ the reference percentile less the sketch's 1 % error, and ≤ it plus 1 % plus a
//! bound on how late the FIN can be applied on a loaded machine.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::harness::{find_channel, find_topic, wait_until, TestNsqd, READ_TIMEOUT};

const QUANTILES: [f64; 3] = [1.0, 0.99, 0.5];
/// The sketch's relative error (`nsqd::state::e2e::RELATIVE_ERROR`).
const REL: f64 = 0.01;
/// How much later than our send nsqd may apply a FIN (loopback + scheduling on 2 busy cores).
const APPLY_SLACK_NS: f64 = 25e6;

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// The value at quantile `q` with the sketch's rank rule (⌊q·(n−1)⌋; q = 1 is the max).
fn exact(sorted: &[i64], q: f64) -> f64 {
    if q >= 1.0 {
        return *sorted.last().unwrap() as f64;
    }
    sorted[(q * (sorted.len() as f64 - 1.0)) as usize] as f64
}

/// `(count, [(quantile, value)])` of an `e2e_processing_latency` object.
fn e2e(v: &Value) -> (u64, Vec<(f64, f64)>) {
    let p = v["e2e_processing_latency"]["percentiles"]
        .as_array()
        .unwrap_or_else(|| panic!("percentiles missing: {v}"))
        .iter()
        .map(|p| {
            (
                p["quantile"].as_f64().unwrap(),
                p["value"].as_f64().unwrap(),
            )
        })
        .collect();
    (v["e2e_processing_latency"]["count"].as_u64().unwrap(), p)
}

#[track_caller]
fn check_against(reported: &[(f64, f64)], reference: &[i64], what: &str) {
    let mut sorted = reference.to_vec();
    sorted.sort_unstable();
    let qs: Vec<f64> = reported.iter().map(|p| p.0).collect();
    assert_eq!(qs, QUANTILES, "{what}: quantiles in flag order");
    for &(q, v) in reported {
        let e = exact(&sorted, q);
        assert!(
            v >= e * (1.0 - REL) && v <= e * (1.0 + REL) + APPLY_SLACK_NS,
            "{what} q={q}: nsqd says {v} ns, reference {e} ns"
        );
    }
}

#[test]
fn percentiles_match_a_reference_from_the_same_messages() {
    let n = TestNsqd::start(&[
        "--e2e-processing-latency-percentile=1.0,0.99",
        "--e2e-processing-latency-percentile=0.5",
        "--e2e-processing-latency-window-time=10m",
    ]);
    // Before any channel the topic has no stream at all (Go: a nil aggregate).
    let mut p = n.client();
    p.pub_ok("lat", b"x");
    let t = find_topic(&n.stats(""), "lat").unwrap();
    assert_eq!(
        t["e2e_processing_latency"],
        serde_json::json!({"count": 0, "percentiles": null})
    );

    const N: usize = 200;
    let bodies: Vec<Vec<u8>> = (0..N).map(|i| format!("m{i}").into_bytes()).collect();
    let mut a = n.client();
    a.sub_ok("lat", "slow", N as u64 + 1);
    let mut b = n.client();
    b.sub_ok("lat", "fast", N as u64 + 1);
    let mut idle = n.client();
    idle.sub_ok("lat", "idle", 0);
    // The first message ("x") was held for the first channel: it is slow's first sample.
    let m = a.read_message(READ_TIMEOUT);
    let mut slow_ref = vec![unix_nanos() - m.timestamp];
    a.fin(&m.id);
    p.mpub("lat", &bodies);
    p.expect_ok();

    // "slow": each message is held for its own delay (5–205 ms, spread), then FINed.
    let start = Instant::now();
    let mut got = Vec::new();
    for i in 0..N {
        let m = a.read_message(READ_TIMEOUT);
        let hold = Duration::from_millis(5 + (i as u64 * 37) % 200);
        got.push((hold, m));
    }
    got.sort_by_key(|(hold, _)| *hold);
    for (hold, m) in &got {
        if let Some(wait) = (start + *hold).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        slow_ref.push(unix_nanos() - m.timestamp);
        a.fin(&m.id);
    }
    // "fast": FINed as soon as read (they waited behind "slow"), except the last 10, which are requeued (a REQ is no
    // processing: it must not count).
    let mut fast_ref = Vec::new();
    for i in 0..N {
        let m = b.read_message(READ_TIMEOUT);
        if i < N - 10 {
            fast_ref.push(unix_nanos() - m.timestamp);
            b.fin(&m.id);
        } else {
            b.req(&m.id, 60_000);
        }
    }

    // FIN has no answer: wait until /stats shows every one applied.
    wait_until(Duration::from_secs(10), "all FINs applied", || {
        let s = n.stats("");
        let ok = |ch: &str, want: u64| {
            find_channel(&s, "lat", ch).is_some_and(|c| {
                c["in_flight_count"] == 0 && c["e2e_processing_latency"]["count"] == want
            })
        };
        ok("slow", N as u64 + 1) && ok("fast", N as u64 - 10)
    });
    let s = n.stats("");
    let (count, slow) = e2e(&find_channel(&s, "lat", "slow").unwrap());
    assert_eq!(count, N as u64 + 1);
    check_against(&slow, &slow_ref, "channel slow");
    let (count, fast) = e2e(&find_channel(&s, "lat", "fast").unwrap());
    assert_eq!(count, N as u64 - 10);
    check_against(&fast, &fast_ref, "channel fast");
    // A channel that finished nothing: count 0, each percentile 0 (Go's empty stream).
    let (count, none) = e2e(&find_channel(&s, "lat", "idle").unwrap());
    assert_eq!(count, 0);
    assert!(none.iter().all(|&(_, v)| v == 0.0), "{none:?}");

    // The topic merges its channels: counts add up, and its max is the slowest channel's.
    let (count, topic) = e2e(&find_topic(&s, "lat").unwrap());
    assert_eq!(count, 2 * N as u64 + 1 - 10);
    assert_eq!(
        topic[0].1,
        slow[0].1.max(fast[0].1),
        "the topic's max is its channels' max"
    );
    let mut both = slow_ref.clone();
    both.extend(&fast_ref);
    check_against(&topic, &both, "topic lat");
    // ... whatever the channel filter (Go aggregates over every channel of the topic).
    let filtered = n.stats("&channel=fast");
    let (count, _) = e2e(&find_topic(&filtered, "lat").unwrap());
    assert_eq!(count, 2 * N as u64 + 1 - 10);

    // /metrics: the same quantiles as gauges in seconds.
    let metrics = n.http_get("/metrics").text();
    let series = r#"nsq_channel_e2e_processing_latency_seconds{topic="lat",channel="slow",quantile="0.99"} "#;
    let v: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
        .parse()
        .unwrap();
    let p99 = slow.iter().find(|p| p.0 == 0.99).unwrap().1;
    assert!(
        (v - p99 / 1e9).abs() < 1e-9 + p99 / 1e9 * 0.01,
        "{v} vs {p99} ns"
    );

    // The text format prints the values after `e2e%:`, as Go's NanoSecondToHuman.
    let text = n.http_get("/stats").text();
    let line = text
        .lines()
        .find(|l| l.contains("[slow"))
        .unwrap_or_else(|| panic!("no slow line in:\n{text}"));
    let values = line.split("e2e%: ").nth(1).unwrap();
    assert_eq!(values.split(", ").count(), 3, "{line}");
    assert!(
        values.split(", ").all(|v| v.ends_with("ms")),
        "slow's latencies are milliseconds: {line}"
    );
}

#[test]
fn off_by_default_with_gos_null_shape() {
    let n = TestNsqd::start(&[]);
    let mut c = n.client();
    c.sub_ok("quiet", "ch", 1);
    let mut p = n.client();
    p.pub_ok("quiet", b"x");
    let m = c.read_message(READ_TIMEOUT);
    c.fin(&m.id);
    wait_until(Duration::from_secs(5), "FIN applied", || {
        find_channel(&n.stats(""), "quiet", "ch").is_some_and(|c| c["in_flight_count"] == 0)
    });
    let s = n.stats("");
    let null = serde_json::json!({"count": 0, "percentiles": null});
    assert_eq!(
        find_topic(&s, "quiet").unwrap()["e2e_processing_latency"],
        null
    );
    assert_eq!(
        find_channel(&s, "quiet", "ch").unwrap()["e2e_processing_latency"],
        null
    );
}
