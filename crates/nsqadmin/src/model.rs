//! What nsqadmin reads from the daemons and what it answers with, and the sans-I/O
//! aggregation between the two (Go's `nsqadmin/clusterinfo/types.go`).
//!
//! Upstream shapes are the shared [`nsq_http::api`] types (nsqd `/stats` as [`NsqdStats`],
//! lookupd's [`Producer`], [`lookupd::Lookup`], [`lookupd::Nodes`], ...), read leniently
//! (every field defaults, unknown ones are ignored), so an nsqd of another version or a
//! missing field never fails a page. Output shapes are Go nsqadmin 1.3's, plus
//! one addition: `node_errors`, the per-node failures that Go only reports in `message`,
//! so the UI can show a dead node as an error row.

pub use nsq_http::api::lookupd::{self, join_host_port, Producer};
/// nsqd `/stats?format=json`, as nsqadmin reads it.
pub use nsq_http::api::nsqd::Stats as NsqdStats;
use nsq_http::api::nsqd::{ChannelStats as NsqdChannel, E2eLatency};
use nsq_http::json::go_float;
use serde::Serialize;
use serde_json::Value;

/// A producer known only by its HTTP address (`--nsqd-http-address` mode).
pub fn producer_from_http_address(addr: &str) -> Producer {
    let addr = crate::client::host_port(addr);
    let (host, port) = match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']), p.parse().unwrap_or(0)),
        None => (addr, 0),
    };
    Producer {
        hostname: host.to_owned(),
        broadcast_address: host.to_owned(),
        http_port: port,
        ..Producer::default()
    }
}

/// A count from nsqd's `/stats` (`u64`) in nsqadmin's Go-typed (`int64`) figures.
fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Go's `quantile.E2eProcessingLatencyAggregate`: one node's e2e latency as nsqd reported
/// it (each percentile gains `min` = `max` = `average` = its `value`, and `count`), or
/// several nodes' merged (`host` = `*`).
///
/// The merge is Go's, quirks included, so pages and scripts see the same numbers: counts
/// add up; per quantile, `max` is the largest, `average` the count-weighted mean of the
/// nodes' values, and `min` ends up equal to the last node's `max` (Go computes it from the
/// updated `max`); merged percentiles have no `value`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct E2eAggregate {
    pub count: i64,
    /// `null` when the nodes track no percentile.
    pub percentiles: Option<Vec<E2ePercentile>>,
    pub topic: String,
    pub channel: String,
    pub host: String,
}

/// One percentile of an [`E2eAggregate`] (Go: a `map[string]float64`, written with sorted
/// keys, and only the keys that were set).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct E2ePercentile {
    #[serde(serialize_with = "go_float")]
    pub average: f64,
    #[serde(serialize_with = "go_float")]
    pub count: f64,
    #[serde(serialize_with = "go_float")]
    pub max: f64,
    #[serde(serialize_with = "go_float")]
    pub min: f64,
    #[serde(serialize_with = "go_float")]
    pub quantile: f64,
    /// Only in a single node's figures.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "go_float_opt"
    )]
    pub value: Option<f64>,
}

fn go_float_opt<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => go_float(v, s),
        None => s.serialize_none(),
    }
}

impl E2eAggregate {
    /// One node's `e2e_processing_latency` object (Go's `UnmarshalJSON`).
    pub fn from_node(v: &E2eLatency) -> E2eAggregate {
        let count = n(v.count);
        let percentiles = v.percentiles.as_ref().map(|ps| {
            ps.iter()
                .map(|p| E2ePercentile {
                    average: p.value,
                    count: count as f64,
                    max: p.value,
                    min: p.value,
                    quantile: p.quantile,
                    value: Some(p.value),
                })
                .collect()
        });
        E2eAggregate {
            count,
            percentiles,
            ..E2eAggregate::default()
        }
    }

