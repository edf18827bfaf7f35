//! Handler tests through [`router`] with no socket: requests go straight into the axum
//! service (`nsq_http::testing::call`: axum's own in-process entry point, so no
//! `tower` dependency is needed). A few tests at the end use a real listener for what only
//! hyper's connection handling decides (non-HTTP bytes, graceful shutdown).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use super::*;
use crate::client::ClientInfo;
use crate::config::Options;
use crate::state::channel::MsgRef;
use nsq_http::service::JSON_CONTENT_TYPE;
use nsq_http::testing::Resp;

fn nsqd(args: &[&str]) -> Arc<Nsqd> {
    let opts = Options::parse_from(std::iter::once("nsqd").chain(args.iter().copied()))
        .expect("test options parse");
    Nsqd::new(opts)
}

async fn send(n: &Arc<Nsqd>, req: Request<Body>) -> Resp {
    nsq_http::testing::call(router(n.clone()), req).await
}

/// A request with a correct Content-Length, as real clients send.
async fn call(n: &Arc<Nsqd>, method: &str, uri: &str, body: impl AsRef<[u8]>) -> Resp {
    let body = body.as_ref().to_vec();
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap();
    send(n, req).await
}

async fn get(n: &Arc<Nsqd>, uri: &str) -> Resp {
    call(n, "GET", uri, b"").await
}

async fn post(n: &Arc<Nsqd>, uri: &str, body: impl AsRef<[u8]>) -> Resp {
    call(n, "POST", uri, body).await
}

/// A chunked body (no Content-Length) made of `chunks`, followed by an endless stream of
/// `filler` when given: proves that a handler stops reading at its limit.
fn chunked(chunks: Vec<&'static [u8]>, filler: Option<&'static [u8]>) -> Body {
    let head = futures::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
    );
    match filler {
        None => Body::from_stream(head),
        Some(f) => Body::from_stream(head.chain(futures::stream::repeat_with(move || {
            Ok::<_, std::io::Error>(Bytes::from_static(f))
        }))),
    }
}

async fn post_chunked(n: &Arc<Nsqd>, uri: &str, body: Body) -> Resp {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .body(body)
        .unwrap();
    send(n, req).await
}

/// Drains a channel's ready messages (as a consumer would), returning the bodies.
fn drain(ch: &crate::channel::Channel) -> Vec<Vec<u8>> {
    let mut st = ch.state.lock();
    st.add_consumer(u64::MAX);
    let mut out: Vec<MsgRef> = Vec::new();
    st.pop(u64::MAX, 1 << 20, 1 << 20, 1_000_000_000, 0, None, &mut out);
    out.iter().map(|m| m.batch.body(m.idx).to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// General behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ping_is_raw_ok() {
    let n = nsqd(&[]);
    get(&n, "/ping").await.assert_ok_text();
}

#[tokio::test]
async fn unknown_path_is_404_json() {
    let n = nsqd(&[]);
    get(&n, "/nope").await.assert_err(404, "NOT_FOUND");
    post(&n, "/put?topic=t", b"x")
        .await
        .assert_err(404, "NOT_FOUND");
    post(&n, "/create_topic?topic=t", b"")
        .await
        .assert_err(404, "NOT_FOUND");
    get(&n, "/debug/pprof/").await.assert_err(404, "NOT_FOUND");
    get(&n, "/config/a/b").await.assert_err(404, "NOT_FOUND");
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let n = nsqd(&[]);
    for (m, p) in [
        ("GET", "/pub?topic=t"),
        ("GET", "/mpub?topic=t"),
        ("POST", "/ping"),
        ("POST", "/stats"),
        ("PUT", "/info"),
        ("GET", "/topic/create?topic=t"),
        ("GET", "/channel/pause?topic=t&channel=c"),
        ("POST", "/config/max_msg_size"),
        ("DELETE", "/topic/delete?topic=t"),
    ] {
        call(&n, m, p, b"")
            .await
            .assert_err(405, "METHOD_NOT_ALLOWED");
    }
    assert!(
        n.topic("t").is_none(),
        "a refused request must not create the topic"
    );
}

#[tokio::test]
async fn info_matches_go_shape() {
    let n = nsqd(&[
        "--broadcast-address=bcast.example",
        "--max-heartbeat-interval=30s",
        "--max-output-buffer-size=1000",
        "--max-output-buffer-timeout=2s",
        "--max-deflate-level=3",
        "--topology-zone=z1",
        "--topology-region=r1",
    ]);
    *n.tcp_addr.lock() = Some("127.0.0.1:4150".parse().unwrap());
    *n.http_addr.lock() = Some("127.0.0.1:4151".parse().unwrap());
    let r = get(&n, "/info").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(JSON_CONTENT_TYPE));
    assert_eq!(r.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    let expected = format!(
        r#"{{"version":"1.3.0","broadcast_address":"bcast.example","hostname":{},"http_port":4151,"tcp_port":4150,"start_time":{},"max_heartbeat_interval":30000000000,"max_output_buffer_size":1000,"max_output_buffer_timeout":2000000000,"max_deflate_level":3,"topology_zone":"z1","topology_region":"r1"}}"#,
        String::from_utf8(json::to_vec(&crate::config::hostname())).unwrap(),
        n.start_time
    );
    assert_eq!(r.text(), expected);
}

#[tokio::test]
async fn malformed_query_is_invalid_request() {
    let n = nsqd(&[]);
    post(&n, "/pub?topic=t&x=%zz", b"m")
        .await
        .assert_err(400, "INVALID_REQUEST");
    post(&n, "/mpub?topic=t;x", b"m")
        .await
        .assert_err(400, "INVALID_REQUEST");
    get(&n, "/stats?format=json&a=%")
        .await
        .assert_err(400, "INVALID_REQUEST");
    post(&n, "/topic/create?topic=%G0", b"")
        .await
        .assert_err(400, "INVALID_REQUEST");
    post(&n, "/channel/create?topic=t&channel=%", b"")
        .await
        .assert_err(400, "INVALID_REQUEST");
    assert!(n.topic("t").is_none());
}

// ---------------------------------------------------------------------------------------------
// /pub
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn pub_publishes_one_message() {
    let n = nsqd(&[]);
    post(&n, "/pub?topic=t", b"hello").await.assert_ok_text();
    let t = n.topic("t").expect("topic created by /pub");
    assert_eq!((t.message_count(), t.message_bytes(), t.depth()), (1, 5, 1));
    let (ch, _) = t.get_or_create_channel("c").unwrap();
    assert_eq!(drain(&ch), vec![b"hello".to_vec()]);
    // A percent-encoded topic name and `+` as space in other params are decoded.
    post(&n, "/pub?topic=t%2Ex", b"x").await.assert_ok_text();
    assert!(n.topic("t.x").is_some());
}

#[tokio::test]
async fn pub_argument_errors_in_go_order() {
    let n = nsqd(&[]);
    post(&n, "/pub", b"m")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&n, "/pub?topic=", b"m")
        .await
        .assert_err(400, "INVALID_TOPIC");
    post(&n, "/pub?topic=a/b", b"m")
        .await
        .assert_err(400, "INVALID_TOPIC");
    // The body is checked before the topic.
    post(&n, "/pub", b"").await.assert_err(400, "MSG_EMPTY");
    post(&n, "/pub?topic=t", b"")
        .await
        .assert_err(400, "MSG_EMPTY");
    assert!(n.topic("t").is_none());
}

