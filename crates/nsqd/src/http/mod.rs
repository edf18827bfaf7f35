//! nsqd's HTTP API, compatible with Go nsqd 1.3 (`nsqd/http.go`, `internal/http_api`).
//!
//! Existing clients (go-nsq, pynsq, nsqjs), nsqadmin, `nsq_stat` and operators' scripts talk
//! to this API, so what they can observe follows Go byte for byte where it matters:
//! - Routes and methods are Go's: `/pub`, `/mpub` and the `/topic/*`, `/channel/*` actions
//!   are POST only; `/ping`, `/info`, `/stats` GET (and, an nsq-rs extension, `/metrics`:
//!   Prometheus, see [`crate::metrics`]); `/config/{opt}` GET and PUT. An unknown
//!   path is 404 `{"message":"NOT_FOUND"}`, a wrong method 405
//!   `{"message":"METHOD_NOT_ALLOWED"}`. Pre-1.0 routes (`/put`, `/create_topic`, ...) and
//!   Go's `/debug/pprof` are absent (404), as the 1.0 removals and the interface doc allow.
//! - Every response carries `X-NSQ-Content-Type: nsq; version=1.0`: go-nsq decides by that
//!   header whether a body is in the 1.0 format or the old `{"status_code":..,"data":..}`
//!   envelope.
//! - Results are written as Go's `RespondV1` writes them: JSON bodies with
//!   `Content-Type: application/json; charset=utf-8` (and Go's string escaping, see
//!   [`json`]); string results such as `OK` raw (`text/plain`, which Go's content sniffing
//!   picks); "no result" as an empty 200 body without a content type; errors as the status
//!   and `{"message":"<CODE>"}`.
//! - Parameters come from the URL query string only, parsed like Go's `url.ParseQuery`
//!   ([`query`]); a malformed query is 400 `INVALID_REQUEST`. Checks run in Go's order, so a
//!   request with several problems gets Go's error (e.g. `/pub` checks the body before the
//!   topic, and creates the topic before it looks at `defer`).
//! - Request bodies are read with a limit (`--max-msg-size` for `/pub` and `PUT /config`,
//!   `--max-body-size` for `/mpub`): a declared `Content-Length` above it is refused before
//!   reading anything, and a chunked body is read only up to the limit plus one byte, so a
//!   huge body is never buffered.
//! - Bytes that are not HTTP (a V2 client dialing this port by mistake: the TCP magic `"  V2"`,
//!   then `IDENTIFY\n`) get Go's exact `400 Bad Request` once their first line ends (Go's
//!   net/http reads the whole line first), then the connection closes
//!   ([`nsq_http::first_line`]).
//!
//! - HTTPS (`--https-address`, only with `--tls-cert`/`--tls-key`) serves the same router
//!   ([`serve_https`], same TLS configuration as the TCP upgrade, client certificates
//!   included). With `--tls-required=true` the plain server answers every request 403
//!   `{"message": "TLS_REQUIRED", "https_port": N}` as Go does; `tcp-https` leaves it open.
//!
//! Handlers are plain functions of the shared [`Nsqd`]; [`router`] builds the routing table
//! (testable in-process, see `tests.rs`) and [`serve`] runs it until shutdown.

/// Go-compatible JSON escaping (shared with the other daemons).
pub use nsq_http::json;
/// Go-compatible query-string parsing (shared with the other daemons).
pub use nsq_http::query;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use futures::StreamExt;
use nsq_http::service::{
    bad_request, decorated, not_found, parse_query, too_large, topic_channel_args,
    with_bearer_token, with_content_type, with_fallbacks, ApiError, ApiResult, Reply,
    TEXT_CONTENT_TYPE,
};
use nsq_protocol::names::is_valid_topic_name;

use crate::clock::unix_secs;
use crate::stats::StatsFilter;
use crate::topic::Topic;
use crate::{DeleteError, Nsqd};

use self::query::{go_bool, Query};

/// The V1 header (shared with the other daemons).
pub use nsq_http::service::{NSQ_CONTENT_TYPE_HEADER, NSQ_CONTENT_TYPE_VALUE};

const MISSING_ARG_TOPIC: ApiError = bad_request("MISSING_ARG_TOPIC");
const INVALID_TOPIC: ApiError = bad_request("INVALID_TOPIC");
const TOPIC_NOT_FOUND: ApiError = not_found("TOPIC_NOT_FOUND");
const CHANNEL_NOT_FOUND: ApiError = not_found("CHANNEL_NOT_FOUND");
const INVALID_OPTION: ApiError = bad_request("INVALID_OPTION");
const MSG_TOO_BIG: ApiError = too_large("MSG_TOO_BIG");
const BODY_TOO_BIG: ApiError = too_large("BODY_TOO_BIG");
const BAD_BODY: ApiError = too_large("BAD_BODY");
const BAD_MESSAGE: ApiError = too_large("BAD_MESSAGE");
const EXITING: ApiError = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "EXITING");
const INTERNAL_ERROR: ApiError = ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR");

