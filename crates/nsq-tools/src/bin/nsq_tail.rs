//! `nsq_tail`: consumes the given topic(s) and writes every message body to stdout, one per
//! line (NSQ 1.3's `apps/nsq_tail`).
//!
//! Differences from Go: `-n` counts messages over all topics together (Go counts per topic),
//! and the last message is finished before exiting (Go exits inside the handler). On
//! SIGINT/SIGTERM (or after `-n` messages) every consumer stops gracefully: the messages
//! printed are finished, the ones received but not printed are requeued, so nothing is left
//! in flight.
//!
//! `--lookupd-http-address` may be `https://host:port` (nsq-rs; the system roots or
//! `--http-client-tls-root-ca-file` are trusted).

use std::io::Write;
use std::time::Duration;

use clap::{ArgAction, Parser};
use futures::StreamExt;
use nsq_client::{Config, Consumer};
use nsq_tools::{fatal, go_bool, go_int};

const TOOL: &str = "nsq_tail";

#[derive(Parser, Debug)]
#[command(
    name = "nsq_tail",
    about = "Consumes NSQ topics and prints every message body to stdout",
    disable_version_flag = true
)]
struct Args {
    /// NSQ channel (default: a new ephemeral channel `tail<6 digits>#ephemeral`)
    #[arg(long, default_value = "", hide_default_value = true)]
    channel: String,
    /// option to passthrough to the consumer's Config, `key,value` (may be given multiple times)
    #[arg(long = "consumer-opt", value_name = "KEY,VALUE")]
    consumer_opt: Vec<String>,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd_http_address: Vec<String>,
    /// max number of messages to allow in flight
    #[arg(long = "max-in-flight", default_value = "200", value_parser = go_int)]
    max_in_flight: i64,
    /// total messages to show (will wait if starved; 0 = forever)
    #[arg(short = 'n', long = "n", default_value = "0", value_parser = go_int)]
    n: i64,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR")]
    nsqd_tcp_address: Vec<String>,
    /// print topic name where message was received
    #[arg(long = "print-topic", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    print_topic: bool,
    /// NSQ topic (may be given multiple times)
    #[arg(long, value_name = "TOPIC")]
    topic: Vec<String>,
    #[command(flatten)]
    tls: nsq_tools::HttpTlsArgs,
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

async fn run(mut args: Args) -> i32 {
    if args.channel.is_empty() {
        args.channel = format!("tail{:06}#ephemeral", nsq_tools::random_suffix());
    }
    if args.nsqd_tcp_address.is_empty() && args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "--nsqd-tcp-address or --lookupd-http-address required",
        );
    }
    if !args.nsqd_tcp_address.is_empty() && !args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "use --nsqd-tcp-address or --lookupd-http-address not both",
        );
    }
    if args.topic.is_empty() {
        fatal(TOOL, "--topic required");
    }
    if args.n < 0 {
        fatal(TOOL, "-n must not be negative");
    }
    if args.max_in_flight < 0 {
        fatal(TOOL, "--max-in-flight must not be negative");
    }
    // Don't ask for more messages than we want.
    if args.n > 0 && args.n < args.max_in_flight {
        args.max_in_flight = args.n;
    }

    let mut config = Config::new();
    config.user_agent = nsq_tools::user_agent(TOOL);
    if let Err(e) = nsq_tools::apply_opts(&mut config, &args.consumer_opt, "consumer-opt") {
        fatal(TOOL, format!("{e:#}"));
    }
    config.max_in_flight = args.max_in_flight as u64;
    config.lookupd_tls_root_ca_file = args.tls.http_client_tls_root_ca_file.clone();

    // One consumer per topic, merged into one stream of (topic, message).
    let mut consumers = Vec::new();
    let mut stops = Vec::new();
    for topic in &args.topic {
        let consumer = match Consumer::new(topic.clone(), args.channel.clone(), config.clone()) {
            Ok(c) => c,
            Err(e) => fatal(
                TOOL,
                format!("failed to create consumer for topic {topic:?}: {e}"),
            ),
        };
        for addr in &args.nsqd_tcp_address {
            if let Err(e) = consumer.connect_to_nsqd(addr).await {
                fatal(TOOL, format!("failed to connect to nsqd {addr}: {e}"));
            }
        }
        for addr in &args.lookupd_http_address {
            if let Err(e) = consumer.connect_to_lookupd(addr).await {
                fatal(TOOL, format!("bad --lookupd-http-address {addr}: {e}"));
            }
        }
        stops.push(consumer.stop_handle());
        let topic = topic.clone();
        consumers.push(consumer.map(move |m| (topic.clone(), m)).boxed());
    }
    if !args.lookupd_http_address.is_empty() {
        let client = match nsq_tools::http_client(
            TOOL,
            &args.tls,
            Duration::from_secs(2),
            Duration::from_secs(5),
        ) {
            Ok(c) => c,
            Err(e) => fatal(TOOL, format!("{e:#}")),
        };
        for addr in &args.lookupd_http_address {
            check_lookupd(&client, addr).await;
        }
    }

    let mut stream = futures::stream::select_all(consumers);
    let signal = nsq_tools::shutdown_signal(false);
    tokio::pin!(signal);
    let mut shown: i64 = 0;
    let mut code = 0;
    let stdout = std::io::stdout();
    loop {
        tokio::select! {
            biased;
            _ = &mut signal => break,
            next = stream.next() => {
                let Some((topic, msg)) = next else { break };
                let mut out = stdout.lock();
                let written = (|| {
                    if args.print_topic {
                        out.write_all(topic.as_bytes())?;
                        out.write_all(b" | ")?;
                    }
                    out.write_all(msg.body())?;
                    out.write_all(b"\n")?;
                    out.flush()
                })();
                match written {
                    Ok(()) => msg.finish(),
                    Err(e) => {
                        msg.requeue_without_backoff(Some(Duration::ZERO));
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            eprintln!("{TOOL}: writing to stdout: {e}");
                            code = 1;
                        }
                        break;
                    }
                }
                shown += 1;
                if args.n > 0 && shown >= args.n {
                    break;
                }
            }
        }
    }

    // Graceful stop: CLS, requeue what was received but not shown, wait for the answers.
    for s in &stops {
        s.stop();
    }
    let timeout = config.stop_timeout + Duration::from_secs(1);
    let all_stopped = futures::future::join_all(stops.iter().map(|s| s.stopped()));
    if tokio::time::timeout(timeout, all_stopped).await.is_err() {
        eprintln!("{TOOL}: timed out waiting for consumers to stop");
    }
    // Anything still buffered in the merged stream is dropped here (and so requeued).
    drop(stream);
    code
}

/// Warns (without exiting: the consumer keeps polling, as go-nsq does) when a lookupd is
/// not reachable.
async fn check_lookupd(client: &nsq_http_client::Client, addr: &str) {
    let r = nsq_tools::http_get(client, addr, "/ping").await;
    match r {
        Ok((200, _)) => {}
        Ok((status, _)) => {
            eprintln!("{TOOL}: warning: lookupd {addr} answered /ping with {status}")
        }
        Err(e) => {
            eprintln!("{TOOL}: warning: lookupd {addr} is not reachable ({e:#}); will keep polling")
        }
    }
}
