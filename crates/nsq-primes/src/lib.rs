//! The prime-checking job queue example: the pieces that are not I/O.
//!
//! * [`is_prime`]: deterministic Miller–Rabin for every `u64`.
//! * [`Verdict`]: the body a worker publishes to `results` (`"<n>:<0|1>"`), carrying the
//!   number so that a verdict published twice (a worker killed after publishing but before
//!   `FIN`, so nsqd redelivers the number) is recognised by the tally.
//! * [`Tally`]: records each number's verdict once; duplicates are counted and ignored.
//! * [`physical_cores`]: the default worker count.

use std::collections::HashSet;

/// Whether `n` is prime. Deterministic for all `u64` (Miller–Rabin with the first twelve
/// primes as bases).
#[allow(clippy::manual_is_multiple_of)] // `u64::is_multiple_of` is newer than the MSRV
pub fn is_prime(n: u64) -> bool {
    const SMALL: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for p in SMALL {
        if n % p == 0 {
            return n == p;
        }
    }
    if n < 41 * 41 {
        return true;
    }
    let mut d = n - 1;
    let mut s = 0;
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    let mul = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let pow = |mut b: u64, mut e: u64| {
        let mut r = 1u64;
        b %= n;
        while e > 0 {
            if e & 1 == 1 {
                r = mul(r, b);
            }
            b = mul(b, b);
            e >>= 1;
        }
        r
    };
    'bases: for a in SMALL {
        let mut x = pow(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul(x, x);
            if x == n - 1 {
                continue 'bases;
            }
        }
        return false;
    }
    true
}

/// A worker's answer for one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub number: u64,
    pub prime: bool,
}

impl Verdict {
    pub fn check(number: u64) -> Verdict {
        Verdict {
            number,
            prime: is_prime(number),
        }
    }

    /// `"<n>:1"` for a prime, `"<n>:0"` otherwise.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.number, u8::from(self.prime))
    }

    pub fn decode(body: &[u8]) -> Option<Verdict> {
        let s = std::str::from_utf8(body).ok()?.trim();
        let (n, p) = s.split_once(':')?;
        let prime = match p {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        Some(Verdict {
            number: n.parse().ok()?,
            prime,
        })
    }
}

/// Parses a `numbers` message body (a decimal number).
pub fn parse_number(body: &[u8]) -> Option<u64> {
    std::str::from_utf8(body).ok()?.trim().parse().ok()
}

/// What [`Tally::record`] did with a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Duplicate,
    OutOfRange,
}

/// The verdicts for `start..=end`, each number counted once.
#[derive(Debug)]
pub struct Tally {
    start: u64,
    end: u64,
    seen: Vec<u64>,
    checked: u64,
    primes: u64,
    duplicates: u64,
    conflicts: HashSet<u64>,
}

impl Tally {
    pub fn new(start: u64, end: u64) -> Tally {
        assert!(start <= end, "empty range");
        let len = end - start + 1;
        Tally {
            start,
            end,
            seen: vec![0; len.div_ceil(64) as usize],
            checked: 0,
            primes: 0,
            duplicates: 0,
            conflicts: HashSet::new(),
        }
    }

    pub fn record(&mut self, v: Verdict) -> Recorded {
        if v.number < self.start || v.number > self.end {
            return Recorded::OutOfRange;
        }
        let i = v.number - self.start;
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Recorded::Duplicate;
        }
        self.seen[word] |= bit;
        self.checked += 1;
        if v.prime {
            self.primes += 1;
        }
        if v.prime != is_prime(v.number) {
            // Never expected; kept so a broken worker cannot go unnoticed.
            self.conflicts.insert(v.number);
        }
        Recorded::New
    }

    pub fn total(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    pub fn primes(&self) -> u64 {
        self.primes
    }

    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Verdicts that disagreed with the tally's own check (should be none).
    pub fn wrong_verdicts(&self) -> usize {
        self.conflicts.len()
    }

    pub fn is_complete(&self) -> bool {
        self.checked == self.total()
    }
}

/// Physical cores (distinct `physical id`/`core id` pairs in `/proc/cpuinfo`), falling back
/// to the available parallelism.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = HashSet::new();
    let mut phys = String::new();
    for line in info.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "physical id" => phys = v.trim().to_owned(),
            "core id" => {
                cores.insert((phys.clone(), v.trim().to_owned()));
            }
            _ => {}
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sieve_count(n: usize) -> u64 {
        let mut composite = vec![false; n + 1];
        let mut count = 0;
        for i in 2..=n {
            if !composite[i] {
                count += 1;
                let mut j = i * i;
                while j <= n {
                    composite[j] = true;
                    j += i;
                }
            }
        }
        count
    }

    #[test]
    fn miller_rabin_matches_a_sieve() {
        let n = 200_000;
        let mr = (1..=n as u64).filter(|&k| is_prime(k)).count() as u64;
        assert_eq!(mr, sieve_count(n));
        assert_eq!(sieve_count(100_000), 9592);
    }

    #[test]
    fn large_numbers() {
        assert!(is_prime(18_446_744_073_709_551_557)); // largest u64 prime
        assert!(!is_prime(18_446_744_073_709_551_615));
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to bases 2,3,5,7
        assert!(is_prime(1_000_000_007));
    }

    #[test]
    fn verdict_round_trip_and_tally_dedupes() {
        let v = Verdict::check(97);
        assert_eq!(v.encode(), "97:1");
        assert_eq!(Verdict::decode(b"97:1"), Some(v));
        assert_eq!(Verdict::decode(b"97:x"), None);
        let mut t = Tally::new(1, 10);
        for n in [2, 3, 4, 3, 5, 11] {
            t.record(Verdict::check(n));
        }
        assert_eq!((t.checked(), t.primes(), t.duplicates()), (4, 3, 1));
        assert_eq!(t.record(Verdict::check(11)), Recorded::OutOfRange);
        assert!(!t.is_complete());
        for n in 1..=10 {
            t.record(Verdict::check(n));
        }
        assert!(t.is_complete());
        assert_eq!(t.primes(), 4);
        assert_eq!(t.wrong_verdicts(), 0);
    }
}
