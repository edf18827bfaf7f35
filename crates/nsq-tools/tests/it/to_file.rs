//! `nsq_to_file` against the real nsqd.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{
    daemon_bin, http, num, send_signal, wait_exit, wait_until, Guard, TestNsqd, WAIT,
};
use crate::tool;

fn bodies(n: usize, prefix: &str) -> Vec<String> {
    (0..n)
        .map(|i| format!("{prefix}-{i:05}-{}", "y".repeat(i % 11)))
        .collect()
}

fn publish(nsqd: &TestNsqd, topic: &str, bodies: &[String]) {
    for chunk in bodies.chunks(500) {
        nsqd.mpub(topic, chunk);
    }
}

fn spawn_to_file(nsqd: &TestNsqd, topic: &str, out: &Path, extra: &[&str]) -> Guard {
    Guard(
        tool("nsq_to_file")
            .arg(format!("--topic={topic}"))
            .arg(format!("--nsqd-tcp-address={}", nsqd.tcp))
            .arg(format!("--output-dir={}", out.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nsq_to_file"),
    )
}

/// Waits until the channel has delivered and finished `total` messages.
fn wait_drained(nsqd: &TestNsqd, topic: &str, channel: &str, total: usize) {
    wait_until(WAIT, "all messages finished", || {
        let Some(c) = nsqd.channel_stats(topic, channel) else {
            return false;
        };
        num(&c, "depth") == 0
            && num(&c, "in_flight_count") == 0
            && num(&c, "deferred_count") == 0
            && num(&c, "message_count") as usize >= total
    });
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn read_file(p: &Path) -> String {
    let raw = std::fs::read(p).unwrap();
    if p.extension().is_some_and(|e| e == "gz") {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(raw).unwrap()
    }
}

fn stop(child: &mut Guard) {
    send_signal(child.id(), "INT");
    let status = wait_exit(child, WAIT, "nsq_to_file after SIGINT");
    assert!(status.success(), "nsq_to_file exit status {status}");
}

#[test]
fn writes_exactly_the_published_bodies() {
    let nsqd = TestNsqd::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let want = bodies(1500, "plain");
    publish(&nsqd, "logs", &want);
    let mut child = spawn_to_file(&nsqd, "logs", out.path(), &["--sync-interval=200ms"]);
    wait_drained(&nsqd, "logs", "nsq_to_file", want.len());
    stop(&mut child);
    let files = files_in(out.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let short = host.split('.').next().unwrap();
    assert!(
        name.starts_with(&format!("logs.{short}.")) && name.ends_with(".log"),
        "{name}"
    );
    let text = read_file(&files[0]);
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got, want);
    assert!(text.ends_with('\n'));
}

#[test]
fn gzip_output_is_concatenated_members() {
    let nsqd = TestNsqd::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let first = bodies(700, "gz1");
    publish(&nsqd, "zipped", &first);
    let mut child = spawn_to_file(
        &nsqd,
        "zipped",
        out.path(),
        &[
            "--gzip",
            "--gzip-level=9",
            "--sync-interval=100ms",
            "--max-in-flight=50",
        ],
    );
    wait_drained(&nsqd, "zipped", "nsq_to_file", first.len());
    let second = bodies(300, "gz2");
    publish(&nsqd, "zipped", &second);
    wait_drained(&nsqd, "zipped", "nsq_to_file", first.len() + second.len());
    stop(&mut child);
    let files = files_in(out.path());
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].to_string_lossy().into_owned();
    assert!(
        name.contains("-000000.") && name.ends_with(".log.gz"),
        "{name}"
    );
    let raw = std::fs::read(&files[0]).unwrap();
    // Several syncs → several gzip members (each starts with the gzip magic).
    let members = raw.windows(3).filter(|w| w == &[0x1f, 0x8b, 0x08]).count();
    assert!(members > 1, "only {members} gzip member(s)");
    let text = read_file(&files[0]);
    let got: Vec<&str> = text.lines().collect();
    let want: Vec<&String> = first.iter().chain(&second).collect();
    assert_eq!(got, want);
}

#[test]
fn rotates_by_size_through_a_work_dir() {
    let nsqd = TestNsqd::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let want = bodies(600, "rot");
    publish(&nsqd, "big", &want);
    let mut child = spawn_to_file(
        &nsqd,
        "big",
        out.path(),
        &[
            "--rotate-size=2000",
            "--sync-interval=100ms",
            &format!("--work-dir={}", work.path().display()),
            "--datetime-format=%Y%m%d",
        ],
    );
    wait_drained(&nsqd, "big", "nsq_to_file", want.len());
    stop(&mut child);
    assert!(
        files_in(work.path()).is_empty(),
        "work dir not emptied: {:?}",
        files_in(work.path())
    );
    let files = files_in(out.path());
    assert!(files.len() >= 5, "expected several files, got {files:?}");
    let mut got = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.contains(&format!("-{i:06}.")), "{name} (#{i})");
        let text = read_file(f);
        // A file is rotated once it exceeds the size: at most one line over.
        assert!(text.len() < 2000 + 40, "{name} is {} bytes", text.len());
        got.extend(text.lines().map(str::to_owned));
    }
    assert_eq!(got, want);
}

