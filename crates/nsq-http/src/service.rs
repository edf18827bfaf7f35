//! The axum glue of NSQ's HTTP API, once for nsqd, nsqlookupd and nsqadmin (Go's
//! `internal/http_api`, which all three Go daemons import).
//!
//! What clients can observe is the same on the three daemons, so it is written here:
//! - errors are the status and `{"message":"<CODE>"}` ([`ApiError`]); results are written as
//!   Go's `RespondV1` writes them ([`Reply`]): JSON with `Content-Type: application/json;
//!   charset=utf-8` (and Go's escaping, [`crate::json`]), strings raw as `text/plain` (what Go's
//!   content sniffing picks), "no result" as an empty 200 without a content type;
//! - an unknown path is 404 `NOT_FOUND`, a wrong method 405 `METHOD_NOT_ALLOWED`
//!   ([`with_fallbacks`]);
//! - every response, fallbacks and refusals included, carries `X-NSQ-Content-Type: nsq;
//!   version=1.0` (go-nsq picks the body format by it), and every request is logged as Go's
//!   `http_api.Log` does: `<status> <method> <uri> (<peer>) <elapsed>` ([`decorated`]);
//! - query strings parse as Go's `url.ParseQuery` or fail with 400 `INVALID_REQUEST`
//!   ([`parse_query`]), and `?topic=&channel=` are checked as `http_api.GetTopicChannelArgs`
//!   does ([`topic_channel_args`]);
//! - `--http-api-token` (an nsq-rs extension, nsqd only today) is a middleware
//!   ([`with_bearer_token`]);
//! - [`serve`] runs a router on a TCP listener behind [`crate::first_line`] until shutdown.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use axum::Router;
use nsq_protocol::names::{is_valid_channel_name, is_valid_topic_name};
use serde::Serialize;

use crate::first_line::FirstLineListener;
use crate::query::Query;

/// The header go-nsq and nsqjs look for to recognise 1.0-format bodies.
pub const NSQ_CONTENT_TYPE_HEADER: &str = "x-nsq-content-type";
/// Its value.
pub const NSQ_CONTENT_TYPE_VALUE: &str = "nsq; version=1.0";
/// The content type of JSON bodies.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The content type of string results (Go's sniffing of a non-HTML text).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// An API error: the status and the `message` code Go answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `message` field, e.g. `MISSING_ARG_TOPIC`.
    pub message: Cow<'static, str>,
}

impl ApiError {
    /// An error with a fixed code.
    pub const fn new(status: StatusCode, message: &'static str) -> ApiError {
        ApiError {
            status,
            message: Cow::Borrowed(message),
        }
    }

    /// An error whose message is built at run time.
    pub fn owned(status: StatusCode, message: String) -> ApiError {
        ApiError {
            status,
            message: Cow::Owned(message),
        }
    }
}

/// A 400 with `message`.
pub const fn bad_request(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A 404 with `message`.
pub const fn not_found(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, message)
}

/// A 413 with `message`.
pub const fn too_large(message: &'static str) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        json_response(
            self.status,
            &Message {
                message: &self.message,
            },
        )
    }
}

/// A successful result, written as Go's `RespondV1` writes it.
#[derive(Debug)]
pub enum Reply {
    /// A string result (`OK`, text stats): written raw.
    Text(Cow<'static, str>),
    /// A value: JSON bytes.
    Json(Vec<u8>),
    /// No result: an empty body.
    Empty,
}

impl Reply {
    /// The `OK` most actions answer with.
    pub const OK: Reply = Reply::Text(Cow::Borrowed("OK"));
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Text(s) => with_content_type(StatusCode::OK, TEXT_CONTENT_TYPE, s.into_owned()),
            Reply::Json(b) => with_content_type(StatusCode::OK, JSON_CONTENT_TYPE, b),
            // Go's net/http sets no Content-Type when nothing is written.
            Reply::Empty => Response::new(Body::empty()),
        }
    }
}

/// A handler's result.
pub type ApiResult = Result<Reply, ApiError>;

/// A response with `status`, `Content-Type: ct` and `body`.
pub fn with_content_type(status: StatusCode, ct: &'static str, body: impl Into<Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    res
}

