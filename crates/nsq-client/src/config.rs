//! Client configuration with go-nsq's option names and defaults (go-nsq `config.go`).

use std::path::PathBuf;
use std::time::Duration;

use nsq_protocol::identify::IdentifyRequest;

use crate::error::{Error, Result};

/// Configuration shared by [`Producer`](crate::Producer) and [`Consumer`](crate::Consumer).
///
/// Field names are the snake_case go-nsq option names, and defaults match go-nsq. Fields are
/// public: start from [`Config::default`] (or [`Config::new`]) and assign, or apply textual
/// `key,value` options with [`Config::set`] (what the tools' `--consumer-opt` /
/// `--producer-opt` flags do).
///
/// ```
/// use std::time::Duration;
/// let mut config = nsq_client::Config::new();
/// config.max_in_flight = 32;
/// config.set("msg_timeout", "30s").unwrap();
/// config.set("max-attempts", "10").unwrap(); // '-' and '_' are interchangeable
/// assert_eq!(config.msg_timeout, Some(Duration::from_secs(30)));
/// assert_eq!(config.max_attempts, 10);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Timeout for establishing a TCP connection (go-nsq `dial_timeout`, 1s).
    pub dial_timeout: Duration,
    /// Deadline for receiving the next frame; must exceed `heartbeat_interval`
    /// (go-nsq `read_timeout`, 60s).
    pub read_timeout: Duration,
    /// Deadline for each socket write (go-nsq `write_timeout`, 1s).
    pub write_timeout: Duration,
    /// How often a consumer polls its nsqlookupd instances (go-nsq `lookupd_poll_interval`, 60s).
    pub lookupd_poll_interval: Duration,
    /// Fraction of `lookupd_poll_interval` used as a random delay before the first periodic
    /// poll, so that consumers started together do not poll in step
    /// (go-nsq `lookupd_poll_jitter`, 0.3).
    pub lookupd_poll_jitter: f64,
    /// Timeout for one nsqlookupd HTTP request (go-nsq `lookupd_poll_timeout`, 60s).
    pub lookupd_poll_timeout: Duration,
    /// PEM CA file trusted for `https://` lookupd addresses instead of the system roots
    /// (nsq-rs; go-nsq's lookupd client trusts only the system roots, which stay the default;
    /// not settable with [`Config::set`]).
    pub lookupd_tls_root_ca_file: Option<PathBuf>,
    /// Upper bound for the delay of a requeue computed from `default_requeue_delay`
    /// (go-nsq `max_requeue_delay`, 15m).
    pub max_requeue_delay: Duration,
    /// Requeue delay unit: `requeue(None)` delays by `default_requeue_delay × attempts`,
    /// capped at `max_requeue_delay` (go-nsq `default_requeue_delay`, 90s).
    pub default_requeue_delay: Duration,
    /// Backoff duration unit: at backoff level `n` the consumer pauses for
    /// `backoff_multiplier × 2^n` (go-nsq `backoff_multiplier`, 1s).
    pub backoff_multiplier: Duration,
    /// Longest backoff pause (go-nsq `max_backoff_duration`, 2m).
    pub max_backoff_duration: Duration,
    /// Messages delivered more often than this are logged and finished without being handed
    /// to the application; 0 means unlimited (go-nsq `max_attempts`, 5).
    pub max_attempts: u16,
    /// When there are more connections than `max_in_flight`, a connection that received no
    /// message for this long gives its RDY to another connection
    /// (go-nsq `low_rdy_idle_timeout`, 10s).
    pub low_rdy_idle_timeout: Duration,
    /// Sent in IDENTIFY (go-nsq `client_id`; default: the short host name).
    pub client_id: String,
    /// Sent in IDENTIFY (go-nsq `hostname`; default: the host name).
    pub hostname: String,
    /// Sent in IDENTIFY (go-nsq `user_agent`; default `nsq-rs-client/<version>`).
    pub user_agent: String,
    /// Requested heartbeat interval; `None` disables heartbeats (consumers need them)
    /// (go-nsq `heartbeat_interval`, 30s).
    pub heartbeat_interval: Option<Duration>,
    /// Percentage (0–99) of the channel's messages to receive; 0 disables sampling
    /// (go-nsq `sample_rate`).
    pub sample_rate: u8,
    /// This client's region, sent in IDENTIFY as `topology_region` (go-nsq master's
    /// `topology_region`, unreleased; empty by default). An nsqd run with
    /// `--enable-experiment=topology-aware-consumption` and the same `--topology-region`
    /// prefers this consumer over ones from other regions.
    pub topology_region: String,
    /// This client's zone, sent in IDENTIFY as `topology_zone` (go-nsq master's
    /// `topology_zone`); an nsqd with the experiment and the same `--topology-zone` prefers
    /// this consumer over all others.
    pub topology_zone: String,
    /// Server-side output buffer size in bytes; `-1` disables buffering, 0 means the server's
    /// default (go-nsq `output_buffer_size`, 16384).
    pub output_buffer_size: i64,
    /// Server-side output buffer flush timeout; `None` disables it (go-nsq
    /// `output_buffer_timeout`, 250ms).
    pub output_buffer_timeout: Option<Duration>,
    /// Consumer: the maximum number of messages in flight across all connections
    /// (go-nsq `max_in_flight`, 1).
    pub max_in_flight: u64,
    /// Per-connection message timeout; `None` uses the server's `--msg-timeout`
    /// (go-nsq `msg_timeout`).
    pub msg_timeout: Option<Duration>,
    /// Consumer (nsq-rs): when a [`Message`](crate::Message) is dropped without having been
    /// finished or requeued, requeue it (default delay, with backoff) as go-nsq does for a
    /// handler that neither finished nor disabled auto-response. When false, a dropped
    /// message is left alone and nsqd redelivers it after `msg_timeout`. Default true.
    pub requeue_on_drop: bool,
    /// Consumer (nsq-rs): how long `stop()` waits for in-flight messages to be finished or
    /// requeued before closing the connections anyway. Default 30s.
    pub stop_timeout: Duration,
    /// Ask nsqd for TLS in IDENTIFY (go-nsq `tls_v1`). As in go-nsq, a server without a
    /// certificate declines and the connection stays plain (a warning is logged); a server
    /// with `--tls-required` refuses every command of a client that did not ask.
    pub tls_v1: bool,
    /// PEM file of the CA certificates the server's certificate must chain to; `None` uses the
    /// system's CA bundle (go-nsq `tls_root_ca_file`).
    pub tls_root_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to nsqd (with `tls_key`; go-nsq `tls_cert`), for
    /// `--tls-client-auth-policy=require` / `require-verify`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (go-nsq `tls_key`).
    pub tls_key: Option<PathBuf>,
    /// Accept any server certificate (go-nsq `tls_insecure_skip_verify`). Encrypts but does
    /// not authenticate the server: for tests only.
    pub tls_insecure_skip_verify: bool,
    /// Name checked against the server's certificate (nsq-rs; go-nsq always uses the host part
    /// of the nsqd address, which is also the default here).
    pub tls_server_name: Option<String>,
    /// Oldest TLS version offered (go-nsq `tls_min_version`: `tls1.0`, `tls1.1` and `tls1.2`
    /// all mean TLS 1.2 here, the oldest rustls speaks; `tls1.3` is ours; go-nsq's `ssl3.0`
    /// is refused).
    pub tls_min_version: nsq_net::tls::MinVersion,
    /// Local address to dial from (go-nsq `local_addr`), e.g. to pick the interface or source
    /// IP; port 0 lets the system choose. `None`: the system picks both.
    pub local_addr: Option<std::net::SocketAddr>,
    /// Ask nsqd for snappy compression (go-nsq `snappy`). Exclusive with `deflate`.
    pub snappy: bool,
    /// Ask nsqd for raw deflate compression (go-nsq `deflate`). Exclusive with `snappy`.
    pub deflate: bool,
    /// Deflate level 1–9 for what we send; also requested for what nsqd sends, which it caps
    /// at its `--max-deflate-level` (go-nsq `deflate_level`, 6).
    pub deflate_level: u32,
    /// Secret sent with `AUTH` when nsqd requires it (go-nsq `auth_secret`). Without one, a
    /// server that requires AUTH is reported as [`Error::Auth`].
    pub auth_secret: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let client_id = hostname.split('.').next().unwrap_or("").to_owned();
        Config {
            dial_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(1),
            lookupd_poll_interval: Duration::from_secs(60),
            lookupd_poll_jitter: 0.3,
            lookupd_poll_timeout: Duration::from_secs(60),
            lookupd_tls_root_ca_file: None,
            max_requeue_delay: Duration::from_secs(15 * 60),
            default_requeue_delay: Duration::from_secs(90),
            backoff_multiplier: Duration::from_secs(1),
            max_backoff_duration: Duration::from_secs(120),
            max_attempts: 5,
            low_rdy_idle_timeout: Duration::from_secs(10),
            client_id,
            hostname,
            user_agent: format!("nsq-rs-client/{}", env!("CARGO_PKG_VERSION")),
            heartbeat_interval: Some(Duration::from_secs(30)),
            sample_rate: 0,
            topology_region: String::new(),
            topology_zone: String::new(),
            output_buffer_size: 16384,
            output_buffer_timeout: Some(Duration::from_millis(250)),
            max_in_flight: 1,
            msg_timeout: None,
            requeue_on_drop: true,
            stop_timeout: Duration::from_secs(30),
            tls_v1: false,
            tls_root_ca_file: None,
            tls_cert: None,
            tls_key: None,
            tls_insecure_skip_verify: false,
            tls_server_name: None,
            tls_min_version: Default::default(),
            local_addr: None,
            snappy: false,
            deflate: false,
            deflate_level: 6,
            auth_secret: None,
        }
    }
}

