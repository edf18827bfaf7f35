//! `GET /metrics`: nsqd's state for Prometheus (an nsq-rs extension; Go nsqd has only
//! statsd). The exposition, content negotiation, build info and `process_*` metrics are
//! shared with the other daemons in [`nsq_http::metrics`].
//!
//! Everything here is produced **at scrape time** by [`NsqdCollector`] from one `/stats`
//! snapshot ([`crate::stats::collect`] without clients or memory), so nothing is registered
//! per topic and nothing is added to the publish or consume path: the counters below are the
//! ones `/stats` already reads. A deleted topic simply stops appearing.
//!
//! # Metrics
//! Per topic (label `topic`):
//! - `nsq_topic_depth`, `nsq_topic_backend_depth` (gauges): messages held by the topic
//!   (memory + disk) and the disk part;
//! - `nsq_topic_messages_total`, `nsq_topic_message_bytes_total` (counters): messages and
//!   body bytes published;
//! - `nsq_topic_paused` (0/1), `nsq_topic_channels` (gauges).
//!
//! Per channel (labels `topic`, `channel`):
//! - `nsq_channel_depth`, `nsq_channel_backend_depth`: ready messages (memory + disk; not
//!   in-flight or deferred ones, as in `/stats`) and the disk part;
//! - `nsq_channel_in_flight`, `nsq_channel_deferred`, `nsq_channel_clients`,
//!   `nsq_channel_paused` (gauges);
//! - `nsq_channel_messages_total`, `nsq_channel_requeued_total`,
//!   `nsq_channel_timed_out_total` (counters).
//!
//! Node-wide: `nsq_topics`, `nsq_channels`, `nsq_clients` (consumer connections: the sum of
//! the channels' clients; a connection subscribes to at most one channel),
//! `nsq_producers` (connections that have published, as `/stats` lists them),
//! `nsq_build_info{daemon="nsqd",version,nsq_rs_version}`, `nsq_start_time_seconds` and the
//! `process_*` metrics.
//!
//! Policies and latency (only where they apply, so a plain node adds nothing):
//! `nsq_channel_expired_total`, `nsq_channel_dropped_total`,
//! `nsq_channel_dead_lettered_total` (counters, for channels
//! where they moved); with `--e2e-processing-latency-percentile`,
//! `nsq_topic_e2e_processing_latency_seconds{topic,quantile}` and
//! `nsq_channel_e2e_processing_latency_seconds{topic,channel,quantile}` (gauges: the
//! quantiles `/stats` reports, over its window).
//!
//! A topic whose policy says `"metrics": false` (`POST /topic/config`) is left out of the
//! per-topic and per-channel families — the opt-out for nodes with very many topics (10,000
//! topics with one channel each are 8.2 MiB of text, 419 KiB gzipped; BENCHMARKS.md).
//!
//! `nsq_fsync_duration_seconds` (histogram): every fsync of a topic-log segment or channel
//! journal, timed in `nsq_store::observe` (data path only: durable mode and spilling).
//!
//! # Not there yet
//! The topology experiment's `zone_local`/`region_local`/`global` delivery counts are
//! left out too (zero unless the experiment is on).
//!
//! # Access
//! `/metrics` is behind `--http-api-token` like the rest of the API, unless
//! `--metrics-without-token` exempts it (so Prometheus can scrape without the token, which
//! would otherwise let it publish and delete too). With `--tls-required=true` it is served on
//! the HTTPS port only, like everything else.

use std::fmt;
use std::sync::Arc;

use nsq_http::metrics::{
    counter_family, exponential_buckets, gauge, gauge_family, Collector, DescriptorEncoder,
    Histogram, Registry, Unit,
};

use crate::stats::{ChannelStats, StatsFilter, TopicStats};
use crate::Nsqd;

/// Every fsync of a topic-log segment or channel journal (`nsq_store::observe`), from
/// 100 µs to 3.3 s in powers of two.
static FSYNC: std::sync::LazyLock<Histogram> =
    std::sync::LazyLock::new(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 16)));

