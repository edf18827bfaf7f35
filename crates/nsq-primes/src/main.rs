//! `nsq-primes`: a distributed prime-checking job queue on NSQ (see README.md).
//!
//! * `produce` publishes the numbers `--start..=--end` to topic `numbers` (MPUB batches).
//! * `work` runs a pool of workers (default: one per physical core; run several processes,
//!   through nsqlookupd or the same nsqd, to scale out). Each worker consumes `numbers` on
//!   channel `workers`, checks a batch, publishes one verdict per number (`"<n>:<0|1>"`) to
//!   `results` and the primes to `prime`, and only then FINs the batch. A worker killed
//!   mid-batch leaves its numbers unfinished: nsqd redelivers them after `--msg-timeout`,
//!   so no number is lost; a verdict published twice is ignored by the tally.
//! * `tally` consumes `results`, records each number's verdict once, and when every number
//!   of the range is in, prints the prime count and the throughput (numbers checked per
//!   second, from the first verdict to the last).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use futures::{FutureExt, StreamExt};
use nsq_client::{Config, Consumer, Message, Producer};
use nsq_primes::{parse_number, physical_cores, Recorded, Tally, Verdict};

#[derive(Parser, Debug)]
#[command(
    name = "nsq-primes",
    version,
    about = "Distributed prime checking on NSQ"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Publish the numbers of a range to the `numbers` topic.
    Produce(ProduceArgs),
    /// Check numbers for primality; publish verdicts to `results` and primes to `prime`.
    Work(WorkArgs),
    /// Count the verdicts of a range, each number once; print primes and throughput.
    Tally(TallyArgs),
}

#[derive(Args, Debug, Clone)]
struct Source {
    /// nsqd TCP address to consume from (may be given multiple times)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR")]
    nsqd_tcp_address: Vec<String>,
    /// nsqlookupd HTTP address to discover nsqds from (may be given multiple times)
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd_http_address: Vec<String>,
    /// option for the consumer's Config, `key,value` (may be given multiple times)
    #[arg(long = "consumer-opt", value_name = "KEY,VALUE")]
    consumer_opt: Vec<String>,
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// nsqd TCP address (may be given multiple times; batches are spread round-robin)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR", required = true)]
    nsqd_tcp_address: Vec<String>,
    #[arg(long, default_value = "numbers")]
    topic: String,
    /// first number
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// last number (inclusive)
    #[arg(long, default_value_t = 1_000_000)]
    end: u64,
    /// numbers per MPUB
    #[arg(long, default_value_t = 1000)]
    batch: usize,
}

#[derive(Args, Debug)]
struct WorkArgs {
    #[command(flatten)]
    source: Source,
    /// nsqd TCP address to publish verdicts and primes to (default: the first
    /// --nsqd-tcp-address; required with --lookupd-http-address)
    #[arg(long = "publish-address", value_name = "ADDR")]
    publish_address: Option<String>,
    #[arg(long, default_value = "numbers")]
    topic: String,
    #[arg(long, default_value = "workers")]
    channel: String,
    #[arg(long = "results-topic", default_value = "results")]
    results_topic: String,
    #[arg(long = "prime-topic", default_value = "prime")]
    prime_topic: String,
    /// workers in this process (default: one per physical core)
    #[arg(long)]
    workers: Option<usize>,
    /// numbers checked per batch (one MPUB of verdicts per batch)
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// messages in flight per worker (default: 2 × --batch)
    #[arg(long = "max-in-flight")]
    max_in_flight: Option<u64>,
}

