//! End-to-end tests of `nsq_tail`, `to_nsq`, `nsq_stat`, `nsq_to_file`, `nsq_to_nsq` and
//! `nsq_to_http` against the real nsqd.

mod harness;
mod secure;
mod to_file;
mod to_http;
mod to_nsq_copy;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{num, run_with_stdin, send_signal, wait_exit, wait_until, Guard, TestNsqd, WAIT};

pub(crate) fn tool(name: &str) -> Command {
    let path = match name {
        "nsq_tail" => env!("CARGO_BIN_EXE_nsq_tail"),
        "to_nsq" => env!("CARGO_BIN_EXE_to_nsq"),
        "nsq_stat" => env!("CARGO_BIN_EXE_nsq_stat"),
        "nsq_to_file" => env!("CARGO_BIN_EXE_nsq_to_file"),
        "nsq_to_nsq" => env!("CARGO_BIN_EXE_nsq_to_nsq"),
        "nsq_to_http" => env!("CARGO_BIN_EXE_nsq_to_http"),
        other => panic!("unknown tool {other}"),
    };
    Command::new(path)
}

fn to_nsq(nsqds: &[&TestNsqd], topic: &str, input: &[u8], extra: &[&str]) {
    let mut cmd = tool("to_nsq");
    cmd.arg(format!("--topic={topic}"));
    for n in nsqds {
        cmd.args(["--nsqd-tcp-address", &n.tcp_addr()]);
    }
    cmd.args(extra);
    let (status, out, err) = run_with_stdin(&mut cmd, input, WAIT);
    assert!(status.success(), "to_nsq failed: {status}\n{out}\n{err}");
}

/// Runs nsq_tail to completion (it must exit by itself) and returns its stdout.
fn tail(args: &[&str]) -> String {
    let mut cmd = tool("nsq_tail");
    cmd.args(args);
    let (status, out, err) = run_with_stdin(&mut cmd, b"", WAIT);
    assert!(
        status.success(),
        "nsq_tail failed: {status}\nstdout: {out}\nstderr: {err}"
    );
    out
}

#[test]
fn to_nsq_lines_come_out_of_nsq_tail() {
    let nsqd = TestNsqd::start(&[]);
    let lines: Vec<String> = (0..200)
        .map(|i| format!("line {i} {}", "x".repeat(i % 7)))
        .collect();
    // Empty records are skipped; the last record needs no trailing delimiter.
    let mut input = lines.join("\n\n");
    input.insert(0, '\n');
    to_nsq(&[&nsqd], "lines", input.as_bytes(), &[]);
    assert_eq!(
        num(&nsqd.topic_stats("lines").unwrap(), "message_count"),
        200
    );

    // The messages wait in the topic for its first channel: nsq_tail's ephemeral one.
    let out = tail(&[
        "--topic",
        "lines",
        "-n",
        "200",
        &format!("--nsqd-tcp-address={}", nsqd.tcp),
    ]);
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, lines);
}

#[test]
fn go_style_flags_and_custom_delimiter() {
    let nsqd = TestNsqd::start(&[]);
    nsqd.create_channel("prime", "c");
    to_nsq(&[&nsqd], "prime", b"2;3;5;7;11;13;", &["-delimiter", ";"]);
    let addr = nsqd.tcp_addr();
    let out = tail(&[
        "-topic",
        "prime",
        "-channel=c",
        "-n",
        "5",
        "-nsqd-tcp-address",
        &addr,
    ]);
    assert_eq!(out, "2\n3\n5\n7\n11\n");
    // The one not shown is still there; nothing in flight.
    wait_until(WAIT, "finished/requeued", || {
        let c = nsqd.channel_stats("prime", "c").unwrap();
        num(&c, "in_flight_count") == 0 && num(&c, "depth") + num(&c, "deferred_count") == 1
    });
    // The exact command line of the walkthrough.
    to_nsq(&[&nsqd], "prime", b"17\n19\n23\n29\n31\n", &[]);
    let out = tail(&[
        "--topic",
        "prime",
        "-n",
        "5",
        &format!("--nsqd-tcp-address={addr}"),
        "--channel=c",
    ]);
    assert_eq!(out, "13\n17\n19\n23\n29\n");
}

