//! nsqlookupd's HTTP API, compatible with Go nsqlookupd 1.3 (`nsqlookupd/http.go`,
//! `internal/http_api`).
//!
//! go-nsq, pynsq and nsqjs consumers poll `/lookup`; nsqadmin reads `/topics`, `/channels`,
//! `/nodes` and calls the create/delete/tombstone actions; nsqd reads `/channels`. What they
//! can observe follows Go:
//! - Routes and methods: `/ping`, `/info`, `/debug`, `/lookup`, `/topics`, `/channels`,
//!   `/nodes` are GET (and, an nsq-rs extension, `/metrics` for Prometheus: see
//!   [`crate::metrics`]); `/topic/{create,delete,tombstone}` and `/channel/{create,delete}` are
//!   POST. Unknown path → 404 `{"message":"NOT_FOUND"}`, wrong method → 405
//!   `{"message":"METHOD_NOT_ALLOWED"}`. Go's `/debug/pprof` is absent (404).
//! - Every response carries `X-NSQ-Content-Type: nsq; version=1.0` (go-nsq picks the body
//!   format by it). JSON bodies get `Content-Type: application/json; charset=utf-8` and
//!   Go's string escaping ([`json`]); `OK` is raw text; "no result" is an empty 200;
//!   errors are the status plus `{"message":"<CODE>"}`.
//! - Parameters come from the query string only, parsed like Go's `url.ParseQuery`
//!   ([`query`]); a malformed one is 400 `INVALID_REQUEST`. Presence matters: `topic=` is an
//!   empty topic, no `topic` is `MISSING_ARG_TOPIC`.
//! - `/lookup`, `/nodes`, `/topics`, `/channels` and `/info` bodies are the shared
//!   [`nsq_http::api::lookupd`] types, which nsqadmin and the clients read.
//! - JSON objects that Go builds from maps have sorted keys; lists are sorted here too
//!   (Go's are in map order) and are `[]`, never `null`, when empty.
//! - `/lookup` lists only producers that pinged within `--inactive-producer-timeout` and
//!   are not tombstoned for the topic (within `--tombstone-lifetime`); `/nodes` applies the
//!   inactivity filter only and reports tombstones per topic.
//! - Bytes that are not HTTP (an NSQ client sending its TCP magic here) get Go's exact
//!   `400 Bad Request` once their first line ends (Go's net/http reads the whole line
//!   first), then the connection closes ([`nsq_http::first_line`]).

/// Go-compatible JSON escaping (shared with the other daemons).
pub use nsq_http::json;
/// Go-compatible query-string parsing (shared with the other daemons).
pub use nsq_http::query;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use nsq_http::api::lookupd as api;
use nsq_http::service::{
    bad_request, decorated, not_found, parse_query, topic_channel_args, with_fallbacks, ApiError,
    ApiResult, Reply,
};
use nsq_protocol::names::is_valid_topic_name;
use serde::Serialize;

use crate::registration_db::{Category, PeerInfo, Registration};
use crate::Nsqlookupd;

/// The V1 header (shared with the other daemons).
pub use nsq_http::service::{NSQ_CONTENT_TYPE_HEADER, NSQ_CONTENT_TYPE_VALUE};

/// What Go's `time.Time{}.UnixNano()` returns: `/debug`'s `tombstoned_at` for a producer
/// that was never tombstoned.
pub const GO_ZERO_TIME_UNIX_NANO: i64 = -6_795_364_578_871_345_152;

const MISSING_ARG_TOPIC: ApiError = bad_request("MISSING_ARG_TOPIC");
const INVALID_ARG_TOPIC: ApiError = bad_request("INVALID_ARG_TOPIC");
const MISSING_ARG_NODE: ApiError = bad_request("MISSING_ARG_NODE");
const TOPIC_NOT_FOUND: ApiError = not_found("TOPIC_NOT_FOUND");
const CHANNEL_NOT_FOUND: ApiError = not_found("CHANNEL_NOT_FOUND");

type Shared = State<Arc<Nsqlookupd>>;

