//! Limits under abuse: clients that hold connections without speaking, trickle bytes, never
//! read, or declare absurd sizes must cost the daemon a bounded amount of memory, must not
//! slow a well-behaved client down much, and must not stop it from being served.
//!
//! Each test measures the real `nsqd` process from outside: resident memory (`VmRSS` in
//! `/proc/<pid>/status`), file descriptors it holds (`/proc/<pid>/fd`) and the PUB → OK round
//! trip of a good client running *during* the abuse. The numbers are printed with an
//! `ABUSE` prefix (run with `--no-capture` to see them) and recorded in `BENCHMARKS.md`
//! ("Abuse"). Counts and durations are bounded so each test finishes well under 30 s on
//! loopback. Linux only (`/proc`).

#![cfg(target_os = "linux")]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{wait_for, wait_until, RawClient, TestNsqd, READ_TIMEOUT};

/// Resident memory of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Number of file descriptors a process holds (listeners, sockets, files).
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list /proc/<pid>/fd")
        .count()
}

/// Raises this process's soft `RLIMIT_NOFILE` towards `want` (never above the hard limit) and
/// returns the soft limit now in force. nsqd, spawned afterwards, inherits it.
#[allow(unsafe_code)]
fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass a valid pointer to.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// PUB → OK round trips of a well-behaved client.
#[derive(Debug, Default)]
struct Latencies(Vec<Duration>);

impl Latencies {
    fn pct(&self, p: f64) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
    fn summary(&self) -> String {
        format!(
            "good PUB round trips={} p50={:?} p99={:?} max={:?}",
            self.0.len(),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0)
        )
    }
}

/// `n` PUB round trips (one at a time) on a fresh connection.
fn pub_round_trips(addr: SocketAddr, topic: &str, n: usize) -> Latencies {
    let mut c = RawClient::connect(addr);
    let mut l = Latencies::default();
    for i in 0..n {
        let t = Instant::now();
        c.pub_ok(topic, format!("good-{i}").as_bytes());
        l.0.push(t.elapsed());
    }
    l
}

/// A good client publishing (one PUB at a time, a few ms apart) on its own thread until
/// stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Latencies>,
}

impl Prober {
    fn start(addr: SocketAddr, topic: &str) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let topic = topic.to_string();
        let handle = thread::spawn(move || {
            let mut c = RawClient::connect(addr);
            let mut l = Latencies::default();
            let mut i = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.pub_ok(&topic, format!("probe-{i}").as_bytes());
                l.0.push(t.elapsed());
                i += 1;
                thread::sleep(Duration::from_millis(2));
            }
            l
        });
        Prober { stop, handle }
    }

    fn finish(self) -> Latencies {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("prober thread")
    }
}

/// Opens `n` connections that send nothing at all.
fn open_silent(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("silent connection {i}: {e}"))
        })
        .collect()
}

