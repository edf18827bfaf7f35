//! Go's `time.Duration` text format.
//!
//! NSQ's duration flags (`--msg-timeout=60s`, `--sync-timeout 2s`) are parsed with Go's
//! `time.ParseDuration`, and Go prints durations with `Duration.String()` in help texts and
//! logs (`1m0s`, `250ms`, `1h0m0s`). This module reproduces both so that any value Go accepts is
//! accepted here with the same meaning, values Go rejects are rejected, and what we print reads
//! the same as what Go prints.
//!
//! One deliberate difference: [`std::time::Duration`] cannot be negative, so a negative duration
//! (which Go would accept, and which no NSQ option gives a useful meaning to) is an error.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Largest duration Go can represent: `math.MaxInt64` nanoseconds (about 292 years).
const MAX_NANOS: u64 = i64::MAX as u64;

/// Why a string is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or out of Go's range.
    #[error("invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit, e.g. `"5"` (only `"0"` may omit the unit).
    #[error("missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit other than `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    #[error("unknown unit {unit:?} in duration {input:?}")]
    UnknownUnit {
        /// The offending unit.
        unit: String,
        /// The whole input.
        input: String,
    },
    /// A valid Go duration below zero, which no option accepts.
    #[error("negative duration {0:?} is not allowed")]
    Negative(String),
}

/// Parses a duration with Go's `time.ParseDuration` syntax: `"250ms"`, `"1m0s"`, `"1h30m"`,
/// `"1.5s"`, `"100us"`/`"100µs"`, `"10ns"`, `"0"`.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(input.to_owned());
    let (negative, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !s.starts_with(|c: char| c == '.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (int_part, rest) = split_digits(s);
        let whole = leading_int(int_part).ok_or_else(invalid)?;
        s = rest;
        let mut fraction = (0u64, 1f64);
        let mut has_fraction = false;
        if let Some(rest) = s.strip_prefix('.') {
            let (frac_part, rest) = split_digits(rest);
            fraction = leading_fraction(frac_part);
            has_fraction = !frac_part.is_empty();
            s = rest;
        }
        if int_part.is_empty() && !has_fraction {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(input.to_owned()));
        }
        let (unit, rest) = s.split_at(unit_len);
        s = rest;
        let unit_nanos = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
            unit: unit.to_owned(),
            input: input.to_owned(),
        })?;
        if whole > (1u64 << 63) / unit_nanos {
            return Err(invalid());
        }
        let mut v = whole * unit_nanos;
        let (f, scale) = fraction;
        if f > 0 {
            // Same float arithmetic as Go, so fractions round identically.
            v += (f as f64 * (unit_nanos as f64 / scale)) as u64;
            if v > 1 << 63 {
                return Err(invalid());
            }
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        if total > 1 << 63 {
            return Err(invalid());
        }
    }
    if negative && total > 0 {
        return Err(DurationError::Negative(input.to_owned()));
    }
    if total > MAX_NANOS {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(total))
}

fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// Go's `leadingInt`: `None` on overflow past 2^63.
fn leading_int(digits: &str) -> Option<u64> {
    let mut x: u64 = 0;
    for b in digits.bytes() {
        if x > (1u64 << 63) / 10 {
            return None;
        }
        x = x * 10 + u64::from(b - b'0');
        if x > 1 << 63 {
            return None;
        }
    }
    Some(x)
}

