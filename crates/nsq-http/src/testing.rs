//! Test support for the daemons' integration tests (feature `testing`): what a V2 client that
//! dials an HTTP port by mistake does, so nsqd's, nsqlookupd's and nsqadmin's tests check the
//! same exchange against [`crate::first_line::GO_BAD_REQUEST`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends the V2 magic `"  V2"`, checks that nothing arrives and the connection stays open for
/// 300 ms (Go's net/http waits for the end of the first line), sends `IDENTIFY\n`, and returns
/// everything the server writes until it closes (panics if it does not within `timeout`).
pub fn v2_client_on_http_port(addr: SocketAddr, timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP port");
    s.write_all(b"  V2").expect("send the magic");
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("set a read timeout");
    match s.read(&mut [0u8; 1]) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("answered or closed before the first line ended: {other:?}"),
    }
    s.write_all(b"IDENTIFY\n").expect("send the first command");
    s.set_read_timeout(Some(timeout))
        .expect("set a read timeout");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server closes after its answer");
    out
}