/// True when the server has not closed `s` (a read would block).
fn still_open(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let open = matches!((&*s).read(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
    s.set_nonblocking(false).expect("blocking");
    open
}

/// (a) Thousands of connections that never send the protocol magic.
///
/// Go and nsq-rs both give a new connection 60 s (Go's `ClientTimeout`) to send `"  V2"`;
/// until then the connection is a parked task with a 4-byte buffer. So: the server holds
/// them all, each costs a few KiB at most, a good client is barely slowed, and when the
/// clients go away the descriptors are released and the memory is reused (a second wave of
/// the same size does not grow the process further).
#[test]
fn thousands_of_silent_connections() {
    let limit = raise_nofile(8192);
    let n = 2000.min(limit.saturating_sub(256) as usize / 2);
    assert!(
        n >= 100,
        "RLIMIT_NOFILE limit {limit} (hard limit reached) too low for this test"
    );
    let nsqd = TestNsqd::start(&[]);
    let pid = nsqd.pid();
    let fds_before = fd_count(pid);
    let baseline = pub_round_trips(nsqd.tcp_addr(), "probe", 300);
    wait_until(Duration::from_secs(5), "baseline client released", || {
        fd_count(pid) <= fds_before
    });
    let rss_before = rss_kib(pid);

    let conns = open_silent(nsqd.tcp_addr(), n);
    wait_until(
        Duration::from_secs(10),
        "nsqd to accept every silent connection",
        || fd_count(pid) >= fds_before + n,
    );
    let during = pub_round_trips(nsqd.tcp_addr(), "probe", 300);
    let rss_during = rss_kib(pid);
    let fds_during = fd_count(pid);
    let open = conns.iter().filter(|s| still_open(s)).count();
    assert_eq!(
        open, n,
        "the server closed silent connections early (60 s timeout)"
    );

    drop(conns);
    wait_until(
        Duration::from_secs(10),
        "nsqd to release the silent connections' descriptors",
        || fd_count(pid) <= fds_before + 5,
    );
    let rss_after = rss_kib(pid);
    // A second wave reuses the memory the first one freed.
    let conns = open_silent(nsqd.tcp_addr(), n);
    wait_until(Duration::from_secs(10), "second wave accepted", || {
        fd_count(pid) >= fds_before + n
    });
    let rss_second = rss_kib(pid);
    drop(conns);
    wait_until(Duration::from_secs(10), "second wave released", || {
        fd_count(pid) <= fds_before + 5
    });
    // The same number of clients that do send the magic, then nothing: each now has a
    // connection task with its (reserved, mostly untouched) read and write buffers.
    let rss_v2_before = rss_kib(pid);
    let magic_lines = || {
        nsqd.logs()
            .iter()
            .filter(|l| l.contains("desired protocol magic"))
            .count()
    };
    let magics_before = magic_lines();
    let mut v2 = open_silent(nsqd.tcp_addr(), n);
    for s in &mut v2 {
        s.write_all(nsq_protocol::MAGIC_V2).expect("send magic");
    }
    wait_until(Duration::from_secs(10), "idle V2 clients accepted", || {
        fd_count(pid) >= fds_before + n
    });
    // Every connection task has read its magic and is waiting for a command.
    wait_until(Duration::from_secs(10), "nsqd to read every magic", || {
        magic_lines() >= magics_before + n
    });
    let v2_probe = pub_round_trips(nsqd.tcp_addr(), "probe", 100);
    let rss_v2 = rss_kib(pid);
    let v2_per_conn = rss_v2.saturating_sub(rss_v2_before) * 1024 / n as u64;
    drop(v2);
    let after = pub_round_trips(nsqd.tcp_addr(), "probe", 100);

    let per_conn = (rss_during.saturating_sub(rss_before)) * 1024 / n as u64;
    println!(
        "ABUSE silent-connections: connections={n} nsqd_fds before={fds_before} during={fds_during} \
         rss_kib before={rss_before} during={rss_during} after_close={rss_after} second_wave={rss_second} \
         (~{per_conn} B/connection); baseline {}; during {}; after {}",
        baseline.summary(),
        during.summary(),
        after.summary()
    );
    println!(
        "ABUSE idle-v2-connections: connections={n} (magic sent, then nothing) rss_kib before={rss_v2_before} \
         during={rss_v2} (~{v2_per_conn} B/connection); during {}",
        v2_probe.summary()
    );
    assert!(
        v2_per_conn <= 48 * 1024,
        "an idle V2 connection costs {v2_per_conn} bytes of RSS (bound: its 16 KiB buffers and change)"
    );
    assert!(
        per_conn <= 16 * 1024,
        "a silent connection costs {per_conn} bytes of RSS (bound 16 KiB)"
    );
    assert!(
        rss_second <= rss_during + rss_during / 10 + 2048,
        "second wave grew RSS from {rss_during} to {rss_second} KiB: memory of closed connections not reused"
    );
    assert!(
        during.pct(0.99) < Duration::from_millis(200),
        "good client p99 {:?} while {n} silent connections were held",
        during.pct(0.99)
    );
}

/// Writes the next byte of each stream's bytes; returns whether any stream has more to send.
fn one_byte_each(streams: &mut [(TcpStream, Vec<u8>, usize)]) -> bool {
    let mut pending = false;
    for (s, bytes, at) in streams.iter_mut() {
        if *at < bytes.len() {
            s.write_all(&bytes[*at..*at + 1]).expect("trickle write");
            *at += 1;
            pending |= *at < bytes.len();
        }
    }
    pending
}

fn with_magic(rest: &[u8]) -> Vec<u8> {
    let mut v = nsq_protocol::MAGIC_V2.to_vec();
    v.extend_from_slice(rest);
    v
}

/// (b) Slowloris: commands sent one byte per 100 ms, and bodies declared large (the 1 MiB
/// `--max-msg-size`, the 5 MiB `--max-body-size`) that then trickle in.
///
/// The trickled PUBs must complete (a slow client is still a client), the declared sizes must
/// not turn into resident memory (the read buffer is reserved, not touched), and the good
/// client must not notice.
#[test]
fn slowloris_writers() {
    let limit = raise_nofile(4096);
    let n_lines = 200.min(limit as usize / 8);
    let n_big = 100.min(limit as usize / 8);
    let nsqd = TestNsqd::start(&[]);
    let pid = nsqd.pid();
    let addr = nsqd.tcp_addr();
    let baseline = pub_round_trips(addr, "probe", 300);
    let rss_before = rss_kib(pid);

    let connect = || {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s
    };
    // Whole commands, one byte at a time: "  V2" + "PUB slow\n" + size + body.
    let mut pub_bytes = b"PUB slow\n".to_vec();
    pub_bytes.extend_from_slice(&5u32.to_be_bytes());
    pub_bytes.extend_from_slice(b"slow!");
    let mut lines: Vec<(TcpStream, Vec<u8>, usize)> = (0..n_lines)
        .map(|_| (connect(), with_magic(&pub_bytes), 0))
        .collect();
    // Large declared bodies: the header at once, then the body one byte per tick.
    let mut big: Vec<(TcpStream, Vec<u8>, usize)> = (0..n_big)
        .map(|i| {
            let mut s = connect();
            let (line, size) = if i % 2 == 0 {
                (&b"PUB big\n"[..], 1_048_576u32)
            } else {
                (&b"MPUB big\n"[..], 5_242_880u32)
            };
            let mut head = with_magic(line);
            head.extend_from_slice(&size.to_be_bytes());
            s.write_all(&head).expect("write header");
            (s, vec![b'z'; 10_000], 0)
        })
        .collect();

    let prober = Prober::start(addr, "probe");
    let tick = Duration::from_millis(100);
    let start = Instant::now();
    // One byte to every connection per tick, for 6 s (the PUBs need 1.8 s).
    let mut rss_peak = rss_before;
    while start.elapsed() < Duration::from_secs(6) {
        let t = Instant::now();
        one_byte_each(&mut lines);
        one_byte_each(&mut big);
        rss_peak = rss_peak.max(rss_kib(pid));
        thread::sleep(tick.saturating_sub(t.elapsed()));
    }
    let probe = prober.finish();
    let rss_during = rss_kib(pid);
    let trickled = big.iter().map(|b| b.2).sum::<usize>();

    // Every trickled PUB was accepted.
    for (i, (s, bytes, at)) in lines.iter_mut().enumerate() {
        assert_eq!(*at, bytes.len(), "trickled PUB {i} not fully sent");
        s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
        let mut frame = [0u8; 10];
        s.read_exact(&mut frame)
            .unwrap_or_else(|e| panic!("trickled PUB {i}: no reply: {e}"));
        assert_eq!(&frame, b"\0\0\0\x06\0\0\0\0OK", "trickled PUB {i} reply");
    }
    let depth = nsqd.stats("&topic=slow")["topics"][0]["depth"].as_u64();
    assert_eq!(depth, Some(n_lines as u64), "slow topic depth");
    // The big bodies are still pending and their connections still open.
    let open = big.iter().filter(|b| still_open(&b.0)).count();
    drop(big);
    drop(lines);
    println!(
        "ABUSE slowloris: trickled_pubs={n_lines} (1 byte/100 ms, all OK) large_declared={n_big} \
         (1 MiB PUB / 5 MiB MPUB, {trickled} body bytes trickled, {open} still open) \
         rss_kib before={rss_before} peak={rss_peak} end={rss_during}; baseline {}; during {}",
        baseline.summary(),
        probe.summary()
    );
    assert_eq!(open, n_big, "slow large-body connections were dropped");
    let growth = rss_peak.saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024,
        "slow clients grew nsqd's RSS by {growth} KiB (declared {} MiB in total)",
        n_big / 2 * 6
    );
    assert!(
        probe.pct(0.99) < Duration::from_millis(200),
        "good client p99 {:?} during slowloris",
        probe.pct(0.99)
    );
}

/// (c) A subscriber that never reads its socket while the channel has a large backlog.
///
/// nsqd only pulls messages for a connection while its write buffer is below the client's
/// output buffer size, so the stuck subscriber holds at most its RDY count in flight and its
/// output buffer in memory; its in-flight messages time out (`--msg-timeout`) and go to the
/// other consumer of the channel, which receives every message.
#[test]
fn subscriber_that_never_reads() {
    const N: usize = 20_000;
    const BODY: usize = 1024;
    let nsqd = TestNsqd::start(&["--msg-timeout=2s"]);
    let pid = nsqd.pid();
    let rss_start = rss_kib(pid);
    let mut p = nsqd.client();
    let mut stuck = nsqd.client();
    stuck.identify(&serde_json::json!({"output_buffer_size": 65536}));
    stuck.expect_ok();
    // Create the channel first so the backlog goes to it.
    stuck.sub_ok("backlog", "c", 0);
    for chunk in 0..N / 500 {
        let bodies: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                let mut b = format!("{:08}", chunk * 500 + i).into_bytes();
                b.resize(BODY, b'.');
                b
            })
            .collect();
        p.mpub("backlog", &bodies);
        p.expect_ok();
    }
    let rss_backlog = rss_kib(pid);
    // The stuck subscriber takes as much as it is allowed, then never reads again.
    stuck.rdy(2500);
    let in_flight = || {
        nsqd.channel_stats("backlog", "c")
            .and_then(|c| c["in_flight_count"].as_u64())
            .unwrap_or(0)
    };
    // Bounded polling until the count stops moving (the socket buffers are full).
    let stuck_in_flight = wait_for(
        Duration::from_secs(5),
        "stuck subscriber's in-flight count to settle",
        || {
            let a = in_flight();
            thread::sleep(Duration::from_millis(100));
            let b = in_flight();
            (a > 0 && a == b).then_some(a)
        },
    );
    let rss_stuck = rss_kib(pid);

    let prober = Prober::start(nsqd.tcp_addr(), "probe");
    let mut good = nsqd.client();
    good.sub_ok("backlog", "c", 200);
    let start = Instant::now();
    let mut seen = vec![false; N];
    let mut unique = 0;
    let mut redelivered = 0;
    let mut rss_peak = rss_stuck;
    while unique < N {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "good consumer got only {unique} of {N} messages in 20 s"
        );
        let m = good.read_message(Duration::from_secs(5));
        let i: usize = std::str::from_utf8(&m.body[..8])
            .expect("ascii index")
            .parse()
            .expect("index");
        if m.attempts > 1 {
            redelivered += 1;
        }
        if !seen[i] {
            seen[i] = true;
            unique += 1;
        }
        good.fin(&m.id);
        if unique % 2000 == 0 {
            rss_peak = rss_peak.max(rss_kib(pid));
        }
    }
    let drain_time = start.elapsed();
    let probe = prober.finish();
    let rss_end = rss_kib(pid);
    let stuck_stats = nsqd.channel_stats("backlog", "c").expect("channel stats");
    println!(
        "ABUSE never-reading-subscriber: backlog={N}x{BODY} B stuck_in_flight={stuck_in_flight} \
         rss_kib start={rss_start} after_backlog={rss_backlog} stuck={rss_stuck} peak={rss_peak} end={rss_end}; \
         good consumer got all {N} in {drain_time:?} ({redelivered} redelivered after the stuck one's timeout); \
         during {}; channel in_flight_count now {}",
        probe.summary(),
        stuck_stats["in_flight_count"]
    );
    assert!(
        stuck_in_flight <= 2500,
        "stuck subscriber holds {stuck_in_flight} > its RDY"
    );
    assert!(
        rss_stuck <= rss_backlog + 16 * 1024,
        "a subscriber that never reads grew RSS from {rss_backlog} to {rss_stuck} KiB"
    );
    // Draining a backlog once raises RSS by about the backlog's size (freed batches stay with
    // the allocator; a second backlog of the same size reuses them), so the bound is two
    // backlogs, not one.
    assert!(
        rss_peak <= 2 * rss_backlog + 16 * 1024,
        "RSS peaked at {rss_peak} KiB (backlog held {rss_backlog} KiB)"
    );
    assert!(
        probe.pct(0.99) < Duration::from_millis(200),
        "good publisher p99 {:?}",
        probe.pct(0.99)
    );
    drop(stuck);
}

