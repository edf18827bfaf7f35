//! Go's boolean and integer flag value syntaxes.
//!
//! # Boolean flags
//!
//! A Go boolean flag is set with a bare `--snappy` (true) or `--snappy=<bool>`, where `<bool>`
//! is anything `strconv.ParseBool` accepts: `1 t T TRUE true True 0 f F FALSE false False`.
//! Go never takes the value from the *next* argument: in `--snappy false`, `false` is not the
//! flag's value. clap's `bool` fields are presence-only switches by default, so NSQ's
//! default-true booleans (`--snappy`, `--deflate`) could not be turned off. The clap pattern
//! that reproduces Go is:
//!
//! ```
//! use clap::{ArgAction, Parser};
//!
//! #[derive(Parser)]
//! struct Flags {
//!     #[arg(
//!         long,
//!         action = ArgAction::Set,
//!         value_parser = nsq_cli::parse_go_bool,
//!         num_args = 0..=1,
//!         require_equals = true,
//!         default_missing_value = "true",
//!         default_value = "true",
//!     )]
//!     snappy: bool,
//! }
//!
//! let f = Flags::try_parse_from(["t", "--snappy=F"]).unwrap();
//! assert!(!f.snappy);
//! let f = Flags::try_parse_from(["t", "--snappy"]).unwrap();
//! assert!(f.snappy);
//! // Like Go, a separate argument is not the flag's value (clap reports it as unexpected).
//! assert!(Flags::try_parse_from(["t", "--snappy", "false"]).is_err());
//! ```
//!
//! `require_equals = true` is what keeps `--snappy false` from being read as a value, and
//! `num_args = 0..=1` with `default_missing_value = "true"` is what makes the bare form mean
//! true. Builder-style commands can apply the same settings with [`go_bool_flag`], derived
//! ones with `#[arg(long, go_bool = true)]` and [`GoBoolArg`] in scope.
//!
//! # Integer flags
//!
//! Go's `Int`/`Int64` flags use `strconv.ParseInt(s, 0, 64)`, which accepts base prefixes
//! (`0x1F`, `0o17`, `017`, `0b101`) and `_` digit separators. [`parse_go_int`] does the same so
//! an existing command line keeps its meaning.

use clap::{Arg, ArgAction};

/// A string that `strconv.ParseBool` rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid boolean value {0:?} (use true, false, 1, 0, t, f, TRUE, FALSE, True or False)")]
pub struct BoolError(pub String);

/// Parses a boolean like Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, BoolError> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(BoolError(s.to_owned())),
    }
}

/// Applies the Go boolean flag settings described in the [module docs](self) to a builder
/// [`Arg`]; the caller still sets `default_value` if the default is not false.
pub fn go_bool_flag(arg: Arg) -> Arg {
    arg.action(ArgAction::Set)
        .value_parser(parse_go_bool)
        .num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .default_value("false")
}

/// [`go_bool_flag`] as a method, so that derive-based options can write a Go boolean flag as
/// `#[arg(long, go_bool = false)]` instead of repeating eight settings: clap's derive turns an
/// unknown `name = value` attribute into the method call `.name(value)` on the [`Arg`], after
/// the settings it infers from the field type, so this trait (in scope where the options are
/// defined) replaces the inferred presence-only switch.
///
/// `default` is the value without the flag; a false default is hidden from `--help` (Go's
/// help says nothing for a false boolean), a true one is shown.
pub trait GoBoolArg {
    /// The Go boolean flag settings, `value_name = "BOOL"` and the default.
    fn go_bool(self, default: bool) -> Arg;
}

impl GoBoolArg for Arg {
    fn go_bool(self, default: bool) -> Arg {
        go_bool_flag(self)
            .value_name("BOOL")
            .default_value(if default { "true" } else { "false" })
            .hide_default_value(!default)
    }
}

/// A string that `strconv.ParseInt(s, 0, 64)` rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntError {
    /// Not an integer in any base Go accepts.
    #[error("invalid integer {0:?}")]
    Syntax(String),
    /// An integer outside the signed 64-bit range.
    #[error("integer {0:?} is out of range")]
    Range(String),
}