type Shared = State<Arc<Nsqd>>;

/// The routing table. Every response, fallbacks included, gets the `X-NSQ-Content-Type`
/// header from the outermost layer.
pub fn router(nsqd: Arc<Nsqd>) -> Router {
    let router = Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info))
        .route("/stats", get(stats))
        .route(
            "/metrics",
            nsq_http::metrics::route(Arc::new(crate::metrics::registry(&nsqd))),
        )
        .route("/pub", post(do_pub))
        .route("/mpub", post(do_mpub))
        .route("/topic/create", post(topic_create))
        .route(
            "/topic/replication",
            get(topic_replication).post(topic_replication_members),
        )
        .route("/topic/delete", post(topic_delete))
        .route("/topic/empty", post(topic_empty))
        .route("/topic/pause", post(topic_pause))
        .route("/topic/unpause", post(topic_unpause))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete))
        .route("/channel/empty", post(channel_empty))
        .route("/channel/pause", post(channel_pause))
        .route("/channel/unpause", post(channel_unpause))
        .route("/config/{opt}", get(config_get).put(config_put))
        .route(
            "/topic/config",
            get(topic_config_get).post(topic_config_post),
        )
        .route(
            "/channel/config",
            get(channel_config_get).post(channel_config_post),
        );
    // `--http-api-token`: every request but `/ping` (health checks), and `/metrics` with
    // `--metrics-without-token`, needs `Authorization: Bearer <token>`.
    let mut open = vec!["/ping"];
    if nsqd.opts.metrics_without_token {
        open.push("/metrics");
    }
    let router = with_bearer_token(with_fallbacks(router), &nsqd.opts.http_api_token, open);
    // Go does not log `/pub` and `/mpub` (hot paths); we log them at debug level.
    decorated(router, &["/pub", "/mpub"]).with_state(nsqd)
}

/// Serves HTTP on `listener` until `nsqd.shutdown` is cancelled, then lets requests in
/// progress finish (idle keep-alive connections are closed).
pub async fn serve(nsqd: Arc<Nsqd>, listener: tokio::net::TcpListener) {
    // Go's `httpServer.ServeHTTP` with `tlsRequired`: with `--tls-required=true` (not
    // `tcp-https`) plain HTTP answers every request with 403 and the HTTPS port.
    let app = if nsqd.opts.effective_tls_required() == crate::config::TlsRequired::On {
        let port = nsqd.https_addr.lock().map_or(0, |a| a.port());
        Router::new().fallback(move || async move { tls_required(port) })
    } else {
        router(nsqd.clone())
    };
    let shutdown = nsqd.shutdown.clone();
    nsq_http::service::serve(listener, app, async move { shutdown.cancelled().await }).await
}

/// Go's exact answer (its JSON has spaces, and no content type is set, so Go's sniffing makes
/// it `text/plain`).
fn tls_required(https_port: u16) -> Response {
    let mut res = with_content_type(
        StatusCode::FORBIDDEN,
        TEXT_CONTENT_TYPE,
        format!(r#"{{"message": "TLS_REQUIRED", "https_port": {https_port}}}"#),
    );
    res.headers_mut().insert(
        NSQ_CONTENT_TYPE_HEADER,
        HeaderValue::from_static(NSQ_CONTENT_TYPE_VALUE),
    );
    res
}

/// Serves the same API over HTTPS (`--https-address`) until shutdown. Handshakes run in their
/// own tasks (10 s limit each), so a slow or silent client does not hold up the others.
pub async fn serve_https(
    nsqd: Arc<Nsqd>,
    listener: tokio::net::TcpListener,
    acceptor: nsq_net::TlsAcceptor,
) {
    let local = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!("HTTPS: cannot read the listener address - {e}");
            return;
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let shutdown = nsqd.shutdown.clone();
    nsqd.tracker.spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("HTTPS: accept error: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => {
                        let _ = tx.send((tls, peer)).await;
                    }
                    Ok(Err(e)) => tracing::info!("HTTPS: TLS handshake with {peer} failed: {e}"),
                    Err(_) => tracing::info!("HTTPS: TLS handshake with {peer} timed out"),
                }
            });
        }
    });
    let listener = TlsListener { rx, local }.tap_io(|_| {});
    let app = router(nsqd.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let shutdown = nsqd.shutdown.clone();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!("HTTPS: serve() failed - {e}");
    }
    tracing::info!("HTTPS: closing {local}");
}

