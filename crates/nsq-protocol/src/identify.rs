//! The IDENTIFY request and response bodies (Go: `nsqd/client_v2.go` `identifyDataV2`, and the
//! response struct in `nsqd/protocol_v2.go`).
//!
//! Every request field is optional and unknown fields are ignored: go-nsq still sends
//! `short_id` and `long_id`, which NSQ removed in 1.0. A JSON `null` counts as absent, as it
//! does for Go's `encoding/json`.

use serde::{Deserialize, Serialize};

/// The IDENTIFY request JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyRequest {
    /// Client identifier (free text).
    pub client_id: Option<String>,
    /// Client host name (free text).
    pub hostname: Option<String>,
    /// User agent, e.g. `go-nsq/1.1.0`.
    pub user_agent: Option<String>,
    /// When true the server answers with a JSON document instead of `OK`.
    pub feature_negotiation: Option<bool>,
    /// Milliseconds; -1 disables heartbeats, 0 means the default.
    pub heartbeat_interval: Option<i64>,
    /// Bytes; -1 disables buffering, 0 means the default.
    pub output_buffer_size: Option<i64>,
    /// Milliseconds; -1 disables the timeout, 0 means the default.
    pub output_buffer_timeout: Option<i64>,
    /// Asks for TLS.
    pub tls_v1: Option<bool>,
    /// Asks for snappy compression.
    pub snappy: Option<bool>,
    /// Asks for deflate compression.
    pub deflate: Option<bool>,
    /// Requested deflate level.
    pub deflate_level: Option<i64>,
    /// Percentage of messages to deliver (0 = all).
    pub sample_rate: Option<i64>,
    /// Milliseconds; 0 means the server default.
    pub msg_timeout: Option<i64>,
    /// Topology experiment: the client's region.
    pub topology_region: Option<String>,
    /// Topology experiment: the client's zone.
    pub topology_zone: Option<String>,
}

/// The IDENTIFY response JSON, fields in Go's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyResponse {
    /// `--max-rdy-count`.
    pub max_rdy_count: i64,
    /// Server version.
    pub version: String,
    /// `--max-msg-timeout` in ms.
    pub max_msg_timeout: i64,
    /// The client's effective message timeout in ms.
    pub msg_timeout: i64,
    /// Whether TLS was negotiated.
    pub tls_v1: bool,
    /// Whether deflate was negotiated.
    pub deflate: bool,
    /// Negotiated deflate level.
    pub deflate_level: i64,
    /// `--max-deflate-level`.
    pub max_deflate_level: i64,
    /// Whether snappy was negotiated.
    pub snappy: bool,
    /// The client's sample rate.
    pub sample_rate: i64,
    /// Whether the server requires AUTH.
    pub auth_required: bool,
    /// The client's output buffer size in bytes.
    pub output_buffer_size: i64,
    /// The client's output buffer timeout in ms.
    pub output_buffer_timeout: i64,
    /// Topology experiment: server region.
    #[serde(default)]
    pub topology_region: String,
    /// Topology experiment: server zone.
    #[serde(default)]
    pub topology_zone: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_tolerates_unknown_and_null() {
        let r: IdentifyRequest = serde_json::from_str(
            r#"{"short_id":"x","long_id":"y","client_id":"c","heartbeat_interval":null,"feature_negotiation":true,"msg_timeout":5000}"#,
        )
        .unwrap();
        assert_eq!(r.client_id.as_deref(), Some("c"));
        assert_eq!(r.heartbeat_interval, None);
        assert_eq!(r.feature_negotiation, Some(true));
        assert_eq!(r.msg_timeout, Some(5000));
        assert!(serde_json::from_str::<IdentifyRequest>("{\"msg_timeout\":\"x\"}").is_err());
    }
}
