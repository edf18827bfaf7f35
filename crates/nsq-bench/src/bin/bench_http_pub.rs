//! HTTP publishing: `POST /pub?topic=T` with one message per request, over `--concurrency`
//! keep-alive connections, for `--runfor`.
//!
//! Prints requests per second, the latency of each request (send to `OK`), and nsqd's CPU
//! time per message from `/proc/<pid>/stat` (`utime + stime`, all threads) over the run —
//! the figure that shows what nsqd spends per HTTP publish (routing, parsing, the topic
//! lookup, the fan-out), independent of how busy the machine's other core is.
//!
//! The client is `nsq_bench::raw_http`, one blocking thread per connection, not the
//! workspace's `nsq-http-client`: measured on this machine, the pooled async client caps four
//! connections at ~30k requests/s and adds ~40 µs per request, so msg/s and latency would be
//! the client's (the numbers are in `raw_http`'s documentation).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style};
use nsq_bench::http::query_escape;
use nsq_bench::procfs::{clock_ticks_per_sec, cpu_ticks};
use nsq_bench::raw_http::Conn;
use nsq_bench::report::{rate_line, Latencies};

/// HTTP /pub benchmark: throughput, latency and nsqd CPU per message.
#[derive(Parser, Debug)]
#[command(name = "bench_http_pub")]
struct Args {
    /// <addr>:<port> of nsqd's HTTP API
    #[arg(long, default_value = "127.0.0.1:4151")]
    nsqd_http_address: String,
    /// nsqd's process id (to read its CPU time from /proc/<pid>/stat); 0 to skip
    #[arg(long, default_value_t = 0)]
    pid: u32,
    /// topic to publish to
    #[arg(long, default_value = "http_bench")]
    topic: String,
    /// message body size in bytes
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// concurrent keep-alive connections
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// duration to run
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    runfor: Duration,
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    let path = format!("/pub?topic={}", query_escape(&args.topic));
    let body = vec![b'a'; args.size];
    // Create the topic first, so the run measures publishing, not one topic creation.
    Conn::new(&args.nsqd_http_address).expect_ok_post(&format!(
        "/topic/create?topic={}",
        query_escape(&args.topic)
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let ticks0 = (args.pid != 0).then(|| cpu_ticks(args.pid)).transpose()?;
    let t0 = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (addr, path, body, stop) = (
                args.nsqd_http_address.clone(),
                path.clone(),
                body.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
                let mut c = Conn::new(&addr);
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c.post(&path, &body)?;
                    if r.status != 200 {
                        bail!("POST {path}: HTTP {} {}", r.status, r.text().trim());
                    }
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                Ok(lat)
            })
        })
        .collect();
    std::thread::sleep(args.runfor);
    stop.store(true, Ordering::Relaxed);
    let mut samples = Vec::new();
    for w in workers {
        match w.join() {
            Ok(r) => samples.extend(r?),
            Err(_) => bail!("a publishing thread panicked"),
        }
    }
    let elapsed = t0.elapsed();
    let ticks1 = (args.pid != 0).then(|| cpu_ticks(args.pid)).transpose()?;
    let n = samples.len() as u64;
    println!("{}", rate_line("PUB", elapsed, n, args.size));
    println!(
        "requests: {n} over {} connections; latency {}",
        args.concurrency,
        Latencies::from_samples(&mut samples)
    );
    if let (Some(a), Some(b)) = (ticks0, ticks1) {
        let cpu_ns = (b - a) as f64 * 1e9 / clock_ticks_per_sec() as f64;
        println!(
            "nsqd CPU: {:.2} s, {:.2} µs per message",
            cpu_ns / 1e9,
            cpu_ns / n.max(1) as f64 / 1e3
        );
    }
    Ok(())
}
