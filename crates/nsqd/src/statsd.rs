//! statsd push (`--statsd-address`): every `--statsd-interval`, nsqd sends its topic, channel
//! and memory figures to a statsd daemon over UDP, as Go nsqd 1.3.0 does (`nsqd/statsd.go`,
//! `internal/statsd`, `internal/writers`).
//!
//! Why it matters: graphite dashboards and Go nsqadmin's `--graphite-url` charts are built on
//! these exact metric names, so a drop-in nsqd has to send the same lines.
//!
//! How: a sans-I/O core and a thin loop.
//! - [`Snapshot::from_stats`] keeps what statsd needs from a `/stats` snapshot (names and
//!   numbers only, so the previous interval's snapshot pins no topic or channel);
//! - [`lines`] is a pure function from (previous snapshot, current snapshot, options) to the
//!   statsd lines of one interval;
//! - [`pack`] packs them into UDP payloads, and [`spread_delay`] says how far apart they go;
//! - [`run`] is the tokio loop around them: a ticker, a UDP socket, shutdown.
//!
//! What Go does, and so do we:
//! - the first push is one interval after start (a ticker, no jitter or alignment), then one
//!   per interval; a push that takes longer than an interval skips ticks (Go's ticker drops
//!   them);
//! - each interval "dials" the address again (resolves it, with a one-second timeout, and
//!   connects a fresh UDP socket); if that fails the interval is skipped with an error line
//!   and nothing is collected, so the next interval's counters cover both;
//! - the snapshot is `GetStats("", "", false)`: every topic and channel, sorted by name, no
//!   clients;
//! - counters (`|c`) are the change since the previous pushed snapshot of the same topic or
//!   channel (the whole count the first time it is seen), as Go's `uint64` subtraction cast
//!   to `int64`, so a topic deleted and re-created with a lower count gives a negative
//!   counter; gauges (`|g`) are the current value;
//! - per topic, in this order: `topic.T.message_count` (c), `.message_bytes` (c), `.depth`
//!   (g), `.backend_depth` (g), `.e2e_processing_latency_P` (g, one per percentile, `P` the
//!   quantile × 100 printed with no decimals, the value in ns truncated); then per channel
//!   `topic.T.channel.C.message_count` (c), `.depth`, `.backend_depth`, `.in_flight_count`,
//!   `.deferred_count` (g), `.requeue_count`, `.timeout_count` (c), `.clients` (g), and its
//!   e2e percentiles; then `mem.*`;
//! - `--statsd-exclude-ephemeral` skips topics and channels whose name ends in `#ephemeral`;
//! - `--statsd-prefix`: every `%s` becomes the host key of `--broadcast-address` joined with
//!   the HTTP port announced to lookupd (`--broadcast-http-port`, else the bound one), with
//!   `.` and `:` replaced by `_` (`nsq.%s` → `nsq.myhost_example_com_4151.`); a `.` is
//!   appended unless it ends with one; an empty prefix stays empty. Computed once at start;
//! - a line is `<prefix><name>:<value>|<c or g>\n`; lines are packed into payloads of at
//!   most `--statsd-udp-packet-size` bytes (Go's `BoundaryBufferedWriter` over a `bufio`
//!   buffer of that size, 4096 when the size is ≤ 0): a line that does not fit in what is
//!   left sends the payload first, and a line longer than the size goes alone in its own
//!   (oversized) datagram;
//! - the payloads are spread evenly over `interval - 1s` (Go's `SpreadWriter`): one is sent,
//!   then the loop waits `(interval - 1s) / n`, and so on, waiting after the last one too; with
//!   nothing to send it waits the whole `interval - 1s`. At shutdown the waits are skipped and
//!   the remaining payloads sent at once.
//!
//! Differences:
//! - Memory: Go sends nine `mem.*` figures from its runtime (heap objects, idle/in-use/
//!   released heap bytes, GC pause percentiles, next GC, `mem.gc_runs`). A Rust process has
//!   no GC, and [`MemStats`](crate::stats::MemStats) fills only `heap_in_use_bytes` (the
//!   resident set size), so with `--statsd-mem-stats` (the default) only
//!   `mem.heap_in_use_bytes` (g) is sent; the other eight would be zeros that look like
//!   measurements, and are not sent.
//! - With `--statsd-interval` ≤ 1s Go panics on its first non-empty push (a ticker of a
//!   non-positive period in `SpreadWriter`); we send the payloads back to back. A zero
//!   interval is refused by [`Options::validate`](crate::config::Options::validate) when
//!   `--statsd-address` is set (Go panics at start).
//! - A failed send is logged (one warning per interval, with the count); Go ignores write
//!   errors. (A connected UDP socket reports the ICMP "port unreachable" of an earlier
//!   datagram on a later send, so a stopped statsd daemon shows up in the log.)
//! - Go builds each line with `Sprintf` twice, so a `%` in the prefix (other than the `%s`
//!   already replaced) is read as a verb; we send the prefix as given.
//! - e2e percentiles are sent when the `/stats` snapshot has them ([`e2e_quantiles`]), i.e.
//!   with `--e2e-processing-latency-percentile`; values come from our sketch (see
//!   [`crate::state::e2e`]), within its 1 % error of Go's.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::stats::{self, E2eLatency, Stats, StatsFilter};
use crate::Nsqd;

