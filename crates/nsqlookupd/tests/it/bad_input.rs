use serde_json::json;

use crate::harness::{TestLookupd, V1Client};

type MakeClient<'a> = Box<dyn Fn() -> V1Client + 'a>;

/// After each bad client, a fresh one must still be served.
fn still_serving(l: &TestLookupd) {
    let mut c = l.client();
    c.cmd("PING", "OK");
    let r = l.http("GET", "/ping");
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
}

#[test]
fn bad_magic() {
    let l = TestLookupd::start(&[]);
    let mut c = V1Client::connect_raw(l.tcp);
    c.write(b"  V2");
    assert_eq!(c.read_text(), "E_BAD_PROTOCOL");
    c.expect_closed();
    still_serving(&l);
}

#[test]
fn fatal_errors_close_the_connection() {
    let l = TestLookupd::start(&[]);
    let identified = || {
        let mut c = l.client();
        c.identify("a", 1, 2);
        c
    };
    let cases: Vec<(MakeClient<'_>, &str, &str)> = vec![
        (Box::new(|| l.client()), "REGISTER t", "E_INVALID client must IDENTIFY"),
        (Box::new(|| l.client()), "UNREGISTER t c", "E_INVALID client must IDENTIFY"),
        (Box::new(identified), "REGISTER", "E_INVALID REGISTER insufficient number of params"),
        (Box::new(identified), "REGISTER a/b", "E_BAD_TOPIC REGISTER topic name 'a/b' is not valid"),
        (
            Box::new(identified),
            "UNREGISTER t bad!chan",
            "E_BAD_CHANNEL UNREGISTER channel name 'bad!chan' is not valid",
        ),
        (
            Box::new(identified),
            "REGISTER aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "E_BAD_TOPIC REGISTER topic name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is not valid",
        ),
        (Box::new(|| l.client()), "FOO bar", "E_INVALID invalid command FOO"),
        (Box::new(identified), "ping", "E_INVALID invalid command ping"),
        (Box::new(identified), "IDENTIFY", "E_INVALID cannot IDENTIFY again"),
    ];
    for (make, line, expected) in cases {
        let mut c = make();
        c.write(format!("{line}\n").as_bytes());
        assert_eq!(c.read_text(), expected, "{line}");
        c.expect_closed();
    }
    still_serving(&l);
}

#[test]
fn bad_identify_bodies() {
    let l = TestLookupd::start(&[]);
    for (body, expected) in [
        (
            &br#"{"tcp_port":4150,"http_port":4151,"version":"1.3.0"}"#[..],
            "E_BAD_BODY IDENTIFY missing fields",
        ),
        (
            br#"{"broadcast_address":"a","tcp_port":0,"http_port":1,"version":"v"}"#,
            "E_BAD_BODY IDENTIFY missing fields",
        ),
        (
            b"{not json",
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
        (
            br#"{"broadcast_address":"a","tcp_port":"1","http_port":1,"version":"v"}"#,
            "E_BAD_BODY IDENTIFY failed to decode JSON body",
        ),
    ] {
        let mut c = l.client();
        assert_eq!(c.identify_raw(body), expected);
        c.expect_closed();
    }
    // A huge declared size is refused at once, without waiting for (or buffering) the body.
    for size in [0x7fff_ffffu32, 0xffff_ffff, 2 * 1024 * 1024] {
        let mut c = l.client();
        let mut b = b"IDENTIFY\n".to_vec();
        b.extend_from_slice(&size.to_be_bytes());
        c.write(&b);
        assert_eq!(
            c.read_text(),
            format!("E_BAD_BODY IDENTIFY invalid body size {}", size as i32)
        );
        c.expect_closed();
    }
    // A failed IDENTIFY registered nothing.
    assert_eq!(l.get_json("/nodes"), json!({"producers": []}));
    still_serving(&l);
}

#[test]
fn endless_line_is_refused() {
    let l = TestLookupd::start(&[]);
    let mut c = l.client();
    // No newline in sight: refused once the line limit is passed.
    c.write(&vec![b'A'; 8192]);
    assert_eq!(
        c.read_text(),
        "E_INVALID command line longer than 4096 bytes"
    );
    c.expect_closed();
    still_serving(&l);
}

#[test]
fn errors_after_good_commands_keep_their_responses() {
    let l = TestLookupd::start(&[]);
    let mut c = l.client();
    c.identify("a", 1, 2);
    c.write(b"REGISTER t\nPING\nNOPE\nREGISTER never\n");
    assert_eq!(c.read_text(), "OK");
    assert_eq!(c.read_text(), "OK");
    assert_eq!(c.read_text(), "E_INVALID invalid command NOPE");
    c.expect_closed();
    assert_eq!(l.get_json("/topics"), json!({"topics": ["t"]}));
    still_serving(&l);
}
