//! nsqadmin's HTTP server: the embedded UI, the JSON API under `/api/` (Go's endpoints plus
//! nsq-rs's `/api/rates` and `/api/history/…` from the sampler) and Go's `/config/{opt}`,
//! all below `--base-path`, gzip-compressed when the client accepts it.
//!
//! Conventions are Go nsqadmin 1.3's (V1 responses): `X-NSQ-Content-Type: nsq; version=1.0`
//! on everything, JSON bodies with Go's escaping, errors as status + `{"message":"CODE"}`,
//! every API body with a `message` (`""`, or `WARNING: …` when some upstream failed), 502
//! `UPSTREAM_ERROR: …` when all of them did.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use nsq_http::service::{decorated, json_response, not_found, with_fallbacks, ApiError};
use serde_json::{json, Value};

use crate::model::{self, NodeError};
use crate::{assets, Admin};

/// The header go-nsq and nsqjs look for to recognise 1.0-format bodies.
pub use nsq_http::service::NSQ_CONTENT_TYPE_HEADER;

/// 502 `UPSTREAM_ERROR: <node>: <error>; …`: every upstream failed.
fn upstream_error(errors: &[NodeError]) -> ApiError {
    let parts: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.node, e.error))
        .collect();
    ApiError::owned(
        StatusCode::BAD_GATEWAY,
        format!("UPSTREAM_ERROR: {}", parts.join("; ")),
    )
}

type Shared = State<Arc<Admin>>;
type ApiResult = Result<Response, ApiError>;

/// `value` (an object) plus `message` and `node_errors`, as 200 JSON.
fn ok_with(mut value: Value, errors: &[NodeError]) -> Response {
    if let Value::Object(m) = &mut value {
        m.insert(
            "message".into(),
            Value::String(model::warning_message(errors)),
        );
        m.insert(
            "node_errors".into(),
            serde_json::to_value(errors).unwrap_or(Value::Null),
        );
    }
    json_response(StatusCode::OK, &value)
}

/// Total failure: every one of `asked` (> 0) upstreams failed.
fn all_failed(errors: &[NodeError], asked: usize) -> bool {
    asked > 0 && errors.len() >= asked
}

/// The routing table, below `base` (`""` or `/prefix`).
pub fn router(admin: Arc<Admin>) -> Router {
    let base = admin.base_path.clone();
    let p = |s: &str| format!("{base}{s}");
    let mut r = Router::new()
        .route(&p("/ping"), get(|| async { "OK" }))
        .route(
            &p("/metrics"),
            nsq_http::metrics::route(Arc::new(crate::metrics::registry(
                admin.cluster().client.counts(),
            ))),
        )
        .route(&p("/"), get(index))
        .route(&p("/topics"), get(index))
        .route(&p("/topics/{topic}"), get(index))
        .route(&p("/topics/{topic}/{channel}"), get(index))
        .route(&p("/nodes"), get(index))
        .route(&p("/nodes/{node}"), get(index))
        .route(&p("/counter"), get(index))
        .route(&p("/lookup"), get(index))
        .route(&p("/static/{asset}"), get(static_asset))
        .route(&p("/api/rates"), get(api_rates))
        .route(&p("/api/history/{topic}"), get(api_topic_history))
        .route(
            &p("/api/history/{topic}/{channel}"),
            get(api_channel_history),
        )
        .route(&p("/config/{opt}"), get(config).put(config))
        .route(&p("/api/topics"), get(api_topics).post(api_create))
        .route(
            &p("/api/topics/{topic}"),
            get(api_topic)
                .post(api_topic_action)
                .delete(api_topic_delete),
        )
        .route(
            &p("/api/topics/{topic}/{channel}"),
            get(api_channel)
                .post(api_channel_action)
                .delete(api_channel_delete),
        )
        .route(&p("/api/nodes"), get(api_nodes))
        .route(&p("/api/counter"), get(api_counter))
        .route(
            &p("/api/nodes/{node}"),
            get(api_node).delete(api_node_tombstone),
        );
    if !base.is_empty() {
        r = r.route(&base, get(index));
    }
    let r = with_fallbacks(r).layer(middleware::from_fn(gzip));
    decorated(r, &[]).with_state(admin)
}

