//! The same-run baseline: how fast can these exact bytes move over loopback TCP on this
//! machine, with a server that does (almost) nothing?
//!
//! Absolute msg/s numbers are meaningless across machines; "nsqd reaches X% of what raw TCP
//! reaches in the same run" is not. This tool runs the very client loops `bench_writer` and
//! `bench_reader` use (`nsq_bench::wire`), one connection per core, against an in-process
//! server:
//!
//! - `pub` shape: the client sends the magic, then MPUB buffers (same `--size` and
//!   `--batch-size`), waiting for a 10-byte `OK` frame after each, exactly like
//!   `bench_writer`. The server reads each MPUB with `read_exact` (it knows the length),
//!   discards it and writes the `OK` frame.
//! - `sub` shape: the server streams pre-encoded message frames (same `--size`), keeping at
//!   most `--rdy` unacknowledged per connection like nsqd honouring RDY; a second server
//!   thread per connection counts the client's `FIN` lines and returns credit. The client is
//!   `bench_reader`'s loop: one read, FIN every message in it, one write.
//!
//! The server uses one thread per connection (two for `sub`), the same order of thread count
//! nsqd uses, and competes for the same cores as the client, as nsqd does.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use clap::{Parser, ValueEnum};
use nsq_bench::args::{parse_go_duration, parse_go_style, workers};
use nsq_bench::report::{go_summary, rate_line, Latencies};
use nsq_bench::wire::{connect, consume_until, mpub_buffer, publish_until, FrameReader};
use nsq_protocol::frame::{put_frame, put_message_frame};
use nsq_protocol::{FrameType, MessageId, MAGIC_V2};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Shape {
    /// Publish (MPUB + ack) only.
    Pub,
    /// Consume (message frames + FIN) only.
    Sub,
    /// Both, one after the other.
    Both,
}

/// Raw loopback TCP ceiling for bench_writer/bench_reader traffic.
#[derive(Parser, Debug)]
#[command(name = "tcp_ceiling")]
struct Args {
    /// duration of time to run each shape
    #[arg(long, default_value = "10s", value_parser = parse_go_duration)]
    runfor: Duration,
    /// size of messages
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// batch size of messages (pub shape)
    #[arg(long, default_value_t = 200)]
    batch_size: usize,
    /// max unacknowledged messages per connection (sub shape)
    #[arg(long, default_value_t = 2500)]
    rdy: u64,
    /// which traffic shape(s) to run
    #[arg(long, value_enum, default_value = "both")]
    shape: Shape,
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    anyhow::ensure!(
        args.size > 0 && args.batch_size > 0 && args.rdy > 0,
        "sizes must be > 0"
    );
    if matches!(args.shape, Shape::Pub | Shape::Both) {
        run_pub(&args)?;
    }
    if matches!(args.shape, Shape::Sub | Shape::Both) {
        run_sub(&args)?;
    }
    Ok(())
}

fn run_pub(args: &Args) -> anyhow::Result<()> {
    let n = workers();
    let mpub = Arc::new(mpub_buffer("sub_bench", args.size, args.batch_size));
    let mpub_len = mpub.len();
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || pub_server(s, mpub_len));
        }
    });
    let gate = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for _ in 0..n {
        let mut s = connect(&addr)?;
        s.write_all(MAGIC_V2)?;
        let (mpub, gate, runfor) = (Arc::clone(&mpub), Arc::clone(&gate), args.runfor);
        let per_batch = args.batch_size as u64;
        handles.push(std::thread::spawn(move || {
            let mut r = FrameReader::default();
            gate.wait();
            publish_until(
                &mut s,
                &mut r,
                &mpub,
                per_batch,
                Instant::now() + runfor,
                true,
            )
        }));
    }
    eprintln!(
        "[tcp_ceiling] pub: {n} connections, {} x {} B per MPUB-shaped write, for {:?}",
        args.batch_size, args.size, args.runfor
    );
    let start = Instant::now();
    gate.wait();
    let (mut total, mut lat) = (0u64, Vec::new());
    for h in handles {
        let r = h.join().expect("client panicked")?;
        total += r.msgs;
        lat.extend(r.latencies_ns);
    }
    let d = start.elapsed();
    let wire_bytes = total / args.batch_size as u64 * mpub_len as u64;
    println!("[tcp_ceiling] pub {}", go_summary(d, total, args.size));
    println!(
        "[tcp_ceiling] pub {}",
        rate_line("sent", d, total, args.size)
    );
    println!(
        "[tcp_ceiling] pub wire: {:.2} MB/s incl. framing; round trip per batch: {}",
        wire_bytes as f64 / d.as_secs_f64() / 1e6,
        Latencies::from_samples(&mut lat)
    );
    Ok(())
}