#[tokio::test]
async fn pub_size_limits() {
    let n = nsqd(&["--max-msg-size=10"]);
    post(&n, "/pub?topic=t", b"0123456789")
        .await
        .assert_ok_text();
    post(&n, "/pub?topic=t", b"0123456789A")
        .await
        .assert_err(413, "MSG_TOO_BIG");
    // Declared too big: refused before reading, whatever the body.
    let req = Request::builder()
        .method("POST")
        .uri("/pub?topic=t")
        .header("content-length", "1000000000")
        .body(Body::from("tiny"))
        .unwrap();
    send(&n, req).await.assert_err(413, "MSG_TOO_BIG");
    // Chunked and endless: read only up to the limit.
    post_chunked(&n, "/pub?topic=t", chunked(vec![b"0123"], Some(b"456789")))
        .await
        .assert_err(413, "MSG_TOO_BIG");
    // Chunked and within the limit.
    post_chunked(&n, "/pub?topic=t", chunked(vec![b"01234", b"56789"], None))
        .await
        .assert_ok_text();
    // Checked before the topic, as in Go.
    post(&n, "/pub", b"0123456789A")
        .await
        .assert_err(413, "MSG_TOO_BIG");
    assert_eq!(n.topic("t").unwrap().message_count(), 2);
}

#[tokio::test]
async fn pub_defer() {
    let n = nsqd(&["--max-req-timeout=10s"]);
    let t = n.get_or_create_topic("t");
    let (ch, _) = t.get_or_create_channel("c").unwrap();
    post(&n, "/pub?topic=t&defer=5000", b"later")
        .await
        .assert_ok_text();
    post(&n, "/pub?topic=t&defer=0", b"now")
        .await
        .assert_ok_text();
    post(&n, "/pub?topic=t&defer=10000", b"edge")
        .await
        .assert_ok_text();
    {
        let st = ch.state.lock();
        assert_eq!((st.deferred_count(), st.depth()), (2, 1));
    }
    for bad in ["abc", "-1", "10001", "", "1.5", "99999999999999999999"] {
        post(&n, &format!("/pub?topic=t&defer={bad}"), b"m")
            .await
            .assert_err(400, "INVALID_DEFER");
    }
    assert_eq!(t.message_count(), 3);
    // Go creates the topic before it looks at `defer`.
    post(&n, "/pub?topic=fresh&defer=x", b"m")
        .await
        .assert_err(400, "INVALID_DEFER");
    assert!(n.topic("fresh").is_some());
}

