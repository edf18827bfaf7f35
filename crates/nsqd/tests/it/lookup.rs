//! nsqd's registration with nsqlookupd, against the real `nsqlookupd` binary: what a
//! lookupd's HTTP API shows after nsqd starts, creates and deletes topics and channels, loses
//! an ephemeral channel's last consumer, sees its lookupd restarted, or finds it only later;
//! two lookupds; `PUT /config/nsqlookupd_tcp_addresses`.
//!
//! Every wait is a bounded poll of lookupd's HTTP API.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{self, http_request, try_http_request, wait_until, TestNsqd};

/// Registration of a change (nsqd → lookupd over an open connection).
const CHANGE: Duration = Duration::from_secs(10);
/// A reconnection (backoff doubles from 250 ms; a lookupd down for a few seconds is retried
/// within a few more).
const RECONNECT: Duration = Duration::from_secs(30);

/// Path of the `nsqlookupd` binary next to `nsqd`, built on first use if missing.
pub(crate) fn nsqlookupd_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    static BUILD: Mutex<()> = Mutex::new(());
    BIN.get_or_init(|| {
        let nsqd = harness::nsqd_bin();
        let bin = nsqd.with_file_name("nsqlookupd");
        if !bin.exists() {
            let _g = BUILD.lock().unwrap();
            // <target>/<profile>/nsqd → <target>
            let target = nsqd
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .to_path_buf();
            let manifest = harness::workspace_root().join("Cargo.toml");
            let status = Command::new(env!("CARGO"))
                .args(["build", "-p", "nsqlookupd", "--manifest-path"])
                .arg(&manifest)
                .env("CARGO_TARGET_DIR", &target)
                .status()
                .expect("run cargo build -p nsqlookupd");
            assert!(status.success(), "cargo build -p nsqlookupd failed");
        }
        assert!(bin.exists(), "nsqlookupd not found at {}", bin.display());
        bin
    })
    .clone()
}

/// A running `nsqlookupd` child process.
pub(crate) struct Lookupd {
    child: Child,
    tcp: SocketAddr,
    http: SocketAddr,
}

impl Lookupd {
    /// Starts nsqlookupd on a free loopback port.
    pub(crate) fn start() -> Lookupd {
        Lookupd::start_on("127.0.0.1:0")
    }

