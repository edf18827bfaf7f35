//! `nsqd`, the NSQ daemon, as a library: [`start`] binds the TCP and HTTP listeners and
//! returns a [`NsqdHandle`]; `main.rs` is a thin shell over it (flags, logging, signals).
//!
//! # Layout
//! - [`config`]: every flag of Go nsqd 1.3 with its name and default, plus `--config` TOML.
//! - [`state`]: sans-I/O queue logic (channel state machine, batches, ids), tested with
//!   explicit time.
//! - [`topic`], [`channel`]: async shells owning that state behind short locks; a channel's
//!   timer task handles in-flight timeouts and deferred messages.
//! - [`client`]: what stats and channels know about a connection.
//! - [`tcp`]: the V2 protocol: one task per connection reads commands, writes responses
//!   and pulls messages when the client has RDY credit.
//! - [`http`]: NSQ's HTTP API (plain and HTTPS); [`stats`]: `/stats` in JSON and text;
//!   [`metrics`]: Prometheus `/metrics`, written from a `/stats` snapshot at scrape time.
//! - [`auth`]: AUTH, asking `--auth-http-address` servers what a secret allows.
//!
//! **Invariants.** No lock is held across an `.await`. The per-message path takes only the
//! locks of the one topic and the one channel involved; the topic registry's lock is taken
//! on topic lookup by name, which connections cache.

pub mod auth;
pub mod channel;
pub mod client;
pub mod clock;
pub mod config;
pub mod durable;
pub mod http;
pub mod lookup;
pub mod metrics;
pub mod persist;
pub mod replica;
mod session;
pub mod state;
pub mod stats;
pub mod statsd;
pub mod tcp;
pub mod topic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::Channel;
use crate::client::ClientInfo;
use crate::clock::Clock;
use crate::config::Options;
use crate::topic::Topic;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("failed to listen on {what} address {addr}: {source}")]
    Listen {
        /// "TCP", "HTTP" or "HTTPS".
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Invalid options.
    #[error("{0}")]
    Config(String),
    /// The data directory cannot be used.
    #[error(transparent)]
    Data(#[from] persist::PersistError),
}

/// Deleting a topic or channel failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// No such topic.
    #[error("TOPIC_NOT_FOUND")]
    TopicNotFound,
    /// No such channel.
    #[error("CHANNEL_NOT_FOUND")]
    ChannelNotFound,
}

/// The daemon's shared state.
pub struct Nsqd {
    /// Options in force.
    pub opts: Options,
    /// Monotonic clock shared by all state machines.
    pub clock: Clock,
    /// Start time, Unix seconds.
    pub start_time: i64,
    topics: RwLock<FxHashMap<String, Arc<Topic>>>,
    /// Serialises topic creation (see [`Nsqd::get_or_create_topic`]).
    topic_create: Mutex<()>,
    client_seq: AtomicU64,
    producers: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Connection and listener tasks, awaited at shutdown.
    pub tracker: TaskTracker,
    /// Bound TCP address.
    pub tcp_addr: Mutex<Option<SocketAddr>>,
    /// Bound HTTP address.
    pub http_addr: Mutex<Option<SocketAddr>>,
    /// Bound HTTPS address (only with `--tls-cert`/`--tls-key` and an `--https-address`).
    pub https_addr: Mutex<Option<SocketAddr>>,
    /// The TLS server configuration, set by [`start`] when `--tls-cert`/`--tls-key` are
    /// given; IDENTIFY offers `tls_v1` only when it is set.
    pub tls_acceptor: std::sync::OnceLock<nsq_net::TlsAcceptor>,
    /// How to reach the auth servers, set by [`start`] when `--auth-http-address` is given;
    /// clients must AUTH before PUB/SUB when it is set.
    pub auth: std::sync::OnceLock<auth::AuthClient>,
    /// The locked data directory (`None` only in unit tests).
    pub data: Option<Arc<persist::DataDir>>,
    /// The topic-log writer (whenever there is a data directory): every message goes through
    /// it in durable mode (`--mem-queue-size=0`), messages beyond `--mem-queue-size` otherwise.
    pub store: Option<Arc<durable::Store>>,
    /// Registration with nsqlookupd: addresses in force and topic/channel change events.
    pub lookup: lookup::LookupHandle,
    /// `--e2e-processing-latency-percentile` (`None` when not given): what channels track.
    pub e2e: Option<Arc<state::e2e::E2eConfig>>,
    /// Replicated topics (`--raft-address`), set by [`start`]; `None` otherwise.
    replicas: std::sync::OnceLock<Arc<replica::Replicas>>,
    /// This value's own `Arc`, for tasks spawned from `&self` methods.
    me: std::sync::Weak<Nsqd>,
}

