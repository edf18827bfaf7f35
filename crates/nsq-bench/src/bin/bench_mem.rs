//! nsqd's resident memory per queued message.
//!
//! Steps: create `--topic` and `--channels` channels (`ch0`, `ch1`, ...) over HTTP so every
//! published message is copied to each channel; read nsqd's `VmRSS` from
//! `/proc/<pid>/status` (baseline); publish exactly `--count` messages of `--size` bytes with
//! synchronous MPUBs of `--batch-size`; poll `/stats?format=json` until every channel's depth
//! equals `--count`; read `VmRSS` again. The delta divided by `--count` is the cost of one
//! queued message including its copies in every channel. Run against an nsqd with a
//! `--mem-queue-size` larger than `--count` so that nothing spills to disk, and with no
//! consumers.
//!
//! RSS only grows when pages are touched and allocators keep freed memory, so the number
//! is an upper bound on the live data structure size, and the honest one to report: it is
//! what an operator provisioning memory sees.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;
use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style};
use nsq_bench::http::{channel_depths, BlockingApi};
use nsq_bench::procfs::rss_bytes;
use nsq_bench::report::human_bytes;
use nsq_bench::wire::{connect, handshake, FrameReader};
use nsq_protocol::command::encode_mpub;

/// RSS of nsqd per queued message.
#[derive(Parser, Debug)]
#[command(name = "bench_mem")]
struct Args {
    /// <addr>:<port> to connect to nsqd over TCP
    #[arg(long, default_value = "127.0.0.1:4150")]
    nsqd_tcp_address: String,
    /// <addr>:<port> of nsqd's HTTP API
    #[arg(long, default_value = "127.0.0.1:4151")]
    nsqd_http_address: String,
    /// nsqd's process id (to read /proc/<pid>/status)
    #[arg(long)]
    pid: u32,
    /// topic to publish to
    #[arg(long, default_value = "mem_bench")]
    topic: String,
    /// number of channels on the topic (ch0, ch1, ...)
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// number of messages to publish
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// size of messages
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// messages per MPUB
    #[arg(long, default_value_t = 200)]
    batch_size: usize,
    /// give up waiting for the depths after this long
    #[arg(long, default_value = "120s", value_parser = parse_go_duration)]
    timeout: Duration,
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    anyhow::ensure!(
        args.size > 0 && args.batch_size > 0,
        "--size and --batch-size must be > 0"
    );
    let h = BlockingApi::new(&args.nsqd_http_address)?;
    h.create_topic(&args.topic)?;
    for i in 0..args.channels {
        h.create_channel(&args.topic, &format!("ch{i}"))?;
    }
    // Let creation settle (lazily started per-topic work, allocator warm-up).
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_bytes(args.pid)?;
    println!(
        "[bench_mem] topic {} with {} channel(s); baseline RSS {} ({before} bytes)",
        args.topic,
        args.channels,
        human_bytes(before as f64)
    );

    let mut s = connect(&args.nsqd_tcp_address)?;
    let mut r = FrameReader::default();
    handshake(&mut s, &mut r, "mem", "bench_mem")?;
    let body = vec![b'a'; args.size];
    let full_batch = {
        let bodies = vec![&body[..]; args.batch_size];
        let mut b = BytesMut::new();
        encode_mpub(&mut b, &args.topic, &bodies);
        b
    };
    let t0 = Instant::now();
    let mut sent = 0u64;
    while sent < args.count {
        let k = (args.count - sent).min(args.batch_size as u64);
        if k as usize == args.batch_size {
            s.write_all(&full_batch)?;
        } else {
            let bodies = vec![&body[..]; k as usize];
            let mut b = BytesMut::new();
            encode_mpub(&mut b, &args.topic, &bodies);
            s.write_all(&b)?;
        }
        r.read_ok(&mut s, "MPUB")?;
        sent += k;
    }
    let pub_secs = t0.elapsed().as_secs_f64();
    println!(
        "[bench_mem] published {sent} msgs of {} B in {pub_secs:.3}s ({:.0} msg/s)",
        args.size,
        sent as f64 / pub_secs
    );

    let deadline = Instant::now() + args.timeout;
    let mut last_print = Instant::now();
    loop {
        let st = h.stats(Some(&args.topic))?;
        let depths = channel_depths(&st, &args.topic).context("topic missing from /stats")?;
        let done = depths.len() >= args.channels && depths.iter().all(|(_, d)| *d == args.count);
        if done {
            break;
        }
        if depths.iter().any(|(_, d)| *d > args.count) {
            bail!("channel depth exceeds --count (topic not fresh?): {depths:?}");
        }
        if Instant::now() >= deadline {
            bail!(
                "timed out waiting for depths to reach {}: {depths:?}",
                args.count
            );
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("[bench_mem] waiting: depths {depths:?}");
            last_print = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = rss_bytes(args.pid)?;
    let delta = after as i64 - before as i64;
    let per = delta as f64 / args.count as f64;
    println!(
        "[bench_mem] rss before {before}, after {after}, delta {delta} bytes, per message {per:.1} bytes"
    );
    println!(
        "[bench_mem] {} channel(s), {} B bodies: {per:.1} B/msg = {:.1} B/msg/channel; overhead beyond one body copy: {:.1} B/msg ({} total)",
        args.channels,
        args.size,
        per / args.channels.max(1) as f64,
        per - args.size as f64,
        human_bytes(delta as f64)
    );
    Ok(())
}