/// TLS connections whose handshake has finished, as an axum listener.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(
        nsq_net::tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        SocketAddr,
    )>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = nsq_net::tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (shutdown): wait for axum's graceful shutdown.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by handlers
// ---------------------------------------------------------------------------------------------

/// The declared body length, if any (Go's `req.ContentLength`, -1 when unknown).
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads at most `limit + 1` bytes of `body` (Go: `io.LimitReader(body, max+1)`), so the
/// caller can tell "exactly at the limit" from "over it" without buffering the rest.
async fn read_limited(body: Body, limit: u64, size_hint: Option<u64>) -> Result<Vec<u8>, ApiError> {
    let cap = limit.saturating_add(1);
    let mut out = Vec::with_capacity(size_hint.unwrap_or(0).min(cap) as usize);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!("HTTP: failed to read request body - {e}");
            INTERNAL_ERROR
        })?;
        let room = cap - out.len() as u64;
        if chunk.len() as u64 >= room {
            out.extend_from_slice(&chunk[..room as usize]);
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A non-negative size option as u64 (a negative limit admits nothing).
fn limit(v: i64) -> u64 {
    v.max(0) as u64
}

/// Go's `getTopicFromQuery`: the topic named by `topic`, created if needed.
fn topic_from_query(nsqd: &Nsqd, q: &Query) -> Result<Arc<Topic>, ApiError> {
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(name.as_bytes()) {
        return Err(INVALID_TOPIC);
    }
    Ok(nsqd.get_or_create_topic(name))
}

/// The replication side of `topic` when it is a replicated topic (nsq-rs): its publishes are
/// committed through the cluster instead of a local topic.
fn replicated_topic(
    nsqd: &Nsqd,
    q: &Query,
) -> Result<Option<(Arc<crate::replica::Replicas>, String)>, ApiError> {
    let Some(r) = nsqd.replicas() else {
        return Ok(None);
    };
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(name.as_bytes()) {
        return Err(INVALID_TOPIC);
    }
    Ok(r.is_replicated(name).then(|| (r.clone(), name.to_string())))
}

/// A publish to a replicated topic: `OK` once a majority of its members has it.
async fn publish_replicated<'a>(
    r: &Arc<crate::replica::Replicas>,
    topic: &str,
    bodies: impl Iterator<Item = &'a [u8]>,
    count: u32,
    defer_ns: Option<u64>,
) -> Result<(), ApiError> {
    match r.publish(topic, bodies, count, defer_ns).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(publish_error(&e)),
        Err(_) => Err(EXITING),
    }
}

/// Go's `getExistingTopicFromQuery`: valid topic and channel names, and the topic exists.
fn existing_topic_and_channel(nsqd: &Nsqd, uri: &Uri) -> Result<(Arc<Topic>, String), ApiError> {
    let q = parse_query(uri)?;
    let (topic, channel) = topic_channel_args(&q)?;
    let t = nsqd.topic(topic).ok_or(TOPIC_NOT_FOUND)?;
    Ok((t, channel.to_string()))
}

/// Publishes one batch atomically (one `Topic::publish` call) and waits until it is
/// accepted (in durable mode: written to the topic log). `dedup_id`: `/pub`'s dedup key.
async fn publish<'a>(
    nsqd: &Nsqd,
    topic: &Arc<Topic>,
    bodies: impl Iterator<Item = &'a [u8]> + Clone,
    count: u32,
    defer_ns: Option<u64>,
    dedup_id: Option<&[u8]>,
) -> Result<(), ApiError> {
    if nsqd.shutdown.is_cancelled() {
        return Err(EXITING);
    }
    let pending = match topic.publish_keyed(bodies.clone(), count, defer_ns, dedup_id) {
        Ok(p) => p,
        // The topic was deleted after we looked it up. Go would answer 503 EXITING here; like
        // our TCP PUB, we publish to the topic as it exists now (re-created), which is what
        // the client would get by retrying.
        Err(crate::topic::PublishError::Exiting) => nsqd
            .get_or_create_topic(&topic.name)
            .publish_keyed(bodies, count, defer_ns, dedup_id)
            .map_err(|_| EXITING)?,
        Err(e) => return Err(publish_error(&e)),
    };
    pending.wait().await.map_err(|e| publish_error(&e))
}

