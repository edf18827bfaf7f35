//! `/stats`: a snapshot of every topic, channel and client, rendered as Go nsqd 1.3 renders
//! it, in JSON (`format=json`) or text (the default).
//!
//! The JSON document's types are the shared ones in [`nsq_http::api::nsqd`] (nsqadmin,
//! `nsq_stat` and scripts read the same types); this module collects a snapshot into them
//! and writes the text format. What Go does and we follow:
//! - topics and channels are sorted by name;
//! - a `topic` filter naming no topic gives `"topics": null` *and* `"producers": null`
//!   (Go's `GetStats` returns early); a `channel` filter skips topics without that channel,
//!   and applies to every topic when no `topic` is given;
//! - `include_clients=false` gives `"clients": null` and `"producers": null`; with clients
//!   but no producers, `"producers"` is `null` too (a nil Go slice), while `"clients"` is `[]`;
//! - `depth` is memory + disk (`backend_depth`, 0 until the disk queue exists); a channel's
//!   depth does not count in-flight or deferred messages;
//! - `e2e_processing_latency` is `{"count":0,"percentiles":null}` when
//!   `--e2e-processing-latency-percentile` is unset, and for a topic without channels;
//!   otherwise `{"count":N,"percentiles":[{"quantile":0.99,"value":NS},...]}` (see
//!   [`crate::state::e2e`]); a topic's merges all its channels', whatever the filter;
//! - `memory` (Go runtime stats) is omitted when `include_mem=false`; see [`read_mem_stats`]
//!   for what we put in its Go-named fields.
//! - nsq-rs policies add fields only where they are in use, so a node without policies
//!   answers NSQ 1.3's shape: a channel's `expired_count` (ttl) when non-zero, a topic's
//!   `deduplicated_count` when non-zero and its `dedup` block ([`DedupStats`]) while it has
//!   a dedup window. The text format shows none of them.
//!
//! Collecting takes each topic's and channel's lock briefly, one at a time, and never two
//! at once, so `/stats` never stalls publishing for long; 10,000 topics take a few
//! milliseconds. The snapshot holds `Arc`s of the topics and channels rather than copies of
//! their names ([`TopicRef`], [`ChannelRef`] are the shared types' name parameters).

use std::fmt::Write as _;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nsq_http::api::nsqd as api;
use serde::{Serialize, Serializer};
use sketches_ddsketch::DDSketch;

pub use nsq_http::api::nsqd::{
    ClientStats, DedupStats, E2eLatency, MemStats, Percentile, PubCount,
};

use crate::channel::Channel;
use crate::client::ClientInfo;
use crate::state::e2e::{self, E2eConfig};
use crate::topic::Topic;
use crate::Nsqd;

/// What `/stats` was asked for.
#[derive(Debug, Clone, Copy)]
pub struct StatsFilter<'a> {
    /// Only this topic (empty: all).
    pub topic: &'a str,
    /// Only this channel, in every selected topic (empty: all).
    pub channel: &'a str,
    /// List consumers per channel, and producers.
    pub include_clients: bool,
    /// Include the `memory` block.
    pub include_mem: bool,
}

impl Default for StatsFilter<'_> {
    fn default() -> Self {
        StatsFilter {
            topic: "",
            channel: "",
            include_clients: true,
            include_mem: true,
        }
    }
}

/// A topic in a snapshot: serialized as its name; the `Arc` lets readers of the snapshot
/// (`/metrics`' per-topic opt-out) ask the topic itself.
#[derive(Clone)]
pub struct TopicRef(pub Arc<Topic>);

impl Deref for TopicRef {
    type Target = Topic;
    fn deref(&self) -> &Topic {
        &self.0
    }
}

impl Serialize for TopicRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.name)
    }
}

/// A channel in a snapshot: serialized as its name.
#[derive(Clone)]
pub struct ChannelRef(pub Arc<Channel>);

impl Deref for ChannelRef {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.0
    }
}

