//! Port of NSQ's `bench/bench_reader`: consume throughput.
//!
//! One connection per core. Each sends the magic, IDENTIFY and `SUB <topic> <channel>`,
//! reads both `OK`s, waits for the common start, sends `RDY <rdy>`, then FINs every message
//! it receives until `--runfor` has elapsed. FINs for all the messages in one read are sent
//! with one write (see `nsq_bench::wire::consume_until`), and heartbeats get a `NOP`.
//!
//! Run it after `bench_writer` has filled the channel (NSQ's `bench.sh` does exactly that).
//! If the channel drains before `--runfor` ends, Go's ops/s understates the rate, so we also
//! print the rate over the time until the last message arrived.

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style, sleep_until_deadline, workers};
use nsq_bench::layers::{connect_layered, LayerArgs};
use nsq_bench::report::{go_summary, rate_line};
use nsq_bench::wire::{consume_until, ConsumeResult};
use nsq_protocol::Command;

/// Consume throughput benchmark (port of NSQ's bench_reader).
#[derive(Parser, Debug)]
#[command(name = "bench_reader")]
struct Args {
    /// duration of time to run
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    runfor: Duration,
    /// <addr>:<port> to connect to nsqd
    #[arg(long, default_value = "127.0.0.1:4150")]
    nsqd_tcp_address: String,
    /// size of messages
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// topic to receive messages on
    #[arg(long, default_value = "sub_bench")]
    topic: String,
    /// channel to receive messages on
    #[arg(long, default_value = "ch")]
    channel: String,
    /// deadline to start the benchmark run ("2006-01-02 15:04:05", UTC as in Go)
    #[arg(long, default_value = "")]
    deadline: String,
    /// RDY count to use
    #[arg(long, default_value_t = 2500)]
    rdy: u64,
    #[command(flatten)]
    layers: LayerArgs,
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    let n = workers();
    let layers = args.layers.layers(&args.nsqd_tcp_address)?;
    let start_gate = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for i in 0..n {
        let (mut s, mut r) = connect_layered(
            &args.nsqd_tcp_address,
            &format!("reader{i}"),
            "bench_reader",
            &layers,
        )?;
        r.subscribe(&mut s, &args.topic, &args.channel)?;
        let gate = Arc::clone(&start_gate);
        let runfor = args.runfor;
        let rdy = args.rdy;
        handles.push(std::thread::spawn(
            move || -> anyhow::Result<ConsumeResult> {
                gate.wait();
                let end = Instant::now() + runfor;
                let mut out = BytesMut::new();
                Command::Rdy { count: rdy }.encode(&mut out);
                s.write_all(&out)?;
                s.flush()?;
                consume_until(&mut s, &mut r, end, "bench_reader")
            },
        ));
    }
    sleep_until_deadline("bench_reader", Some(&args.deadline))?;
    eprintln!(
        "[bench_reader] {n} connections ({}) to {}, {}/{} RDY {}, for {:?}",
        layers.describe(),
        args.nsqd_tcp_address,
        args.topic,
        args.channel,
        args.rdy,
        args.runfor
    );
    let start = Instant::now();
    start_gate.wait();
    let mut total = 0u64;
    let mut bytes = 0u64;
    let mut errors = 0u64;
    let mut last: Option<Instant> = None;
    for h in handles {
        let r = h.join().expect("worker panicked")?;
        total += r.msgs;
        bytes += r.body_bytes;
        errors += r.errors;
        last = last.max(r.last_msg);
    }
    let duration = start.elapsed();
    println!("[bench_reader] {}", go_summary(duration, total, args.size));
    println!(
        "[bench_reader] {}",
        rate_line("consumed", duration, total, args.size)
    );
    if let Some(last) = last {
        let active = last.saturating_duration_since(start);
        if active + Duration::from_millis(500) < duration {
            println!(
                "[bench_reader] channel drained after {:.3}s: {:.0} msg/s while messages flowed",
                active.as_secs_f64(),
                total as f64 / active.as_secs_f64()
            );
        }
    }
    if total > 0 && bytes != total * args.size as u64 {
        println!(
            "[bench_reader] note: average body {:.1} B, not --size {}",
            bytes as f64 / total as f64,
            args.size
        );
    }
    if errors > 0 {
        println!("[bench_reader] {errors} error frames received");
    }
    Ok(())
}
