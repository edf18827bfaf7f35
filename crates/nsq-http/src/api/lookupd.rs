//! nsqlookupd's JSON replies in Go nsqlookupd 1.3's shape (`nsqlookupd/http.go`): `/lookup`
//! ([`Lookup`]), `/nodes` ([`Nodes`]), `/topics` ([`Topics`]), `/channels` ([`Channels`]),
//! `/info` ([`Info`]).
//!
//! nsq-rs's nsqlookupd always writes a producer's `topology_zone` and `topology_region`
//! (Go after v1.3.0); Go 1.3.0 never does, so readers get them empty. Pre-1.0 lookupds
//! wrapped these bodies in `{"status_code":..,"status_txt":..,"data":{..}}`; unwrapping that
//! is the reader's choice (nsq-client does).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::null_as_default;

/// An nsqd as lookupd knows it (Go's `PeerInfo`): an entry of `/lookup`'s `producers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Producer {
    /// Address of nsqd's connection to lookupd.
    pub remote_address: String,
    /// nsqd's host name.
    pub hostname: String,
    /// Where clients reach it (`--broadcast-address`).
    pub broadcast_address: String,
    /// nsqd's TCP port.
    pub tcp_port: i64,
    /// nsqd's HTTP port.
    pub http_port: i64,
    /// nsqd's version.
    pub version: String,
    /// nsqd's `--topology-zone`.
    pub topology_zone: String,
    /// nsqd's `--topology-region`.
    pub topology_region: String,
}

impl Producer {
    /// `broadcast_address:tcp_port` (the host name when no broadcast address is set), with
    /// brackets around IPv6 literals: where a consumer dials it.
    pub fn tcp_address(&self) -> String {
        let host = if self.broadcast_address.is_empty() {
            &self.hostname
        } else {
            &self.broadcast_address
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{}", self.tcp_port)
        } else {
            format!("{host}:{}", self.tcp_port)
        }
    }

    /// `broadcast_address:http_port`, as Go's `net.JoinHostPort` writes it (nsqadmin's key
    /// for a node).
    pub fn http_address(&self) -> String {
        join_host_port(&self.broadcast_address, self.http_port)
    }
}

/// `host:port`, bracketing IPv6 hosts (Go's `net.JoinHostPort`).
pub fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `GET /lookup?topic=T`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lookup {
    /// Channels registered for the topic.
    #[serde(deserialize_with = "null_as_default")]
    pub channels: Vec<String>,
    /// Its active, non-tombstoned producers.
    #[serde(deserialize_with = "null_as_default")]
    pub producers: Vec<Producer>,
}

/// An entry of `/nodes`: a producer, its topics and, per topic, whether it is tombstoned
/// there (`tombstones[i]` is `topics[i]`'s).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Node {
    /// The producer (its fields are inline in the JSON, as Go embeds `*PeerInfo`).
    #[serde(flatten)]
    pub peer: Producer,
    /// Per topic, tombstoned or not.
    #[serde(deserialize_with = "null_as_default")]
    pub tombstones: Vec<bool>,
    /// Its topics.
    #[serde(deserialize_with = "null_as_default")]
    pub topics: Vec<String>,
}

/// `GET /nodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nodes {
    /// Every active nsqd.
    #[serde(deserialize_with = "null_as_default")]
    pub producers: Vec<Node>,
}

/// `GET /topics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Topics {
    /// Every registered topic.
    #[serde(deserialize_with = "null_as_default")]
    pub topics: Vec<String>,
}

/// `GET /channels?topic=T`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Channels {
    /// The topic's registered channels.
    #[serde(deserialize_with = "null_as_default")]
    pub channels: Vec<String>,
}

/// nsqlookupd `GET /info`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Info {
    /// NSQ's version.
    pub version: Cow<'static, str>,
}
