//! Test support for the daemons' tests (feature `testing`): what a V2 client that dials an
//! HTTP port by mistake does, so nsqd's, nsqlookupd's and nsqadmin's tests check the same
//! exchange against [`crate::first_line::GO_BAD_REQUEST`]; and [`call`] / [`Resp`], a request
//! through a router in-process (axum's `any_service(..).call(..)`, no socket) with the
//! assertions for Go's V1 response shapes ([`crate::api`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::handler::Handler;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;

use crate::service::{JSON_CONTENT_TYPE, NSQ_CONTENT_TYPE_VALUE, TEXT_CONTENT_TYPE};

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

/// A response read whole.
pub struct Resp {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// Sends `req` through `router` in-process and reads the whole response.
pub async fn call(router: Router, req: Request<Body>) -> Resp {
    let res = axum::routing::any_service(router).call(req, ()).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("response body");
    Resp {
        status,
        headers,
        body,
    }
}

impl Resp {
    /// The body as UTF-8 (panics if it is not).
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    /// The body as JSON, whatever the status (panics if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts a 200 JSON result with Go's headers; returns the value.
    #[track_caller]
    pub fn ok_json(&self) -> serde_json::Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert_eq!(self.header("content-type"), Some(JSON_CONTENT_TYPE));
        assert_eq!(
            self.header("x-nsq-content-type"),
            Some(NSQ_CONTENT_TYPE_VALUE)
        );
        self.json()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Asserts a Go V1 error response: `status` and `{"message":"<message>"}`.
    #[track_caller]
    pub fn assert_err(&self, status: u16, message: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.text(), format!(r#"{{"message":"{message}"}}"#));
        assert_eq!(self.header("content-type"), Some(JSON_CONTENT_TYPE));
        assert_eq!(
            self.header("x-nsq-content-type"),
            Some(NSQ_CONTENT_TYPE_VALUE)
        );
    }

    /// Asserts an empty 200 (no content type, as Go's net/http sends it).
    #[track_caller]
    pub fn assert_empty_ok(&self) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert!(self.body.is_empty(), "body: {}", self.text());
        assert_eq!(self.header("content-type"), None);
        assert_eq!(
            self.header("x-nsq-content-type"),
            Some(NSQ_CONTENT_TYPE_VALUE)
        );
    }

    /// Asserts a raw `OK`.
    #[track_caller]
    pub fn assert_ok_text(&self) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert_eq!(self.text(), "OK");
        assert_eq!(self.header("content-type"), Some(TEXT_CONTENT_TYPE));
        assert_eq!(
            self.header("x-nsq-content-type"),
            Some(NSQ_CONTENT_TYPE_VALUE)
        );
    }
}
