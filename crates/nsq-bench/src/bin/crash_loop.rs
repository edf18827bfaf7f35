//! SIGKILL loop: how many acknowledged messages survive nsqd being killed under load.
//!
//! Starts nsqd itself (`--nsqd-bin`) on fixed loopback ports and one data directory, runs
//! `--publishers` connections that PUB numbered messages one at a time and record each one
//! nsqd answered `OK` to, and one consumer that records every body it receives and FINs it.
//! Every `--round-time` nsqd is SIGKILLed and restarted on the same ports and data path;
//! clients reconnect. After `--rounds` kills the publishers stop, the consumer drains what is
//! left (until nothing arrives for `--drain-idle`), nsqd gets SIGTERM, and the tool prints:
//!
//! `published N acknowledged, delivered M unique (D duplicates), lost L`
//!
//! A message counts as lost when nsqd answered OK to its PUB and it was never delivered.
//! Loopback only, bounded in count and time; it ends only the nsqd processes it started.

use std::collections::HashSet;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use clap::Parser;
use nsq_bench::args::{parse_go_duration, parse_go_style};
use nsq_bench::wire::{handshake, FrameReader};
use nsq_protocol::command::encode_pub;
use nsq_protocol::{Command as NsqCommand, FrameType, Message};

/// Kill nsqd repeatedly under load and count acknowledged messages that never arrive.
#[derive(Parser, Debug)]
#[command(name = "crash_loop")]
struct Args {
    /// the nsqd binary to run (Go's or ours)
    #[arg(long)]
    nsqd_bin: String,
    /// extra nsqd arguments, space separated (e.g. "--mem-queue-size=0 --sync-every=1")
    #[arg(long, default_value = "")]
    nsqd_args: String,
    /// data directory (default: a new temporary directory)
    #[arg(long, default_value = "")]
    data_path: String,
    /// number of SIGKILLs
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// time under load before each kill
    #[arg(long, default_value = "2s", value_parser = parse_go_duration)]
    round_time: Duration,
    /// publishing connections
    #[arg(long, default_value_t = 2)]
    publishers: usize,
    /// stop draining after this long without a message
    #[arg(long, default_value = "3s", value_parser = parse_go_duration)]
    drain_idle: Duration,
    /// exit non-zero if any acknowledged message was lost
    #[arg(long)]
    expect_zero_loss: bool,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Daemon {
    bin: String,
    args: Vec<String>,
    child: Option<Child>,
    tcp: String,
    http: String,
}

impl Daemon {
    fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.bin))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.tcp).is_ok() && TcpStream::connect(&self.http).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("nsqd did not start listening on {} within 15s", self.tcp)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

fn connect(addr: &str) -> Option<(TcpStream, FrameReader)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut r = FrameReader::default();
    handshake(&mut s, &mut r, "crash_loop", "crash_loop").ok()?;
    Some((s, r))
}

fn publisher(id: usize, addr: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<String>>>) {
    let mut seq = 0u64;
    let mut out = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        let Some((mut s, mut r)) = connect(&addr) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let body = format!("p{id}-{seq:09}");
            out.clear();
            encode_pub(&mut out, "crash", body.as_bytes());
            if s.write_all(&out).is_err() {
                break;
            }
            match r.read_ok(&mut s, "PUB") {
                Ok(_) => {
                    acked.lock().expect("not poisoned").push(body);
                    seq += 1;
                }
                // Unknown outcome (connection died) or refused: not acknowledged.
                Err(_) => {
                    seq += 1;
                    break;
                }
            }
        }
    }
}

