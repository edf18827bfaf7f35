//! The "many idle topics" bar.
//!
//! 1. Creates `--num` topics, each with one channel, over HTTP (`POST /topic/create`, then
//!    `POST /channel/create`), spread over `--concurrency` keep-alive connections; prints the
//!    total time and the rate.
//! 2. Waits one second, then sleeps `--idle` and measures nsqd's CPU time over that window
//!    from `/proc/<pid>/stat` (`utime + stime`, all threads), printed as a percentage of one
//!    core, and its RSS. Idle topics should cost (almost) nothing: Go nsqd spends CPU here
//!    on per-topic/per-channel goroutines and timers.
//! 3. Times `GET /stats?format=json` five times and prints min/median/max.
//! 4. Times Prometheus `GET /metrics` (nsq-rs; text format 0.0.4) five times: min/median/
//!    max, body size and sample count (skipped with a note when nsqd does not serve it, e.g.
//!    Go nsqd), then five times as Prometheus asks (OpenMetrics, `Accept-Encoding: gzip`):
//!    the bytes on the wire and the time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style};
use nsq_bench::http::{query_escape, BlockingApi, Method};
use nsq_bench::procfs::{clock_ticks_per_sec, cpu_ticks, rss_bytes};
use nsq_bench::raw_http::Conn;
use nsq_bench::report::human_bytes;

/// Idle-topics benchmark: creation time, idle CPU, RSS and /stats latency.
#[derive(Parser, Debug)]
#[command(name = "bench_topics")]
struct Args {
    /// <addr>:<port> of nsqd's HTTP API
    #[arg(long, default_value = "127.0.0.1:4151")]
    nsqd_http_address: String,
    /// nsqd's process id (to read /proc/<pid>/stat and /proc/<pid>/status)
    #[arg(long)]
    pid: u32,
    /// number of topics (each gets one channel)
    #[arg(long, default_value_t = 10_000)]
    num: usize,
    /// length of the idle window over which CPU use is measured
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    idle: Duration,
    /// concurrent keep-alive HTTP connections used for creation
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// topic name prefix (topics are <prefix><i>)
    #[arg(long, default_value = "idle_topic_")]
    prefix: String,
    /// channel created on every topic
    #[arg(long, default_value = "ch")]
    channel: String,
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    let conc = args.concurrency.max(1);
    let rss0 = rss_bytes(args.pid)?;

    // 1. Creation: one thread and one kept-alive connection per `--concurrency`, through
    // `raw_http` (nsq-http-client would cap the rate it reports; see `raw_http`).
    let shared = Arc::new((
        args.nsqd_http_address.clone(),
        args.prefix.clone(),
        args.channel.clone(),
    ));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for w in 0..conc {
        let shared = Arc::clone(&shared);
        let num = args.num;
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let (addr, prefix, channel) = &*shared;
            let mut c = Conn::new(addr);
            for i in (w..num).step_by(conc) {
                let topic = query_escape(&format!("{prefix}{i}"));
                c.expect_ok_post(&format!("/topic/create?topic={topic}"))?;
                c.expect_ok_post(&format!(
                    "/channel/create?topic={topic}&channel={}",
                    query_escape(channel)
                ))?;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join().expect("creator panicked")?;
    }
    let created = t0.elapsed();
    println!(
        "[bench_topics] created {} topics + {} channels in {:.3}s ({:.0} topic+channel pairs/s, {} connections)",
        args.num,
        args.num,
        created.as_secs_f64(),
        args.num as f64 / created.as_secs_f64(),
        conc
    );

    // 2. Idle window.
    std::thread::sleep(Duration::from_secs(1));
    let hz = clock_ticks_per_sec();
    let c0 = cpu_ticks(args.pid)?;
    let w0 = Instant::now();
    std::thread::sleep(args.idle);
    let c1 = cpu_ticks(args.pid)?;
    let wall = w0.elapsed().as_secs_f64();
    let cpu_secs = (c1 - c0) as f64 / hz as f64;
    let rss1 = rss_bytes(args.pid)?;
    println!(
        "[bench_topics] idle {:.1}s with {} topics: nsqd CPU {:.3}s = {:.2}% of one core (tick {} ms)",
        wall,
        args.num,
        cpu_secs,
        cpu_secs / wall * 100.0,
        1000 / hz.max(1)
    );
    println!(
        "[bench_topics] RSS {} before creation, {} after ({:.0} B per topic+channel)",
        human_bytes(rss0 as f64),
        human_bytes(rss1 as f64),
        (rss1 as f64 - rss0 as f64) / args.num.max(1) as f64
    );

    // 3. /stats latency, over one kept-alive connection of nsq-http-client (faster than
    // the old hand-written chunked decoding; see `raw_http`).
    let api = BlockingApi::new(&args.nsqd_http_address)?;
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let r = api.expect_ok(Method::GET, "/stats?format=json")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = r.body.len();
        serde_json::from_slice::<serde_json::Value>(&r.body)?;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "[bench_topics] GET /stats?format=json x5 ({}): min {:.1} ms, median {:.1} ms, max {:.1} ms",
        human_bytes(size as f64),
        times[0],
        times[2],
        times[4]
    );

    // 4. Prometheus /metrics (the scrape: one /stats snapshot written as the text format).
    if let Err(e) = api.expect_ok(Method::GET, "/metrics") {
        println!("[bench_topics] GET /metrics not measured: {e}");
        return Ok(());
    }
    let mut times = Vec::new();
    let (mut size, mut samples) = (0, 0);
    for _ in 0..5 {
        let t = Instant::now();
        let r = api.expect_ok(Method::GET, "/metrics")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        size = r.body.len();
        samples = r
            .body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
            .count();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "[bench_topics] GET /metrics x5 ({}, {} samples): min {:.1} ms, median {:.1} ms, max {:.1} ms",
        human_bytes(size as f64),
        samples,
        times[0],
        times[2],
        times[4]
    );

    // 4b. The same as Prometheus asks for it: OpenMetrics, gzip (one connection per scrape).
    let mut times = Vec::new();
    let mut wire = 0;
    for _ in 0..5 {
        let t = Instant::now();
        wire = scrape_gzip(&args.nsqd_http_address)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "[bench_topics] GET /metrics as Prometheus asks (OpenMetrics, gzip) x5 ({} on the wire): min {:.1} ms, median {:.1} ms, max {:.1} ms",
        human_bytes(wire as f64),
        times[0],
        times[2],
        times[4]
    );
    Ok(())
}

/// One `GET /metrics` with Prometheus's `Accept` and `Accept-Encoding: gzip` on a fresh
/// connection; returns the bytes received after the head (the gzipped body).
fn scrape_gzip(addr: &str) -> anyhow::Result<usize> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\
         Accept-Encoding: gzip\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP head in the /metrics answer"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    anyhow::ensure!(
        head.starts_with("http/1.1 200") && head.contains("content-encoding: gzip"),
        "unexpected /metrics answer: {head}"
    );
    Ok(raw.len() - head_end - 4)
}
