//! `nsq_to_http`: consumes a topic and makes an HTTP request per message (NSQ 1.3's
//! `apps/nsq_to_http`).
//!
//! `--post` URLs get the body as the request body (`Content-Type: --content-type`);
//! `--get` URLs are printf strings whose single `%s` is replaced by the URL-escaped body
//! (Go's `url.QueryEscape`). Success is a 2xx answer for POST and exactly 200 for GET: the
//! message is finished. Any other answer, a connection error or a timeout requeues it with
//! the default delay and backoff (a go-nsq handler error). `--sample` < 1 finishes the
//! skipped messages without a request, as Go does.
//!
//! Up to `-n` requests run concurrently (and at most `--max-in-flight` messages are held).
//!
//! HTTP goes through `nsq_http_client`: connections are kept alive and reused (up to `-n`
//! idle ones per host; Go's transport keeps 2), `http://` and `https://` URLs both work,
//! HTTPS trusting the system roots or the PEM file of `--http-client-tls-root-ca-file` (an
//! nsq-rs option; Go's nsq_to_http has no TLS flags). `--http-client-connect-timeout` bounds
//! the TCP connect, `--http-client-request-timeout` the whole request including the TLS
//! handshake and the response body (read and discarded, at most 64 MiB).
//!
//! Differences from Go: `hostpool`/`epsilon-greedy` are round-robin skipping hosts that
//! failed recently (see [`nsq_tools::HostPool`]); the status lines go to stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{ArgAction, Parser};
use futures::StreamExt;
use nsq_client::{Config, Consumer, Message};
use nsq_http_client::{Client, Method};
use nsq_tools::{fatal, go_bool, go_duration, go_int, HostPool, StatusEvery};
use tokio::sync::Semaphore;

const TOOL: &str = "nsq_to_http";
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