/// The buffer size Go's `bufio.NewWriterSize` uses for a size ≤ 0.
const GO_DEFAULT_BUF_SIZE: usize = 4096;

/// How long resolving the address may take (Go's `net.DialTimeout(.., time.Second)`).
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);

/// One e2e processing latency percentile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quantile {
    /// In (0, 1].
    pub quantile: f64,
    /// Nanoseconds.
    pub value: f64,
}

/// What statsd needs of one channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelSnap {
    /// Channel name.
    pub name: String,
    /// Messages received from the topic (counter).
    pub message_count: u64,
    /// REQs (counter).
    pub requeue_count: u64,
    /// In-flight timeouts (counter).
    pub timeout_count: u64,
    /// Ready messages, memory + disk.
    pub depth: u64,
    /// The disk part of `depth`.
    pub backend_depth: u64,
    /// Messages in flight.
    pub in_flight_count: u64,
    /// Messages deferred.
    pub deferred_count: u64,
    /// Consumers.
    pub clients: u64,
    /// e2e percentiles (empty when not computed).
    pub e2e: Vec<Quantile>,
}

/// What statsd needs of one topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicSnap {
    /// Topic name.
    pub name: String,
    /// Messages published (counter).
    pub message_count: u64,
    /// Body bytes published (counter).
    pub message_bytes: u64,
    /// Messages held by the topic, memory + disk.
    pub depth: u64,
    /// The disk part of `depth`.
    pub backend_depth: u64,
    /// e2e percentiles (empty when not computed).
    pub e2e: Vec<Quantile>,
    /// Its channels, in `/stats` order (by name).
    pub channels: Vec<ChannelSnap>,
}

/// One interval's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Topics, in `/stats` order (by name).
    pub topics: Vec<TopicSnap>,
    /// `heap_in_use_bytes` (the RSS) when memory stats are pushed.
    pub mem_in_use_bytes: Option<u64>,
}

/// The e2e percentiles of a `/stats` latency block, as (quantile, ns) pairs; empty without
/// `--e2e-processing-latency-percentile` (and for a topic without channels), as in Go.
pub fn e2e_quantiles(e: &E2eLatency) -> Vec<Quantile> {
    e.percentiles
        .iter()
        .flatten()
        .map(|p| Quantile {
            quantile: p.quantile,
            value: p.value,
        })
        .collect()
}