/// Reads the magic, then MPUB-sized chunks, answering each with an `OK` frame.
fn pub_server(mut s: TcpStream, mpub_len: usize) {
    let _ = s.set_nodelay(true);
    let mut magic = [0u8; 4];
    if s.read_exact(&mut magic).is_err() {
        return;
    }
    let mut ok = BytesMut::new();
    put_frame(&mut ok, FrameType::Response, b"OK");
    let mut buf = vec![0u8; mpub_len];
    while s.read_exact(&mut buf).is_ok() {
        if s.write_all(&ok).is_err() {
            return;
        }
    }
}

fn run_sub(args: &Args) -> anyhow::Result<()> {
    let n = workers();
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    let (size, rdy) = (args.size, args.rdy);
    // Start streaming only once every client is connected and the clock runs.
    let server_gate = Arc::new(Barrier::new(n + 1));
    let sg = Arc::clone(&server_gate);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let sg = Arc::clone(&sg);
            std::thread::spawn(move || sub_server(s, size, rdy, sg));
        }
    });
    let gate = Arc::new(Barrier::new(n + 1));
    let mut handles = Vec::new();
    for _ in 0..n {
        let mut s = connect(&addr)?;
        let (gate, runfor) = (Arc::clone(&gate), args.runfor);
        handles.push(std::thread::spawn(move || {
            let mut r = FrameReader::default();
            gate.wait();
            consume_until(&mut s, &mut r, Instant::now() + runfor, "tcp_ceiling")
        }));
    }
    eprintln!(
        "[tcp_ceiling] sub: {n} connections, {} B messages, {} in flight per connection, for {:?}",
        args.size, args.rdy, args.runfor
    );
    let start = Instant::now();
    gate.wait();
    server_gate.wait();
    let mut total = 0u64;
    for h in handles {
        total += h.join().expect("client panicked")?.msgs;
    }
    let d = start.elapsed();
    println!("[tcp_ceiling] sub {}", go_summary(d, total, args.size));
    println!(
        "[tcp_ceiling] sub {}",
        rate_line("received", d, total, args.size)
    );
    Ok(())
}

/// Streams message frames while credit remains; a helper thread reads FIN lines and
/// returns one credit per line.
fn sub_server(s: TcpStream, size: usize, rdy: u64, gate: Arc<Barrier>) {
    let _ = s.set_nodelay(true);
    let Ok(mut reader) = s.try_clone() else {
        return;
    };
    let mut writer = s;
    let (tx, rx) = mpsc::channel::<u64>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let lines = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                    if lines > 0 && tx.send(lines).is_err() {
                        return;
                    }
                }
            }
        }
    });
    // Pre-encode a chunk of frames; ids are opaque to the client and echoed in FINs.
    let per_chunk = rdy.min(100) as usize;
    let body = vec![b'a'; size];
    let mut chunk = BytesMut::new();
    for i in 0..per_chunk {
        put_message_frame(&mut chunk, 0, 1, &MessageId::from_u64(i as u64), &body);
    }
    let frame_len = chunk.len() / per_chunk;
    gate.wait();
    let mut credit = rdy;
    loop {
        while let Ok(c) = rx.try_recv() {
            credit += c;
        }
        if credit == 0 {
            match rx.recv() {
                Ok(c) => credit += c,
                Err(_) => return,
            }
            continue;
        }
        let k = (credit as usize).min(per_chunk);
        if writer.write_all(&chunk[..k * frame_len]).is_err() {
            return;
        }
        credit -= k as u64;
    }
}
