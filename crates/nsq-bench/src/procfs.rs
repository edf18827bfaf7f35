//! Reading another process's memory and CPU use from `/proc` (Linux only).
//!
//! `bench_mem` and `bench_topics` observe nsqd from outside, so they measure what the
//! operating system charges to it (resident pages, CPU ticks) rather than what the
//! allocator believes it holds.

use anyhow::{anyhow, Context};

/// Extracts `VmRSS` from the text of `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut it = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    let mult = match it.next() {
        Some("kB") | None => 1024,
        Some("mB") => 1024 * 1024,
        Some(_) => return None,
    };
    Some(n * mult)
}

/// Extracts `utime + stime` (clock ticks, all threads) from the text of `/proc/<pid>/stat`.
///
/// The second field (`comm`) is parenthesised and may contain spaces and parentheses, so
/// fields are counted from the last `)`; `utime` and `stime` are fields 14 and 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // f[0] is field 3 (state), so field N is f[N - 3].
    let utime: u64 = f.get(14 - 3)?.parse().ok()?;
    let stime: u64 = f.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&s).ok_or_else(|| anyhow!("no VmRSS in {path}"))
}

/// CPU time (user + system, all threads) of `pid` in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&s).ok_or_else(|| anyhow!("cannot parse {path}"))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), asked of `getconf` to stay free of
/// `unsafe`; Linux uses 100 on every mainstream architecture, which is the fallback.
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tnsqd\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t  999 kB\n\
                      VmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t abc kB\n"), None);
    }

    #[test]
    fn parses_stat_ticks() {
        // Real layout; comm with a space and a parenthesis to exercise the rfind.
        let stat = "4242 (ns qd) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    750 250 0 0 20 0 8 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1000));
        let simple = "1 (nsqd) R 0 1 1 0 -1 0 0 0 0 0 3 4 0 0";
        assert_eq!(parse_stat_cpu_ticks(simple), Some(7));
        assert_eq!(parse_stat_cpu_ticks("1 (nsqd) R 0"), None);
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        cpu_ticks(pid).unwrap();
        assert!(clock_ticks_per_sec() > 0);
    }
}