impl Snapshot {
    /// Keeps what [`lines`] needs from a `/stats` snapshot.
    pub fn from_stats(s: &Stats) -> Snapshot {
        let topics = s
            .doc
            .topics
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|t| TopicSnap {
                name: t.topic_name.name.to_string(),
                message_count: t.message_count,
                message_bytes: t.message_bytes,
                depth: t.depth,
                backend_depth: t.backend_depth,
                e2e: e2e_quantiles(&t.e2e_processing_latency),
                channels: t
                    .channels
                    .iter()
                    .map(|c| ChannelSnap {
                        name: c.channel_name.name.to_string(),
                        message_count: c.message_count,
                        requeue_count: c.requeue_count,
                        timeout_count: c.timeout_count,
                        depth: c.depth,
                        backend_depth: c.backend_depth,
                        in_flight_count: c.in_flight_count,
                        deferred_count: c.deferred_count,
                        clients: c.client_count,
                        e2e: e2e_quantiles(&c.e2e_processing_latency),
                    })
                    .collect(),
            })
            .collect();
        Snapshot {
            topics,
            mem_in_use_bytes: s.doc.memory.map(|m| m.heap_in_use_bytes),
        }
    }
}

/// Go's `statsd.HostKey`: `.` and `:` become `_`.
pub fn host_key(host_port: &str) -> String {
    host_port.replace(['.', ':'], "_")
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The prefix Go's `nsqd.New` derives from `--statsd-prefix`: `%s` replaced by the host key
/// of `broadcast_address:http_port`, and a trailing `.` added; empty stays empty.
pub fn prefix_with_host(prefix: &str, broadcast_address: &str, http_port: i64) -> String {
    if prefix.is_empty() {
        return String::new();
    }
    let key = host_key(&join_host_port(broadcast_address, http_port));
    let mut p = prefix.replace("%s", &key);
    if !p.ends_with('.') {
        p.push('.');
    }
    p
}

fn is_ephemeral(name: &str) -> bool {
    name.ends_with("#ephemeral")
}

/// Go's counter delta: `uint64` subtraction, then `int64(...)`.
fn delta(cur: u64, prev: u64) -> i64 {
    cur.wrapping_sub(prev) as i64
}

/// Go's `fmt.Sprintf("%.0f", q*100.0)` (both round half to even on the exact value).
fn quantile_suffix(q: f64) -> String {
    format!("{:.0}", q * 100.0)
}

struct Out<'a> {
    prefix: &'a str,
    lines: Vec<String>,
}

impl Out<'_> {
    fn counter(&mut self, name: std::fmt::Arguments<'_>, v: i64) {
        self.lines.push(format!("{}{}:{}|c", self.prefix, name, v));
    }
    fn gauge(&mut self, name: std::fmt::Arguments<'_>, v: i64) {
        self.lines.push(format!("{}{}:{}|g", self.prefix, name, v));
    }
}

/// The lines of one interval (without their `\n`), in Go's order. `prefix` is the final one
/// ([`prefix_with_host`]).
pub fn lines(
    prev: &Snapshot,
    cur: &Snapshot,
    prefix: &str,
    exclude_ephemeral: bool,
) -> Vec<String> {
    let mut out = Out {
        prefix,
        lines: Vec::new(),
    };
    let prev_topics: HashMap<&str, &TopicSnap> =
        prev.topics.iter().map(|t| (t.name.as_str(), t)).collect();
    let none_t = TopicSnap::default();
    let none_c = ChannelSnap::default();
    for t in &cur.topics {
        if exclude_ephemeral && is_ephemeral(&t.name) {
            continue;
        }
        let n = &t.name;
        let last = prev_topics.get(n.as_str()).copied().unwrap_or(&none_t);
        out.counter(
            format_args!("topic.{n}.message_count"),
            delta(t.message_count, last.message_count),
        );
        out.counter(
            format_args!("topic.{n}.message_bytes"),
            delta(t.message_bytes, last.message_bytes),
        );
        out.gauge(format_args!("topic.{n}.depth"), t.depth as i64);
        out.gauge(
            format_args!("topic.{n}.backend_depth"),
            t.backend_depth as i64,
        );
        for q in &t.e2e {
            out.gauge(
                format_args!(
                    "topic.{n}.e2e_processing_latency_{}",
                    quantile_suffix(q.quantile)
                ),
                q.value as i64,
            );
        }
        let prev_channels: HashMap<&str, &ChannelSnap> =
            last.channels.iter().map(|c| (c.name.as_str(), c)).collect();
        for c in &t.channels {
            if exclude_ephemeral && is_ephemeral(&c.name) {
                continue;
            }
            let cn = &c.name;
            let lc = prev_channels.get(cn.as_str()).copied().unwrap_or(&none_c);
            out.counter(
                format_args!("topic.{n}.channel.{cn}.message_count"),
                delta(c.message_count, lc.message_count),
            );
            out.gauge(format_args!("topic.{n}.channel.{cn}.depth"), c.depth as i64);
            out.gauge(
                format_args!("topic.{n}.channel.{cn}.backend_depth"),
                c.backend_depth as i64,
            );
            out.gauge(
                format_args!("topic.{n}.channel.{cn}.in_flight_count"),
                c.in_flight_count as i64,
            );
            out.gauge(
                format_args!("topic.{n}.channel.{cn}.deferred_count"),
                c.deferred_count as i64,
            );
            out.counter(
                format_args!("topic.{n}.channel.{cn}.requeue_count"),
                delta(c.requeue_count, lc.requeue_count),
            );
            out.counter(
                format_args!("topic.{n}.channel.{cn}.timeout_count"),
                delta(c.timeout_count, lc.timeout_count),
            );
            out.gauge(
                format_args!("topic.{n}.channel.{cn}.clients"),
                c.clients as i64,
            );
            for q in &c.e2e {
                out.gauge(
                    format_args!(
                        "topic.{n}.channel.{cn}.e2e_processing_latency_{}",
                        quantile_suffix(q.quantile)
                    ),
                    q.value as i64,
                );
            }
        }
    }
    if let Some(rss) = cur.mem_in_use_bytes {
        out.gauge(format_args!("mem.heap_in_use_bytes"), rss as i64);
    }
    out.lines
}

