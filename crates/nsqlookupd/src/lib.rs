//! `nsqlookupd`, NSQ's directory service, as a library: [`start`] binds the TCP and HTTP
//! listeners and returns a [`LookupdHandle`]; `main.rs` is a thin shell over it (flags,
//! logging, signals).
//!
//! nsqds connect over TCP (protocol V1), IDENTIFY themselves and REGISTER every topic and
//! channel they have; consumers and nsqadmin ask the HTTP API which nsqds produce a topic.
//! Both sides are Go nsqlookupd 1.3's, byte for byte where clients can tell.
//!
//! # Layout
//! - [`config`]: every flag of Go nsqlookupd 1.3 with its name and default, plus `--config`.
//! - [`registration_db`]: the sans-I/O registration database (time passed in), with the
//!   inactivity and tombstone rules.
//! - [`lookup`]: the V1 wire codec (sans I/O; shared with nsqd's registration client).
//! - [`tcp`]: one task per nsqd connection: decode, apply to the database, respond.
//! - [`http`]: the HTTP API (`router()` is testable without sockets); [`metrics`]: its
//!   Prometheus `/metrics`, read from the database at scrape time.
//!
//! **Invariants.** The database lives behind one mutex, never held across an `.await`; it
//! is the only shared mutable state. lookupd instances never talk to each other.

pub mod config;
pub mod http;
pub mod metrics;
pub mod registration_db;
pub mod tcp;

/// The lookup V1 wire codec, shared with nsqd's registration client.
pub use nsq_protocol::lookup;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Options;
use crate::registration_db::RegistrationDb;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("failed to listen on {what} address {addr}: {source}")]
    Listen {
        /// "TCP" or "HTTP".
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Time as the registration database sees it: `u64` nanoseconds on a monotonic clock that
/// starts with the daemon; [`Clock::unix_nanos`] converts a reading to wall-clock time for
/// `/debug`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
    origin_unix_nanos: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Clock {
            origin: Instant::now(),
            origin_unix_nanos: unix,
        }
    }

    /// Nanoseconds since the origin.
    pub fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }

    /// A reading as nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self, t: u64) -> i64 {
        self.origin_unix_nanos
            .saturating_add(i64::try_from(t).unwrap_or(i64::MAX))
    }
}

/// A duration as `u64` nanoseconds (saturating).
pub fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The database, locked; wakes watchers on drop if anything changed.
pub struct DbGuard<'a> {
    g: MutexGuard<'a, RegistrationDb>,
    before: u64,
    changed: &'a tokio::sync::Notify,
}

impl std::ops::Deref for DbGuard<'_> {
    type Target = RegistrationDb;
    fn deref(&self) -> &RegistrationDb {
        &self.g
    }
}

impl std::ops::DerefMut for DbGuard<'_> {
    fn deref_mut(&mut self) -> &mut RegistrationDb {
        &mut self.g
    }
}

impl Drop for DbGuard<'_> {
    fn drop(&mut self) {
        if self.g.changes() != self.before {
            self.changed.notify_waiters();
        }
    }
}

/// The daemon's shared state.
pub struct Nsqlookupd {
    /// Options in force.
    pub opts: Options,
    /// The clock the database is driven by.
    pub clock: Clock,
    db: Mutex<RegistrationDb>,
    /// Woken (all waiters) when a [`DbGuard`] saw the database change.
    pub db_changed: tokio::sync::Notify,
    /// Bound TCP address (reported in IDENTIFY responses).
    pub tcp_addr: SocketAddr,
    /// Bound HTTP address (reported in IDENTIFY responses).
    pub http_addr: SocketAddr,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Listener and connection tasks, awaited at shutdown.
    pub tracker: TaskTracker,
}

impl Nsqlookupd {
    /// Shared state for the given options and bound addresses (no listeners).
    pub fn new(opts: Options, tcp_addr: SocketAddr, http_addr: SocketAddr) -> Arc<Nsqlookupd> {
        Arc::new(Nsqlookupd {
            opts,
            clock: Clock::new(),
            db: Mutex::new(RegistrationDb::new()),
            db_changed: tokio::sync::Notify::new(),
            tcp_addr,
            http_addr,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }

    /// The registration database. Never hold the guard across an `.await`. Dropping the
    /// guard after a change wakes the `/lookup/watch` streams.
    pub fn db(&self) -> DbGuard<'_> {
        let g = self.db.lock();
        DbGuard {
            before: g.changes(),
            g,
            changed: &self.db_changed,
        }
    }

    /// `--inactive-producer-timeout` in nanoseconds.
    pub fn inactive_producer_timeout(&self) -> u64 {
        nanos(self.opts.inactive_producer_timeout)
    }

    /// `--tombstone-lifetime` in nanoseconds.
    pub fn tombstone_lifetime(&self) -> u64 {
        nanos(self.opts.tombstone_lifetime)
    }
}

/// A running daemon.
pub struct LookupdHandle {
    /// Shared state.
    pub lookupd: Arc<Nsqlookupd>,
    /// Bound TCP address.
    pub tcp_addr: SocketAddr,
    /// Bound HTTP address.
    pub http_addr: SocketAddr,
}

impl LookupdHandle {
    /// Stops accepting, closes connections and waits (up to 5 s) for their tasks to end.
    pub async fn shutdown(self) {
        tracing::info!("LOOKUP: closing");
        self.lookupd.shutdown.cancel();
        self.lookupd.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.lookupd.tracker.wait()).await;
        tracing::info!("LOOKUP: bye");
    }
}

async fn bind(
    what: &'static str,
    addr: &str,
) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Listen {
        what,
        addr: addr.to_owned(),
        source,
    };
    // tokio sets SO_REUSEADDR on Unix, so a restart can bind the same port at once.
    let l = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
    let a = l.local_addr().map_err(err)?;
    Ok((l, a))
}

/// Binds both listeners (as Go does, before serving either) and starts serving.
pub async fn start(opts: Options) -> Result<LookupdHandle, StartError> {
    let (tcp_listener, tcp_addr) = bind("TCP", &opts.tcp_address).await?;
    let (http_listener, http_addr) = bind("HTTP", &opts.http_address).await?;
    let lookupd = Nsqlookupd::new(opts, tcp_addr, http_addr);
    tracing::info!("TCP: listening on {}", tcp_addr);
    lookupd
        .tracker
        .spawn(tcp::serve(lookupd.clone(), tcp_listener));
    tracing::info!("HTTP: listening on {}", http_addr);
    lookupd
        .tracker
        .spawn(http::serve(lookupd.clone(), http_listener));
    Ok(LookupdHandle {
        lookupd,
        tcp_addr,
        http_addr,
    })
}