impl Serialize for ChannelRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.name)
    }
}

/// One topic of a snapshot.
pub type TopicStats = api::TopicStats<TopicRef, ChannelRef>;
/// One channel of a snapshot.
pub type ChannelStats = api::ChannelStats<ChannelRef>;

/// A snapshot: the `/stats` document, and what only the text format shows.
pub struct Stats {
    /// The JSON document.
    pub doc: api::Stats<TopicRef, ChannelRef>,
    /// Nanoseconds since start (text format only).
    pub uptime_ns: u64,
}

/// A latency block from a merged sketch (`None`: no samples, or not tracked).
fn e2e_latency(cfg: Option<&E2eConfig>, sketch: Option<&DDSketch>) -> E2eLatency {
    match cfg {
        None => E2eLatency::default(),
        Some(cfg) => E2eLatency {
            count: e2e::count(sketch),
            percentiles: Some(
                e2e::percentiles(sketch, cfg)
                    .into_iter()
                    .map(|(quantile, value)| Percentile { quantile, value })
                    .collect(),
            ),
        },
    }
}

/// Go's `Result.String`: each value as `stringy.NanoSecondToHuman`, comma-separated.
fn write_e2e_text(e: &E2eLatency, w: &mut String) {
    for (i, p) in e.percentiles.iter().flatten().enumerate() {
        if i > 0 {
            w.push_str(", ");
        }
        let v = p.value;
        let (v, unit) = if v > 1e9 {
            (v / 1e9, "s")
        } else if v > 1e6 {
            (v / 1e6, "ms")
        } else if v > 1e3 {
            (v / 1e3, "us")
        } else {
            (v, "ns")
        };
        let _ = write!(w, "{v:.1}{unit}");
    }
}

/// This process's figures for the `memory` block. Go fills it from `runtime.ReadMemStats`;
/// a Rust process has no garbage collector and its allocator's internals are not exposed
/// here, so we report the one figure we can measure honestly and zeros for the rest:
/// - `heap_in_use_bytes`: the resident set size (`VmRSS` in `/proc/self/status`), the
///   closest equivalent of Go's "heap in use" for watching a daemon's memory;
/// - every other field (`heap_objects`, `heap_idle_bytes`, `heap_released_bytes`,
///   `next_gc_bytes`, the GC pause percentiles, `gc_total_runs`): 0. Mapped-but-not-resident
///   memory is not "idle heap" (thread stack reservations dominate it), so it is not
///   reported as such.
///
/// On systems without `/proc` every field is 0.
pub fn read_mem_stats() -> MemStats {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| mem_stats_from_proc_status(&s))
        .unwrap_or_default()
}

fn mem_stats_from_proc_status(status: &str) -> MemStats {
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map_or(0, |v| v * 1024)
    };
    MemStats {
        heap_in_use_bytes: kb("VmRSS:"),
        ..MemStats::default()
    }
}

