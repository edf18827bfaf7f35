//! `nsq_to_nsq` between two real nsqds.

use std::process::Stdio;

use crate::harness::{
    num, run_with_stdin, send_signal, wait_exit, wait_until, Guard, TestNsqd, WAIT,
};
use crate::tool;

#[test]
fn copies_every_message_to_the_destination() {
    let src = TestNsqd::start(&[]);
    let dst = TestNsqd::start(&[]);
    let total = 1000;
    let bodies: Vec<String> = (0..total).map(|i| format!("copy-{i:05}")).collect();
    src.mpub("orig", &bodies);
    // A JSON message dropped by the filter would not be copied; without filter, all are.
    let mut child = Guard(
        tool("nsq_to_nsq")
            .args([
                "--topic=orig",
                "--destination-topic=copy",
                "--status-every=0",
            ])
            .arg(format!("--nsqd-tcp-address={}", src.tcp))
            .arg(format!("--destination-nsqd-tcp-address={}", dst.tcp))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nsq_to_nsq"),
    );
    wait_until(WAIT, "source drained", || {
        src.channel_stats("orig", "nsq_to_nsq").is_some_and(|c| {
            num(&c, "depth") == 0
                && num(&c, "in_flight_count") == 0
                && num(&c, "message_count") == total as i64
        })
    });
    send_signal(child.id(), "INT");
    let status = wait_exit(&mut child, WAIT, "nsq_to_nsq after SIGINT");
    assert!(status.success(), "exit status {status}");
    let t = dst.topic_stats("copy").expect("destination topic");
    assert_eq!(num(&t, "message_count"), total as i64);

    let (status, out, err) = run_with_stdin(
        tool("nsq_tail")
            .args(["--topic=copy", "-n", &total.to_string()])
            .arg(format!("--nsqd-tcp-address={}", dst.tcp)),
        b"",
        WAIT,
    );
    assert!(status.success(), "nsq_tail: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(got, bodies);
}

#[test]
fn json_filter_and_whitelist() {
    let src = TestNsqd::start(&[]);
    let dst = TestNsqd::start(&[]);
    let bodies: Vec<String> = vec![
        r#"{"kind":"keep","a":1,"b":"x"}"#.into(),
        r#"{"kind":"skip","a":2}"#.into(),
        r#"not json"#.into(),
        r#"{"kind":"keep","a":3,"c":true}"#.into(),
    ];
    src.mpub("j", &bodies);
    let mut child = Guard(
        tool("nsq_to_nsq")
            .args([
                "--topic=j",
                "--require-json-field=kind",
                "--require-json-value=keep",
                "--whitelist-json-field=a",
                "--whitelist-json-field=kind",
            ])
            .arg(format!("--nsqd-tcp-address={}", src.tcp))
            .arg(format!("--destination-nsqd-tcp-address={}", dst.tcp))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nsq_to_nsq"),
    );
    wait_until(WAIT, "source drained", || {
        src.channel_stats("j", "nsq_to_nsq").is_some_and(|c| {
            num(&c, "depth") == 0
                && num(&c, "in_flight_count") == 0
                && num(&c, "message_count") == 4
        })
    });
    send_signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, WAIT, "nsq_to_nsq").success());
    let (status, out, _) = run_with_stdin(
        tool("nsq_tail")
            .args(["--topic=j", "-n", "2"])
            .arg(format!("--nsqd-tcp-address={}", dst.tcp)),
        b"",
        WAIT,
    );
    assert!(status.success());
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(
        got,
        [r#"{"a":1,"kind":"keep"}"#, r#"{"a":3,"kind":"keep"}"#]
    );
    assert_eq!(num(&dst.topic_stats("j").unwrap(), "message_count"), 2);
}

#[test]
fn bad_flags_fail_clearly() {
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--bogus"], 2, "--bogus"),
        (
            vec!["--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "--topic required",
        ),
        (
            vec!["--topic=t", "--nsqd-tcp-address=127.0.0.1:1"],
            1,
            "--destination-nsqd-tcp-address required",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--destination-nsqd-tcp-address=127.0.0.1:1",
                "--mode=fastest",
            ],
            1,
            "invalid --mode",
        ),
        (
            vec![
                "--topic=t",
                "--nsqd-tcp-address=127.0.0.1:1",
                "--destination-nsqd-tcp-address=127.0.0.1:1",
            ],
            1,
            "failed to connect to destination nsqd 127.0.0.1:1",
        ),
    ];
    for (args, code, needle) in cases {
        let (status, _, err) = run_with_stdin(tool("nsq_to_nsq").args(&args), b"", WAIT);
        assert_eq!(status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: stderr lacks {needle:?}:\n{err}"
        );
    }
}
