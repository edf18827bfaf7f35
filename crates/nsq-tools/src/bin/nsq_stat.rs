//! `nsq_stat`: polls `/stats` of every nsqd that has `--topic` (given with
//! `--nsqd-http-address`, or found through `--lookupd-http-address`) and prints the
//! channel's aggregated numbers as NSQ 1.3's `apps/nsq_stat` does: a header every 25 rows,
//! then one row per `--interval` with ingress/egress rates, depth and counters.
//!
//! `--count N` prints N rows and exits 0 (the first poll only sets the baseline for the
//! rates, as in Go). Errors (unreachable address, unknown topic/channel) are fatal.
//!
//! `/stats` is read into the shared [`nsq_http::api::nsqd`] types (leniently: fields another
//! nsqd version lacks read as 0).
//!
//! HTTP goes through `nsq_http_client` (one kept-alive connection per daemon across polls).
//! As Go, addresses are `host:port` and `http://` is refused ("should not contain scheme");
//! nsq-rs also accepts `https://host:port`, and follows an nsqd with `--tls-required` from its
//! HTTP port to its HTTPS port as Go's `http_api` does. HTTPS trusts the system roots, or the
//! PEM file of `--http-client-tls-root-ca-file` (an nsq-rs option).

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{ArgAction, Parser};
use nsq_http::api::nsqd::{ChannelStats, Stats};
use nsq_http_client::Client;
use nsq_tools::{fatal, go_bool, go_duration};

const TOOL: &str = "nsq_stat";

#[derive(Parser, Debug)]
#[command(
    name = "nsq_stat",
    about = "Polls /stats for a topic/channel and prints aggregate stats periodically",
    disable_version_flag = true
)]
struct Args {
    /// NSQ channel
    #[arg(long, default_value = "", hide_default_value = true)]
    channel: String,
    /// number of reports
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32))]
    count: Option<i32>,
    /// timeout for HTTP connect
    #[arg(long = "http-client-connect-timeout", default_value = "2s", value_parser = go_duration)]
    http_client_connect_timeout: Duration,
    /// timeout for HTTP request
    #[arg(long = "http-client-request-timeout", default_value = "5s", value_parser = go_duration)]
    http_client_request_timeout: Duration,
    /// duration of time between polling/printing output
    #[arg(long, default_value = "2s", value_parser = go_duration)]
    interval: Duration,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd_http_address: Vec<String>,
    /// nsqd HTTP address (may be given multiple times)
    #[arg(long = "nsqd-http-address", value_name = "ADDR")]
    nsqd_http_address: Vec<String>,
    /// NSQ topic
    #[arg(long, default_value = "", hide_default_value = true)]
    topic: String,
    #[command(flatten)]
    tls: nsq_tools::HttpTlsArgs,
    /// print version
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
    validate(&args);
    nsq_tools::init_logging();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let client = match nsq_tools::http_client(
            TOOL,
            &args.tls,
            args.http_client_connect_timeout,
            args.http_client_request_timeout,
        ) {
            Ok(c) => c,
            Err(e) => fatal(TOOL, format!("ERROR: {e:#}")),
        };
        tokio::select! {
            r = stat_loop(&args, &client) => match r {
                Ok(()) => {}
                Err(e) => fatal(TOOL, format!("ERROR: {e:#}")),
            },
            _ = nsq_tools::shutdown_signal(true) => {}
        }
    });
}

fn validate(args: &Args) {
    if args.topic.is_empty() || args.channel.is_empty() {
        fatal(TOOL, "--topic and --channel are required");
    }
    if args.interval.is_zero() {
        fatal(TOOL, "--interval should be positive");
    }
    if args.http_client_connect_timeout.is_zero() {
        fatal(TOOL, "--http-client-connect-timeout should be positive");
    }
    if args.http_client_request_timeout.is_zero() {
        fatal(TOOL, "--http-client-request-timeout should be positive");
    }
    if matches!(args.count, Some(c) if c <= 0) {
        fatal(TOOL, "--count should be positive");
    }
    if args.nsqd_http_address.is_empty() && args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "--nsqd-http-address or --lookupd-http-address required",
        );
    }
    if !args.nsqd_http_address.is_empty() && !args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "use --nsqd-http-address or --lookupd-http-address not both",
        );
    }
    for (flag, addrs) in [
        ("nsqd-http-address", &args.nsqd_http_address),
        ("lookupd-http-address", &args.lookupd_http_address),
    ] {
        if addrs
            .iter()
            .any(|a| a.starts_with("http") && !a.starts_with("https://"))
        {
            fatal(
                TOOL,
                format!("--{flag} error - address should not contain scheme"),
            );
        }
    }
}