#[tokio::test]
async fn pub_during_shutdown_is_exiting() {
    let n = nsqd(&[]);
    n.shutdown.cancel();
    post(&n, "/pub?topic=t", b"m")
        .await
        .assert_err(503, "EXITING");
    post(&n, "/mpub?topic=t", b"m")
        .await
        .assert_err(503, "EXITING");
}

// ---------------------------------------------------------------------------------------------
// /mpub
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn mpub_text_mode_splits_like_go() {
    let n = nsqd(&[]);
    let t = n.get_or_create_topic("t");
    let (ch, _) = t.get_or_create_channel("c").unwrap();
    post(&n, "/mpub?topic=t", b"a\nbb\n\n\nc\r\n\nlast\n")
        .await
        .assert_ok_text();
    assert_eq!(
        drain(&ch),
        vec![
            b"a".to_vec(),
            b"bb".to_vec(),
            b"c\r".to_vec(),
            b"last".to_vec()
        ]
    );
    assert_eq!((t.message_count(), t.message_bytes()), (4, 9));
    // No trailing newline; `binary=false` / `0` is text mode too.
    post(&n, "/mpub?topic=t&binary=false", b"x\ny")
        .await
        .assert_ok_text();
    post(&n, "/mpub?topic=t&binary=0", b"z")
        .await
        .assert_ok_text();
    assert_eq!(
        drain(&ch),
        vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]
    );
    // An empty body publishes nothing and succeeds.
    post(&n, "/mpub?topic=t", b"").await.assert_ok_text();
    post(&n, "/mpub?topic=t", b"\n\n").await.assert_ok_text();
    assert_eq!(t.message_count(), 7);
}

#[tokio::test]
async fn mpub_is_one_atomic_batch() {
    let n = nsqd(&["--max-msg-size=3"]);
    let t = n.get_or_create_topic("t");
    // The third line is too big: nothing of the request is published.
    post(&n, "/mpub?topic=t", b"a\nb\ntoolong\nc")
        .await
        .assert_err(413, "MSG_TOO_BIG");
    assert_eq!(t.message_count(), 0);
    post(&n, "/mpub?topic=t", b"a\nb\nc").await.assert_ok_text();
    // One batch: all three messages share one allocation, i.e. one publish call.
    let (ch, _) = t.get_or_create_channel("c").unwrap();
    let mut st = ch.state.lock();
    st.add_consumer(1);
    let mut out = Vec::new();
    st.pop(1, 10, 10, 1_000_000_000, 0, None, &mut out);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|m| Arc::ptr_eq(&m.batch, &out[0].batch)));
}

#[tokio::test]
async fn mpub_text_limits() {
    let n = nsqd(&["--max-msg-size=4", "--max-body-size=10"]);
    post(&n, "/mpub", b"a")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&n, "/mpub?topic=", b"a")
        .await
        .assert_err(400, "INVALID_TOPIC");
    post(&n, "/mpub?topic=t", b"12345")
        .await
        .assert_err(413, "MSG_TOO_BIG");
    // Exactly max-body-size is fine.
    post(&n, "/mpub?topic=t", b"1234\n1234\n")
        .await
        .assert_ok_text();
    // Declared too big: refused before the topic is even looked at (Go's order).
    post(&n, "/mpub", b"1234\n1234\n1")
        .await
        .assert_err(413, "BODY_TOO_BIG");
    // Chunked and too big.
    post_chunked(
        &n,
        "/mpub?topic=t",
        chunked(vec![b"1\n2\n3\n4\n5\n"], Some(b"6\n")),
    )
    .await
    .assert_err(413, "BODY_TOO_BIG");
    // Go checks each line as it reads: an over-long line before the limit wins.
    post_chunked(&n, "/mpub?topic=t", chunked(vec![b"123456\n"], Some(b"x")))
        .await
        .assert_err(413, "MSG_TOO_BIG");
    assert_eq!(n.topic("t").unwrap().message_count(), 2);
}

fn binary_body(count: i32, msgs: &[&[u8]]) -> Vec<u8> {
    let mut b = count.to_be_bytes().to_vec();
    for m in msgs {
        b.extend_from_slice(&(m.len() as i32).to_be_bytes());
        b.extend_from_slice(m);
    }
    b
}

