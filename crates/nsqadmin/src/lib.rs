//! `nsqadmin`, NSQ's web UI and JSON API, as a library: [`start`] binds the HTTP listener and
//! returns an [`AdminHandle`]; `main.rs` is a thin shell over it (flags, logging, signals).
//!
//! nsqadmin keeps no state of its own: every page and API call reads the cluster through the
//! daemons' HTTP APIs (nsqlookupd's `/topics`, `/lookup`, `/nodes`; nsqd's `/stats`,
//! `/info`, `/topic/*`, `/channel/*`), fanning out to all nodes concurrently with the
//! `--http-client-*-timeout`s, so a dead node costs one timeout and shows as an error row.
//!
//! # Layout
//! - [`config`]: every flag of Go nsqadmin 1.3, plus `--config`.
//! - [`client`]: a minimal HTTP/1.1 client with connect and request timeouts.
//! - [`model`]: upstream and API JSON shapes and the sans-I/O aggregation across nodes.
//! - [`cluster`]: the fan-outs (reads and actions).
//! - [`http`]: the router: embedded UI ([`assets`]) and `/api/*`.
//!
//! **Invariant:** no dependency on the nsqd or nsqlookupd crates (HTTP only).

pub mod assets;
pub mod client;
pub mod cluster;
pub mod config;
pub mod http;
pub mod model;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::cluster::{Cluster, Upstream};
use crate::config::Options;

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
    /// The cluster, as configured.
    pub cluster: Cluster,
    /// `index.html` with the base path filled in.
    pub index_html: String,
    /// This host's name (`via` in notifications).
    pub hostname: String,
}

impl Admin {
    /// Shared state for `opts` (no listener).
    pub fn new(opts: Options) -> Result<Arc<Admin>, StartError> {
        opts.validate().map_err(StartError::Options)?;
        let base_path = opts.normalized_base_path();
        let upstream = if opts.lookupd_http_addresses.is_empty() {
            Upstream::Nsqd(opts.nsqd_http_addresses.clone())
        } else {
            Upstream::Lookupd(opts.lookupd_http_addresses.clone())
        };
        let client = Client {
            connect_timeout: opts.http_client_connect_timeout,
            request_timeout: opts.http_client_request_timeout,
        };
        Ok(Arc::new(Admin {
            index_html: assets::index_html(&base_path),
            base_path,
            cluster: Cluster { client, upstream },
            hostname: config::hostname(),
            opts,
        }))
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
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        tracing::info!("HTTP: closing {}", self.http_addr);
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
    let app = http::router(admin.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!("HTTP: serve() failed - {e}");
        }
    });
    Ok(AdminHandle {
        admin,
        http_addr,
        shutdown,
        task,
    })
}