/// Go answers every failed put (exiting, or a failed disk write) with 503 `EXITING`; the
/// cause is in our log. A publish refused by a topic's `max_depth` (our policy) is a 503
/// whose message names the limit.
fn publish_error(e: &crate::topic::PublishError) -> ApiError {
    if let crate::topic::PublishError::MaxDepth { .. }
    | crate::topic::PublishError::Replication(_) = e
    {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: Cow::Owned(format!("E_PUB_FAILED {e}")),
        };
    }
    tracing::error!("HTTP publish failed: {e}");
    EXITING
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// `GET /ping`: `OK` (Go answers 500 `NOK - <reason>` when unhealthy, i.e. after a failed
/// disk write; nsq-rs has no such state yet).
async fn ping() -> Reply {
    Reply::OK
}

/// `GET /info`.
async fn info(State(nsqd): Shared) -> ApiResult {
    let o = &nsqd.opts;
    let port = |a: Option<SocketAddr>| a.map_or(0, |a| i64::from(a.port()));
    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let body = json::to_vec(&nsq_http::api::nsqd::Info {
        version: nsq_protocol::NSQ_VERSION.into(),
        broadcast_address: o.broadcast_address.clone(),
        hostname: crate::config::hostname(),
        http_port: port(*nsqd.http_addr.lock()),
        tcp_port: port(*nsqd.tcp_addr.lock()),
        start_time: nsqd.start_time,
        max_heartbeat_interval: nanos(o.max_heartbeat_interval),
        max_output_buffer_size: o.max_output_buffer_size,
        max_output_buffer_timeout: nanos(o.max_output_buffer_timeout),
        max_deflate_level: o.max_deflate_level,
        topology_zone: o.topology_zone.clone(),
        topology_region: o.topology_region.clone(),
    });
    Ok(Reply::Json(body))
}

/// `GET /stats?format=json|text&topic=&channel=&include_clients=&include_mem=`.
///
/// As in Go, `include_clients` / `include_mem` values other than `true`/`1`/`false`/`0`
/// (or absent) mean true; only a malformed query string is 400 `INVALID_REQUEST`.
async fn stats(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let flag = |k: &str| q.get(k).and_then(go_bool).unwrap_or(true);
    let filter = StatsFilter {
        topic: q.get("topic").unwrap_or(""),
        channel: q.get("channel").unwrap_or(""),
        include_clients: flag("include_clients"),
        include_mem: flag("include_mem"),
    };
    let s = crate::stats::collect(&nsqd, &filter);
    if q.get("format") == Some("json") {
        Ok(Reply::Json(s.to_json()))
    } else {
        Ok(Reply::Text(Cow::Owned(s.to_text(unix_secs()))))
    }
}

/// `POST /pub?topic=<t>[&defer=<ms>][&dedup_id=<id>]`, body = one message.
///
/// `dedup_id` (nsq-rs): on a topic with a dedup window, the message's dedup key is this
/// string instead of its body; ignored on other topics; empty is 400 `INVALID_DEDUP_ID`.
async fn do_pub(State(nsqd): Shared, req: Request) -> ApiResult {
    let max = limit(nsqd.opts.max_msg_size);
    let declared = content_length(req.headers());
    if declared.is_some_and(|n| n > max) {
        return Err(MSG_TOO_BIG);
    }
    let (parts, body) = req.into_parts();
    let body = read_limited(body, max, declared).await?;
    if body.len() as u64 > max {
        return Err(MSG_TOO_BIG);
    }
    if body.is_empty() {
        return Err(bad_request("MSG_EMPTY"));
    }
    let q = parse_query(&parts.uri)?;
    let replicated = replicated_topic(&nsqd, &q)?;
    let topic = match replicated {
        Some(_) => None,
        None => Some(topic_from_query(&nsqd, &q)?),
    };
    let defer_ns = match q.get("defer") {
        None => None,
        Some(s) => {
            let invalid = bad_request("INVALID_DEFER");
            let ms: i64 = s.parse().map_err(|_| invalid.clone())?;
            let ns = u64::try_from(ms)
                .ok()
                .and_then(|ms| ms.checked_mul(1_000_000))
                .ok_or(invalid.clone())?;
            if u128::from(ns) > nsqd.opts.max_req_timeout.as_nanos() {
                return Err(invalid);
            }
            Some(ns)
        }
    };
    let dedup_id = match q.get("dedup_id") {
        Some("") => return Err(bad_request("INVALID_DEDUP_ID")),
        id => id.map(str::as_bytes),
    };
    let Some(topic) = topic else {
        let (r, name) = replicated.expect("a replicated topic");
        publish_replicated(&r, &name, std::iter::once(&body[..]), 1, defer_ns).await?;
        return Ok(Reply::Text(Cow::Borrowed("OK")));
    };
    publish(
        &nsqd,
        &topic,
        std::iter::once(&body[..]),
        1,
        defer_ns,
        dedup_id,
    )
    .await?;
    Ok(Reply::OK)
}