/// The payload size limit for `--statsd-udp-packet-size` (Go's `bufio` uses 4096 for ≤ 0).
pub fn packet_limit(flag: i64) -> usize {
    if flag <= 0 {
        GO_DEFAULT_BUF_SIZE
    } else {
        usize::try_from(flag).unwrap_or(usize::MAX)
    }
}

/// Packs `lines` (each sent with a trailing `\n`) into UDP payloads as Go's
/// `BoundaryBufferedWriter` over a `bufio.Writer` of `limit` bytes does: a line that does not
/// fit in what is left of the payload sends the payload first; a line longer than `limit`
/// is sent alone.
pub fn pack(lines: &[String], limit: usize) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(limit.min(65_536));
    for l in lines {
        let len = l.len() + 1;
        if len > limit - buf.len() && !buf.is_empty() {
            packets.push(std::mem::take(&mut buf));
        }
        if len > limit {
            // bufio writes a too-large write straight through when its buffer is empty.
            let mut big = Vec::with_capacity(len);
            big.extend_from_slice(l.as_bytes());
            big.push(b'\n');
            packets.push(big);
            continue;
        }
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    if !buf.is_empty() {
        packets.push(buf);
    }
    packets
}

/// The wait after each of `packets` payloads (Go's `SpreadWriter`: `(interval - 1s) / n`),
/// or `None` for none at all (an interval of 1s or less, where Go panics).
pub fn spread_delay(interval: Duration, packets: usize) -> Option<Duration> {
    let window = interval.checked_sub(Duration::from_secs(1))?;
    let d = if packets == 0 {
        window
    } else {
        Duration::from_nanos((window.as_nanos() / packets as u128) as u64)
    };
    (!d.is_zero()).then_some(d)
}

/// Resolves `addr` (one second at most) and connects a fresh UDP socket to its first
/// address (Go's `net.DialTimeout("udp", addr, time.Second)`).
async fn dial(addr: &str) -> io::Result<UdpSocket> {
    let mut found = tokio::time::timeout(DIAL_TIMEOUT, tokio::net::lookup_host(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "resolving timed out"))??;
    let target = found
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address found"))?;
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(target).await?;
    Ok(sock)
}