/// Stats of `c`; `in_flight` comes from the channel it consumes from; `topic_filter` (when
/// not empty) restricts `pub_counts` to that topic.
///
/// Go 1.3 lists only the first topic of a producer's map because of a stray `break` in
/// `clientV2.Stats` (nsqio/nsq PR #1497); we list every topic, sorted by first publish.
/// With a `topic` filter, only that topic's count is listed, as in Go.
pub fn client_stats(c: &ClientInfo, in_flight: u64, topic_filter: &str) -> ClientStats {
    let pub_counts = c
        .pub_counts
        .lock()
        .iter()
        .filter(|(t, _)| topic_filter.is_empty() || t == topic_filter)
        .map(|(t, n)| PubCount {
            topic: t.clone(),
            count: n.load(Ordering::Relaxed),
        })
        .collect();
    let id = c.identity.lock().clone();
    let auth = c.auth.lock().clone();
    let tls = c.tls.get().cloned();
    ClientStats {
        client_id: id.client_id,
        hostname: id.hostname,
        version: "V2".into(),
        remote_address: c.remote_addr.to_string(),
        state: i32::from(c.state()),
        ready_count: c.ready_count.load(Ordering::Relaxed),
        in_flight_count: in_flight,
        message_count: c.message_count.load(Ordering::Relaxed),
        finish_count: c.finish_count.load(Ordering::Relaxed),
        requeue_count: c.requeue_count.load(Ordering::Relaxed),
        connect_ts: c.connect_ts,
        sample_rate: id.sample_rate,
        deflate: c.deflate.load(Ordering::Relaxed),
        snappy: c.snappy.load(Ordering::Relaxed),
        user_agent: id.user_agent,
        authed: auth.authed,
        auth_identity: auth.identity,
        auth_identity_url: auth.identity_url,
        topology_zone: id.topology_zone,
        topology_region: id.topology_region,
        pub_counts,
        tls: tls.is_some(),
        tls_cipher_suite: tls.as_ref().map_or("", |t| t.cipher_suite).into(),
        tls_version: tls.as_ref().map_or("", |t| t.version).into(),
        tls_negotiated_protocol_is_mutual: tls
            .as_ref()
            .is_some_and(|t| t.negotiated_protocol_is_mutual),
        tls_negotiated_protocol: tls.map(|t| t.negotiated_protocol).unwrap_or_default(),
    }
}

/// Go's `ClientV2Stats.String()`: the producer form when the client has published.
fn write_client_text(c: &ClientStats, out: &mut String, now_secs: i64) {
    let connected = go_duration((now_secs - c.connect_ts).max(0) as u64 * 1_000_000_000);
    // Go prints the peer's port (`RemoteAddress` split at its last colon).
    let port = c.remote_address.rsplit_once(':').map_or("", |(_, p)| p);
    let id = format!("{}:{} {}", c.hostname, port, c.user_agent);
    if !c.pub_counts.is_empty() {
        let total: u64 = c.pub_counts.iter().map(|p| p.count).sum();
        let topics: Vec<String> = c
            .pub_counts
            .iter()
            .map(|p| format!("{}={}", p.topic, p.count))
            .collect();
        let _ = write!(
            out,
            "[{} {:<21}] msgs: {:<8} topics: {} connected: {}",
            c.version,
            id,
            total,
            topics.join(","),
            connected
        );
    } else {
        let _ = write!(
            out,
            "[{} {:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {}",
            c.version,
            id,
            c.state,
            c.in_flight_count,
            c.ready_count,
            c.finish_count,
            c.requeue_count,
            c.message_count,
            connected
        );
    }
}

/// One channel's figures, and its merged latency sketch for the topic's aggregate.
fn channel_stats(
    ch: Arc<Channel>,
    f: &StatsFilter<'_>,
    e2e_cfg: Option<&E2eConfig>,
    now: i64,
) -> (ChannelStats, Option<DDSketch>) {
    // Clients first (their own lock), then the queue state: never both locks at once.
    let clients = ch.clients();
    let mut in_flight: Vec<u32> = Vec::new();
    let (depth, backend_depth, in_flight_count, deferred_count, counters, paused, sketch) = {
        let mut st = ch.state.lock();
        if f.include_clients {
            in_flight.extend(clients.iter().map(|c| st.consumer_in_flight(c.id)));
        }
        (
            st.depth(),
            st.backend_depth(),
            st.in_flight_count(),
            st.deferred_count(),
            st.counters(),
            st.paused(),
            st.e2e_sketch(now),
        )
    };
    let client_stats = f.include_clients.then(|| {
        clients
            .iter()
            .zip(&in_flight)
            .map(|(c, &n)| client_stats(c, n as u64, f.topic))
            .collect()
    });
    let config = {
        let p = ch.policy();
        (!p.is_empty()).then(|| p.to_json())
    };
    let stats = ChannelStats {
        channel_name: ChannelRef(ch),
        depth,
        backend_depth,
        in_flight_count,
        deferred_count,
        message_count: counters.message_count,
        zone_local_msg_count: counters.zone_local_msg_count,
        region_local_msg_count: counters.region_local_msg_count,
        global_msg_count: counters.global_msg_count,
        requeue_count: counters.requeue_count,
        timeout_count: counters.timeout_count,
        expired_count: counters.expired_count,
        dead_lettered_count: counters.dead_lettered_count,
        dropped_count: counters.dropped_count,
        client_count: clients.len() as u64,
        clients: client_stats,
        paused,
        e2e_processing_latency: e2e_latency(e2e_cfg, sketch.as_ref()),
        config,
    };
    (stats, sketch)
}