/// `v` as a JSON response with Go's escaping.
pub fn json_response<T: Serialize + ?Sized>(status: StatusCode, v: &T) -> Response {
    with_content_type(status, JSON_CONTENT_TYPE, crate::json::to_vec(v))
}

/// The request's query string as Go's `url.ParseQuery` reads it; a malformed one is logged and
/// answered 400 `INVALID_REQUEST`, as Go's handlers do.
pub fn parse_query(uri: &Uri) -> Result<Query, ApiError> {
    Query::parse_strict(uri.query()).map_err(|e| {
        tracing::error!("failed to parse request params - {e}");
        bad_request("INVALID_REQUEST")
    })
}

/// Go's `http_api.GetTopicChannelArgs`: `topic` and `channel` present and valid names
/// (`MISSING_ARG_TOPIC`, `INVALID_ARG_TOPIC`, `MISSING_ARG_CHANNEL`, `INVALID_ARG_CHANNEL`).
pub fn topic_channel_args(q: &Query) -> Result<(&str, &str), ApiError> {
    let topic = q.get("topic").ok_or(bad_request("MISSING_ARG_TOPIC"))?;
    if !is_valid_topic_name(topic.as_bytes()) {
        return Err(bad_request("INVALID_ARG_TOPIC"));
    }
    let channel = q.get("channel").ok_or(bad_request("MISSING_ARG_CHANNEL"))?;
    if !is_valid_channel_name(channel.as_bytes()) {
        return Err(bad_request("INVALID_ARG_CHANNEL"));
    }
    Ok((topic, channel))
}

/// Go's answers for what no route matches: 404 `NOT_FOUND` for an unknown path, 405
/// `METHOD_NOT_ALLOWED` for a known path with another method.
pub fn with_fallbacks<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router
        .fallback(|| async { not_found("NOT_FOUND") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
        })
}

/// Wraps `router` (as its outermost layer, so every response gets it) with the
/// `X-NSQ-Content-Type` header and Go's request log line, at info level except for the
/// `quiet_paths` (hot or constantly polled paths), which are logged at debug level.
pub fn decorated<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    quiet_paths: &'static [&'static str],
) -> Router<S> {
    router.layer(middleware::from_fn_with_state(quiet_paths, decorate))
}

async fn decorate(
    State(quiet_paths): State<&'static [&'static str]>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let mut res = next.run(req).await;
    res.headers_mut().insert(
        NSQ_CONTENT_TYPE_HEADER,
        HeaderValue::from_static(NSQ_CONTENT_TYPE_VALUE),
    );
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    if quiet_paths.contains(&uri.path()) {
        tracing::debug!("{status} {method} {uri} ({peer}) {elapsed:?}");
    } else {
        tracing::info!("{status} {method} {uri} ({peer}) {elapsed:?}");
    }
    res
}

/// The bearer token a router requires, and the paths open without it.
#[derive(Clone)]
struct BearerToken {
    token: Arc<[u8]>,
    open_paths: Arc<[&'static str]>,
}

/// With a non-empty `token` (nsqd's `--http-api-token`), every request whose path is not one
/// of `open_paths` (health checks, a scraper's `/metrics`) needs `Authorization: Bearer
/// <token>`, else 401 `UNAUTHORIZED` with `WWW-Authenticate: Bearer`. An empty token leaves
/// `router` unchanged.
pub fn with_bearer_token<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    token: &str,
    open_paths: Vec<&'static str>,
) -> Router<S> {
    if token.is_empty() {
        return router;
    }
    let state = BearerToken {
        token: token.as_bytes().into(),
        open_paths: open_paths.into(),
    };
    router.layer(middleware::from_fn_with_state(state, require_token))
}

