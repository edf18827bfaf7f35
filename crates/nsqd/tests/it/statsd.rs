//! statsd push (`--statsd-address`) over the wire: a UDP socket in the test plays the statsd
//! daemon, the real nsqd pushes to it, and the test checks metric names, types, per-interval
//! counter deltas, gauges, packet sizes, `--statsd-exclude-ephemeral` and the prefix's `%s`
//! substitution, and (when the Go nsqd 1.3.0 binary is beside the repository) that one
//! steady interval is byte-for-byte what Go nsqd sends for the same state.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::harness::{go_nsqd_bin, RawClient, TestNsqd};

/// The statsd daemon: every datagram received, in order.
struct Listener {
    sock: UdpSocket,
    packets: Vec<Vec<u8>>,
    /// When each packet arrived.
    times: Vec<Instant>,
}

impl Listener {
    fn bind() -> Listener {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
        Listener {
            sock,
            packets: Vec::new(),
            times: Vec::new(),
        }
    }

    fn addr_flag(&self) -> String {
        format!("--statsd-address={}", self.sock.local_addr().unwrap())
    }

    /// Receives until `done(packets)` holds; panics at `timeout` with what arrived.
    fn recv_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[Vec<u8>]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65_536];
        while !done(&self.packets) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; received:\n{}",
                self.dump()
            );
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    self.packets.push(buf[..n].to_vec());
                    self.times.push(Instant::now());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("UDP recv: {e}"),
            }
        }
    }

    fn dump(&self) -> String {
        self.packets
            .iter()
            .map(|p| format!("{:?}", String::from_utf8_lossy(p)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// One statsd line: name (prefix removed), value, `c` or `g`.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    name: String,
    value: i64,
    kind: String,
}

fn parse(packet: &[u8], prefix: &str) -> Vec<Line> {
    let text = std::str::from_utf8(packet).expect("statsd packets are UTF-8");
    assert!(
        text.ends_with('\n'),
        "a packet ends with a newline: {text:?}"
    );
    text.lines()
        .map(|l| {
            let rest = l
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{l:?} does not start with {prefix:?}"));
            let (name, v) = rest.rsplit_once(':').expect("name:value|type");
            let (value, kind) = v.split_once('|').expect("value|type");
            Line {
                name: name.to_owned(),
                value: value.parse().expect("integer value"),
                kind: kind.to_owned(),
            }
        })
        .collect()
}

/// The pushes in `packets`: runs of packets, each starting with a packet whose first line is
/// `<prefix><first>`; only pushes followed by another start are complete and returned, with
/// the index of their first packet.
fn complete_pushes<'a>(
    packets: &'a [Vec<u8>],
    prefix: &str,
    first: &str,
) -> Vec<(usize, &'a [Vec<u8>])> {
    let marker = format!("{prefix}{first}:");
    let starts: Vec<usize> = packets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.starts_with(marker.as_bytes()))
        .map(|(i, _)| i)
        .collect();
    starts
        .windows(2)
        .map(|w| (w[0], &packets[w[0]..w[1]]))
        .collect()
}

/// Counter sums and last gauge values over `packets`.
fn fold(packets: &[Vec<u8>], prefix: &str) -> (HashMap<String, i64>, HashMap<String, i64>) {
    let (mut counters, mut gauges) = (HashMap::new(), HashMap::new());
    for p in packets {
        for l in parse(p, prefix) {
            match l.kind.as_str() {
                "c" => *counters.entry(l.name).or_insert(0) += l.value,
                "g" => {
                    gauges.insert(l.name, l.value);
                }
                k => panic!("unexpected statsd type {k:?} in {l:?}"),
            }
        }
    }
    (counters, gauges)
}

const TOPIC: &str = "st";
const EPH_TOPIC: &str = "ev#ephemeral";
const N: usize = 10;