/// A replicated topic's state on this member, in `/stats`'s shape.
fn replication_stats(nsqd: &Nsqd, topic: &str) -> Option<api::ReplicationStats> {
    let s = nsqd.replicas()?.cluster.status(topic)?;
    Some(api::ReplicationStats {
        topic_name: topic.to_string(),
        role: s.role.to_string(),
        leader: s.leader,
        members: s.members,
        term: s.term,
        log_index: s.log_index,
        applied_index: s.applied_index,
        lag: s.lag,
        messages: s.messages as u64,
        owed: s.owed,
        active: s.active,
    })
}

/// Takes a snapshot (Go: `NSQD.GetStats` plus the handler's memory and producer parts).
pub fn collect(nsqd: &Nsqd, f: &StatsFilter<'_>) -> Stats {
    let mut stats = Stats {
        doc: api::Stats {
            version: nsq_protocol::NSQ_VERSION.into(),
            health: "OK".to_string(),
            start_time: nsqd.start_time,
            topics: None,
            memory: f.include_mem.then(read_mem_stats),
            producers: None,
            replicated_topics: Vec::new(),
        },
        uptime_ns: nsqd.clock.now(),
    };
    let topics = if f.topic.is_empty() {
        nsqd.topics()
    } else {
        match nsqd.topic(f.topic) {
            Some(t) => vec![t],
            // Go returns here: no topics and no producers.
            None => return stats,
        }
    };
    let e2e_cfg = nsqd.e2e.as_deref();
    let now = crate::clock::unix_nanos();
    let mut out = Vec::with_capacity(topics.len());
    for t in topics {
        let channels = if f.channel.is_empty() {
            t.channels()
        } else {
            match t.channel(f.channel) {
                Some(c) => vec![c],
                None => continue,
            }
        };
        // Go aggregates over all of a topic's channels, whatever the channel filter.
        let mut agg: Option<DDSketch> = None;
        let channels = channels
            .into_iter()
            .map(|c| {
                let (cs, sketch) = channel_stats(c, f, e2e_cfg, now);
                if let (Some(sk), true) = (&sketch, f.channel.is_empty()) {
                    e2e::merge_into(&mut agg, sk);
                }
                cs
            })
            .collect();
        if e2e_cfg.is_some() && !f.channel.is_empty() {
            for c in t.channels() {
                if let Some(sk) = c.state.lock().e2e_sketch(now) {
                    e2e::merge_into(&mut agg, &sk);
                }
            }
        }
        let config = {
            let p = t.policy();
            (!p.is_empty()).then(|| p.to_json())
        };
        let deduplicated_count = t.deduplicated_count();
        let dedup = t.policy().dedup.and_then(|c| {
            let (bits, hashes, estimated) = t.dedup_figures()?;
            Some(DedupStats {
                window: nsq_cli::format_go_duration(c.window),
                capacity: c.capacity,
                false_positive_rate: c.false_positive_rate,
                estimated_false_positive_rate: estimated,
                bits,
                hashes,
                deduplicated_count,
            })
        });
        out.push(TopicStats {
            config,
            deduplicated_count,
            dedup,
            depth: t.depth(),
            backend_depth: t.backend_depth(),
            message_count: t.message_count(),
            message_bytes: t.message_bytes(),
            paused: t.is_paused(),
            channels,
            replication: if t.replicated {
                replication_stats(nsqd, &t.name)
            } else {
                None
            },
            topic_name: TopicRef(t),
            // A topic without channels has no stream (Go: a nil aggregate, as when off).
            e2e_processing_latency: match agg {
                Some(a) => e2e_latency(e2e_cfg, Some(&a)),
                None => E2eLatency::default(),
            },
        });
    }
    stats.doc.topics = Some(out);
    if let Some(r) = nsqd.replicas() {
        stats.doc.replicated_topics = r
            .cluster
            .topics()
            .iter()
            .filter(|t| f.topic.is_empty() || f.topic == t.as_str())
            .filter_map(|t| replication_stats(nsqd, t))
            .collect();
    }
    if f.include_clients {
        let producers = nsqd.producers();
        if !producers.is_empty() {
            stats.doc.producers = Some(
                producers
                    .iter()
                    .map(|c| client_stats(c, 0, f.topic))
                    .collect(),
            );
        }
    }
    stats
}