/// `POST /mpub?topic=<t>[&binary=true]`: many messages, published as one batch. Each
/// message's dedup key is its body: a `dedup_id` is 400 `INVALID_DEDUP_ID` (nsq-rs).
async fn do_mpub(State(nsqd): Shared, req: Request) -> ApiResult {
    let max_body = limit(nsqd.opts.max_body_size);
    let max_msg = limit(nsqd.opts.max_msg_size);
    let declared = content_length(req.headers());
    if declared.is_some_and(|n| n > max_body) {
        return Err(BODY_TOO_BIG);
    }
    let (parts, body) = req.into_parts();
    let q = parse_query(&parts.uri)?;
    let replicated = replicated_topic(&nsqd, &q)?;
    let topic = match replicated {
        Some(_) => None,
        None => Some(topic_from_query(&nsqd, &q)?),
    };
    if q.get("dedup_id").is_some() {
        return Err(bad_request("INVALID_DEDUP_ID"));
    }
    // Text mode is the default; an unrecognised `binary` value (even an empty one) means
    // binary, with a deprecation warning (Go 1.3).
    let binary = match q.get("binary") {
        None => false,
        Some(v) => go_bool(v).unwrap_or_else(|| {
            tracing::warn!("deprecated value '{v}' used for /mpub binary param");
            true
        }),
    };
    let body = read_limited(body, max_body, declared).await?;
    let msgs = if binary {
        parse_binary_mpub(&body, max_msg, max_body)?
    } else {
        split_text_mpub(&body, max_msg, max_body)?
    };
    let count = u32::try_from(msgs.len()).map_err(|_| BODY_TOO_BIG)?;
    let Some(topic) = topic else {
        let (r, name) = replicated.expect("a replicated topic");
        publish_replicated(&r, &name, msgs.iter().copied(), count, None).await?;
        return Ok(Reply::Text(Cow::Borrowed("OK")));
    };
    publish(&nsqd, &topic, msgs.iter().copied(), count, None, None).await?;
    Ok(Reply::OK)
}

/// Text-mode `/mpub` (Go's loop over `ReadBytes('\n')` on `LimitReader(body, max+1)`):
/// messages are the `\n`-separated lines; empty lines are dropped silently and `\r` is
/// kept. `buf` holds at most `max_body + 1` bytes; reaching that many is `BODY_TOO_BIG`,
/// but only once the line that crosses it is reached, so an earlier over-long line is
/// `MSG_TOO_BIG`, as in Go.
fn split_text_mpub(buf: &[u8], max_msg: u64, max_body: u64) -> Result<Vec<&[u8]>, ApiError> {
    let read_max = max_body.saturating_add(1);
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut rest = buf;
    while !rest.is_empty() {
        let (block, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => rest.split_at(i + 1),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        total += block.len() as u64;
        if total == read_max {
            return Err(BODY_TOO_BIG);
        }
        let line = block.strip_suffix(b"\n").unwrap_or(block);
        if line.is_empty() {
            continue;
        }
        if line.len() as u64 > max_msg {
            return Err(MSG_TOO_BIG);
        }
        out.push(line);
    }
    Ok(out)
}

/// Binary-mode `/mpub` (Go's `readMPUB`): `[4-byte count]([4-byte size][body])*`, big-endian.
/// Errors are Go's fatal-error codes without the `E_` prefix, all with status 413. Bytes
/// after the last message are ignored, as in Go.
///
/// Deliberate difference: Go bounds a binary body only by its declared Content-Length, so a
/// chunked body may exceed `--max-body-size`; we refuse that with `BODY_TOO_BIG` rather than
/// buffer it.
fn parse_binary_mpub(buf: &[u8], max_msg: u64, max_body: u64) -> Result<Vec<&[u8]>, ApiError> {
    if buf.len() as u64 > max_body {
        return Err(BODY_TOO_BIG);
    }
    let read_i32 = |at: usize| -> Option<i32> {
        buf.get(at..at + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = read_i32(0).ok_or(BAD_BODY)?;
    // 4 bytes of count, then at least 5 bytes (size + 1) per message.
    let max_messages = (max_body as i64 - 4) / 5;
    if count <= 0 || i64::from(count) > max_messages {
        return Err(BAD_BODY);
    }
    let mut out = Vec::with_capacity((count as usize).min(buf.len() / 5));
    let mut pos = 4;
    for _ in 0..count {
        let size = read_i32(pos).ok_or(BAD_MESSAGE)?;
        if size <= 0 || size as u64 > max_msg {
            return Err(BAD_MESSAGE);
        }
        pos += 4;
        let body = buf.get(pos..pos + size as usize).ok_or(BAD_MESSAGE)?;
        out.push(body);
        pos += size as usize;
    }
    Ok(out)
}

/// `POST /topic/create?topic=<t>`. nsq-rs: `&replicas=N` creates it replicated on N members
/// of the replication cluster (`--raft-address`), answered once it has a leader.
async fn topic_create(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let Some(replicas) = q.get("replicas") else {
        if replicated_topic(&nsqd, &q)?.is_some() {
            return Ok(Reply::Empty);
        }
        topic_from_query(&nsqd, &q)?;
        return Ok(Reply::Empty);
    };
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(name.as_bytes()) {
        return Err(INVALID_TOPIC);
    }
    let n: usize = match replicas.parse() {
        Ok(n) if n >= 1 => n,
        _ => return Err(bad_request("INVALID_ARG_REPLICAS")),
    };
    let Some(r) = nsqd.replicas() else {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "REPLICATION_DISABLED replicas needs --raft-address (and --raft-peers)".into(),
        ));
    };
    if nsq_protocol::names::is_ephemeral(name) {
        return Err(message(
            StatusCode::BAD_REQUEST,
            "INVALID_ARG_REPLICAS an ephemeral topic cannot be replicated".into(),
        ));
    }
    if !r.is_replicated(name) && nsqd.topic(name).is_some() {
        return Err(message(
            StatusCode::BAD_REQUEST,
            format!("TOPIC_EXISTS topic {name} exists on this node and is not replicated"),
        ));
    }
    r.cluster.create(name, n).await.map_err(|e| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("REPLICATION_FAILED {e}"),
        )
    })?;
    Ok(Reply::Empty)
}