/// Go's `leadingFraction`: the digits as an integer plus the power of ten they are scaled by;
/// digits beyond what fits are ignored.
fn leading_fraction(digits: &str) -> (u64, f64) {
    let mut x: u64 = 0;
    let mut scale = 1f64;
    for b in digits.bytes() {
        if x > (MAX_NANOS) / 10 {
            break;
        }
        let y = x * 10 + u64::from(b - b'0');
        if y > 1 << 63 {
            break;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale)
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => 1,
        // Go accepts ASCII "us", MICRO SIGN (U+00B5) and GREEK SMALL LETTER MU (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Formats a duration like Go's `time.Duration.String()`: `"0s"`, `"10ns"`, `"1.5µs"`,
/// `"250ms"`, `"2s"`, `"1m0s"`, `"1h30m0s"`.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        // Go prints MICRO SIGN (U+00B5).
        return format!("{}\u{b5}s", decimal(ns, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", decimal(ns, 6));
    }
    let seconds = decimal(ns % 60_000_000_000, 9);
    let minutes = (ns / 60_000_000_000) % 60;
    let hours = ns / 3_600_000_000_000;
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / 10^digits` in decimal, without trailing zeros (Go's `fmtFrac` + `fmtInt`).
fn decimal(value: u128, digits: u32) -> String {
    let unit = 10u128.pow(digits);
    let (int, frac) = (value / unit, value % unit);
    if frac == 0 {
        return int.to_string();
    }
    let frac = format!("{frac:0width$}", width = digits as usize);
    format!("{int}.{}", frac.trim_end_matches('0'))
}

/// A [`Duration`] read and written in Go syntax, for use as a clap value type
/// (`#[arg(long, default_value = "2s")] timeout: GoDuration`) or wherever a duration must
/// round-trip through text. Fields that are plain [`Duration`]s can instead use
/// `#[arg(value_parser = nsq_cli::parse_go_duration)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GoDuration(pub Duration);

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(GoDuration)
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_go_duration(self.0))
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_go_syntax() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("-0s", Duration::ZERO),
            ("250ms", ms(250)),
            ("1m0s", ms(60_000)),
            ("1h30m", ms(5_400_000)),
            ("2s", ms(2_000)),
            ("+2s", ms(2_000)),
            ("1.5s", ms(1_500)),
            (".5s", ms(500)),
            ("5.s", ms(5_000)),
            ("1.5h", ms(5_400_000)),
            ("100us", Duration::from_micros(100)),
            ("100\u{b5}s", Duration::from_micros(100)),
            ("100\u{3bc}s", Duration::from_micros(100)),
            ("10ns", Duration::from_nanos(10)),
            ("1h2m3s4ms5us6ns", Duration::from_nanos(3_723_004_005_006)),
            ("3m3m", ms(360_000)),
            // From Go's own tests (issue 15011: more fraction digits than fit).
            ("0.100000000000000000000h", ms(360_000)),
            (
                "0.830103483285477580700h",
                Duration::from_nanos(2_988_372_539_827),
            ),
            (
                "9223372036s854ms775us807ns",
                Duration::from_nanos(9_223_372_036_854_775_807),
            ),
            (
                "9223372036854775807ns",
                Duration::from_nanos(9_223_372_036_854_775_807),
            ),
            (
                "9223372036.854775807s",
                Duration::from_nanos(9_223_372_036_854_775_807),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input), Ok(*want), "{input}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for input in [
            "", "3", "-", "s", ".", ".s", "+.s", "1.5", "1 s", " 1s", "1s ",
        ] {
            assert!(parse_go_duration(input).is_err(), "{input:?} accepted");
        }
        assert_eq!(
            parse_go_duration("5"),
            Err(DurationError::MissingUnit("5".into()))
        );
        assert_eq!(
            parse_go_duration("5d"),
            Err(DurationError::UnknownUnit {
                unit: "d".into(),
                input: "5d".into()
            })
        );
        assert!(parse_go_duration("9223372036854775808ns").is_err());
        assert!(parse_go_duration("9223372036854775.808us").is_err());
        assert!(parse_go_duration("3000000h").is_err());
        assert_eq!(
            parse_go_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
    }

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(999), "999ns"),
            (Duration::from_nanos(1_100), "1.1\u{b5}s"),
            (Duration::from_micros(100), "100\u{b5}s"),
            (Duration::from_nanos(2_200_000), "2.2ms"),
            (ms(25), "25ms"),
            (ms(250), "250ms"),
            (ms(1_500), "1.5s"),
            (ms(2_000), "2s"),
            (ms(30_000), "30s"),
            (ms(60_000), "1m0s"),
            (ms(90_000), "1m30s"),
            (ms(600_000), "10m0s"),
            (ms(900_000), "15m0s"),
            (ms(3_600_000), "1h0m0s"),
            (Duration::from_nanos(3_723_004_005_006), "1h2m3.004005006s"),
            (
                Duration::from_nanos(9_223_372_036_854_775_807),
                "2562047h47m16.854775807s",
            ),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(*d), *want, "{d:?}");
        }
    }

    #[test]
    fn go_duration_round_trips() {
        for s in ["0s", "250ms", "1m0s", "1h0m0s", "1.5s", "10ns", "1h2m3.5s"] {
            let d: GoDuration = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert!("nope".parse::<GoDuration>().is_err());
        assert_eq!(Duration::from(GoDuration(ms(5))), ms(5));
    }

    #[test]
    fn works_as_a_clap_value() {
        use clap::{Arg, Command};
        let m = Command::new("t")
            .arg(
                Arg::new("d")
                    .long("d")
                    .value_parser(clap::value_parser!(GoDuration)),
            )
            .arg(Arg::new("e").long("e").value_parser(parse_go_duration))
            .try_get_matches_from(["t", "--d=1m", "--e", "250ms"])
            .unwrap();
        assert_eq!(m.get_one::<GoDuration>("d"), Some(&GoDuration(ms(60_000))));
        assert_eq!(m.get_one::<Duration>("e"), Some(&ms(250)));
        assert!(Command::new("t")
            .arg(Arg::new("e").long("e").value_parser(parse_go_duration))
            .try_get_matches_from(["t", "--e=5"])
            .is_err());
    }
}
