//! Port of NSQ's `bench/bench_channels`: many subscribed connections at once.
//!
//! Like Go's tool, connection `i` subscribes to topic `t<i>`, channel `ch` (Go's help says
//! "num channels"; its code creates one topic per connection, each with channel `ch`), with
//! `RDY 1`, FINs and re-`RDY`s every message it gets and answers heartbeats with `NOP`.
//!
//! Go's version sleeps 5 ms between connections and then runs forever. This one is bounded:
//! it connects (at most 256 dials in flight), then releases every connection at once to send
//! IDENTIFY + SUB + RDY (the same thundering herd Go produces, since Go buffers those commands
//! until its start signal), reports how long it took until all were subscribed, holds the
//! connections for `--runfor` (an extension; Go has no such flag) and exits. With `--pid` it
//! also reports nsqd's RSS before and after. 10,000 connections need `ulimit -n` above
//! 10,000 for both this tool and nsqd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::BytesMut;
use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style};
use nsq_bench::procfs::rss_bytes;
use nsq_bench::report::human_bytes;
use nsq_bench::wire::{identify_body, MAX_FRAME};
use nsq_protocol::command::encode_fin;
use nsq_protocol::frame::decode_frame;
use nsq_protocol::{Command, Frame, FrameType, Message, MAGIC_V2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};

/// Many-subscriptions benchmark (port of NSQ's bench_channels).
#[derive(Parser, Debug)]
#[command(name = "bench_channels")]
struct Args {
    /// num channels
    #[arg(long, default_value_t = 10_000)]
    num: usize,
    /// <addr>:<port> to connect to nsqd
    #[arg(long, default_value = "127.0.0.1:4150")]
    nsqd_tcp_address: String,
    /// how long to hold the subscriptions (extension: Go's tool runs forever)
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    runfor: Duration,
    /// nsqd's pid, to report its RSS (optional)
    #[arg(long)]
    pid: Option<u32>,
}

#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    subscribed: AtomicU64,
    msgs: AtomicU64,
    failed: AtomicU64,
    /// Nanoseconds after the go signal at which the last SUB was acknowledged.
    last_sub_ns: AtomicU64,
}

async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> anyhow::Result<Frame> {
    loop {
        if let Some(f) = decode_frame(buf, MAX_FRAME).map_err(|e| anyhow!("bad frame: {e}"))? {
            return Ok(f);
        }
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed by nsqd");
        }
    }
}

async fn worker(
    i: usize,
    addr: Arc<String>,
    dial: Arc<Semaphore>,
    mut go: watch::Receiver<Option<Instant>>,
    end: Arc<watch::Receiver<Option<Instant>>>,
    c: Arc<Counters>,
) -> anyhow::Result<()> {
    let mut s = {
        let _permit = dial.acquire().await?;
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        s.set_nodelay(true)?;
        s
    };
    s.write_all(MAGIC_V2).await?;
    c.connected.fetch_add(1, Ordering::Relaxed);
    let start = *go.wait_for(|v| v.is_some()).await?;
    let start = start.expect("checked by wait_for");
    let mut out = BytesMut::new();
    Command::Identify {
        body: identify_body(&format!("ch{i}"), "bench_channels").into(),
    }
    .encode(&mut out);
    Command::Sub {
        topic: format!("t{i}"),
        channel: "ch".to_string(),
    }
    .encode(&mut out);
    Command::Rdy { count: 1 }.encode(&mut out);
    s.write_all(&out).await?;
    out.clear();
    let mut buf = BytesMut::with_capacity(4096);
    for what in ["IDENTIFY", "SUB"] {
        let f = read_frame(&mut s, &mut buf).await?;
        if f.frame_type == FrameType::Error {
            bail!("{what}: {}", String::from_utf8_lossy(&f.data));
        }
    }
    c.subscribed.fetch_add(1, Ordering::Relaxed);
    c.last_sub_ns
        .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let mut end = (*end).clone();
    loop {
        let f = tokio::select! {
            f = read_frame(&mut s, &mut buf) => f?,
            _ = end.wait_for(|v| v.is_some()) => return Ok(()),
        };
        match f.frame_type {
            FrameType::Message => {
                let m = Message::decode(f.data).map_err(|e| anyhow!("bad message: {e}"))?;
                encode_fin(&mut out, &m.id);
                Command::Rdy { count: 1 }.encode(&mut out);
                c.msgs.fetch_add(1, Ordering::Relaxed);
            }
            FrameType::Response => Command::Nop.encode(&mut out),
            FrameType::Error => bail!("{}", String::from_utf8_lossy(&f.data)),
        }
        s.write_all(&out).await?;
        out.clear();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    let rss0 = args.pid.map(rss_bytes).transpose()?;
    let addr = Arc::new(args.nsqd_tcp_address.clone());
    let dial = Arc::new(Semaphore::new(256));
    let (go_tx, go_rx) = watch::channel(None);
    let (end_tx, end_rx) = watch::channel(None);
    let end_rx = Arc::new(end_rx);
    let c = Arc::new(Counters::default());
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.num {
        let (addr, dial, go, end, c2) = (
            Arc::clone(&addr),
            Arc::clone(&dial),
            go_rx.clone(),
            Arc::clone(&end_rx),
            Arc::clone(&c),
        );
        tasks.spawn(async move {
            if let Err(e) = worker(i, addr, dial, go, end, Arc::clone(&c2)).await {
                if c2.failed.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("[bench_channels] connection {i}: {e:#}");
                }
            }
        });
    }
    // Wait until every connection is either connected or failed.
    while (c.connected.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed)) < args.num as u64
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "[bench_channels] {} connections open in {:.3}s ({} failed)",
        c.connected.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64(),
        c.failed.load(Ordering::Relaxed)
    );
    let go_at = Instant::now();
    let _ = go_tx.send(Some(go_at));
    tokio::time::sleep(args.runfor).await;
    // RSS while the subscriptions are still held.
    let rss1 = args.pid.map(rss_bytes).transpose()?;
    let _ = end_tx.send(Some(Instant::now()));
    while tasks.join_next().await.is_some() {}
    let subscribed = c.subscribed.load(Ordering::Relaxed);
    println!(
        "[bench_channels] {subscribed} of {} subscribed (topic t<i>, channel ch) within {:.3}s of the start signal; {} failed",
        args.num,
        c.last_sub_ns.load(Ordering::Relaxed) as f64 / 1e9,
        c.failed.load(Ordering::Relaxed)
    );
    println!(
        "[bench_channels] held for {:.1}s, {} messages consumed",
        go_at.elapsed().as_secs_f64(),
        c.msgs.load(Ordering::Relaxed)
    );
    if let (Some(rss0), Some(rss1)) = (rss0, rss1) {
        println!(
            "[bench_channels] nsqd RSS {} before, {} with {subscribed} subscriptions",
            human_bytes(rss0 as f64),
            human_bytes(rss1 as f64)
        );
    }
    Ok(())
}