/// Sets up the same state on any nsqd (Go's or ours): topic `st` with channels `ch` and
/// `eph#ephemeral`, N messages of 2 bytes; a consumer on `ch` takes 4, FINs 2, REQs 2 with a
/// minute's delay and stays connected; topic `ev#ephemeral` (no channel) gets one message.
/// Returns the consumer (keep it: it is the `clients` gauge) once `/stats` shows the state.
fn drive(n: &TestNsqd) -> RawClient {
    for path in [
        format!("/topic/create?topic={TOPIC}"),
        format!("/channel/create?topic={TOPIC}&channel=ch"),
        format!("/channel/create?topic={TOPIC}&channel=eph%23ephemeral"),
        "/topic/create?topic=ev%23ephemeral".to_owned(),
    ] {
        let r = n.http_post(&path, b"");
        assert_eq!(r.status, 200, "POST {path}: {r:?}");
    }
    let mut p = n.client();
    for i in 0..N {
        p.pub_ok(TOPIC, format!("m{i}").as_bytes());
    }
    p.pub_ok(EPH_TOPIC, b"e0");
    let mut c = n.client();
    c.sub_ok(TOPIC, "ch", 4);
    let msgs: Vec<_> = (0..4)
        .map(|_| c.read_message(Duration::from_secs(5)))
        .collect();
    c.rdy(0);
    c.fin(&msgs[0].id);
    c.fin(&msgs[1].id);
    c.req(&msgs[2].id, 60_000);
    c.req(&msgs[3].id, 60_000);
    crate::harness::wait_until(Duration::from_secs(10), "FINs and REQs applied", || {
        n.channel_stats(TOPIC, "ch").is_some_and(|s| {
            s["deferred_count"] == 2 && s["in_flight_count"] == 0 && s["depth"] == 6
        })
    });
    c
}

/// Names and types of one push for the state [`drive`] leaves, in Go's order.
fn expected_push(exclude_ephemeral: bool) -> Vec<(String, &'static str)> {
    let channel = |t: &str, c: &str| {
        [
            ("message_count", "c"),
            ("depth", "g"),
            ("backend_depth", "g"),
            ("in_flight_count", "g"),
            ("deferred_count", "g"),
            ("requeue_count", "c"),
            ("timeout_count", "c"),
            ("clients", "g"),
        ]
        .map(|(m, k)| (format!("topic.{t}.channel.{c}.{m}"), k))
    };
    let topic = |t: &str| {
        [
            ("message_count", "c"),
            ("message_bytes", "c"),
            ("depth", "g"),
            ("backend_depth", "g"),
        ]
        .map(|(m, k)| (format!("topic.{t}.{m}"), k))
    };
    let mut v = Vec::new();
    if !exclude_ephemeral {
        v.extend(topic(EPH_TOPIC));
    }
    v.extend(topic(TOPIC));
    v.extend(channel(TOPIC, "ch"));
    if !exclude_ephemeral {
        v.extend(channel(TOPIC, "eph#ephemeral"));
    }
    v
}

/// Waits for the second complete push that started after everything `drive` did (the first
/// one may still count some of it: its interval began earlier), and returns all packets up
/// to its end, that push's packets and how long it took from its first packet to its last.
/// Nothing happens during its interval: its counters are zero.
fn steady_push(
    l: &mut Listener,
    mark: usize,
    prefix: &str,
    first: &str,
    timeout: Duration,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>, Duration) {
    let after = |ps: &[Vec<u8>]| -> Option<(usize, usize)> {
        complete_pushes(ps, prefix, first)
            .into_iter()
            .filter(|(i, _)| *i >= mark)
            .nth(1)
            .map(|(i, p)| (i, p.len()))
    };
    l.recv_until(
        timeout,
        "two complete pushes after the state was set up",
        |ps| after(ps).is_some(),
    );
    let (start, len) = after(&l.packets).unwrap();
    (
        l.packets[..start + len].to_vec(),
        l.packets[start..start + len].to_vec(),
        l.times[start + len - 1] - l.times[start],
    )
}

fn check_packets(packets: &[Vec<u8>], limit: usize) {
    for p in packets {
        assert!(
            p.len() <= limit,
            "packet of {} bytes > {limit}: {:?}",
            p.len(),
            String::from_utf8_lossy(p)
        );
        assert_eq!(p.last(), Some(&b'\n'));
    }
}

/// Go's packing within one push: a packet was sent only because the next line did not fit.
fn check_greedy(push: &[Vec<u8>], limit: usize) {
    for w in push.windows(2) {
        let next_line = w[1].iter().position(|&b| b == b'\n').unwrap() + 1;
        assert!(
            w[0].len() + next_line > limit,
            "packet of {} bytes sent although the next line ({next_line} bytes) fitted",
            w[0].len()
        );
    }
}

