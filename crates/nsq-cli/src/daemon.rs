//! What every nsq-rs daemon's `main` does the same way: log lines shaped like Go's (with
//! `--log-prefix` in front, so log shippers and greps written for Go keep working) at the
//! `--log-level` (or the `NSQ_LOG` filter), a log level that `PUT /config/log_level` can
//! change while the daemon runs ([`set_log_level`]), waiting for SIGINT or SIGTERM, the
//! `--log-level` values themselves ([`LogLevel`]) and the host name daemons report.
//!
//! Go's daemons compare every message's level with the current options, so swapping the options
//! (`PUT /config/log_level`) takes effect on the next line. Here the filter sits behind
//! tracing-subscriber's `reload` layer: [`init_logging`] keeps its handle in a process-wide
//! [`OnceLock`], so the HTTP handlers change the level without any daemon struct carrying it.
//! Disabled events stay as cheap as with a fixed filter: a reload rebuilds tracing's callsite
//! interest cache and maximum level, and events below it are skipped before the filter runs.

use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::MakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// The filter [`init_logging`] installed, for [`set_log_level`].
static RUNNING: OnceLock<LogControl> = OnceLock::new();

/// Logs to stderr at `level` (a tracing filter such as `info`), each line starting with
/// `prefix` (Go's `[nsqd] `, `[nsqlookupd] `, ...).
///
/// `NSQ_LOG`, when set to a valid tracing filter (`EnvFilter` syntax, e.g.
/// `nsqd=debug,hyper=warn`), replaces `level` at start-up. A later [`set_log_level`]
/// (`PUT /config/log_level`) replaces whatever filter is in force, `NSQ_LOG`'s per-target
/// directives included, with the plain level: the operator asked for that level now.
pub fn init_logging(level: &str, prefix: &str) {
    let filter = EnvFilter::try_from_env("NSQ_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let (subscriber, control) = subscriber(filter, prefix, std::io::stderr);
    subscriber.init();
    // `init` panics when a global subscriber already exists, so this runs at most once.
    let _ = RUNNING.set(control);
}

/// Replaces the running log filter of this process (installed by [`init_logging`]) with
/// `level`; later [`runtime_log_level`] calls report it.
pub fn set_log_level(level: LogLevel) -> Result<(), SetLogLevelError> {
    RUNNING
        .get()
        .ok_or(SetLogLevelError::NotInitialised)?
        .set_level(level)
}

/// The level last applied with [`set_log_level`]; `None` before the first one (the
/// `--log-level` or `NSQ_LOG` filter of start-up is in force) or without [`init_logging`].
pub fn runtime_log_level() -> Option<LogLevel> {
    RUNNING.get().and_then(LogControl::level)
}

/// Why [`set_log_level`] changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum SetLogLevelError {
    /// This process's logging was not set up by [`init_logging`] (a library embedding, a
    /// test), so there is no filter of ours to change.
    #[error("logging was not set up by init_logging, so there is no log filter to change")]
    NotInitialised,
    /// The subscriber holding the filter is gone.
    #[error("cannot replace the log filter: {0}")]
    Reload(#[from] reload::Error),
}

/// A log filter that can be replaced while its subscriber runs.
struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The level last set, `None` while the start-up filter is in force.
    level: Mutex<Option<LogLevel>>,
}

impl LogControl {
    fn set_level(&self, level: LogLevel) -> Result<(), SetLogLevelError> {
        // Hold the lock across the reload so concurrent PUTs leave filter and level in step.
        let mut current = self.level.lock().unwrap_or_else(|e| e.into_inner());
        self.handle
            .reload(EnvFilter::new(level.as_tracing_filter()))?;
        *current = Some(level);
        Ok(())
    }

    fn level(&self) -> Option<LogLevel> {
        *self.level.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The daemons' subscriber: `filter` (behind a reload layer) and Go-shaped lines written to
/// `writer`. Separate from [`init_logging`] so tests can run it as a scoped default.
fn subscriber<W>(
    filter: EnvFilter,
    prefix: &str,
    writer: W,
) -> (impl tracing::Subscriber + Send + Sync, LogControl)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter);
    let format = Prefixed {
        prefix: prefix.to_string(),
        inner: tracing_subscriber::fmt::format()
            .with_target(false)
            .with_ansi(false),
    };
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false)
        .event_format(format);
    let subscriber = tracing_subscriber::registry().with(filter).with(lines);
    let control = LogControl {
        handle,
        level: Mutex::new(None),
    };
    (subscriber, control)
}

/// Puts a fixed prefix in front of every log line.
struct Prefixed<F> {
    prefix: String,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(&self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// SIGINT and SIGTERM, the signals Go's daemons stop on, caught from the moment this is
/// created. Create it before binding listeners: a signal that arrives after a daemon is
/// reachable but before the handler exists would otherwise kill it without a clean shutdown.
pub struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers (needs a Tokio runtime).
    pub fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let get = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot listen for {name}: {e}");
                None
            }
        };
        Signals {
            int: get(SignalKind::interrupt(), "SIGINT"),
            term: get(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Resolves on SIGINT or SIGTERM, logging which.
    pub async fn wait(&mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.int) => tracing::info!("received SIGINT, shutting down"),
            _ = recv(&mut self.term) => tracing::info!("received SIGTERM, shutting down"),
        }
    }
}

