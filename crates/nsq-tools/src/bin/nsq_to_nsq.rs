//! `nsq_to_nsq`: consumes topics from nsqd/lookupd and republishes every message to
//! destination nsqds (NSQ 1.3's `apps/nsq_to_nsq`).
//!
//! Each message is published (`PUB`) to one destination chosen by `--mode`, and finished
//! only once that destination acknowledged it; a failed publish requeues it (default
//! delay, with backoff). Up to `--max-in-flight` publishes are outstanding per topic,
//! pipelined on one connection per destination.
//!
//! JSON filtering as in Go: with `--require-json-field`/`--whitelist-json-field` a body
//! that is not JSON is dropped (finished) with an error log; a message without the required
//! field is dropped (requeued with backoff when `--require-json-value` is set, as Go does);
//! a message whose field differs from `--require-json-value` (string compare for strings,
//! numeric compare when the flag is a number) is dropped; `--whitelist-json-field` rewrites
//! the body to an object of just those fields (keys sorted, as Go's `json.Marshal`).
//!
//! Differences from Go: `hostpool`/`epsilon-greedy` are round-robin that skips destinations
//! which failed recently (see [`nsq_tools::HostPool`]); destinations are connected at
//! startup, so an unreachable one is a fatal error; the status line goes to stderr.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser};
use futures::StreamExt;
use nsq_client::{Config, Consumer, Message, Producer};
use nsq_tools::{fatal, go_bool, go_int, HostPool, StatusEvery};

const TOOL: &str = "nsq_to_nsq";

#[derive(Parser, Debug)]
#[command(
    name = "nsq_to_nsq",
    about = "Copies messages of NSQ topics to other nsqd instances",
    disable_version_flag = true
)]
struct Args {
    /// nsq channel
    #[arg(long, default_value = "nsq_to_nsq")]
    channel: String,
    /// option to passthrough to the consumer's Config, `key,value` (may be given multiple times)
    #[arg(long = "consumer-opt", value_name = "KEY,VALUE")]
    consumer_opt: Vec<String>,
    /// destination nsqd TCP address (may be given multiple times)
    #[arg(long = "destination-nsqd-tcp-address", value_name = "ADDR")]
    destination_nsqd_tcp_address: Vec<String>,
    /// use this destination topic for all consumed topics (default is consumed topic name)
    #[arg(
        long = "destination-topic",
        default_value = "",
        hide_default_value = true
    )]
    destination_topic: String,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd_http_address: Vec<String>,
    /// max number of messages to allow in flight
    #[arg(long = "max-in-flight", default_value = "200", value_parser = go_int)]
    max_in_flight: i64,
    /// the upstream request mode options: round-robin, hostpool (default), epsilon-greedy
    #[arg(long, default_value = "hostpool")]
    mode: String,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR")]
    nsqd_tcp_address: Vec<String>,
    /// option to passthrough to the producers' Config, `key,value` (may be given multiple times)
    #[arg(long = "producer-opt", value_name = "KEY,VALUE")]
    producer_opt: Vec<String>,
    /// for JSON messages: only pass messages that contain this field
    #[arg(
        long = "require-json-field",
        default_value = "",
        hide_default_value = true
    )]
    require_json_field: String,
    /// for JSON messages: only pass messages in which the required field has this value
    #[arg(
        long = "require-json-value",
        default_value = "",
        hide_default_value = true
    )]
    require_json_value: String,
    /// the # of requests between logging status (per destination), 0 disables
    #[arg(long = "status-every", default_value = "250", value_parser = go_int)]
    status_every: i64,
    /// nsq topic (may be given multiple times)
    #[arg(long, value_name = "TOPIC")]
    topic: Vec<String>,
    /// print version string
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    version: bool,
    /// for JSON messages: pass this field (may be given multiple times)
    #[arg(long = "whitelist-json-field", value_name = "FIELD")]
    whitelist_json_field: Vec<String>,
    #[command(flatten)]
    tls: nsq_tools::HttpTlsArgs,
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

