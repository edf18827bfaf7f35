//! Latency at a steady, below-saturation rate: how long a PUB takes to be answered, and how
//! long a message takes from the publisher's `write` to the consumer's `read`.
//!
//! Throughput tools (`bench_writer`/`bench_reader`) saturate the server, so their latencies are
//! mostly queueing. This tool paces one publisher at `--rate` single-message PUBs per second
//! and runs one consumer (RDY `--rdy`) at the same time. Each body starts with the publisher's
//! send time (ns since the Unix epoch, big-endian), so the end-to-end figure covers client →
//! nsqd → client, on one machine's clock.
//!
//! Point it at Go nsqd and at nsq-rs with the same flags to compare p99s. With
//! `--consumers=N --rdy=1` it is a worker pool on one channel (`scripts/bench-worker-pool.sh`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::BytesMut;
use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style};
use nsq_bench::report::Latencies;
use nsq_bench::wire::{connect, handshake, FrameReader};
use nsq_protocol::command::encode_pub;
use nsq_protocol::{Command, FrameType, Message};

/// Publish and end-to-end latency at a fixed rate.
#[derive(Parser, Debug)]
#[command(name = "bench_latency")]
struct Args {
    /// <addr>:<port> to connect to nsqd
    #[arg(long, default_value = "127.0.0.1:4150")]
    nsqd_tcp_address: String,
    /// topic to use
    #[arg(long, default_value = "lat_bench")]
    topic: String,
    /// channel to use
    #[arg(long, default_value = "ch")]
    channel: String,
    /// messages per second (single-message PUBs)
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// duration of time to run
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    runfor: Duration,
    /// size of messages (at least 8)
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// RDY count of each consumer
    #[arg(long, default_value_t = 2500)]
    rdy: u64,
    /// consumer connections on the channel (extension: a worker pool, e.g. 100 with
    /// --rdy=1, shows whether a publish wakes every idle consumer or only the one it feeds)
    #[arg(long, default_value_t = 1)]
    consumers: usize,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    anyhow::ensure!(args.size >= 8, "--size must be at least 8");
    anyhow::ensure!(args.rate > 0, "--rate must be positive");
    let expected = args.rate * args.runfor.as_secs_f64() as u64;
    eprintln!(
        "[bench_latency] {} msg/s of {} B PUBs to {} for {:?}, {} consumer(s) with RDY {}",
        args.rate, args.size, args.topic, args.runfor, args.consumers, args.rdy
    );

    // Consumers first, so no message waits for a channel to exist.
    anyhow::ensure!(args.consumers > 0, "--consumers must be positive");
    let done = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let mut consumers = Vec::with_capacity(args.consumers);
    for _ in 0..args.consumers {
        consumers.push(spawn_consumer(&args, expected, &done, &received)?);
    }
    let mut out = BytesMut::new();

    let mut ps = connect(&args.nsqd_tcp_address)?;
    let mut pr = FrameReader::default();
    handshake(&mut ps, &mut pr, "bench_latency_pub", "bench_latency")?;
    let mut body = vec![b'a'; args.size];
    let mut rtt = Vec::with_capacity(expected as usize);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
    let start = Instant::now();
    let mut next = start;
    let mut sent = 0u64;
    while start.elapsed() < args.runfor {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
        }
        next += interval;
        body[..8].copy_from_slice(&unix_nanos().to_be_bytes());
        out.clear();
        encode_pub(&mut out, &args.topic, &body);
        let t = Instant::now();
        ps.write_all(&out)?;
        pr.read_ok(&mut ps, "PUB")?;
        rtt.push(t.elapsed().as_nanos() as u64);
        sent += 1;
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut e2e = Vec::with_capacity(sent as usize);
    for c in consumers {
        e2e.extend(
            c.join()
                .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?
                .context("consumer")?,
        );
    }
    println!(
        "[bench_latency] published {sent} msgs in {:.3}s ({:.0} msg/s achieved), received {}",
        elapsed.as_secs_f64(),
        sent as f64 / elapsed.as_secs_f64(),
        e2e.len()
    );
    println!(
        "[bench_latency] PUB round trip: {}",
        Latencies::from_samples(&mut rtt)
    );
    println!(
        "[bench_latency] publish -> deliver: {}",
        Latencies::from_samples(&mut e2e)
    );
    anyhow::ensure!(
        e2e.len() as u64 == sent,
        "lost messages: sent {sent}, received {}",
        e2e.len()
    );
    Ok(())
}

/// Connects one consumer (SUB + RDY) and runs it on its own thread: it FINs every message,
/// records publish -> deliver times, and stops once publishing is done and every consumer
/// together received `expected` messages (or nothing arrived for 2 s).
fn spawn_consumer(
    args: &Args,
    expected: u64,
    done: &Arc<AtomicBool>,
    received: &Arc<AtomicU64>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<Vec<u64>>>> {
    let mut cs = connect(&args.nsqd_tcp_address)?;
    let mut cr = FrameReader::default();
    handshake(&mut cs, &mut cr, "bench_latency_sub", "bench_latency")?;
    cr.subscribe(&mut cs, &args.topic, &args.channel)?;
    let mut out = BytesMut::new();
    Command::Rdy { count: args.rdy }.encode(&mut out);
    cs.write_all(&out)?;
    cs.set_read_timeout(Some(Duration::from_millis(200)))?;
    let done = done.clone();
    let received = received.clone();
    let per_consumer = (expected as usize / args.consumers).max(16);
    Ok(std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
        let mut e2e = Vec::with_capacity(per_consumer);
        let mut fins = BytesMut::new();
        let mut idle_since: Option<Instant> = None;
        loop {
            match cr.fill(&mut cs) {
                Ok(0) => anyhow::bail!("nsqd closed the consumer connection"),
                Ok(_) => idle_since = None,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if done.load(Ordering::Relaxed) {
                        let t = *idle_since.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_secs(2) {
                            return Ok(e2e);
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
            let now = unix_nanos();
            while let Some(f) = cr.next_buffered()? {
                match f.frame_type {
                    FrameType::Message => {
                        let m = Message::decode(f.data)?;
                        let sent = u64::from_be_bytes(m.body[..8].try_into()?);
                        e2e.push(now.saturating_sub(sent));
                        received.fetch_add(1, Ordering::Relaxed);
                        Command::Fin { id: m.id }.encode(&mut fins);
                    }
                    FrameType::Response if f.is_heartbeat() => {
                        Command::Nop.encode(&mut fins);
                    }
                    FrameType::Error => {
                        anyhow::bail!("error frame: {}", String::from_utf8_lossy(&f.data))
                    }
                    FrameType::Response => {}
                }
            }
            if !fins.is_empty() {
                cs.write_all(&fins)?;
                fins.clear();
            }
            if done.load(Ordering::Relaxed) && received.load(Ordering::Relaxed) >= expected {
                return Ok(e2e);
            }
        }
    }))
}