#[test]
fn statsd_pushes_go_names_types_and_deltas() {
    let mut l = Listener::bind();
    let addr = l.addr_flag();
    let mut n = TestNsqd::start(&[
        &addr,
        "--statsd-interval=1s",
        "--statsd-prefix=nsq.%s",
        "--broadcast-address=stats.host.example",
        "--statsd-udp-packet-size=200",
        "--statsd-exclude-ephemeral=true",
        "--statsd-mem-stats=false",
    ]);
    // `%s` is the broadcast address and the HTTP port, with `.` and `:` made `_`.
    let prefix = format!("nsq.stats_host_example_{}.", n.http_addr().port());
    let consumer = drive(&n);
    let mark = l.packets.len();
    let first = format!("topic.{TOPIC}.message_count");
    let (all, push, _) = steady_push(&mut l, mark, &prefix, &first, Duration::from_secs(20));

    check_packets(&all, 200);
    check_greedy(&push, 200);
    assert!(push.len() > 1, "12 lines need several 200-byte packets");
    let names: Vec<(String, String)> = push
        .iter()
        .flat_map(|p| parse(p, &prefix))
        .map(|l| (l.name, l.kind))
        .collect();
    let want: Vec<(String, String)> = expected_push(true)
        .into_iter()
        .map(|(n, k)| (n, k.to_owned()))
        .collect();
    assert_eq!(names, want);
    assert!(
        all.iter()
            .all(|p| !String::from_utf8_lossy(p).contains("#ephemeral")),
        "--statsd-exclude-ephemeral: {}",
        l.dump()
    );

    // Counters are per-interval deltas: summed over every push they are the totals, and the
    // steady push (nothing happened during its interval) sends zeros.
    let (counters, gauges) = fold(&all, &prefix);
    let c = |m: &str| counters.get(m).copied();
    assert_eq!(c("topic.st.message_count"), Some(N as i64));
    assert_eq!(c("topic.st.message_bytes"), Some(2 * N as i64));
    assert_eq!(c("topic.st.channel.ch.message_count"), Some(N as i64));
    assert_eq!(c("topic.st.channel.ch.requeue_count"), Some(2));
    assert_eq!(c("topic.st.channel.ch.timeout_count"), Some(0));
    let (steady_counters, _) = fold(&push, &prefix);
    assert!(
        steady_counters.values().all(|&v| v == 0),
        "{steady_counters:?}"
    );
    let g = |m: &str| gauges.get(m).copied();
    assert_eq!(g("topic.st.depth"), Some(0));
    assert_eq!(g("topic.st.backend_depth"), Some(0));
    assert_eq!(g("topic.st.channel.ch.depth"), Some(6));
    assert_eq!(g("topic.st.channel.ch.in_flight_count"), Some(0));
    assert_eq!(g("topic.st.channel.ch.deferred_count"), Some(2));
    assert_eq!(g("topic.st.channel.ch.clients"), Some(1));
    assert!(!gauges.keys().any(|k| k.starts_with("mem.")));

    // The loop stops at shutdown.
    drop(consumer);
    assert!(n.terminate().success());
    assert!(
        n.logs().iter().any(|l| l.contains("STATSD: closing")),
        "no STATSD: closing in the log"
    );
}

#[test]
fn statsd_includes_ephemeral_and_memory_by_default() {
    let mut l = Listener::bind();
    let addr = l.addr_flag();
    // An empty prefix: names are sent bare.
    let n = TestNsqd::start(&[&addr, "--statsd-interval=1s", "--statsd-prefix="]);
    let _consumer = drive(&n);
    let mark = l.packets.len();
    let first = format!("topic.{EPH_TOPIC}.message_count");
    let (all, push, _) = steady_push(&mut l, mark, "", &first, Duration::from_secs(20));
    check_packets(&all, 508);
    check_greedy(&push, 508);
    let lines: Vec<Line> = push.iter().flat_map(|p| parse(p, "")).collect();
    let (last, rest) = lines.split_last().unwrap();
    // Memory: only the figure nsq-rs measures (RSS), under Go's name, after the topics.
    assert_eq!(last.name, "mem.heap_in_use_bytes");
    assert_eq!(last.kind, "g");
    assert!(last.value > 0, "{last:?}");
    let names: Vec<(String, String)> = rest
        .iter()
        .map(|l| (l.name.clone(), l.kind.clone()))
        .collect();
    let want: Vec<(String, String)> = expected_push(false)
        .into_iter()
        .map(|(n, k)| (n, k.to_owned()))
        .collect();
    assert_eq!(names, want);
    let (counters, gauges) = fold(&all, "");
    assert_eq!(counters.get("topic.ev#ephemeral.message_count"), Some(&1));
    assert_eq!(gauges.get("topic.ev#ephemeral.depth"), Some(&1));
    assert_eq!(
        counters.get("topic.st.channel.eph#ephemeral.message_count"),
        Some(&(N as i64))
    );
    assert_eq!(
        gauges.get("topic.st.channel.eph#ephemeral.depth"),
        Some(&(N as i64))
    );
}

