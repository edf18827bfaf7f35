//! Topic and channel names (Go: `internal/protocol/names.go`).
//!
//! A valid name is 1 to 64 characters of `[.a-zA-Z0-9_-]`, optionally followed by
//! `#ephemeral`; the 64 includes the suffix.

/// The suffix that marks a topic or channel as ephemeral (memory only, deleted when unused).
pub const EPHEMERAL_SUFFIX: &str = "#ephemeral";

/// The longest valid name, suffix included.
pub const MAX_NAME_LEN: usize = 64;

fn is_valid_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let base = name
        .strip_suffix(EPHEMERAL_SUFFIX.as_bytes())
        .unwrap_or(name);
    !base.is_empty()
        && base
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Whether `name` is a valid topic name.
pub fn is_valid_topic_name(name: &[u8]) -> bool {
    is_valid_name(name)
}

/// Whether `name` is a valid channel name.
pub fn is_valid_channel_name(name: &[u8]) -> bool {
    is_valid_name(name)
}

/// Whether a (valid) name denotes an ephemeral topic or channel.
pub fn is_ephemeral(name: &str) -> bool {
    name.ends_with(EPHEMERAL_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "test", "a.b_c-d", "x#ephemeral", &"a".repeat(64)] {
            assert!(is_valid_topic_name(ok.as_bytes()), "{ok}");
        }
        let long_eph = format!("{}#ephemeral", "a".repeat(54));
        assert!(is_valid_channel_name(long_eph.as_bytes()));
        for bad in [
            "",
            "#ephemeral",
            "a b",
            "a/b",
            "a#b",
            "a#ephemeralx",
            &"a".repeat(65),
            &format!("{}#ephemeral", "a".repeat(55)),
            "é",
        ] {
            assert!(!is_valid_topic_name(bad.as_bytes()), "{bad}");
        }
        assert!(is_ephemeral("foo#ephemeral"));
        assert!(!is_ephemeral("foo"));
    }
}
