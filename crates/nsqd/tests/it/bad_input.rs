//! Hostile and broken input: each case gets NSQ's error frame (or a close), and the daemon
//! keeps serving a well-behaved client on another connection throughout.

use std::time::Duration;

use crate::harness::{RawClient, TestNsqd, READ_TIMEOUT};

/// A subscriber that must keep receiving while others misbehave.
struct Witness {
    sub: RawClient,
    publisher: RawClient,
    n: u32,
}

impl Witness {
    fn new(nsqd: &TestNsqd) -> Witness {
        let mut sub = nsqd.client();
        sub.sub_ok("witness", "w", 100);
        Witness {
            sub,
            publisher: nsqd.client(),
            n: 0,
        }
    }

    fn check(&mut self) {
        self.n += 1;
        let b = format!("alive-{}", self.n);
        self.publisher.pub_ok("witness", b.as_bytes());
        let m = self.sub.read_message(READ_TIMEOUT);
        assert_eq!(m.body.as_ref(), b.as_bytes());
        self.sub.fin(&m.id);
    }
}

/// Sends `input` on a fresh connection and expects exactly `error`, then a close.
fn fatal(nsqd: &TestNsqd, input: &[u8], error: &str) {
    let mut c = nsqd.client();
    c.send_raw(input);
    let got = c.expect_error(error);
    assert_eq!(got, error, "for input {:?}", String::from_utf8_lossy(input));
    c.expect_closed();
}

#[test]
fn malformed_commands_get_go_errors() {
    let nsqd = TestNsqd::start(&[]);
    let mut w = Witness::new(&nsqd);
    let cases: &[(&[u8], &str)] = &[
        (b"HELLO\n", "E_INVALID invalid command HELLO"),
        (b"pub t\n", "E_INVALID invalid command pub"),
        (b"PUB\n", "E_INVALID PUB insufficient number of parameters"),
        (
            b"SUB onlytopic\n",
            "E_INVALID SUB insufficient number of parameters",
        ),
        (
            b"PUB bad/topic\n",
            "E_BAD_TOPIC PUB topic name \"bad/topic\" is not valid",
        ),
        (
            b"MPUB bad*topic\n",
            "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"bad*topic\" is not valid",
        ),
        (
            b"DPUB t abc\n",
            "E_INVALID DPUB could not parse timeout abc",
        ),
        (
            b"DPUB t 3600001\n\x00\x00\x00\x01x",
            "E_INVALID DPUB timeout 3600001 out of range 0-3600000",
        ),
        (
            b"SUB t bad!chan\n",
            "E_BAD_CHANNEL SUB channel name \"bad!chan\" is not valid",
        ),
        (
            b"SUB t c\nRDY 2501\n",
            "E_INVALID RDY count 2501 out of range 0-2500",
        ),
        (b"RDY 1\n", "E_INVALID cannot RDY in current state"),
        (
            b"FIN 0123456789abcdef\n",
            "E_INVALID cannot FIN in current state",
        ),
        (
            b"REQ 0123456789abcdef 0\n",
            "E_INVALID cannot REQ in current state",
        ),
        (
            b"TOUCH 0123456789abcdef\n",
            "E_INVALID cannot TOUCH in current state",
        ),
        (b"CLS\n", "E_INVALID cannot CLS in current state"),
        (b"SUB t c\nFIN short\n", "E_INVALID Invalid Message ID"),
        (b"AUTH\n\x00\x00\x00\x01x", "E_AUTH_DISABLED AUTH disabled"),
        (
            b"PUB t\n\x00\x00\x00\x00",
            "E_BAD_MESSAGE PUB invalid message body size 0",
        ),
    ];
    for (input, error) in cases {
        let mut c = nsqd.client();
        c.send_raw(input);
        if input.starts_with(b"SUB t c\n") {
            c.expect_ok();
        }
        let got = c.expect_error(error);
        assert_eq!(&got, error);
        c.expect_closed();
        w.check();
    }
}

