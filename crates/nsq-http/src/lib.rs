//! Pieces of NSQ's HTTP API conventions that nsqd and nsqlookupd (and later nsqadmin) share,
//! without either daemon depending on the other: query strings parsed exactly as Go's
//! `url.ParseQuery` parses them ([`query`]), and JSON written with Go's `encoding/json`
//! escaping ([`json`]). No I/O, no async.

pub mod json;
pub mod query;
