//! The `nsqd` binary: flags and config file, logging, signals. Everything else is in the
//! library (`nsqd::start`).

use anyhow::Context;
use nsqd::config::Options;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let opts = Options::parse_from_env().unwrap_or_else(|e| e.exit("nsqd"));
    if opts.common.version {
        println!("{}", Options::version_string());
        return Ok(());
    }
    opts.common.init_logging();
    if let Err(e) = opts.validate() {
        tracing::error!("{e}");
        std::process::exit(1);
    }
    for note in opts.unsupported_in_use() {
        tracing::warn!("{note}");
    }
    let rt = nsq_cli::daemon::runtime().context("failed to start the async runtime")?;
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
    rt.block_on(nsq_cli::daemon::serve_until_signal(
        nsqd::start(opts),
        |handle| handle.shutdown(),
    ));
    Ok(())
}