fn consumer(addr: String, stop: Arc<AtomicBool>, got: Arc<Mutex<(HashSet<String>, u64)>>) {
    let mut out = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        let Some((mut s, mut r)) = connect(&addr) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        out.clear();
        NsqCommand::Sub {
            topic: "crash".into(),
            channel: "ch".into(),
        }
        .encode(&mut out);
        NsqCommand::Rdy { count: 200 }.encode(&mut out);
        if s.write_all(&out).is_err() {
            continue;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        'conn: while !stop.load(Ordering::Relaxed) {
            match r.fill(&mut s) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            out.clear();
            loop {
                match r.next_buffered() {
                    Ok(Some(f)) => match f.frame_type {
                        FrameType::Message => {
                            let Ok(m) = Message::decode(f.data) else {
                                break 'conn;
                            };
                            let body = String::from_utf8_lossy(&m.body).into_owned();
                            {
                                let mut g = got.lock().expect("not poisoned");
                                g.1 += 1;
                                g.0.insert(body);
                            }
                            NsqCommand::Fin { id: m.id }.encode(&mut out);
                        }
                        FrameType::Response if f.is_heartbeat() => NsqCommand::Nop.encode(&mut out),
                        _ => {}
                    },
                    Ok(None) => break,
                    Err(_) => break 'conn,
                }
            }
            if !out.is_empty() && s.write_all(&out).is_err() {
                break;
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Args = parse_go_style();
    let tmp;
    let data_path = if args.data_path.is_empty() {
        tmp = std::env::temp_dir().join(format!("crash_loop.{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        tmp.display().to_string()
    } else {
        args.data_path.clone()
    };
    let (tcp_port, http_port) = (free_port()?, free_port()?);
    let tcp = format!("127.0.0.1:{tcp_port}");
    let http = format!("127.0.0.1:{http_port}");
    let mut nsqd_args = vec![
        format!("--tcp-address={tcp}"),
        format!("--http-address={http}"),
        format!("--data-path={data_path}"),
    ];
    nsqd_args.extend(args.nsqd_args.split_whitespace().map(String::from));
    eprintln!(
        "[crash_loop] {} {} ; {} kills every {:?}, {} publishers",
        args.nsqd_bin,
        nsqd_args.join(" "),
        args.rounds,
        args.round_time,
        args.publishers
    );
    let mut d = Daemon {
        bin: args.nsqd_bin.clone(),
        args: nsqd_args,
        child: None,
        tcp: tcp.clone(),
        http,
    };
    d.start()?;

    let stop_pub = Arc::new(AtomicBool::new(false));
    let stop_sub = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let got = Arc::new(Mutex::new((HashSet::new(), 0u64)));
    let sub = {
        let (a, s, g) = (tcp.clone(), stop_sub.clone(), got.clone());
        std::thread::spawn(move || consumer(a, s, g))
    };
    // Let the channel exist before publishing, so every message is for it.
    std::thread::sleep(Duration::from_millis(300));
    let pubs: Vec<_> = (0..args.publishers)
        .map(|i| {
            let (a, s, k) = (tcp.clone(), stop_pub.clone(), acked.clone());
            std::thread::spawn(move || publisher(i, a, s, k))
        })
        .collect();

    for round in 1..=args.rounds {
        std::thread::sleep(args.round_time);
        let n = acked.lock().expect("not poisoned").len();
        d.kill();
        eprintln!("[crash_loop] round {round}: SIGKILL after {n} acknowledged so far");
        d.start()?;
    }
    std::thread::sleep(args.round_time);
    stop_pub.store(true, Ordering::Relaxed);
    for p in pubs {
        let _ = p.join();
    }
    // Drain until quiet.
    let mut last = got.lock().expect("not poisoned").1;
    let mut quiet_since = Instant::now();
    let drain_deadline = Instant::now() + Duration::from_secs(120);
    while quiet_since.elapsed() < args.drain_idle && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = got.lock().expect("not poisoned").1;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    stop_sub.store(true, Ordering::Relaxed);
    let _ = sub.join();
    d.terminate();

    let acked = acked.lock().expect("not poisoned");
    let got = got.lock().expect("not poisoned");
    let lost = acked.iter().filter(|b| !got.0.contains(*b)).count();
    let dups = got.1 - got.0.len() as u64;
    println!(
        "[crash_loop] published {} acknowledged, delivered {} unique ({} duplicates), lost {}",
        acked.len(),
        got.0.len(),
        dups,
        lost
    );
    if args.expect_zero_loss && lost > 0 {
        anyhow::bail!("{lost} acknowledged messages were lost");
    }
    Ok(())
}