impl Stats {
    /// The `format=json` body, with Go's string escaping.
    pub fn to_json(&self) -> Vec<u8> {
        // A topic with one channel and no clients is about 400 bytes of JSON.
        let n = self.doc.topics.as_ref().map_or(0, |t| t.len());
        let mut out = Vec::with_capacity(512 + n * 448);
        crate::http::json::to_writer(&mut out, &self.doc);
        out
    }

    /// The text body (Go's `printStats`). `now_secs` is the current Unix time, for the
    /// clients' "connected" durations.
    ///
    /// Go prints `start_time` in the server's local time zone; we print UTC (`Z`).
    pub fn to_text(&self, now_secs: i64) -> String {
        let doc = &self.doc;
        let mut w = String::with_capacity(1024);
        let _ = writeln!(w, "nsqd v{} (nsq-rs)", doc.version);
        let _ = writeln!(w, "start_time {}", rfc3339_utc(doc.start_time));
        let _ = writeln!(w, "uptime {}", go_duration(self.uptime_ns));
        let _ = writeln!(w, "\nHealth: {}", doc.health);
        if let Some(m) = &doc.memory {
            w.push_str("\nMemory:\n");
            for (k, v) in [
                ("heap_objects", m.heap_objects),
                ("heap_idle_bytes", m.heap_idle_bytes),
                ("heap_in_use_bytes", m.heap_in_use_bytes),
                ("heap_released_bytes", m.heap_released_bytes),
                ("gc_pause_usec_100", m.gc_pause_usec_100),
                ("gc_pause_usec_99", m.gc_pause_usec_99),
                ("gc_pause_usec_95", m.gc_pause_usec_95),
                ("next_gc_bytes", m.next_gc_bytes),
                ("gc_total_runs", m.gc_total_runs as u64),
            ] {
                let _ = writeln!(w, "   {k:<25}\t{v}");
            }
        }
        let topics = doc.topics.as_deref().unwrap_or_default();
        if topics.is_empty() {
            w.push_str("\nTopics: None\n");
        } else {
            w.push_str("\nTopics:");
        }
        for t in topics {
            let _ = write!(
                w,
                "\n{}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: ",
                if t.paused { "*P " } else { "   " },
                t.topic_name.name,
                t.depth,
                t.backend_depth,
                t.message_count
            );
            write_e2e_text(&t.e2e_processing_latency, &mut w);
            w.push('\n');
            for c in &t.channels {
                let _ = write!(
                    w,
                    "{}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: ",
                    if c.paused { "   *P " } else { "      " },
                    c.channel_name.name,
                    c.depth,
                    c.backend_depth,
                    c.in_flight_count,
                    c.deferred_count,
                    c.requeue_count,
                    c.timeout_count,
                    c.message_count
                );
                write_e2e_text(&c.e2e_processing_latency, &mut w);
                // nsq-rs policies: only when they acted, so NSQ's lines stay as they are.
                if c.expired_count > 0 {
                    let _ = write!(w, " expired: {}", c.expired_count);
                }
                if c.dropped_count > 0 {
                    let _ = write!(w, " dropped: {}", c.dropped_count);
                }
                if c.dead_lettered_count > 0 {
                    let _ = write!(w, " dead-lettered: {}", c.dead_lettered_count);
                }
                w.push('\n');
                for client in c.clients.as_deref().unwrap_or_default() {
                    w.push_str("        ");
                    write_client_text(client, &mut w, now_secs);
                    w.push('\n');
                }
            }
        }
        match doc.producers.as_deref() {
            None | Some([]) => w.push_str("\nProducers: None\n"),
            Some(producers) => {
                w.push_str("\nProducers:\n");
                for p in producers {
                    w.push_str("   ");
                    write_client_text(p, &mut w, now_secs);
                    w.push('\n');
                }
            }
        }
        w
    }
}