#[test]
fn print_topic_with_two_topics() {
    let nsqd = TestNsqd::start(&[]);
    to_nsq(&[&nsqd], "alpha", b"a1\na2\na3\n", &[]);
    to_nsq(&[&nsqd], "beta", b"b1\nb2\n", &[]);
    let addr = format!("--nsqd-tcp-address={}", nsqd.tcp);
    let out = tail(&[
        "--topic=alpha",
        "--topic=beta",
        "--print-topic",
        "-n",
        "5",
        &addr,
    ]);
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(
        got,
        [
            "alpha | a1",
            "alpha | a2",
            "alpha | a3",
            "beta | b1",
            "beta | b2"
        ]
    );
    // Per topic, order is kept.
    let alpha: Vec<&str> = out.lines().filter(|l| l.starts_with("alpha")).collect();
    assert_eq!(alpha, ["alpha | a1", "alpha | a2", "alpha | a3"]);
}

#[test]
fn to_nsq_publishes_to_every_nsqd_and_respects_rate() {
    let a = TestNsqd::start(&[]);
    let b = TestNsqd::start(&[]);
    let start = Instant::now();
    to_nsq(
        &[&a, &b],
        "both",
        b"1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n",
        &["--rate", "20"],
    );
    let took = start.elapsed();
    // 10 messages at 20/s: the first goes at once, then one every 50 ms.
    assert!(
        took >= Duration::from_millis(400),
        "rate not applied: {took:?}"
    );
    for n in [&a, &b] {
        assert_eq!(num(&n.topic_stats("both").unwrap(), "message_count"), 10);
    }
}

#[test]
fn sigint_stops_nsq_tail_with_nothing_in_flight() {
    let nsqd = TestNsqd::start(&[]);
    nsqd.create_channel("stream", "tailer");
    let total = 3000;
    // 1 KiB bodies: the stdout pipe fills up, so messages pile up in flight.
    let bodies: Vec<String> = (0..total)
        .map(|i| format!("m{i:05}{}", "x".repeat(1018)))
        .collect();
    for chunk in bodies.chunks(500) {
        nsqd.mpub("stream", chunk);
    }
    let mut child = Guard(
        tool("nsq_tail")
            .args([
                "--topic",
                "stream",
                "--channel",
                "tailer",
                "--max-in-flight",
                "100",
            ])
            .arg(format!("--nsqd-tcp-address={}", nsqd.tcp))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nsq_tail"),
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut printed = Vec::new();
    let mut line = String::new();
    // Read slowly so that messages pile up in flight, then interrupt.
    while printed.len() < 20 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "nsq_tail stopped early"
        );
        printed.push(line.trim_end().to_owned());
    }
    wait_until(WAIT, "messages in flight", || {
        num(
            &nsqd.channel_stats("stream", "tailer").unwrap(),
            "in_flight_count",
        ) > 0
    });
    let before = nsqd.channel_stats("stream", "tailer").unwrap();
    assert!(
        num(&before, "in_flight_count") > 0,
        "nothing in flight before SIGINT: {before}"
    );
    send_signal(child.id(), "INT");
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        printed.push(line.trim_end().to_owned());
    }
    let status = wait_exit(&mut child, WAIT, "nsq_tail after SIGINT");
    assert!(status.success(), "exit status {status}");
    assert!(
        printed.len() < total,
        "everything was printed; the test proves nothing"
    );
    // Printed messages are finished, the rest are back in the queue: none lost.
    assert_eq!(printed, bodies[..printed.len()]);
    wait_until(WAIT, "channel settled", || {
        let c = nsqd.channel_stats("stream", "tailer").unwrap();
        num(&c, "in_flight_count") == 0
            && num(&c, "client_count") == 0
            && (num(&c, "depth") + num(&c, "deferred_count")) as usize == total - printed.len()
    });
}