/// The routing table. Every response, fallbacks included, gets the `X-NSQ-Content-Type`
/// header from the outermost layer.
pub fn router(lookupd: Arc<Nsqlookupd>) -> Router {
    let router = Router::new()
        .route("/ping", get(ping))
        .route("/info", get(info))
        .route("/debug", get(debug))
        .route("/lookup", get(lookup))
        .route("/lookup/watch", get(lookup_watch))
        .route("/topics", get(topics))
        .route("/channels", get(channels))
        .route("/nodes", get(nodes))
        .route(
            "/metrics",
            nsq_http::metrics::route(Arc::new(crate::metrics::registry(&lookupd))),
        )
        .route("/topic/create", post(topic_create))
        .route("/topic/delete", post(topic_delete))
        .route("/topic/tombstone", post(topic_tombstone))
        .route("/channel/create", post(channel_create))
        .route("/channel/delete", post(channel_delete));
    // `/lookup` and `/ping` are polled constantly, so they are logged at debug level.
    decorated(with_fallbacks(router), &["/lookup", "/ping"]).with_state(lookupd)
}

/// Serves HTTP on `listener` until shutdown, then lets requests in progress finish.
pub async fn serve(lookupd: Arc<Nsqlookupd>, listener: tokio::net::TcpListener) {
    let shutdown = lookupd.shutdown.clone();
    nsq_http::service::serve(listener, router(lookupd), async move {
        shutdown.cancelled().await
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn keys(regs: Vec<Registration>) -> Vec<String> {
    regs.into_iter().map(|r| r.key).collect()
}

fn subkeys(regs: Vec<Registration>) -> Vec<String> {
    regs.into_iter().map(|r| r.subkey).collect()
}

/// Go's `PeerInfo` JSON (the shared [`api::Producer`]).
fn producer_json(p: &PeerInfo) -> api::Producer {
    api::Producer {
        remote_address: p.remote_address.clone(),
        hostname: p.hostname.clone(),
        broadcast_address: p.broadcast_address.clone(),
        tcp_port: p.tcp_port,
        http_port: p.http_port,
        version: p.version.clone(),
        topology_zone: p.topology_zone.clone(),
        topology_region: p.topology_region.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// `GET /ping`: `OK`.
async fn ping() -> Reply {
    Reply::OK
}

/// `GET /info`: `{"version":"1.3.0"}`.
async fn info() -> ApiResult {
    Ok(Reply::Json(json::to_vec(&api::Info {
        version: crate::config::NSQ_VERSION.into(),
    })))
}

/// `GET /topics`: every topic registration, with or without producers.
async fn topics(State(l): Shared) -> ApiResult {
    let topics = keys(l.db().find_registrations(Category::Topic, "*", ""));
    Ok(Reply::Json(json::to_vec(&api::Topics { topics })))
}

/// `GET /channels?topic=<t>`: the topic's channel registrations (`[]` for an unknown
/// topic; the name is not validated, as in Go).
async fn channels(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let topic = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    let channels = subkeys(l.db().find_registrations(Category::Channel, topic, "*"));
    Ok(Reply::Json(json::to_vec(&api::Channels { channels })))
}

/// `GET /lookup?topic=<t>`: the topic's channels and its active, non-tombstoned producers;
/// 404 `TOPIC_NOT_FOUND` when the topic is not registered at all.
async fn lookup(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let topic = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    lookup_body(&l, topic)
        .map(Reply::Json)
        .ok_or(TOPIC_NOT_FOUND)
}

/// How often a `/lookup/watch` stream looks again without a change in the database: a
/// producer that stops pinging becomes inactive, and a tombstone expires, with time alone.
const WATCH_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// `GET /lookup/watch?topic=T` (nsq-rs; NSQ has none): Server-Sent Events, one `lookup`
/// event with `/lookup`'s JSON body at once and again whenever it changes — a producer
/// registers, unregisters, disconnects, is tombstoned or goes inactive — so a client learns
/// of a change as it happens instead of at its next poll. A topic lookupd does not know
/// (yet) is `{"channels":[],"producers":[]}`. The database wakes the streams on every change
/// (`DbGuard`); they also look again every second for what changes with time only, and send
/// nothing when the body is unchanged. A comment line every 15 s keeps proxies from closing
/// an idle stream; the stream ends at shutdown.
async fn lookup_watch(State(l): Shared, uri: Uri) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let q = parse_query(&uri)?;
    let topic = q.get("topic").ok_or(MISSING_ARG_TOPIC)?.to_owned();
    if !is_valid_topic_name(topic.as_bytes()) {
        return Err(bad_request("INVALID_ARG_TOPIC"));
    }
    let stream =
        futures::stream::unfold((l, topic, None::<Vec<u8>>), |(l, topic, last)| async move {
            loop {
                let new_body = {
                    let changed = l.db_changed.notified();
                    tokio::pin!(changed);
                    // Registered before reading, so a change right after the read is seen.
                    changed.as_mut().enable();
                    let body = lookup_body(&l, &topic)
                        .unwrap_or_else(|| br#"{"channels":[],"producers":[]}"#.to_vec());
                    if last.as_deref() != Some(&body[..]) {
                        Some(body)
                    } else {
                        tokio::select! {
                            _ = changed => {}
                            _ = tokio::time::sleep(WATCH_RECHECK) => {}
                            _ = l.shutdown.cancelled() => return None,
                        }
                        None
                    }
                };
                if let Some(body) = new_body {
                    let ev = Event::default()
                        .event("lookup")
                        .data(String::from_utf8_lossy(&body));
                    return Some((
                        Ok::<_, std::convert::Infallible>(ev),
                        (l, topic, Some(body)),
                    ));
                }
            }
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response())
}

/// `/lookup`'s JSON body for `topic`; `None` when lookupd does not know the topic.
fn lookup_body(l: &Nsqlookupd, topic: &str) -> Option<Vec<u8>> {
    let now = l.clock.now();
    let db = l.db();
    if db.find_registrations(Category::Topic, topic, "").is_empty() {
        return None;
    }
    let channels = subkeys(db.find_registrations(Category::Channel, topic, "*"));
    let producers = db
        .find_active_producers(
            Category::Topic,
            topic,
            "",
            now,
            l.inactive_producer_timeout(),
            l.tombstone_lifetime(),
        )
        .into_iter()
        .map(|p| producer_json(p.peer))
        .collect();
    Some(json::to_vec(&api::Lookup {
        channels,
        producers,
    }))
}

/// `GET /nodes`: every active nsqd (by inactivity only) with its topics and, per topic,
/// whether it is tombstoned there.
async fn nodes(State(l): Shared) -> ApiResult {
    let now = l.clock.now();
    let lifetime = l.tombstone_lifetime();
    let db = l.db();
    let mut producers = Vec::new();
    for p in db.find_active_producers(
        Category::Client,
        "",
        "",
        now,
        l.inactive_producer_timeout(),
        0,
    ) {
        let peer = p.peer;
        let topics: Vec<String> = db
            .lookup_registrations(&peer.id)
            .into_iter()
            .filter(|r| r.is_match(Category::Topic, "*", ""))
            .map(|r| r.key)
            .collect();
        let tombstones = topics
            .iter()
            .map(|t| {
                db.find_producers(Category::Topic, t, "")
                    .iter()
                    .find(|tp| tp.peer.id == peer.id)
                    .is_some_and(|tp| tp.is_tombstoned(now, lifetime))
            })
            .collect();
        producers.push(api::Node {
            peer: producer_json(peer),
            tombstones,
            topics,
        });
    }
    Ok(Reply::Json(json::to_vec(&api::Nodes { producers })))
}

/// `POST /topic/create?topic=<t>`: a topic registration without producers.
async fn topic_create(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let topic = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(topic.as_bytes()) {
        return Err(INVALID_ARG_TOPIC);
    }
    tracing::info!("DB: adding topic({topic})");
    l.db().add_registration(Registration::topic(topic));
    Ok(Reply::Empty)
}

/// `POST /topic/delete?topic=<t>`: removes the topic's channel registrations and the topic
/// registration, producers and all (200 even when there was nothing to remove).
async fn topic_delete(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let topic = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    let mut db = l.db();
    for r in db.find_registrations(Category::Channel, topic, "*") {
        tracing::info!("DB: removing channel({}) from topic({topic})", r.subkey);
        db.remove_registration(&r);
    }
    for r in db.find_registrations(Category::Topic, topic, "") {
        tracing::info!("DB: removing topic({topic})");
        db.remove_registration(&r);
    }
    Ok(Reply::Empty)
}

/// `POST /topic/tombstone?topic=<t>&node=<broadcast_address:http_port>`: hides that nsqd
/// from `/lookup` for the topic for `--tombstone-lifetime`, so it can delete the topic
/// without consumers rediscovering it.
async fn topic_tombstone(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let topic = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    let node = q.get("node").ok_or(MISSING_ARG_NODE)?;
    tracing::info!("DB: setting tombstone for producer@{node} of topic({topic})");
    let now = l.clock.now();
    l.db().tombstone(topic, node, now);
    Ok(Reply::Empty)
}

/// `POST /channel/create?topic=<t>&channel=<c>`: channel and topic registrations without
/// producers.
async fn channel_create(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let (topic, channel) = topic_channel_args(&q)?;
    let mut db = l.db();
    tracing::info!("DB: adding channel({channel}) in topic({topic})");
    db.add_registration(Registration::channel(topic, channel));
    tracing::info!("DB: adding topic({topic})");
    db.add_registration(Registration::topic(topic));
    Ok(Reply::Empty)
}

/// `POST /channel/delete?topic=<t>&channel=<c>`: 404 `CHANNEL_NOT_FOUND` if not registered.
async fn channel_delete(State(l): Shared, uri: Uri) -> ApiResult {
    let q = parse_query(&uri)?;
    let (topic, channel) = topic_channel_args(&q)?;
    let mut db = l.db();
    if !db.remove_registration(&Registration::channel(topic, channel)) {
        return Err(CHANNEL_NOT_FOUND);
    }
    tracing::info!("DB: removing channel({channel}) from topic({topic})");
    Ok(Reply::Empty)
}

/// `GET /debug`: every registration that has producers, keyed `category:key:subkey`, with
/// each producer's peer info, last update and tombstone (times in Unix nanoseconds).
async fn debug(State(l): Shared) -> ApiResult {
    // Go marshals a map per producer, so keys are in sorted order.
    #[derive(Serialize)]
    struct Entry<'a> {
        broadcast_address: &'a str,
        hostname: &'a str,
        http_port: i64,
        id: &'a str,
        last_update: i64,
        tcp_port: i64,
        tombstoned: bool,
        tombstoned_at: i64,
        topology_region: &'a str,
        topology_zone: &'a str,
        version: &'a str,
    }
    let db = l.db();
    let mut out: BTreeMap<String, Vec<Entry<'_>>> = BTreeMap::new();
    for (r, producers) in db.dump() {
        if producers.is_empty() {
            continue;
        }
        let list = producers
            .into_iter()
            .map(|p| Entry {
                broadcast_address: &p.peer.broadcast_address,
                hostname: &p.peer.hostname,
                http_port: p.peer.http_port,
                id: &p.peer.id,
                last_update: l.clock.unix_nanos(p.peer.last_update),
                tcp_port: p.peer.tcp_port,
                tombstoned: p.tombstoned_at.is_some(),
                tombstoned_at: p
                    .tombstoned_at
                    .map_or(GO_ZERO_TIME_UNIX_NANO, |t| l.clock.unix_nanos(t)),
                topology_region: &p.peer.topology_region,
                topology_zone: &p.peer.topology_zone,
                version: &p.peer.version,
            })
            .collect();
        out.insert(format!("{}:{}:{}", r.category, r.key, r.subkey), list);
    }
    Ok(Reply::Json(json::to_vec(&out)))
}