fn message(status: StatusCode, m: String) -> ApiError {
    ApiError {
        status,
        message: Cow::Owned(m),
    }
}

/// `POST /topic/delete?topic=<t>`: the name is not validated (an invalid one is simply not
/// found), as in Go.
async fn topic_delete(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if nsqd.is_replicated(name) {
        return Err(message(
            StatusCode::BAD_REQUEST,
            format!(
                "REPLICATED_TOPIC topic {name} is replicated; deleting it is not supported yet"
            ),
        ));
    }
    nsqd.delete_topic(name).map_err(|_| TOPIC_NOT_FOUND)?;
    Ok(Reply::Empty)
}

/// `POST /topic/empty?topic=<t>`: drops the messages the topic itself holds (not its
/// channels').
async fn topic_empty(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(name.as_bytes()) {
        return Err(INVALID_TOPIC);
    }
    nsqd.topic(name).ok_or(TOPIC_NOT_FOUND)?.empty();
    Ok(Reply::Empty)
}

/// `/topic/pause` and `/topic/unpause` (names not validated, as in Go).
///
/// Go also persists `nsqd.dat` here so a crash cannot undo the change; nsq-rs has no
/// metadata file yet.
fn set_topic_paused(nsqd: &Nsqd, uri: &Uri, paused: bool) -> ApiResult {
    let q = parse_query(uri)?;
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    nsqd.topic(name).ok_or(TOPIC_NOT_FOUND)?.set_paused(paused);
    Ok(Reply::Empty)
}

async fn topic_pause(State(nsqd): Shared, uri: Uri) -> ApiResult {
    set_topic_paused(&nsqd, &uri, true)
}

async fn topic_unpause(State(nsqd): Shared, uri: Uri) -> ApiResult {
    set_topic_paused(&nsqd, &uri, false)
}

/// `POST /channel/create?topic=<t>&channel=<c>`: the topic must exist.
async fn channel_create(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let (t, channel) = existing_topic_and_channel(&nsqd, &uri)?;
    // Err only if the topic was deleted since we looked it up.
    nsqd.get_or_create_channel(&t, &channel)
        .map_err(|_| TOPIC_NOT_FOUND)?;
    Ok(Reply::Empty)
}

/// `POST /channel/delete?topic=<t>&channel=<c>`.
async fn channel_delete(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let (t, channel) = existing_topic_and_channel(&nsqd, &uri)?;
    nsqd.delete_channel(&t.name, &channel)
        .map_err(|e| match e {
            DeleteError::TopicNotFound => TOPIC_NOT_FOUND,
            DeleteError::ChannelNotFound => CHANNEL_NOT_FOUND,
        })?;
    if t.replicated {
        if let Some(r) = nsqd.replicas() {
            r.channel_changed(&t.name, &channel, false);
        }
    }
    Ok(Reply::Empty)
}

