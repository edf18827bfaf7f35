//! Replies captured from the Go 1.3.0 binaries (`tests/data/go-1.3.0/capture.py`: a topic
//! with a consumer holding two messages in flight, a paused channel, a channel-less topic, a
//! TCP producer, `--e2e-processing-latency-percentile=0.99,0.5`) read into the shared types
//! and written back: nothing Go sends may be lost, and what we write back is Go's document
//! plus only the fields nsq-rs always writes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{lookupd, nsqd};

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/go-1.3.0/",
            $name
        ))
    };
}

/// Reads `go` as `T`, writes it back with Go's escaping, and checks the bytes are `go`'s
/// with each `(from, to)` replaced: where nsq-rs writes fields Go 1.3.0 does not.
fn round_trip<T: DeserializeOwned + Serialize>(go: &str, added: &[(&str, &str)]) -> T {
    let parsed: T = serde_json::from_str(go).expect("Go's reply reads");
    let back = String::from_utf8(crate::json::to_vec(&parsed)).unwrap();
    let mut want = go.trim_end().to_owned();
    for (from, to) in added {
        assert!(want.contains(from), "{from}");
        want = want.replace(from, to);
    }
    assert_eq!(back, want);
    parsed
}

/// nsq-rs writes a client's topology (Go after v1.3.0) right after `user_agent`.
const CLIENT_TOPOLOGY: (&str, &str) = (
    r#""user_agent":"fixture/1.0","#,
    r#""user_agent":"fixture/1.0","topology_zone":"","topology_region":"","#,
);

/// And a producer's after its `version`.
const PEER_TOPOLOGY: (&str, &str) = (
    r#""version":"1.3.0","tombstones""#,
    r#""version":"1.3.0","topology_zone":"","topology_region":"","tombstones""#,
);

#[test]
fn go_nsqd_stats_round_trip() {
    let s: nsqd::Stats = round_trip(fixture!("nsqd-stats.json"), &[CLIENT_TOPOLOGY]);
    assert_eq!(s.version, "1.3.0");
    let topics = s.topics.as_deref().unwrap();
    let t = &topics[1];
    assert_eq!(
        (t.topic_name.as_str(), t.message_count, t.message_bytes),
        ("fixture_topic", 8, 35)
    );
    let c = &t.channels[0];
    assert_eq!(
        (c.channel_name.as_str(), c.in_flight_count, c.client_count),
        ("fixture_channel", 2, 1)
    );
    let client = &c.clients.as_deref().unwrap()[0];
    assert_eq!(
        (client.client_id.as_str(), client.state, client.finish_count),
        ("consumer", 3, 1)
    );
    let p = &c.e2e_processing_latency.percentiles.as_deref().unwrap()[0];
    assert_eq!((p.quantile, p.value), (0.99, 243_983.0));
    assert!(t.channels[1].paused);
    assert_eq!(s.memory.unwrap().next_gc_bytes, 4_194_304);
    let producer = &s.producers.as_deref().unwrap()[0];
    assert_eq!(producer.pub_counts[0].count, 8);

    let s: nsqd::Stats = round_trip(fixture!("nsqd-stats-noclients.json"), &[]);
    assert!(s.memory.is_none() && s.producers.is_none());
    assert!(s.topics.unwrap()[1].channels[0].clients.is_none());
}

#[test]
fn go_nsqd_info_round_trip() {
    let i: nsqd::Info = round_trip(
        fixture!("nsqd-info.json"),
        &[(
            r#""max_deflate_level":6}"#,
            r#""max_deflate_level":6,"topology_zone":"","topology_region":""}"#,
        )],
    );
    assert_eq!((i.http_port, i.max_output_buffer_size), (26151, 65536));
}

