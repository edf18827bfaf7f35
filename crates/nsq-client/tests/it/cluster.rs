//! Multi-node tests: real `nsqlookupd` and `nsqd` processes on loopback, consumers that know
//! only the lookupds' HTTP addresses.
//!
//! - every message published to any nsqd reaches a lookupd-only consumer (two lookupds that
//!   report the same nsqds: one connection per nsqd);
//! - an nsqd that appears later is picked up by the running consumer;
//! - an nsqd SIGKILLed mid-stream loses nothing that the surviving nodes acknowledged;
//! - a restarted (empty) lookupd gets every registration back, including an nsqd that started
//!   while it was down, and consumers discover through it again.
//!
//! Every wait is a bounded poll; every process is killed by its guard on drop.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nsq_client::{Config, Consumer, Producer, StopHandle};

use crate::harness::{num, TestLookupd, TestNsqd, WAIT};

/// nsqd (re)registering with a lookupd: its reconnect backoff grows from 250 ms to 15 s.
const REGISTER: Duration = Duration::from_secs(30);
/// Delivery of a batch of messages, discovery included (consumers poll every 200 ms).
const DELIVER: Duration = Duration::from_secs(20);

fn lookupd() -> TestLookupd {
    tokio::task::block_in_place(TestLookupd::start)
}

/// An nsqd announcing itself as 127.0.0.1 to every lookupd given.
fn nsqd_for(lookupds: &[&TestLookupd]) -> TestNsqd {
    let mut args = vec!["--broadcast-address=127.0.0.1".to_string()];
    args.extend(lookupds.iter().map(|l| l.tcp_flag()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    tokio::task::block_in_place(|| TestNsqd::start(&refs))
}

fn lookupd_config(max_in_flight: u64) -> Config {
    let mut c = Config::new();
    c.max_in_flight = max_in_flight;
    c.lookupd_poll_interval = Duration::from_millis(200);
    c
}

/// A consumer that knows only the given lookupds.
async fn lookupd_consumer(
    topic: &str,
    channel: &str,
    max_in_flight: u64,
    lookupds: &[&TestLookupd],
) -> Consumer {
    let consumer = Consumer::new(topic, channel, lookupd_config(max_in_flight)).unwrap();
    for l in lookupds {
        consumer
            .connect_to_lookupd(format!("http://{}", l.http))
            .await
            .unwrap();
    }
    consumer
}

/// Drains a consumer in a task, finishing every message and recording (body, nsqd address).
struct Collector {
    got: Arc<Mutex<Vec<(String, String)>>>,
    stop: StopHandle,
    task: tokio::task::JoinHandle<()>,
}

fn collect(mut consumer: Consumer) -> Collector {
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop = consumer.stop_handle();
    let g = got.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = consumer.next().await {
            let body = String::from_utf8_lossy(m.body()).into_owned();
            g.lock().unwrap().push((body, m.nsqd_address().to_string()));
            m.finish();
        }
    });
    Collector { got, stop, task }
}

