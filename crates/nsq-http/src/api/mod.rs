//! The JSON documents of NSQ's HTTP APIs as serde types, once for every crate: nsqd renders
//! [`nsqd::Stats`] and [`nsqd::Info`], nsqlookupd renders [`lookupd::Lookup`],
//! [`lookupd::Nodes`], [`lookupd::Topics`], [`lookupd::Channels`] and [`lookupd::Info`]; nsqadmin,
//! `nsq_stat` and nsq-client's lookupd discovery read them.
//!
//! Why here: these shapes are part of the HTTP API contract, as are [`crate::query`] and
//! [`crate::json`] (whose Go float format the e2e percentiles need), and every daemon, the
//! tools and the client can depend on nsq-http without depending on each other. Like the
//! rest of the crate without `serve`, this module does no I/O.
//!
//! One type serves both directions, so it follows two rules:
//! - **Rendering is byte-for-byte Go's** (Go nsqd / nsqlookupd 1.3, `nsqd/stats.go`,
//!   `nsqlookupd/http.go`): fields in Go's order (serde writes declaration order), Go's
//!   `omitempty` fields skipped when empty, and nsq-rs extensions only where they are in use
//!   (each field's doc says when), so a node without nsq-rs features answers NSQ 1.3's
//!   shape. The renderer must not pay for sharing: names of topics and channels are type
//!   parameters (nsqd serializes them straight from its `Arc<Topic>` / `Arc<Channel>`,
//!   readers get `String`), and constant strings are `Cow<'static, str>`.
//! - **Reading is lenient**: every struct is `#[serde(default)]` and unknown fields are
//!   ignored, so an nsqd or nsqlookupd of another version (Go's, older or newer, or ours)
//!   never fails a reader; lists Go may write as `null` read as empty where the reader
//!   cannot tell the difference.
//!
//! `tests.rs` reads replies captured from the Go 1.3.0 binaries
//! (`tests/data/go-1.3.0/`, `capture.py` there) and writes them back.

pub mod lookupd;
pub mod nsqd;

#[cfg(test)]
mod tests;

/// `null` (or a missing field, with `#[serde(default)]`) as the type's default, for lists
/// that Go writes as `null` when they are nil.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de> + Default,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}
