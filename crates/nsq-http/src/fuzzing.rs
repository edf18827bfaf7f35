//! Fuzz target body for the HTTP helpers, shared by the cargo-fuzz target in `fuzz/`
//! (nightly) and the corpus replay test `tests/fuzz_corpus.rs` (stable). See
//! `docs/FUZZING.md`. Not part of the crate's API.

use crate::json;
use crate::query::{go_bool, Query};

/// Percent-encodes every byte that is not unreserved, so the result parses back verbatim.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go query parsing ([`Query::parse`]) and Go-style JSON escaping ([`json::to_vec`]).
///
/// Checks: the parse never panics; `parse_strict` fails exactly when `parse` reports an
/// error; every parsed pair re-encodes to a query that parses back to the same pairs; each
/// parsed value is a valid JSON string that Go-style serialization round-trips and that
/// contains none of the characters Go escapes.
pub fn fuzz_http_query(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let (q, err) = Query::parse(&raw);
    assert_eq!(Query::parse_strict(Some(&raw)).is_err(), err.is_some());
    let pairs = q.pairs();
    let reencoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    let (back, back_err) = Query::parse(&reencoded.join("&"));
    assert_eq!(back_err, None, "re-encoded query must parse cleanly");
    assert_eq!(pairs, back.pairs(), "query round trip");
    for (k, v) in pairs {
        assert!(q.get(k).is_some(), "parsed key {k:?} not found");
        let _ = go_bool(v);
        let enc = json::to_vec(v);
        for bad in [b'<', b'>', b'&'] {
            assert!(!enc.contains(&bad), "Go escapes {:?}", bad as char);
        }
        let s = String::from_utf8(enc).expect("JSON output is UTF-8");
        assert!(!s.contains('\u{2028}') && !s.contains('\u{2029}'));
        let parsed: String = serde_json::from_str(&s).expect("own JSON parses");
        assert_eq!(&parsed, v, "JSON string round trip");
    }
}
