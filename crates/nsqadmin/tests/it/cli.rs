use std::process::Command;

use crate::harness::*;

#[test]
fn version_and_missing_upstream() {
    let out = Command::new(env!("CARGO_BIN_EXE_nsqadmin"))
        .arg("-version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("nsqadmin v1.3.0"));

    let out = Command::new(env!("CARGO_BIN_EXE_nsqadmin"))
        .arg("--http-address=127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--nsqd-http-address or --lookupd-http-address required"),
        "{err}"
    );
}

#[test]
fn unsupported_flags_are_accepted_and_logged_and_base_path_is_respected() {
    let port = closed_port();
    let admin = start_admin(&[
        format!("--lookupd-http-address=127.0.0.1:{port}"),
        "--graphite-url=http://graphite".into(),
        "--statsd-prefix=x.%s".into(),
        "-base-path=/admin/".into(),
    ]);
    let r = admin.http("GET", "/admin/ping", None);
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    assert_eq!(r.header("x-nsq-content-type"), Some("nsq; version=1.0"));
    let r = admin.http("GET", "/admin/", None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("/admin/static/app.js"), "{}", r.body);
    let r = admin.http("GET", "/admin/topics/x/y", None);
    assert_eq!(r.status, 200);
    let r = admin.http("GET", "/admin/static/app.js", None);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().contains("javascript"));
    assert_eq!(admin.http("GET", "/ping", None).status, 404);
    // Every lookupd unreachable: 502 UPSTREAM_ERROR.
    let r = admin.http("GET", "/admin/api/topics", None);
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("UPSTREAM_ERROR: "));
}

/// nsqadmin serves HTTP through the same first-line guard as nsqd and nsqlookupd: a TCP-protocol
/// client gets Go's net/http 400 once its first line ends, then the connection closes.
#[test]
fn non_http_first_line_gets_gos_400_after_it_ends() {
    let admin = start_admin(&[format!("--nsqd-http-address=127.0.0.1:{}", closed_port())]);
    let out =
        nsq_http::testing::v2_client_on_http_port(admin.http, std::time::Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(nsq_http::first_line::GO_BAD_REQUEST)
    );
    assert_eq!(admin.http("GET", "/ping", None).status, 200);
}