fn observe_fsync(d: std::time::Duration) {
    FSYNC.observe(d.as_secs_f64());
}

/// The registry `/metrics` serves for `nsqd`.
pub fn registry(nsqd: &Arc<Nsqd>) -> Registry {
    let mut r =
        nsq_http::metrics::daemon_registry("nsqd", nsq_protocol::NSQ_VERSION, nsqd.start_time);
    r.register_collector(Box::new(NsqdCollector(nsqd.clone())));
    nsq_store::observe::set_fsync_observer(observe_fsync);
    r.register_with_unit(
        "nsq_fsync_duration",
        "Time an fsync of a topic-log segment or channel journal took.",
        Unit::Seconds,
        FSYNC.clone(),
    );
    r
}

/// Topics, channels and connections, from a `/stats` snapshot taken at each scrape.
pub struct NsqdCollector(pub Arc<Nsqd>);

impl fmt::Debug for NsqdCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NsqdCollector")
    }
}

type TopicLabel<'a> = [(&'static str, &'a str); 1];
type ChannelLabels<'a> = [(&'static str, &'a str); 2];

fn topic_label(t: &TopicStats) -> TopicLabel<'_> {
    [("topic", t.topic_name.name.as_str())]
}

fn channel_labels<'a>(t: &'a TopicStats, c: &'a ChannelStats) -> ChannelLabels<'a> {
    [
        ("topic", t.topic_name.name.as_str()),
        ("channel", c.channel_name.name.as_str()),
    ]
}

impl Collector for NsqdCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let filter = StatsFilter {
            include_clients: false,
            include_mem: false,
            ..StatsFilter::default()
        };
        let stats = crate::stats::collect(&self.0, &filter);
        let all = stats.doc.topics.as_deref().unwrap_or_default();
        // Topics whose policy says `"metrics": false` are left out of the per-topic and
        // per-channel families (cardinality), but still counted in the node-wide gauges.
        let shown: Vec<&TopicStats> = all
            .iter()
            .filter(|t| t.topic_name.metrics_enabled())
            .collect();
        let topics = all;
        encode_topics(&mut enc, &shown)?;
        let channels = topics.iter().map(|t| t.channels.len()).sum::<usize>();
        let clients = topics
            .iter()
            .flat_map(|t| &t.channels)
            .map(|c| c.client_count as usize)
            .sum::<usize>();
        let e = &mut enc;
        gauge(e, "nsq_topics", "Topics.", None, topics.len())?;
        gauge(
            e,
            "nsq_channels",
            "Channels, over all topics.",
            None,
            channels,
        )?;
        gauge(
            e,
            "nsq_clients",
            "Consumer connections (subscribed to a channel).",
            None,
            clients,
        )?;
        gauge(
            e,
            "nsq_producers",
            "Connections that have published.",
            None,
            self.0.producers().len(),
        )
    }
}