    /// Go's `E2eProcessingLatencyAggregate.Add`.
    pub fn add(&mut self, other: Option<&E2eAggregate>) {
        self.host = "*".to_owned();
        let Some(other) = other else { return };
        self.count += other.count;
        for v in other.percentiles.iter().flatten() {
            let ps = self.percentiles.get_or_insert_with(Vec::new);
            let i = match ps.iter().position(|p| p.quantile == v.quantile) {
                Some(i) => i,
                None => {
                    ps.push(E2ePercentile {
                        quantile: v.quantile,
                        ..E2ePercentile::default()
                    });
                    ps.len() - 1
                }
            };
            let p = &mut ps[i];
            p.value = None;
            p.max = v.max.max(p.max);
            p.min = v.max.min(p.max);
            p.count += v.count;
            if p.count == 0.0 {
                p.average = 0.0;
                continue;
            }
            p.average += (v.average - p.average) * v.count / p.count;
        }
    }
}

/// A node that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeError {
    /// The node's HTTP address.
    pub node: String,
    /// What went wrong.
    pub error: String,
}

/// Go's `clusterinfo.TopicStats` (per node, or aggregated with `node` = `*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopicStats {
    pub node: String,
    pub hostname: String,
    pub topic_name: String,
    pub depth: i64,
    pub memory_depth: i64,
    pub backend_depth: i64,
    pub message_count: i64,
    pub nodes: Vec<TopicStats>,
    pub channels: Vec<ChannelStats>,
    pub paused: bool,
    pub e2e_processing_latency: Option<E2eAggregate>,
    /// nsq-rs: the policy of this node's topic/channel; in an aggregate, the first node's
    /// (`config_differs` says when nodes disagree). Omitted when none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_differs: bool,
    /// nsq-rs replicated topics: the state its serving node (the leader) reports — leader,
    /// members, term, log index, followers' lag. Omitted for other topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<nsq_http::api::nsqd::ReplicationStats>,
}

/// Go's `clusterinfo.ChannelStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelStats {
    pub node: String,
    pub hostname: String,
    pub topic_name: String,
    pub channel_name: String,
    pub depth: i64,
    pub memory_depth: i64,
    pub backend_depth: i64,
    pub in_flight_count: i64,
    pub deferred_count: i64,
    pub requeue_count: i64,
    pub timeout_count: i64,
    pub message_count: i64,
    pub client_count: i64,
    pub nodes: Vec<ChannelStats>,
    pub clients: Vec<ClientStats>,
    pub paused: bool,
    pub e2e_processing_latency: Option<E2eAggregate>,
    /// nsq-rs: the policy of this node's topic/channel; in an aggregate, the first node's
    /// (`config_differs` says when nodes disagree). Omitted when none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub config_differs: bool,
}

/// Go's `clusterinfo.ClientStats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientStats {
    pub node: String,
    pub remote_address: String,
    pub version: String,
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub connect_ts: i64,
    /// Nanoseconds since `connect_ts` (Go `time.Duration`).
    pub connected: i64,
    pub in_flight_count: i64,
    pub ready_count: i64,
    pub finish_count: i64,
    pub requeue_count: i64,
    pub message_count: i64,
    pub sample_rate: i64,
    pub deflate: bool,
    pub snappy: bool,
    pub authed: bool,
    pub auth_identity: String,
    pub auth_identity_url: String,
    pub tls: bool,
    pub tls_cipher_suite: String,
    pub tls_version: String,
    pub tls_negotiated_protocol: String,
    pub tls_negotiated_protocol_is_mutual: bool,
    pub topology_zone: String,
    pub topology_region: String,
}

/// A node of `/api/nodes` (Go's `clusterinfo.Producer`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Node {
    pub remote_addresses: Vec<String>,
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: i64,
    pub http_port: i64,
    pub version: String,
    pub topology_zone: String,
    pub topology_region: String,
    pub topics: Vec<NodeTopic>,
    pub out_of_date: bool,
}

/// A topic of a node, with its tombstone flag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeTopic {
    pub topic: String,
    pub tombstoned: bool,
}