/// Go's `time.Duration.String()` for a non-negative duration in nanoseconds.
pub fn go_duration(ns: u64) -> String {
    // Fixed-point `v / 10^prec` with trailing zeros (and a bare '.') removed.
    fn frac(v: u64, prec: u32) -> String {
        let p = 10u64.pow(prec);
        let (int, rem) = (v / p, v % p);
        if rem == 0 {
            return int.to_string();
        }
        let digits = format!("{rem:0width$}", width = prec as usize);
        format!("{int}.{}", digits.trim_end_matches('0'))
    }
    const SEC: u64 = 1_000_000_000;
    if ns == 0 {
        return "0s".to_string();
    }
    if ns < SEC {
        return if ns < 1_000 {
            format!("{ns}ns")
        } else if ns < 1_000_000 {
            format!("{}µs", frac(ns, 3))
        } else {
            format!("{}ms", frac(ns, 6))
        };
    }
    let total_secs = ns / SEC;
    let secs = frac((total_secs % 60) * SEC + ns % SEC, 9);
    let (h, m) = (total_secs / 3600, (total_secs / 60) % 60);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `time.Unix(secs, 0).UTC().Format(time.RFC3339)`.
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        for (ns, s) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (1_000_000, "1ms"),
            (1_234_567, "1.234567ms"),
            (1_000_000_000, "1s"),
            (61_000_000_000, "1m1s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_723_450_000_000, "1h2m3.45s"),
            (59_999_999_999, "59.999999999s"),
        ] {
            assert_eq!(go_duration(ns), s, "{ns}");
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_795_627_515), "2026-11-25T17:25:15Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn proc_status() {
        let m = mem_stats_from_proc_status("Name:\tx\nVmSize:\t  1000 kB\nVmRSS:\t   300 kB\n");
        assert_eq!(m.heap_in_use_bytes, 300 * 1024);
        assert_eq!(m.heap_idle_bytes, 0);
        assert_eq!(mem_stats_from_proc_status(""), MemStats::default());
    }

    #[test]
    fn e2e_shape() {
        assert_eq!(
            crate::http::json::to_vec(&E2eLatency::default()),
            br#"{"count":0,"percentiles":null}"#
        );
        let e = E2eLatency {
            count: 3,
            percentiles: Some(vec![
                Percentile {
                    quantile: 1.0,
                    value: 2_500_000_000.0,
                },
                Percentile {
                    quantile: 0.99,
                    value: 1_234_567.0,
                },
                Percentile {
                    quantile: 0.5,
                    value: 999.0,
                },
            ]),
        };
        // Go's float encoding: whole numbers without a fraction.
        assert_eq!(
            crate::http::json::to_vec(&e),
            br#"{"count":3,"percentiles":[{"quantile":1,"value":2500000000},{"quantile":0.99,"value":1234567},{"quantile":0.5,"value":999}]}"#
        );
        let mut text = String::new();
        write_e2e_text(&e, &mut text);
        assert_eq!(text, "2.5s, 1.2ms, 999.0ns");
    }
}
