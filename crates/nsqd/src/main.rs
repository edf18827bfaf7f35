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
    nsq_cli::daemon::init_logging(opts.log_level.as_tracing_filter(), &opts.log_prefix);
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
    if opts.export_go_data {
        return rt.block_on(async move {
            match nsqd::export_go_data(opts).await {
                Ok(()) => Ok(()),
                Err(e) => {
                    tracing::error!("export to go-diskqueue files failed: {e}");
                    std::process::exit(1);
                }
            }
        });
    }
    rt.block_on(async move {
        // Before binding: a SIGTERM right after the ports open must still stop us cleanly.
        let mut signals = nsq_cli::daemon::Signals::install();
        let handle = match nsqd::start(opts).await {
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
