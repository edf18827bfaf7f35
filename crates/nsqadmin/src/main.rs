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
    nsq_cli::daemon::init_logging(opts.log_level.as_tracing_filter(), &opts.log_prefix);
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
        // Before binding: a SIGTERM right after the ports open must still stop us cleanly.
        let mut signals = nsq_cli::daemon::Signals::install();
        let handle = match nsqadmin::start(opts).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("{e}");
                std::process::exit(1);
            }
        };
        signals.wait().await;
        handle.shutdown().await;
    });
    Ok(())
}