impl Config {
    /// The defaults (same as [`Config::default`]).
    pub fn new() -> Config {
        Config::default()
    }

    /// Sets one option from text, by its go-nsq name (`-` and `_` are interchangeable).
    ///
    /// Durations use Go syntax (`"250ms"`, `"1m30s"`), booleans Go's `strconv.ParseBool`
    /// spellings, paths are taken as given (files are read when the producer or consumer is
    /// created).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim().replace('-', "_");
        let value = value.trim();
        let bad = |what: &str| Error::Config(format!("{key}: {what} ({value:?})"));
        let dur = || parse_go_duration(value).map_err(|e| bad(&e));
        let int = || value.parse::<i64>().map_err(|_| bad("not an integer"));
        let boolean = || parse_go_bool(value).ok_or_else(|| bad("not a boolean"));
        let path = || (!value.is_empty()).then(|| PathBuf::from(value));
        match key.as_str() {
            "dial_timeout" => self.dial_timeout = dur()?,
            "read_timeout" => self.read_timeout = dur()?,
            "write_timeout" => self.write_timeout = dur()?,
            "lookupd_poll_interval" => self.lookupd_poll_interval = dur()?,
            "lookupd_poll_jitter" => {
                let f: f64 = value.parse().map_err(|_| bad("not a number"))?;
                if !(0.0..=1.0).contains(&f) {
                    return Err(bad("must be between 0 and 1"));
                }
                self.lookupd_poll_jitter = f;
            }
            "lookupd_poll_timeout" => self.lookupd_poll_timeout = dur()?,
            "max_requeue_delay" => self.max_requeue_delay = dur()?,
            "default_requeue_delay" => self.default_requeue_delay = dur()?,
            "backoff_multiplier" => self.backoff_multiplier = dur()?,
            "max_backoff_duration" => self.max_backoff_duration = dur()?,
            "max_attempts" => {
                self.max_attempts = u16::try_from(int()?).map_err(|_| bad("out of range"))?
            }
            "low_rdy_idle_timeout" => self.low_rdy_idle_timeout = dur()?,
            "client_id" => self.client_id = value.to_owned(),
            "hostname" => self.hostname = value.to_owned(),
            "user_agent" => self.user_agent = value.to_owned(),
            "topology_region" => self.topology_region = value.to_owned(),
            "topology_zone" => self.topology_zone = value.to_owned(),
            "heartbeat_interval" => {
                self.heartbeat_interval = if value.starts_with('-') {
                    None
                } else {
                    Some(dur()?)
                }
            }
            "sample_rate" => {
                let n = int()?;
                if !(0..=99).contains(&n) {
                    return Err(bad("must be between 0 and 99"));
                }
                self.sample_rate = n as u8;
            }
            "output_buffer_size" => self.output_buffer_size = int()?,
            "output_buffer_timeout" => {
                self.output_buffer_timeout = if value.starts_with('-') {
                    None
                } else {
                    Some(dur()?)
                }
            }
            "max_in_flight" => {
                self.max_in_flight = u64::try_from(int()?).map_err(|_| bad("out of range"))?
            }
            "msg_timeout" => {
                let d = dur()?;
                self.msg_timeout = if d.is_zero() { None } else { Some(d) };
            }
            "requeue_on_drop" => self.requeue_on_drop = boolean()?,
            "stop_timeout" => self.stop_timeout = dur()?,
            // go-nsq options without an effect here: accepted so shared option lists work.
            "low_rdy_timeout" | "rdy_redistribute_interval" | "backoff_strategy" => {}
            "tls_v1" => self.tls_v1 = boolean()?,
            "snappy" => self.snappy = boolean()?,
            "deflate" => self.deflate = boolean()?,
            "deflate_level" => {
                let n = int()?;
                if !(1..=9).contains(&n) {
                    return Err(bad("must be between 1 and 9"));
                }
                self.deflate_level = n as u32;
            }
            "auth_secret" => {
                self.auth_secret = (!value.is_empty()).then(|| value.to_owned());
            }
            "tls_root_ca_file" => self.tls_root_ca_file = path(),
            "tls_cert" => self.tls_cert = path(),
            "tls_key" => self.tls_key = path(),
            "tls_insecure_skip_verify" => self.tls_insecure_skip_verify = boolean()?,
            "tls_server_name" => {
                self.tls_server_name = (!value.is_empty()).then(|| value.to_owned());
            }
            "tls_min_version" => {
                self.tls_min_version = match value {
                    "ssl3.0" => return Err(bad("SSL 3.0 is not supported (TLS 1.2 and 1.3 only)")),
                    v => nsq_net::tls::MinVersion::from_flag(v)
                        // go-nsq: "ERROR: %v is not a tls version"
                        .ok_or_else(|| bad("not a tls version"))?,
                }
            }
            "local_addr" => {
                self.local_addr = if value.is_empty() {
                    None
                } else {
                    Some(value.parse().map_err(|_| bad("not an IP:port address"))?)
                }
            }
            _ => return Err(Error::Config(format!("unknown option {key:?}"))),
        }
        Ok(())
    }

    /// Checks the relations between options (e.g. heartbeats vs. read timeout).
    pub fn validate(&self) -> Result<()> {
        if let Some(hb) = self.heartbeat_interval {
            if !hb.is_zero() && hb >= self.read_timeout {
                return Err(Error::Config(format!(
                    "heartbeat_interval ({hb:?}) must be less than read_timeout ({:?})",
                    self.read_timeout
                )));
            }
        }
        if self.sample_rate > 99 {
            return Err(Error::Config("sample_rate must be between 0 and 99".into()));
        }
        if self.snappy && self.deflate {
            return Err(Error::Config(
                "snappy and deflate cannot both be enabled (nsqd refuses the pair)".into(),
            ));
        }
        if !(1..=9).contains(&self.deflate_level) {
            return Err(Error::Config(
                "deflate_level must be between 1 and 9".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Error::Config(
                "tls_cert and tls_key must be given together".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.lookupd_poll_jitter) {
            return Err(Error::Config(
                "lookupd_poll_jitter must be between 0 and 1".into(),
            ));
        }
        Ok(())
    }

    /// The IDENTIFY body for this configuration. We always negotiate features (to learn the
    /// server's `max_rdy_count`, whether it agreed to TLS/compression and requires AUTH).
    pub(crate) fn identify_request(&self) -> IdentifyRequest {
        IdentifyRequest {
            client_id: Some(self.client_id.clone()),
            hostname: Some(self.hostname.clone()),
            user_agent: Some(self.user_agent.clone()),
            feature_negotiation: Some(true),
            heartbeat_interval: Some(match self.heartbeat_interval {
                Some(d) => d.as_millis() as i64,
                None => -1,
            }),
            output_buffer_size: Some(self.output_buffer_size),
            output_buffer_timeout: Some(match self.output_buffer_timeout {
                Some(d) => d.as_millis() as i64,
                None => -1,
            }),
            tls_v1: Some(self.tls_v1),
            snappy: Some(self.snappy),
            deflate: Some(self.deflate),
            deflate_level: Some(i64::from(self.deflate_level)),
            sample_rate: Some(self.sample_rate as i64),
            msg_timeout: Some(self.msg_timeout.map_or(0, |d| d.as_millis() as i64)),
            // go-nsq (master) always sends both, empty when unset.
            topology_region: Some(self.topology_region.clone()),
            topology_zone: Some(self.topology_zone.clone()),
        }
    }

    /// go-nsq's linear requeue delay: `default_requeue_delay × attempts`, capped.
    pub(crate) fn default_requeue_delay_for(&self, attempts: u16) -> Duration {
        self.default_requeue_delay
            .saturating_mul(u32::from(attempts.max(1)))
            .min(self.max_requeue_delay)
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` for non-negative values (`"1h2m3.5s"`, `"250ms"`, `"0"`).
pub(crate) fn parse_go_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return Err("invalid duration".into());
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err("invalid duration".into());
        }
        let n: f64 = num.parse().map_err(|_| "invalid duration".to_string())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit in duration".into()),
            _ => return Err(format!("unknown unit {unit:?} in duration")),
        };
        total += n * nanos_per;
        rest = tail;
    }
    if total > i64::MAX as f64 {
        return Err("duration out of range".into());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_go_nsq() {
        let c = Config::default();
        assert_eq!(c.max_in_flight, 1);
        assert_eq!(c.msg_timeout, None);
        assert_eq!(c.heartbeat_interval, Some(Duration::from_secs(30)));
        assert_eq!(c.read_timeout, Duration::from_secs(60));
        assert_eq!(c.write_timeout, Duration::from_secs(1));
        assert_eq!(c.lookupd_poll_interval, Duration::from_secs(60));
        assert_eq!(c.lookupd_poll_jitter, 0.3);
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.default_requeue_delay, Duration::from_secs(90));
        assert_eq!(c.max_requeue_delay, Duration::from_secs(900));
        assert_eq!(c.backoff_multiplier, Duration::from_secs(1));
        assert_eq!(c.max_backoff_duration, Duration::from_secs(120));
        assert_eq!(c.low_rdy_idle_timeout, Duration::from_secs(10));
        assert!(c.user_agent.starts_with("nsq-rs-client/"));
        assert!(!c.hostname.is_empty());
        c.validate().unwrap();
    }

    #[test]
    fn set_parses_go_names_and_values() {
        let mut c = Config::default();
        c.set("max_in_flight", "200").unwrap();
        c.set("msg-timeout", "1m30s").unwrap();
        c.set("heartbeat_interval", "5s").unwrap();
        c.set("output_buffer_timeout", "100ms").unwrap();
        c.set("lookupd_poll_jitter", "0.5").unwrap();
        c.set("sample_rate", "10").unwrap();
        c.set("topology-zone", "z1").unwrap();
        c.set("topology_region", "r1").unwrap();
        c.set("snappy", "false").unwrap();
        c.set("requeue_on_drop", "f").unwrap();
        assert_eq!(c.max_in_flight, 200);
        assert_eq!(c.msg_timeout, Some(Duration::from_secs(90)));
        assert_eq!(c.heartbeat_interval, Some(Duration::from_secs(5)));
        assert_eq!(c.output_buffer_timeout, Some(Duration::from_millis(100)));
        assert_eq!(c.lookupd_poll_jitter, 0.5);
        assert_eq!(c.sample_rate, 10);
        assert_eq!(
            (c.topology_zone.as_str(), c.topology_region.as_str()),
            ("z1", "r1")
        );
        let id = c.identify_request();
        assert_eq!(id.topology_zone.as_deref(), Some("z1"));
        assert_eq!(id.topology_region.as_deref(), Some("r1"));
        assert!(!c.requeue_on_drop);
        c.set("tls_min_version", "tls1.3").unwrap();
        assert_eq!(c.tls_min_version, nsq_net::tls::MinVersion::Tls13);
        c.set("tls_min_version", "tls1.0").unwrap();
        assert_eq!(c.tls_min_version, nsq_net::tls::MinVersion::Tls12);
        for v in ["ssl3.0", "tls9"] {
            assert!(
                matches!(c.set("tls_min_version", v), Err(Error::Config(_))),
                "{v}"
            );
        }
        c.set("local_addr", "127.0.0.5:0").unwrap();
        assert_eq!(c.local_addr, Some("127.0.0.5:0".parse().unwrap()));
        assert!(matches!(
            c.set("local_addr", "localhost"),
            Err(Error::Config(_))
        ));
        assert!(matches!(c.set("nope", "1"), Err(Error::Config(_))));
        assert!(matches!(c.set("msg_timeout", "30"), Err(Error::Config(_))));
        assert!(matches!(c.set("sample_rate", "100"), Err(Error::Config(_))));
        assert!(matches!(
            c.set("max_in_flight", "-1"),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn tls_compression_and_auth_options() {
        let mut c = Config::default();
        assert_eq!(c.deflate_level, 6);
        c.set("tls_v1", "true").unwrap();
        c.set("tls_root_ca_file", "/etc/ca.pem").unwrap();
        c.set("tls_cert", "/etc/client.pem").unwrap();
        c.set("tls_key", "/etc/client.key").unwrap();
        c.set("tls-insecure-skip-verify", "1").unwrap();
        c.set("deflate", "true").unwrap();
        c.set("deflate_level", "9").unwrap();
        c.set("auth_secret", "s3cret").unwrap();
        assert!(c.tls_v1 && c.tls_insecure_skip_verify && c.deflate);
        assert_eq!(c.tls_root_ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(c.tls_cert, Some(PathBuf::from("/etc/client.pem")));
        assert_eq!(c.tls_key, Some(PathBuf::from("/etc/client.key")));
        assert_eq!(c.deflate_level, 9);
        assert_eq!(c.auth_secret.as_deref(), Some("s3cret"));
        assert!(c.identify_request().tls_v1 == Some(true));
        assert_eq!(c.identify_request().deflate_level, Some(9));
        c.validate().unwrap();
        assert!(matches!(c.set("deflate_level", "0"), Err(Error::Config(_))));
        assert!(matches!(
            c.set("deflate_level", "10"),
            Err(Error::Config(_))
        ));
        c.set("snappy", "true").unwrap();
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        c.set("deflate", "false").unwrap();
        c.validate().unwrap();
        c.set("tls_key", "").unwrap();
        assert!(matches!(c.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("1h2m3s", Duration::from_secs(3723)),
            ("100us", Duration::from_micros(100)),
            ("10ns", Duration::from_nanos(10)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_go_duration(s), Ok(d), "{s}");
        }
        for s in ["", "5", "-1s", "5d", "s", ".s"] {
            assert!(parse_go_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn requeue_delay_is_linear_and_capped() {
        let c = Config::default();
        assert_eq!(c.default_requeue_delay_for(1), Duration::from_secs(90));
        assert_eq!(c.default_requeue_delay_for(3), Duration::from_secs(270));
        assert_eq!(c.default_requeue_delay_for(100), Duration::from_secs(900));
    }
}
