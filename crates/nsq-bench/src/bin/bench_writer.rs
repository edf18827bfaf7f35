//! Port of NSQ's `bench/bench_writer`: publish throughput with synchronous MPUBs.
//!
//! One connection per core. Each sends the magic and IDENTIFY, waits for the common start,
//! then loops: write `MPUB <topic>` with `--batch-size` bodies of `--size` bytes, read the
//! response, repeat until `--runfor` has elapsed. Exactly Go's pattern (one MPUB in flight
//! per connection), so throughput here is bounded by nsqd's per-MPUB round trip.
//!
//! `--unique` (nsq-rs extension) makes every body distinct (connection index and sequence
//! number stamped into its first 16 bytes before each MPUB), for topics with a dedup window.
//!
//! Prints Go's summary line (`duration: ... - mb/s - ops/s - us/op`, mb/s counting bodies
//! only), a plain `published N msgs in Xs: R msg/s` line, and the MPUB round-trip latency
//! percentiles over all connections.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style, sleep_until_deadline, workers};
use nsq_bench::layers::{connect_layered, LayerArgs};
use nsq_bench::report::{go_summary, rate_line, Latencies};
use nsq_bench::wire::{mpub_buffer, publish_until_with, PubResult, UniqueBodies};

/// Publish throughput benchmark (port of NSQ's bench_writer).
#[derive(Parser, Debug)]
#[command(name = "bench_writer")]
struct Args {
    /// duration of time to run
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    runfor: Duration,
    /// <addr>:<port> to connect to nsqd
    #[arg(long, default_value = "127.0.0.1:4150")]
    nsqd_tcp_address: String,
    /// topic to receive messages on
    #[arg(long, default_value = "sub_bench")]
    topic: String,
    /// size of messages
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// batch size of messages
    #[arg(long, default_value_t = 200)]
    batch_size: usize,
    /// deadline to start the benchmark run ("2006-01-02 15:04:05", UTC as in Go)
    #[arg(long, default_value = "")]
    deadline: String,
    /// publishing connections (nsq-rs extension; 0 = one per core, as Go's tool)
    #[arg(long, default_value_t = 0)]
    connections: usize,
    /// make every body distinct (connection index and sequence number in its first 16
    /// bytes; nsq-rs extension, for the dedup window, which drops Go's identical bodies)
    #[arg(long)]
    unique: bool,
    #[command(flatten)]
    layers: LayerArgs,
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    anyhow::ensure!(
        args.size > 0 && args.batch_size > 0,
        "--size and --batch-size must be > 0"
    );
    let n = if args.connections > 0 {
        args.connections
    } else {
        workers()
    };
    let mpub = Arc::new(mpub_buffer(&args.topic, args.size, args.batch_size));
    let layers = args.layers.layers(&args.nsqd_tcp_address)?;
    let start_gate = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for i in 0..n {
        // Connect and identify before the clock starts, like Go's rdyChan handshake.
        let (mut s, mut r) = connect_layered(
            &args.nsqd_tcp_address,
            &format!("writer{i}"),
            "bench_writer",
            &layers,
        )?;
        let mut mpub = mpub.to_vec();
        let mut unique = args
            .unique
            .then(|| UniqueBodies::new(&args.topic, args.size, args.batch_size, i as u64));
        let gate = Arc::clone(&start_gate);
        let runfor = args.runfor;
        let per_batch = args.batch_size as u64;
        handles.push(std::thread::spawn(move || -> anyhow::Result<PubResult> {
            gate.wait();
            let end = Instant::now() + runfor;
            publish_until_with(
                &mut s,
                &mut r,
                &mut mpub,
                unique.as_mut(),
                per_batch,
                end,
                true,
            )
        }));
    }
    sleep_until_deadline("bench_writer", Some(&args.deadline))?;
    eprintln!(
        "[bench_writer] {n} connections ({}) to {}, topic {}, {} x {} B per MPUB, for {:?}",
        layers.describe(),
        args.nsqd_tcp_address,
        args.topic,
        args.batch_size,
        args.size,
        args.runfor
    );
    let start = Instant::now();
    start_gate.wait();
    let mut total = 0u64;
    let mut lat = Vec::new();
    for h in handles {
        let r = h.join().expect("worker panicked")?;
        total += r.msgs;
        lat.extend(r.latencies_ns);
    }
    let duration = start.elapsed();
    println!("[bench_writer] {}", go_summary(duration, total, args.size));
    println!(
        "[bench_writer] {}",
        rate_line("published", duration, total, args.size)
    );
    println!(
        "[bench_writer] MPUB round trip ({} msgs each): {}",
        args.batch_size,
        Latencies::from_samples(&mut lat)
    );
    Ok(())
}
