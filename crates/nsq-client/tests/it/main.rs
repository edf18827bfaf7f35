//! Integration tests of nsq-client against the real nsqd binary on loopback.

mod cluster;
mod harness;
mod secure;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use harness::{num, wait_until, TestNsqd, WAIT};
use nsq_client::{Config, Consumer, Error, Message, Producer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn nsqd(extra: &[&str]) -> TestNsqd {
    tokio::task::block_in_place(|| TestNsqd::start(extra))
}

fn config(max_in_flight: u64) -> Config {
    let mut c = Config::new();
    c.max_in_flight = max_in_flight;
    c
}

/// The next message, bounded.
async fn next(consumer: &mut Consumer) -> Message {
    tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("timed out waiting for a message")
        .expect("stream ended")
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(m.body()).into_owned()
}

/// Waits until the channel has nothing in flight or deferred and no clients.
async fn wait_channel_idle(n: &TestNsqd, topic: &str, channel: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(c) = n.channel_stats(topic, channel).await {
            if num(&c, "in_flight_count") == 0
                && num(&c, "deferred_count") == 0
                && num(&c, "client_count") == 0
            {
                return c;
            }
            assert!(Instant::now() < deadline, "channel not idle: {c}");
        } else {
            assert!(
                Instant::now() < deadline,
                "channel {topic}/{channel} missing"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_consume_round_trip() {
    let n = nsqd(&[]);
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    for i in 0..10 {
        producer.publish("rt", format!("msg-{i}")).await.unwrap();
    }
    let mut consumer = Consumer::new("rt", "ch", config(5)).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let stop = consumer.stop_handle();
    let t0 = std::time::SystemTime::now();
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let m = next(&mut consumer).await;
        assert_eq!(m.attempts(), 1);
        assert_eq!(m.nsqd_address(), n.tcp.to_string());
        assert!(m.published_at() <= t0 + Duration::from_secs(1));
        assert!(seen.insert(text(&m)));
        m.finish();
    }
    assert_eq!(seen.len(), 10);
    consumer.stop().await;
    assert!(stop.is_stopped());
    assert!(consumer.next().await.is_none(), "stream ends after stop");
    let stats = consumer.stats();
    assert_eq!(stats.messages_received, 10);
    assert_eq!(stats.messages_finished, 10);
    assert_eq!(stats.connections, 0);
    let c = wait_channel_idle(&n, "rt", "ch").await;
    assert_eq!(num(&c, "depth"), 0);
    assert_eq!(num(&c, "message_count"), 10);
    producer.stop().await;
    assert!(matches!(
        producer.publish("rt", "x").await,
        Err(Error::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_concurrent_publishes() {
    let n = nsqd(&[]);
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let p = producer.clone();
            tokio::spawn(async move { p.publish("pipe", format!("{i}")).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let t = n.topic_stats("pipe").await.unwrap();
    assert_eq!(num(&t, "message_count"), 300);
    producer.ping().await.unwrap();
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mpub_and_dpub() {
    let n = nsqd(&[]);
    n.create_channel("batch", "ch").await;
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    producer
        .multi_publish("batch", ["a", "b", "c"])
        .await
        .unwrap();
    let mut consumer = Consumer::new("batch", "ch", config(10)).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = next(&mut consumer).await;
        got.push(text(&m));
        m.finish();
    }
    got.sort();
    assert_eq!(got, ["a", "b", "c"]);

    let start = Instant::now();
    producer
        .deferred_publish("batch", Duration::from_millis(1500), "deferred")
        .await
        .unwrap();
    let m = next(&mut consumer).await;
    let elapsed = start.elapsed();
    assert_eq!(text(&m), "deferred");
    // nsqd's deferred queue is scanned every ~100 ms.
    assert!(
        elapsed >= Duration::from_millis(1350),
        "delivered after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "delivered after {elapsed:?}"
    );
    m.finish();

    // Argument checks happen before anything is sent.
    assert!(matches!(
        producer.multi_publish("batch", Vec::<&[u8]>::new()).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        producer.publish("bad topic", "x").await,
        Err(Error::InvalidArgument(_))
    ));
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_carry_code_and_the_producer_recovers() {
    let n = nsqd(&["--max-req-timeout=10s"]);
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let err = producer
        .deferred_publish("errs", Duration::from_secs(60), "x")
        .await
        .unwrap_err();
    match &err {
        Error::Server { code, desc } => {
            assert_eq!(code, "E_INVALID");
            assert!(desc.contains("DPUB"), "{desc}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.server_code(), Some(nsq_client::ErrorCode::Invalid));
    // The error was fatal (nsqd closed the connection): the next call reconnects.
    producer.publish("errs", "after").await.unwrap();
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_increments_attempts_and_max_attempts_finishes() {
    let n = nsqd(&[]);
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    n.create_channel("rq", "ch").await;
    producer.publish("rq", "again").await.unwrap();
    let mut c = config(1);
    c.max_attempts = 3;
    c.backoff_multiplier = Duration::from_millis(20);
    let mut consumer = Consumer::new("rq", "ch", c).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();

    let m = next(&mut consumer).await;
    assert_eq!(m.attempts(), 1);
    m.requeue_without_backoff(Some(Duration::ZERO));
    let m = next(&mut consumer).await;
    assert_eq!(m.attempts(), 2);
    // With backoff: the consumer pauses briefly (40 ms) then probes with RDY 1.
    m.requeue(Some(Duration::ZERO));
    let m = next(&mut consumer).await;
    assert_eq!(m.attempts(), 3);
    // Dropping without an answer requeues (default delay = 90s × attempts, so use a
    // message-level requeue with no delay instead to keep the test fast).
    m.requeue_without_backoff(Some(Duration::ZERO));
    // Attempt 4 > max_attempts 3: finished by the client, never handed out.
    wait_until(WAIT, "message failed by max_attempts", || async {
        consumer.stats().messages_failed == 1
    })
    .await;
    let stats = consumer.stats();
    assert_eq!(stats.messages_received, 4);
    assert_eq!(stats.messages_requeued, 3);
    assert_eq!(stats.messages_finished, 1);
    consumer.stop().await;
    let ch = wait_channel_idle(&n, "rq", "ch").await;
    assert_eq!(num(&ch, "depth"), 0);
    assert_eq!(num(&ch, "requeue_count"), 3);
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_message_is_requeued() {
    let n = nsqd(&[]);
    n.create_channel("drop", "ch").await;
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    producer.publish("drop", "x").await.unwrap();
    let mut c = config(1);
    c.default_requeue_delay = Duration::from_millis(100);
    c.backoff_multiplier = Duration::from_millis(10);
    let mut consumer = Consumer::new("drop", "ch", c).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(m.attempts(), 1);
    drop(m);
    let m = next(&mut consumer).await;
    assert_eq!(m.attempts(), 2);
    m.finish();
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touch_extends_the_timeout() {
    let n = nsqd(&[]);
    n.create_channel("touch", "ch").await;
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    producer.publish("touch", "slow").await.unwrap();
    let mut c = config(1);
    c.msg_timeout = Some(Duration::from_secs(1));
    let mut consumer = Consumer::new("touch", "ch", c).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let m = next(&mut consumer).await;
    // Work for 2.5 × msg_timeout, touching every 300 ms.
    let until = Instant::now() + Duration::from_millis(2500);
    let mut ticker = tokio::time::interval(Duration::from_millis(300));
    while Instant::now() < until {
        ticker.tick().await;
        m.touch();
    }
    let ch = n.channel_stats("touch", "ch").await.unwrap();
    assert_eq!(num(&ch, "timeout_count"), 0, "{ch}");
    assert_eq!(num(&ch, "in_flight_count"), 1, "{ch}");
    m.finish();
    consumer.stop().await;
    let ch = wait_channel_idle(&n, "touch", "ch").await;
    assert_eq!(num(&ch, "timeout_count"), 0);
    assert_eq!(num(&ch, "depth"), 0);
    assert_eq!(consumer.stats().messages_received, 1);
    producer.stop().await;
}

/// Consumes `total` messages with per-message tasks, checking that no more than
/// `max_in_flight` are ever in the application's hands at once.
async fn consume_counting(consumer: Consumer, total: usize, max_in_flight: usize) -> Vec<String> {
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let handle = consumer.stop_handle();
    let work = {
        let (current, peak, bodies) = (current.clone(), peak.clone(), bodies.clone());
        consumer.take(total).for_each(move |m| {
            let (current, peak, bodies) = (current.clone(), peak.clone(), bodies.clone());
            async move {
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    bodies.lock().unwrap().push(text(&m));
                    current.fetch_sub(1, Ordering::SeqCst);
                    m.finish();
                });
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .expect("consuming timed out");
    tokio::time::timeout(WAIT, handle.stopped())
        .await
        .expect("consumer did not stop");
    assert!(
        peak.load(Ordering::SeqCst) <= max_in_flight,
        "peak in flight {} > {max_in_flight}",
        peak.load(Ordering::SeqCst)
    );
    let v = bodies.lock().unwrap().clone();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_is_respected_across_two_nsqds() {
    let (a, b) = (nsqd(&[]), nsqd(&[]));
    for (n, tag) in [(&a, "a"), (&b, "b")] {
        n.create_channel("spread", "ch").await;
        let p = Producer::connect(n.tcp.to_string(), Config::new())
            .await
            .unwrap();
        let bodies: Vec<String> = (0..60).map(|i| format!("{tag}-{i}")).collect();
        p.multi_publish("spread", &bodies).await.unwrap();
        p.stop().await;
    }
    let (max, total) = (3u64, 120usize);
    let consumer = Consumer::new("spread", "ch", config(max)).unwrap();
    consumer.connect_to_nsqd(a.tcp.to_string()).await.unwrap();
    consumer.connect_to_nsqd(b.tcp.to_string()).await.unwrap();
    // Repeated addresses are ignored.
    consumer.connect_to_nsqd(b.tcp.to_string()).await.unwrap();
    assert!(consumer.stats().connections <= 2);
    let bodies = consume_counting(consumer, total, max as usize).await;
    let unique: HashSet<_> = bodies.iter().cloned().collect();
    assert_eq!(bodies.len(), total, "every message exactly once");
    assert_eq!(unique.len(), total, "no duplicates");
    assert!(unique.iter().any(|s| s.starts_with("a-")));
    assert!(unique.iter().any(|s| s.starts_with("b-")));
    for n in [&a, &b] {
        let ch = wait_channel_idle(n, "spread", "ch").await;
        assert_eq!(num(&ch, "depth"), 0, "{ch}");
        assert_eq!(num(&ch, "timeout_count"), 0, "{ch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdy_rotates_when_connections_exceed_max_in_flight() {
    let (a, b) = (nsqd(&[]), nsqd(&[]));
    for (n, tag) in [(&a, "a"), (&b, "b")] {
        n.create_channel("rot", "ch").await;
        let p = Producer::connect(n.tcp.to_string(), Config::new())
            .await
            .unwrap();
        let bodies: Vec<String> = (0..5).map(|i| format!("{tag}-{i}")).collect();
        p.multi_publish("rot", &bodies).await.unwrap();
        p.stop().await;
    }
    let mut c = config(1);
    c.low_rdy_idle_timeout = Duration::from_millis(200);
    let consumer = Consumer::new("rot", "ch", c).unwrap();
    consumer.connect_to_nsqd(a.tcp.to_string()).await.unwrap();
    consumer.connect_to_nsqd(b.tcp.to_string()).await.unwrap();
    let bodies = consume_counting(consumer, 10, 1).await;
    assert_eq!(bodies.iter().collect::<HashSet<_>>().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_nothing_in_flight() {
    let n = nsqd(&[]);
    n.create_channel("stop", "ch").await;
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let bodies: Vec<String> = (0..20).map(|i| format!("{i}")).collect();
    producer.multi_publish("stop", &bodies).await.unwrap();
    let mut consumer = Consumer::new("stop", "ch", config(10)).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(next(&mut consumer).await);
    }
    // Let nsqd fill the window so some messages sit unread in the consumer's queue.
    wait_until(WAIT, "10 in flight", || async {
        n.channel_stats("stop", "ch")
            .await
            .is_some_and(|c| num(&c, "in_flight_count") == 10)
    })
    .await;
    let handle = consumer.stop_handle();
    handle.stop();
    // stop waits for the held messages; answer them now.
    for m in held {
        m.finish();
    }
    tokio::time::timeout(WAIT, handle.stopped())
        .await
        .expect("stop did not complete");
    assert!(consumer.next().await.is_none());
    let ch = wait_channel_idle(&n, "stop", "ch").await;
    assert_eq!(num(&ch, "depth"), 15, "{ch}");
    assert_eq!(num(&ch, "timeout_count"), 0, "{ch}");
    assert!(matches!(
        consumer.connect_to_nsqd(n.tcp.to_string()).await,
        Err(Error::Closed)
    ));
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn take_ends_the_stream_and_shuts_down() {
    let n = nsqd(&[]);
    n.create_channel("take", "ch").await;
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let bodies: Vec<String> = (0..8).map(|i| format!("{i}")).collect();
    producer.multi_publish("take", &bodies).await.unwrap();
    let consumer = Consumer::new("take", "ch", config(4)).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let handle = consumer.stop_handle();
    let got: Vec<String> = tokio::time::timeout(
        WAIT,
        consumer
            .take(3)
            .map(|m| {
                let t = text(&m);
                m.finish();
                t
            })
            .collect(),
    )
    .await
    .unwrap();
    assert_eq!(got.len(), 3);
    // The consumer was dropped with `take`: it shuts down by itself.
    tokio::time::timeout(WAIT, handle.stopped())
        .await
        .expect("consumer did not shut down");
    let ch = wait_channel_idle(&n, "take", "ch").await;
    assert_eq!(num(&ch, "depth"), 5, "{ch}");
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_reconnects_after_nsqd_restart() {
    let mut n = nsqd(&[]);
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    producer.publish("restart", "before").await.unwrap();
    tokio::task::block_in_place(|| n.kill());
    assert!(producer.publish("restart", "while down").await.is_err());
    assert!(producer.ping().await.is_err());
    tokio::task::block_in_place(|| n.restart_same_ports());
    producer.publish("restart", "after").await.unwrap();
    producer.ping().await.unwrap();
    let t = n.topic_stats("restart").await.unwrap();
    assert_eq!(num(&t, "message_count"), 1, "{t}");
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_reconnects_to_direct_nsqd() {
    let mut n = nsqd(&[]);
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let mut consumer = Consumer::new("recon", "ch", config(1)).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    producer.publish("recon", "one").await.unwrap();
    next(&mut consumer).await.finish();
    tokio::task::block_in_place(|| n.kill());
    wait_until(WAIT, "connection lost", || async {
        consumer.stats().connections == 0
    })
    .await;
    tokio::task::block_in_place(|| n.restart_same_ports());
    wait_until(WAIT, "reconnected", || async {
        consumer.stats().connections == 1
    })
    .await;
    producer.publish("recon", "two").await.unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(text(&m), "two");
    m.finish();
    consumer.stop().await;
    producer.stop().await;
}

/// A fake nsqlookupd: answers `/lookup` with 404 for the first `not_found` requests, then
/// with `body`. Returns its address and a request counter.
async fn fake_lookupd(not_found: usize, body: String) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let req = String::from_utf8_lossy(&req);
                assert!(req.starts_with("GET /lookup?topic=disc "), "{req}");
                let (status, body) = if n < not_found {
                    (
                        "404 Not Found",
                        r#"{"message":"TOPIC_NOT_FOUND"}"#.to_string(),
                    )
                } else {
                    ("200 OK", body)
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-NSQ-Content-Type: nsq; version=1.0\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_nsqd_through_lookupd() {
    let n = nsqd(&[]);
    n.create_channel("disc", "ch").await;
    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    producer.publish("disc", "found").await.unwrap();
    let port = n.tcp.port();
    let v1 = format!(
        r#"{{"channels":["ch"],"producers":[{{"remote_address":"127.0.0.1:1","hostname":"h","broadcast_address":"127.0.0.1","tcp_port":{port},"http_port":1,"version":"1.3.0"}}]}}"#
    );
    let legacy = format!(
        r#"{{"status_code":200,"status_txt":"OK","data":{{"channels":[],"producers":[{{"broadcast_address":"127.0.0.1","hostname":"h","tcp_port":{port},"http_port":1,"version":"0.3.8"}}]}}}}"#
    );
    // The first lookupd does not know the topic at first (404), the second uses the
    // pre-1.0 response shape; both report the same nsqd, which is connected once.
    let (l1, hits1) = fake_lookupd(2, v1).await;
    let (l2, hits2) = fake_lookupd(0, legacy).await;
    let mut c = config(1);
    c.lookupd_poll_interval = Duration::from_millis(100);
    let mut consumer = Consumer::new("disc", "ch", c).unwrap();
    consumer.connect_to_lookupd(&l1).await.unwrap();
    consumer
        .connect_to_lookupd(format!("http://{l2}"))
        .await
        .unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(text(&m), "found");
    m.finish();
    wait_until(WAIT, "several polls", || async {
        hits1.load(Ordering::SeqCst) >= 4 && hits2.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert_eq!(consumer.stats().connections, 1);
    let ch = n.channel_stats("disc", "ch").await.unwrap();
    assert_eq!(num(&ch, "client_count"), 1, "{ch}");
    consumer.stop().await;
    producer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_reported() {
    let consumer = Consumer::new("t", "c", Config::new()).unwrap();
    let err = consumer.connect_to_nsqd("127.0.0.1:1").await.unwrap_err();
    assert!(matches!(err, Error::Io(_) | Error::Timeout), "{err:?}");
    assert!(matches!(
        consumer.connect_to_nsqd("nonsense").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(Consumer::new("bad topic", "c", Config::new()).is_err());
    assert!(Consumer::new("t", "bad channel!", Config::new()).is_err());
    assert!(Producer::connect("127.0.0.1:1", Config::new())
        .await
        .is_err());
    consumer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_idle_connections_alive() {
    let n = nsqd(&[]);
    let mut c = config(1);
    c.heartbeat_interval = Some(Duration::from_secs(1));
    c.read_timeout = Duration::from_millis(2500);
    let producer = Producer::connect(n.tcp.to_string(), c.clone())
        .await
        .unwrap();
    let mut consumer = Consumer::new("hb", "ch", c).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    // nsqd drops a client that sends nothing for 2 heartbeat intervals; both sides must
    // answer heartbeats to survive this idle period (a scenario duration, not a sync).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(consumer.stats().connections, 1);
    let ch = n.channel_stats("hb", "ch").await.unwrap();
    assert_eq!(num(&ch, "client_count"), 1, "{ch}");
    producer.publish("hb", "still here").await.unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(text(&m), "still here");
    m.finish();
    // The producer used its original connection (it published once, on one connection).
    let stats = n.stats().await;
    assert_eq!(
        stats["producers"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    consumer.stop().await;
    producer.stop().await;
}

/// go-nsq's `local_addr`: the producer's and the consumer's connections leave from the given
/// loopback addresses, as nsqd's `/stats` shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_addr_picks_the_source_address() {
    let n = nsqd(&[]);
    let mut pc = Config::new();
    pc.set("local_addr", "127.0.0.7:0").unwrap();
    let producer = Producer::connect(n.tcp.to_string(), pc).await.unwrap();
    producer.publish("src", "m").await.unwrap();
    let mut cc = config(1);
    cc.set("local_addr", "127.0.0.8:0").unwrap();
    let mut consumer = Consumer::new("src", "ch", cc).unwrap();
    consumer.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(text(&m), "m");
    m.finish();
    let c = n
        .channel_stats("src", "ch")
        .await
        .expect("channel in /stats");
    let clients = c["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1, "{c}");
    let remote = clients[0]["remote_address"].as_str().unwrap();
    assert!(remote.starts_with("127.0.0.8:"), "consumer from {remote}");
    let stats = n.stats().await;
    let producers: Vec<&str> = stats["producers"]
        .as_array()
        .expect("producers in /stats")
        .iter()
        .filter_map(|p| p["remote_address"].as_str())
        .collect();
    assert!(
        producers.iter().any(|a| a.starts_with("127.0.0.7:")),
        "producer from {producers:?}"
    );
    consumer.stop().await;
    producer.stop().await;
}

/// The client's `topology_zone` / `topology_region` reach nsqd in IDENTIFY: with
/// `--enable-experiment=topology-aware-consumption`, nsqd lists them per client in /stats and
/// classifies each delivery by them: what the zone-local consumer received is exactly
/// `zone_local_msg_count`, what the other one (same region only) received is
/// `region_local_msg_count`. (Which of the two gets a message depends on their credit at
/// that instant, which the client's RDY ramp-up makes vary; the counts must agree anyway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_options_reach_nsqd_and_classify_deliveries() {
    let n = nsqd(&[
        "--enable-experiment=topology-aware-consumption",
        "--topology-zone=z1",
        "--topology-region=r1",
    ]);
    n.create_channel("topo", "ch").await;
    let consumer_in = |zone: &str| {
        let mut c = config(100);
        c.topology_zone = zone.to_owned();
        c.topology_region = "r1".to_owned();
        c
    };
    let local = Consumer::new("topo", "ch", consumer_in("z1")).unwrap();
    local.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    let remote = Consumer::new("topo", "ch", consumer_in("z2")).unwrap();
    remote.connect_to_nsqd(n.tcp.to_string()).await.unwrap();
    // Both subscribed and with RDY sent: a local consumer without credit yet would let the
    // remote one have messages, which is the experiment's rule, not what this test checks.
    wait_until(WAIT, "both consumers subscribed with credit", || async {
        n.channel_stats("topo", "ch").await.is_some_and(|c| {
            c["clients"]
                .as_array()
                .is_some_and(|cl| cl.len() == 2 && cl.iter().all(|x| num(x, "ready_count") > 0))
        })
    })
    .await;
    let c = n.channel_stats("topo", "ch").await.unwrap();
    let mut zones: Vec<(String, String)> = c["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cl| {
            (
                cl["topology_zone"].as_str().unwrap_or("").to_owned(),
                cl["topology_region"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        [("z1".into(), "r1".into()), ("z2".into(), "r1".into())],
        "IDENTIFY carried the client's topology: {c}"
    );

    let producer = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    let got_local = Arc::new(AtomicUsize::new(0));
    let got_remote = Arc::new(AtomicUsize::new(0));
    let drain = |mut c: Consumer, count: Arc<AtomicUsize>| {
        tokio::spawn(async move {
            while let Some(m) = c.next().await {
                count.fetch_add(1, Ordering::SeqCst);
                m.finish();
            }
        })
    };
    let (stop_l, stop_r) = (local.stop_handle(), remote.stop_handle());
    let tl = drain(local, got_local.clone());
    let tr = drain(remote, got_remote.clone());
    for i in 0..20 {
        producer.publish("topo", format!("t{i}")).await.unwrap();
    }
    wait_until(WAIT, "all 20 consumed", || async {
        got_local.load(Ordering::SeqCst) + got_remote.load(Ordering::SeqCst) == 20
    })
    .await;
    let c = wait_channel_idle_with_clients(&n).await;
    assert_eq!(
        (
            // Omitted from /stats while 0, as Go's `omitempty`.
            c["zone_local_msg_count"].as_u64().unwrap_or(0) as usize,
            c["region_local_msg_count"].as_u64().unwrap_or(0) as usize
        ),
        (
            got_local.load(Ordering::SeqCst),
            got_remote.load(Ordering::SeqCst)
        ),
        "deliveries classified by the client's zone/region: {c}"
    );
    assert!(
        got_local.load(Ordering::SeqCst) > 0,
        "the zone-local consumer got nothing"
    );
    stop_l.stop();
    stop_r.stop();
    let _ = tokio::join!(tl, tr);
    producer.stop().await;
}

/// Waits until topo/ch has nothing in flight (its consumers still connected).
async fn wait_channel_idle_with_clients(n: &TestNsqd) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = n.channel_stats("topo", "ch").await.unwrap();
        if num(&c, "in_flight_count") == 0 && num(&c, "depth") == 0 {
            return c;
        }
        assert!(Instant::now() < deadline, "never idle: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