#[test]
fn bad_flags_and_unreachable_addresses_fail_clearly() {
    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        ("nsq_tail", vec!["--bogus"], 2, "--bogus"),
        (
            "nsq_tail",
            vec!["-n", "abc", "--topic=t", "--nsqd-tcp-address=127.0.0.1:1"],
            2,
            "abc",
        ),
        (
            "nsq_tail",
            vec!["--topic=t"],
            1,
            "--nsqd-tcp-address or --lookupd-http-address required",
        ),
        (
            "nsq_tail",
            vec!["--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "--topic required",
        ),
        (
            "nsq_tail",
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--lookupd-http-address=127.0.0.1:1",
            ],
            1,
            "not both",
        ),
        (
            "nsq_tail",
            vec!["--topic=t", "--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "failed to connect to nsqd 127.0.0.1:1",
        ),
        (
            "nsq_tail",
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--consumer-opt=nope,1",
            ],
            1,
            "nope",
        ),
        (
            "to_nsq",
            vec!["--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "--topic required",
        ),
        (
            "to_nsq",
            vec!["--topic=t"],
            1,
            "--nsqd-tcp-address required",
        ),
        (
            "to_nsq",
            vec![
                "--topic=t",
                "--delimiter=ab",
                "--nsqd-tcp-address=127.0.0.1:1",
            ],
            1,
            "single byte",
        ),
        (
            "to_nsq",
            vec!["--topic=t", "--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "failed to connect to nsqd 127.0.0.1:1",
        ),
        ("to_nsq", vec!["--topic=t", "--rate=x"], 2, "x"),
        (
            "nsq_stat",
            vec!["--topic=t"],
            1,
            "--topic and --channel are required",
        ),
        (
            "nsq_stat",
            vec!["--topic=t", "--channel=c"],
            1,
            "--nsqd-http-address or --lookupd-http-address required",
        ),
        (
            "nsq_stat",
            vec![
                "--topic=t",
                "--channel=c",
                "--nsqd-http-address=http://127.0.0.1:1",
            ],
            1,
            "should not contain scheme",
        ),
        (
            "nsq_stat",
            vec![
                "--topic=t",
                "--channel=c",
                "--nsqd-http-address=127.0.0.1:1",
            ],
            1,
            "failed to get topic producers",
        ),
        (
            "nsq_stat",
            vec![
                "--topic=t",
                "--channel=c",
                "--count=0",
                "--nsqd-http-address=127.0.0.1:1",
            ],
            1,
            "--count should be positive",
        ),
        ("nsq_stat", vec!["--interval=2x"], 2, "2x"),
    ];
    for (name, args, code, needle) in cases {
        let (status, out, err) = run_with_stdin(tool(name).args(&args), b"", WAIT);
        assert_eq!(
            status.code(),
            Some(code),
            "{name} {args:?}: {status}\n{out}\n{err}"
        );
        assert!(
            err.contains(needle),
            "{name} {args:?}: stderr lacks {needle:?}:\n{err}"
        );
    }
}

#[test]
fn version_flags() {
    for name in [
        "nsq_tail",
        "to_nsq",
        "nsq_stat",
        "nsq_to_file",
        "nsq_to_nsq",
    ] {
        for flag in ["--version", "-version"] {
            let (status, out, _) = run_with_stdin(tool(name).arg(flag), b"", WAIT);
            assert!(status.success());
            assert!(
                out.starts_with(&format!("{name} v1.3.0 (nsq-rs ")),
                "{name} {flag}: {out}"
            );
        }
    }
}

#[test]
fn nsq_stat_prints_the_table() {
    let nsqd = TestNsqd::start(&[]);
    nsqd.create_channel("stats", "ch");
    let bodies: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    nsqd.mpub("stats", &bodies);
    let mut cmd = tool("nsq_stat");
    cmd.args([
        "--topic",
        "stats",
        "--channel",
        "ch",
        "--count",
        "2",
        "--interval",
        "100ms",
    ])
    .arg(format!("--nsqd-http-address={}", nsqd.http));
    let (status, out, err) = run_with_stdin(&mut cmd, b"", WAIT);
    assert!(status.success(), "{status}\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(
        lines[0],
        "------rate------+----------------depth----------------+--------------metadata---------------"
    );
    assert_eq!(
        lines[1],
        "ingress  egress |   total     mem    disk inflt   def |     req     t-o         msgs clients"
    );
    for row in &lines[2..] {
        assert_eq!(
            *row,
            "      0       0 |      10      10       0     0     0 |       0       0           10       0"
        );
    }

    // Rates: 30 messages arrive between two polls 1 s apart, none consumed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_nsq_stat"))
        .args([
            "--topic",
            "stats",
            "--channel",
            "ch",
            "--count",
            "1",
            "--interval",
            "1s",
        ])
        .arg(format!("--nsqd-http-address={}", nsqd.http))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut header = String::new();
    reader.read_line(&mut header).unwrap();
    let more: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    nsqd.mpub("stats", &more);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert!(wait_exit(&mut child, WAIT, "nsq_stat").success());
    let row = rest.lines().last().unwrap();
    assert_eq!(
        row,
        "     30       0 |      40      40       0     0     0 |       0       0           40       0"
    );
}

/// nsq-rs policies: a channel whose topic has a policy gets a fourth group of columns
/// (expired, dropped, dead-lettered totals); Go's three groups are unchanged before it.
#[test]
fn nsq_stat_shows_policy_counters() {
    let nsqd = TestNsqd::start(&[]);
    nsqd.create_channel("ring", "ch");
    let (status, body) = harness::http(
        nsqd.http,
        "POST",
        "/topic/config?topic=ring",
        br#"{"max_depth":5,"overflow":"drop_oldest"}"#,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let bodies: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    nsqd.mpub("ring", &bodies);
    let mut cmd = tool("nsq_stat");
    cmd.args([
        "--topic=ring",
        "--channel=ch",
        "--count=1",
        "--interval=100ms",
    ])
    .arg(format!("--nsqd-http-address={}", nsqd.http));
    let (status, out, err) = run_with_stdin(&mut cmd, b"", WAIT);
    assert!(status.success(), "{status}\n{out}\n{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].ends_with("+-------policies--------"), "{out}");
    assert!(
        lines[1].ends_with("clients |     exp   drop   dead"),
        "{out}"
    );
    assert_eq!(
        lines[2],
        "      0       0 |       5       5       0     0     0 |       0       0           10       0 |       0      5      0"
    );
}

/// nsq_stat against an nsqd that requires TLS: given its HTTPS address as `https://`, and
/// given its plain HTTP address, which answers `403 TLS_REQUIRED` with the HTTPS port (Go's
/// `http_api` retries there; so do we). The CA is passed with `--http-client-tls-root-ca-file`.
#[test]
fn nsq_stat_over_https() {
    let pki = nsq_http_client::testing::Pki::new();
    let nsqd = TestNsqd::start(&[
        "--https-address=127.0.0.1:0",
        &format!("--tls-cert={}", pki.server_cert.display()),
        &format!("--tls-key={}", pki.server_key.display()),
        "--tls-required=true",
    ]);
    let https = nsqd.https.expect("nsqd HTTPS address");
    // Plain HTTP is refused by nsqd itself, so what follows can only have gone over TLS.
    let (status, body) = harness::http(nsqd.http, "GET", "/stats?format=json", b"");
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let ca = format!("--http-client-tls-root-ca-file={}", pki.ca.display());
    let stat = |addr: String, ca: Option<&str>| {
        let mut cmd = tool("nsq_stat");
        cmd.args([
            "--topic=tls_stats",
            "--channel=ch",
            "--count=1",
            "--interval=100ms",
        ])
        .arg(format!("--nsqd-http-address={addr}"));
        if let Some(ca) = ca {
            cmd.arg(ca);
        }
        run_with_stdin(&mut cmd, b"", WAIT)
    };
    // Create the topic and channel and publish over HTTPS with the same client the tools use.
    for path in [
        "/topic/create?topic=tls_stats",
        "/channel/create?topic=tls_stats&channel=ch",
        "/mpub?topic=tls_stats",
    ] {
        let (status, body) = nsq_http_client::testing::request_blocking(
            &pki.ca,
            nsq_http_client::Method::POST,
            &format!("https://{https}{path}"),
            "1\n2\n3",
        );
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let row = "      0       0 |       3       3       0     0     0 |       0       0            3       0";
    for addr in [format!("https://{https}"), nsqd.http.to_string()] {
        let (status, out, err) = stat(addr.clone(), Some(&ca));
        assert!(status.success(), "{addr}: {status}\n{out}\n{err}");
        assert_eq!(out.lines().last(), Some(row), "{addr}:\n{out}");
    }
    // Without the CA the handshake is refused and nsq_stat says so.
    let (status, _, err) = stat(format!("https://{https}"), None);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("certificate"), "{err}");
}

/// nsq_tail with an `https://` lookupd (a real HTTPS server answering `/ping` and `/lookup`
/// with the real nsqd, since nsqlookupd serves no HTTPS): the consumer's lookupd queries and
/// the tool's own `/ping` both trust `--http-client-tls-root-ca-file`.
#[test]
fn nsq_tail_through_an_https_lookupd() {
    use nsq_http_client::testing::{Mode, Pki, TestServer};
    let pki = Pki::new();
    let nsqd = TestNsqd::start(&[]);
    nsqd.mpub("tail_tls", &["a".into(), "b".into(), "c".into()]);
    let port = nsqd.tcp.port();
    let lookupd = TestServer::start(Mode::https(&pki), move |r, _| {
        if r.path == "/ping" {
            return (200, b"OK".to_vec());
        }
        let body = format!(
            r#"{{"channels":[],"producers":[{{"broadcast_address":"127.0.0.1","hostname":"h","tcp_port":{port},"http_port":1,"version":"1.3.0"}}]}}"#
        );
        (200, body.into_bytes())
    });
    let out = tail(&[
        "--topic=tail_tls",
        "-n",
        "3",
        "--lookupd-http-address",
        &lookupd.url(),
        &format!("--http-client-tls-root-ca-file={}", pki.ca.display()),
    ]);
    assert_eq!(out, "a\nb\nc\n");
    let paths: Vec<String> = lookupd.requests().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().any(|p| p == "/ping"), "{paths:?}");
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/lookup?topic=tail_tls")),
        "{paths:?}"
    );
}