    /// Starts nsqlookupd with its TCP protocol on `tcp_address` (HTTP on a free port).
    fn start_on(tcp_address: &str) -> Lookupd {
        let bin = nsqlookupd_bin();
        let mut child = Command::new(&bin)
            .arg(format!("--tcp-address={tcp_address}"))
            .arg("--http-address=127.0.0.1:0")
            .arg("--broadcast-address=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let prefix = format!("[nsqlookupd {}]", child.id());
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("{prefix} {line}");
                let _ = tx.send(line);
            }
        });
        let listen = |line: &str, marker: &str| -> Option<SocketAddr> {
            let rest = &line[line.find(marker)? + marker.len()..];
            rest.split_whitespace().next()?.parse().ok()
        };
        let deadline = Instant::now() + harness::STARTUP_TIMEOUT;
        let (mut tcp, mut http) = (None, None);
        while tcp.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    tcp = tcp.or_else(|| listen(&line, "TCP: listening on"));
                    http = http.or_else(|| listen(&line, "HTTP: listening on"));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nsqlookupd on {tcp_address} did not start: {e:?}");
                }
            }
        }
        Lookupd {
            child,
            tcp: tcp.unwrap(),
            http: http.unwrap(),
        }
    }

    pub(crate) fn http_addr(&self) -> SocketAddr {
        self.http
    }

    pub(crate) fn tcp_flag(&self) -> String {
        format!("--lookupd-tcp-address={}", self.tcp)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = http_request(self.http, "GET", path, &[]);
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        (r.status, v)
    }

    /// `/topics`.
    fn topics(&self) -> Vec<String> {
        strings(&self.get("/topics").1["topics"])
    }

    /// `/channels?topic=`.
    fn channels(&self, topic: &str) -> Vec<String> {
        strings(
            &self
                .get(&format!("/channels?topic={}", harness::urlencode(topic)))
                .1["channels"],
        )
    }

    /// `/lookup?topic=`: (channels, producers); empty on 404.
    pub(crate) fn lookup(&self, topic: &str) -> (Vec<String>, Vec<Value>) {
        let (status, v) = self.get(&format!("/lookup?topic={}", harness::urlencode(topic)));
        if status == 404 {
            return (Vec::new(), Vec::new());
        }
        assert_eq!(status, 200, "/lookup?topic={topic}: {v}");
        let producers = v["producers"].as_array().cloned().unwrap_or_default();
        (strings(&v["channels"]), producers)
    }

    /// `/nodes` producers.
    fn nodes(&self) -> Vec<Value> {
        self.get("/nodes").1["producers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The channels of `topic` that have a producer (from `/debug`): unlike `/channels`, this
    /// leaves out registrations lookupd keeps after their producers unregistered.
    fn registered_channels(&self, topic: &str) -> Vec<String> {
        let prefix = format!("channel:{topic}:");
        let v = self.get("/debug").1;
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, producers)| producers.as_array().is_some_and(|a| !a.is_empty()))
                    .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `/channels?topic=` is exactly `want`.
    #[track_caller]
    fn wait_channels(&self, topic: &str, want: &[&str], timeout: Duration) {
        self.wait_list(&format!("/channels of {topic}"), want, timeout, || {
            self.channels(topic)
        });
    }

    /// Waits until the channels of `topic` with a producer are exactly `want`.
    #[track_caller]
    fn wait_registered(&self, topic: &str, want: &[&str], timeout: Duration) {
        self.wait_list(
            &format!("registered channels of {topic}"),
            want,
            timeout,
            || self.registered_channels(topic),
        );
    }

    #[track_caller]
    fn wait_list(&self, what: &str, want: &[&str], timeout: Duration, f: impl Fn() -> Vec<String>) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut last = Vec::new();
        let deadline = Instant::now() + timeout;
        loop {
            let mut have = f();
            have.sort();
            if have == want {
                return;
            }
            if Instant::now() >= deadline {
                panic!("lookupd {}: {what} are {last:?}, want {want:?}", self.tcp);
            }
            last = have;
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `/topics` contains (or lacks) `topic`.
    #[track_caller]
    fn wait_topic(&self, topic: &str, present: bool, timeout: Duration) {
        wait_until(
            timeout,
            &format!(
                "lookupd {}: topic {topic} {}",
                self.tcp,
                if present { "registered" } else { "gone" }
            ),
            || self.topics().iter().any(|t| t == topic) == present,
        );
    }

    /// Waits until `/lookup?topic=` lists exactly `n` producers.
    #[track_caller]
    pub(crate) fn wait_producers(&self, topic: &str, n: usize, timeout: Duration) -> Vec<Value> {
        harness::wait_for(
            timeout,
            &format!("lookupd {}: {n} producer(s) of {topic}", self.tcp),
            || {
                let p = self.lookup(topic).1;
                (p.len() == n).then_some(p)
            },
        )
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[track_caller]
fn post(n: &TestNsqd, path: &str) {
    let r = n.http_post(path, b"");
    assert_eq!(r.status, 200, "POST {path}: {r:?}");
}

/// A loopback port that nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn registers_topics_and_channels_with_broadcast_identity() {
    let l = Lookupd::start();
    let n = TestNsqd::start(&[
        &l.tcp_flag(),
        "--broadcast-address=nsqd-under-test.example",
        "--broadcast-tcp-port=4242",
        "--topology-zone=z1",
        "--topology-region=r1",
    ]);
    post(&n, "/topic/create?topic=reg_t");
    post(&n, "/channel/create?topic=reg_t&channel=c1");
    post(&n, "/channel/create?topic=reg_t&channel=c2");
    post(&n, "/topic/create?topic=reg_lonely");

    l.wait_channels("reg_t", &["c1", "c2"], CHANGE);
    l.wait_topic("reg_lonely", true, CHANGE);
    let (channels, producers) = l.lookup("reg_t");
    assert_eq!(channels, ["c1", "c2"]);
    assert_eq!(producers.len(), 1, "{producers:?}");
    let p = &producers[0];
    assert_eq!(p["broadcast_address"], "nsqd-under-test.example", "{p}");
    assert_eq!(p["tcp_port"], 4242, "--broadcast-tcp-port: {p}");
    assert_eq!(
        p["http_port"],
        n.http_addr().port(),
        "no --broadcast-http-port: the bound port; {p}"
    );
    assert_eq!(p["version"], "1.3.0", "{p}");
    assert_eq!(p["topology_zone"], "z1", "{p}");
    assert_eq!(p["topology_region"], "r1", "{p}");
    assert!(!p["hostname"].as_str().unwrap_or("").is_empty(), "{p}");
    assert!(
        p["remote_address"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{p}"
    );

    let mut topics = l.topics();
    topics.sort();
    assert_eq!(topics, ["reg_lonely", "reg_t"]);
    assert_eq!(l.lookup("reg_lonely").1.len(), 1);

    let nodes = l.nodes();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    let mut node_topics = strings(&nodes[0]["topics"]);
    node_topics.sort();
    assert_eq!(node_topics, ["reg_lonely", "reg_t"]);
    assert_eq!(nodes[0]["tcp_port"], 4242);

    // --broadcast-http-port is announced as given.
    let l2 = Lookupd::start();
    let n2 = TestNsqd::start(&[
        &l2.tcp_flag(),
        "--broadcast-address=127.0.0.1",
        "--broadcast-http-port=4343",
    ]);
    post(&n2, "/topic/create?topic=reg_http");
    let p = l2.wait_producers("reg_http", 1, CHANGE);
    assert_eq!(p[0]["http_port"], 4343, "{}", p[0]);
    assert_eq!(p[0]["tcp_port"], n2.tcp_addr().port(), "{}", p[0]);
    assert_eq!(p[0]["broadcast_address"], "127.0.0.1");
}

#[test]
fn topics_and_channels_come_and_go() {
    let l = Lookupd::start();
    let n = TestNsqd::start(&[&l.tcp_flag(), "--broadcast-address=127.0.0.1"]);

    // Created by PUB and SUB over TCP.
    let mut producer = n.client();
    producer.pub_ok("cg", b"m");
    l.wait_producers("cg", 1, CHANGE);
    assert!(l.channels("cg").is_empty());
    let mut consumer = n.client();
    consumer.sub_ok("cg", "sub", 0);
    l.wait_channels("cg", &["sub"], CHANGE);
    l.wait_registered("cg", &["sub"], CHANGE);

    // Created and deleted over HTTP. (lookupd keeps listing a deleted non-ephemeral channel
    // in `/channels`, without producers, as Go's does.)
    post(&n, "/channel/create?topic=cg&channel=extra");
    l.wait_registered("cg", &["extra", "sub"], CHANGE);
    post(&n, "/channel/delete?topic=cg&channel=extra");
    l.wait_registered("cg", &["sub"], CHANGE);
    // The topic stays registered without that channel (as with Go).
    assert_eq!(l.lookup("cg").1.len(), 1);

    // An ephemeral channel disappears with its last consumer.
    let mut eph = n.client();
    eph.sub_ok("cg", "e#ephemeral", 0);
    l.wait_registered("cg", &["e#ephemeral", "sub"], CHANGE);
    eph.close();
    l.wait_registered("cg", &["sub"], CHANGE);
    l.wait_channels("cg", &["extra", "sub"], CHANGE);

    // An ephemeral topic too (its last channel goes with its consumer).
    let mut eph = n.client();
    eph.sub_ok("et#ephemeral", "c#ephemeral", 0);
    l.wait_channels("et#ephemeral", &["c#ephemeral"], CHANGE);
    l.wait_topic("et#ephemeral", true, CHANGE);
    eph.close();
    l.wait_topic("et#ephemeral", false, CHANGE);
    l.wait_channels("et#ephemeral", &[], CHANGE);

    // Deleting the topic withdraws it and its channels.
    consumer.close();
    post(&n, "/topic/delete?topic=cg");
    l.wait_producers("cg", 0, CHANGE);
    l.wait_registered("cg", &[], CHANGE);
    let nodes = l.nodes();
    assert_eq!(nodes.len(), 1, "the node itself stays: {nodes:?}");
    assert!(strings(&nodes[0]["topics"]).is_empty(), "{nodes:?}");

    // Created again: registered again, and (Go's trap 9) the channels lookupd still lists
    // for the topic are created again on this node.
    post(&n, "/topic/create?topic=cg");
    l.wait_producers("cg", 1, CHANGE);
    l.wait_registered("cg", &["extra", "sub"], CHANGE);
    producer.close();
}

#[test]
fn reregisters_everything_after_a_lookupd_restart() {
    let l = Lookupd::start();
    let tcp = l.tcp;
    let n = TestNsqd::start(&[&l.tcp_flag(), "--broadcast-address=127.0.0.1"]);
    post(&n, "/topic/create?topic=rr");
    post(&n, "/channel/create?topic=rr&channel=a");
    post(&n, "/channel/create?topic=rr&channel=b");
    post(&n, "/topic/create?topic=rr_lonely");
    l.wait_channels("rr", &["a", "b"], CHANGE);
    l.wait_topic("rr_lonely", true, CHANGE);
    l.kill();

    // Changes while lookupd is down are part of what is registered when it is back.
    post(&n, "/channel/delete?topic=rr&channel=b");
    post(&n, "/topic/create?topic=rr_new");

    let l = Lookupd::start_on(&tcp.to_string());
    l.wait_channels("rr", &["a"], RECONNECT);
    l.wait_registered("rr", &["a"], CHANGE);
    l.wait_topic("rr_lonely", true, CHANGE);
    l.wait_topic("rr_new", true, CHANGE);
    let p = l.wait_producers("rr", 1, CHANGE);
    assert_eq!(p[0]["tcp_port"], n.tcp_addr().port());

    // And changes keep flowing on the new connection.
    post(&n, "/channel/create?topic=rr&channel=c");
    l.wait_registered("rr", &["a", "c"], CHANGE);
}

#[test]
fn registers_with_every_lookupd() {
    let l1 = Lookupd::start();
    let l2 = Lookupd::start();
    let n = TestNsqd::start(&[
        &l1.tcp_flag(),
        &l2.tcp_flag(),
        "--broadcast-address=127.0.0.1",
    ]);
    post(&n, "/topic/create?topic=two");
    post(&n, "/channel/create?topic=two&channel=c");
    for l in [&l1, &l2] {
        l.wait_channels("two", &["c"], CHANGE);
        l.wait_producers("two", 1, CHANGE);
    }
    post(&n, "/topic/delete?topic=two");
    for l in [&l1, &l2] {
        l.wait_producers("two", 0, CHANGE);
        l.wait_registered("two", &[], CHANGE);
    }
    // One lookupd going away does not disturb the other.
    l1.kill();
    post(&n, "/topic/create?topic=two_b");
    l2.wait_producers("two_b", 1, CHANGE);
}

#[test]
fn picks_up_a_lookupd_that_starts_later() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let n = TestNsqd::start(&[
        &format!("--lookupd-tcp-address={addr}"),
        "--broadcast-address=127.0.0.1",
    ]);
    post(&n, "/topic/create?topic=late");
    post(&n, "/channel/create?topic=late&channel=c");
    // nsqd keeps serving while its lookupd is unreachable.
    assert_eq!(n.http_get("/ping").status, 200);
    let l = Lookupd::start_on(&addr);
    l.wait_channels("late", &["c"], RECONNECT);
    let p = l.wait_producers("late", 1, CHANGE);
    assert_eq!(p[0]["http_port"], n.http_addr().port());
}

#[test]
fn put_config_replaces_the_lookupds() {
    let l1 = Lookupd::start();
    let l2 = Lookupd::start();
    let n = TestNsqd::start(&[&l1.tcp_flag(), "--broadcast-address=127.0.0.1"]);
    post(&n, "/topic/create?topic=cfg");
    l1.wait_producers("cfg", 1, CHANGE);

    let body = format!(r#"["{}"]"#, l2.tcp);
    let r = n.http("PUT", "/config/nsqlookupd_tcp_addresses", body.as_bytes());
    assert_eq!((r.status, r.text()), (200, body.clone()), "{r:?}");
    assert_eq!(n.http_get("/config/nsqlookupd_tcp_addresses").text(), body);

    l2.wait_producers("cfg", 1, RECONNECT);
    // The old lookupd lost the connection, and with it this node's registrations.
    wait_until(CHANGE, "old lookupd forgets the node", || {
        l1.nodes().is_empty()
    });
    assert!(l1.lookup("cfg").1.is_empty());

    // Emptying the list disconnects from all.
    let r = n.http("PUT", "/config/nsqlookupd_tcp_addresses", b"[]");
    assert_eq!(r.status, 200, "{r:?}");
    wait_until(CHANGE, "new lookupd forgets the node", || {
        l2.nodes().is_empty()
    });
    // nsqd still answers.
    assert!(try_http_request(n.http_addr(), "GET", "/ping", &[]).is_ok());
}

/// Trap 9: a topic first created on this node gets the channels the cluster already has
/// (from lookupd) before it hands out messages, so each of them receives what was published
/// in the meantime, not only the first one a consumer happens to create.
#[test]
fn new_topic_precreates_channels_known_to_lookupd() {
    let l = Lookupd::start();
    let r = http_request(
        l.http,
        "POST",
        "/channel/create?topic=pre&channel=billing",
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = http_request(
        l.http,
        "POST",
        "/channel/create?topic=pre&channel=audit",
        &[],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let n = TestNsqd::start(&[&l.tcp_flag(), "--broadcast-address=127.0.0.1"]);
    // lookupd lists the node at its IDENTIFY, before nsqd has read the answer that tells it
    // lookupd's HTTP address (which the pre-creation asks). nsqd registers a topic only after
    // it has that answer, so a registered topic is the event that proves it.
    let r = n.http_post("/topic/create?topic=warmup", b"");
    assert_eq!(r.status, 200, "{r:?}");
    wait_until(CHANGE, "nsqd registered topic warmup with lookupd", || {
        l.lookup("warmup").1.len() == 1
    });
    let mut p = n.client();
    p.pub_ok("pre", b"first");
    wait_until(CHANGE, "channels pre-created", || {
        n.channel_stats("pre", "billing").is_some() && n.channel_stats("pre", "audit").is_some()
    });
    for ch in ["billing", "audit"] {
        let mut c = n.client();
        c.sub_ok("pre", ch, 10);
        let m = c.read_message(harness::READ_TIMEOUT);
        assert_eq!(m.body.as_ref(), b"first", "channel {ch}");
    }
}