async fn index(State(admin): Shared) -> Response {
    let lookupds = String::from_utf8(nsq_http::json::to_vec(&admin.lookupds()))
        .unwrap_or_else(|_| "[]".into());
    let sample_ms = interval_ms(&admin);
    let html = admin
        .index_html
        .replace("{{LOOKUPD_JSON}}", &lookupds)
        .replace("{{SAMPLE_MS}}", &sample_ms.to_string())
        .replace(
            "{{CHART_SOURCE}}",
            if admin.prom.is_some() {
                "\"prometheus\""
            } else {
                "\"sampler\""
            },
        );
    let mut res = Response::new(Body::from(html));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

async fn static_asset(State(admin): Shared, Path(asset): Path<String>) -> Response {
    if !admin.opts.dev_static_dir.is_empty() && !asset.contains('/') && !asset.starts_with('.') {
        if let Ok(bytes) =
            tokio::fs::read(std::path::Path::new(&admin.opts.dev_static_dir).join(&asset)).await
        {
            if let Some((_, ct)) = assets::find(&asset) {
                return asset_response(Bytes::from(bytes), ct);
            }
        }
    }
    match assets::find(&asset) {
        Some((body, ct)) => asset_response(Bytes::from_static(body.as_bytes()), ct),
        None => not_found("NOT_FOUND").into_response(),
    }
}

/// Whether an `Accept-Encoding` value allows gzip (`gzip` or `*`, with a non-zero `q`).
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or_default().trim();
        let q_zero = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q_zero
    })
}

/// Smallest body worth compressing.
const GZIP_MIN: usize = 512;
/// Largest body this layer buffers to compress (bigger ones go out as they are).
const GZIP_MAX: usize = 64 << 20;

/// gzip-compresses responses when the client accepts it, as Go nsqadmin does (its handlers
/// are wrapped in a gzip handler). Every response here is a buffered body, so it is
/// compressed in one go and keeps its `Content-Length`.
///
/// Not tower-http's `CompressionLayer`: that one streams (every compressed response becomes
/// chunked), writes `Vary: accept-encoding` where Go writes `Vary: Accept-Encoding`, and adds
/// three crates to the build, to replace the few lines below.
async fn gzip(req: Request, next: Next) -> Response {
    let wants = req
        .headers()
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_gzip);
    let res = next.run(req).await;
    if !wants || res.headers().contains_key(header::CONTENT_ENCODING) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    let bytes = match axum::body::to_bytes(body, GZIP_MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("gzip: failed to buffer the response body - {e}");
            return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR")
                .into_response();
        }
    };
    if bytes.len() < GZIP_MIN {
        return Response::from_parts(parts, Body::from(bytes));
    }
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::default(),
    );
    let out = match enc.write_all(&bytes).and_then(|()| enc.finish()) {
        Ok(out) => out,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    Response::from_parts(parts, Body::from(out))
}

/// `GET`/`PUT /config/{opt}`, Go's `doConfig`: only from `--allow-config-from-cidr` (403
/// `FORBIDDEN` otherwise). `PUT` may set `nsqlookupd_http_addresses` (a JSON array of
/// strings) or `log_level` (a level name), each applied at once: the lookupds are queried from
/// the next request on, and the level replaces the process's running log filter
/// ([`nsq_cli::daemon::set_log_level`]). Both answer with the option's value as `GET` does.
async fn config(
    State(admin): Shared,
    method: axum::http::Method,
    Path(opt): Path<String>,
    ctx: ActionCtx,
    body: Bytes,
) -> ApiResult {
    if let Some(cidr) = &admin.config_cidr {
        let Some(peer) = ctx.peer else {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REMOTE_ADDR",
            ));
        };
        if !cidr.contains(peer.ip()) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN"));
        }
    }
    if method == axum::http::Method::PUT {
        if body.is_empty() || body.len() > 1 << 20 {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_VALUE",
            ));
        }
        let invalid = || ApiError::new(StatusCode::BAD_REQUEST, "INVALID_VALUE");
        match opt.as_str() {
            "nsqlookupd_http_addresses" => {
                let addrs: Vec<String> = serde_json::from_slice(&body).map_err(|_| invalid())?;
                tracing::info!("PUT /config/{opt}: lookupds are now {addrs:?}");
                admin.set_lookupds(addrs);
            }
            "log_level" => {
                let text = std::str::from_utf8(&body).map_err(|_| invalid())?;
                let level: crate::config::LogLevel = text.parse().map_err(|_| invalid())?;
                *admin.log_level.lock().unwrap_or_else(|e| e.into_inner()) = level;
                if let Err(e) = nsq_cli::daemon::set_log_level(level) {
                    // Only inside another program's logging (in-process tests, an embedding).
                    tracing::warn!("PUT /config/log_level = {level}: {e}");
                }
            }
            _ => return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_OPTION")),
        }
    }
    let level = *admin.log_level.lock().unwrap_or_else(|e| e.into_inner());
    let v = admin
        .opts
        .config_value(&opt, &admin.lookupds(), level)
        .ok_or(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_OPTION"))?;
    Ok(json_response(StatusCode::OK, &v))
}