#[tokio::test]
async fn mpub_binary_mode() {
    let n = nsqd(&["--max-msg-size=8", "--max-body-size=100"]);
    let t = n.get_or_create_topic("t");
    let (ch, _) = t.get_or_create_channel("c").unwrap();
    let body = binary_body(3, &[b"one", b"two\nx", b"\x00\xff"]);
    post(&n, "/mpub?topic=t&binary=true", &body)
        .await
        .assert_ok_text();
    assert_eq!(
        drain(&ch),
        vec![b"one".to_vec(), b"two\nx".to_vec(), b"\x00\xff".to_vec()]
    );
    // Any unrecognised value, even empty, means binary (with a deprecation warning).
    for q in ["binary=1", "binary=yes", "binary", "binary="] {
        post(&n, &format!("/mpub?topic=t&{q}"), binary_body(1, &[b"m"]))
            .await
            .assert_ok_text();
    }
    // Trailing bytes after the declared messages are ignored, as in Go.
    let mut extra = binary_body(1, &[b"m"]);
    extra.extend_from_slice(b"junk");
    post(&n, "/mpub?topic=t&binary=true", &extra)
        .await
        .assert_ok_text();
    assert_eq!(t.message_count(), 8);

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "BAD_BODY"),
        (vec![0, 0], "BAD_BODY"),
        (binary_body(0, &[]), "BAD_BODY"),
        (binary_body(-1, &[]), "BAD_BODY"),
        // (100 - 4) / 5 = 19 messages at most.
        (binary_body(20, &[b"a"]), "BAD_BODY"),
        (binary_body(2, &[b"a"]), "BAD_MESSAGE"),
        (binary_body(1, &[b""]), "BAD_MESSAGE"),
        (binary_body(1, &[b"123456789"]), "BAD_MESSAGE"),
        (
            [binary_body(1, &[]), vec![0, 0, 0, 5, b'a']].concat(),
            "BAD_MESSAGE",
        ),
        (
            [binary_body(1, &[]), (-3i32).to_be_bytes().to_vec()].concat(),
            "BAD_MESSAGE",
        ),
    ];
    for (body, code) in cases {
        post(&n, "/mpub?topic=t&binary=true", &body)
            .await
            .assert_err(413, code);
    }
    // Chunked binary bodies are bounded by --max-body-size too (deliberate, see docs).
    post_chunked(
        &n,
        "/mpub?topic=t&binary=true",
        chunked(vec![b"\x00\x00\x00\x01"], Some(b"zzzz")),
    )
    .await
    .assert_err(413, "BODY_TOO_BIG");
    assert_eq!(t.message_count(), 8);
}

// ---------------------------------------------------------------------------------------------
// Topic and channel actions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn topic_actions() {
    let n = nsqd(&[]);
    post(&n, "/topic/create?topic=t", b"")
        .await
        .assert_empty_ok();
    assert!(n.topic("t").is_some());
    post(&n, "/topic/create", b"")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&n, "/topic/create?topic=b@d", b"")
        .await
        .assert_err(400, "INVALID_TOPIC");

    post(&n, "/pub?topic=t", b"m").await.assert_ok_text();
    assert_eq!(n.topic("t").unwrap().depth(), 1);
    post(&n, "/topic/empty?topic=t", b"")
        .await
        .assert_empty_ok();
    assert_eq!(n.topic("t").unwrap().depth(), 0);
    post(&n, "/topic/empty", b"")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&n, "/topic/empty?topic=b@d", b"")
        .await
        .assert_err(400, "INVALID_TOPIC");
    post(&n, "/topic/empty?topic=nope", b"")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");

    post(&n, "/topic/pause?topic=t", b"")
        .await
        .assert_empty_ok();
    assert!(n.topic("t").unwrap().is_paused());
    post(&n, "/topic/unpause?topic=t", b"")
        .await
        .assert_empty_ok();
    assert!(!n.topic("t").unwrap().is_paused());
    post(&n, "/topic/pause", b"")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    // Pause/unpause/delete do not validate the name: an invalid one is just not found.
    post(&n, "/topic/pause?topic=b@d", b"")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");
    post(&n, "/topic/unpause?topic=nope", b"")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");

    post(&n, "/topic/delete", b"")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&n, "/topic/delete?topic=b@d", b"")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");
    post(&n, "/topic/delete?topic=t", b"")
        .await
        .assert_empty_ok();
    assert!(n.topic("t").is_none());
    post(&n, "/topic/delete?topic=t", b"")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");
}

