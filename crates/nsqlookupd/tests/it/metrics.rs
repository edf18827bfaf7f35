//! Prometheus `GET /metrics` on a real nsqlookupd, fed by a V1 client registering as an nsqd.

use crate::harness::TestLookupd;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_count_nodes_topics_channels_and_topic_producers() {
    let l = TestLookupd::start(&[]);
    let r = l.http("GET", "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(value(&r.body, "nsq_lookupd_producers"), 0.0);
    assert_eq!(value(&r.body, "nsq_lookupd_topics"), 0.0);
    assert!(
        r.body
            .contains("nsq_build_info{daemon=\"nsqlookupd\",version=\"1.3.0\""),
        "{}",
        r.body
    );
    assert!(value(&r.body, "process_resident_memory_bytes") > 0.0);

    let mut a = l.client();
    a.identify("node-a", 4150, 4151);
    a.cmd("REGISTER orders billing", "OK");
    a.cmd("REGISTER orders", "OK");
    let mut b = l.client();
    b.identify("node-b", 4150, 4151);
    b.cmd("REGISTER orders", "OK");
    b.cmd("REGISTER audit", "OK");
    let text = l.http("GET", "/metrics").body;
    assert_eq!(value(&text, "nsq_lookupd_producers"), 2.0);
    assert_eq!(value(&text, "nsq_lookupd_topics"), 2.0);
    assert_eq!(value(&text, "nsq_lookupd_channels"), 1.0);
    assert_eq!(
        value(&text, r#"nsq_lookupd_topic_producers{topic="orders"}"#),
        2.0
    );
    assert_eq!(
        value(&text, r#"nsq_lookupd_topic_producers{topic="audit"}"#),
        1.0
    );

    // A tombstoned producer is no longer one /lookup returns.
    let r = l.http("POST", "/topic/tombstone?topic=orders&node=node-b:4151");
    assert_eq!(r.status, 200, "{}", r.body);
    let text = l.http("GET", "/metrics").body;
    assert_eq!(
        value(&text, r#"nsq_lookupd_topic_producers{topic="orders"}"#),
        1.0
    );
}