fn interval_ms(admin: &Admin) -> u128 {
    match &admin.prom {
        Some(p) => p.step.as_millis(),
        None => admin.history.as_ref().map_or(0, |h| h.interval.as_millis()),
    }
}

/// A failed Prometheus query: logged, and the page shows it (no points).
fn prom_failed(e: &str) -> Vec<model::NodeError> {
    tracing::warn!("--prometheus-url: {e}");
    vec![model::NodeError {
        node: "prometheus".into(),
        error: e.to_owned(),
    }]
}

/// `GET /api/rates` (nsq-rs): every topic's latest messages/s, depth and message count from
/// the sampler, for the topics list. `interval_ms` is 0 when the sampler is off.
async fn api_rates(State(admin): Shared) -> Response {
    let mut topics = serde_json::Map::new();
    let mut errors = Vec::new();
    if let Some(p) = &admin.prom {
        match p.latest(&admin.cluster().client, crate::now_ms()).await {
            Ok(l) => topics.extend(l.into_iter().map(|(t, l)| (t, json!(l)))),
            Err(e) => errors = prom_failed(&e),
        }
    } else if let Some(h) = &admin.history {
        for (t, l) in h.latest() {
            topics.insert(t, json!(l));
        }
    }
    ok_with(
        json!({ "interval_ms": interval_ms(&admin), "topics": topics }),
        &errors,
    )
}

/// `GET /api/history/{topic}` (nsq-rs): the topic's samples (oldest first) and its
/// channels' samples.
async fn api_topic_history(State(admin): Shared, Path(topic): Path<String>) -> Response {
    let mut errors = Vec::new();
    let (samples, channels) = match &admin.prom {
        Some(p) => p
            .topic(&admin.cluster().client, &topic, crate::now_ms())
            .await
            .unwrap_or_else(|e| {
                errors = prom_failed(&e);
                Default::default()
            }),
        None => admin
            .history
            .as_ref()
            .map(|h| h.topic(&topic))
            .unwrap_or_default(),
    };
    let channels: serde_json::Map<String, Value> = channels
        .into_iter()
        .map(|(c, pts)| (c, json!(pts)))
        .collect();
    ok_with(
        json!({
            "topic": topic,
            "interval_ms": interval_ms(&admin),
            "samples": samples,
            "channels": channels,
        }),
        &errors,
    )
}

/// `GET /api/history/{topic}/{channel}` (nsq-rs): the channel's samples, oldest first.
async fn api_channel_history(
    State(admin): Shared,
    Path((topic, channel)): Path<(String, String)>,
) -> Response {
    let mut errors = Vec::new();
    let samples = match &admin.prom {
        Some(p) => p
            .channel(&admin.cluster().client, &topic, &channel, crate::now_ms())
            .await
            .unwrap_or_else(|e| {
                errors = prom_failed(&e);
                Vec::new()
            }),
        None => admin
            .history
            .as_ref()
            .map(|h| h.channel(&topic, &channel))
            .unwrap_or_default(),
    };
    ok_with(
        json!({
            "topic": topic,
            "channel": channel,
            "interval_ms": interval_ms(&admin),
            "samples": samples,
        }),
        &errors,
    )
}