#[derive(Parser, Debug)]
#[command(
    name = "nsq_to_http",
    about = "Consumes an NSQ topic and makes an HTTP request per message",
    disable_version_flag = true
)]
struct Args {
    /// nsq channel
    #[arg(long, default_value = "nsq_to_http")]
    channel: String,
    /// option to passthrough to the consumer's Config, `key,value` (may be given multiple times)
    #[arg(long = "consumer-opt", value_name = "KEY,VALUE")]
    consumer_opt: Vec<String>,
    /// the Content-Type used for POST requests
    #[arg(long = "content-type", default_value = DEFAULT_CONTENT_TYPE)]
    content_type: String,
    /// HTTP address to make a GET request to. '%s' will be printf replaced with data (may be given multiple times)
    #[arg(long, value_name = "URL")]
    get: Vec<String>,
    /// Custom header for HTTP requests, `key:value` (may be given multiple times)
    #[arg(long, value_name = "KEY:VALUE")]
    header: Vec<String>,
    /// timeout for HTTP connect
    #[arg(long = "http-client-connect-timeout", default_value = "2s", value_parser = go_duration)]
    http_client_connect_timeout: Duration,
    /// timeout for HTTP request
    #[arg(long = "http-client-request-timeout", default_value = "20s", value_parser = go_duration)]
    http_client_request_timeout: Duration,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd_http_address: Vec<String>,
    /// max number of messages to allow in flight
    #[arg(long = "max-in-flight", default_value = "200", value_parser = go_int)]
    max_in_flight: i64,
    /// the upstream request mode options: round-robin, hostpool (default), epsilon-greedy
    #[arg(long, default_value = "hostpool")]
    mode: String,
    /// number of concurrent publishers
    #[arg(short = 'n', long = "n", default_value = "100", value_parser = go_int)]
    n: i64,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR")]
    nsqd_tcp_address: Vec<String>,
    /// HTTP address to make a POST request to.  data will be in the body (may be given multiple times)
    #[arg(long, value_name = "URL")]
    post: Vec<String>,
    /// % of messages to publish (float b/w 0 -> 1)
    #[arg(long, default_value = "1")]
    sample: f64,
    /// the # of requests between logging status (per handler), 0 disables
    #[arg(long = "status-every", default_value = "250", value_parser = go_int)]
    status_every: i64,
    /// nsq topic
    #[arg(long, default_value = "", hide_default_value = true)]
    topic: String,
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

/// One upstream: for GET the URL template is split around `%s`.
#[derive(Debug)]
enum Target {
    Post(String),
    Get { raw: String },
}

struct Shared {
    targets: Vec<Target>,
    pool: HostPool,
    skip_dead: bool,
    headers: Vec<(String, String)>,
    post_headers: Vec<(String, String)>,
    client: Client,
    status: StatusEvery,
    sample: f64,
    permits: Semaphore,
}

async fn run(args: Args) -> i32 {
    if args.topic.is_empty() || args.channel.is_empty() {
        fatal(TOOL, "--topic and --channel are required");
    }
    if args.content_type != DEFAULT_CONTENT_TYPE {
        if args.post.is_empty() {
            fatal(TOOL, "--content-type only used with --post");
        }
        if args.content_type.is_empty() {
            fatal(TOOL, "--content-type requires a value when used");
        }
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
    if args.get.is_empty() && args.post.is_empty() {
        fatal(TOOL, "--get or --post required");
    }
    if !args.get.is_empty() && !args.post.is_empty() {
        fatal(TOOL, "use --get or --post not both");
    }
    if args.get.iter().any(|g| g.matches("%s").count() != 1) {
        fatal(TOOL, "invalid GET address - must be a printf string");
    }
    if let Err(e) = nsq_tools::parse_mode(&args.mode) {
        fatal(TOOL, e);
    }
    if !(0.0..=1.0).contains(&args.sample) {
        fatal(TOOL, "ERROR: --sample must be between 0.0 and 1.0");
    }
    if args.n <= 0 {
        fatal(TOOL, "-n must be positive");
    }
    if args.max_in_flight <= 0 {
        fatal(TOOL, "--max-in-flight must be positive");
    }
    let mut headers = Vec::new();
    for h in &args.header {
        match h.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => {
                headers.push((k.trim().to_owned(), v.trim().to_owned()))
            }
            _ => fatal(
                TOOL,
                format!("invalid header format {h:?} - must be key:value"),
            ),
        }
    }
    let mut targets = Vec::new();
    for url in &args.post {
        match nsq_http_client::parse_url(url) {
            Ok(_) => targets.push(Target::Post(url.clone())),
            Err(e) => fatal(TOOL, format!("invalid --post address: {e}")),
        }
    }
    for url in &args.get {
        // Validate the template with an empty body.
        if let Err(e) = nsq_http_client::parse_url(&url.replacen("%s", "", 1)) {
            fatal(TOOL, format!("invalid --get address: {e}"));
        }
        targets.push(Target::Get { raw: url.clone() });
    }
    let addresses: Vec<String> = args.post.iter().chain(&args.get).cloned().collect();
    let mut post_headers = headers.clone();
    post_headers.push(("Content-Type".into(), args.content_type.clone()));
    // The client sends `User-Agent: nsq_to_http/1.3.0 nsq-rs/..` unless --header sets one.
    let client = match nsq_tools::endpoint_client(
        TOOL,
        &args.tls,
        args.http_client_connect_timeout,
        args.http_client_request_timeout,
        args.n as usize,
    ) {
        Ok(c) => c,
        Err(e) => fatal(TOOL, format!("{e:#}")),
    };

    let mut config = Config::new();
    config.user_agent = nsq_tools::user_agent(TOOL);
    if let Err(e) = nsq_tools::apply_opts(&mut config, &args.consumer_opt, "consumer-opt") {
        fatal(TOOL, format!("{e:#}"));
    }
    config.max_in_flight = args.max_in_flight as u64;
    config.lookupd_tls_root_ca_file = args.tls.http_client_tls_root_ca_file.clone();

    let shared = Arc::new(Shared {
        targets,
        pool: HostPool::new(addresses),
        skip_dead: args.mode != "round-robin",
        headers,
        post_headers,
        client,
        status: StatusEvery::new(TOOL, args.status_every.max(0) as usize),
        sample: args.sample,
        permits: Semaphore::new(args.n as usize),
    });

    let mut consumer = match Consumer::new(args.topic.clone(), args.channel.clone(), config) {
        Ok(c) => c,
        Err(e) => fatal(TOOL, format!("failed to create consumer: {e}")),
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
    let stop = consumer.stop_handle();
    let mut tasks = tokio::task::JoinSet::new();
    let signal = nsq_tools::shutdown_signal(false);
    tokio::pin!(signal);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = &mut signal, if !stopping => {
                stopping = true;
                stop.stop();
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = consumer.next() => {
                let Some(msg) = next else { break };
                tasks.spawn(handle(shared.clone(), msg));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    0
}

fn sampled_out(sample: f64) -> bool {
    sample < 1.0 && (nsq_tools::random_suffix() as f64 / 999_999.0) > sample
}

async fn handle(shared: Arc<Shared>, msg: Message) {
    if sampled_out(shared.sample) {
        return msg.finish();
    }
    let _permit = shared.permits.acquire().await.expect("semaphore open");
    let start = Instant::now();
    let i = shared.pool.get(shared.skip_dead);
    let result = match &shared.targets[i] {
        Target::Post(url) => send(
            &shared,
            Method::POST,
            url,
            &shared.post_headers,
            Bytes::copy_from_slice(msg.body()),
        )
        .await
        .and_then(|s| {
            if (200..300).contains(&s) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("got status code {s}"))
            }
        }),
        Target::Get { raw } => {
            let url = raw.replacen("%s", &nsq_tools::query_escape(msg.body()), 1);
            send(&shared, Method::GET, &url, &shared.headers, Bytes::new())
                .await
                .and_then(|s| {
                    if s == 200 {
                        Ok(())
                    } else {
                        Err(anyhow::anyhow!("got status code {s}"))
                    }
                })
        }
    };
    shared.pool.mark(i, result.is_ok());
    match result {
        Ok(()) => {
            msg.finish();
            shared.status.record(start.elapsed());
        }
        Err(e) => {
            tracing::warn!("request to {} failed: {e:#}", shared.pool.hosts()[i]);
            msg.requeue(None);
        }
    }
}

/// One request through the shared (pooled) client; the status, or why there is none.
async fn send(
    shared: &Shared,
    method: Method,
    url: &str,
    headers: &[(String, String)],
    body: Bytes,
) -> anyhow::Result<u16> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Ok(shared
        .client
        .request(method, url, &headers, body)
        .await?
        .status)
}
