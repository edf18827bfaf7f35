use std::io::Write;
use std::process::Command;

use crate::harness::{bin, http_raw, TestLookupd, READ_TIMEOUT};

#[test]
fn version() {
    for flag in ["--version", "-version"] {
        let out = Command::new(bin()).arg(flag).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.starts_with("nsqlookupd v1.3.0 (nsq-rs "), "{text}");
    }
}

#[test]
fn help_lists_go_flags() {
    let out = Command::new(bin()).arg("-help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for f in [
        "--broadcast-address",
        "--config",
        "--http-address",
        "--inactive-producer-timeout",
        "--log-level",
        "--log-prefix",
        "--tcp-address",
        "--tombstone-lifetime",
        "--verbose",
        "--version",
    ] {
        assert!(text.contains(f), "{f} missing from help:\n{text}");
    }
}

#[test]
fn bad_flag_values_fail() {
    let out = Command::new(bin())
        .arg("--tombstone-lifetime=forever")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn config_file_and_go_style_flags() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(
        b"tcp_address = \"127.0.0.1:0\"\nbroadcast_address = \"from-config\"\nlog_level = \"debug\"\n",
    )
    .unwrap();
    let path = f.path().to_str().unwrap().to_owned();
    let l = TestLookupd::start_raw(&["-config", &path, "-http-address", "127.0.0.1:0"]);
    let mut c = l.client();
    let resp = c.identify("x", 1, 2);
    assert_eq!(resp["broadcast_address"], "from-config");
}

/// Go's net/http reads the whole first line before it answers, so a TCP-protocol client on
/// the HTTP port reads Go's exact 400 only after its first line, then the connection closes.
#[test]
fn http_port_answers_non_http_with_gos_400_after_the_first_line() {
    let go_400 = String::from_utf8_lossy(nsq_http::first_line::GO_BAD_REQUEST);
    let l = TestLookupd::start(&[]);
    let out = nsq_http::testing::v2_client_on_http_port(l.http, READ_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&out), go_400);
    // The whole line at once (the lookup protocol's own magic) gets the same.
    let out = http_raw(l.http, b"  V1IDENTIFY\n");
    assert_eq!(String::from_utf8_lossy(&out), go_400);
    assert_eq!(l.http("GET", "/ping").status, 200);
}

#[test]
fn sigterm_exits_cleanly_and_port_is_reusable() {
    let l = TestLookupd::start(&[]);
    let mut c = l.client();
    c.identify("x", 1, 2);
    let (tcp, http) = (l.tcp, l.http);
    let status = l.terminate();
    assert!(status.success(), "{status:?}");
    // Restart on the same ports at once.
    let l2 = TestLookupd::start_raw(&[
        &format!("--tcp-address={tcp}"),
        &format!("--http-address={http}"),
    ]);
    assert_eq!((l2.tcp, l2.http), (tcp, http));
    l2.client().cmd("PING", "OK");
}