fn asset_response(body: Bytes, ct: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    res
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn api_topics(State(admin): Shared, uri: Uri) -> ApiResult {
    let inactive = uri
        .query()
        .map(|q| nsq_http::query::Query::parse(q).0)
        .and_then(|q| q.get("inactive").and_then(nsq_http::query::go_bool))
        .unwrap_or(false);
    let (topics, errors, asked) = admin.cluster().topics().await;
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    if !inactive {
        return Ok(ok_with(json!({ "topics": topics }), &errors));
    }
    // Topics that lookupd knows but no nsqd produces, with their channels.
    let mut map = serde_json::Map::new();
    let mut errors = errors;
    let lookups = futures::future::join_all(topics.iter().map(|t| {
        let admin = &admin;
        async move {
            let path = format!("/lookup?topic={}", crate::client::query_escape(t));
            let (ok, errs) = admin
                .cluster()
                .fan_get::<model::lookupd::Lookup>(admin.cluster().lookupds(), &path)
                .await;
            (t, ok, errs)
        }
    }))
    .await;
    for (t, ok, errs) in lookups {
        errors.extend(errs);
        if !ok.is_empty() && ok.iter().all(|(_, r)| r.producers.is_empty()) {
            let mut channels: Vec<String> = ok.into_iter().flat_map(|(_, r)| r.channels).collect();
            channels.sort();
            channels.dedup();
            map.insert(t.clone(), json!(channels));
        }
    }
    Ok(ok_with(json!({ "topics": map }), &errors))
}

async fn topic_stats(
    admin: &Admin,
    topic: &str,
    channel: Option<&str>,
) -> Result<(Vec<(model::Producer, model::NsqdStats)>, Vec<NodeError>), ApiError> {
    let (producers, mut errors, asked) = admin.cluster().topic_producers(topic).await;
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    if producers.is_empty() {
        return Err(no_producers(topic, &errors));
    }
    let (stats, errs) = admin
        .cluster()
        .producer_stats(&producers, Some(topic), channel, channel.is_some())
        .await;
    if stats.is_empty() {
        return Err(upstream_error(&errs));
    }
    errors.extend(errs);
    Ok((stats, errors))
}

async fn api_topic(State(admin): Shared, Path(topic): Path<String>) -> ApiResult {
    let (stats, errors) = topic_stats(&admin, &topic, None).await?;
    let agg = model::aggregate_topic(&topic, &stats, now_s());
    if agg.nodes.is_empty() {
        // --nsqd-http-address mode: no configured nsqd has it.
        return Err(no_producers(&topic, &errors));
    }
    Ok(ok_with(json!(agg), &errors))
}

/// A topic nothing produces: Go nsqadmin answers 502 (its fan-out to zero nsqds "failed to
/// query any nsqd", or every lookupd answered 404), so scripts see the same status here;
/// the text says what happened.
fn no_producers(topic: &str, errors: &[NodeError]) -> ApiError {
    let mut msg =
        format!("UPSTREAM_ERROR: Failed to query any nsqd: no producer of topic {topic:?} (TOPIC_NOT_FOUND)");
    if !errors.is_empty() {
        msg.push_str("; ");
        msg.push_str(model::warning_message(errors).trim_start_matches("WARNING: "));
    }
    ApiError {
        status: StatusCode::BAD_GATEWAY,
        message: Cow::Owned(msg),
    }
}

async fn api_channel(
    State(admin): Shared,
    Path((topic, channel)): Path<(String, String)>,
) -> ApiResult {
    let (stats, errors) = topic_stats(&admin, &topic, Some(&channel)).await?;
    if let Some(c) = model::aggregate_channel(&topic, &channel, &stats, now_s()) {
        return Ok(ok_with(json!(c), &errors));
    }
    if !errors.is_empty() {
        return Err(upstream_error(&errors));
    }
    // With --nsqd-http-address every nsqd was asked: does any of them have the topic at all?
    // (With lookupds, having producers already says the topic exists.)
    if matches!(admin.cluster().upstream, crate::cluster::Upstream::Nsqd(_)) {
        let (stats, _) = topic_stats(&admin, &topic, None).await?;
        if !stats
            .iter()
            .any(|(_, s)| s.topics.iter().flatten().any(|t| t.topic_name == topic))
        {
            return Err(no_producers(&topic, &errors));
        }
    }
    Err(ApiError::new(StatusCode::NOT_FOUND, "CHANNEL_NOT_FOUND"))
}

async fn api_nodes(State(admin): Shared) -> ApiResult {
    let (answers, mut errors, asked) = admin.cluster().nodes().await;
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    let nodes = model::merge_nodes(&answers);
    if matches!(
        admin.cluster().upstream,
        crate::cluster::Upstream::Lookupd(_)
    ) {
        // lookupd may still list a node that has died: probe them all at once.
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| model::join_host_port(&n.broadcast_address, n.http_port))
            .collect();
        errors.extend(admin.cluster().unreachable(&addrs).await);
    }
    Ok(ok_with(json!({ "nodes": nodes }), &errors))
}

/// The identity and request details of an admin action.
struct Actor {
    user: Option<String>,
    remote_ip: String,
    user_agent: String,
    url: String,
}

fn actor(headers: &HeaderMap, peer: Option<SocketAddr>, uri: &Uri, acl_header: &str) -> Actor {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // Go sends the HTTP Basic-Auth user; without one, the ACL header's user.
    let basic = h("authorization").and_then(|v| basic_auth_user(&v));
    Actor {
        user: basic.or_else(|| h(acl_header)).filter(|u| !u.is_empty()),
        remote_ip: peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        user_agent: h("user-agent").unwrap_or_default(),
        url: uri.to_string(),
    }
}

