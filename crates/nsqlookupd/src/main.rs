//! The `nsqlookupd` binary: flags and config file, logging, signals. Everything else is in
//! the library (`nsqlookupd::start`).

use anyhow::Context;
use nsqlookupd::config::Options;

fn main() -> anyhow::Result<()> {
    let opts = Options::parse_from_env().unwrap_or_else(|e| e.exit("nsqlookupd"));
    if opts.common.version {
        println!("{}", Options::version_string());
        return Ok(());
    }
    opts.common.init_logging();
    if opts.common.verbose {
        tracing::warn!("--verbose is deprecated and has no effect, use --log-level");
    }
    let rt = nsq_cli::daemon::runtime().context("failed to start the async runtime")?;
    rt.block_on(nsq_cli::daemon::serve_until_signal(
        nsqlookupd::start(opts),
        |handle| handle.shutdown(),
    ));
    Ok(())
}