/// Sends `packets` spread over the interval; the waits end early at shutdown, the sends do
/// not. Send errors are logged once.
async fn send_spread(
    sock: &UdpSocket,
    addr: &str,
    packets: &[Vec<u8>],
    interval: Duration,
    shutdown: &CancellationToken,
) {
    let delay = spread_delay(interval, packets.len());
    let mut ticker = delay.map(|d| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        t
    });
    if packets.is_empty() {
        wait(ticker.as_mut(), shutdown).await;
        return;
    }
    let mut failed = 0usize;
    let mut first_err = None;
    for p in packets {
        if let Err(e) = sock.send(p).await {
            failed += 1;
            first_err.get_or_insert(e);
        }
        wait(ticker.as_mut(), shutdown).await;
    }
    if let Some(e) = first_err {
        tracing::warn!(
            "STATSD: failed to send {failed} of {} packets to {addr}: {e}",
            packets.len()
        );
    }
}

/// One spread wait (none without a ticker); ends early at shutdown.
async fn wait(ticker: Option<&mut tokio::time::Interval>, shutdown: &CancellationToken) {
    if let Some(t) = ticker {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {}
            _ = t.tick() => {}
        }
    }
}

/// The push loop; spawned by [`crate::start`] when `--statsd-address` is set, returns at
/// shutdown.
pub async fn run(nsqd: Arc<Nsqd>) {
    let o = &nsqd.opts;
    let interval = o.statsd_interval;
    if interval.is_zero() {
        // `Options::validate` refuses this; never spin.
        tracing::error!("STATSD: --statsd-interval is 0, not pushing");
        return;
    }
    let id = crate::lookup::identity(&nsqd);
    let prefix = prefix_with_host(&o.statsd_prefix, &id.broadcast_address, id.http_port);
    let limit = packet_limit(o.statsd_udp_packet_size);
    let addr = o.statsd_address.clone();
    let filter = StatsFilter {
        topic: "",
        channel: "",
        include_clients: false,
        include_mem: o.statsd_mem_stats,
    };
    let mut last = Snapshot::default();
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            _ = nsqd.shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let sock = match dial(&addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("failed to create UDP socket to statsd({addr}): {e}");
                continue;
            }
        };
        tracing::info!("STATSD: pushing stats to {addr}");
        let cur = Snapshot::from_stats(&stats::collect(&nsqd, &filter));
        let packets = pack(
            &lines(&last, &cur, &prefix, o.statsd_exclude_ephemeral),
            limit,
        );
        last = cur;
        send_spread(&sock, &addr, &packets, interval, &nsqd.shutdown).await;
    }
    tracing::info!("STATSD: closing");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan(name: &str, mc: u64, rq: u64, to: u64) -> ChannelSnap {
        ChannelSnap {
            name: name.into(),
            message_count: mc,
            requeue_count: rq,
            timeout_count: to,
            depth: 5,
            backend_depth: 1,
            in_flight_count: 2,
            deferred_count: 3,
            clients: 4,
            e2e: Vec::new(),
        }
    }

    fn topic(name: &str, mc: u64, mb: u64, channels: Vec<ChannelSnap>) -> TopicSnap {
        TopicSnap {
            name: name.into(),
            message_count: mc,
            message_bytes: mb,
            depth: 7,
            backend_depth: 6,
            e2e: Vec::new(),
            channels,
        }
    }

    #[test]
    fn first_interval_sends_whole_counts_in_go_order() {
        let cur = Snapshot {
            topics: vec![topic("t", 10, 100, vec![chan("c", 10, 2, 1)])],
            mem_in_use_bytes: Some(4096),
        };
        let got = lines(&Snapshot::default(), &cur, "p.", false);
        assert_eq!(
            got,
            [
                "p.topic.t.message_count:10|c",
                "p.topic.t.message_bytes:100|c",
                "p.topic.t.depth:7|g",
                "p.topic.t.backend_depth:6|g",
                "p.topic.t.channel.c.message_count:10|c",
                "p.topic.t.channel.c.depth:5|g",
                "p.topic.t.channel.c.backend_depth:1|g",
                "p.topic.t.channel.c.in_flight_count:2|g",
                "p.topic.t.channel.c.deferred_count:3|g",
                "p.topic.t.channel.c.requeue_count:2|c",
                "p.topic.t.channel.c.timeout_count:1|c",
                "p.topic.t.channel.c.clients:4|g",
                "p.mem.heap_in_use_bytes:4096|g",
            ]
        );
    }

    #[test]
    fn counters_are_deltas_against_the_previous_snapshot_by_name() {
        let prev = Snapshot {
            topics: vec![
                topic("a", 3, 30, vec![chan("x", 3, 1, 0)]),
                topic("b", 50, 500, vec![]),
            ],
            mem_in_use_bytes: None,
        };
        // "a" grew, "b" was deleted and re-created with a lower count, "a" has a new
        // channel "w" (sorted first), "new" is new.
        let cur = Snapshot {
            topics: vec![
                topic("a", 8, 80, vec![chan("w", 2, 0, 0), chan("x", 8, 4, 2)]),
                topic("b", 5, 50, vec![]),
                topic("new", 1, 9, vec![]),
            ],
            mem_in_use_bytes: None,
        };
        let got = lines(&prev, &cur, "", false);
        let counters: Vec<&str> = got
            .iter()
            .filter(|l| l.ends_with("|c"))
            .map(|l| l.as_str())
            .collect();
        assert_eq!(
            counters,
            [
                "topic.a.message_count:5|c",
                "topic.a.message_bytes:50|c",
                "topic.a.channel.w.message_count:2|c",
                "topic.a.channel.w.requeue_count:0|c",
                "topic.a.channel.w.timeout_count:0|c",
                "topic.a.channel.x.message_count:5|c",
                "topic.a.channel.x.requeue_count:3|c",
                "topic.a.channel.x.timeout_count:2|c",
                // Go: int64(uint64(5) - uint64(50)).
                "topic.b.message_count:-45|c",
                "topic.b.message_bytes:-450|c",
                "topic.new.message_count:1|c",
                "topic.new.message_bytes:9|c",
            ]
        );
        assert!(!got.iter().any(|l| l.starts_with("mem.")));
    }

    #[test]
    fn exclude_ephemeral_skips_topics_and_channels() {
        let cur = Snapshot {
            topics: vec![
                topic("e#ephemeral", 1, 1, vec![chan("c", 1, 0, 0)]),
                topic(
                    "t",
                    1,
                    1,
                    vec![chan("c#ephemeral", 1, 0, 0), chan("d", 1, 0, 0)],
                ),
            ],
            mem_in_use_bytes: None,
        };
        let excluded = lines(&Snapshot::default(), &cur, "", true);
        assert!(
            excluded.iter().all(|l| !l.contains("#ephemeral")),
            "{excluded:?}"
        );
        assert!(excluded.contains(&"topic.t.channel.d.clients:4|g".to_string()));
        assert_eq!(excluded.len(), 4 + 8);
        let all = lines(&Snapshot::default(), &cur, "", false);
        assert!(all.contains(&"topic.e#ephemeral.channel.c.message_count:1|c".to_string()));
        assert!(all.contains(&"topic.t.channel.c#ephemeral.depth:5|g".to_string()));
        assert_eq!(all.len(), 2 * 4 + 3 * 8);
    }

    #[test]
    fn e2e_percentile_names() {
        let q = |quantile, value| Quantile { quantile, value };
        let mut t = topic("t", 0, 0, vec![chan("c", 0, 0, 0)]);
        t.e2e = vec![q(1.0, 1234.9), q(0.99, 1000.0), q(0.95, 7.0), q(0.5, 3.0)];
        t.channels[0].e2e = vec![q(0.999, 42.0), q(0.125, 1.0)];
        let cur = Snapshot {
            topics: vec![t],
            mem_in_use_bytes: None,
        };
        let got = lines(&Snapshot::default(), &cur, "", false);
        let e2e: Vec<&str> = got
            .iter()
            .filter(|l| l.contains("e2e"))
            .map(|l| l.as_str())
            .collect();
        assert_eq!(
            e2e,
            [
                "topic.t.e2e_processing_latency_100:1234|g",
                "topic.t.e2e_processing_latency_99:1000|g",
                "topic.t.e2e_processing_latency_95:7|g",
                "topic.t.e2e_processing_latency_50:3|g",
                // %.0f of 99.9, and of 12.5 (half to even, as Go's strconv).
                "topic.t.channel.c.e2e_processing_latency_100:42|g",
                "topic.t.channel.c.e2e_processing_latency_12:1|g",
            ]
        );
        // The topic's come right after its gauges, the channel's after `clients`.
        let pos = |s: &str| got.iter().position(|l| l.starts_with(s)).unwrap();
        assert_eq!(
            pos("topic.t.e2e_processing_latency_100"),
            pos("topic.t.backend_depth") + 1
        );
        assert_eq!(
            pos("topic.t.channel.c.e2e_processing_latency_100"),
            pos("topic.t.channel.c.clients") + 1
        );
        // Today's `/stats` blocks carry no percentiles.
        assert!(e2e_quantiles(&E2eLatency::default()).is_empty());
    }

    #[test]
    fn prefix_like_go_new() {
        assert_eq!(
            prefix_with_host("nsq.%s", "my.host.example", 4151),
            "nsq.my_host_example_4151."
        );
        assert_eq!(prefix_with_host("nsq.%s.", "h", 1), "nsq.h_1.");
        assert_eq!(prefix_with_host("a.%s.b.%s", "h", 2), "a.h_2.b.h_2.");
        assert_eq!(prefix_with_host("plain", "h", 2), "plain.");
        assert_eq!(prefix_with_host("", "h", 2), "");
        assert_eq!(prefix_with_host("nsq.%s", "::1", 4151), "nsq.[__1]_4151.");
        assert_eq!(prefix_with_host("nsq.%s", "h", 0), "nsq.h_0.");
    }

    #[test]
    fn packing_flushes_before_a_line_that_does_not_fit() {
        let l = |s: &str| s.to_string();
        // Limit 10: "aaaa\n" (5) + "bbbb\n" (5) fill it exactly; "cc\n" goes next.
        let got = pack(&[l("aaaa"), l("bbbb"), l("cc"), l("dddddd")], 10);
        assert_eq!(got, [b"aaaa\nbbbb\n".to_vec(), b"cc\ndddddd\n".to_vec()]);
        // A line longer than the limit goes alone, the buffer is sent before it.
        let got = pack(&[l("a"), l("0123456789abc"), l("b")], 10);
        assert_eq!(
            got,
            [
                b"a\n".to_vec(),
                b"0123456789abc\n".to_vec(),
                b"b\n".to_vec()
            ]
        );
        assert!(pack(&[], 10).is_empty());
        assert_eq!(packet_limit(508), 508);
        assert_eq!(packet_limit(0), 4096);
        assert_eq!(packet_limit(-1), 4096);
    }

    #[test]
    fn packing_real_lines_stays_within_the_limit() {
        let cur = Snapshot {
            topics: (0..20)
                .map(|i| topic(&format!("topic{i}"), i, i, vec![chan("c", 1, 0, 0)]))
                .collect(),
            mem_in_use_bytes: Some(1),
        };
        let ls = lines(&Snapshot::default(), &cur, "nsq.h_4151.", false);
        let packets = pack(&ls, 508);
        assert!(packets.len() > 1);
        for (i, p) in packets.iter().enumerate() {
            assert!(p.len() <= 508);
            assert_eq!(p.last(), Some(&b'\n'));
            // Greedy: the next packet's first line would not have fitted.
            if let Some(next) = packets.get(i + 1) {
                let first = next.iter().position(|&b| b == b'\n').unwrap() + 1;
                assert!(p.len() + first > 508);
            }
        }
        let rejoined: Vec<u8> = packets.concat();
        let expected: String = ls.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(rejoined, expected.as_bytes());
    }

    #[test]
    fn spread_like_go() {
        let s = Duration::from_secs;
        assert_eq!(spread_delay(s(60), 59), Some(s(1)));
        assert_eq!(spread_delay(s(60), 0), Some(s(59)));
        assert_eq!(spread_delay(s(3), 4), Some(Duration::from_millis(500)));
        assert_eq!(spread_delay(s(1), 3), None);
        assert_eq!(spread_delay(Duration::from_millis(500), 3), None);
        assert_eq!(spread_delay(s(1), 0), None);
    }
}