/// The user name of an `Authorization: Basic <base64(user:password)>` header.
pub fn basic_auth_user(header: &str) -> Option<String> {
    let (scheme, b64) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine as _;
    // Go's `Request.BasicAuth`: standard alphabet, padding required.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _) = text.split_once(':')?;
    Some(user.to_owned())
}

fn check_admin(admin: &Admin, a: &Actor) -> Result<(), ApiError> {
    if admin.opts.admin_users.is_empty() {
        return Ok(());
    }
    match &a.user {
        Some(u) if admin.opts.admin_users.iter().any(|x| x == u) => Ok(()),
        _ => Err(ApiError::new(StatusCode::FORBIDDEN, "FORBIDDEN")),
    }
}

fn parse_action(body: &Bytes) -> Result<String, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_BODY"))?;
    match v.get("action").and_then(Value::as_str) {
        Some(a @ ("pause" | "unpause" | "empty" | "config")) => Ok(a.to_owned()),
        _ => Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ACTION")),
    }
}

/// nsq-rs: `{"action":"config","config":{...}}` sets a topic's or channel's policy on every
/// node that has the topic (nsqd's `/topic/config` / `/channel/config`). When every node
/// refuses it as invalid, the answer is a 400 with nsqd's reason (it names the field).
async fn apply_config(
    admin: &Admin,
    addrs: &[String],
    path: &str,
    body: &Bytes,
) -> Result<Vec<NodeError>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_BODY"))?;
    let config = match v.get("config") {
        Some(c @ Value::Object(_)) => serde_json::to_vec(c).unwrap_or_default(),
        _ => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: Cow::Borrowed("config: expected a JSON object"),
            })
        }
    };
    let (errors, bad_request) = admin.cluster().fan_post_json(addrs, path, &config).await;
    if all_failed(&errors, addrs.len()) {
        if bad_request {
            let first = errors.first().map(|e| e.error.clone()).unwrap_or_default();
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                message: Cow::Owned(first.trim_start_matches("400 ").to_owned()),
            });
        }
        return Err(upstream_error(&errors));
    }
    Ok(errors)
}

/// Result of a fan-out action: `{"message": ""}` or a warning; 502 if nothing succeeded.
fn action_result(errors: &[NodeError], asked: usize) -> ApiResult {
    if all_failed(errors, asked) {
        return Err(upstream_error(errors));
    }
    Ok(ok_with(json!({}), errors))
}

struct ActionCtx {
    headers: HeaderMap,
    peer: Option<SocketAddr>,
    uri: Uri,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ActionCtx {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ActionCtx {
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            uri: parts.uri.clone(),
        })
    }
}

async fn producer_addrs(
    admin: &Admin,
    topic: &str,
) -> Result<(Vec<String>, Vec<NodeError>), ApiError> {
    let (producers, errors, asked) = admin.cluster().topic_producers(topic).await;
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    Ok((
        producers
            .iter()
            .map(model::Producer::http_address)
            .collect(),
        errors,
    ))
}

async fn api_topic_action(
    State(admin): Shared,
    Path(topic): Path<String>,
    ctx: ActionCtx,
    body: Bytes,
) -> ApiResult {
    let a = actor(
        &ctx.headers,
        ctx.peer,
        &ctx.uri,
        &admin.opts.acl_http_header,
    );
    check_admin(&admin, &a)?;
    let action = parse_action(&body)?;
    let (addrs, mut errors) = producer_addrs(&admin, &topic).await?;
    if addrs.is_empty() {
        return Err(no_producers(&topic, &errors));
    }
    let path = format!(
        "/topic/{action}?topic={}",
        crate::client::query_escape(&topic)
    );
    if action == "config" {
        errors.extend(apply_config(&admin, &addrs, &path, &body).await?);
        admin.notify("config_topic", &topic, None, &a);
        return action_result(&errors, 0);
    }
    let (_, errs) = admin.cluster().fan_post(&addrs, &path, false).await;
    let asked = addrs.len();
    let failed = all_failed(&errs, asked);
    errors.extend(errs);
    if !failed {
        admin.notify(&format!("{action}_topic"), &topic, None, &a);
    } else {
        return Err(upstream_error(&errors));
    }
    action_result(&errors, 0)
}

