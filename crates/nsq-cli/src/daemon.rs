//! What every nsq-rs daemon's `main` does the same way: log lines shaped like Go's (with
//! `--log-prefix` in front, so log shippers and greps written for Go keep working) at the
//! `--log-level` (or the `NSQ_LOG` filter), and waiting for SIGINT or SIGTERM.

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

/// Resolves on SIGINT or SIGTERM (logging which), the signals Go's daemons stop on.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, shutting down"),
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
    }
}