/// What to do with a message after the JSON filter.
#[derive(Debug, PartialEq)]
enum Verdict {
    Publish(Vec<u8>),
    /// Finish without publishing.
    Drop,
    /// Requeue (with backoff) without publishing.
    Backoff,
}

#[derive(Debug)]
struct Filter {
    require_field: String,
    require_value: String,
    require_number: Option<f64>,
    whitelist: Vec<String>,
}

impl Filter {
    fn active(&self) -> bool {
        !self.require_field.is_empty() || !self.whitelist.is_empty()
    }

    fn apply(&self, body: &[u8]) -> Verdict {
        if !self.active() {
            return Verdict::Publish(body.to_vec());
        }
        let json: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                eprintln!(
                    "{TOOL}: ERROR: Unable to decode json: {}",
                    String::from_utf8_lossy(body)
                );
                return Verdict::Drop;
            }
        };
        if !self.require_field.is_empty() {
            match json.get(&self.require_field) {
                None => {
                    if !self.require_value.is_empty() {
                        eprintln!("{TOOL}: ERROR: missing field to check required value");
                        return Verdict::Backoff;
                    }
                    return Verdict::Drop;
                }
                Some(v) if !self.require_value.is_empty() => {
                    let pass = match (v, self.require_number) {
                        (serde_json::Value::String(s), _) => *s == self.require_value,
                        (serde_json::Value::Number(n), Some(want)) => n.as_f64() == Some(want),
                        _ => false,
                    };
                    if !pass {
                        return Verdict::Drop;
                    }
                }
                Some(_) => {}
            }
        }
        if self.whitelist.is_empty() {
            return Verdict::Publish(body.to_vec());
        }
        let Some(obj) = json.as_object() else {
            eprintln!("{TOOL}: ERROR: filterMessage() failed: json is not an object");
            return Verdict::Backoff;
        };
        let mut out = std::collections::BTreeMap::new();
        for key in &self.whitelist {
            if let Some(v) = obj.get(key) {
                out.insert(key.clone(), v.clone());
            }
        }
        Verdict::Publish(serde_json::to_vec(&out).unwrap_or_default())
    }
}

struct Shared {
    producers: Vec<Producer>,
    pool: HostPool,
    skip_dead: bool,
    status: StatusEvery,
    filter: Filter,
}