async fn api_channel_action(
    State(admin): Shared,
    Path((topic, channel)): Path<(String, String)>,
    ctx: ActionCtx,
    body: Bytes,
) -> ApiResult {
    let a = actor(
        &ctx.headers,
        ctx.peer,
        &ctx.uri,
        &admin.opts.acl_http_header,
    );
    check_admin(&admin, &a)?;
    let action = parse_action(&body)?;
    let (addrs, mut errors) = producer_addrs(&admin, &topic).await?;
    if addrs.is_empty() {
        return Err(no_producers(&topic, &errors));
    }
    let path = format!(
        "/channel/{action}?topic={}&channel={}",
        crate::client::query_escape(&topic),
        crate::client::query_escape(&channel)
    );
    if action == "config" {
        errors.extend(apply_config(&admin, &addrs, &path, &body).await?);
        admin.notify("config_channel", &topic, Some(&channel), &a);
        return action_result(&errors, 0);
    }
    let (_, errs) = admin.cluster().fan_post(&addrs, &path, false).await;
    if all_failed(&errs, addrs.len()) {
        errors.extend(errs);
        return Err(upstream_error(&errors));
    }
    errors.extend(errs);
    admin.notify(&format!("{action}_channel"), &topic, Some(&channel), &a);
    action_result(&errors, 0)
}

async fn api_topic_delete(
    State(admin): Shared,
    Path(topic): Path<String>,
    ctx: ActionCtx,
) -> ApiResult {
    let a = actor(
        &ctx.headers,
        ctx.peer,
        &ctx.uri,
        &admin.opts.acl_http_header,
    );
    check_admin(&admin, &a)?;
    // Producers first: once lookupd forgets the topic they can no longer be found.
    let (addrs, mut errors) = producer_addrs(&admin, &topic).await?;
    let q = format!("topic={}", crate::client::query_escape(&topic));
    let lookupds = admin.cluster().lookupds().to_vec();
    let (_, errs) = admin
        .cluster()
        .fan_post(&lookupds, &format!("/topic/delete?{q}"), false)
        .await;
    errors.extend(errs);
    let (_, errs) = admin
        .cluster()
        .fan_post(&addrs, &format!("/topic/delete?{q}"), true)
        .await;
    errors.extend(errs);
    if all_failed(&errors, lookupds.len() + addrs.len()) {
        return Err(upstream_error(&errors));
    }
    admin.notify("delete_topic", &topic, None, &a);
    action_result(&errors, 0)
}

async fn api_channel_delete(
    State(admin): Shared,
    Path((topic, channel)): Path<(String, String)>,
    ctx: ActionCtx,
) -> ApiResult {
    let a = actor(
        &ctx.headers,
        ctx.peer,
        &ctx.uri,
        &admin.opts.acl_http_header,
    );
    check_admin(&admin, &a)?;
    let (addrs, mut errors) = producer_addrs(&admin, &topic).await?;
    let q = format!(
        "topic={}&channel={}",
        crate::client::query_escape(&topic),
        crate::client::query_escape(&channel)
    );
    let lookupds = admin.cluster().lookupds().to_vec();
    let (_, errs) = admin
        .cluster()
        .fan_post(&lookupds, &format!("/channel/delete?{q}"), true)
        .await;
    errors.extend(errs);
    let (_, errs) = admin
        .cluster()
        .fan_post(&addrs, &format!("/channel/delete?{q}"), true)
        .await;
    errors.extend(errs);
    if all_failed(&errors, lookupds.len() + addrs.len()) {
        return Err(upstream_error(&errors));
    }
    admin.notify("delete_channel", &topic, Some(&channel), &a);
    action_result(&errors, 0)
}