async fn require_token(State(want): State<BearerToken>, req: Request, next: Next) -> Response {
    if want.open_paths.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    // Compare without stopping at the first difference (no timing hint about the prefix).
    let same = given.len() == want.token.len()
        && given
            .iter()
            .zip(want.token.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        return next.run(req).await;
    }
    let mut res = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED").into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in progress finish
/// (idle keep-alive connections are closed), logging `HTTP: closing <addr>` at the end.
///
/// Non-HTTP first lines (a V2 client dialing this port) get Go's 400 once they end
/// ([`crate::first_line`]); responses are small and written whole, so Nagle is off; handlers
/// see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    let listener = FirstLineListener::new(listener).tap_io(|conn| {
        let _ = conn.get_ref().set_nodelay(true);
    });
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    if let Err(e) = result {
        tracing::error!("HTTP: serve() failed - {e}");
    }
    match addr {
        Some(a) => tracing::info!("HTTP: closing {a}"),
        None => tracing::info!("HTTP: closing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::handler::Handler;
    use axum::routing::get;

    /// axum's in-process entry point (no socket, no `tower` dependency).
    async fn oneshot(app: Router, req: Request) -> Response {
        axum::routing::any_service(app).call(req, ()).await
    }

    async fn call(app: Router, path: &str, auth: Option<&str>) -> (StatusCode, Response) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = oneshot(app, req.body(Body::empty()).unwrap()).await;
        (res.status(), res)
    }

    async fn body(res: Response) -> String {
        let b = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn app(token: &str) -> Router {
        let r = Router::new()
            .route("/ping", get(|| async { Reply::OK }))
            .route("/thing", get(|| async { Reply::Json(b"{}".to_vec()) }))
            .route("/bad", get(|| async { ApiResult::Err(bad_request("X_Y")) }));
        decorated(
            with_bearer_token(with_fallbacks(r), token, vec!["/ping"]),
            &[],
        )
    }

    #[tokio::test]
    async fn replies_errors_fallbacks_and_header() {
        let (s, res) = call(app(""), "/ping", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            res.headers()[NSQ_CONTENT_TYPE_HEADER],
            NSQ_CONTENT_TYPE_VALUE
        );
        assert_eq!(res.headers()[header::CONTENT_TYPE], TEXT_CONTENT_TYPE);
        assert_eq!(body(res).await, "OK");
        let (s, res) = call(app(""), "/bad", None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[header::CONTENT_TYPE], JSON_CONTENT_TYPE);
        assert_eq!(body(res).await, r#"{"message":"X_Y"}"#);
        let (s, res) = call(app(""), "/nope", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(
            res.headers()[NSQ_CONTENT_TYPE_HEADER],
            NSQ_CONTENT_TYPE_VALUE
        );
        assert_eq!(body(res).await, r#"{"message":"NOT_FOUND"}"#);
        let only_get =
            with_fallbacks(Router::new().route("/thing", get(|| async { Reply::Empty })));
        let res = oneshot(
            only_get,
            Request::post("/thing").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(body(res).await, r#"{"message":"METHOD_NOT_ALLOWED"}"#);
    }

    #[tokio::test]
    async fn bearer_token() {
        let (s, _) = call(app("sekrit"), "/ping", None).await;
        assert_eq!(s, StatusCode::OK, "open path");
        for auth in [
            None,
            Some("Bearer sekri"),
            Some("Bearer sekrit2"),
            Some("sekrit"),
        ] {
            let (s, res) = call(app("sekrit"), "/thing", auth).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(
                res.headers()[NSQ_CONTENT_TYPE_HEADER],
                NSQ_CONTENT_TYPE_VALUE
            );
            assert_eq!(body(res).await, r#"{"message":"UNAUTHORIZED"}"#);
        }
        let (s, _) = call(app("sekrit"), "/thing", Some("Bearer sekrit")).await;
        assert_eq!(s, StatusCode::OK);
    }

    #[test]
    fn topic_and_channel_args_like_go() {
        let q = |s: &str| Query::parse_strict(Some(s)).unwrap();
        let err = |s: &str| topic_channel_args(&q(s)).unwrap_err().message;
        assert_eq!(
            topic_channel_args(&q("topic=t&channel=c")).unwrap(),
            ("t", "c")
        );
        assert_eq!(err("channel=c"), "MISSING_ARG_TOPIC");
        assert_eq!(err("topic=a*b&channel=c"), "INVALID_ARG_TOPIC");
        assert_eq!(err("topic=t"), "MISSING_ARG_CHANNEL");
        assert_eq!(err("topic=t&channel="), "INVALID_ARG_CHANNEL");
        let uri: Uri = "/x?a=%zz".parse().unwrap();
        assert_eq!(parse_query(&uri).unwrap_err().message, "INVALID_REQUEST");
    }
}
