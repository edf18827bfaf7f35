//! nsqd's `/stats?format=json` ([`Stats`]) and `/info` ([`Info`]), in Go nsqd 1.3's shape
//! (`nsqd/stats.go`, `nsqd/http.go`), plus nsq-rs's extensions where they are in use.
//!
//! What the values mean and when they are `null` (a `topic` filter naming no topic,
//! `include_clients=false`, ...) is nsqd's business; see its `stats` module. The type
//! parameters `T` and `C` are how a topic's and a channel's name are held: `String` when
//! reading, whatever serializes as the name when rendering.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{is_false, is_zero, null_as_default};
use crate::json::go_float;

/// The whole `/stats` document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    default,
    bound(deserialize = "T: Deserialize<'de> + Default, C: Deserialize<'de> + Default")
)]
pub struct Stats<T = String, C = String> {
    /// NSQ's version, e.g. `1.3.0`.
    pub version: Cow<'static, str>,
    /// `OK`, or Go's `NOK - <last disk write error>`.
    pub health: String,
    /// Daemon start, Unix seconds.
    pub start_time: i64,
    /// `None` (JSON `null`) when a `topic` filter matched nothing.
    pub topics: Option<Vec<TopicStats<T, C>>>,
    /// Go runtime figures; omitted with `include_mem=false` (Go's `omitempty`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemStats>,
    /// Connections that have published; `None` (JSON `null`) when there are none or with
    /// `include_clients=false`.
    pub producers: Option<Vec<ClientStats>>,
    /// nsq-rs replicated topics this node is a member of (leader or not), sorted by name;
    /// omitted when there are none (and always by Go nsqd).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub replicated_topics: Vec<ReplicationStats>,
}

/// A replicated topic's state on one member (nsq-rs; `GET /topic/replication` answers the
/// same fields without `topic_name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationStats {
    /// The topic.
    pub topic_name: String,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The leader's node id, when known.
    pub leader: Option<u64>,
    /// Voting members' node ids.
    pub members: Vec<u64>,
    /// Raft term.
    pub term: u64,
    /// Last log index on this member.
    pub log_index: u64,
    /// Last applied index on this member.
    pub applied_index: u64,
    /// On the leader: entries each follower is behind, by node id.
    pub lag: std::collections::BTreeMap<u64, u64>,
    /// Messages the replicated state keeps (owed to a channel, or held; a FINed message stays
    /// until every channel has FINed everything before it).
    pub messages: u64,
    /// Messages each channel still owes in the replicated state, by channel name.
    pub owed: std::collections::BTreeMap<String, u64>,
    /// Whether this member delivers the topic (the leader).
    pub active: bool,
}

/// One topic.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    default,
    bound(deserialize = "T: Deserialize<'de> + Default, C: Deserialize<'de> + Default")
)]
pub struct TopicStats<T = String, C = String> {
    /// The topic's name.
    pub topic_name: T,
    /// Its (selected) channels, sorted by name.
    #[serde(deserialize_with = "null_as_default")]
    pub channels: Vec<ChannelStats<C>>,
    /// Messages held by the topic itself (memory + disk).
    pub depth: u64,
    /// The disk part of `depth`.
    pub backend_depth: u64,
    /// Messages published.
    pub message_count: u64,
    /// Body bytes published.
    pub message_bytes: u64,
    /// Whether paused.
    pub paused: bool,
    /// Its channels' latencies merged (Go's `AggregateChannelE2eProcessingLatency`).
    pub e2e_processing_latency: E2eLatency,
    /// nsq-rs: its policy as `GET /topic/config` answers it; omitted when none is set (and
    /// always by Go nsqd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// nsq-rs dedup window: messages acknowledged but not queued as repeats; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub deduplicated_count: u64,
    /// nsq-rs dedup window: its settings and filter; omitted when the topic has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup: Option<DedupStats>,
    /// nsq-rs: a replicated topic's state (on its leader, the only member serving it);
    /// omitted for other topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationStats>,
}

/// A topic's dedup window (nsq-rs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DedupStats {
    /// `dedup_window`, as a Go duration.
    pub window: String,
    /// `dedup_capacity`: distinct messages per window the filter is sized for.
    pub capacity: u64,
    /// `dedup_false_positive_rate`: the rate at capacity, per generation.
    pub false_positive_rate: f64,
    /// The chance now that a new message is taken for a repeat (from the filter's fill).
    pub estimated_false_positive_rate: f64,
    /// The filter's size, in bits (both generations).
    pub bits: u64,
    /// Bits probed per message.
    pub hashes: u32,
    /// Same as the topic's `deduplicated_count`.
    pub deduplicated_count: u64,
}

