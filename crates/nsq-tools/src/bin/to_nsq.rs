//! `to_nsq`: reads stdin, splits it on `--delimiter` and publishes every non-empty record
//! to `--topic` on **every** `--nsqd-tcp-address` (NSQ 1.3's `apps/to_nsq`).
//!
//! Each record is published synchronously (acknowledged before the next one is read), so
//! order is kept and at EOF everything has been acknowledged. A failed publish is fatal
//! (exit 1). Differences from Go: the nsqds are connected up front so an unreachable
//! address is reported before stdin is read, and `--version` exists.

use std::time::Duration;

use clap::{ArgAction, Parser};
use nsq_client::{Config, Producer};
use nsq_tools::{fatal, go_bool, go_int};
use tokio::io::AsyncBufReadExt;

const TOOL: &str = "to_nsq";

#[derive(Parser, Debug)]
#[command(
    name = "to_nsq",
    about = "Publishes stdin, split on a delimiter, to an NSQ topic",
    disable_version_flag = true
)]
struct Args {
    /// character to split input from stdin
    #[arg(long, default_value = "\n")]
    delimiter: String,
    /// destination nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR")]
    nsqd_tcp_address: Vec<String>,
    /// option to passthrough to the producer's Config, `key,value` (may be given multiple times)
    #[arg(long = "producer-opt", value_name = "KEY,VALUE")]
    producer_opt: Vec<String>,
    /// Throttle messages to n/second. 0 to disable
    #[arg(long, default_value = "0", value_parser = go_int)]
    rate: i64,
    /// NSQ topic to publish to
    #[arg(long, default_value = "", hide_default_value = true)]
    topic: String,
    /// print version string
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    version: bool,
}

fn main() {
    let args: Args = nsq_tools::parse_args();
    if args.version {
        println!("{}", nsq_tools::version_string(TOOL));
        return;
    }
    nsq_tools::init_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    if args.topic.is_empty() {
        fatal(TOOL, "--topic required");
    }
    if args.delimiter.len() != 1 {
        fatal(TOOL, "--delimiter must be a single byte");
    }
    if args.nsqd_tcp_address.is_empty() {
        fatal(TOOL, "--nsqd-tcp-address required");
    }
    if args.rate < 0 {
        fatal(TOOL, "--rate must not be negative");
    }
    let delim = args.delimiter.as_bytes()[0];

    let mut config = Config::new();
    config.user_agent = nsq_tools::user_agent(TOOL);
    if let Err(e) = nsq_tools::apply_opts(&mut config, &args.producer_opt, "producer-opt") {
        fatal(TOOL, format!("{e:#}"));
    }
    let mut producers = Vec::new();
    for addr in &args.nsqd_tcp_address {
        match Producer::connect(addr, config.clone()).await {
            Ok(p) => producers.push(p),
            Err(e) => fatal(TOOL, format!("failed to connect to nsqd {addr}: {e}")),
        }
    }

    let mut throttle = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs(1) / args.rate as u32);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });

    let signal = nsq_tools::shutdown_signal(false);
    tokio::pin!(signal);
    let mut stdin = tokio::io::BufReader::with_capacity(64 * 1024, tokio::io::stdin());
    let mut record = Vec::new();
    let mut code = 0;
    'read: loop {
        if let Some(t) = throttle.as_mut() {
            tokio::select! {
                biased;
                _ = &mut signal => break 'read,
                _ = t.tick() => {}
            }
        }
        record.clear();
        let n = tokio::select! {
            biased;
            _ = &mut signal => break 'read,
            r = stdin.read_until(delim, &mut record) => match r {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("{TOOL}: reading stdin: {e}");
                    code = 1;
                    break 'read;
                }
            },
        };
        if n == 0 {
            break; // EOF
        }
        if record.last() == Some(&delim) {
            record.pop();
        }
        if record.is_empty() {
            continue;
        }
        for p in &producers {
            if let Err(e) = p.publish(&args.topic, &record).await {
                eprintln!("{TOOL}: failed to publish to {} - {e}", p.addr());
                code = 1;
                break 'read;
            }
        }
    }
    for p in &producers {
        p.stop().await;
    }
    code
}