/// Parses an integer like Go's `strconv.ParseInt(s, 0, 64)`: optional sign, optional base
/// prefix (`0x`, `0o`, `0b`, or a leading `0` for octal) and `_` separators between digits.
pub fn parse_go_int(s: &str) -> Result<i64, IntError> {
    let syntax = || IntError::Syntax(s.to_owned());
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d, true)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d, true)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d, true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        // Go treats the leading zero of an octal literal as a prefix, so "0_17" is valid.
        (8, &lower[1..], true)
    } else {
        (10, lower.as_str(), false)
    };
    if !underscores_ok(digits, prefixed) {
        return Err(syntax());
    }
    let digits: String = digits.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(syntax());
    }
    let magnitude = u128::from_str_radix(&digits, radix).map_err(|_| IntError::Range(s.into()))?;
    let value = if negative {
        -i128::try_from(magnitude).map_err(|_| IntError::Range(s.into()))?
    } else {
        i128::try_from(magnitude).map_err(|_| IntError::Range(s.into()))?
    };
    i64::try_from(value).map_err(|_| IntError::Range(s.to_owned()))
}

/// Go's `underscoreOK`: an underscore must sit between two digits, or between a base prefix
/// and a digit.
fn underscores_ok(digits: &str, prefixed: bool) -> bool {
    let bytes = digits.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b != b'_' {
            continue;
        }
        let before_ok = if i == 0 {
            prefixed
        } else {
            bytes[i - 1] != b'_'
        };
        let after_ok = bytes.get(i + 1).is_some_and(|&n| n != b'_');
        if !before_ok || !after_ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bools_follow_strconv_parse_bool() {
        for s in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(s), Ok(true), "{s}");
        }
        for s in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(s), Ok(false), "{s}");
        }
        for s in ["", "yes", "no", "tRUE", "fALSE", "2", " true"] {
            assert!(parse_go_bool(s).is_err(), "{s}");
        }
    }

    #[test]
    fn go_bool_flag_behaves_like_go() {
        let cmd = clap::Command::new("t")
            .args_override_self(true)
            .arg(go_bool_flag(Arg::new("snappy").long("snappy")).default_value("true"))
            .arg(go_bool_flag(Arg::new("verbose").long("verbose")));
        let get = |args: &[&str]| {
            let m = cmd.clone().try_get_matches_from(args)?;
            Ok::<_, clap::Error>((
                *m.get_one::<bool>("snappy").unwrap(),
                *m.get_one::<bool>("verbose").unwrap(),
            ))
        };
        assert_eq!(get(&["t"]).unwrap(), (true, false));
        assert_eq!(
            get(&["t", "--snappy=false", "--verbose"]).unwrap(),
            (false, true)
        );
        assert_eq!(
            get(&["t", "--snappy=0", "--verbose=f"]).unwrap(),
            (false, false)
        );
        assert_eq!(
            get(&["t", "--snappy=false", "--snappy"]).unwrap(),
            (true, false)
        );
        assert!(get(&["t", "--snappy", "false"]).is_err());
        assert!(get(&["t", "--snappy=nope"]).is_err());
    }

    #[test]
    fn ints_follow_strconv_parse_int_base_0() {
        let ok: &[(&str, i64)] = &[
            ("0", 0),
            ("-0", 0),
            ("10000", 10_000),
            ("+5", 5),
            ("-5", -5),
            ("0x1F", 31),
            ("0X1f", 31),
            ("0o17", 15),
            ("017", 15),
            ("0b101", 5),
            ("1_000", 1_000),
            ("0x_1f", 31),
            ("0_17", 15),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_int(s), Ok(*want), "{s}");
        }
        for s in [
            "", "-", "0x", "08", "1__0", "_1", "1_", "1.0", "1e3", " 1", "abc", "0b2",
        ] {
            assert!(
                matches!(parse_go_int(s), Err(IntError::Syntax(_))),
                "{s} accepted"
            );
        }
        for s in [
            "9223372036854775808",
            "-9223372036854775809",
            "0x1ffffffffffffffffffffffffffffffff",
        ] {
            assert!(matches!(parse_go_int(s), Err(IntError::Range(_))), "{s}");
        }
    }
}
