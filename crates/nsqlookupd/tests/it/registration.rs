use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_until, TestLookupd};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn identify_register_unregister() {
    let l = TestLookupd::start(&["--broadcast-address=lookupd-bcast"]);
    let mut c = l.client();
    let resp = c.identify("nsqd-1", 4150, 4151);
    let host = resp["hostname"].as_str().unwrap().to_owned();
    assert_eq!(
        resp,
        json!({
            "broadcast_address": "lookupd-bcast",
            "hostname": host,
            "http_port": l.http.port(),
            "tcp_port": l.tcp.port(),
            "version": "1.3.0",
        })
    );
    // A topic that nobody registered is 404.
    assert_eq!(l.http("GET", "/lookup?topic=t").status, 404);

    c.cmd("REGISTER t c", "OK");
    c.cmd("REGISTER t", "OK");
    c.cmd("PING", "OK");
    let me = c.local_addr();
    let v = l.get_json("/lookup?topic=t");
    assert_eq!(
        v,
        json!({"channels": ["c"], "producers": [{
            "remote_address": me, "hostname": "test-host", "broadcast_address": "nsqd-1",
            "tcp_port": 4150, "http_port": 4151, "version": "1.3.0",
            "topology_zone": "", "topology_region": ""}]})
    );
    assert_eq!(l.get_json("/topics"), json!({"topics": ["t"]}));
    assert_eq!(l.get_json("/channels?topic=t"), json!({"channels": ["c"]}));
    let nodes = l.get_json("/nodes");
    assert_eq!(nodes["producers"][0]["topics"], json!(["t"]));
    assert_eq!(nodes["producers"][0]["tombstones"], json!([false]));
    let r = l.http("GET", "/lookup?topic=t");
    assert_eq!(r.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );

    // Channel form: the channel registration stays (not ephemeral), the topic producer too.
    c.cmd("UNREGISTER t c", "OK");
    assert_eq!(l.get_json("/channels?topic=t"), json!({"channels": ["c"]}));
    assert_eq!(l.lookup_producers("t"), std::slice::from_ref(&me));
    // Topic form: the producer disappears, the topic stays listed (as in Go).
    c.cmd("UNREGISTER t", "OK");
    assert!(l.lookup_producers("t").is_empty());
    assert_eq!(l.get_json("/topics"), json!({"topics": ["t"]}));
    // Pipelined commands are answered in order.
    c.write(b"REGISTER a\nREGISTER b x\nPING\n");
    for _ in 0..3 {
        assert_eq!(c.read_text(), "OK");
    }
    assert_eq!(l.lookup_producers("b"), [me]);
}

#[test]
fn producers_disappear_on_disconnect() {
    let l = TestLookupd::start(&[]);
    let mut a = l.client();
    a.identify("a", 1, 2);
    a.cmd("REGISTER t c", "OK");
    let mut b = l.client();
    b.identify("b", 3, 4);
    b.cmd("REGISTER t", "OK");
    assert_eq!(l.lookup_producers("t").len(), 2);
    let b_addr = b.local_addr();
    drop(a);
    wait_until(WAIT, "a's registrations removed", || {
        l.lookup_producers("t") == [b_addr.clone()]
    });
    assert_eq!(
        l.get_json("/nodes")["producers"].as_array().unwrap().len(),
        1
    );
    // Registrations stay listed without producers (Go).
    assert_eq!(l.get_json("/channels?topic=t"), json!({"channels": ["c"]}));
    drop(b);
    wait_until(WAIT, "b's registrations removed", || {
        l.lookup_producers("t").is_empty()
    });
    assert_eq!(l.get_json("/nodes"), json!({"producers": []}));
    assert_eq!(l.get_json("/debug"), json!({}));
}