/// `POST /channel/empty?topic=<t>&channel=<c>`: drops ready, in-flight and deferred
/// messages; consumers' in-flight counts go to zero.
async fn channel_empty(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let (t, channel) = existing_topic_and_channel(&nsqd, &uri)?;
    t.channel(&channel).ok_or(CHANNEL_NOT_FOUND)?.empty();
    Ok(Reply::Empty)
}

/// `/channel/pause` and `/channel/unpause` (Go also persists `nsqd.dat`; see
/// [`set_topic_paused`]).
fn set_channel_paused(nsqd: &Nsqd, uri: &Uri, paused: bool) -> ApiResult {
    let (t, channel) = existing_topic_and_channel(nsqd, uri)?;
    t.channel(&channel)
        .ok_or(CHANNEL_NOT_FOUND)?
        .set_paused(paused);
    Ok(Reply::Empty)
}

async fn channel_pause(State(nsqd): Shared, uri: Uri) -> ApiResult {
    set_channel_paused(&nsqd, &uri, true)
}

async fn channel_unpause(State(nsqd): Shared, uri: Uri) -> ApiResult {
    set_channel_paused(&nsqd, &uri, false)
}

// ---- delivery policies (nsq-rs; see `state::policy`) -----------------------------------------

/// Largest policy body accepted.
const POLICY_BODY_MAX: u64 = 64 * 1024;

fn policy_error(e: crate::state::policy::PolicyError) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        message: Cow::Owned(e.0),
    }
}

fn existing_topic(nsqd: &Nsqd, uri: &Uri) -> Result<Arc<Topic>, ApiError> {
    let q = parse_query(uri)?;
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(name.as_bytes()) {
        return Err(bad_request("INVALID_ARG_TOPIC"));
    }
    nsqd.topic(name).ok_or(TOPIC_NOT_FOUND)
}

async fn policy_body(req: Request) -> Result<(Uri, Vec<u8>), ApiError> {
    let (parts, body) = req.into_parts();
    let declared = content_length(&parts.headers);
    if declared.is_some_and(|n| n > POLICY_BODY_MAX) {
        return Err(too_large("BODY_TOO_BIG"));
    }
    let body = read_limited(body, POLICY_BODY_MAX, declared).await?;
    if body.len() as u64 > POLICY_BODY_MAX {
        return Err(too_large("BODY_TOO_BIG"));
    }
    Ok((parts.uri, body.to_vec()))
}

/// `GET /topic/config?topic=T`: the topic's policy (`{}` when none).
async fn topic_config_get(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let t = existing_topic(&nsqd, &uri)?;
    Ok(Reply::Json(json::to_vec(&t.policy().to_json())))
}

/// `GET /topic/replication?topic=T` (nsq-rs): the replicated topic's state on this member —
/// role, leader, members, term, log and applied index, followers' lag (on the leader), and
/// how many messages the replicated state keeps. 404 `TOPIC_NOT_FOUND` when not replicated.
async fn topic_replication(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    let st = nsqd
        .replicas()
        .and_then(|r| r.cluster.status(name))
        .ok_or(TOPIC_NOT_FOUND)?;
    Ok(Reply::Json(json::to_vec(&st)))
}

/// `POST /topic/replication?topic=T&members=1,2,4` (nsq-rs): replaces the replicated topic's
/// members (node ids: this node or `--raft-peers`) with openraft's joint consensus; new
/// members catch up as learners first. Answered once the change is committed.
async fn topic_replication_members(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let name = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    let r = nsqd.replicas().ok_or(TOPIC_NOT_FOUND)?;
    if !r.is_replicated(name) {
        return Err(TOPIC_NOT_FOUND);
    }
    let list = q.get("members").ok_or(bad_request("MISSING_ARG_MEMBERS"))?;
    let want: Result<std::collections::BTreeSet<u64>, _> =
        list.split(',').map(|s| s.trim().parse::<u64>()).collect();
    let want = want.map_err(|_| bad_request("INVALID_ARG_MEMBERS"))?;
    r.cluster.change_members(name, want).await.map_err(|e| {
        message(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("REPLICATION_FAILED {e}"),
        )
    })?;
    Ok(Reply::Empty)
}

/// `POST /topic/config?topic=T` with a JSON body merged into the policy; answers the result.
async fn topic_config_post(State(nsqd): Shared, req: Request) -> ApiResult {
    let (uri, body) = policy_body(req).await?;
    let t = existing_topic(&nsqd, &uri)?;
    let p = t.policy().merged(&body).map_err(policy_error)?;
    if let Some(ttl) = p.ttl {
        for c in t.channels() {
            if let Some(cttl) = c.policy().ttl.filter(|c| *c > ttl) {
                return Err(policy_error(crate::state::policy::PolicyError(format!(
                    "ttl: {} is shorter than channel {}'s ttl {}",
                    nsq_cli::format_go_duration(ttl),
                    c.name,
                    nsq_cli::format_go_duration(cttl)
                ))));
            }
        }
    }
    t.set_policy(p.clone());
    tracing::info!("TOPIC({}): config {}", t.name, p.to_json());
    Ok(Reply::Json(json::to_vec(&p.to_json())))
}

