//! What every nsq-rs daemon's `main` does the same way: log lines shaped like Go's (with
//! `--log-prefix` in front, so log shippers and greps written for Go keep working) at the
//! `--log-level` (or the `NSQ_LOG` filter), waiting for SIGINT or SIGTERM, the `--log-level`
//! values themselves ([`LogLevel`]) and the host name daemons report.

use std::fmt;
use std::str::FromStr;

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Logs to stderr at `level` (a tracing filter such as `info`; `NSQ_LOG` overrides it), each
/// line starting with `prefix` (Go's `[nsqd] `, `[nsqlookupd] `, ...).
pub fn init_logging(level: &str, prefix: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NSQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let format = Prefixed {
        prefix: prefix.to_string(),
        inner: tracing_subscriber::fmt::format()
            .with_target(false)
            .with_ansi(false),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(format)
        .init();
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
    pub fn as_tracing_filter(&self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Fatal => "error",
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
