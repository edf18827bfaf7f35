//! The `nsqadmin` binary: flags and config file, logging, signals. Everything else is in the
//! library (`nsqadmin::start`).

use anyhow::Context;
use nsqadmin::config::Options;

fn main() -> anyhow::Result<()> {
    let opts = Options::parse_from_env().unwrap_or_else(|e| e.exit("nsqadmin"));
    if opts.common.version {
        println!("{}", Options::version_string());
        return Ok(());
    }
    opts.common.init_logging();
    if opts.common.verbose {
        tracing::warn!("--verbose is deprecated and has no effect, use --log-level");
    }
    for f in opts.unsupported_in_use() {
        tracing::warn!("{f} is not yet supported by nsq-rs nsqadmin and has no effect");
    }
    let rt = nsq_cli::daemon::runtime().context("failed to start the async runtime")?;
    rt.block_on(nsq_cli::daemon::serve_until_signal(
        nsqadmin::start(opts),
        |handle| handle.shutdown(),
    ));
    Ok(())
}
