//! Command-line helpers: Go-style flags, Go durations and the `--deadline` start time.
//!
//! Go's `flag` package accepts `-name`, `-name=value`, `--name` and `--name=value` alike,
//! and NSQ's `bench.sh` and docs use both spellings. clap only treats `--name` as a long
//! flag, so [`rewrite_go_flags`] turns `-name[=value]` into `--name[=value]` when `name` is
//! one of the command's long flags, before clap parses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

/// Rewrites Go-style single-dash long flags into clap's double-dash form.
///
/// Only arguments that start with exactly one `-` and whose name (up to `=`) is in `longs`
/// are rewritten, so short flags (`-h`), negative numbers (`-1`) and values are untouched.
/// Nothing after a bare `--` is rewritten.
pub fn rewrite_go_flags<I, S>(args: I, longs: &[String]) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut out = Vec::new();
    let mut passthrough = false;
    for (i, a) in args.into_iter().enumerate() {
        let a: String = a.into();
        // The program name is never a flag.
        if i == 0 || passthrough {
            out.push(a);
            continue;
        }
        if a == "--" {
            passthrough = true;
            out.push(a);
            continue;
        }
        if let Some(rest) = a.strip_prefix('-') {
            if !rest.starts_with('-') {
                let name = rest.split('=').next().unwrap_or("");
                if longs.iter().any(|l| l == name) {
                    out.push(format!("-{a}"));
                    continue;
                }
            }
        }
        out.push(a);
    }
    out
}

/// Parses the process arguments into `T`, accepting Go-style `-flag` spellings.
pub fn parse_go_style<T: Parser>() -> T {
    let cmd = T::command();
    let mut longs: Vec<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    longs.push("help".to_string());
    T::parse_from(rewrite_go_flags(std::env::args(), &longs))
}

/// Parses a Go duration (`time.ParseDuration`): a sequence of decimal numbers with units
/// `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, e.g. `10s`, `1m30s`, `1.5s`, `250ms`. `0` alone is
/// zero. Negative durations are rejected (they make no sense for these tools).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let err = || format!("invalid duration {s:?}");
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if let Some(r) = rest.strip_prefix('+') {
        rest = r;
    }
    if rest.is_empty() {
        return Err(err());
    }
    let mut total_ns: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(format!("unknown unit {unit:?} in duration {s:?}")),
        };
        total_ns += value * scale;
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// Formats a duration as Go's `time.Duration.String()` does: `1h2m3.5s`, `10.000123s`,
/// `1.5ms`, `250µs`, `42ns`, `0s`.
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_string();
    }
    fn frac(whole: u128, rem: u128, digits: usize) -> String {
        if rem == 0 {
            return whole.to_string();
        }
        let f = format!("{rem:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns / 1_000, ns % 1_000, 3));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns / 1_000_000, ns % 1_000_000, 6));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let h = secs / 3600;
    let m = (secs % 3600) / 60;
    let s = secs % 60;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", frac(s, sub, 9)));
    out
}

/// Parses `--deadline` (Go layout `2006-01-02 15:04:05`) into a point in time.
///
/// Go's tools call `time.Parse`, which reads a layout without a zone as UTC; we do the same
/// so that a deadline shared between Go and Rust tools means the same instant.
pub fn parse_deadline(s: &str) -> Result<SystemTime, String> {
    let err = || format!("invalid deadline {s:?}, want \"2006-01-02 15:04:05\" (UTC)");
    let (date, time) = s.trim().split_once(' ').ok_or_else(err)?;
    let d: Vec<&str> = date.split('-').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || t.len() != 3 {
        return Err(err());
    }
    let num = |x: &str| x.parse::<i64>().map_err(|_| err());
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (h, mi, se) = (num(t[0])?, num(t[1])?, num(t[2])?);
    if !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || !(0..24).contains(&h)
        || !(0..60).contains(&mi)
        || !(0..60).contains(&se)
    {
        return Err(err());
    }
    let secs = days_from_civil(y, mo, da) * 86_400 + h * 3600 + mi * 60 + se;
    if secs < 0 {
        return Err(err());
    }
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Sleeps until `--deadline` if one was given (Go: "sleeping until ...").
pub fn sleep_until_deadline(tool: &str, deadline: Option<&str>) -> anyhow::Result<()> {
    let Some(s) = deadline.filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let t = parse_deadline(s).map_err(anyhow::Error::msg)?;
    let d = t
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    eprintln!(
        "[{tool}] sleeping until {s} UTC ({})",
        format_go_duration(d)
    );
    std::thread::sleep(d);
    Ok(())
}

/// One connection per core, as Go's tools use one per `GOMAXPROCS`.
pub fn workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn longs() -> Vec<String> {
        ["runfor", "nsqd-tcp-address", "size", "batch-size", "help"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn rewrites_single_dash_long_flags() {
        let out = rewrite_go_flags(
            [
                "bench_writer",
                "-runfor=5s",
                "-size",
                "100",
                "--batch-size=10",
                "-nsqd-tcp-address",
                "-x",
                "-h",
                "-1",
                "-unknown",
                "--",
                "-size",
            ],
            &longs(),
        );
        assert_eq!(
            out,
            [
                "bench_writer",
                "--runfor=5s",
                "--size",
                "100",
                "--batch-size=10",
                "--nsqd-tcp-address",
                "-x",
                "-h",
                "-1",
                "-unknown",
                "--",
                "-size",
            ]
        );
        // The program name is never rewritten even if it looks like a flag.
        assert_eq!(rewrite_go_flags(["-size"], &longs()), ["-size"]);
        assert_eq!(rewrite_go_flags(["p", "-help"], &longs()), ["p", "--help"]);
    }

    #[test]
    fn parses_go_durations() {
        let p = |s| parse_go_duration(s).unwrap();
        assert_eq!(p("10s"), Duration::from_secs(10));
        assert_eq!(p("1m30s"), Duration::from_secs(90));
        assert_eq!(p("1.5s"), Duration::from_millis(1500));
        assert_eq!(p("250ms"), Duration::from_millis(250));
        assert_eq!(p("2h"), Duration::from_secs(7200));
        assert_eq!(p("3us"), Duration::from_micros(3));
        assert_eq!(p("3µs"), Duration::from_micros(3));
        assert_eq!(p("7ns"), Duration::from_nanos(7));
        assert_eq!(p("0"), Duration::ZERO);
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("10x").is_err());
        assert!(parse_go_duration("-1s").is_err());
    }

    #[test]
    fn formats_like_go() {
        let f = format_go_duration;
        assert_eq!(f(Duration::ZERO), "0s");
        assert_eq!(f(Duration::from_nanos(42)), "42ns");
        assert_eq!(f(Duration::from_micros(250)), "250µs");
        assert_eq!(f(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(f(Duration::from_millis(1500)), "1.5s");
        assert_eq!(f(Duration::from_nanos(10_000_123_456)), "10.000123456s");
        assert_eq!(f(Duration::from_secs(90)), "1m30s");
        assert_eq!(f(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(f(Duration::from_secs(10)), "10s");
    }

    #[test]
    fn parses_deadline_as_utc() {
        let t = parse_deadline("2006-01-02 15:04:05").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_136_214_245
        );
        let t = parse_deadline("1970-01-01 00:00:00").unwrap();
        assert_eq!(t, UNIX_EPOCH);
        let t = parse_deadline("2024-02-29 23:59:59").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_709_251_199
        );
        assert!(parse_deadline("2006-01-02").is_err());
        assert!(parse_deadline("2006-13-02 15:04:05").is_err());
        assert!(parse_deadline("2006-01-02 25:04:05").is_err());
    }
}