impl Nsqd {
    /// Shared state for the given options (no listeners).
    pub fn new(opts: Options) -> Arc<Nsqd> {
        Nsqd::with_data(opts, None)
    }

    /// Shared state using a locked data directory.
    pub fn with_data(opts: Options, data: Option<Arc<persist::DataDir>>) -> Arc<Nsqd> {
        Nsqd::with_store(opts, data, None)
    }

    /// Shared state using a locked data directory and, in durable mode, a log writer.
    pub fn with_store(
        opts: Options,
        data: Option<Arc<persist::DataDir>>,
        store: Option<Arc<durable::Store>>,
    ) -> Arc<Nsqd> {
        Arc::new_cyclic(|me| Nsqd {
            me: me.clone(),
            lookup: lookup::LookupHandle::new(&opts.lookupd_tcp_addresses),
            e2e: state::e2e::E2eConfig::new(
                opts.e2e_processing_latency_window_time,
                &opts.e2e_processing_latency_percentiles,
            )
            .map(Arc::new),
            opts,
            clock: Clock::new(),
            start_time: clock::unix_secs(),
            topics: RwLock::new(FxHashMap::default()),
            topic_create: Mutex::new(()),
            client_seq: AtomicU64::new(0),
            producers: Mutex::new(BTreeMap::new()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            tcp_addr: Mutex::new(None),
            http_addr: Mutex::new(None),
            https_addr: Mutex::new(None),
            tls_acceptor: std::sync::OnceLock::new(),
            auth: std::sync::OnceLock::new(),
            replicas: std::sync::OnceLock::new(),
            data,
            store,
        })
    }

    /// A weak handle to this daemon (for what must not keep it alive).
    pub fn weak(&self) -> std::sync::Weak<Nsqd> {
        self.me.clone()
    }

    /// Replicated topics, when this node is a replication member (`--raft-address`).
    #[inline]
    pub fn replicas(&self) -> Option<&Arc<replica::Replicas>> {
        self.replicas.get()
    }

    /// Whether `topic` is replicated (and this node a member of its group).
    pub fn is_replicated(&self, topic: &str) -> bool {
        self.replicas().is_some_and(|r| r.is_replicated(topic))
    }

    /// A replicated topic's local copy on its leader (`replica::Delivery::activate`):
    /// memory-only (no log, never spills, not in `nsqd.dat`), channels from the replicated
    /// state rather than from lookupd.
    pub(crate) fn create_replica_topic(&self, name: &str) -> Arc<Topic> {
        let _creating = self.topic_create.lock();
        let mut topics = self.topics.write();
        if let Some(t) = topics.get(name) {
            return t.clone();
        }
        let mut t = Topic::new(
            name,
            self.opts.node_id as u16,
            i64::MAX,
            self.clock,
            None,
            None,
            None,
            self.e2e.clone(),
        );
        t.replicated = true;
        let t = Arc::new(t);
        topics.insert(name.to_string(), t.clone());
        tracing::info!("TOPIC({}): created (replicated, served by this node)", name);
        self.lookup.notify(name, None);
        t
    }

    /// A new client id.
    pub fn next_client_id(&self) -> u64 {
        self.client_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// An existing topic.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic, created if needed. The name must already be valid.
    ///
    /// In durable mode a new topic opens its log first (file work); that happens under
    /// `topic_create`, which serialises creations, and not under the registry lock, so
    /// lookups of other topics (every connection's first publish, HTTP `/pub`) never wait
    /// for the disk.
    pub fn get_or_create_topic(&self, name: &str) -> Arc<Topic> {
        if let Some(t) = self.topics.read().get(name) {
            return t.clone();
        }
        let _creating = self.topic_create.lock();
        if let Some(t) = self.topics.read().get(name) {
            return t.clone();
        }
        let log = match &self.store {
            Some(store)
                if self.opts.mem_queue_size <= 0 && !nsq_protocol::names::is_ephemeral(name) =>
            {
                // Durable mode. (In the default mode a topic opens its log at its first
                // spill.)
                match durable::off_runtime(|| store.open_log(name)) {
                    Ok(log) => Some(store.register(log)),
                    Err(e) => {
                        tracing::error!("TOPIC({name}): cannot open its log, messages will only be kept in memory: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        let mut topics = self.topics.write();
        let t = Arc::new(Topic::new(
            name,
            self.opts.node_id as u16,
            self.opts.mem_queue_size,
            self.clock,
            self.data.clone(),
            self.store.clone(),
            log,
            self.e2e.clone(),
        ));
        topics.insert(name.to_string(), t.clone());
        if let (Some(d), false) = (&self.data, t.ephemeral) {
            d.mark_dirty();
        }
        tracing::info!("TOPIC({}): created", name);
        self.lookup.notify(name, None);
        drop(topics);
        self.precreate_channels_from_lookupd(&t);
        t
    }

    /// Go's trap 9: a topic first created here may already have channels elsewhere in the
    /// cluster. Ask every connected lookupd for them and create them before the topic hands
    /// out messages, so each of those channels gets everything published meanwhile (the topic
    /// holds messages until then; Go blocks the first publisher instead).
    fn precreate_channels_from_lookupd(&self, t: &Arc<Topic>) {
        if t.ephemeral {
            return;
        }
        let lookupds = self.lookup.http_addresses();
        if lookupds.is_empty() {
            return;
        }
        let (Ok(rt), Some(me)) = (tokio::runtime::Handle::try_current(), self.me.upgrade()) else {
            return;
        };
        t.set_starting(true);
        t.begin_precreate();
        let t = t.clone();
        rt.spawn(async move {
            let client = me.lookup.http_client(me.opts.http_client_request_timeout);
            for addr in lookupds {
                match lookup::query_channels(&client, &addr, &t.name).await {
                    Ok(chans) => {
                        for c in chans {
                            // A channel created or deleted here since the topic appeared is
                            // this node's to decide (lookupd lists deleted ones too).
                            let ok = nsq_protocol::names::is_valid_channel_name(c.as_bytes())
                                && !nsq_protocol::names::is_ephemeral(&c)
                                && !t.changed_during_precreate(&c);
                            if ok && me.get_or_create_channel(&t, &c).is_ok() {
                                tracing::info!(
                                    "TOPIC({}): channel {c} pre-created from lookupd {addr}",
                                    t.name
                                );
                            }
                        }
                    }
                    Err(e) => tracing::warn!(
                        "TOPIC({}): could not get channels from lookupd {addr}: {e}",
                        t.name
                    ),
                }
            }
            t.end_precreate();
            t.set_starting(false);
        });
    }

    /// The channel of `topic`, created if needed (`true` when created); announces a creation
    /// to nsqlookupd. Use this rather than `Topic::get_or_create_channel` once serving.
    pub fn get_or_create_channel(
        &self,
        topic: &Topic,
        name: &str,
    ) -> Result<(Arc<Channel>, bool), topic::PublishError> {
        let r = topic.get_or_create_channel(name)?;
        if r.1 {
            self.lookup.notify(&topic.name, Some(name));
            if topic.replicated {
                if let Some(rep) = self.replicas() {
                    rep.attach(&r.0);
                    rep.channel_changed(&topic.name, name, true);
                }
            }
        }
        Ok(r)
    }

    /// Creates a topic around an already opened log (restart).
    pub(crate) fn restore_topic_with_log(
        &self,
        name: &str,
        log: durable::TopicStore,
    ) -> Arc<Topic> {
        let mut topics = self.topics.write();
        let t = Arc::new(Topic::new(
            name,
            self.opts.node_id as u16,
            self.opts.mem_queue_size,
            self.clock,
            self.data.clone(),
            self.store.clone(),
            Some(log),
            self.e2e.clone(),
        ));
        topics.insert(name.to_string(), t.clone());
        t
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Number of topics.
    pub fn topic_count(&self) -> usize {
        self.topics.read().len()
    }

    /// Deletes a topic and all its channels.
    pub fn delete_topic(&self, name: &str) -> Result<(), DeleteError> {
        let t = self
            .topics
            .write()
            .remove(name)
            .ok_or(DeleteError::TopicNotFound)?;
        t.delete();
        self.lookup.notify(name, None);
        tracing::info!("TOPIC({}): deleting", name);
        Ok(())
    }

    /// Deletes a channel; an ephemeral topic left without channels is deleted too.
    pub fn delete_channel(&self, topic: &str, channel: &str) -> Result<(), DeleteError> {
        let t = self.topic(topic).ok_or(DeleteError::TopicNotFound)?;
        if !t.remove_channel(channel) {
            return Err(DeleteError::ChannelNotFound);
        }
        self.lookup.notify(topic, Some(channel));
        if t.ephemeral && t.channel_count() == 0 {
            let mut topics = self.topics.write();
            if let Some(cur) = topics.get(topic) {
                if Arc::ptr_eq(cur, &t) && t.channel_count() == 0 {
                    topics.remove(topic);
                    drop(topics);
                    t.delete();
                    self.lookup.notify(topic, None);
                    tracing::info!("TOPIC({}): deleting (last channel gone)", topic);
                }
            }
        }
        Ok(())
    }

    /// Called when a consumer leaves: ephemeral channels go away with their last consumer.
    pub fn consumer_left(&self, ch: &Arc<Channel>, client_id: u64) {
        let remaining = ch.remove_client(client_id);
        if remaining == 0 && ch.ephemeral && !ch.is_exiting() {
            // Only delete the channel object we were attached to, not a newer one.
            if let Some(t) = self.topic(&ch.topic_name) {
                if let Some(cur) = t.channel(&ch.name) {
                    if Arc::ptr_eq(&cur, ch) && cur.client_count() == 0 {
                        let _ = self.delete_channel(&ch.topic_name, &ch.name);
                    }
                }
            }
        }
    }

    /// Records a connection that published (it appears under `producers` in `/stats`).
    pub fn add_producer(&self, client: &Arc<ClientInfo>) {
        self.producers
            .lock()
            .entry(client.id)
            .or_insert_with(|| client.clone());
    }

    /// Forgets a connection.
    pub fn remove_producer(&self, id: u64) {
        self.producers.lock().remove(&id);
    }

    /// Connections that have published, by id.
    pub fn producers(&self) -> Vec<Arc<ClientInfo>> {
        self.producers.lock().values().cloned().collect()
    }
}

/// A running daemon.
pub struct NsqdHandle {
    /// Shared state.
    pub nsqd: Arc<Nsqd>,
    /// Bound TCP address.
    pub tcp_addr: SocketAddr,
    /// Bound HTTP address, if HTTP is enabled.
    pub http_addr: Option<SocketAddr>,
    /// Bound HTTPS address, if TLS and HTTPS are enabled.
    pub https_addr: Option<SocketAddr>,
}

impl NsqdHandle {
    /// Stops accepting, disconnects clients and waits for connection tasks to end.
    pub async fn shutdown(self) {
        tracing::info!("NSQ: closing");
        self.nsqd.shutdown.cancel();
        self.nsqd.tracker.close();
        if let Some(r) = self.nsqd.replicas() {
            r.cluster.shutdown().await;
        }
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(5), self.nsqd.tracker.wait()).await;
        if let Some(d) = self.nsqd.data.clone() {
            let nsqd = self.nsqd.clone();
            let export = persist::Export::AtStop(nsqd.opts.export_go_data_max_bytes);
            match tokio::task::spawn_blocking(move || persist_all(&nsqd, &d, export)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("failed to persist everything at shutdown: {e}"),
                Err(e) => tracing::error!("shutdown flush task failed: {e}"),
            }
        }
        for t in self.nsqd.topics() {
            t.close();
        }
        tracing::info!("NSQ: bye");
    }
}

/// Everything a clean stop writes: every queued message in go-diskqueue format (from memory
/// and from the topic logs) and `nsqd.dat` ([`persist::flush`]), then journals and logs
/// synced.
fn persist_all(
    nsqd: &Nsqd,
    d: &persist::DataDir,
    export: persist::Export,
) -> Result<(), persist::PersistError> {
    let r = persist::flush(nsqd, d, export);
    if let Some(store) = &nsqd.store {
        durable::flush_journals(nsqd, true);
        for t in nsqd.topics() {
            if let Some((_, ts)) = t.store() {
                durable::sync_log_blocking(store, ts);
            }
        }
    }
    r
}

fn data_path(opts: &Options) -> std::path::PathBuf {
    if opts.data_path.is_empty() {
        std::path::PathBuf::from(".")
    } else {
        std::path::PathBuf::from(&opts.data_path)
    }
}

/// Opens and locks the data directory, reads the hand-back marker, starts the log writer and
/// restores topics, channels and messages: the daemon's state before it serves.
async fn open_state(opts: Options) -> Result<(Arc<Nsqd>, Arc<persist::DataDir>), StartError> {
    let data_path = data_path(&opts);
    let data = persist::DataDir::open(&data_path, &opts)?;
    // Before the log writer lists the directory: it may remove stale topic logs.
    data.take_handback()?;
    if opts.mem_queue_size <= 0 {
        tracing::info!(
            "durable mode (--mem-queue-size=0): messages are written to topic logs in {} before OK and kept until FINed",
            data_path.display()
        );
    }
    let store = Some(Arc::new(durable::Store::new(&data_path, &opts).map_err(
        |e| StartError::Config(format!("cannot start the log writer thread: {e}")),
    )?));
    let nsqd = Nsqd::with_store(opts, Some(data.clone()), store);
    {
        let (n, d) = (nsqd.clone(), data.clone());
        tokio::task::spawn_blocking(move || persist::restore(&n, &d))
            .await
            .map_err(|e| StartError::Config(format!("restore task failed: {e}")))??;
    }
    Ok((nsqd, data))
}

/// `nsqd --export-go-data`: for a stopped node, writes every queued message of `--data-path`
/// (memory part of the last clean stop, topic logs, journals) to go-diskqueue files and
/// `nsqd.dat`, as a clean shutdown does, so Go nsqd 1.3 can take the directory over. Binds
/// nothing and registers with no lookupd.
pub async fn export_go_data(mut opts: Options) -> Result<(), StartError> {
    opts.lookupd_tcp_addresses.clear();
    let (nsqd, data) = open_state(opts).await?;
    let n = nsqd.clone();
    let r = tokio::task::spawn_blocking(move || persist_all(&n, &data, persist::Export::Full))
        .await
        .map_err(|e| StartError::Config(format!("export task failed: {e}")))?;
    nsqd.shutdown.cancel();
    for t in nsqd.topics() {
        t.close();
    }
    r.map_err(StartError::Data)
}

/// Binds the listeners and starts serving.
pub async fn start(opts: Options) -> Result<NsqdHandle, StartError> {
    let (nsqd, data) = open_state(opts).await?;
    nsqd.tracker
        .spawn(persist::metadata_loop(nsqd.clone(), data.clone()));
    if nsqd.store.is_some() {
        nsqd.tracker.spawn(durable::maintenance_loop(nsqd.clone()));
    }
    let tcp_listener = tokio::net::TcpListener::bind(&nsqd.opts.tcp_address)
        .await
        .map_err(|source| StartError::Listen {
            what: "TCP",
            addr: nsqd.opts.tcp_address.clone(),
            source,
        })?;
    let tcp_addr = tcp_listener
        .local_addr()
        .map_err(|source| StartError::Listen {
            what: "TCP",
            addr: nsqd.opts.tcp_address.clone(),
            source,
        })?;
    *nsqd.tcp_addr.lock() = Some(tcp_addr);
    tracing::info!("TCP: listening on {}", tcp_addr);
    // Before any API serves: a publish to a replicated topic must never find replication
    // missing and land in a plain local topic of that name.
    if !nsqd.opts.raft_address.is_empty() {
        start_replication(&nsqd, &data).await?;
    }

    if let Some(cfg) = tls_server_config(&nsqd.opts)? {
        let _ = nsqd.tls_acceptor.set(nsq_net::TlsAcceptor::from(cfg));
    }
    if !nsqd.opts.auth_http_addresses.is_empty() {
        let o = &nsqd.opts;
        // Go's `buildClientTLSConfig`: `--tls-min-version` and `--tls-root-ca-file` (else the
        // system roots), no client certificate.
        let min_version =
            nsq_net::tls::MinVersion::from_flag(&o.tls_min_version).unwrap_or_default();
        let tls = if o.tls_root_ca_file.is_empty() && min_version == Default::default() {
            None
        } else {
            let opts = nsq_net::tls::ClientTlsOptions {
                root_ca: (!o.tls_root_ca_file.is_empty())
                    .then(|| std::path::PathBuf::from(&o.tls_root_ca_file)),
                min_version,
                ..Default::default()
            };
            Some(std::sync::Arc::new(
                nsq_net::tls::client_config_from(&opts).map_err(|e| {
                    StartError::Config(format!(
                        "cannot build the auth client's TLS configuration \
                         (--tls-root-ca-file, --tls-min-version): {e}"
                    ))
                })?,
            ))
        };
        let _ = nsqd.auth.set(auth::AuthClient {
            addresses: o.auth_http_addresses.clone(),
            post: o.auth_http_request_method == "post",
            connect_timeout: o.http_client_connect_timeout,
            request_timeout: o.http_client_request_timeout,
            tls,
        });
    }
    // Bind HTTPS before HTTP: the plain server's TLS_REQUIRED answer names the HTTPS port.
    let mut https = None;
    if let (Some(acceptor), false) = (
        nsqd.tls_acceptor.get().cloned(),
        nsqd.opts.https_address.is_empty(),
    ) {
        let l = tokio::net::TcpListener::bind(&nsqd.opts.https_address)
            .await
            .map_err(|source| StartError::Listen {
                what: "HTTPS",
                addr: nsqd.opts.https_address.clone(),
                source,
            })?;
        let a = l.local_addr().map_err(|source| StartError::Listen {
            what: "HTTPS",
            addr: nsqd.opts.https_address.clone(),
            source,
        })?;
        *nsqd.https_addr.lock() = Some(a);
        tracing::info!("HTTPS: listening on {}", a);
        https = Some((l, acceptor, a));
    }
    let https_addr = https.as_ref().map(|h| h.2);
    if let Some((l, acceptor, _)) = https {
        nsqd.tracker
            .spawn(http::serve_https(nsqd.clone(), l, acceptor));
    }
    let mut http_addr = None;
    if !nsqd.opts.http_address.is_empty() {
        let l = tokio::net::TcpListener::bind(&nsqd.opts.http_address)
            .await
            .map_err(|source| StartError::Listen {
                what: "HTTP",
                addr: nsqd.opts.http_address.clone(),
                source,
            })?;
        let a = l.local_addr().map_err(|source| StartError::Listen {
            what: "HTTP",
            addr: nsqd.opts.http_address.clone(),
            source,
        })?;
        *nsqd.http_addr.lock() = Some(a);
        tracing::info!("HTTP: listening on {}", a);
        http_addr = Some(a);
        nsqd.tracker.spawn(http::serve(nsqd.clone(), l));
    }
    warn_if_exposed(&nsqd.opts, tcp_addr, http_addr);
    nsqd.tracker.spawn(tcp::serve(nsqd.clone(), tcp_listener));
    nsqd.tracker.spawn(lookup::run(nsqd.clone()));
    // After the HTTP bind: the statsd prefix names the HTTP port announced to lookupd.
    if !nsqd.opts.statsd_address.is_empty() {
        nsqd.tracker.spawn(statsd::run(nsqd.clone()));
    }
    Ok(NsqdHandle {
        nsqd,
        tcp_addr,
        http_addr,
        https_addr,
    })
}

/// `--raft-address`: binds the peer listener, re-opens this node's replicated topics under
/// `<data-path>/raft` and serves the peer routes until shutdown.
async fn start_replication(
    nsqd: &Arc<Nsqd>,
    data: &Arc<persist::DataDir>,
) -> Result<(), StartError> {
    let o = &nsqd.opts;
    let peers = o.raft_peer_map().map_err(StartError::Config)?;
    let l = tokio::net::TcpListener::bind(&o.raft_address)
        .await
        .map_err(|source| StartError::Listen {
            what: "RAFT",
            addr: o.raft_address.clone(),
            source,
        })?;
    let mut copts = nsq_raft::ClusterOptions::new(
        o.node_id as u64,
        o.raft_address.clone(),
        peers,
        data.path().join("raft"),
    );
    // `--sync-every=1`: every appended group of entries is fdatasynced before it counts, so
    // an OK survives the power loss of every member. Otherwise (Go's default 2500) it is
    // written (the page cache) on a majority before OK: it survives any process crash and the
    // loss of a minority of machines. The vote is always fsynced.
    copts.sync = o.sync_every <= 1;
    let weak = nsqd.weak();
    let factory: nsq_raft::DeliverFactory = Arc::new(move |topic: &str| {
        Arc::new(replica::Delivery {
            nsqd: weak.clone(),
            topic: topic.to_string(),
        }) as Arc<dyn nsq_raft::Deliver>
    });
    let cluster = nsq_raft::Cluster::start(copts, factory)
        .await
        .map_err(|e| StartError::Config(format!("replication: {e}")))?;
    let _ = nsqd.replicas.set(Arc::new(replica::Replicas::new(
        cluster.clone(),
        o.node_id as u16,
    )));
    tracing::info!(
        "RAFT: listening on {} (node {}, {} peers, {} replicated topics)",
        o.raft_address,
        o.node_id,
        o.raft_peers.len(),
        cluster.topics().len()
    );
    let router = cluster.router();
    let token = nsqd.shutdown.clone();
    nsqd.tracker.spawn(async move {
        let r = axum::serve(l, router)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!("RAFT: listener failed: {e}");
        }
    });
    Ok(())
}

/// Go's `buildTLSConfig`: `None` without `--tls-cert`/`--tls-key`.
fn tls_server_config(
    o: &Options,
) -> Result<Option<std::sync::Arc<nsq_net::rustls::ServerConfig>>, StartError> {
    use nsq_net::tls::{ClientAuth, MinVersion, ServerTlsOptions};
    if o.tls_cert.is_empty() && o.tls_key.is_empty() {
        return Ok(None);
    }
    let min_version = MinVersion::from_flag(&o.tls_min_version).ok_or_else(|| {
        StartError::Config(format!(
            "--tls-min-version {:?} is not supported (tls1.0 ... tls1.3)",
            o.tls_min_version
        ))
    })?;
    if matches!(o.tls_min_version.as_str(), "tls1.0" | "tls1.1") {
        tracing::info!(
            "TLS: --tls-min-version={} accepts TLS 1.2 and 1.3 (the TLS stack speaks nothing older)",
            o.tls_min_version
        );
    }
    let client_auth = match o.tls_client_auth_policy.as_str() {
        "require" => ClientAuth::Require,
        "require-verify" => ClientAuth::RequireVerify,
        _ => ClientAuth::None,
    };
    let cfg = nsq_net::tls::server_config(&ServerTlsOptions {
        cert: o.tls_cert.clone().into(),
        key: o.tls_key.clone().into(),
        client_auth,
        root_ca: (!o.tls_root_ca_file.is_empty()).then(|| o.tls_root_ca_file.clone().into()),
        min_version,
    })
    .map_err(|e| StartError::Config(format!("failed to load TLS configuration: {e}")))?;
    Ok(Some(cfg))
}

/// Loud warnings when clients on other hosts can reach the TCP port with no auth server, or
/// the HTTP API with no `--http-api-token` (AUTH does not cover NSQ's HTTP API): anyone who can
/// connect can publish, consume and delete.
fn warn_if_exposed(o: &Options, tcp: SocketAddr, http: Option<SocketAddr>) {
    if !tcp.ip().is_loopback() && o.auth_http_addresses.is_empty() {
        tracing::warn!(
            "SECURITY: TCP {tcp} listens on a non-loopback address and no --auth-http-address \
             is set: any host that can connect may publish and consume"
        );
    }
    if let Some(http) = http.filter(|a| !a.ip().is_loopback()) {
        if o.http_api_token.is_empty() {
            tracing::warn!(
                "SECURITY: HTTP {http} listens on a non-loopback address and no \
                 --http-api-token is set: any host that can connect may publish, empty and \
                 delete topics (AUTH does not cover the HTTP API)"
            );
        }
    }
}