/// One steady push of Go nsqd 1.3.0 and of ours for the same state, byte for byte (memory
/// stats off: those are runtime figures). Interval 2s: Go panics with 1s.
#[test]
fn statsd_push_is_byte_identical_to_go_nsqd() {
    let Some(go) = go_nsqd_bin() else {
        eprintln!("NOT RUN: the comparison with Go nsqd 1.3.0 (../shared/reference/go-nsq-1.3.0-linux-amd64/nsqd is not beside the repository)");
        return;
    };
    let args = |addr: &str| {
        vec![
            addr.to_owned(),
            "--statsd-interval=2s".to_owned(),
            "--statsd-mem-stats=false".to_owned(),
            "--statsd-udp-packet-size=200".to_owned(),
            "--broadcast-address=cmp.example".to_owned(),
            // The same prefix for both: nsq.cmp_example_4151.
            "--broadcast-http-port=4151".to_owned(),
        ]
    };
    let prefix = "nsq.cmp_example_4151.";
    let first = format!("topic.{EPH_TOPIC}.message_count");
    let run = |bin: Option<&std::path::Path>| {
        let mut l = Listener::bind();
        let a = args(&l.addr_flag());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let n = match bin {
            Some(b) => TestNsqd::start_bin(b, dir.path(), &a),
            None => TestNsqd::start_in(dir.path(), &a),
        };
        let consumer = drive(&n);
        let mark = l.packets.len();
        let got = steady_push(&mut l, mark, prefix, &first, Duration::from_secs(30));
        drop((consumer, n));
        got
    };
    let (go_all, go_push, _) = run(Some(&go));
    let (our_all, our_push, our_span) = run(None);
    // Go's SpreadWriter: one packet, a wait of (interval - 1s) / n, the next... The waits
    // never end early, so the n packets span at least (n - 1) / n seconds.
    let n = our_push.len() as u32;
    assert!(
        our_span >= Duration::from_secs(1) * (n - 1) / n - Duration::from_millis(20),
        "{n} packets sent within {our_span:?}"
    );
    let text = |ps: &[Vec<u8>]| {
        ps.iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        text(&our_push),
        text(&go_push),
        "one steady push, packet by packet"
    );
    let (go_c, _) = fold(&go_all, prefix);
    let (our_c, _) = fold(&our_all, prefix);
    assert_eq!(go_c.get("topic.st.message_count"), Some(&(N as i64)));
    assert_eq!(our_c, go_c, "counter sums over all pushes");
}

/// An address that does not resolve skips the interval with Go's error line; a statsd daemon
/// that is not listening makes sends fail (the kernel reports the ICMP "port unreachable" of
/// one datagram on a later send): a warning, and nsqd keeps serving.
#[test]
fn statsd_failures_are_logged_not_fatal() {
    let n = TestNsqd::start(&[
        "--statsd-address=statsd.invalid:8125",
        "--statsd-interval=1s",
    ]);
    n.wait_for_log(
        "failed to create UDP socket to statsd(statsd.invalid:8125)",
        Duration::from_secs(10),
    );
    assert_eq!(n.http_get("/ping").status, 200);

    // A port nobody listens on (bound, then closed).
    let closed = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let flag = format!("--statsd-address={closed}");
    let n = TestNsqd::start(&[&flag, "--statsd-interval=1s", "--statsd-udp-packet-size=1"]);
    // One line per packet (each is longer than the size): many sends per push.
    n.http_post("/topic/create?topic=lonely", b"");
    n.wait_for_log("STATSD: failed to send", Duration::from_secs(10));
    assert_eq!(n.http_get("/ping").status, 200);
}

#[test]
fn statsd_sends_e2e_percentiles_as_gauges() {
    let mut l = Listener::bind();
    let n = TestNsqd::start(&[
        &l.addr_flag(),
        "--statsd-interval=1s",
        "--statsd-prefix=",
        "--statsd-mem-stats=false",
        "--e2e-processing-latency-percentile=0.99,0.5",
    ]);
    let mut c = n.client();
    c.sub_ok("lat", "ch", 10);
    let mut p = n.client();
    p.pub_ok("lat", b"x");
    let m = c.read_message(crate::harness::READ_TIMEOUT);
    std::thread::sleep(Duration::from_millis(20));
    c.fin(&m.id);
    // Go's names: `_%.0f` of quantile × 100; gauges in ns. The held message took ≥ 20 ms.
    let want = [
        "topic.lat.e2e_processing_latency_99",
        "topic.lat.e2e_processing_latency_50",
        "topic.lat.channel.ch.e2e_processing_latency_99",
        "topic.lat.channel.ch.e2e_processing_latency_50",
    ];
    l.recv_until(
        Duration::from_secs(10),
        "e2e gauges above 20 ms",
        |packets| {
            let lines: Vec<Line> = packets.iter().flat_map(|p| parse(p, "")).collect();
            want.iter().all(|w| {
                lines
                    .iter()
                    .any(|x| x.name == *w && x.kind == "g" && x.value >= 20_000_000)
            })
        },
    );
}