/// A channel's numbers summed over every nsqd (Go's `clusterinfo.ChannelStats`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct ChannelTotals {
    depth: i64,
    memory_depth: i64,
    backend_depth: i64,
    in_flight: i64,
    deferred: i64,
    requeued: i64,
    timed_out: i64,
    messages: i64,
    clients: i64,
    /// nsq-rs delivery policies (counters absent from Go nsqd's /stats).
    expired: i64,
    dropped: i64,
    dead_lettered: i64,
    /// Some node's channel has an nsq-rs policy (`config` in its /stats).
    has_policy: bool,
}

impl ChannelTotals {
    fn add(&mut self, c: &ChannelStats) {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let depth = n(c.depth);
        let backend = n(c.backend_depth);
        self.depth += depth;
        self.backend_depth += backend;
        self.memory_depth += depth - backend;
        self.in_flight += n(c.in_flight_count);
        self.deferred += n(c.deferred_count);
        self.requeued += n(c.requeue_count);
        self.timed_out += n(c.timeout_count);
        self.messages += n(c.message_count);
        self.expired += n(c.expired_count);
        self.dropped += n(c.dropped_count);
        self.dead_lettered += n(c.dead_lettered_count);
        self.has_policy |=
            c.config.is_some() || self.expired + self.dropped + self.dead_lettered > 0;
        // An nsqd that does not send `client_count` (read as 0) may still list its clients.
        self.clients += match c.client_count {
            0 => c.clients.as_ref().map_or(0, |a| a.len() as i64),
            v => n(v),
        };
    }
}

/// nsq-rs: with a delivery policy on the channel, a fourth group of columns (expired,
/// dropped, dead-lettered, as totals); Go's table is unchanged otherwise.
fn header(policies: bool) -> String {
    let mut h = go_header();
    if policies {
        let mut lines = h.lines().map(str::to_owned).collect::<Vec<_>>();
        lines[0].push_str("+-------policies--------");
        lines[1].push_str(&format!(" | {:>7} {:>6} {:>6}", "exp", "drop", "dead"));
        h = lines.join("\n");
    }
    h
}

fn go_header() -> String {
    format!(
        "{}+{}+{}\n{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
        "------rate------",
        "----------------depth----------------",
        "--------------metadata---------------",
        "ingress",
        "egress",
        "total",
        "mem",
        "disk",
        "inflt",
        "def",
        "req",
        "t-o",
        "msgs",
        "clients"
    )
}

fn row(c: &ChannelTotals, o: &ChannelTotals, interval: Duration, policies: bool) -> String {
    let mut r = go_row(c, o, interval);
    if policies {
        r.push_str(&format!(
            " | {:>7} {:>6} {:>6}",
            c.expired, c.dropped, c.dead_lettered
        ));
    }
    r
}

fn go_row(c: &ChannelTotals, o: &ChannelTotals, interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    let ingress = ((c.messages - o.messages) as f64 / secs) as i64;
    let egress = ((c.messages - o.messages - (c.depth - o.depth)) as f64 / secs) as i64;
    format!(
        "{:>7} {:>7} | {:>7} {:>7} {:>7} {:>5} {:>5} | {:>7} {:>7} {:>12} {:>7}",
        ingress,
        egress,
        c.depth,
        c.memory_depth,
        c.backend_depth,
        c.in_flight,
        c.deferred,
        c.requeued,
        c.timed_out,
        c.messages,
        c.clients
    )
}