/// (d) Huge declared lengths get NSQ's error at once, before any body is sent, and do not
/// allocate: 200 connections each declaring a 2 GiB message leave RSS where it was.
#[test]
fn huge_declared_lengths_are_refused_without_allocating() {
    let nsqd = TestNsqd::start(&[]);
    let pid = nsqd.pid();
    let addr = nsqd.tcp_addr();
    let baseline = pub_round_trips(addr, "probe", 100);
    let rss_before = rss_kib(pid);
    let max = i32::MAX as u32;
    let mut mpub_count = b"MPUB t\n".to_vec();
    mpub_count.extend_from_slice(&8u32.to_be_bytes());
    mpub_count.extend_from_slice(&max.to_be_bytes());
    mpub_count.extend_from_slice(&1u32.to_be_bytes());
    let cases: Vec<(Vec<u8>, String)> = vec![
        (
            [&b"PUB t\n"[..], &max.to_be_bytes()].concat(),
            format!("E_BAD_MESSAGE PUB message too big {max} > 1048576"),
        ),
        (
            [&b"DPUB t 10\n"[..], &max.to_be_bytes()].concat(),
            format!("E_BAD_MESSAGE DPUB message too big {max} > 1048576"),
        ),
        (
            [&b"PUB t\n"[..], &u32::MAX.to_be_bytes()].concat(),
            "E_BAD_MESSAGE PUB invalid message body size -1".to_string(),
        ),
        (
            [&b"MPUB t\n"[..], &max.to_be_bytes()].concat(),
            format!("E_BAD_BODY MPUB body too big {max} > 5242880"),
        ),
        (
            mpub_count,
            format!("E_BAD_BODY MPUB invalid message count {max}"),
        ),
        (
            [&b"IDENTIFY\n"[..], &max.to_be_bytes()].concat(),
            format!("E_BAD_BODY IDENTIFY body too big {max} > 5242880"),
        ),
        (
            [&b"AUTH\n"[..], &max.to_be_bytes()].concat(),
            format!("E_BAD_BODY AUTH body too big {max} > 5242880"),
        ),
    ];
    let rounds = 30;
    let t = Instant::now();
    for round in 0..rounds {
        for (input, want) in &cases {
            let mut c = RawClient::connect(addr);
            c.send_raw(input);
            let got = c.expect_error("E_");
            assert_eq!(
                &got,
                want,
                "round {round}, input {:?}",
                String::from_utf8_lossy(input)
            );
            c.expect_closed();
        }
    }
    let elapsed = t.elapsed();
    let rss_after = rss_kib(pid);
    let after = pub_round_trips(addr, "probe", 100);
    println!(
        "ABUSE huge-declared-lengths: {} hostile headers ({} kinds x {rounds}) refused in {elapsed:?}, \
         rss_kib before={rss_before} after={rss_after}; baseline {}; after {}",
        cases.len() * rounds,
        cases.len(),
        baseline.summary(),
        after.summary()
    );
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 8 * 1024,
        "{} refused 2 GiB declarations grew RSS by {growth} KiB",
        cases.len() * rounds
    );
}