#[test]
fn go_lookupd_round_trip() {
    let l: lookupd::Lookup = round_trip(
        fixture!("lookupd-lookup.json"),
        &[(
            r#""version":"1.3.0"}"#,
            r#""version":"1.3.0","topology_zone":"","topology_region":""}"#,
        )],
    );
    assert_eq!(l.channels, ["other_channel", "fixture_channel"]);
    assert_eq!(l.producers[0].tcp_address(), "127.0.0.1:26150");
    assert_eq!(l.producers[0].http_address(), "127.0.0.1:26151");
    // Go's node embeds the peer's fields, then adds its own.
    let n: lookupd::Nodes = round_trip(fixture!("lookupd-nodes.json"), &[PEER_TOPOLOGY]);
    assert_eq!(n.producers[0].topics, ["fixture_topic", "empty_topic"]);
    assert_eq!(n.producers[0].tombstones, [false, false]);
    let t: lookupd::Topics = round_trip(fixture!("lookupd-topics.json"), &[]);
    assert_eq!(t.topics.len(), 2);
    let c: lookupd::Channels = round_trip(fixture!("lookupd-channels.json"), &[]);
    assert_eq!(c.channels.len(), 2);
    let i: lookupd::Info = round_trip(fixture!("lookupd-info.json"), &[]);
    assert_eq!(i.version, "1.3.0");
}

#[test]
fn readers_are_lenient() {
    // Unknown fields, missing fields and null lists: an nsqd or lookupd of another version.
    let s: nsqd::Stats = serde_json::from_str(
        r#"{"version":"9.9","future":{"x":1},"topics":[{"topic_name":"t","channels":null,
        "new_field":[1,2]},{"topic_name":"u","channels":[{"channel_name":"c","clients":[{}]}]}]}"#,
    )
    .unwrap();
    let topics = s.topics.unwrap();
    assert!(topics[0].channels.is_empty());
    assert_eq!(
        topics[0].e2e_processing_latency,
        nsqd::E2eLatency::default()
    );
    assert_eq!(topics[1].channels[0].clients.as_ref().unwrap()[0].state, 0);
    let l: lookupd::Lookup = serde_json::from_str(r#"{"producers":null,"extra":1}"#).unwrap();
    assert!(l.producers.is_empty() && l.channels.is_empty());
    let n: lookupd::Nodes =
        serde_json::from_str(r#"{"producers":[{"hostname":"h","topics":null,"zzz":0}]}"#).unwrap();
    assert_eq!(n.producers[0].peer.hostname, "h");
}

#[test]
fn renders_nsq_rs_extensions_only_when_in_use() {
    let mut c = nsqd::ChannelStats::<String> {
        channel_name: "c".into(),
        ..Default::default()
    };
    let plain = String::from_utf8(crate::json::to_vec(&c)).unwrap();
    for k in [
        "expired_count",
        "zone_local_msg_count",
        "config",
        "dropped_count",
    ] {
        assert!(!plain.contains(k), "{plain}");
    }
    assert!(plain.contains(r#""e2e_processing_latency":{"count":0,"percentiles":null}"#));
    c.expired_count = 2;
    c.config = Some(serde_json::json!({"ttl": "1s"}));
    let with = String::from_utf8(crate::json::to_vec(&c)).unwrap();
    assert!(
        with.contains(r#""timeout_count":0,"expired_count":2,"client_count":0"#),
        "{with}"
    );
    assert!(with.ends_with(r#""config":{"ttl":"1s"}}"#), "{with}");
}

#[test]
fn reads_the_pre_1_0_envelope() {
    let t: lookupd::Topics =
        super::from_body(br#"{"status_code":200,"status_txt":"OK","data":{"topics":["a"]}}"#)
            .unwrap();
    assert_eq!(t.topics, ["a"]);
    let t: lookupd::Topics = super::from_body(br#"{"topics":["b"]}"#).unwrap();
    assert_eq!(t.topics, ["b"]);
    let t: lookupd::Topics =
        super::from_body(br#"{"status_code":200,"status_txt":"OK","data":null}"#).unwrap();
    assert!(t.topics.is_empty());
    let e = super::from_body::<lookupd::Topics>(
        br#"{"status_code":500,"status_txt":"INTERNAL_ERROR","data":null}"#,
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "status_code 500 INTERNAL_ERROR");
    assert!(super::from_body::<lookupd::Topics>(b"not json").is_err());
}