async fn stat_loop(args: &Args, client: &Client) -> anyhow::Result<()> {
    let mut prev: Option<ChannelTotals> = None;
    let mut i: i64 = 0;
    // Once a policy is seen the columns stay, so rows line up under the header.
    let mut policies = false;
    loop {
        if let Some(count) = args.count {
            if i > i64::from(count) {
                return Ok(());
            }
        }
        let producers = if args.lookupd_http_address.is_empty() {
            nsqd_topic_producers(args, client).await
        } else {
            lookupd_topic_producers(args, client).await
        }
        .context("failed to get topic producers")?;
        let c = channel_totals(args, client, &producers)
            .await
            .context("failed to get nsqd stats")?;
        let newly = c.has_policy && !policies;
        policies |= c.has_policy;
        if i % 25 == 0 || newly {
            println!("{}", header(policies));
        }
        if let Some(o) = prev {
            println!("{}", row(&c, &o, args.interval, policies));
        }
        prev = Some(c);
        i += 1;
        if args.count.is_some_and(|count| i > i64::from(count)) {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

async fn get_stats(client: &Client, addr: &str, path: &str) -> anyhow::Result<Stats> {
    let (status, body) = nsq_tools::http_get(client, addr, path).await?;
    let url = nsq_http_client::endpoint(addr, path);
    if status != 200 {
        bail!(
            "GET {url}: status {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    // Pre-1.0 nsqd wrapped answers in {"status_code", "data"}: from_body accepts both.
    nsq_http::api::from_body(&body).with_context(|| format!("GET {url}"))
}

fn stats_path(topic: &str, channel: Option<&str>) -> String {
    let mut p = format!(
        "/stats?format=json&topic={}&include_clients=false",
        urlencode(topic)
    );
    if let Some(c) = channel {
        p.push_str("&channel=");
        p.push_str(&urlencode(c));
    }
    p
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn topics(stats: &Stats) -> &[nsq_http::api::nsqd::TopicStats] {
    stats.topics.as_deref().unwrap_or_default()
}

/// The nsqd HTTP addresses (of those given) that have the topic.
async fn nsqd_topic_producers(args: &Args, client: &Client) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for addr in &args.nsqd_http_address {
        let stats = get_stats(client, addr, &stats_path(&args.topic, None)).await?;
        if topics(&stats).iter().any(|t| t.topic_name == args.topic) {
            out.push(addr.clone());
        }
    }
    Ok(out)
}

/// The HTTP addresses of the nsqds every lookupd reports for the topic.
async fn lookupd_topic_producers(args: &Args, client: &Client) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    let path = format!("/lookup?topic={}", urlencode(&args.topic));
    for addr in &args.lookupd_http_address {
        let (status, body) = nsq_tools::http_get(client, addr, &path).await?;
        let url = nsq_http_client::endpoint(addr, &path);
        if status == 404 {
            continue; // lookupd does not know the topic
        }
        if status != 200 {
            bail!("GET {url}: status {status}");
        }
        let producers =
            nsq_client::parse_lookup_response(&body).map_err(|e| anyhow!("GET {url}: {e}"))?;
        for p in producers {
            let a = format!("{}:{}", p.broadcast_address, p.http_port);
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok(out)
}

async fn channel_totals(
    args: &Args,
    client: &Client,
    producers: &[String],
) -> anyhow::Result<ChannelTotals> {
    let mut totals = ChannelTotals::default();
    let mut found = false;
    for addr in producers {
        let stats = get_stats(client, addr, &stats_path(&args.topic, Some(&args.channel))).await?;
        for t in topics(&stats).iter().filter(|t| t.topic_name == args.topic) {
            for c in &t.channels {
                if c.channel_name == args.channel {
                    totals.add(c);
                    found = true;
                }
            }
        }
    }
    if !found {
        bail!(
            "failed to find channel({}) in stats metadata for topic({})",
            args.channel,
            args.topic
        );
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn table_format_matches_go() {
        let h = header(false);
        let mut lines = h.lines();
        assert_eq!(
            lines.next().unwrap(),
            "------rate------+----------------depth----------------+--------------metadata---------------"
        );
        assert_eq!(
            lines.next().unwrap(),
            "ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients"
        );
        let o = ChannelTotals::default();
        let c = ChannelTotals {
            depth: 10,
            memory_depth: 10,
            messages: 30,
            clients: 1,
            in_flight: 2,
            ..Default::default()
        };
        assert_eq!(
            row(&c, &o, Duration::from_secs(2), false),
            "     15      10 |      10      10       0     2     0 |       0       0           30       1"
        );
    }

    #[test]
    fn policy_columns_only_with_a_policy() {
        let h = header(true);
        let lines: Vec<&str> = h.lines().collect();
        assert!(lines[0].ends_with("+-------policies--------"), "{h}");
        assert!(lines[1].ends_with(" |     exp   drop   dead"), "{h}");
        let c = ChannelTotals {
            expired: 7,
            dropped: 4,
            dead_lettered: 2,
            has_policy: true,
            ..Default::default()
        };
        let r = row(&c, &ChannelTotals::default(), Duration::from_secs(1), true);
        assert!(r.ends_with(" |       7      4      2"), "{r}");
        // The group is as wide as its header.
        assert_eq!(r.len(), lines[1].len(), "{r}\n{}", lines[1]);
        let channel = |v: Value| serde_json::from_value::<ChannelStats>(v).unwrap();
        let mut t = ChannelTotals::default();
        t.add(&channel(serde_json::json!({"config": {"ttl": "1h0m0s"}})));
        assert!(t.has_policy);
        let mut plain = ChannelTotals::default();
        plain.add(&channel(serde_json::json!({"depth": 1, "config": null})));
        assert!(!plain.has_policy);
        assert_eq!(plain.depth, 1);
    }
}