async fn run(args: Args) -> i32 {
    if args.topic.is_empty() {
        fatal(TOOL, "--topic required");
    }
    if args.channel.is_empty() {
        fatal(TOOL, "--channel is required");
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
    if args.destination_nsqd_tcp_address.is_empty() {
        fatal(TOOL, "--destination-nsqd-tcp-address required");
    }
    if let Err(e) = nsq_tools::parse_mode(&args.mode) {
        fatal(TOOL, e);
    }
    if args.max_in_flight <= 0 {
        fatal(TOOL, "--max-in-flight must be positive");
    }
    if !args.destination_topic.is_empty()
        && !nsq_protocol::names::is_valid_topic_name(args.destination_topic.as_bytes())
    {
        fatal(TOOL, "--destination-topic is invalid");
    }

    let mut cconfig = Config::new();
    cconfig.user_agent = nsq_tools::user_agent(TOOL);
    if let Err(e) = nsq_tools::apply_opts(&mut cconfig, &args.consumer_opt, "consumer-opt") {
        fatal(TOOL, format!("{e:#}"));
    }
    cconfig.max_in_flight = args.max_in_flight as u64;
    cconfig.lookupd_tls_root_ca_file = args.tls.http_client_tls_root_ca_file.clone();
    let mut pconfig = Config::new();
    pconfig.user_agent = nsq_tools::user_agent(TOOL);
    if let Err(e) = nsq_tools::apply_opts(&mut pconfig, &args.producer_opt, "producer-opt") {
        fatal(TOOL, format!("{e:#}"));
    }

    let mut producers = Vec::new();
    for addr in &args.destination_nsqd_tcp_address {
        match Producer::connect(addr, pconfig.clone()).await {
            Ok(p) => producers.push(p),
            Err(e) => fatal(
                TOOL,
                format!("failed to connect to destination nsqd {addr}: {e}"),
            ),
        }
    }
    let shared = Arc::new(Shared {
        producers,
        pool: HostPool::new(args.destination_nsqd_tcp_address.clone()),
        skip_dead: args.mode != "round-robin",
        status: StatusEvery::new(TOOL, args.status_every.max(0) as usize),
        filter: Filter {
            require_field: args.require_json_field.clone(),
            require_value: args.require_json_value.clone(),
            require_number: args.require_json_value.parse::<f64>().ok(),
            whitelist: args.whitelist_json_field.clone(),
        },
    });

    let mut consumers = Vec::new();
    let mut stops = Vec::new();
    for topic in &args.topic {
        let consumer = match Consumer::new(topic.clone(), args.channel.clone(), cconfig.clone()) {
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
        let dest = if args.destination_topic.is_empty() {
            topic.clone()
        } else {
            args.destination_topic.clone()
        };
        consumers.push(consumer.map(move |m| (dest.clone(), m)).boxed());
    }

    let mut stream = futures::stream::select_all(consumers);
    let mut tasks = tokio::task::JoinSet::new();
    let signal = nsq_tools::shutdown_signal(true);
    tokio::pin!(signal);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = &mut signal, if !stopping => {
                // Stop consuming; outstanding publishes still finish their messages and the
                // stream ends once every connection is closed.
                stopping = true;
                for s in &stops {
                    s.stop();
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            next = stream.next() => {
                let Some((dest, msg)) = next else { break };
                let shared = shared.clone();
                tasks.spawn(handle(shared, dest, msg));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    for p in &shared.producers {
        p.stop().await;
    }
    0
}

async fn handle(shared: Arc<Shared>, dest: String, msg: Message) {
    let body = match shared.filter.apply(msg.body()) {
        Verdict::Publish(b) => b,
        Verdict::Drop => return msg.finish(),
        Verdict::Backoff => return msg.requeue(None),
    };
    let start = Instant::now();
    let i = shared.pool.get(shared.skip_dead);
    let producer = &shared.producers[i];
    let result = producer.publish(&dest, &body).await;
    shared.pool.mark(i, result.is_ok());
    match result {
        Ok(()) => msg.finish(),
        Err(e) => {
            tracing::warn!("publish to {} failed: {e}", producer.addr());
            msg.requeue(None);
        }
    }
    shared.status.record(start.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(field: &str, value: &str, whitelist: &[&str]) -> Filter {
        Filter {
            require_field: field.into(),
            require_value: value.into(),
            require_number: value.parse().ok(),
            whitelist: whitelist.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn json_filter_like_go() {
        let f = filter("", "", &[]);
        assert_eq!(f.apply(b"raw"), Verdict::Publish(b"raw".to_vec()));
        let f = filter("kind", "", &[]);
        assert_eq!(f.apply(b"not json"), Verdict::Drop);
        assert_eq!(f.apply(br#"{"x":1}"#), Verdict::Drop);
        assert_eq!(
            f.apply(br#"{"kind":1}"#),
            Verdict::Publish(br#"{"kind":1}"#.to_vec())
        );
        let f = filter("kind", "a", &[]);
        assert_eq!(f.apply(br#"{"x":1}"#), Verdict::Backoff);
        assert_eq!(f.apply(br#"{"kind":"b"}"#), Verdict::Drop);
        assert!(matches!(f.apply(br#"{"kind":"a"}"#), Verdict::Publish(_)));
        let f = filter("n", "5", &[]);
        assert!(matches!(f.apply(br#"{"n":5.0}"#), Verdict::Publish(_)));
        assert!(matches!(f.apply(br#"{"n":"5"}"#), Verdict::Publish(_)));
        assert_eq!(f.apply(br#"{"n":6}"#), Verdict::Drop);
        let f = filter("", "", &["b", "a", "zz"]);
        assert_eq!(
            f.apply(br#"{"c":3,"b":2,"a":1.5}"#),
            Verdict::Publish(br#"{"a":1.5,"b":2}"#.to_vec())
        );
    }
}