fn channel_from(node: &Producer, topic: &str, c: &NsqdChannel, now_s: i64) -> ChannelStats {
    let addr = node.http_address();
    let clients = c
        .clients
        .iter()
        .flatten()
        .map(|cl| ClientStats {
            node: addr.clone(),
            remote_address: cl.remote_address.clone(),
            version: cl.version.to_string(),
            client_id: cl.client_id.clone(),
            hostname: cl.hostname.clone(),
            user_agent: cl.user_agent.clone(),
            connect_ts: cl.connect_ts,
            connected: (now_s - cl.connect_ts).max(0).saturating_mul(1_000_000_000),
            in_flight_count: n(cl.in_flight_count),
            ready_count: n(cl.ready_count),
            finish_count: n(cl.finish_count),
            requeue_count: n(cl.requeue_count),
            message_count: n(cl.message_count),
            sample_rate: cl.sample_rate,
            deflate: cl.deflate,
            snappy: cl.snappy,
            authed: cl.authed,
            auth_identity: cl.auth_identity.clone(),
            auth_identity_url: cl.auth_identity_url.clone(),
            tls: cl.tls,
            tls_cipher_suite: cl.tls_cipher_suite.to_string(),
            tls_version: cl.tls_version.to_string(),
            tls_negotiated_protocol: cl.tls_negotiated_protocol.clone(),
            tls_negotiated_protocol_is_mutual: cl.tls_negotiated_protocol_is_mutual,
            topology_zone: cl.topology_zone.clone(),
            topology_region: cl.topology_region.clone(),
        })
        .collect();
    ChannelStats {
        node: addr,
        hostname: node.hostname.clone(),
        topic_name: topic.to_owned(),
        channel_name: c.channel_name.clone(),
        depth: n(c.depth),
        memory_depth: n(c.depth) - n(c.backend_depth),
        backend_depth: n(c.backend_depth),
        in_flight_count: n(c.in_flight_count),
        deferred_count: n(c.deferred_count),
        requeue_count: n(c.requeue_count),
        timeout_count: n(c.timeout_count),
        message_count: n(c.message_count),
        client_count: n(c.client_count),
        nodes: Vec::new(),
        clients,
        paused: c.paused,
        e2e_processing_latency: Some(E2eAggregate::from_node(&c.e2e_processing_latency)),
        config: c.config.clone(),
        config_differs: false,
    }
}

/// Merges a node's policy into an aggregate's: the first node's is kept, and a different
/// one on another node sets `differs` (no policy counts as `{}`).
fn merge_config(agg: &mut Option<Value>, differs: &mut bool, first: bool, node: &Option<Value>) {
    let empty = Value::Object(Default::default());
    if first {
        agg.clone_from(node);
    } else if agg.as_ref().unwrap_or(&empty) != node.as_ref().unwrap_or(&empty) {
        *differs = true;
    }
}

impl ChannelStats {
    /// Go's `ChannelStats.Add`: sums counters, keeps `a` as a node row, collects clients.
    pub fn add(&mut self, a: ChannelStats) {
        self.node = "*".to_owned();
        self.depth += a.depth;
        self.memory_depth += a.memory_depth;
        self.backend_depth += a.backend_depth;
        self.in_flight_count += a.in_flight_count;
        self.deferred_count += a.deferred_count;
        self.requeue_count += a.requeue_count;
        self.timeout_count += a.timeout_count;
        self.message_count += a.message_count;
        self.client_count += a.client_count;
        self.paused |= a.paused;
        self.clients.extend(a.clients.iter().cloned());
        self.clients.sort_by(|x, y| {
            (&x.hostname, &x.remote_address).cmp(&(&y.hostname, &y.remote_address))
        });
        let first = self.nodes.is_empty();
        merge_config(&mut self.config, &mut self.config_differs, first, &a.config);
        self.e2e_processing_latency
            .get_or_insert_with(|| E2eAggregate {
                host: self.node.clone(),
                topic: self.topic_name.clone(),
                channel: self.channel_name.clone(),
                ..E2eAggregate::default()
            })
            .add(a.e2e_processing_latency.as_ref());
        self.nodes.push(ChannelStats {
            clients: a.clients,
            ..a
        });
        self.nodes
            .sort_by(|x, y| (&x.hostname, &x.node).cmp(&(&y.hostname, &y.node)));
    }
}