#[tokio::test]
async fn channel_actions() {
    let n = nsqd(&[]);
    let base = "/channel/create";
    post(&n, base, b"")
        .await
        .assert_err(400, "MISSING_ARG_TOPIC");
    post(&n, &format!("{base}?topic=b@d&channel=c"), b"")
        .await
        .assert_err(400, "INVALID_ARG_TOPIC");
    post(&n, &format!("{base}?topic=t"), b"")
        .await
        .assert_err(400, "MISSING_ARG_CHANNEL");
    post(&n, &format!("{base}?topic=t&channel="), b"")
        .await
        .assert_err(400, "INVALID_ARG_CHANNEL");
    // The topic must exist.
    post(&n, &format!("{base}?topic=t&channel=c"), b"")
        .await
        .assert_err(404, "TOPIC_NOT_FOUND");
    assert!(n.topic("t").is_none());
    post(&n, "/topic/create?topic=t", b"")
        .await
        .assert_empty_ok();
    post(&n, &format!("{base}?topic=t&channel=c"), b"")
        .await
        .assert_empty_ok();
    let t = n.topic("t").unwrap();
    let ch = t.channel("c").expect("channel created");

    post(&n, "/pub?topic=t", b"m1").await.assert_ok_text();
    post(&n, "/pub?topic=t", b"m2").await.assert_ok_text();
    assert_eq!(ch.state.lock().depth(), 2);
    post(&n, "/channel/empty?topic=t&channel=c", b"")
        .await
        .assert_empty_ok();
    assert_eq!(ch.state.lock().depth(), 0);

    post(&n, "/channel/pause?topic=t&channel=c", b"")
        .await
        .assert_empty_ok();
    assert!(ch.is_paused());
    post(&n, "/channel/unpause?topic=t&channel=c", b"")
        .await
        .assert_empty_ok();
    assert!(!ch.is_paused());

    for action in ["empty", "pause", "unpause", "delete"] {
        let p = format!("/channel/{action}");
        post(&n, &format!("{p}?topic=t&channel=nope"), b"")
            .await
            .assert_err(404, "CHANNEL_NOT_FOUND");
        post(&n, &format!("{p}?topic=nope&channel=c"), b"")
            .await
            .assert_err(404, "TOPIC_NOT_FOUND");
        post(&n, &format!("{p}?topic=t"), b"")
            .await
            .assert_err(400, "MISSING_ARG_CHANNEL");
        post(&n, &format!("{p}?topic=t&channel=a%20b"), b"")
            .await
            .assert_err(400, "INVALID_ARG_CHANNEL");
        post(&n, &format!("{p}?channel=c"), b"")
            .await
            .assert_err(400, "MISSING_ARG_TOPIC");
    }
    post(&n, "/channel/delete?topic=t&channel=c", b"")
        .await
        .assert_empty_ok();
    assert!(t.channel("c").is_none());
    assert!(ch.is_exiting());
}

// ---------------------------------------------------------------------------------------------
// /stats
// ---------------------------------------------------------------------------------------------

/// Topic `t` with channels `a` (one consumer with 2 in flight, 1 ready) and `b` (paused);
/// topic `u` (paused, no channels, 1 held message); one TCP producer.
fn stats_fixture() -> (Arc<Nsqd>, Arc<ClientInfo>, Arc<ClientInfo>) {
    let n = nsqd(&[]);
    let t = n.get_or_create_topic("t");
    let (a, _) = t.get_or_create_channel("a").unwrap();
    let (b, _) = t.get_or_create_channel("b").unwrap();
    b.set_paused(true);
    t.publish([b"m1".as_slice(), b"m2", b"m3"].into_iter(), 3, None)
        .unwrap();
    let consumer = Arc::new(ClientInfo::new(
        n.next_client_id(),
        "127.0.0.1:50001".parse().unwrap(),
        1_700_000_000,
    ));
    {
        let mut id = consumer.identity.lock();
        id.client_id = "cons".into();
        id.hostname = "host-a".into();
        id.user_agent = "go-nsq/1.1.0 <&>".into();
        id.sample_rate = 10;
        id.topology_zone = "z".into();
    }
    consumer.ready_count.store(5, Ordering::Relaxed);
    consumer.message_count.store(2, Ordering::Relaxed);
    consumer
        .state
        .store(crate::client::client_state::SUBSCRIBED, Ordering::Relaxed);
    a.add_client(consumer.clone(), 0).unwrap();
    let mut out = Vec::new();
    a.state.lock().pop(
        consumer.id,
        5,
        2,
        60_000_000_000,
        n.clock.now(),
        None,
        &mut out,
    );
    assert_eq!(out.len(), 2);

    let u = n.get_or_create_topic("u");
    u.set_paused(true);
    u.publish(std::iter::once(b"held".as_slice()), 1, None)
        .unwrap();

    let producer = Arc::new(ClientInfo::new(
        n.next_client_id(),
        "[::1]:50002".parse().unwrap(),
        1_700_000_100,
    ));
    producer.identity.lock().hostname = "host-p".into();
    producer.record_pub("t", 3);
    producer.record_pub("u", 1);
    n.add_producer(&producer);
    (n, consumer, producer)
}

