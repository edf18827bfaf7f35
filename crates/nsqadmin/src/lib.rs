//! `nsqadmin`, NSQ's web UI and JSON API, as a library: [`start`] binds the HTTP listener and
//! returns an [`AdminHandle`]; `main.rs` is a thin shell over it (flags, logging, signals).
//!
//! Every page and API call reads the cluster through the daemons' HTTP APIs (nsqlookupd's
//! `/topics`, `/lookup`, `/nodes`; nsqd's `/stats`, `/info`, `/topic/*`, `/channel/*`),
//! fanning out to all nodes concurrently with the `--http-client-*-timeout`s, so a dead node
//! costs one timeout and shows as an error row. The only state nsqadmin keeps is the
//! sampler's bounded history of rates and depths ([`history`]), so that charts need no
//! graphite.
//!
//! # Layout
//! - [`config`]: every flag of Go nsqadmin 1.3, plus `--config`.
//! - [`client`]: the shared `nsq_http_client` set up from Go's `--http-client-*` flags
//!   (keep-alive, timeouts, `--http-client-tls-*`, `https://` daemons, TLS_REQUIRED retry).
//! - [`model`]: upstream and API JSON shapes and the sans-I/O aggregation across nodes.
//! - [`cluster`]: the fan-outs (reads and actions).
//! - [`history`]: the background sampler and its rings (rates, depth trends).
//! - [`http`]: the router: embedded UI ([`assets`]), `/api/*`, `/config/*`, gzip;
//!   [`metrics`]: Prometheus `/metrics` (upstream request counters, build, process).
//!
//! **Invariant:** no dependency on the nsqd or nsqlookupd crates (HTTP only).

pub mod assets;
pub mod client;
pub mod cluster;
pub mod config;
pub mod history;
pub mod http;
pub mod metrics;
pub mod model;
pub mod prom;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::cluster::{Cluster, Upstream};
use crate::config::{Cidr, LogLevel, Options};
use crate::history::History;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The options are inconsistent (e.g. no upstream address).
    #[error("{0}")]
    Options(String),
    /// The listener could not be bound.
    #[error("failed to listen on HTTP address {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The server's shared state.
pub struct Admin {
    /// Options in force.
    pub opts: Options,
    /// `--base-path`, normalised (`""` or `/prefix`).
    pub base_path: String,
    /// The cluster: `--lookupd-http-address`es can be replaced at run time
    /// (`PUT /config/nsqlookupd_http_addresses`), hence the lock; read it with [`Admin::cluster`].
    cluster: RwLock<Cluster>,
    /// `--log-level` as last set (`PUT /config/log_level` records it here and applies it to
    /// the process's log filter).
    pub log_level: Mutex<LogLevel>,
    /// `--allow-config-from-cidr`, parsed (`None` when empty: no restriction).
    pub config_cidr: Option<Cidr>,
    /// The sampler's rings (`None` with `--stats-sample-interval=0`, or with
    /// `--prometheus-url`).
    pub history: Option<Arc<History>>,
    /// `--prometheus-url`: the charts come from there.
    pub prom: Option<prom::Prom>,
    /// `index.html` with the base path filled in.
    pub index_html: String,
    /// This host's name (`via` in notifications).
    pub hostname: String,
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Admin {
    /// Shared state for `opts` (no listener).
    pub fn new(opts: Options) -> Result<Arc<Admin>, StartError> {
        opts.validate().map_err(StartError::Options)?;
        let base_path = opts.normalized_base_path();
        let config_cidr = if opts.allow_config_from_cidr.is_empty() {
            None
        } else {
            Some(opts.allow_config_from_cidr.parse::<Cidr>().map_err(|e| {
                StartError::Options(format!("failed to parse --allow-config-from-cidr: {e}"))
            })?)
        };
        let prom = (!opts.prometheus_url.is_empty()).then(|| prom::Prom {
            base: opts.prometheus_url.trim_end_matches('/').to_owned(),
            step: opts.stats_sample_interval,
            count: usize::from(opts.stats_sample_count),
        });
        let history = (prom.is_none() && !opts.stats_sample_interval.is_zero()).then(|| {
            Arc::new(History::new(
                opts.stats_sample_interval,
                usize::from(opts.stats_sample_count),
            ))
        });
        let client = Client::new(&opts).map_err(StartError::Options)?;
        let cluster = Cluster {
            client,
            upstream: Admin::upstream_for(&opts.lookupd_http_addresses, &opts),
        };
        Ok(Arc::new(Admin {
            index_html: assets::index_html(&base_path),
            base_path,
            cluster: RwLock::new(cluster),
            log_level: Mutex::new(opts.common.log_level),
            config_cidr,
            history,
            prom,
            hostname: config::hostname(),
            opts,
        }))
    }

    /// Go's rule: lookupds when any are configured, else the `--nsqd-http-address`es.
    fn upstream_for(lookupds: &[String], opts: &Options) -> Upstream {
        if lookupds.is_empty() {
            Upstream::Nsqd(opts.nsqd_http_addresses.clone())
        } else {
            Upstream::Lookupd(lookupds.to_vec())
        }
    }

    /// The cluster as currently configured (a cheap clone: a client and the addresses).
    pub fn cluster(&self) -> Cluster {
        self.cluster
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the lookupd addresses (`PUT /config/nsqlookupd_http_addresses`).
    pub fn set_lookupds(&self, lookupds: Vec<String>) {
        let mut c = self.cluster.write().unwrap_or_else(|e| e.into_inner());
        c.upstream = Admin::upstream_for(&lookupds, &self.opts);
    }

    /// The lookupd addresses in force.
    pub fn lookupds(&self) -> Vec<String> {
        self.cluster().lookupds().to_vec()
    }
}

/// A running server.
pub struct AdminHandle {
    /// Shared state.
    pub admin: Arc<Admin>,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AdminHandle {
    /// Stops accepting and waits (up to 5 s) for requests in progress.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        // The server logs `HTTP: closing <addr>` when it has stopped.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Validates the options, binds `--http-address` and starts serving.
pub async fn start(opts: Options) -> Result<AdminHandle, StartError> {
    let admin = Admin::new(opts)?;
    let addr = admin.opts.http_address.clone();
    let err = |source| StartError::Listen {
        addr: addr.clone(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(err)?;
    let http_addr = listener.local_addr().map_err(err)?;
    tracing::info!("HTTP: listening on {}", http_addr);
    let shutdown = CancellationToken::new();
    if let Some(h) = &admin.history {
        tracing::info!(
            "sampler: reading /stats every {:?}, keeping {} samples per topic and channel",
            h.interval,
            h.capacity
        );
        tokio::spawn(history::run(admin.clone(), h.clone(), shutdown.clone()));
    }
    let stop = shutdown.clone();
    // Non-HTTP first lines get Go's 400 once they end (see `nsq_http::first_line`).
    let task = tokio::spawn(nsq_http::service::serve(
        listener,
        http::router(admin.clone()),
        async move { stop.cancelled().await },
    ));
    Ok(AdminHandle {
        admin,
        http_addr,
        shutdown,
        task,
    })
}
