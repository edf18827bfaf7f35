//! End-to-end runs of the prime-checking job queue against the real nsqd: producer, two
//! worker processes and the tally, on a range given by `NSQ_PRIMES_END` (default 100,000,
//! π = 9592; CI can set 1,000,000, π = 78498).

#[path = "../../../nsq-tools/tests/it/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use harness::{num, send_signal, wait_exit, wait_until, Guard, TestNsqd};

const BIN: &str = env!("CARGO_BIN_EXE_nsq-primes");
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// π(n) for the ranges the tests may run.
fn prime_count(end: u64) -> u64 {
    match end {
        10_000 => 1229,
        100_000 => 9592,
        1_000_000 => 78498,
        10_000_000 => 664_579,
        other => panic!("no known prime count for 1..={other}"),
    }
}

fn range_end() -> u64 {
    std::env::var("NSQ_PRIMES_END")
        .ok()
        .map(|s| s.parse().expect("NSQ_PRIMES_END"))
        .unwrap_or(100_000)
}

fn spawn(args: &[&str]) -> Guard {
    Guard(
        Command::new(BIN)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nsq-primes"),
    )
}

fn run_ok(args: &[&str]) {
    let mut c = spawn(args);
    let status = wait_exit(&mut c, RUN_TIMEOUT, "nsq-primes");
    assert!(status.success(), "nsq-primes {args:?}: {status}");
}

/// Collects a child's stdout lines on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            eprintln!("[tally] {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

/// `RESULT checked=.. primes=.. duplicates=..` → (checked, primes, duplicates).
fn parse_result(lines: &[String]) -> (u64, u64, u64) {
    let line = lines
        .iter()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in {lines:?}"));
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    (field("checked"), field("primes"), field("duplicates"))
}

struct Run {
    nsqd: TestNsqd,
    addr: String,
    end: String,
}

impl Run {
    fn start() -> Run {
        // A short message timeout so a killed worker's numbers come back quickly.
        let nsqd = TestNsqd::start(&["--msg-timeout=2s"]);
        let addr = format!("--nsqd-tcp-address={}", nsqd.tcp);
        Run {
            nsqd,
            addr,
            end: format!("--end={}", range_end()),
        }
    }

    fn produce(&self) {
        run_ok(&["produce", &self.addr, "--start=1", &self.end]);
        let t = self.nsqd.topic_stats("numbers").unwrap();
        assert_eq!(num(&t, "message_count") as u64, range_end());
    }

    fn tally(&self) -> Guard {
        // Create the channels first so nothing published before they subscribe is missed.
        self.nsqd.create_channel("results", "tally");
        self.nsqd.create_channel("numbers", "workers");
        let expect = format!("--expect={}", prime_count(range_end()));
        spawn(&[
            "tally",
            &self.addr,
            "--start=1",
            &self.end,
            &expect,
            "--status-every=2s",
        ])
    }

    fn worker(&self) -> Guard {
        spawn(&["work", &self.addr, "--workers=1", "--batch=100"])
    }
}

fn finish(mut tally: Guard, workers: Vec<Guard>) -> (u64, u64, u64) {
    let rx = lines_of(&mut tally);
    let status = wait_exit(&mut tally, RUN_TIMEOUT, "tally");
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "tally failed: {status}: {lines:?}");
    for mut w in workers {
        if w.try_wait().unwrap().is_none() {
            send_signal(w.id(), "TERM");
            assert!(wait_exit(&mut w, Duration::from_secs(30), "worker").success());
        }
    }
    parse_result(&lines)
}

#[test]
fn two_workers_count_every_prime_once() {
    let run = Run::start();
    let tally = run.tally();
    run.produce();
    let workers = vec![run.worker(), run.worker()];
    let (checked, primes, _dups) = finish(tally, workers);
    assert_eq!(checked, range_end());
    assert_eq!(primes, prime_count(range_end()));
    // Every number was finished; nothing left in flight.
    let c = run.nsqd.channel_stats("numbers", "workers").unwrap();
    assert_eq!(num(&c, "depth") + num(&c, "in_flight_count"), 0, "{c}");
}

#[test]
fn killing_a_worker_mid_run_loses_and_double_counts_nothing() {
    let run = Run::start();
    let tally = run.tally();
    run.produce();
    let mut victim = run.worker();
    let survivor = run.worker();
    let total = range_end() as i64;
    // Let the victim get going (a tenth of the verdicts in), then SIGKILL it with work in
    // flight: its unfinished numbers are redelivered after --msg-timeout.
    wait_until(RUN_TIMEOUT, "a tenth of the verdicts", || {
        run.nsqd
            .topic_stats("results")
            .is_some_and(|t| num(&t, "message_count") >= total / 10)
    });
    victim.kill().unwrap();
    victim.wait().unwrap();
    let (checked, primes, dups) = finish(tally, vec![survivor]);
    eprintln!("duplicates ignored after the kill: {dups}");
    assert_eq!(checked, range_end());
    assert_eq!(primes, prime_count(range_end()));
    let c = run.nsqd.channel_stats("numbers", "workers").unwrap();
    assert_eq!(num(&c, "depth") + num(&c, "in_flight_count"), 0, "{c}");
    // Every verdict published was either counted, ignored as a duplicate, or is still
    // waiting (a late duplicate) in the tally's channel: none vanished.
    let results = run.nsqd.topic_stats("results").unwrap();
    let left = run.nsqd.channel_stats("results", "tally").unwrap();
    assert_eq!(num(&left, "in_flight_count"), 0, "{left}");
    let waiting = (num(&left, "depth") + num(&left, "deferred_count")) as u64;
    assert_eq!(
        num(&results, "message_count") as u64,
        checked + dups + waiting
    );
}
