//! Topology-aware consumption (`--enable-experiment=topology-aware-consumption`, Go nsqd after
//! v1.3.0): a channel gives its messages to the consumer in nsqd's zone while that one has
//! RDY credit; the others take over when it has none.

use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_until, RawClient, TestNsqd, READ_TIMEOUT};

fn body(m: &nsq_protocol::Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

fn consumer(nsqd: &TestNsqd, zone: &str, region: &str, rdy: u64) -> (RawClient, serde_json::Value) {
    let mut c = nsqd.client();
    let r = c.identify_negotiate(&json!({
        "client_id": zone, "topology_zone": zone, "topology_region": region,
    }));
    c.sub_ok("topo", "ch", rdy);
    (c, r)
}

fn read_n(c: &mut RawClient, n: usize) -> Vec<nsq_protocol::Message> {
    (0..n).map(|_| c.read_message(READ_TIMEOUT)).collect()
}

/// Nothing more arrives at `c` (a negative check: bounded, not a synchronisation sleep).
fn nothing_for(c: &mut RawClient) {
    c.expect_no_frame(Duration::from_millis(300));
}

#[test]
fn same_zone_consumer_is_preferred_while_it_has_rdy() {
    let nsqd = TestNsqd::start(&[
        "--enable-experiment=topology-aware-consumption",
        "--topology-zone=z1",
        "--topology-region=r1",
    ]);
    let (mut local, r) = consumer(&nsqd, "z1", "r1", 5);
    assert_eq!(r["topology_zone"], "z1", "IDENTIFY response: {r}");
    assert_eq!(r["topology_region"], "r1", "IDENTIFY response: {r}");
    let (mut remote, _) = consumer(&nsqd, "z2", "r2", 100);
    wait_until(READ_TIMEOUT, "both consumers' RDY in /stats", || {
        nsqd.channel_stats("topo", "ch").is_some_and(|ch| {
            let clients = ch["clients"].as_array().cloned().unwrap_or_default();
            clients.len() == 2 && clients.iter().all(|c| c["ready_count"].as_u64() > Some(0))
        })
    });
    let ch = nsqd.channel_stats("topo", "ch").unwrap();
    let zones: Vec<&str> = ch["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["topology_zone"].as_str().unwrap())
        .collect();
    assert!(zones.contains(&"z1") && zones.contains(&"z2"), "{ch}");

    let mut p = nsqd.client();
    // While the same-zone consumer has credit, it gets everything (one at a time, so each
    // publish finds it waiting).
    for i in 0..3 {
        p.pub_ok("topo", format!("a{i}").as_bytes());
    }
    let got = read_n(&mut local, 3);
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["a0", "a1", "a2"]);
    nothing_for(&mut remote);

    // A batch larger than its remaining credit (2): it fills its RDY, the other takes the rest.
    let batch: Vec<String> = (0..6).map(|i| format!("b{i}")).collect();
    p.mpub("topo", &batch);
    p.expect_ok();
    let mine = read_n(&mut local, 2);
    assert_eq!(mine.iter().map(body).collect::<Vec<_>>(), ["b0", "b1"]);
    let theirs = read_n(&mut remote, 4);
    assert_eq!(
        theirs.iter().map(body).collect::<Vec<_>>(),
        ["b2", "b3", "b4", "b5"]
    );
    nothing_for(&mut local);

    // FINs give it credit back: preferred again.
    for m in got.iter().chain(&mine) {
        local.fin(&m.id);
    }
    for m in &theirs {
        remote.fin(&m.id);
    }
    // FIN has no answer: publish only once nsqd has applied them (else the same-zone consumer
    // may still be without credit, and the other one rightly gets c0).
    wait_until(READ_TIMEOUT, "both consumers' FINs applied", || {
        nsqd.channel_stats("topo", "ch").is_some_and(|ch| {
            ch["clients"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["in_flight_count"] == 0)
        })
    });
    p.pub_ok("topo", b"c0");
    assert_eq!(body(&local.read_message(READ_TIMEOUT)), "c0");
    nothing_for(&mut remote);

    // RDY 0: the other consumer gets the messages.
    local.rdy(0);
    wait_until(READ_TIMEOUT, "the local consumer's RDY 0 in /stats", || {
        nsqd.channel_stats("topo", "ch").is_some_and(|ch| {
            ch["clients"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["topology_zone"] == "z1" && c["ready_count"] == 0)
        })
    });
    for i in 0..3 {
        p.pub_ok("topo", format!("d{i}").as_bytes());
    }
    let got = read_n(&mut remote, 3);
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["d0", "d1", "d2"]);
    nothing_for(&mut local);

    // Go's per-channel locality counters (omitted when 0: no region-only consumer here).
    let ch = nsqd.channel_stats("topo", "ch").unwrap();
    assert_eq!(ch["zone_local_msg_count"], 6, "{ch}");
    assert_eq!(ch["global_msg_count"], 7, "{ch}");
    assert!(ch.get("region_local_msg_count").is_none(), "{ch}");
}

#[test]
fn without_the_experiment_zones_change_nothing() {
    let nsqd = TestNsqd::start(&["--topology-zone=z1", "--topology-region=r1"]);
    let (mut local, r) = consumer(&nsqd, "z1", "r1", 100);
    assert_eq!(r["topology_zone"], "z1", "still reported: {r}");
    let (mut remote, _) = consumer(&nsqd, "z2", "r2", 100);
    wait_until(READ_TIMEOUT, "both consumers' RDY in /stats", || {
        nsqd.channel_stats("topo", "ch").is_some_and(|ch| {
            let clients = ch["clients"].as_array().cloned().unwrap_or_default();
            clients.len() == 2 && clients.iter().all(|c| c["ready_count"].as_u64() > Some(0))
        })
    });
    // Both take part: 40 single publishes are shared, none is held for the same-zone one.
    let mut p = nsqd.client();
    for i in 0..40 {
        p.pub_ok("topo", format!("m{i}").as_bytes());
    }
    let mut n_local = 0;
    let mut n_remote = 0;
    wait_until(READ_TIMEOUT, "all 40 delivered", || {
        while let Ok(Some(_)) = local.try_read_frame(Duration::from_millis(5)) {
            n_local += 1;
        }
        while let Ok(Some(_)) = remote.try_read_frame(Duration::from_millis(5)) {
            n_remote += 1;
        }
        n_local + n_remote == 40
    });
    assert!(
        n_remote > 0,
        "the other zone's consumer got nothing ({n_local} local)"
    );
    let ch = nsqd.channel_stats("topo", "ch").unwrap();
    assert!(ch.get("global_msg_count").is_none(), "1.3.0's shape: {ch}");
}

#[test]
fn identify_topology_fields_must_be_strings() {
    let nsqd = TestNsqd::start(&["--enable-experiment=topology-aware-consumption"]);
    for field in ["topology_zone", "topology_region"] {
        let mut c = nsqd.client();
        c.identify(&json!({ field: 1 }));
        // Go's json.Unmarshal fails on the whole body (protocol_v2.go IDENTIFY).
        assert_eq!(
            c.expect_error("E_BAD_BODY"),
            "E_BAD_BODY IDENTIFY failed to decode JSON body"
        );
        c.expect_closed();
    }
}
