//! What the rest of the daemon (stats, channels) knows about a TCP client connection.
//! The connection task owns the socket; this struct holds the fields others read, as
//! atomics or behind short locks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use nsq_net::tls::TlsInfo;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Client states, numbered as Go's (they appear as `state` in `/stats`).
pub mod client_state {
    /// Connected, not subscribed.
    pub const INIT: u8 = 0;
    /// Subscribed to a channel.
    pub const SUBSCRIBED: u8 = 3;
    /// Sent CLS.
    pub const CLOSING: u8 = 4;
}

/// Fields set by IDENTIFY.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// `client_id` (defaults to the remote IP).
    pub client_id: String,
    /// `hostname` (defaults to the remote IP).
    pub hostname: String,
    /// `user_agent`.
    pub user_agent: String,
    /// `sample_rate`.
    pub sample_rate: i64,
    /// Topology experiment fields.
    pub topology_region: String,
    /// Topology experiment fields.
    pub topology_zone: String,
}

/// What `/stats` shows about a client's AUTH (Go's `AuthState` fields).
#[derive(Debug, Clone, Default)]
pub struct AuthSummary {
    /// The auth server granted at least one authorization.
    pub authed: bool,
    /// `identity` from the auth server.
    pub identity: String,
    /// `identity_url` from the auth server.
    pub identity_url: String,
}

/// Shared view of one client connection.
pub struct ClientInfo {
    /// Daemon-unique id.
    pub id: u64,
    /// Peer address.
    pub remote_addr: SocketAddr,
    /// Connect time, Unix seconds.
    pub connect_ts: i64,
    /// IDENTIFY data.
    pub identity: Mutex<Identity>,
    /// One of [`client_state`].
    pub state: AtomicU8,
    /// Current RDY.
    pub ready_count: AtomicU64,
    /// Messages delivered to this client.
    pub message_count: AtomicU64,
    /// FINs.
    pub finish_count: AtomicU64,
    /// REQs.
    pub requeue_count: AtomicU64,
    /// Messages published by this client, per topic (for `/stats` producers). The
    /// connection keeps the counter of the topic it publishes to, so a publish costs one
    /// atomic add, not a lock and a string compare.
    pub pub_counts: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    /// Last time (clock ns) the client published.
    pub last_pub: AtomicI64,
    /// Wakes the connection task: new messages on its channel chose it (`Channel::wake_clients`).
    pub wake: Notify,
    /// The TLS session, once upgraded.
    pub tls: OnceLock<TlsInfo>,
    /// Snappy negotiated.
    pub snappy: AtomicBool,
    /// Deflate negotiated.
    pub deflate: AtomicBool,
    /// Result of the last AUTH.
    pub auth: Mutex<AuthSummary>,
}

impl ClientInfo {
    /// A new client in state INIT.
    pub fn new(id: u64, remote_addr: SocketAddr, connect_ts: i64) -> ClientInfo {
        let ip = remote_addr.ip().to_string();
        ClientInfo {
            id,
            remote_addr,
            connect_ts,
            identity: Mutex::new(Identity {
                client_id: ip.clone(),
                hostname: ip,
                ..Identity::default()
            }),
            state: AtomicU8::new(client_state::INIT),
            ready_count: AtomicU64::new(0),
            message_count: AtomicU64::new(0),
            finish_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            pub_counts: Mutex::new(Vec::new()),
            last_pub: AtomicI64::new(0),
            wake: Notify::new(),
            tls: OnceLock::new(),
            snappy: AtomicBool::new(false),
            deflate: AtomicBool::new(false),
            auth: Mutex::new(AuthSummary::default()),
        }
    }

    /// Current state.
    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// The counter of messages this client published to `topic` (created at 0).
    pub fn pub_counter(&self, topic: &str) -> Arc<AtomicU64> {
        let mut counts = self.pub_counts.lock();
        match counts.iter().find(|(t, _)| t == topic) {
            Some((_, c)) => c.clone(),
            None => {
                let c = Arc::new(AtomicU64::new(0));
                counts.push((topic.to_string(), c.clone()));
                c
            }
        }
    }

    /// Records `n` messages published to `topic`.
    pub fn record_pub(&self, topic: &str, n: u64) {
        self.pub_counter(topic).fetch_add(n, Ordering::Relaxed);
    }
}
