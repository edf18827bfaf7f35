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
//! [`from_body`] reads any of them from a reply body, in either NSQ ≥ 1.0's plain form or the
//! pre-1.0 envelope `{"status_code":200,"status_txt":"OK","data":{...}}` that older daemons
//! (and nsq-rs's readers since) accept.
//!
//! `tests.rs` reads replies captured from the Go 1.3.0 binaries
//! (`tests/data/go-1.3.0/`, `capture.py` there) and writes them back.

pub mod lookupd;
pub mod nsqd;

#[cfg(test)]
mod tests;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a reply body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or not the expected document.
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A pre-1.0 envelope reporting a failure.
    #[error("status_code {code} {text}")]
    Status {
        /// The envelope's `status_code`.
        code: u64,
        /// Its `status_txt`.
        text: String,
    },
}

/// Reads a reply body as `T`, unwrapping the pre-1.0 envelope (an object with both
/// `status_code` and `data`; a `status_code` other than 200 is [`BodyError::Status`], a
/// `null` `data` reads as an empty document).
pub fn from_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    let v: Value = serde_json::from_slice(body)?;
    let v = match v {
        Value::Object(mut m) if m.contains_key("status_code") && m.contains_key("data") => {
            let code = m.get("status_code").and_then(Value::as_u64).unwrap_or(0);
            if code != 200 {
                let text = m.get("status_txt").and_then(Value::as_str).unwrap_or("");
                return Err(BodyError::Status {
                    code,
                    text: text.to_owned(),
                });
            }
            match m.remove("data") {
                Some(Value::Null) | None => Value::Object(Default::default()),
                Some(d) => d,
            }
        }
        v => v,
    };
    Ok(serde_json::from_value(v)?)
}

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