/// Aggregates one topic across nodes: Go's `TopicStats.Add` over every node's stats.
/// `now_s` (Unix seconds) gives clients' `connected`.
pub fn aggregate_topic(topic: &str, per_node: &[(Producer, NsqdStats)], now_s: i64) -> TopicStats {
    let mut all = TopicStats {
        node: "*".to_owned(),
        topic_name: topic.to_owned(),
        ..TopicStats::default()
    };
    for (node, stats) in per_node {
        for t in stats
            .topics
            .iter()
            .flatten()
            .filter(|t| t.topic_name == topic)
        {
            let channels: Vec<ChannelStats> = t
                .channels
                .iter()
                .map(|c| channel_from(node, topic, c, now_s))
                .collect();
            let (depth, backend_depth) = (n(t.depth), n(t.backend_depth));
            all.depth += depth;
            all.memory_depth += depth - backend_depth;
            all.backend_depth += backend_depth;
            all.message_count += n(t.message_count);
            all.paused |= t.paused;
            for c in &channels {
                match all
                    .channels
                    .iter_mut()
                    .find(|a| a.channel_name == c.channel_name)
                {
                    Some(a) => a.add(c.clone()),
                    None => {
                        let mut a = ChannelStats {
                            topic_name: topic.to_owned(),
                            channel_name: c.channel_name.clone(),
                            hostname: String::new(),
                            ..ChannelStats::default()
                        };
                        a.add(c.clone());
                        all.channels.push(a);
                    }
                }
            }
            let e2e = E2eAggregate::from_node(&t.e2e_processing_latency);
            let first = all.nodes.is_empty();
            merge_config(&mut all.config, &mut all.config_differs, first, &t.config);
            if all.replication.is_none() {
                all.replication = t.replication.clone();
            }
            // Go's `TopicStats.Add`: the aggregate is made at the first node.
            all.e2e_processing_latency
                .get_or_insert_with(|| E2eAggregate {
                    host: "*".to_owned(),
                    topic: topic.to_owned(),
                    ..E2eAggregate::default()
                })
                .add(Some(&e2e));
            all.nodes.push(TopicStats {
                node: node.http_address(),
                hostname: node.hostname.clone(),
                topic_name: topic.to_owned(),
                depth,
                memory_depth: depth - backend_depth,
                backend_depth,
                message_count: n(t.message_count),
                nodes: Vec::new(),
                channels,
                paused: t.paused,
                e2e_processing_latency: Some(e2e),
                config: t.config.clone(),
                config_differs: false,
                replication: t.replication.clone(),
            });
        }
    }
    all.channels
        .sort_by(|a, b| a.channel_name.cmp(&b.channel_name));
    all.nodes
        .sort_by(|x, y| (&x.hostname, &x.node).cmp(&(&y.hostname, &y.node)));
    all
}

/// The aggregate of one channel, or `None` if no node has it.
pub fn aggregate_channel(
    topic: &str,
    channel: &str,
    per_node: &[(Producer, NsqdStats)],
    now_s: i64,
) -> Option<ChannelStats> {
    aggregate_topic(topic, per_node, now_s)
        .channels
        .into_iter()
        .find(|c| c.channel_name == channel)
}