/// `POST /api/topics` `{"topic", "channel"?}`: registers the topic (and channel) with every
/// lookupd and creates the channel on the topic's producers; with `--nsqd-http-address`,
/// creates them on every nsqd.
async fn api_create(State(admin): Shared, ctx: ActionCtx, body: Bytes) -> ApiResult {
    let a = actor(
        &ctx.headers,
        ctx.peer,
        &ctx.uri,
        &admin.opts.acl_http_header,
    );
    check_admin(&admin, &a)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_BODY"))?;
    let topic = v.get("topic").and_then(Value::as_str).unwrap_or_default();
    let channel = v.get("channel").and_then(Value::as_str).unwrap_or_default();
    if !nsq_protocol::names::is_valid_topic_name(topic.as_bytes()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_TOPIC"));
    }
    if !channel.is_empty() && !nsq_protocol::names::is_valid_channel_name(channel.as_bytes()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_CHANNEL"));
    }
    let tq = format!("topic={}", crate::client::query_escape(topic));
    let cq = format!("{tq}&channel={}", crate::client::query_escape(channel));
    let mut errors = Vec::new();
    let mut asked = 0;
    let lookupds = admin.cluster().lookupds().to_vec();
    let nsqds: Vec<String> = match &admin.cluster().upstream {
        crate::cluster::Upstream::Nsqd(addrs) => {
            let (_, errs) = admin
                .cluster()
                .fan_post(addrs, &format!("/topic/create?{tq}"), false)
                .await;
            asked += addrs.len();
            errors.extend(errs);
            addrs.clone()
        }
        crate::cluster::Upstream::Lookupd(_) => {
            let (_, errs) = admin
                .cluster()
                .fan_post(&lookupds, &format!("/topic/create?{tq}"), false)
                .await;
            asked += lookupds.len();
            errors.extend(errs);
            Vec::new()
        }
    };
    if !channel.is_empty() {
        let (_, errs) = admin
            .cluster()
            .fan_post(&lookupds, &format!("/channel/create?{cq}"), false)
            .await;
        errors.extend(errs);
        let targets = if nsqds.is_empty() {
            let (addrs, errs) = producer_addrs(&admin, topic).await?;
            errors.extend(errs);
            addrs
        } else {
            nsqds
        };
        let (_, errs) = admin
            .cluster()
            .fan_post(&targets, &format!("/channel/create?{cq}"), false)
            .await;
        errors.extend(errs);
    }
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    admin.notify("create_topic", topic, None, &a);
    if !channel.is_empty() {
        admin.notify("create_channel", topic, Some(channel), &a);
    }
    action_result(&errors, 0)
}

/// `GET /api/counter`: every channel's message count per node, keyed
/// `topic:channel:node` (Go's counter page source).
async fn api_counter(State(admin): Shared) -> ApiResult {
    let (answers, mut errors, asked) = admin.cluster().nodes().await;
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    let mut producers: Vec<model::Producer> = Vec::new();
    for p in answers.into_iter().flatten().map(|n| n.peer) {
        if !producers
            .iter()
            .any(|q| q.http_address() == p.http_address())
        {
            producers.push(p);
        }
    }
    let (stats, errs) = admin
        .cluster()
        .producer_stats(&producers, None, None, false)
        .await;
    errors.extend(errs);
    let mut out = serde_json::Map::new();
    for (p, s) in &stats {
        let node = p.http_address();
        for t in s.topics.iter().flatten() {
            for c in &t.channels {
                let key = format!("{}:{}:{}", t.topic_name, c.channel_name, node);
                let prev = out
                    .get(&key)
                    .and_then(|v| v["message_count"].as_u64())
                    .unwrap_or(0);
                out.insert(
                    key,
                    json!({
                        "node": node,
                        "topic_name": t.topic_name,
                        "channel_name": c.channel_name,
                        "message_count": prev + c.message_count,
                    }),
                );
            }
        }
    }
    Ok(ok_with(json!({ "stats": out }), &errors))
}

/// Finds a node (`broadcast_address:http_port`) among the cluster's nodes.
async fn find_node(admin: &Admin, node: &str) -> Result<model::Producer, ApiError> {
    let (answers, errors, asked) = admin.cluster().nodes().await;
    if all_failed(&errors, asked) {
        return Err(upstream_error(&errors));
    }
    answers
        .into_iter()
        .flatten()
        .map(|n| n.peer)
        .find(|p| p.http_address() == node)
        .ok_or(ApiError::new(StatusCode::NOT_FOUND, "NODE_NOT_FOUND"))
}

/// `GET /api/nodes/:node`: the node's topics (with channels and clients) and totals.
async fn api_node(State(admin): Shared, Path(node): Path<String>) -> ApiResult {
    let producer = find_node(&admin, &node).await?;
    let (stats, errors) = admin
        .cluster()
        .producer_stats(std::slice::from_ref(&producer), None, None, true)
        .await;
    let Some((_, s)) = stats.first() else {
        return Err(upstream_error(&errors));
    };
    let now = now_s();
    let topics: Vec<model::TopicStats> = s
        .topics
        .iter()
        .flatten()
        .map(|t| {
            let mut agg = model::aggregate_topic(&t.topic_name, &stats, now);
            agg.nodes.pop().unwrap_or_default()
        })
        .collect();
    let total_messages: i64 = topics.iter().map(|t| t.message_count).sum();
    let total_clients: i64 = topics
        .iter()
        .flat_map(|t| &t.channels)
        .map(|c| c.client_count)
        .sum();
    Ok(ok_with(
        json!({
            "node": node,
            "topics": topics,
            "total_messages": total_messages,
            "total_clients": total_clients,
        }),
        &errors,
    ))
}

