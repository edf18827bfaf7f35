//! Handler tests through [`router`] with no socket (`any_service(router).call(..)`, axum's
//! in-process entry point). The database is filled directly, as the TCP side would.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::json;

use super::*;
use crate::config::Options;
use nsq_http::service::TEXT_CONTENT_TYPE;
use nsq_http::testing::Resp;

fn lookupd(args: &[&str]) -> Arc<Nsqlookupd> {
    let opts = Options::parse_from(std::iter::once("nsqlookupd").chain(args.iter().copied()))
        .expect("test options parse");
    Nsqlookupd::new(
        opts,
        "127.0.0.1:4160".parse().unwrap(),
        "127.0.0.1:4161".parse().unwrap(),
    )
}

async fn send(l: &Arc<Nsqlookupd>, method: &str, uri: &str) -> Resp {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    nsq_http::testing::call(router(l.clone()), req).await
}

async fn get(l: &Arc<Nsqlookupd>, uri: &str) -> Resp {
    send(l, "GET", uri).await
}

async fn post(l: &Arc<Nsqlookupd>, uri: &str) -> Resp {
    send(l, "POST", uri).await
}

/// Adds an identified peer as the TCP side would.
fn add_peer(l: &Nsqlookupd, id: &str, http_port: i64) {
    let now = l.clock.now();
    l.db().add_peer(PeerInfo {
        id: id.into(),
        remote_address: id.into(),
        hostname: "host<1>".into(),
        broadcast_address: "bcast".into(),
        tcp_port: http_port - 1,
        http_port,
        version: "1.3.0".into(),
        topology_zone: "z".into(),
        topology_region: "r".into(),
        last_update: now,
    });
}

fn register(l: &Nsqlookupd, id: &str, topic: &str, channel: Option<&str>) {
    let mut db = l.db();
    if let Some(c) = channel {
        db.add_producer(Registration::channel(topic, c), id);
    }
    db.add_producer(Registration::topic(topic), id);
}

#[tokio::test]
async fn ping_info_and_fallbacks() {
    let l = lookupd(&[]);
    let r = get(&l, "/ping").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "OK");
    assert_eq!(r.header("content-type"), Some(TEXT_CONTENT_TYPE));
    assert_eq!(r.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    assert_eq!(get(&l, "/info").await.text(), r#"{"version":"1.3.0"}"#);
    get(&l, "/nope").await.assert_err(404, "NOT_FOUND");
    get(&l, "/debug/pprof").await.assert_err(404, "NOT_FOUND");
    post(&l, "/ping")
        .await
        .assert_err(405, "METHOD_NOT_ALLOWED");
    get(&l, "/topic/create?topic=t")
        .await
        .assert_err(405, "METHOD_NOT_ALLOWED");
    post(&l, "/lookup?topic=t")
        .await
        .assert_err(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn argument_errors() {
    let l = lookupd(&[]);
    get(&l, "/lookup")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    get(&l, "/lookup?topic=%zz")
        .await
        .assert_err(400, "INVALID_REQUEST");
    get(&l, "/lookup?topic=nope")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");
    get(&l, "/lookup?topic=")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");
    get(&l, "/channels")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&l, "/topic/create")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&l, "/topic/create?topic=a/b")
        .await
        .assert_err(400, "INVALID_ARG_TOPIC");
    post(&l, "/topic/create?topic=")
        .await
        .assert_err(400, "INVALID_ARG_TOPIC");
    post(&l, "/topic/delete")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&l, "/channel/create?topic=t")
        .await
        .assert_err(400, "MISSING_ARG_CHANNEL");
    post(&l, "/channel/create?channel=c")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&l, "/channel/create?topic=t&channel=c!")
        .await
        .assert_err(400, "INVALID_ARG_CHANNEL");
    post(&l, "/channel/delete?topic=t!&channel=c")
        .await
        .assert_err(400, "INVALID_ARG_TOPIC");
    post(&l, "/channel/delete?topic=t&channel=c")
        .await
        .assert_err(404, "CHANNEL_NOT_FOUND");
    post(&l, "/topic/tombstone?node=x:1")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&l, "/topic/tombstone?topic=t")
        .await
        .assert_err(400, "MISSING_ARG_NODE");
}

