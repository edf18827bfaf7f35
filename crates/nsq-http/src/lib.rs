//! Pieces of NSQ's HTTP API conventions that nsqd, nsqlookupd and nsqadmin share, without one
//! daemon depending on another: query strings parsed exactly as Go's `url.ParseQuery` parses
//! them ([`query`]), and JSON written with Go's `encoding/json` escaping ([`json`]); these do
//! no I/O and need no runtime; so does [`api`], the JSON documents of nsqd's `/stats` and
//! `/info` and nsqlookupd's `/lookup`, `/nodes`, ... as serde types, rendered by the daemons
//! and read by nsqadmin, the tools and the client. With the `serve` feature, the I/O pieces:
//! [`first_line`], the listener wrapper that answers non-HTTP bytes on an HTTP port as Go's
//! `net/http` does, and [`service`], the axum glue (Go's `internal/http_api`: error and result
//! bodies, fallbacks, the request log line and `X-NSQ-Content-Type`, the bearer-token
//! middleware, `serve`).
//! With the `metrics` feature: [`metrics`], Prometheus `/metrics` (exposition, route, build
//! info and process collector) shared by the three daemons.
//! The hidden `fuzzing` module holds the body of the `http_query` cargo-fuzz target (see
//! `docs/FUZZING.md`).

pub mod api;
#[cfg(feature = "serve")]
pub mod first_line;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod query;
#[cfg(feature = "serve")]
pub mod service;
#[cfg(all(feature = "serve", feature = "testing"))]
pub mod testing;