#[tokio::test]
async fn stats_json_exact() {
    let (n, _c, _p) = stats_fixture();
    let r = get(&n, "/stats?format=json&include_mem=false").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(JSON_CONTENT_TYPE));
    assert_eq!(r.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    let e2e = r#""e2e_processing_latency":{"count":0,"percentiles":null}"#;
    let tls = r#""tls":false,"tls_cipher_suite":"","tls_version":"","tls_negotiated_protocol":"","tls_negotiated_protocol_is_mutual":false"#;
    let expected = format!(
        concat!(
            r#"{{"version":"1.3.0","health":"OK","start_time":{start},"topics":["#,
            r#"{{"topic_name":"t","channels":["#,
            r#"{{"channel_name":"a","depth":1,"backend_depth":0,"in_flight_count":2,"deferred_count":0,"message_count":3,"requeue_count":0,"timeout_count":0,"client_count":1,"clients":["#,
            r#"{{"client_id":"cons","hostname":"host-a","version":"V2","remote_address":"127.0.0.1:50001","state":3,"ready_count":5,"in_flight_count":2,"message_count":2,"finish_count":0,"requeue_count":0,"connect_ts":1700000000,"sample_rate":10,"deflate":false,"snappy":false,"user_agent":"go-nsq/1.1.0 \u003c\u0026\u003e","topology_zone":"z","topology_region":"",{tls}}}"#,
            r#"],"paused":false,{e2e}}},"#,
            r#"{{"channel_name":"b","depth":3,"backend_depth":0,"in_flight_count":0,"deferred_count":0,"message_count":3,"requeue_count":0,"timeout_count":0,"client_count":0,"clients":[],"paused":true,{e2e}}}"#,
            r#"],"depth":0,"backend_depth":0,"message_count":3,"message_bytes":6,"paused":false,{e2e}}},"#,
            r#"{{"topic_name":"u","channels":[],"depth":1,"backend_depth":0,"message_count":1,"message_bytes":4,"paused":true,{e2e}}}"#,
            r#"],"producers":["#,
            r#"{{"client_id":"::1","hostname":"host-p","version":"V2","remote_address":"[::1]:50002","state":0,"ready_count":0,"in_flight_count":0,"message_count":0,"finish_count":0,"requeue_count":0,"connect_ts":1700000100,"sample_rate":0,"deflate":false,"snappy":false,"user_agent":"","topology_zone":"","topology_region":"","pub_counts":[{{"topic":"t","count":3}},{{"topic":"u","count":1}}],{tls}}}"#,
            r#"]}}"#
        ),
        start = n.start_time,
        tls = tls,
        e2e = e2e,
    );
    assert_eq!(r.text(), expected);
}