#[tokio::test]
async fn create_and_delete_registrations() {
    let l = lookupd(&[]);
    assert_eq!(get(&l, "/topics").await.text(), r#"{"topics":[]}"#);
    post(&l, "/topic/create?topic=b").await.assert_empty_ok();
    post(&l, "/channel/create?topic=a&channel=c2")
        .await
        .assert_empty_ok();
    post(&l, "/channel/create?topic=a&channel=c1")
        .await
        .assert_empty_ok();
    assert_eq!(
        get(&l, "/topics").await.ok_json(),
        json!({"topics": ["a", "b"]})
    );
    assert_eq!(
        get(&l, "/channels?topic=a").await.ok_json(),
        json!({"channels": ["c1", "c2"]})
    );
    assert_eq!(
        get(&l, "/channels?topic=zz").await.text(),
        r#"{"channels":[]}"#
    );
    // A registered topic without producers is found, with no producers.
    assert_eq!(
        get(&l, "/lookup?topic=a").await.text(),
        r#"{"channels":["c1","c2"],"producers":[]}"#
    );
    post(&l, "/channel/delete?topic=a&channel=c1")
        .await
        .assert_empty_ok();
    assert_eq!(
        get(&l, "/channels?topic=a").await.ok_json(),
        json!({"channels": ["c2"]})
    );
    post(&l, "/topic/delete?topic=a").await.assert_empty_ok();
    post(&l, "/topic/delete?topic=never-existed")
        .await
        .assert_empty_ok();
    assert_eq!(get(&l, "/topics").await.ok_json(), json!({"topics": ["b"]}));
    assert_eq!(
        get(&l, "/channels?topic=a").await.ok_json(),
        json!({"channels": []})
    );
}

#[tokio::test]
async fn lookup_nodes_and_tombstones() {
    let l = lookupd(&[]);
    add_peer(&l, "127.0.0.1:1000", 4151);
    add_peer(&l, "127.0.0.1:2000", 5151);
    register(&l, "127.0.0.1:1000", "t", Some("c"));
    register(&l, "127.0.0.1:2000", "t", None);
    register(&l, "127.0.0.1:2000", "u", None);

    let r = get(&l, "/lookup?topic=t").await;
    assert_eq!(
        r.text(),
        concat!(
            r#"{"channels":["c"],"producers":["#,
            r#"{"remote_address":"127.0.0.1:1000","hostname":"host\u003c1\u003e","broadcast_address":"bcast","tcp_port":4150,"http_port":4151,"version":"1.3.0","topology_zone":"z","topology_region":"r"},"#,
            r#"{"remote_address":"127.0.0.1:2000","hostname":"host\u003c1\u003e","broadcast_address":"bcast","tcp_port":5150,"http_port":5151,"version":"1.3.0","topology_zone":"z","topology_region":"r"}]}"#
        )
    );

    post(&l, "/topic/tombstone?topic=t&node=bcast:5151")
        .await
        .assert_empty_ok();
    // Unknown topics and nodes are fine.
    post(&l, "/topic/tombstone?topic=x&node=nowhere:1")
        .await
        .assert_empty_ok();
    let v = get(&l, "/lookup?topic=t").await.ok_json();
    let addrs: Vec<&str> = v["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["remote_address"].as_str().unwrap())
        .collect();
    assert_eq!(addrs, ["127.0.0.1:1000"]);
    // Only for that topic.
    assert_eq!(
        get(&l, "/lookup?topic=u").await.ok_json()["producers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let nodes = get(&l, "/nodes").await.ok_json();
    assert_eq!(
        nodes,
        json!({"producers": [
            {"remote_address": "127.0.0.1:1000", "hostname": "host<1>", "broadcast_address": "bcast",
             "tcp_port": 4150, "http_port": 4151, "version": "1.3.0", "topology_zone": "z",
             "topology_region": "r", "tombstones": [false], "topics": ["t"]},
            {"remote_address": "127.0.0.1:2000", "hostname": "host<1>", "broadcast_address": "bcast",
             "tcp_port": 5150, "http_port": 5151, "version": "1.3.0", "topology_zone": "z",
             "topology_region": "r", "tombstones": [true, false], "topics": ["t", "u"]}
        ]})
    );
    // Field order as Go's struct.
    let text = get(&l, "/nodes").await.text().to_owned();
    assert!(
        text.starts_with(r#"{"producers":[{"remote_address":"127.0.0.1:1000","hostname""#),
        "{text}"
    );
    assert!(text.contains(r#""topology_region":"r","tombstones":[false],"topics":["t"]}"#));

    let debug = get(&l, "/debug").await.ok_json();
    let obj = debug.as_object().unwrap();
    let keys: Vec<&String> = obj.keys().collect();
    assert_eq!(keys, ["channel:t:c", "client::", "topic:t:", "topic:u:"]);
    let t = &debug["topic:t:"];
    assert_eq!(t.as_array().unwrap().len(), 2);
    assert_eq!(t[0]["id"], "127.0.0.1:1000");
    assert_eq!(t[0]["tombstoned"], false);
    assert_eq!(t[0]["tombstoned_at"], GO_ZERO_TIME_UNIX_NANO);
    assert_eq!(t[1]["tombstoned"], true);
    assert!(t[1]["tombstoned_at"].as_i64().unwrap() > 1_600_000_000_000_000_000);
    assert!(t[0]["last_update"].as_i64().unwrap() > 1_600_000_000_000_000_000);
    let raw = get(&l, "/debug").await.text().to_owned();
    assert!(raw.contains(r#"[{"broadcast_address":"bcast","hostname":"host\u003c1\u003e","http_port":4151,"id":"127.0.0.1:1000","last_update":"#), "{raw}");
}

#[tokio::test]
async fn inactive_producers_are_hidden() {
    let l = lookupd(&["--inactive-producer-timeout=1ms"]);
    add_peer(&l, "127.0.0.1:1000", 4151);
    register(&l, "127.0.0.1:1000", "t", None);
    // Last update at the clock's origin; let more than the timeout pass.
    l.db().touch("127.0.0.1:1000", 0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(
        get(&l, "/lookup?topic=t").await.text(),
        r#"{"channels":[],"producers":[]}"#
    );
    assert_eq!(get(&l, "/nodes").await.text(), r#"{"producers":[]}"#);
    // The topic is still listed; a PING brings the producer back.
    assert_eq!(get(&l, "/topics").await.ok_json(), json!({"topics": ["t"]}));
    let future = l.clock.now() + 60_000_000_000;
    l.db().touch("127.0.0.1:1000", future);
    assert_eq!(
        get(&l, "/lookup?topic=t").await.ok_json()["producers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
