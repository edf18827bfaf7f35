//! JSON the way Go's `encoding/json` writes it.
//!
//! serde_json and Go agree on structure, but not on string escapes: Go escapes `<`, `>` and
//! `&` as `\u003c`, `\u003e`, `\u0026` (its "HTML safe" default), escapes U+2028 and U+2029,
//! and writes backspace and form feed as `\u0008` / `\u000c` rather than `\b` / `\f`. Client
//! hostnames and user agents end up in `/stats`, so we reproduce Go's bytes exactly.

use std::io;

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};

/// A float as Go's encoding/json writes it, for `#[serde(serialize_with = ...)]`: a whole
/// number without a fraction (`1`, not serde_json's `1.0`); any other value as serde_json
/// writes it (shortest round-trip, as Go's `'f'`/`'e'` choice gives for these values).
pub fn go_float<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

/// Compact output with Go's string escapes.
struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        let bytes = fragment.as_bytes();
        // Fast path: nothing Go escapes beyond what serde_json already did (U+2028/9 start
        // with 0xE2).
        if !bytes
            .iter()
            .any(|&b| matches!(b, b'<' | b'>' | b'&' | 0xE2))
        {
            return writer.write_all(bytes);
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc: &[u8] = match c {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            writer.write_all(&bytes[start..i])?;
            writer.write_all(esc)?;
            start = i + c.len_utf8();
        }
        writer.write_all(&bytes[start..])
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, char_escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        match char_escape {
            CharEscape::Backspace => writer.write_all(b"\\u0008"),
            CharEscape::FormFeed => writer.write_all(b"\\u000c"),
            other => CompactFormatter.write_char_escape(writer, other),
        }
    }
}

/// Serializes `value` into a new buffer, Go style.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    to_writer(&mut out, value);
    out
}

/// Serializes `value` at the end of `out`, Go style.
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(out, GoFormatter);
    // Writing to a Vec cannot fail, and our types have string keys only.
    value
        .serialize(&mut ser)
        .expect("serializing to a Vec<u8> cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_go() {
        let s = "a<b>&c\u{2028}\u{2029}\"\\\n\r\t\u{8}\u{c}\u{1}\u{7f}é";
        assert_eq!(
            String::from_utf8(to_vec(s)).unwrap(),
            r#""a\u003cb\u003e\u0026c\u2028\u2029\"\\\n\r\t\u0008\u000c\u0001"#.to_string()
                + "\u{7f}é\""
        );
        assert_eq!(
            to_vec(&serde_json::json!({"k": [1, null]})),
            br#"{"k":[1,null]}"#
        );
    }
}