/// The daemons' runtime: tokio's multi-thread scheduler with I/O and timers.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// A daemon's life in `main`: installs the SIGINT/SIGTERM handlers, runs `start` (a failure is
/// logged as an error and exits with code 1), waits for a signal, then awaits
/// `shutdown(handle)`. The handlers exist before `start` binds anything, so a signal that
/// arrives as soon as the ports are open still stops the daemon cleanly.
pub async fn serve_until_signal<H, E, D>(
    start: impl std::future::Future<Output = Result<H, E>>,
    shutdown: impl FnOnce(H) -> D,
) where
    E: fmt::Display,
    D: std::future::Future<Output = ()>,
{
    let mut signals = Signals::install();
    let handle = match start.await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            std::process::exit(1);
        }
    };
    signals.wait().await;
    shutdown(handle).await;
}

/// Resolves on SIGINT or SIGTERM (logging which). Handlers exist only from the first poll:
/// daemons use [`Signals::install`] before binding instead.
pub async fn wait_for_signal() {
    Signals::install().wait().await
}

/// Log verbosity (`--log-level`), ordered from most to least verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum LogLevel {
    /// `debug`
    Debug,
    /// `info` (the default)
    #[default]
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `fatal`
    Fatal,
}

impl LogLevel {
    /// The value Go uses for this level (`lg.LogLevel`, 1 = DEBUG … 5 = FATAL); it is what
    /// `GET /config/log_level` returns.
    pub fn go_value(self) -> i64 {
        match self {
            LogLevel::Debug => 1,
            LogLevel::Info => 2,
            LogLevel::Warn => 3,
            LogLevel::Error => 4,
            LogLevel::Fatal => 5,
        }
    }

    /// The `tracing` filter directive for this level. tracing has no level above `error`, so
    /// `fatal` keeps errors (Go logs almost nothing at FATAL besides the message it exits with).
    ///
    /// openraft (replicated topics) logs every failed RPC to an unreachable peer, several times
    /// a second per topic; nsq-raft logs reachability changes and role changes itself, so
    /// openraft's own lines show only at `debug`.
    pub fn as_tracing_filter(&self) -> &'static str {
        match self {
            LogLevel::Debug => "debug,openraft=info",
            LogLevel::Info => "info,openraft=off",
            LogLevel::Warn => "warn,openraft=off",
            LogLevel::Error | LogLevel::Fatal => "error,openraft=off",
        }
    }

    /// The prefix Go puts in front of log messages of this level (`INFO`, `WARNING`, ...).
    pub fn go_name(self) -> &'static str {
        match self {
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Fatal => "FATAL",
        }
    }
}

/// A `--log-level` value that is not a level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid log level {0:?} (debug, info, warn, error, fatal)")]
pub struct LogLevelError(pub String);

impl FromStr for LogLevel {
    type Err = LogLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" => Ok(LogLevel::Warn),
            "error" => Ok(LogLevel::Error),
            "fatal" => Ok(LogLevel::Fatal),
            _ => Err(LogLevelError(s.to_owned())),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Fatal => "fatal",
        })
    }
}

/// The OS hostname, as Go's `os.Hostname()` reports it.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tracing::Level;

    /// A `MakeWriter` keeping everything written in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    /// One callsite, hit before and after a reload: its cached interest must be rebuilt.
    fn info_event(msg: &str) {
        tracing::info!("{msg}");
    }

    #[test]
    fn set_level_changes_what_is_enabled_and_written() {
        let out = Captured::default();
        let (subscriber, control) = subscriber(EnvFilter::new("warn"), "[test] ", out.clone());
        tracing::subscriber::with_default(subscriber, || {
            assert!(tracing::enabled!(Level::WARN));
            assert!(!tracing::enabled!(Level::INFO));
            assert_eq!(control.level(), None);
            info_event("info while at warn");
            tracing::warn!("warn while at warn");

            control.set_level(LogLevel::Debug).unwrap();
            assert_eq!(control.level(), Some(LogLevel::Debug));
            assert!(tracing::enabled!(Level::DEBUG));
            assert!(!tracing::enabled!(Level::TRACE));
            info_event("info while at debug");

            // Go's FATAL keeps only errors (tracing has no higher level).
            control.set_level(LogLevel::Fatal).unwrap();
            assert!(!tracing::enabled!(Level::WARN));
            assert!(tracing::enabled!(Level::ERROR));
            info_event("info while at fatal");
            tracing::error!("error while at fatal");
        });
        let lines = out.lines();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines.iter().all(|l| l.starts_with("[test] ")), "{lines:#?}");
        for (line, (level, msg)) in lines.iter().zip([
            ("WARN", "warn while at warn"),
            ("INFO", "info while at debug"),
            ("ERROR", "error while at fatal"),
        ]) {
            assert!(
                line.contains(level) && line.ends_with(msg),
                "{line:?}: {level} {msg}"
            );
        }
    }

    #[test]
    fn without_init_logging_there_is_nothing_to_change() {
        assert!(matches!(
            set_log_level(LogLevel::Debug),
            Err(SetLogLevelError::NotInitialised)
        ));
        assert_eq!(runtime_log_level(), None);
    }
}
