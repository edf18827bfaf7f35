//! The `nsqd` binary: flags and config file, logging, signals. Everything else is in the
//! library (`nsqd::start`).

use anyhow::Context;
use nsqd::config::{ConfigError, Options};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let opts = match Options::parse_from_env() {
        Ok(o) => o,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("[nsqd] FATAL: {e}");
            std::process::exit(1);
        }
    };
    if opts.version {
        println!("{}", Options::version_string());
        return Ok(());
    }
    init_logging(&opts);
    if let Err(e) = opts.validate() {
        tracing::error!("{e}");
        std::process::exit(1);
    }
    for w in &opts.config_warnings {
        tracing::warn!("{w}");
    }
    for note in opts.unsupported_in_use() {
        tracing::warn!("{note}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async move {
        let handle = match nsqd::start(opts).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                std::process::exit(1);
            }
        };
        wait_for_signal().await;
        handle.shutdown().await;
    });
    Ok(())
}

fn init_logging(opts: &Options) {
    let level = opts.log_level.as_tracing_filter();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NSQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let format = Prefixed {
        prefix: opts.log_prefix.clone(),
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

/// Puts `--log-prefix` (Go's default `[nsqd] `) in front of every log line, so log
/// shippers and greps written for Go nsqd keep working.
struct Prefixed<F> {
    prefix: String,
    inner: F,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for Prefixed<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        writer.write_str(&self.prefix)?;
        self.inner.format_event(ctx, writer, event)
    }
}

async fn wait_for_signal() {
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