/// The per-topic and per-channel families (sorted by topic, then channel, as `/stats`).
fn encode_topics(enc: &mut DescriptorEncoder, topics: &[&TopicStats]) -> Result<(), fmt::Error> {
    let per_topic = |f: fn(&TopicStats) -> u64| topics.iter().map(move |t| (topic_label(t), f(t)));
    gauge_family(
        enc,
        "nsq_topic_depth",
        "Messages held by the topic (memory + disk), not yet copied to its channels.",
        None,
        per_topic(|t| t.depth),
    )?;
    gauge_family(
        enc,
        "nsq_topic_backend_depth",
        "The disk part of nsq_topic_depth.",
        None,
        per_topic(|t| t.backend_depth),
    )?;
    counter_family(
        enc,
        "nsq_topic_messages",
        "Messages published to the topic.",
        None,
        per_topic(|t| t.message_count),
    )?;
    counter_family(
        enc,
        "nsq_topic_message",
        "Message body bytes published to the topic.",
        Some(&Unit::Bytes),
        per_topic(|t| t.message_bytes),
    )?;
    gauge_family(
        enc,
        "nsq_topic_paused",
        "1 when the topic is paused.",
        None,
        per_topic(|t| u64::from(t.paused)),
    )?;
    gauge_family(
        enc,
        "nsq_topic_channels",
        "Channels of the topic.",
        None,
        per_topic(|t| t.channels.len() as u64),
    )?;

    let per_channel = |f: fn(&ChannelStats) -> u64| {
        topics
            .iter()
            .flat_map(move |t| t.channels.iter().map(move |c| (channel_labels(t, c), f(c))))
    };
    gauge_family(
        enc,
        "nsq_channel_depth",
        "Ready messages of the channel (memory + disk; in-flight and deferred ones excluded).",
        None,
        per_channel(|c| c.depth),
    )?;
    gauge_family(
        enc,
        "nsq_channel_backend_depth",
        "The disk part of nsq_channel_depth.",
        None,
        per_channel(|c| c.backend_depth),
    )?;
    gauge_family(
        enc,
        "nsq_channel_in_flight",
        "Messages sent to consumers and not yet finished, requeued or timed out.",
        None,
        per_channel(|c| c.in_flight_count),
    )?;
    gauge_family(
        enc,
        "nsq_channel_deferred",
        "Deferred messages (published with a delay, or requeued with one).",
        None,
        per_channel(|c| c.deferred_count),
    )?;
    counter_family(
        enc,
        "nsq_channel_messages",
        "Messages the channel received from its topic.",
        None,
        per_channel(|c| c.message_count),
    )?;
    counter_family(
        enc,
        "nsq_channel_requeued",
        "Messages requeued by consumers (REQ).",
        None,
        per_channel(|c| c.requeue_count),
    )?;
    counter_family(
        enc,
        "nsq_channel_timed_out",
        "In-flight messages whose timeout expired.",
        None,
        per_channel(|c| c.timeout_count),
    )?;
    gauge_family(
        enc,
        "nsq_channel_clients",
        "Consumers connected to the channel.",
        None,
        per_channel(|c| c.client_count),
    )?;
    gauge_family(
        enc,
        "nsq_channel_paused",
        "1 when the channel is paused.",
        None,
        per_channel(|c| u64::from(c.paused)),
    )?;
    // Policy counters: only channels where they moved (a node without policies adds nothing).
    let per_channel_moved = |f: fn(&ChannelStats) -> u64| {
        topics.iter().flat_map(move |t| {
            t.channels
                .iter()
                .filter(move |c| f(c) > 0)
                .map(move |c| (channel_labels(t, c), f(c)))
        })
    };
    counter_family(
        enc,
        "nsq_channel_expired",
        "Messages dropped instead of delivered because they outlived the ttl policy.",
        None,
        per_channel_moved(|c| c.expired_count),
    )?;
    counter_family(
        enc,
        "nsq_channel_dropped",
        "Oldest messages dropped to stay within the topic's max_depth (overflow drop_oldest).",
        None,
        per_channel_moved(|c| c.dropped_count),
    )?;
    counter_family(
        enc,
        "nsq_channel_dead_lettered",
        "Messages moved to the dead-letter topic (max_attempts policy).",
        None,
        per_channel_moved(|c| c.dead_lettered_count),
    )?;
    // --e2e-processing-latency-percentile: publish-to-FIN latency over the window, per
    // quantile (a summary's quantile gauges, in seconds).
    let quantile_rows = |lat: &crate::stats::E2eLatency| -> Vec<(String, f64)> {
        lat.percentiles
            .iter()
            .flatten()
            .map(|p| (p.quantile.to_string(), p.value / 1e9))
            .collect()
    };
    gauge_family(
        enc,
        "nsq_topic_e2e_processing_latency",
        "Publish-to-FIN latency at a quantile, over the window (all channels of the topic).",
        Some(&Unit::Seconds),
        topics.iter().flat_map(|t| {
            quantile_rows(&t.e2e_processing_latency)
                .into_iter()
                .map(move |(q, v)| {
                    (
                        vec![("topic", t.topic_name.name.clone()), ("quantile", q)],
                        v,
                    )
                })
        }),
    )?;
    gauge_family(
        enc,
        "nsq_channel_e2e_processing_latency",
        "Publish-to-FIN latency at a quantile, over the window.",
        Some(&Unit::Seconds),
        topics.iter().flat_map(|t| {
            t.channels.iter().flat_map(move |c| {
                quantile_rows(&c.e2e_processing_latency)
                    .into_iter()
                    .map(move |(q, v)| {
                        (
                            vec![
                                ("topic", t.topic_name.name.clone()),
                                ("channel", c.channel_name.name.clone()),
                                ("quantile", q),
                            ],
                            v,
                        )
                    })
            })
        }),
    )
}

