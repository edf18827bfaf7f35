use super::*;

fn decode_all(bytes: &[u8]) -> Result<Vec<Command>, ProtocolError> {
    let d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(c) = d.decode(&mut buf)? {
        out.push(c);
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    Ok(out)
}

/// Decodes `input` and checks the error frame text it yields.
fn check_err(input: &[u8], expect: &str) {
    let d = Decoder::default();
    let mut buf = BytesMut::from(input);
    let err = loop {
        match d.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("needed more bytes for {input:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.wire_text(), expect, "input {input:?}");
}

fn id(n: u64) -> MessageId {
    MessageId::from_u64(n)
}

#[test]
fn round_trips_every_command() {
    let cmds = vec![
        Command::Identify {
            body: Bytes::from_static(b"{\"a\":1}"),
        },
        Command::Auth {
            secret: Bytes::from_static(b"s3cret"),
        },
        Command::Sub {
            topic: "t".into(),
            channel: "c#ephemeral".into(),
        },
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"hello"),
        },
        Command::Dpub {
            topic: "t".into(),
            defer_ms: 1500,
            body: Bytes::from_static(b"later"),
        },
        Command::Rdy { count: 2500 },
        Command::Fin { id: id(1) },
        Command::Req {
            id: id(2),
            timeout_ms: 0,
        },
        Command::Touch { id: id(3) },
        Command::Cls,
        Command::Nop,
    ];
    let mut buf = BytesMut::new();
    for c in &cmds {
        c.encode(&mut buf);
    }
    encode_mpub(&mut buf, "t", &[b"a".as_slice(), b"bc"]);
    let bytes = buf.freeze();
    let got = decode_all(&bytes).unwrap();
    assert_eq!(&got[..cmds.len()], &cmds[..]);
    match &got[cmds.len()] {
        Command::Mpub { topic, batch } => {
            assert_eq!(topic, "t");
            assert_eq!(batch.count, 2);
            let bodies: Vec<&[u8]> = batch.iter().collect();
            assert_eq!(bodies, vec![b"a".as_slice(), b"bc"]);
            let spans: Vec<_> = batch.spans().collect();
            assert_eq!(spans, vec![(4, 1), (9, 2)]);
        }
        other => panic!("{other:?}"),
    }

    // Byte-by-byte arrival yields the same commands.
    let d = Decoder::default();
    let mut partial = BytesMut::new();
    let mut n = 0;
    for b in bytes.iter() {
        partial.put_u8(*b);
        while d.decode(&mut partial).unwrap().is_some() {
            n += 1;
        }
    }
    assert_eq!(n, cmds.len() + 1);
}

#[test]
fn crlf_and_rdy_defaults() {
    let got = decode_all(b"NOP\r\nRDY\nRDY \n").unwrap();
    assert_eq!(
        got,
        vec![
            Command::Nop,
            Command::Rdy { count: 1 },
            Command::Rdy { count: 0 }
        ]
    );
}

#[test]
fn errors_match_go() {
    check_err(b"FOO\n", "E_INVALID invalid command FOO");
    check_err(b"\n", "E_INVALID invalid command ");
    check_err(b"nop\n", "E_INVALID invalid command nop");
    check_err(b"RDY -1\n", "E_INVALID RDY could not parse count -1");
    check_err(b"RDY x\n", "E_INVALID RDY could not parse count x");
    check_err(b"FIN\n", "E_INVALID FIN insufficient number of params");
    check_err(b"FIN 123\n", "E_INVALID Invalid Message ID");
    check_err(
        b"REQ 0000000000000001\n",
        "E_INVALID REQ insufficient number of params",
    );
    check_err(
        b"REQ 0000000000000001 1.5\n",
        "E_INVALID REQ could not parse timeout 1.5",
    );
    check_err(b"TOUCH\n", "E_INVALID TOUCH insufficient number of params");
    check_err(
        b"SUB t\n",
        "E_INVALID SUB insufficient number of parameters",
    );
    check_err(
        b"SUB t! c\n",
        "E_BAD_TOPIC SUB topic name \"t!\" is not valid",
    );
    check_err(
        b"SUB t c!\n",
        "E_BAD_CHANNEL SUB channel name \"c!\" is not valid",
    );
    check_err(b"PUB\n", "E_INVALID PUB insufficient number of parameters");
    check_err(
        b"PUB a/b\n",
        "E_BAD_TOPIC PUB topic name \"a/b\" is not valid",
    );
    check_err(
        b"MPUB a/b\n",
        "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"a/b\" is not valid",
    );
    check_err(
        b"DPUB t\n",
        "E_INVALID DPUB insufficient number of parameters",
    );
    check_err(b"DPUB t x\n", "E_INVALID DPUB could not parse timeout x");
    check_err(b"AUTH x\n", "E_INVALID AUTH invalid number of parameters");
    check_err(
        b"PUB t\n\x00\x00\x00\x00",
        "E_BAD_MESSAGE PUB invalid message body size 0",
    );
    check_err(
        b"DPUB t 10\n\xff\xff\xff\xff",
        "E_BAD_MESSAGE DPUB invalid message body size -1",
    );
    check_err(
        b"IDENTIFY\n\x00\x00\x00\x00",
        "E_BAD_BODY IDENTIFY invalid body size 0",
    );
    check_err(
        b"MPUB t\n\x00\x00\x00\x00",
        "E_BAD_BODY MPUB invalid body size 0",
    );
    check_err(
        b"MPUB t\n\x00\x00\x00\x04\x00\x00\x00\x00",
        "E_BAD_BODY MPUB invalid message count 0",
    );
    check_err(
        b"MPUB t\n\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00",
        "E_BAD_MESSAGE MPUB invalid message(0) body size 0",
    );
    check_err(
        b"MPUB t\n\x00\x00\x00\x09\x00\x00\x00\x01\x00\x00\x00\x05x",
        "E_BAD_MESSAGE MPUB failed to read message body",
    );
    check_err(
        b"MPUB t\n\x00\x00\x00\x0b\x00\x00\x00\x01\x00\x00\x00\x01xyz",
        "E_BAD_BODY MPUB body size 11 does not match its 1 messages (9 bytes)",
    );
}

#[test]
fn sizes_checked_before_body_arrives() {
    // A declared size beyond the limit fails with only the 4 size bytes buffered.
    check_err(
        b"PUB t\n\x00\x10\x00\x01",
        "E_BAD_MESSAGE PUB message too big 1048577 > 1048576",
    );
    check_err(
        b"MPUB t\n\x7f\xff\xff\xff",
        "E_BAD_BODY MPUB body too big 2147483647 > 5242880",
    );
    check_err(
        b"IDENTIFY\n\x00\x50\x00\x01",
        "E_BAD_BODY IDENTIFY body too big 5242881 > 5242880",
    );
    // A size within limits waits for the body without consuming anything.
    let d = Decoder::default();
    let mut buf = BytesMut::from(&b"PUB t\n\x00\x00\x00\x05ab"[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    assert_eq!(buf.len(), 12);
}

#[test]
fn long_lines_rejected() {
    let d = Decoder::new(Limits {
        max_line_len: 8,
        ..Limits::default()
    });
    let mut buf = BytesMut::from(&b"NOPNOPNOP"[..]);
    assert_eq!(d.decode(&mut buf).unwrap(), None);
    buf.put_slice(b"NOP");
    assert!(d.decode(&mut buf).is_err());
}

#[test]
fn parse_base10_like_go() {
    assert_eq!(parse_base10(b""), Some(0));
    assert_eq!(parse_base10(b"0042"), Some(42));
    assert_eq!(parse_base10(b"+1"), None);
    assert_eq!(parse_base10(b"99999999999999999999999"), None);
}