#[test]
fn inactive_producers_time_out_until_they_ping() {
    let l = TestLookupd::start(&["--inactive-producer-timeout=1s"]);
    let mut c = l.client();
    c.identify("a", 1, 2);
    c.cmd("REGISTER t", "OK");
    assert_eq!(l.lookup_producers("t").len(), 1);
    wait_until(WAIT, "producer to go inactive", || {
        l.lookup_producers("t").is_empty()
    });
    assert_eq!(l.get_json("/nodes"), json!({"producers": []}));
    c.cmd("PING", "OK");
    assert_eq!(l.lookup_producers("t").len(), 1);
    assert_eq!(
        l.get_json("/nodes")["producers"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn tombstone_hides_a_producer_for_its_lifetime() {
    let l = TestLookupd::start(&["--tombstone-lifetime=1s"]);
    let mut a = l.client();
    a.identify("nsqd-a", 4150, 4151);
    a.cmd("REGISTER t", "OK");
    a.cmd("REGISTER u", "OK");
    let mut b = l.client();
    b.identify("nsqd-b", 4150, 4151);
    b.cmd("REGISTER t", "OK");
    let a_addr = a.local_addr();
    let b_addr = b.local_addr();

    let r = l.http("POST", "/topic/tombstone?topic=t&node=nsqd-a:4151");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "");
    assert_eq!(l.lookup_producers("t"), std::slice::from_ref(&b_addr));
    assert_eq!(l.lookup_producers("u"), std::slice::from_ref(&a_addr));
    let nodes = l.get_json("/nodes");
    let node_a = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["remote_address"] == a_addr.as_str())
        .unwrap()
        .clone();
    assert_eq!(node_a["topics"], json!(["t", "u"]));
    assert_eq!(node_a["tombstones"], json!([true, false]));
    wait_until(WAIT, "tombstone to expire", || {
        l.lookup_producers("t").len() == 2
    });
}

#[test]
fn ephemeral_registrations_go_with_their_last_producer() {
    let l = TestLookupd::start(&[]);
    let mut a = l.client();
    a.identify("a", 1, 2);
    let mut b = l.client();
    b.identify("b", 3, 4);
    for c in [&mut a, &mut b] {
        c.cmd("REGISTER e#ephemeral c#ephemeral", "OK");
        c.cmd("REGISTER t c#ephemeral", "OK");
    }
    let chans = |topic: &str| l.get_json(&format!("/channels?topic={}", topic.replace('#', "%23")));
    assert_eq!(chans("e#ephemeral"), json!({"channels": ["c#ephemeral"]}));
    // One producer left: still registered.
    a.cmd("UNREGISTER e#ephemeral c#ephemeral", "OK");
    assert_eq!(chans("e#ephemeral"), json!({"channels": ["c#ephemeral"]}));
    // The last one unregisters: the channel goes, then the topic.
    b.cmd("UNREGISTER e#ephemeral c#ephemeral", "OK");
    assert_eq!(chans("e#ephemeral"), json!({"channels": []}));
    a.cmd("UNREGISTER e#ephemeral", "OK");
    b.cmd("UNREGISTER e#ephemeral", "OK");
    assert_eq!(l.get_json("/topics"), json!({"topics": ["t"]}));
    assert_eq!(l.http("GET", "/lookup?topic=e%23ephemeral").status, 404);
    // Disconnecting producers also drops ephemeral registrations left without producers.
    drop(a);
    wait_until(WAIT, "a gone", || l.lookup_producers("t").len() == 1);
    assert_eq!(chans("t"), json!({"channels": ["c#ephemeral"]}));
    drop(b);
    wait_until(WAIT, "ephemeral channel gone", || {
        chans("t") == json!({"channels": []})
    });
    assert_eq!(l.get_json("/topics"), json!({"topics": ["t"]}));
}

#[test]
fn http_registrations_and_deletes() {
    let l = TestLookupd::start(&[]);
    assert_eq!(l.http("POST", "/topic/create?topic=h").status, 200);
    assert_eq!(
        l.http("POST", "/channel/create?topic=h&channel=c").status,
        200
    );
    assert_eq!(
        l.get_json("/lookup?topic=h"),
        json!({"channels": ["c"], "producers": []})
    );
    let mut c = l.client();
    c.identify("a", 1, 2);
    c.cmd("REGISTER h c", "OK");
    assert_eq!(l.lookup_producers("h").len(), 1);
    let r = l.http("POST", "/channel/delete?topic=h&channel=nope");
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, r#"{"message":"CHANNEL_NOT_FOUND"}"#)
    );
    assert_eq!(l.http("POST", "/topic/delete?topic=h").status, 200);
    assert_eq!(l.http("GET", "/lookup?topic=h").status, 404);
    assert_eq!(l.get_json("/topics"), json!({"topics": []}));
    // The nsqd re-registering brings it back.
    c.cmd("REGISTER h", "OK");
    assert_eq!(l.lookup_producers("h").len(), 1);
}