/// `GET /channel/config?topic=T&channel=C`.
async fn channel_config_get(State(nsqd): Shared, uri: Uri) -> ApiResult {
    let (t, name) = existing_topic_and_channel(&nsqd, &uri)?;
    let c = t.channel(&name).ok_or(CHANNEL_NOT_FOUND)?;
    Ok(Reply::Json(json::to_vec(&c.policy().to_json())))
}

/// `POST /channel/config?topic=T&channel=C` with a JSON body merged into the policy.
async fn channel_config_post(State(nsqd): Shared, req: Request) -> ApiResult {
    let (uri, body) = policy_body(req).await?;
    let (t, name) = existing_topic_and_channel(&nsqd, &uri)?;
    let c = t.channel(&name).ok_or(CHANNEL_NOT_FOUND)?;
    let topic_ttl = t.policy().ttl;
    let p = c
        .policy()
        .merged(&body, &t.name, topic_ttl)
        .map_err(policy_error)?;
    c.set_policy(p.clone(), topic_ttl, nsqd.weak());
    tracing::info!(
        "TOPIC({}): channel({}) config {}",
        t.name,
        c.name,
        p.to_json()
    );
    Ok(Reply::Json(json::to_vec(&p.to_json())))
}

/// A config value as JSON, re-encoded with Go's string escaping.
fn config_json(text: &str) -> Vec<u8> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => json::to_vec(&v),
        Err(_) => text.as_bytes().to_vec(),
    }
}

/// `GET /config/{opt}`: the option's value as Go marshals it.
async fn config_get(
    State(nsqd): Shared,
    opt: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> ApiResult {
    let Ok(Path(opt)) = opt else {
        return Err(INVALID_OPTION);
    };
    // `log_level` as last PUT (the process-wide filter), else the flag.
    let v = nsqd
        .lookup
        .http_config_value(&opt)
        .or_else(|| {
            (opt == "log_level")
                .then(nsq_cli::daemon::runtime_log_level)
                .flatten()
                .map(|l| l.go_value().to_string())
        })
        .or_else(|| nsqd.opts.http_config_value(&opt))
        .ok_or(INVALID_OPTION)?;
    Ok(Reply::Json(config_json(&v)))
}

/// `PUT /config/{opt}`: only `nsqlookupd_tcp_addresses` (JSON array of strings) and
/// `log_level` (a bare level name) may be set, as in Go; the body is checked first (413
/// `INVALID_VALUE` when empty or larger than `--max-msg-size`), then the option.
///
/// Both are applied at once, as in Go: lookupd peers are added and removed (Go's lookup loop),
/// and the log level replaces the process's running log filter
/// ([`nsq_cli::daemon::set_log_level`]; it is process-wide, as one daemon runs per process),
/// which `GET /config/log_level` then reports.
async fn config_put(
    State(nsqd): Shared,
    opt: Result<Path<String>, axum::extract::rejection::PathRejection>,
    req: Request,
) -> ApiResult {
    let max = limit(nsqd.opts.max_msg_size);
    let body = read_limited(req.into_body(), max, None).await?;
    if body.is_empty() || body.len() as u64 > max {
        return Err(too_large("INVALID_VALUE"));
    }
    let Ok(Path(opt)) = opt else {
        return Err(INVALID_OPTION);
    };
    let mut opts = nsqd.opts.clone();
    opts.set_http_config_value(&opt, &body).map_err(|e| {
        bad_request(if e == crate::config::SetConfigError::InvalidOption {
            "INVALID_OPTION"
        } else {
            "INVALID_VALUE"
        })
    })?;
    let v = opts.http_config_value(&opt).ok_or(INVALID_OPTION)?;
    match opt.as_str() {
        "nsqlookupd_tcp_addresses" => nsqd.lookup.set_addresses(opts.lookupd_tcp_addresses),
        "log_level" => {
            if let Err(e) = nsq_cli::daemon::set_log_level(opts.common.log_level) {
                // Only inside another program's logging (in-process tests, an embedding).
                tracing::warn!("PUT /config/log_level = {}: {e}", opts.common.log_level);
            }
        }
        _ => {}
    }
    Ok(Reply::Json(config_json(&v)))
}