/// `DELETE /api/nodes/:node` `{"topic"}`: tombstones the node's registration of the topic on
/// every lookupd, then deletes the topic on that nsqd.
async fn api_node_tombstone(
    State(admin): Shared,
    Path(node): Path<String>,
    ctx: ActionCtx,
    body: Bytes,
) -> ApiResult {
    let a = actor(
        &ctx.headers,
        ctx.peer,
        &ctx.uri,
        &admin.opts.acl_http_header,
    );
    check_admin(&admin, &a)?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_BODY"))?;
    let topic = v.get("topic").and_then(Value::as_str).unwrap_or_default();
    if !nsq_protocol::names::is_valid_topic_name(topic.as_bytes()) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "INVALID_TOPIC"));
    }
    let producer = find_node(&admin, &node).await?;
    let tq = format!("topic={}", crate::client::query_escape(topic));
    let lookupds = admin.cluster().lookupds().to_vec();
    let (_, mut errors) = admin
        .cluster()
        .fan_post(
            &lookupds,
            &format!(
                "/topic/tombstone?{tq}&node={}",
                crate::client::query_escape(&node)
            ),
            false,
        )
        .await;
    let (_, errs) = admin
        .cluster()
        .fan_post(
            &[producer.http_address()],
            &format!("/topic/delete?{tq}"),
            true,
        )
        .await;
    errors.extend(errs);
    if all_failed(&errors, lookupds.len() + 1) {
        return Err(upstream_error(&errors));
    }
    admin.notify_node("tombstone_topic_producer", topic, &node, &a);
    action_result(&errors, 0)
}

impl Admin {
    fn notify_node(&self, action: &str, topic: &str, node: &str, a: &Actor) {
        self.notify_with(action, topic, None, Some(node), a);
    }

    fn notify(&self, action: &str, topic: &str, channel: Option<&str>, a: &Actor) {
        self.notify_with(action, topic, channel, None, a);
    }

    /// Fire-and-forget POST of an admin action to `--notification-http-endpoint`.
    fn notify_with(
        &self,
        action: &str,
        topic: &str,
        channel: Option<&str>,
        node: Option<&str>,
        a: &Actor,
    ) {
        let endpoint = self.opts.notification_http_endpoint.clone();
        if endpoint.is_empty() {
            return;
        }
        let mut body = json!({
            "action": action,
            "topic": topic,
            "timestamp": now_s(),
            "remote_ip": a.remote_ip,
            "user_agent": a.user_agent,
            "url": a.url,
            "via": self.hostname,
        });
        if let Some(c) = channel {
            body["channel"] = json!(c);
        }
        if let Some(n) = node {
            body["node"] = json!(n);
        }
        if let Some(u) = &a.user {
            body["user"] = json!(u);
        }
        let client = self.cluster().client;
        tokio::spawn(async move {
            let bytes = nsq_http::json::to_vec(&body);
            if let Err(e) = client.post_json_to(&endpoint, &bytes).await {
                tracing::warn!("failed to POST notification to {endpoint}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth() {
        // "alice:secret"
        assert_eq!(
            basic_auth_user("Basic YWxpY2U6c2VjcmV0").as_deref(),
            Some("alice")
        );
        // "bob:" with padding
        assert_eq!(basic_auth_user("basic Ym9iOg==").as_deref(), Some("bob"));
        assert_eq!(basic_auth_user("Bearer x"), None);
        assert_eq!(basic_auth_user("Basic !!!"), None);
    }

    #[test]
    fn accept_encoding() {
        assert!(accepts_gzip("gzip, deflate, br"));
        assert!(accepts_gzip("deflate, GZIP;q=0.5"));
        assert!(accepts_gzip("*"));
        assert!(!accepts_gzip("gzip;q=0"));
        assert!(!accepts_gzip("identity"));
        assert!(!accepts_gzip(""));
    }

    #[test]
    fn failure_accounting() {
        let e = NodeError {
            node: "a:1".into(),
            error: "down".into(),
        };
        assert!(!all_failed(&[], 0));
        assert!(!all_failed(std::slice::from_ref(&e), 2));
        assert!(all_failed(&[e.clone(), e.clone()], 2));
        let err = upstream_error(&[e]);
        assert_eq!(err.status, StatusCode::BAD_GATEWAY);
        assert_eq!(err.message, "UPSTREAM_ERROR: a:1: down");
    }
}