impl Collector {
    fn len(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    fn snapshot(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until every body in `want` was received.
    async fn wait_all(&self, want: &[String], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let have: HashSet<String> = self.snapshot().into_iter().map(|(b, _)| b).collect();
            let missing: Vec<&String> = want.iter().filter(|b| !have.contains(*b)).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "after {timeout:?}: {} of {} messages never arrived (received {} in total), \
                 e.g. {:?}",
                missing.len(),
                want.len(),
                have.len(),
                &missing[..missing.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `n` messages were received.
    async fn wait_len(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.len() < n {
            assert!(
                Instant::now() < deadline,
                "after {timeout:?}: received {} messages, want at least {n}",
                self.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the consumer (bounded) and returns everything received.
    async fn stop(self) -> Vec<(String, String)> {
        self.stop.stop();
        tokio::time::timeout(WAIT, self.stop.stopped())
            .await
            .expect("consumer did not stop");
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stream did not end after stop")
            .unwrap();
        let v = self.got.lock().unwrap().clone();
        v
    }
}

/// Bodies that occur more than once.
fn duplicates<'a>(bodies: impl IntoIterator<Item = &'a String>) -> Vec<&'a String> {
    let mut seen = HashSet::new();
    bodies.into_iter().filter(|b| !seen.insert(*b)).collect()
}

/// Publishes `bodies` to one nsqd (MPUB in chunks of 10), returning them.
async fn publish_to(n: &TestNsqd, topic: &str, bodies: Vec<String>) -> Vec<String> {
    let p = Producer::connect(n.tcp.to_string(), Config::new())
        .await
        .unwrap();
    for chunk in bodies.chunks(10) {
        if chunk.len() == 1 {
            p.publish(topic, &chunk[0]).await.unwrap();
        } else {
            p.multi_publish(topic, chunk).await.unwrap();
        }
    }
    p.stop().await;
    bodies
}

fn bodies(prefix: &str, node: usize, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{node}-{i}")).collect()
}

/// The node index encoded in a body made by [`bodies`].
fn node_of(body: &str) -> usize {
    body.split('-').nth(1).unwrap().parse().unwrap()
}

/// Waits until the channel on `n` matches every `(field, value)`.
async fn wait_channel(n: &TestNsqd, topic: &str, channel: &str, want: &[(&str, i64)]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = n.channel_stats(topic, channel).await;
        if let Some(c) = &c {
            if want.iter().all(|(f, v)| num(c, f) == *v) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "nsqd {}: channel {topic}/{channel} never matched {want:?}; last {c:?}",
            n.tcp
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks that every received message came from the nsqd its body names.
fn assert_routed(got: &[(String, String)], nodes: &[&TestNsqd]) {
    for (body, addr) in got {
        let n = node_of(body);
        assert_eq!(
            addr,
            &nodes[n].tcp.to_string(),
            "{body} was published to node {n} ({}) but delivered from {addr}",
            nodes[n].tcp
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookupd_only_consumer_receives_from_every_nsqd() {
    let (l1, l2) = (lookupd(), lookupd());
    let nodes: Vec<TestNsqd> = (0..3).map(|_| nsqd_for(&[&l1, &l2])).collect();
    let refs: Vec<&TestNsqd> = nodes.iter().collect();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.tcp).collect();

    // The consumer starts before the topic exists anywhere: both lookupds answer 404 at first.
    let consumer = lookupd_consumer("clu", "ch", 10, &[&l1, &l2]).await;
    let c = collect(consumer);

    // Published before any channel exists: each nsqd's topic keeps them for the first channel.
    let mut want = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        want.extend(publish_to(n, "clu", bodies("clu", i, 0..50)).await);
    }
    for l in [&l1, &l2] {
        l.wait_producers("clu", &addrs, REGISTER).await;
    }
    c.wait_all(&want, DELIVER).await;

    // Both lookupds report every nsqd: still one connection per nsqd.
    for n in &nodes {
        wait_channel(n, "clu", "ch", &[("client_count", 1)]).await;
    }

    // Live traffic on the established connections.
    for (i, n) in nodes.iter().enumerate() {
        want.extend(publish_to(n, "clu", bodies("clu", i, 50..80)).await);
    }
    c.wait_all(&want, DELIVER).await;
    for n in &nodes {
        wait_channel(
            n,
            "clu",
            "ch",
            &[
                ("client_count", 1),
                ("depth", 0),
                ("in_flight_count", 0),
                ("message_count", 80),
                ("timeout_count", 0),
                ("requeue_count", 0),
            ],
        )
        .await;
    }
    let got = c.stop().await;
    assert_eq!(got.len(), want.len(), "exactly once");
    assert!(duplicates(got.iter().map(|(b, _)| b)).is_empty());
    assert_routed(&got, &refs);
    for n in &nodes {
        wait_channel(n, "clu", "ch", &[("client_count", 0), ("depth", 0)]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nsqd_started_later_is_picked_up() {
    let l = lookupd();
    let mut nodes = vec![nsqd_for(&[&l]), nsqd_for(&[&l])];
    let mut want = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        n.create_channel("late", "ch").await;
        want.extend(publish_to(n, "late", bodies("late", i, 0..20)).await);
    }
    l.wait_producers("late", &[nodes[0].tcp, nodes[1].tcp], REGISTER)
        .await;
    let c = collect(lookupd_consumer("late", "ch", 5, &[&l]).await);
    c.wait_all(&want, DELIVER).await;

    // A third nsqd appears; the topic is created there by its first PUB.
    nodes.push(nsqd_for(&[&l]));
    want.extend(publish_to(&nodes[2], "late", bodies("late", 2, 0..20)).await);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.tcp).collect();
    l.wait_producers("late", &addrs, REGISTER).await;
    c.wait_all(&want, DELIVER).await;
    wait_channel(&nodes[2], "late", "ch", &[("client_count", 1)]).await;

    // And all three keep delivering.
    for (i, n) in nodes.iter().enumerate() {
        want.extend(publish_to(n, "late", bodies("late", i, 20..30)).await);
    }
    c.wait_all(&want, DELIVER).await;
    let got = c.stop().await;
    assert_eq!(got.len(), want.len(), "exactly once");
    assert_routed(&got, &nodes.iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_nsqd_loses_nothing_acknowledged_on_survivors() {
    let l = lookupd();
    let mut nodes: Vec<TestNsqd> = (0..3).map(|_| nsqd_for(&[&l])).collect();
    for n in &nodes {
        n.create_channel("kill", "ch").await;
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.tcp).collect();
    l.wait_producers("kill", &addrs, REGISTER).await;
    let c = collect(lookupd_consumer("kill", "ch", 6, &[&l]).await);
    for n in &nodes {
        wait_channel(n, "kill", "ch", &[("client_count", 1)]).await;
    }

    // One publisher per node, publishing until told to stop; only acknowledged (OK)
    // publishes are recorded. The victim's publisher stops at its first error.
    let running = Arc::new(AtomicBool::new(true));
    let mut publishers = Vec::new();
    for (idx, n) in nodes.iter().enumerate() {
        let p = Producer::connect(n.tcp.to_string(), Config::new())
            .await
            .unwrap();
        let running = running.clone();
        publishers.push(tokio::spawn(async move {
            let (mut acked, mut errors) = (Vec::new(), Vec::new());
            let mut i = 0;
            while running.load(Ordering::SeqCst) {
                let body = format!("kill-{idx}-{i}");
                i += 1;
                match p.publish("kill", &body).await {
                    Ok(()) => acked.push(body),
                    Err(e) => {
                        errors.push(format!("{body}: {e}"));
                        if idx == 2 {
                            break;
                        }
                    }
                }
                // Pacing (a rate, not a synchronisation): ~1 message/ms per node.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            p.stop().await;
            (acked, errors)
        }));
    }

    // Mid-stream: the consumer is receiving from all three when node 2 is SIGKILLed.
    c.wait_len(300, DELIVER).await;
    let before = c.snapshot();
    for n in 0..3 {
        assert!(
            before.iter().any(|(b, _)| node_of(b) == n),
            "nothing received from node {n} before the kill"
        );
    }
    tokio::task::block_in_place(|| nodes[2].kill());
    let at_kill = c.len();
    // Keep publishing to the survivors for a while after the kill.
    c.wait_len(at_kill + 600, DELIVER).await;
    running.store(false, Ordering::SeqCst);
    let mut results = Vec::new();
    for p in publishers {
        results.push(
            tokio::time::timeout(WAIT, p)
                .await
                .expect("publisher")
                .unwrap(),
        );
    }
    for (idx, (acked, errors)) in results.iter().enumerate().take(2) {
        assert!(errors.is_empty(), "node {idx} publish errors: {errors:?}");
        assert!(
            acked.len() > 100,
            "node {idx}: only {} published",
            acked.len()
        );
    }
    assert!(
        !results[2].1.is_empty(),
        "publishing to the killed node never failed"
    );

    // Everything the survivors acknowledged arrives, exactly once.
    let want: Vec<String> = results[..2]
        .iter()
        .flat_map(|(acked, _)| acked.iter().cloned())
        .collect();
    c.wait_all(&want, DELIVER).await;
    // The dead node disappears from lookupd (its registration connection closed).
    l.wait_producers("kill", &addrs[..2], WAIT).await;
    for (idx, n) in nodes.iter().enumerate().take(2) {
        let ch_want = [
            ("client_count", 1),
            ("depth", 0),
            ("in_flight_count", 0),
            ("timeout_count", 0),
            ("message_count", results[idx].0.len() as i64),
        ];
        wait_channel(n, "kill", "ch", &ch_want).await;
    }
    let got = c.stop().await;
    let survivors: Vec<&String> = got
        .iter()
        .map(|(b, _)| b)
        .filter(|b| node_of(b) < 2)
        .collect();
    assert_eq!(
        duplicates(survivors.iter().copied()),
        Vec::<&String>::new(),
        "duplicates"
    );
    assert_eq!(survivors.len(), want.len());
    let refs: Vec<&TestNsqd> = nodes.iter().collect();
    assert_routed(&got, &refs);
    let victim_received = got.iter().filter(|(b, _)| node_of(b) == 2).count();
    eprintln!(
        "killed node: {} acknowledged, {victim_received} delivered before the kill",
        results[2].0.len()
    );
    assert!(victim_received <= results[2].0.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lookupd_restart_recovers_registrations() {
    let mut l = lookupd();
    let mut nodes = vec![nsqd_for(&[&l]), nsqd_for(&[&l])];
    for n in &nodes {
        n.create_channel("lr", "ch").await;
    }
    l.wait_producers("lr", &[nodes[0].tcp, nodes[1].tcp], REGISTER)
        .await;
    let c = collect(lookupd_consumer("lr", "ch", 5, &[&l]).await);
    let mut want = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        want.extend(publish_to(n, "lr", bodies("lr", i, 0..20)).await);
    }
    c.wait_all(&want, DELIVER).await;

    // lookupd goes away with everything it knew.
    tokio::task::block_in_place(|| l.kill());
    // Consumers keep their nsqd connections meanwhile.
    for (i, n) in nodes.iter().enumerate() {
        want.extend(publish_to(n, "lr", bodies("lr", i, 20..30)).await);
    }
    c.wait_all(&want, DELIVER).await;
    // A node that starts while lookupd is down, with messages waiting.
    nodes.push(nsqd_for(&[&l]));
    want.extend(publish_to(&nodes[2], "lr", bodies("lr", 2, 0..20)).await);

    // An empty lookupd on the same ports: every nsqd registers again.
    tokio::task::block_in_place(|| l.restart_same_ports());
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.tcp).collect();
    l.wait_producers("lr", &addrs, REGISTER).await;
    // The running consumer discovers the new node through the restarted lookupd.
    c.wait_all(&want, DELIVER).await;
    for n in &nodes {
        wait_channel(n, "lr", "ch", &[("client_count", 1), ("depth", 0)]).await;
    }

    // A topic first created after the restart, and a new lookupd-only consumer.
    let mut want2 = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        want2.extend(publish_to(n, "lr2", bodies("lr2", i, 0..15)).await);
    }
    l.wait_producers("lr2", &addrs, REGISTER).await;
    let c2 = collect(lookupd_consumer("lr2", "ch", 5, &[&l]).await);
    c2.wait_all(&want2, DELIVER).await;

    let refs: Vec<&TestNsqd> = nodes.iter().collect();
    let got = c.stop().await;
    assert_eq!(got.len(), want.len(), "exactly once");
    assert_routed(&got, &refs);
    let got2 = c2.stop().await;
    assert_eq!(got2.len(), want2.len(), "exactly once");
    assert_routed(&got2, &refs);
    let by_node: HashMap<usize, usize> = got2.iter().fold(HashMap::new(), |mut m, (b, _)| {
        *m.entry(node_of(b)).or_default() += 1;
        m
    });
    assert_eq!(by_node.len(), 3, "{by_node:?}");
}

/// An `https://` lookupd address: nsqlookupd serves no HTTPS, so a real HTTPS server (rustls,
/// rcgen certificate) answers `/lookup` with the real nsqd's address. The consumer trusts the
/// test CA through `lookupd_tls_root_ca_file`, finds the nsqd and receives what is published;
/// its polls share one kept-alive TLS connection. Without the CA file nothing is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_lookupd_address_is_polled_over_kept_alive_tls() {
    use nsq_http_client::testing::{Mode, Pki, TestServer};
    let pki = Pki::new();
    let nsqd = TestNsqd::start(&[]);
    let port = nsqd.tcp.port();
    let lookupd = TestServer::start(Mode::https(&pki), move |r, _| {
        // A lookupd without nsq-rs's push stream, as Go's: the consumer then only polls.
        if r.path.starts_with("/lookup/watch?") {
            return (404, b"404 page not found".to_vec());
        }
        assert!(r.path.starts_with("/lookup?topic=tls_lookup"), "{}", r.path);
        let body = format!(
            r#"{{"channels":[],"producers":[{{"remote_address":"127.0.0.1:1","hostname":"h",
            "broadcast_address":"127.0.0.1","tcp_port":{port},"http_port":1,"version":"1.3.0"}}]}}"#
        );
        (200, body.into_bytes())
    });
    let mut config = lookupd_config(10);
    config.lookupd_poll_interval = Duration::from_millis(50);
    config.lookupd_tls_root_ca_file = Some(pki.ca.clone());
    let consumer = Consumer::new("tls_lookup", "ch", config).unwrap();
    consumer.connect_to_lookupd(lookupd.url()).await.unwrap();
    let c = collect(consumer);
    let want = publish_to(&nsqd, "tls_lookup", bodies("tls", 0, 0..20)).await;
    c.wait_all(&want, DELIVER).await;
    let deadline = Instant::now() + WAIT;
    while lookupd.request_count() < 4 {
        assert!(
            Instant::now() < deadline,
            "lookupd polled only {} times",
            lookupd.request_count()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let polls: Vec<_> = lookupd
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/lookup?"))
        .collect();
    // Kept alive: the polls and the one /lookup/watch attempt (404: not offered, not asked
    // again) share at most the two connections opened when both started at once.
    let watches = lookupd.request_count() - polls.len();
    assert_eq!(watches, 1, "one /lookup/watch attempt");
    assert!(
        lookupd.connections() <= 2,
        "{} TLS connections for {} requests",
        lookupd.connections(),
        lookupd.request_count()
    );
    let r = &polls[0];
    assert_eq!(r.header("accept"), Some("application/vnd.nsq; version=1.0"));

    // Without the CA file the handshake fails: no lookup gets through.
    let untrusted = TestServer::start(Mode::https(&pki), |_, _| (200, b"{}".to_vec()));
    let consumer = Consumer::new("tls_lookup", "other", lookupd_config(10)).unwrap();
    consumer.connect_to_lookupd(untrusted.url()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(untrusted.request_count(), 0);
    assert!(untrusted.connections() >= 1, "the consumer did try");
    drop(consumer);
}

/// nsq-rs lookupd pushes changes (`/lookup/watch`): with a 60 s poll interval, an nsqd that
/// registers the topic after the consumer's first (empty) lookup is still found at once,
/// because the consumer follows the stream and looks up when it says something changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_lookupd_change_is_found_long_before_the_next_poll() {
    let l = lookupd();
    let mut config = lookupd_config(5);
    config.lookupd_poll_interval = Duration::from_secs(60);
    let consumer = Consumer::new("pushed", "ch", config).unwrap();
    consumer
        .connect_to_lookupd(format!("http://{}", l.http))
        .await
        .unwrap();
    let c = collect(consumer);
    // Let the first lookup (nothing yet) happen, so only a push can find the nsqd.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = nsqd_for(&[&l]);
    n.create_channel("pushed", "ch").await;
    let want = publish_to(&n, "pushed", bodies("pushed", 0, 0..5)).await;
    l.wait_producers("pushed", &[n.tcp], REGISTER).await;
    let registered = Instant::now();
    c.wait_all(&want, DELIVER).await;
    let took = registered.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "found {took:?} after lookupd knew the producer; the poll interval is 60 s"
    );
    let got = c.stop().await;
    assert_eq!(got.len(), want.len());
}
