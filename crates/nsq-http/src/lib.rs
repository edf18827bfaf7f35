//! Pieces of NSQ's HTTP API conventions that nsqd and nsqlookupd (and later nsqadmin) share,
//! without either daemon depending on the other: query strings parsed exactly as Go's
//! `url.ParseQuery` parses them ([`query`]), and JSON written with Go's `encoding/json`
//! escaping ([`json`]). No I/O, no async.
//! The hidden `fuzzing` module holds the body of the `http_query` cargo-fuzz target (see
//! `docs/FUZZING.md`).

#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod query;