#[test]
fn oversized_bodies_rejected_before_they_arrive() {
    let nsqd = TestNsqd::start(&["--max-msg-size=1024", "--max-body-size=4096"]);
    let mut w = Witness::new(&nsqd);
    // Only the 4-byte size is sent: the error must come without the body.
    fatal(
        &nsqd,
        b"PUB t\n\x00\x00\x04\x01",
        "E_BAD_MESSAGE PUB message too big 1025 > 1024",
    );
    fatal(
        &nsqd,
        b"DPUB t 1\n\x7f\xff\xff\xff",
        "E_BAD_MESSAGE DPUB message too big 2147483647 > 1024",
    );
    fatal(
        &nsqd,
        b"MPUB t\n\x00\x00\x10\x01",
        "E_BAD_BODY MPUB body too big 4097 > 4096",
    );
    fatal(
        &nsqd,
        b"IDENTIFY\n\x00\x00\x10\x01",
        "E_BAD_BODY IDENTIFY body too big 4097 > 4096",
    );
    // An MPUB whose inner message is too big.
    let mut body = Vec::new();
    body.extend_from_slice(&1u32.to_be_bytes());
    body.extend_from_slice(&1025u32.to_be_bytes());
    body.extend_from_slice(&vec![b'x'; 1025]);
    let mut input = b"MPUB t\n".to_vec();
    input.extend_from_slice(&(body.len() as u32).to_be_bytes());
    input.extend_from_slice(&body);
    fatal(
        &nsqd,
        &input,
        "E_BAD_MESSAGE MPUB message too big 1025 > 1024",
    );
    w.check();
    // A message exactly at the limit is fine.
    let mut p = nsqd.client();
    p.pub_ok("t", &vec![b'y'; 1024]);
    w.check();
}

#[test]
fn bad_magic_and_garbage() {
    let nsqd = TestNsqd::start(&[]);
    let mut w = Witness::new(&nsqd);
    let mut c = RawClient::connect_no_magic(nsqd.tcp_addr());
    c.send_raw(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(c.expect_error("E_BAD_PROTOCOL"), "E_BAD_PROTOCOL");
    c.expect_closed();
    w.check();
    // Binary garbage after a good magic: a line that is not a command.
    let mut c = nsqd.client();
    c.send_raw(b"\x00\x01\x02\xff\n");
    c.expect_error("E_INVALID invalid command");
    c.expect_closed();
    // A never-ending line is cut off instead of buffered forever.
    let mut c = nsqd.client();
    let junk = vec![b'A'; 64 * 1024];
    let _ = c.try_send_raw(&junk);
    c.expect_error("E_INVALID command line longer than");
    c.expect_closed();
    w.check();
}

#[test]
fn clients_vanishing_mid_frame_do_not_hurt_others() {
    let nsqd = TestNsqd::start(&[]);
    let mut w = Witness::new(&nsqd);
    for partial in [
        &b"PUB t\n\x00\x00\x00\x10half"[..],
        b"MPUB t\n\x00\x00",
        b"IDENTIFY\n",
        b"SUB t",
        b" V",
    ] {
        let mut c = nsqd.client();
        c.send_raw(partial);
        c.close();
        w.check();
    }
    // A consumer that vanishes with messages in flight: they come back after the timeout.
    let mut c = nsqd.client();
    c.identify(&serde_json::json!({"msg_timeout": 1000}));
    c.expect_ok();
    c.sub_ok("vanish", "c", 10);
    let mut p = nsqd.client();
    p.pub_ok("vanish", b"orphan");
    let m = c.read_message(READ_TIMEOUT);
    c.close();
    let mut c2 = nsqd.client();
    c2.sub_ok("vanish", "c", 10);
    let m2 = c2.read_message(Duration::from_secs(5));
    assert_eq!((m2.id, m2.attempts), (m.id, 2));
    w.check();
}

#[test]
fn fin_of_someone_elses_message_is_not_fatal() {
    let nsqd = TestNsqd::start(&[]);
    let mut a = nsqd.client();
    a.sub_ok("own", "c", 1);
    let mut b = nsqd.client();
    b.sub_ok("own", "c", 0);
    let mut p = nsqd.client();
    p.pub_ok("own", b"mine");
    let m = a.read_message(READ_TIMEOUT);
    b.fin(&m.id);
    assert_eq!(
        b.expect_error("E_FIN_FAILED"),
        format!(
            "E_FIN_FAILED FIN {} failed client does not own message",
            m.id
        )
    );
    b.req(&m.id, 0);
    b.expect_error("E_REQ_FAILED");
    b.touch(&m.id);
    b.expect_error("E_TOUCH_FAILED");
    // b is still connected and a can finish its message.
    a.fin(&m.id);
    b.rdy(1);
    p.pub_ok("own", b"next");
    let _ = (a, b);
}