#[cfg(test)]
mod tests {
    use nsq_http::metrics::{encode, Format};

    use super::*;
    use crate::config::Options;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[tokio::test]
    async fn topics_and_channels_from_the_snapshot() {
        let nsqd = Nsqd::new(Options::default());
        let t = nsqd.get_or_create_topic("orders");
        for body in [&b"abc"[..], b"de"] {
            t.publish(std::iter::once(body), 1, None)
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
        nsqd.get_or_create_topic("idle").set_paused(true);
        let r = registry(&nsqd);
        let text = encode(&r, Format::Text).unwrap();
        let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} not in\n{text}"));
        assert_eq!(get(r#"nsq_topic_depth{topic="orders"}"#), 2.0);
        assert_eq!(get(r#"nsq_topic_messages_total{topic="orders"}"#), 2.0);
        assert_eq!(get(r#"nsq_topic_message_bytes_total{topic="orders"}"#), 5.0);
        assert_eq!(get(r#"nsq_topic_paused{topic="idle"}"#), 1.0);
        assert_eq!(get(r#"nsq_topic_paused{topic="orders"}"#), 0.0);
        assert_eq!(get(r#"nsq_topic_channels{topic="orders"}"#), 0.0);
        assert_eq!(get("nsq_topics"), 2.0);
        assert_eq!(get("nsq_channels"), 0.0);
        assert_eq!(get("nsq_producers"), 0.0);
        assert!(
            text.contains("# TYPE nsq_topic_messages_total counter\n"),
            "{text}"
        );
        // No channel yet: no channel family at all.
        assert!(!text.contains("nsq_channel_depth"), "{text}");

        // A channel takes the topic's messages.
        nsqd.get_or_create_channel(&t, "billing").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while t.depth() != 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
        let text = encode(&r, Format::Text).unwrap();
        let get = |s: &str| sample(&text, s).unwrap_or_else(|| panic!("{s} not in\n{text}"));
        let ch = r#"{topic="orders",channel="billing"}"#;
        assert_eq!(get(&format!("nsq_channel_depth{ch}")), 2.0);
        assert_eq!(get(&format!("nsq_channel_messages_total{ch}")), 2.0);
        assert_eq!(get(&format!("nsq_channel_in_flight{ch}")), 0.0);
        assert_eq!(get(&format!("nsq_channel_clients{ch}")), 0.0);
        assert_eq!(get(&format!("nsq_channel_paused{ch}")), 0.0);
        assert_eq!(get(r#"nsq_topic_channels{topic="orders"}"#), 1.0);
        assert_eq!(get("nsq_channels"), 1.0);
        assert_eq!(get("nsq_clients"), 0.0);
        assert_eq!(get("nsq_start_time_seconds"), nsqd.start_time as f64);

        // OpenMetrics: the same families, counters named without `_total`.
        let om = encode(&r, Format::OpenMetrics).unwrap();
        assert!(om.contains("# TYPE nsq_channel_requeued counter\n"), "{om}");
        assert!(
            om.contains("# UNIT nsq_topic_message_bytes bytes\n"),
            "{om}"
        );
        assert!(om.ends_with("# EOF\n"));
    }
}