/// One channel.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, bound(deserialize = "C: Deserialize<'de> + Default"))]
pub struct ChannelStats<C = String> {
    /// The channel's name.
    pub channel_name: C,
    /// Ready messages (memory + disk); excludes in-flight and deferred ones.
    pub depth: u64,
    /// The disk part of `depth`.
    pub backend_depth: u64,
    /// Messages in flight.
    pub in_flight_count: u64,
    /// Messages deferred.
    pub deferred_count: u64,
    /// Messages received from the topic.
    pub message_count: u64,
    /// Topology-aware consumption (Go after v1.3.0): deliveries to same-zone consumers;
    /// omitted when 0, as Go's `omitempty`.
    #[serde(skip_serializing_if = "is_zero")]
    pub zone_local_msg_count: u64,
    /// Deliveries to same-region consumers; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub region_local_msg_count: u64,
    /// Deliveries to other consumers while the experiment is on; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub global_msg_count: u64,
    /// Explicit requeues.
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
    /// nsq-rs ttl policy: messages dropped instead of delivered; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub expired_count: u64,
    /// nsq-rs `max_attempts` policy: messages moved to the dead-letter topic; omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub dead_lettered_count: u64,
    /// nsq-rs `overflow: drop_oldest`: messages dropped to stay within `max_depth`; omitted
    /// when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped_count: u64,
    /// Consumers.
    pub client_count: u64,
    /// The consumers; `None` (JSON `null`) with `include_clients=false`.
    pub clients: Option<Vec<ClientStats>>,
    /// Whether paused.
    pub paused: bool,
    /// Publish-to-FIN latency over the window.
    pub e2e_processing_latency: E2eLatency,
    /// nsq-rs: its policy as `GET /channel/config` answers it; omitted when none is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

/// Go's `quantile.Result`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct E2eLatency {
    /// Samples in the window.
    pub count: u64,
    /// One entry per `--e2e-processing-latency-percentile`, in flag order; `None` (JSON
    /// `null`) when none was given.
    pub percentiles: Option<Vec<Percentile>>,
}

/// One percentile (Go: a `map[string]float64` with these two keys, which encoding/json
/// writes sorted, so `quantile` first; floats in Go's format, [`go_float`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Percentile {
    /// The quantile asked for, e.g. 0.99.
    #[serde(serialize_with = "go_float")]
    pub quantile: f64,
    /// Latency at that quantile, in nanoseconds (a whole number).
    #[serde(serialize_with = "go_float")]
    pub value: f64,
}

/// Messages a producer published to one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PubCount {
    /// Topic name.
    pub topic: String,
    /// Messages.
    pub count: u64,
}

/// One client connection (Go's `ClientV2Stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientStats {
    /// IDENTIFY `client_id`.
    pub client_id: String,
    /// IDENTIFY `hostname`.
    pub hostname: String,
    /// Protocol: `V2`.
    pub version: Cow<'static, str>,
    /// `ip:port` of the peer.
    pub remote_address: String,
    /// Go's client state number (3 = subscribed).
    pub state: i32,
    /// Current RDY.
    pub ready_count: u64,
    /// Messages in flight to this client (in the channel being listed).
    pub in_flight_count: u64,
    /// Messages delivered.
    pub message_count: u64,
    /// FINs.
    pub finish_count: u64,
    /// REQs.
    pub requeue_count: u64,
    /// Connect time, Unix seconds.
    pub connect_ts: i64,
    /// IDENTIFY `sample_rate`.
    pub sample_rate: i64,
    /// Deflate negotiated.
    pub deflate: bool,
    /// Snappy negotiated.
    pub snappy: bool,
    /// IDENTIFY `user_agent`.
    pub user_agent: String,
    /// The auth server granted this client something (omitted when false, Go's `omitempty`).
    #[serde(skip_serializing_if = "is_false")]
    pub authed: bool,
    /// Auth identity (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity: String,
    /// Auth identity URL (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity_url: String,
    /// IDENTIFY `topology_zone` (Go after v1.3.0; nsq-rs always writes it, Go 1.3.0 never).
    pub topology_zone: String,
    /// IDENTIFY `topology_region` (as `topology_zone`).
    pub topology_region: String,
    /// Per-topic publish counts (omitted when empty).
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub pub_counts: Vec<PubCount>,
    /// TLS negotiated.
    pub tls: bool,
    /// Cipher suite, Go's spelling (empty without TLS).
    pub tls_cipher_suite: Cow<'static, str>,
    /// `TLS1.2` / `TLS1.3` (empty without TLS).
    pub tls_version: Cow<'static, str>,
    /// ALPN protocol (empty without TLS or ALPN).
    pub tls_negotiated_protocol: String,
    /// Go's `NegotiatedProtocolIsMutual` (false without TLS).
    pub tls_negotiated_protocol_is_mutual: bool,
}

/// The `memory` block: Go's `runtime.ReadMemStats` figures (what nsq-rs puts in them is
/// documented in nsqd's `stats` module).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemStats {
    /// Live heap objects.
    pub heap_objects: u64,
    /// Idle heap bytes.
    pub heap_idle_bytes: u64,
    /// Heap bytes in use.
    pub heap_in_use_bytes: u64,
    /// Heap bytes returned to the OS.
    pub heap_released_bytes: u64,
    /// Longest recent GC pause, µs.
    pub gc_pause_usec_100: u64,
    /// 99th percentile GC pause, µs.
    pub gc_pause_usec_99: u64,
    /// 95th percentile GC pause, µs.
    pub gc_pause_usec_95: u64,
    /// Heap size of the next GC.
    pub next_gc_bytes: u64,
    /// GC runs.
    pub gc_total_runs: u32,
}

/// nsqd `GET /info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Info {
    /// NSQ's version.
    pub version: Cow<'static, str>,
    /// `--broadcast-address`.
    pub broadcast_address: String,
    /// The host's name.
    pub hostname: String,
    /// Bound HTTP port.
    pub http_port: i64,
    /// Bound TCP port.
    pub tcp_port: i64,
    /// Daemon start, Unix seconds.
    pub start_time: i64,
    /// `--max-heartbeat-interval`, ns.
    pub max_heartbeat_interval: i64,
    /// `--max-output-buffer-size`.
    pub max_output_buffer_size: i64,
    /// `--max-output-buffer-timeout`, ns.
    pub max_output_buffer_timeout: i64,
    /// `--max-deflate-level`.
    pub max_deflate_level: i64,
    /// `--topology-zone` (Go after v1.3.0; nsq-rs always writes it).
    pub topology_zone: String,
    /// `--topology-region` (as `topology_zone`).
    pub topology_region: String,
}
