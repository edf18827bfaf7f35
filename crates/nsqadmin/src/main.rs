//! The `nsqadmin` binary: flags and config file, logging, signals. Everything else is in the
//! library (`nsqadmin::start`).

use anyhow::Context;
use nsqadmin::config::{ConfigError, Options};

fn main() -> anyhow::Result<()> {
    let opts = match Options::parse_from_env() {
        Ok(o) => o,
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("[nsqadmin] FATAL: {e}");
            std::process::exit(1);
        }
    };
    if opts.version {
        println!("{}", Options::version_string());
        return Ok(());
    }
    init_logging(&opts);
    for w in &opts.config_warnings {
        tracing::warn!("{w}");
    }
    if opts.verbose {
        tracing::warn!("--verbose is deprecated and has no effect, use --log-level");
    }
    for f in opts.unsupported_in_use() {
        tracing::warn!("{f} is not yet supported by nsq-rs nsqadmin and has no effect");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async move {
        let handle = match nsqadmin::start(opts).await {
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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .init();
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