#[derive(Args, Debug)]
struct TallyArgs {
    #[command(flatten)]
    source: Source,
    #[arg(long, default_value = "results")]
    topic: String,
    #[arg(long, default_value = "tally")]
    channel: String,
    /// first number of the range
    #[arg(long, default_value_t = 1)]
    start: u64,
    /// last number of the range (inclusive)
    #[arg(long, default_value_t = 1_000_000)]
    end: u64,
    /// expected prime count: exit 1 if the tally differs (π(10^5) = 9592, π(10^6) = 78498)
    #[arg(long)]
    expect: Option<u64>,
    /// progress line on stderr this often (0 = never)
    #[arg(long = "status-every", default_value = "1s", value_parser = parse_dur)]
    status_every: Duration,
    #[arg(long = "max-in-flight", default_value_t = 1000)]
    max_in_flight: u64,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    nsq_cli::parse_go_duration(s).map_err(|e| e.to_string())
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NSQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let threads = match &cli.cmd {
        Cmd::Work(w) => w.workers.unwrap_or_else(physical_cores).max(1),
        _ => 2,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.cmd {
            Cmd::Produce(a) => produce(a).await,
            Cmd::Work(a) => work(a).await,
            Cmd::Tally(a) => tally(a).await,
        }
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = result {
        eprintln!("nsq-primes: {e:#}");
        std::process::exit(1);
    }
}

async fn produce(a: ProduceArgs) -> anyhow::Result<()> {
    if a.start > a.end || a.batch == 0 {
        bail!("need --start <= --end and --batch > 0");
    }
    let mut producers = Vec::new();
    for addr in &a.nsqd_tcp_address {
        producers.push(
            Producer::connect(addr, Config::new())
                .await
                .with_context(|| format!("failed to connect to nsqd {addr}"))?,
        );
    }
    let started = Instant::now();
    let batches = (a.start..=a.end)
        .step_by(a.batch)
        .map(|lo| (lo, lo.saturating_add(a.batch as u64 - 1).min(a.end)));
    let topic = &a.topic;
    let producers = &producers;
    let mut results = futures::stream::iter(batches.enumerate())
        .map(|(i, (lo, hi))| async move {
            let p = &producers[i % producers.len()];
            let bodies: Vec<String> = (lo..=hi).map(|n| n.to_string()).collect();
            p.multi_publish(topic, bodies)
                .await
                .with_context(|| format!("MPUB {lo}..={hi} to {}", p.addr()))
        })
        .buffer_unordered(8);
    while let Some(r) = results.next().await {
        r?;
    }
    for p in producers {
        p.stop().await;
    }
    let n = a.end - a.start + 1;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produce: published {n} numbers ({}..={}) to topic {topic} in {secs:.2}s ({:.0}/s)",
        a.start,
        a.end,
        n as f64 / secs
    );
    Ok(())
}

fn consumer_config(source: &Source, max_in_flight: u64) -> anyhow::Result<Config> {
    let mut config = Config::new();
    config.user_agent = format!("nsq-primes/{}", env!("CARGO_PKG_VERSION"));
    for opt in &source.consumer_opt {
        let (k, v) = opt.split_once(',').unwrap_or((opt.as_str(), "true"));
        config
            .set(k, v)
            .with_context(|| format!("--consumer-opt {opt:?}"))?;
    }
    config.max_in_flight = max_in_flight;
    Ok(config)
}

async fn connect(source: &Source, consumer: &Consumer) -> anyhow::Result<()> {
    if source.nsqd_tcp_address.is_empty() && source.lookupd_http_address.is_empty() {
        bail!("--nsqd-tcp-address or --lookupd-http-address required");
    }
    if !source.lookupd_http_address.is_empty() {
        for addr in &source.lookupd_http_address {
            consumer
                .connect_to_lookupd(addr)
                .await
                .with_context(|| format!("bad --lookupd-http-address {addr}"))?;
        }
    } else {
        for addr in &source.nsqd_tcp_address {
            consumer
                .connect_to_nsqd(addr)
                .await
                .with_context(|| format!("failed to connect to nsqd {addr}"))?;
        }
    }
    Ok(())
}