#[test]
fn kill_9_loses_nothing_finished() {
    // A short msg-timeout so that what the killed tool held comes back quickly.
    let nsqd = TestNsqd::start(&["--msg-timeout=1s"]);
    let out1 = tempfile::tempdir().unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let total = 20_000;
    let want = bodies(total, "crash");
    publish(&nsqd, "dur", &want);
    let mut child = spawn_to_file(
        &nsqd,
        "dur",
        out1.path(),
        &["--max-in-flight=2", "--sync-interval=1h"],
    );
    let file_lines = |dir: &Path| -> Vec<String> {
        files_in(dir)
            .iter()
            .flat_map(|f| {
                let text = read_file(f);
                // Only complete lines: the kill may interrupt a write.
                let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
                complete.lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    };
    wait_until(WAIT, "some lines written", || {
        files_in(out1.path())
            .first()
            .is_some_and(|f| std::fs::metadata(f).unwrap().len() > 2000)
    });
    send_signal(child.id(), "KILL");
    let _ = wait_exit(&mut child, WAIT, "killed nsq_to_file");
    wait_until(WAIT, "in-flight messages timed out", || {
        let c = nsqd.channel_stats("dur", "nsq_to_file").unwrap();
        num(&c, "in_flight_count") == 0 && num(&c, "client_count") == 0
    });
    let c = nsqd.channel_stats("dur", "nsq_to_file").unwrap();
    let remaining = (num(&c, "depth") + num(&c, "deferred_count")) as usize;
    assert!(
        remaining > 0,
        "the tool finished everything before the kill"
    );
    let written = file_lines(out1.path());
    let finished = total - remaining;
    // Every finished message was written (and synced) before its FIN.
    assert!(
        written.len() >= finished,
        "{finished} finished but only {} in the file",
        written.len()
    );
    let written_set: HashSet<&String> = written.iter().collect();
    assert!(written.iter().all(|l| want.contains(l) || l.is_empty()));

    // A new consumer drains the rest: together nothing is missing.
    let mut child = spawn_to_file(&nsqd, "dur", out2.path(), &["--sync-interval=100ms"]);
    wait_until(WAIT, "rest drained", || {
        let c = nsqd.channel_stats("dur", "nsq_to_file").unwrap();
        num(&c, "depth") == 0 && num(&c, "in_flight_count") == 0 && num(&c, "deferred_count") == 0
    });
    stop(&mut child);
    let rest = file_lines(out2.path());
    assert_eq!(rest.len(), remaining);
    let rest_set: HashSet<&String> = rest.iter().collect();
    for b in &want {
        assert!(
            written_set.contains(b) || rest_set.contains(b),
            "{b} was lost"
        );
    }
}

#[test]
fn sigint_syncs_and_finishes_what_is_held() {
    let nsqd = TestNsqd::start(&[]);
    let out = tempfile::tempdir().unwrap();
    let want = bodies(50, "held");
    publish(&nsqd, "held", &want);
    // Never syncs by itself: the messages stay held (in flight) until SIGINT.
    let mut child = spawn_to_file(&nsqd, "held", out.path(), &["--sync-interval=1h"]);
    wait_until(WAIT, "messages held in flight", || {
        nsqd.channel_stats("held", "nsq_to_file")
            .is_some_and(|c| num(&c, "in_flight_count") == 50)
    });
    stop(&mut child);
    let c = nsqd.channel_stats("held", "nsq_to_file").unwrap();
    assert_eq!(
        (num(&c, "depth"), num(&c, "in_flight_count")),
        (0, 0),
        "{c}"
    );
    let files = files_in(out.path());
    assert_eq!(files.len(), 1);
    let text = read_file(&files[0]);
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
}

#[test]
fn bad_flags_fail_clearly() {
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--bogus"], 2, "--bogus"),
        (
            vec!["--topic=t"],
            1,
            "--nsqd-tcp-address or --lookupd-http-address required",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--gzip-level=0",
            ],
            1,
            "invalid --gzip-level value (0), should be 1-9",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--gzip",
                "--filename-format=<TOPIC>.log",
            ],
            1,
            "missing <REV> in --filename-format",
        ),
        (
            vec!["--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "use --topic to list at least one topic",
        ),
        (
            vec!["--topic=t", "--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "failed to connect to nsqd 127.0.0.1:1",
        ),
        (
            vec![
                "--topic=t",
                "--lookupd-http-address=127.0.0.1:1",
                "--topic-pattern=x",
            ],
            1,
            "--topic and --topic-pattern cannot be used together",
        ),
        (
            vec!["--topic-pattern=x", "--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "--topic-pattern requires --lookupd-http-address",
        ),
        (
            vec!["--topic-pattern=(", "--lookupd-http-address=127.0.0.1:1"],
            1,
            "invalid --topic-pattern",
        ),
    ];
    for (args, code, needle) in cases {
        let (status, _, err) = crate::harness::run_with_stdin(
            tool("nsq_to_file")
                .args(&args)
                .arg("--output-dir=/nonexistent-nsq-rs"),
            b"",
            Duration::from_secs(20),
        );
        assert_eq!(status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{err}"
        );
    }
}

#[test]
fn topic_pattern_logs_matching_topics_found_through_lookupd() {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (ltcp, lhttp) = (free(), free());
    let _lookupd = Guard(
        std::process::Command::new(daemon_bin("nsqlookupd"))
            .arg(format!("--tcp-address=127.0.0.1:{ltcp}"))
            .arg(format!("--http-address=127.0.0.1:{lhttp}"))
            .arg("--broadcast-address=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nsqlookupd"),
    );
    let lookupd_http: std::net::SocketAddr = format!("127.0.0.1:{lhttp}").parse().unwrap();
    wait_until(Duration::from_secs(10), "nsqlookupd up", || {
        std::net::TcpStream::connect(lookupd_http).is_ok()
    });
    let nsqd = TestNsqd::start(&[
        &format!("--lookupd-tcp-address=127.0.0.1:{ltcp}"),
        "--broadcast-address=127.0.0.1",
    ]);
    for t in ["logs.a", "logs.b", "other"] {
        publish(&nsqd, t, &bodies(20, t));
    }
    wait_until(Duration::from_secs(10), "topics registered", || {
        let (status, body) = http(lookupd_http, "GET", "/topics", b"");
        status == 200 && String::from_utf8_lossy(&body).matches("\"").count() >= 8
    });
    let out = tempfile::tempdir().unwrap();
    let mut child = Guard(
        tool("nsq_to_file")
            .arg(format!("--lookupd-http-address=127.0.0.1:{lhttp}"))
            .arg("--topic-pattern=^logs\\.")
            .arg("--topic-refresh=200ms")
            .arg("--sync-interval=100ms")
            .arg(format!("--output-dir={}", out.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nsq_to_file"),
    );
    wait_drained(&nsqd, "logs.a", "nsq_to_file", 20);
    wait_drained(&nsqd, "logs.b", "nsq_to_file", 20);
    stop(&mut child);
    let names: Vec<String> = files_in(out.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.starts_with("logs.a.")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("logs.b.")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("other.")), "{names:?}");
    assert!(nsqd.channel_stats("other", "nsq_to_file").is_none());
}