/// Our topic, channel and memory objects have exactly the keys, in the same order, as Go
/// 1.3's output captured in the Go fixtures (crates/nsqd/tests/fixtures).
#[tokio::test]
async fn stats_json_key_order_matches_go_fixture() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/go-nsqd-1.3.0/clean-shutdown.stats-before-shutdown.json"
    );
    let go = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the Go fixture is part of the repository: {path}: {e}"));
    /// The keys of a JSON text in order of appearance (serde_json's `Value` would sort them).
    fn keys(s: &str) -> Vec<&str> {
        s.match_indices("\":")
            .map(|(end, _)| &s[s[..end].rfind('"').unwrap() + 1..end])
            .collect()
    }
    /// The object starting at `start`, up to the first `}}` (our flat objects end with the
    /// nested e2e object).
    fn object<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
        let from = s.find(start).unwrap_or_else(|| panic!("{start} in {s}"));
        let len = s[from..].find(end).unwrap() + end.len();
        &s[from..from + len]
    }
    let (n, _c, _p) = stats_fixture();
    let ours = get(&n, "/stats?format=json").await;
    let ours = ours.text();
    assert_eq!(keys(&go)[..4], keys(ours)[..4]);
    assert_eq!(
        keys(object(&go, r#"{"channel_name":"billing""#, "}}")),
        keys(object(ours, r#"{"channel_name":"b""#, "}}"))
    );
    assert_eq!(
        keys(object(&go, r#"{"topic_name":"nochannels""#, "}}")),
        keys(object(ours, r#"{"topic_name":"u""#, "}}"))
    );
    assert_eq!(
        keys(object(&go, r#""memory":"#, "}")),
        keys(object(ours, r#""memory":"#, "}"))
    );
    assert!(ours.ends_with("]}"));
    assert_eq!(keys(&go).last(), Some(&"producers"));
}

#[tokio::test]
async fn stats_filters_and_nulls() {
    let (n, _c, _p) = stats_fixture();
    // Unknown topic: topics null, and producers null too (Go returns early).
    let v = get(&n, "/stats?format=json&topic=nope").await.json();
    assert_eq!(v["topics"], Value::Null);
    assert_eq!(v["producers"], Value::Null);
    assert!(v["memory"].is_object());

    // Topic filter: that topic only; producers' pub_counts restricted to it.
    let v = get(&n, "/stats?format=json&topic=u").await.json();
    let topics = v["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["topic_name"], "u");
    assert_eq!(
        v["producers"][0]["pub_counts"],
        json!([{"topic": "u", "count": 1}])
    );

    // Channel filter across all topics: topics without it are skipped.
    let v = get(&n, "/stats?format=json&channel=b").await.json();
    let topics = v["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["channels"].as_array().unwrap().len(), 1);
    assert_eq!(topics[0]["channels"][0]["channel_name"], "b");
    // Unknown channel: an empty topic list, not null.
    let v = get(&n, "/stats?format=json&topic=t&channel=zz")
        .await
        .json();
    assert_eq!(v["topics"], json!([]));

    // include_clients=false: clients and producers null, client_count kept.
    for f in ["false", "0"] {
        let v = get(&n, &format!("/stats?format=json&include_clients={f}"))
            .await
            .json();
        assert_eq!(v["producers"], Value::Null);
        assert_eq!(v["topics"][0]["channels"][0]["clients"], Value::Null);
        assert_eq!(v["topics"][0]["channels"][0]["client_count"], 1);
    }
    // Unrecognised bool values mean true, as in Go.
    let v = get(
        &n,
        "/stats?format=json&include_clients=nah&include_mem=maybe",
    )
    .await
    .json();
    assert!(v["producers"].is_array());
    assert!(v["memory"].is_object());
    // include_mem=false omits the key.
    let v = get(&n, "/stats?format=json&include_mem=0").await.json();
    assert!(v.get("memory").is_none());
    // No producers: null (a nil Go slice), while channels' clients stay [].
    let n2 = nsqd(&[]);
    n2.get_or_create_topic("t")
        .get_or_create_channel("c")
        .unwrap();
    let v = get(&n2, "/stats?format=json").await.json();
    assert_eq!(v["producers"], Value::Null);
    assert_eq!(v["topics"][0]["channels"][0]["clients"], json!([]));
}

#[tokio::test]
async fn stats_text_format() {
    let (n, c, p) = stats_fixture();
    let r = get(&n, "/stats?include_mem=false").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some(TEXT_CONTENT_TYPE));
    let text = r.text().to_string();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("nsqd v1.3.0 (nsq-rs)"));
    assert_eq!(
        lines.next().unwrap(),
        format!("start_time {}", crate::stats::rfc3339_utc(n.start_time))
    );
    assert!(lines.next().unwrap().starts_with("uptime "));
    let now = unix_secs();
    let ago = |ts: i64| crate::stats::go_duration((now - ts) as u64 * 1_000_000_000);
    let rest: Vec<&str> = lines.collect();
    let expected = vec![
        "".to_string(),
        "Health: OK".to_string(),
        "".to_string(),
        "Topics:".to_string(),
        "   [t              ] depth: 0     be-depth: 0     msgs: 3        e2e%: ".to_string(),
        "      [a                        ] depth: 1     be-depth: 0     inflt: 2    def: 0    re-q: 0     timeout: 0     msgs: 3        e2e%: ".to_string(),
        format!(
            "        [V2 host-a:50001 go-nsq/1.1.0 <&>] state: 3 inflt: 2    rdy: 5    fin: 0        re-q: 0        msgs: 2        connected: {}",
            ago(c.connect_ts)
        ),
        "   *P [b                        ] depth: 3     be-depth: 0     inflt: 0    def: 0    re-q: 0     timeout: 0     msgs: 3        e2e%: ".to_string(),
        "".to_string(),
        "*P [u              ] depth: 1     be-depth: 0     msgs: 1        e2e%: ".to_string(),
        "".to_string(),
        "Producers:".to_string(),
        format!(
            "   [V2 host-p:50002         ] msgs: 4        topics: t=3,u=1 connected: {}",
            ago(p.connect_ts)
        ),
    ];
    assert_eq!(rest, expected);

    // Empty daemon, memory included.
    let n2 = nsqd(&[]);
    let text = get(&n2, "/stats").await.text().to_string();
    assert!(
        text.contains("\nHealth: OK\n\nMemory:\n   heap_objects             \t0\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\nTopics: None\n\nProducers: None\n"),
        "{text}"
    );
}

/// 10,000 topics with one channel each: `/stats?format=json` must stay fast.
#[tokio::test]
async fn stats_scale() {
    let n = nsqd(&[]);
    for i in 0..10_000 {
        let t = n.get_or_create_topic(&format!("topic-{i:05}"));
        t.get_or_create_channel("ch").unwrap();
    }
    let _ = get(&n, "/stats?format=json").await;
    let start = std::time::Instant::now();
    let r = get(&n, "/stats?format=json").await;
    let elapsed = start.elapsed();
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["topics"].as_array().unwrap().len(), 10_000);
    assert_eq!(v["topics"][0]["topic_name"], "topic-00000");
    // The budget is 50 ms in release builds; unoptimised test builds get more room.
    let budget = if cfg!(debug_assertions) {
        Duration::from_millis(2000)
    } else {
        Duration::from_millis(50)
    };
    eprintln!(
        "/stats?format=json with 10k topics: {elapsed:?} ({} bytes)",
        r.body.len()
    );
    assert!(elapsed < budget, "{elapsed:?} > {budget:?}");
}

// ---------------------------------------------------------------------------------------------
// /config
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn config_get() {
    let n = nsqd(&[
        "--max-msg-size=1234",
        "--msg-timeout=90s",
        "--broadcast-address=a<b",
    ]);
    for (opt, v) in [
        ("max_msg_size", "1234"),
        ("msg_timeout", "90000000000"),
        ("broadcast_address", r#""a\u003cb""#),
        ("log_level", "2"),
        ("nsqlookupd_tcp_addresses", "[]"),
    ] {
        let r = get(&n, &format!("/config/{opt}")).await;
        assert_eq!(r.status, StatusCode::OK, "{opt}: {}", r.text());
        assert_eq!(r.text(), v, "{opt}");
        assert_eq!(r.header("content-type"), Some(JSON_CONTENT_TYPE));
    }
    get(&n, "/config/nope")
        .await
        .assert_err(400, "INVALID_OPTION");
    get(&n, "/config/max-msg-size")
        .await
        .assert_err(400, "INVALID_OPTION");
}

#[tokio::test]
async fn config_put() {
    let n = nsqd(&["--max-msg-size=100"]);
    let r = call(&n, "PUT", "/config/log_level", b"DEBUG").await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "1"));
    let r = call(
        &n,
        "PUT",
        "/config/nsqlookupd_tcp_addresses",
        br#"["h1:4160","h2:4160"]"#,
    )
    .await;
    assert_eq!(
        (r.status, r.text()),
        (StatusCode::OK, r#"["h1:4160","h2:4160"]"#)
    );
    call(&n, "PUT", "/config/log_level", b"verbose")
        .await
        .assert_err(400, "INVALID_VALUE");
    call(&n, "PUT", "/config/nsqlookupd_tcp_addresses", b"h1:4160")
        .await
        .assert_err(400, "INVALID_VALUE");
    call(&n, "PUT", "/config/max_msg_size", b"5")
        .await
        .assert_err(400, "INVALID_OPTION");
    // The body is checked before the option name.
    call(&n, "PUT", "/config/nope", b"")
        .await
        .assert_err(413, "INVALID_VALUE");
    call(&n, "PUT", "/config/log_level", [b'x'; 101])
        .await
        .assert_err(413, "INVALID_VALUE");
    // In-process there is no filter of ours to change (no `init_logging`), so GET still
    // reports the flag; the real binary applies and reports it (tests/it/http_api.rs).
    assert_eq!(get(&n, "/config/log_level").await.text(), "2");
    // Applied: the lookupd peers follow it.
    assert_eq!(
        get(&n, "/config/nsqlookupd_tcp_addresses").await.text(),
        r#"["h1:4160","h2:4160"]"#
    );
    assert_eq!(n.lookup.addresses(), ["h1:4160", "h2:4160"]);
}

// ---------------------------------------------------------------------------------------------
// Over a real socket
// ---------------------------------------------------------------------------------------------

async fn start_serving() -> (Arc<Nsqd>, SocketAddr, tokio::task::JoinHandle<()>) {
    let n = nsqd(&[]);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(serve(n.clone(), l));
    (n, addr, task)
}

async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("server closes the connection")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn non_http_bytes_get_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (n, addr, task) = start_serving().await;
    // Still waiting for the end of its non-HTTP first line when the server shuts down.
    let mut waiting = tokio::net::TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"  V2").await.unwrap();
    // A client speaking the TCP protocol to the HTTP port (trap 16): answered once its first
    // line ends, as Go's net/http does. (Accepted after `waiting`, so that one is in.)
    let resp = raw_exchange(addr, b"  V2IDENTIFY\n").await;
    assert_eq!(
        resp,
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Connection: close\r\n\r\n400 Bad Request"
    );
    // It does not hold up shutdown, and is closed without an answer.
    n.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve() returns after shutdown")
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), waiting.read_to_end(&mut rest))
        .await
        .expect("closed at shutdown")
        .unwrap();
    assert_eq!(rest, b"");
}

#[tokio::test]
async fn real_socket_headers_and_keepalive() {
    let (n, addr, task) = start_serving().await;
    let resp = raw_exchange(
        addr,
        b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nPOST /topic/create?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    let lower = resp.to_ascii_lowercase();
    assert_eq!(
        lower
            .matches("x-nsq-content-type: nsq; version=1.0\r\n")
            .count(),
        2,
        "{resp}"
    );
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(lower.contains("content-length: 2\r\n"));
    assert!(lower.contains("content-length: 0\r\n"));
    assert!(n.topic("t").is_some());
    n.shutdown.cancel();
    task.await.unwrap();
}