/// Merges lookupds' `/nodes` answers into Go's producer list: one entry per
/// `broadcast_address:http_port`, remote addresses and topics unioned, `out_of_date` for
/// versions below the newest seen.
pub fn merge_nodes(answers: &[Vec<lookupd::Node>]) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for node in answers.iter().flatten() {
        let p = &node.peer;
        let key = p.http_address();
        let topics = node.topics.iter().enumerate().map(|(i, t)| NodeTopic {
            topic: t.clone(),
            tombstoned: node.tombstones.get(i).copied().unwrap_or(false),
        });
        match nodes
            .iter_mut()
            .find(|n| join_host_port(&n.broadcast_address, n.http_port) == key)
        {
            Some(n) => {
                if !n.remote_addresses.contains(&p.remote_address) {
                    n.remote_addresses.push(p.remote_address.clone());
                }
                for t in topics {
                    match n.topics.iter_mut().find(|x| x.topic == t.topic) {
                        Some(x) => x.tombstoned |= t.tombstoned,
                        None => n.topics.push(t),
                    }
                }
            }
            None => nodes.push(Node {
                remote_addresses: vec![p.remote_address.clone()],
                remote_address: p.remote_address.clone(),
                hostname: p.hostname.clone(),
                broadcast_address: p.broadcast_address.clone(),
                tcp_port: p.tcp_port,
                http_port: p.http_port,
                version: p.version.clone(),
                topology_zone: p.topology_zone.clone(),
                topology_region: p.topology_region.clone(),
                topics: topics.collect(),
                out_of_date: false,
            }),
        }
    }
    let newest = nodes.iter().map(|n| version_key(&n.version)).max();
    for n in &mut nodes {
        n.topics.sort_by(|a, b| a.topic.cmp(&b.topic));
        n.remote_addresses.sort();
        n.out_of_date = newest
            .as_ref()
            .is_some_and(|v| version_key(&n.version) < *v);
    }
    nodes.sort_by(|a, b| (&a.hostname, a.http_port).cmp(&(&b.hostname, b.http_port)));
    nodes
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .take(3)
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// Go's `maybeWarnMsg`: `""` or `WARNING: a; b`.
pub fn warning_message(errors: &[NodeError]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.node, e.error))
            .collect();
        format!("WARNING: {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Producer {
        Producer {
            hostname: host.into(),
            broadcast_address: "127.0.0.1".into(),
            http_port: port,
            version: "1.3.0".into(),
            ..Producer::default()
        }
    }

    fn stats(json: &str) -> NsqdStats {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn e2e_latency_aggregates_as_go_does() {
        let n1 = stats(
            r#"{"version":"1.3.0","topics":[{"topic_name":"t","depth":0,"backend_depth":0,
            "message_count":3,"paused":false,
            "e2e_processing_latency":{"count":3,"percentiles":[{"quantile":0.99,"value":3000}]},
            "channels":[{"channel_name":"c","e2e_processing_latency":
              {"count":3,"percentiles":[{"quantile":0.99,"value":3000}]}}]}]}"#,
        );
        let n2 = stats(
            r#"{"version":"1.3.0","topics":[{"topic_name":"t","depth":0,"backend_depth":0,
            "message_count":1,"paused":false,
            "e2e_processing_latency":{"count":1,"percentiles":[{"quantile":0.99,"value":1000}]},
            "channels":[{"channel_name":"c","e2e_processing_latency":
              {"count":1,"percentiles":[{"quantile":0.99,"value":1000}]}}]}]}"#,
        );
        let t = aggregate_topic("t", &[(node("h1", 4151), n1), (node("h2", 4151), n2)], 0);
        let json = serde_json::to_value(&t).unwrap();
        // Per node: nsqd's figures plus min = max = average = value and count.
        assert_eq!(
            json["nodes"][0]["e2e_processing_latency"],
            serde_json::json!({"count":3,"percentiles":[{"average":3000,"count":3,"max":3000,
                "min":3000,"quantile":0.99,"value":3000}],"topic":"","channel":"","host":""})
        );
        // Merged: counts add, max is the largest, average count-weighted (3·3000+1·1000)/4,
        // min is Go's (the last node's max), no value.
        let merged = serde_json::json!({"count":4,"percentiles":[{"average":2500,"count":4,
            "max":3000,"min":1000,"quantile":0.99}],"topic":"t","channel":"","host":"*"});
        assert_eq!(json["e2e_processing_latency"], merged);
        let mut ch = merged.clone();
        ch["channel"] = "c".into();
        assert_eq!(json["channels"][0]["e2e_processing_latency"], ch);
        // Without percentiles on the nodes: Go's null percentiles, and no topic at all
        // gives a null aggregate.
        let off = stats(
            r#"{"version":"1.3.0","topics":[{"topic_name":"t",
            "e2e_processing_latency":{"count":0,"percentiles":null},"channels":[]}]}"#,
        );
        let t = aggregate_topic("t", &[(node("h1", 4151), off)], 0);
        assert_eq!(
            serde_json::to_value(&t).unwrap()["e2e_processing_latency"],
            serde_json::json!({"count":0,"percentiles":null,"topic":"t","channel":"","host":"*"})
        );
        let none = aggregate_topic("t", &[], 0);
        assert!(serde_json::to_value(&none).unwrap()["e2e_processing_latency"].is_null());
    }

    #[test]
    fn aggregates_topic_and_channels_across_nodes() {
        let a = stats(
            r#"{"version":"1.3.0","topics":[{"topic_name":"t","depth":5,"backend_depth":2,
            "message_count":10,"paused":false,"channels":[
              {"channel_name":"c1","depth":3,"backend_depth":1,"in_flight_count":1,"deferred_count":2,
               "message_count":10,"requeue_count":1,"timeout_count":1,"client_count":1,
               "clients":[{"client_id":"x","hostname":"h1","remote_address":"1.1.1.1:1","connect_ts":100,
                           "in_flight_count":1,"ready_count":5}],"paused":false}]},
            {"topic_name":"other","depth":99,"channels":null}]}"#,
        );
        let b = stats(
            r#"{"topics":[{"topic_name":"t","depth":1,"backend_depth":0,"message_count":4,"paused":true,
            "channels":[{"channel_name":"c1","depth":1,"message_count":4,"clients":null,"paused":true},
                        {"channel_name":"a0","depth":7,"message_count":7}]}]}"#,
        );
        let per = vec![(node("hb", 2), b), (node("ha", 1), a)];
        let t = aggregate_topic("t", &per, 110);
        assert_eq!(t.node, "*");
        assert_eq!(
            (t.depth, t.memory_depth, t.backend_depth, t.message_count),
            (6, 4, 2, 14)
        );
        assert!(t.paused);
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.nodes[0].hostname, "ha");
        assert_eq!(t.nodes[0].node, "127.0.0.1:1");
        let names: Vec<&str> = t.channels.iter().map(|c| c.channel_name.as_str()).collect();
        assert_eq!(names, ["a0", "c1"]);
        let c1 = &t.channels[1];
        assert_eq!((c1.depth, c1.message_count, c1.in_flight_count), (4, 14, 1));
        assert_eq!(
            (c1.deferred_count, c1.requeue_count, c1.timeout_count),
            (2, 1, 1)
        );
        assert_eq!(c1.nodes.len(), 2);
        assert_eq!(c1.clients.len(), 1);
        assert_eq!(c1.clients[0].node, "127.0.0.1:1");
        assert_eq!(c1.clients[0].connected, 10_000_000_000);
        assert!(c1.paused);
        let c = aggregate_channel("t", "c1", &per, 110).unwrap();
        assert_eq!(c, *c1);
        assert!(aggregate_channel("t", "nope", &per, 110).is_none());
        let json = serde_json::to_value(&t).unwrap();
        for k in [
            "node",
            "hostname",
            "topic_name",
            "depth",
            "memory_depth",
            "backend_depth",
            "message_count",
            "nodes",
            "channels",
            "paused",
            "e2e_processing_latency",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn merges_nodes_from_several_lookupds() {
        let lookupd_node = |p: Producer, topics: &[&str], tombstones: &[bool]| lookupd::Node {
            peer: p,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            tombstones: tombstones.to_vec(),
        };
        let mut h1 = node("h1", 4151);
        h1.remote_address = "127.0.0.1:5000".into();
        let p1 = lookupd_node(h1.clone(), &["b", "a"], &[false, true]);
        h1.remote_address = "127.0.0.1:5001".into();
        let p1b = lookupd_node(h1, &["c"], &[false]);
        let mut h2 = node("h2", 4152);
        h2.version = "1.2.1".into();
        let p2 = lookupd_node(h2, &[], &[]);
        let nodes = merge_nodes(&[vec![p1, p2], vec![p1b]]);
        assert_eq!(nodes.len(), 2);
        assert_eq!(
            nodes[0].remote_addresses,
            ["127.0.0.1:5000", "127.0.0.1:5001"]
        );
        let topics: Vec<(&str, bool)> = nodes[0]
            .topics
            .iter()
            .map(|t| (t.topic.as_str(), t.tombstoned))
            .collect();
        assert_eq!(topics, [("a", true), ("b", false), ("c", false)]);
        assert!(!nodes[0].out_of_date);
        assert!(nodes[1].out_of_date);
    }

    #[test]
    fn warnings_and_addresses() {
        assert_eq!(warning_message(&[]), "");
        let e = NodeError {
            node: "n:1".into(),
            error: "boom".into(),
        };
        assert_eq!(
            warning_message(&[e.clone(), e]),
            "WARNING: n:1: boom; n:1: boom"
        );
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
        let p = producer_from_http_address("http://127.0.0.1:4151/");
        assert_eq!(p.http_address(), "127.0.0.1:4151");
    }
}