async fn status_tick(s: &mut Option<tokio::time::Interval>) {
    match s {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

#[derive(Default)]
struct WorkStats {
    checked: AtomicU64,
    primes: AtomicU64,
}

async fn work(a: WorkArgs) -> anyhow::Result<()> {
    let workers = a.workers.unwrap_or_else(physical_cores).max(1);
    if a.batch == 0 {
        bail!("--batch must be > 0");
    }
    let publish_addr = match (&a.publish_address, a.source.nsqd_tcp_address.first()) {
        (Some(p), _) => p.clone(),
        (None, Some(first)) => first.clone(),
        (None, None) => bail!("--publish-address is required with --lookupd-http-address"),
    };
    let max_in_flight = a.max_in_flight.unwrap_or(2 * a.batch as u64).max(1);
    let stats = Arc::new(WorkStats::default());
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let consumer = Consumer::new(
            a.topic.clone(),
            a.channel.clone(),
            consumer_config(&a.source, max_in_flight)?,
        )?;
        connect(&a.source, &consumer).await?;
        let producer = Producer::connect(&publish_addr, Config::new())
            .await
            .with_context(|| format!("failed to connect to nsqd {publish_addr}"))?;
        stops.push(consumer.stop_handle());
        let w = Worker {
            producer,
            batch: a.batch,
            results_topic: a.results_topic.clone(),
            prime_topic: a.prime_topic.clone(),
            stats: stats.clone(),
        };
        tasks.push(tokio::spawn(w.run(consumer)));
    }
    eprintln!(
        "work: {workers} worker(s) consuming {}/{} (max-in-flight {max_in_flight} each), publishing to {publish_addr}",
        a.topic, a.channel
    );
    let started = Instant::now();
    shutdown_signal().await;
    eprintln!("work: stopping (finishing the batches in progress)");
    for s in &stops {
        s.stop();
    }
    for t in tasks {
        let _ = t.await;
    }
    eprintln!(
        "work: checked {} numbers ({} primes) in {:.2}s",
        stats.checked.load(Ordering::Relaxed),
        stats.primes.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Worker {
    producer: Producer,
    batch: usize,
    results_topic: String,
    prime_topic: String,
    stats: Arc<WorkStats>,
}

impl Worker {
    async fn run(self, mut consumer: Consumer) {
        let mut batch: Vec<Message> = Vec::with_capacity(self.batch);
        while let Some(first) = consumer.next().await {
            batch.push(first);
            // Take whatever else has already arrived, up to a batch.
            while batch.len() < self.batch {
                match consumer.next().now_or_never() {
                    Some(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
            self.process(&mut batch).await;
        }
        self.producer.stop().await;
    }

    async fn process(&self, batch: &mut Vec<Message>) {
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut primes = Vec::new();
        let mut checked = Vec::with_capacity(batch.len());
        for m in batch.drain(..) {
            match parse_number(m.body()) {
                Some(n) => {
                    let v = Verdict::check(n);
                    verdicts.push(v.encode());
                    if v.prime {
                        primes.push(n.to_string());
                    }
                    checked.push(m);
                }
                None => {
                    tracing::warn!(body = ?m.body(), "not a number: dropped");
                    m.finish();
                }
            }
        }
        if checked.is_empty() {
            return;
        }
        // Publish first, FIN after: a crash in between redelivers (the tally dedupes).
        let n_primes = primes.len() as u64;
        let published = async {
            self.producer
                .multi_publish(&self.results_topic, verdicts)
                .await?;
            if !primes.is_empty() {
                self.producer
                    .multi_publish(&self.prime_topic, primes)
                    .await?;
            }
            Ok::<_, nsq_client::Error>(())
        }
        .await;
        match published {
            Ok(()) => {
                self.stats
                    .checked
                    .fetch_add(checked.len() as u64, Ordering::Relaxed);
                self.stats.primes.fetch_add(n_primes, Ordering::Relaxed);
                for m in checked {
                    m.finish();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing verdicts failed: requeueing the batch");
                for m in checked {
                    m.requeue(None);
                }
            }
        }
    }
}

async fn tally(a: TallyArgs) -> anyhow::Result<()> {
    if a.start > a.end {
        bail!("need --start <= --end");
    }
    let mut t = Tally::new(a.start, a.end);
    let mut consumer = Consumer::new(
        a.topic.clone(),
        a.channel.clone(),
        consumer_config(&a.source, a.max_in_flight)?,
    )?;
    connect(&a.source, &consumer).await?;
    let stop = consumer.stop_handle();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut status = (!a.status_every.is_zero()).then(|| {
        let mut i = tokio::time::interval(a.status_every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        i
    });
    let mut interrupted = false;
    let mut bad = 0u64;
    while !t.is_complete() {
        tokio::select! {
            _ = &mut signal => { interrupted = true; break; }
            _ = status_tick(&mut status) => {
                let rate = first.map_or(0.0, |f| t.checked() as f64 / f.elapsed().as_secs_f64().max(1e-9));
                eprintln!(
                    "tally: {}/{} checked, {} primes, {} duplicates, {rate:.0} numbers/s",
                    t.checked(), t.total(), t.primes(), t.duplicates()
                );
            }
            m = consumer.next() => {
                let Some(m) = m else { break };
                match Verdict::decode(m.body()).map(|v| t.record(v)) {
                    Some(Recorded::New) => {
                        last = Instant::now();
                        first.get_or_insert(last);
                    }
                    Some(Recorded::Duplicate) => {}
                    Some(Recorded::OutOfRange) | None => bad += 1,
                }
                m.finish();
            }
        }
    }
    stop.stop();
    let _ = tokio::time::timeout(Duration::from_secs(5), stop.stopped()).await;
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    let rate = if secs > 0.0 {
        t.checked() as f64 / secs
    } else {
        0.0
    };
    println!(
        "range {}..={}: {} of {} numbers checked, {} primes, {} duplicate verdicts ignored, {} unusable messages",
        a.start,
        a.end,
        t.checked(),
        t.total(),
        t.primes(),
        t.duplicates(),
        bad
    );
    println!("throughput: {rate:.0} numbers/s ({secs:.2}s from the first verdict to the last)");
    println!(
        "RESULT checked={} primes={} duplicates={} seconds={secs:.3} rate={rate:.0}",
        t.checked(),
        t.primes(),
        t.duplicates()
    );
    if t.wrong_verdicts() > 0 {
        bail!(
            "{} verdicts disagree with the tally's own check",
            t.wrong_verdicts()
        );
    }
    if interrupted || !t.is_complete() {
        bail!("interrupted before every number was checked");
    }
    if let Some(expect) = a.expect {
        if t.primes() != expect {
            bail!("expected {expect} primes, counted {}", t.primes());
        }
        println!("OK: {} primes as expected", t.primes());
    }
    Ok(())
}
