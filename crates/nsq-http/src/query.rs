//! Query strings parsed as Go's `url.ParseQuery` parses them.
//!
//! NSQ's daemons take every parameter from the URL query string, so the details of parsing are part
//! of the API: `+` means space; a `%` not followed by two hex digits, or a `;` anywhere in a
//! pair (Go >= 1.17), is an error that Go's handlers turn into 400 `INVALID_REQUEST`; a key
//! without `=` has the empty value; a repeated key keeps every value and handlers read the
//! first; presence matters (`topic=` is an invalid topic, no `topic` is a missing one).

use std::borrow::Cow;

/// A malformed query string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query: {0}")]
pub struct QueryError(pub &'static str);

/// Decoded `key=value` pairs in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query (without the `?`). Like Go, the pairs that parse are kept even when
    /// another one fails; the first error is returned alongside.
    pub fn parse(raw: &str) -> (Query, Option<QueryError>) {
        let mut q = Query::default();
        let mut first_err = None;
        for pair in raw.split('&') {
            if pair.is_empty() {
                continue;
            }
            if pair.contains(';') {
                first_err.get_or_insert(QueryError("invalid semicolon separator in query"));
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match (unescape(k), unescape(v)) {
                (Ok(k), Ok(v)) => q.pairs.push((k.into_owned(), v.into_owned())),
                (Err(e), _) | (_, Err(e)) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        (q, first_err)
    }

    /// Parses a raw query, failing on any malformed pair (Go's handlers' behaviour).
    pub fn parse_strict(raw: Option<&str>) -> Result<Query, QueryError> {
        match Query::parse(raw.unwrap_or("")) {
            (q, None) => Ok(q),
            (_, Some(e)) => Err(e),
        }
    }

    /// Every pair, in the order of the query string.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first value of `key`, if the key is present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Go's `QueryUnescape`: `+` is a space, `%XX` a byte.
fn unescape(s: &str) -> Result<Cow<'_, str>, QueryError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                    _ => return Err(QueryError("invalid URL escape")),
                }
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Go strings may hold any bytes; ours are UTF-8. Such values are never valid names,
    // so a lossy conversion cannot turn an invalid name into a valid one.
    Ok(Cow::Owned(String::from_utf8_lossy(&out).into_owned()))
}

/// Go nsqd's `boolParams` lookup: `true`/`1`/`false`/`0`, anything else is `None`.
pub fn go_bool(v: &str) -> Option<bool> {
    match v {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go() {
        let (q, e) = Query::parse("topic=a+b%21&x&topic=second&&empty=");
        assert_eq!(e, None);
        assert_eq!(q.get("topic"), Some("a b!"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(q.get("empty"), Some(""));
        assert_eq!(q.get("missing"), None);
    }

    #[test]
    fn errors_like_go() {
        let (q, e) = Query::parse("a=1;b=2&topic=t&bad=%zz&c=%4");
        assert_eq!(e, Some(QueryError("invalid semicolon separator in query")));
        assert_eq!(q.get("topic"), Some("t"));
        assert_eq!(q.get("bad"), None);
        assert!(Query::parse_strict(Some("x=%")).is_err());
        assert!(Query::parse_strict(None).unwrap().get("x").is_none());
    }

    #[test]
    fn bools() {
        assert_eq!(go_bool("1"), Some(true));
        assert_eq!(go_bool("false"), Some(false));
        assert_eq!(go_bool("TRUE"), None);
        assert_eq!(go_bool(""), None);
    }
}
