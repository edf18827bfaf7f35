//! nsqd's options: flags, config file, defaults and validation.
//!
//! nsq-rs is a drop-in replacement for Go's nsqd, so its command line is Go's: the same flag
//! names, the same defaults, the same value syntaxes (`-mem-queue-size 5`, `--snappy=false`,
//! `--msg-timeout=1m0s`) and the same TOML config file keys. [`Options`] is the single clap
//! definition of all of that; [`nsq_cli`] supplies the Go compatibility layer (single-dash long
//! flags, Go durations/bools/integers, config file → arguments).
//!
//! Resolution follows Go's `go-options`: a flag given on the command line beats the config
//! file, which beats the default. Both sources end up as arguments to the same clap command,
//! so a bad value is reported the same way wherever it came from.
//!
//! A few options configure features nsq-rs does not implement yet (e2e latency
//! percentiles). They are still accepted, so existing command lines and config files keep
//! working, and [`Options::unsupported_in_use`] lists the ones that were actually set so the
//! daemon can say so instead of silently ignoring them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{ArgAction, Parser};
use nsq_cli::{CommonArgs, GoBoolArg};
use serde_json::{json, Value};

/// `HOST:PORT` with a non-empty host and a numeric port.
fn host_port_ok(a: &str) -> bool {
    a.rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// Why options could not be loaded or are not acceptable (shared by the daemons; `validate`
/// gives [`ConfigError::Invalid`]).
pub use nsq_cli::ConfigError;
/// The NSQ release whose interface nsq-rs implements.
pub use nsq_cli::NSQ_VERSION;

/// Config file keys whose flag name differs from the key (Go's `cfg` struct tags).
const CONFIG_RENAMES: &[(&str, &str)] = &[
    ("id", "node-id"),
    ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
    ("auth_http_addresses", "auth-http-address"),
    (
        "e2e_processing_latency_percentiles",
        "e2e-processing-latency-percentile",
    ),
    ("enable_experiment", "enable-experiment"),
];

/// Flags that are not options in Go (deprecated no-ops), hence not config file keys either.
/// `export-go-data` is ours: a one-shot command, not an option.
const CLI_ONLY: &[&str] = &["verbose", "worker-id", "export-go-data"];

/// The only experiment Go nsqd knows (added on its master after v1.3.0, which has none).
const EXPERIMENTS: &[&str] = &["topology-aware-consumption"];

pub use nsq_cli::daemon::{hostname, LogLevel, LogLevelError};

/// Whether clients must use TLS (`--tls-required`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsRequired {
    /// TLS is optional (`false`, the default).
    #[default]
    Off,
    /// TLS is required on TCP, and plain HTTP is refused (`true`).
    On,
    /// TLS is required on TCP; plain HTTP stays available (`tcp-https`).
    TcpHttps,
}

impl TlsRequired {
    /// The value of Go's `Options.TLSRequired` (`TLSNotRequired` = 0,
    /// `TLSRequiredExceptHTTP` = 1, `TLSRequired` = 2); it is what `GET /config/tls_required`
    /// returns.
    pub fn go_value(self) -> i64 {
        match self {
            TlsRequired::Off => 0,
            TlsRequired::TcpHttps => 1,
            TlsRequired::On => 2,
        }
    }
}

/// A `--tls-required` value that is neither a boolean nor `tcp-https`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --tls-required value {0:?} (true, false or tcp-https)")]
pub struct TlsRequiredError(pub String);

impl FromStr for TlsRequired {
    type Err = TlsRequiredError;

    /// Go lower-cases the value, then takes `tcp-https` or a `strconv.ParseBool` boolean.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        if lower == "tcp-https" {
            return Ok(TlsRequired::TcpHttps);
        }
        match nsq_cli::parse_go_bool(&lower) {
            Ok(true) => Ok(TlsRequired::On),
            Ok(false) => Ok(TlsRequired::Off),
            Err(_) => Err(TlsRequiredError(s.to_owned())),
        }
    }
}

impl fmt::Display for TlsRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsRequired::Off => "false",
            TlsRequired::On => "true",
            TlsRequired::TcpHttps => "tcp-https",
        })
    }
}

/// A `--tls-min-version` value Go does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TLS version {0:?} (tls1.0, tls1.1, tls1.2 or tls1.3)")]
pub struct TlsVersionError(pub String);

/// `--tls-min-version`: Go's spellings, case-insensitive, normalised to lower case. An empty
/// value leaves the default (`tls1.0`) in place, as in Go. `ssl3.0` parses (Go's flag accepts
/// it) but [`Options::validate`] rejects it: no TLS stack negotiates SSL 3.0 any more.
fn parse_tls_min_version(s: &str) -> Result<String, TlsVersionError> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "" => Ok("tls1.0".to_owned()),
        "ssl3.0" | "tls1.0" | "tls1.1" | "tls1.2" | "tls1.3" => Ok(lower),
        _ => Err(TlsVersionError(s.to_owned())),
    }
}

/// The protocol version number Go stores for a `--tls-min-version` name (`0x0301` for tls1.0).
fn tls_version_number(name: &str) -> u16 {
    match name {
        "ssl3.0" => 0x0300,
        "" | "tls1.0" => 0x0301,
        "tls1.1" => 0x0302,
        "tls1.2" => 0x0303,
        "tls1.3" => 0x0304,
        _ => 0,
    }
}

/// Go's default node ID for a host: `crc32.ChecksumIEEE(md5(hostname)) % 1024`.
pub fn node_id_for_hostname(hostname: &str) -> i64 {
    use md5::{Digest, Md5};
    let digest = Md5::digest(hostname.as_bytes());
    i64::from(crc32fast::hash(&digest) % 1024)
}

fn default_node_id() -> i64 {
    node_id_for_hostname(&hostname())
}

/// Every nsqd option, named after its Go flag (`--mem-queue-size` → `mem_queue_size`).
///
/// Durations are given in Go syntax (`60s`, `1m0s`, `250ms`); booleans are Go boolean flags
/// (`--snappy`, `--snappy=false`); integers accept Go's base prefixes. Help texts are our own.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "nsqd",
    about = "nsqd (nsq-rs): receives, queues and delivers messages; compatible with NSQ 1.3",
    long_about = None,
    args_override_self = true,
    disable_version_flag = true,
    max_term_width = 100,
    mut_arg("log_prefix", |a| a.default_value("[nsqd] "))
)]
pub struct Options {
    // ---- basics ----------------------------------------------------------------------------
    /// `--config`, `--version`, `--log-level`, `--log-prefix`, `--verbose`.
    #[command(flatten)]
    pub common: CommonArgs,

    /// This node's part of every message ID, in [0,1024). Defaults to a hash of the hostname.
    #[arg(
        long,
        value_name = "ID",
        value_parser = nsq_cli::parse_go_int,
        default_value_t = default_node_id()
    )]
    pub node_id: i64,

    /// Deprecated and ignored; use --node-id.
    #[arg(long, go_bool = false)]
    pub worker_id: bool,

    /// nsq-rs: write every queued message of a stopped node's --data-path to go-diskqueue
    /// files (as a clean shutdown does), so Go nsqd 1.3 can take the directory over, and exit.
    #[arg(long, go_bool = false)]
    pub export_go_data: bool,

    // ---- listeners -------------------------------------------------------------------------
    /// Where to accept TCP protocol clients: host:port, or a path for a unix socket.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4150")]
    pub tcp_address: String,

    /// Where to serve the HTTP API: host:port, a path for a unix socket, or empty for none.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4151")]
    pub http_address: String,

    /// Where to serve the HTTPS API (only when a TLS certificate and key are configured).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4152")]
    pub https_address: String,

    /// nsq-rs extension: when set, every HTTP(S) API request except `/ping` must carry
    /// `Authorization: Bearer <token>` (NSQ's HTTP API is otherwise open to anyone who can
    /// reach it, and AUTH does not cover it). Prefer the environment variable to keep the
    /// token out of `ps`.
    #[arg(
        long,
        value_name = "TOKEN",
        default_value = "",
        env = "NSQD_HTTP_API_TOKEN",
        hide_env_values = true
    )]
    pub http_api_token: String,

    /// nsq-rs extension: serve Prometheus `GET /metrics` without `--http-api-token`'s bearer
    /// token (a scraper then needs no token that would also let it publish and delete).
    #[arg(long, go_bool = false)]
    pub metrics_without_token: bool,

    /// Host name announced to nsqlookupd. Defaults to the OS hostname.
    #[arg(long, value_name = "HOST", default_value_t = hostname())]
    pub broadcast_address: String,

    /// TCP port announced to nsqlookupd; 0 means the port actually listened on.
    #[arg(long, value_name = "PORT", value_parser = nsq_cli::parse_go_int, default_value_t = 0)]
    pub broadcast_tcp_port: i64,

    /// HTTP port announced to nsqlookupd; 0 means the port actually listened on.
    #[arg(long, value_name = "PORT", value_parser = nsq_cli::parse_go_int, default_value_t = 0)]
    pub broadcast_http_port: i64,

    // ---- cluster ---------------------------------------------------------------------------
    /// TCP address of an nsqlookupd to register with (repeatable).
    #[arg(long = "lookupd-tcp-address", value_name = "ADDR", action = ArgAction::Append)]
    pub lookupd_tcp_addresses: Vec<String>,

    /// nsq-rs (replicated topics): this node's raft listener, HOST:PORT, which the other
    /// members dial too. Empty (the default): no replication, every topic is as in NSQ.
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "",
        hide_default_value = true
    )]
    pub raft_address: String,

    /// nsq-rs: another member of the replication cluster as ID@HOST:PORT, ID being its
    /// --node-id (repeatable, or comma-separated).
    #[arg(long = "raft-peers", value_name = "ID@HOST:PORT", action = ArgAction::Append, value_delimiter = ',')]
    pub raft_peers: Vec<String>,

    /// Auth server to ask about client secrets: host:port or a full URL (repeatable).
    #[arg(long = "auth-http-address", value_name = "ADDR", action = ArgAction::Append)]
    pub auth_http_addresses: Vec<String>,

    /// HTTP method for auth server queries: get or post.
    #[arg(long, value_name = "METHOD", default_value = "get")]
    pub auth_http_request_method: String,

    /// Connect timeout for outgoing HTTP requests (auth server).
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "2s")]
    pub http_client_connect_timeout: Duration,

    /// Overall timeout for outgoing HTTP requests (auth server).
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "5s")]
    pub http_client_request_timeout: Duration,

    /// Region this node runs in (for the topology-aware-consumption experiment).
    #[arg(
        long,
        value_name = "REGION",
        default_value = "",
        hide_default_value = true
    )]
    pub topology_region: String,

    /// Zone this node runs in (for the topology-aware-consumption experiment).
    #[arg(
        long,
        value_name = "ZONE",
        default_value = "",
        hide_default_value = true
    )]
    pub topology_zone: String,

    // ---- disk queue ------------------------------------------------------------------------
    /// Directory for queue files and metadata (empty: the working directory).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "",
        hide_default_value = true
    )]
    pub data_path: String,

    /// Messages kept in memory per topic and per channel before spilling to disk.
    #[arg(long, value_name = "N", value_parser = nsq_cli::parse_go_int, default_value_t = 10_000)]
    pub mem_queue_size: i64,

    /// nsq-rs: at a clean stop, the most bytes of messages that are only in topic logs to
    /// also write to go-diskqueue files (so Go nsqd can take the directory over); beyond it
    /// they stay only in the logs and `--export-go-data` hands the directory over later. 0
    /// never exports them at a stop; -1 always does.
    #[arg(long, value_name = "BYTES", value_parser = nsq_cli::parse_go_int, default_value_t = 1 << 30, allow_negative_numbers = true)]
    pub export_go_data_max_bytes: i64,

    /// Size at which a queue file is closed and a new one started, in bytes.
    #[arg(long, value_name = "BYTES", value_parser = nsq_cli::parse_go_int, default_value_t = 104_857_600)]
    pub max_bytes_per_file: i64,

    /// Queue operations between two fsyncs.
    #[arg(long, value_name = "N", value_parser = nsq_cli::parse_go_int, default_value_t = 2500)]
    pub sync_every: i64,

    /// Longest time between two fsyncs of a busy queue.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "2s")]
    pub sync_timeout: Duration,

    /// Accepted for compatibility; no effect (nsq-rs uses per-channel timers).
    #[arg(long, value_name = "N", value_parser = nsq_cli::parse_go_int, default_value_t = 4)]
    pub queue_scan_worker_pool_max: i64,

    /// Accepted for compatibility; no effect (nsq-rs uses per-channel timers).
    #[arg(long, value_name = "N", value_parser = nsq_cli::parse_go_int, default_value_t = 20)]
    pub queue_scan_selection_count: i64,

    // ---- messages and commands -------------------------------------------------------------
    /// Time a client has to finish a message before it is requeued, unless it asks otherwise.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "1m0s")]
    pub msg_timeout: Duration,

    /// Upper bound for a client's message timeout (and for TOUCH).
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "15m0s")]
    pub max_msg_timeout: Duration,

    /// Largest message body accepted, in bytes.
    #[arg(long, value_name = "BYTES", value_parser = nsq_cli::parse_go_int, default_value_t = 1_048_576)]
    pub max_msg_size: i64,

    /// Largest command body accepted (MPUB, IDENTIFY, AUTH), in bytes.
    #[arg(long, value_name = "BYTES", value_parser = nsq_cli::parse_go_int, default_value_t = 5_242_880)]
    pub max_body_size: i64,

    /// Upper bound for REQ and DPUB delays.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "1h0m0s")]
    pub max_req_timeout: Duration,

    // ---- client-negotiable limits ----------------------------------------------------------
    /// Upper bound for the heartbeat interval a client may ask for.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "1m0s")]
    pub max_heartbeat_interval: Duration,

    /// Upper bound for a client's RDY count.
    #[arg(long, value_name = "N", value_parser = nsq_cli::parse_go_int, default_value_t = 2500)]
    pub max_rdy_count: i64,

    /// Upper bound for the output buffer size a client may ask for, in bytes.
    #[arg(long, value_name = "BYTES", value_parser = nsq_cli::parse_go_int, default_value_t = 65_536)]
    pub max_output_buffer_size: i64,

    /// Upper bound for the output flush interval a client may ask for.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "30s")]
    pub max_output_buffer_timeout: Duration,

    /// Lower bound for the output flush interval a client may ask for.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "25ms")]
    pub min_output_buffer_timeout: Duration,

    /// Output flush interval for clients that do not ask for one.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "250ms")]
    pub output_buffer_timeout: Duration,

    /// Most consumers a channel may have on this node (0: no limit).
    #[arg(long, value_name = "N", value_parser = nsq_cli::parse_go_int, default_value_t = 0)]
    pub max_channel_consumers: i64,

    // ---- statsd ----------------------------------------------------------------------------
    /// UDP host:port of a statsd server to push metrics to (empty: off).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "",
        hide_default_value = true
    )]
    pub statsd_address: String,

    /// Prefix for statsd keys; %s becomes this node's host and port.
    #[arg(long, value_name = "PREFIX", default_value = "nsq.%s")]
    pub statsd_prefix: String,

    /// Time between two statsd pushes.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "1m0s")]
    pub statsd_interval: Duration,

    /// Also push process memory statistics to statsd.
    #[arg(long, go_bool = true)]
    pub statsd_mem_stats: bool,

    /// Largest statsd UDP packet, in bytes.
    #[arg(long, value_name = "BYTES", value_parser = nsq_cli::parse_go_int, default_value_t = 508)]
    pub statsd_udp_packet_size: i64,

    /// Leave ephemeral topics and channels out of statsd.
    #[arg(long, go_bool = false)]
    pub statsd_exclude_ephemeral: bool,

    // ---- end-to-end latency ----------------------------------------------------------------
    /// Percentile of message processing time to track, in (0,1]; repeatable or
    /// comma-separated (e.g. 1.0,0.99,0.95).
    #[arg(
        long = "e2e-processing-latency-percentile",
        value_name = "QUANTILE",
        action = ArgAction::Append,
        value_delimiter = ','
    )]
    pub e2e_processing_latency_percentiles: Vec<f64>,

    /// Time window the latency percentiles are computed over.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "10m0s")]
    pub e2e_processing_latency_window_time: Duration,

    // ---- TLS -------------------------------------------------------------------------------
    /// Certificate file (PEM) for TLS.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_cert: String,

    /// Private key file (PEM) for TLS.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_key: String,

    /// Client certificate policy: require or require-verify.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_client_auth_policy: String,

    /// Certificate authority file (PEM) for verifying clients and the auth server.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "",
        hide_default_value = true
    )]
    pub tls_root_ca_file: String,

    /// Require TLS from clients: true, false, or tcp-https (TCP needs TLS, plain HTTP stays).
    #[arg(
        long,
        value_name = "WHEN",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false"
    )]
    pub tls_required: TlsRequired,

    /// Oldest TLS version accepted: tls1.0, tls1.1, tls1.2 or tls1.3.
    #[arg(long, value_name = "VERSION", value_parser = parse_tls_min_version, default_value = "tls1.0")]
    pub tls_min_version: String,

    // ---- compression -----------------------------------------------------------------------
    /// Let clients negotiate deflate compression.
    #[arg(long, go_bool = true)]
    pub deflate: bool,

    /// Highest deflate level a client may ask for, 1-9 (higher costs more CPU).
    #[arg(long, value_name = "LEVEL", value_parser = nsq_cli::parse_go_int, default_value_t = 6)]
    pub max_deflate_level: i64,

    /// Let clients negotiate snappy compression.
    #[arg(long, go_bool = true)]
    pub snappy: bool,

    // ---- experiments -----------------------------------------------------------------------
    /// Turn on an experimental feature (repeatable): topology-aware-consumption.
    #[arg(long = "enable-experiment", value_name = "NAME", action = ArgAction::Append)]
    pub enable_experiments: Vec<String>,
}

nsq_cli::daemon_options!(
    Options,
    "nsqd",
    renames = CONFIG_RENAMES,
    cli_only = CLI_ONLY
);

impl Options {
    /// `--raft-peers` as id → address, checked: each `ID@HOST:PORT` well formed, ids distinct
    /// and not this node's `--node-id`, and only with `--raft-address`.
    pub fn raft_peer_map(&self) -> Result<std::collections::BTreeMap<u64, String>, String> {
        let mut out = std::collections::BTreeMap::new();
        if self.raft_address.is_empty() {
            if !self.raft_peers.is_empty() {
                return Err("--raft-peers needs --raft-address".into());
            }
            return Ok(out);
        }
        if !host_port_ok(&self.raft_address) {
            return Err(format!(
                "--raft-address must be HOST:PORT, got {:?}",
                self.raft_address
            ));
        }
        for p in &self.raft_peers {
            let bad = || format!("--raft-peers entries are ID@HOST:PORT, got {p:?}");
            let (id, addr) = p.split_once('@').ok_or_else(bad)?;
            let id: u64 = id.parse().map_err(|_| bad())?;
            if !host_port_ok(addr) {
                return Err(bad());
            }
            if id == self.node_id as u64 {
                return Err(format!(
                    "--raft-peers names node {id}, which is this node's --node-id (each member needs its own)"
                ));
            }
            if out.insert(id, addr.to_string()).is_some() {
                return Err(format!("--raft-peers names node {id} twice"));
            }
        }
        Ok(out)
    }

    /// `--tls-required` as Go applies it: a client certificate policy implies `true`.
    pub fn effective_tls_required(&self) -> TlsRequired {
        if !self.tls_client_auth_policy.is_empty() && self.tls_required == TlsRequired::Off {
            TlsRequired::On
        } else {
            self.tls_required
        }
    }

    /// Checks the combinations Go's nsqd refuses to start with (plus values that cannot work,
    /// such as a negative queue size). Messages name the flag at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| Err(ConfigError::Invalid(message));
        if !(0..1024).contains(&self.node_id) {
            return invalid(format!("--node-id must be [0,1024), got {}", self.node_id));
        }
        if let Err(e) = self.raft_peer_map() {
            return invalid(e);
        }
        if !(1..=9).contains(&self.max_deflate_level) {
            return invalid(format!(
                "--max-deflate-level must be [1,9], got {}",
                self.max_deflate_level
            ));
        }
        if !matches!(
            self.tls_client_auth_policy.as_str(),
            "" | "require" | "require-verify"
        ) {
            return invalid(format!(
                "--tls-client-auth-policy must be 'require' or 'require-verify', got {:?}",
                self.tls_client_auth_policy
            ));
        }
        match self.tls_min_version.as_str() {
            "" | "tls1.0" | "tls1.1" | "tls1.2" | "tls1.3" => {}
            "ssl3.0" => {
                return invalid(
                    "--tls-min-version=ssl3.0 is not supported; use tls1.0 or later".to_owned(),
                )
            }
            other => return invalid(format!("--tls-min-version: unknown TLS version {other:?}")),
        }
        if self.tls_cert.is_empty() != self.tls_key.is_empty() {
            return invalid("--tls-cert and --tls-key must be given together".to_owned());
        }
        if self.effective_tls_required() != TlsRequired::Off && self.tls_cert.is_empty() {
            return invalid(
                "cannot require TLS client connections without TLS key and cert".to_owned(),
            );
        }
        if !matches!(self.auth_http_request_method.as_str(), "get" | "post") {
            return invalid(format!(
                "--auth-http-request-method must be 'get' or 'post', got {:?}",
                self.auth_http_request_method
            ));
        }
        for &p in &self.e2e_processing_latency_percentiles {
            if !(p > 0.0 && p <= 1.0) {
                return invalid(format!(
                    "invalid --e2e-processing-latency-percentile {p}: must be in (0,1]"
                ));
            }
        }
        for e in &self.enable_experiments {
            if !EXPERIMENTS.contains(&e.as_str()) {
                return invalid(format!(
                    "--enable-experiment: unknown experiment {e:?} (valid: {})",
                    EXPERIMENTS.join(", ")
                ));
            }
        }
        if !self.statsd_address.is_empty() && self.statsd_interval.is_zero() {
            // Go's ticker panics at start; refuse instead.
            return invalid("--statsd-interval must be > 0 with --statsd-address".to_owned());
        }
        if self.mem_queue_size < 0 {
            return invalid(format!(
                "--mem-queue-size must be >= 0, got {}",
                self.mem_queue_size
            ));
        }
        for (flag, value) in [
            ("--max-msg-size", self.max_msg_size),
            ("--max-body-size", self.max_body_size),
            ("--max-bytes-per-file", self.max_bytes_per_file),
        ] {
            if value <= 0 {
                return invalid(format!("{flag} must be > 0, got {value}"));
            }
        }
        for (flag, value) in [
            ("--broadcast-tcp-port", self.broadcast_tcp_port),
            ("--broadcast-http-port", self.broadcast_http_port),
        ] {
            if !(0..=65535).contains(&value) {
                return invalid(format!("{flag} must be [0,65535], got {value}"));
            }
        }
        Ok(())
    }

    /// `--enable-experiment=topology-aware-consumption` (Go's `HasExperiment`; the flag may be
    /// given more than once, or as the TOML list `enable_experiment`): channels give messages
    /// to consumers of this node's `--topology-zone` first, then of its `--topology-region`,
    /// then anyone (see `state::channel::ChannelState::set_locality`). Go added it after
    /// v1.3.0 (nsqio/nsq 1cd62978, merged in #1301); 1.3.0 itself has no experiments.
    pub fn topology_aware_consumption(&self) -> bool {
        self.enable_experiments
            .iter()
            .any(|e| e == "topology-aware-consumption")
    }

    /// Notes about options that were set but configure something nsq-rs does not do yet, for
    /// `main` to log as warnings. Empty when only supported options differ from the defaults.
    pub fn unsupported_in_use(&self) -> Vec<String> {
        let d = Options::default();
        let mut notes = Vec::new();

        // Topology-aware consumption is built; these notes are about settings that make it
        // do nothing (Go accepts them silently).
        let mut topology = Vec::new();
        if !self.topology_region.is_empty() {
            topology.push("--topology-region");
        }
        if !self.topology_zone.is_empty() {
            topology.push("--topology-zone");
        }
        if self.topology_aware_consumption() && topology.is_empty() {
            notes.push(
                "--enable-experiment=topology-aware-consumption without --topology-zone or \
                 --topology-region: no consumer is local, delivery is unchanged"
                    .to_owned(),
            );
        }
        if !self.topology_aware_consumption() && !topology.is_empty() {
            notes.push(format!(
                "{}: only reported (IDENTIFY, /info, lookupd); delivery prefers local \
                 consumers only with --enable-experiment=topology-aware-consumption",
                topology.join(", ")
            ));
        }

        let mut scan = Vec::new();
        if self.queue_scan_worker_pool_max != d.queue_scan_worker_pool_max {
            scan.push("--queue-scan-worker-pool-max");
        }
        if self.queue_scan_selection_count != d.queue_scan_selection_count {
            scan.push("--queue-scan-selection-count");
        }
        if !scan.is_empty() {
            notes.push(format!(
                "{}: accepted for compatibility but has no effect; nsq-rs times out in-flight \
                 and deferred messages with per-channel timers instead of a scan loop",
                scan.join(", ")
            ));
        }

        notes
    }

    /// The JSON text `GET /config/<name>` answers with, or `None` for an unknown name (Go:
    /// 400 `INVALID_OPTION`).
    ///
    /// `name` is a config file key: the flag name with `_` for `-`, or one of the renamed keys
    /// (`id`, `nsqlookupd_tcp_addresses`, `auth_http_addresses`,
    /// `e2e_processing_latency_percentiles`, `enable_experiment`). Values are encoded the way
    /// Go marshals its `Options` fields: durations as integer nanoseconds, `log_level`,
    /// `tls_required` and `tls_min_version` as Go's numeric values. Command-line-only flags
    /// (`config`, `version`, `verbose`, `worker_id`) are not options and give `None`.
    pub fn http_config_value(&self, name: &str) -> Option<String> {
        let value = match name {
            "id" => json!(self.node_id),
            "log_level" => json!(self.common.log_level.go_value()),
            "log_prefix" => json!(self.common.log_prefix),
            "tcp_address" => json!(self.tcp_address),
            "http_address" => json!(self.http_address),
            "https_address" => json!(self.https_address),
            "metrics_without_token" => json!(self.metrics_without_token),
            "broadcast_address" => json!(self.broadcast_address),
            "broadcast_tcp_port" => json!(self.broadcast_tcp_port),
            "broadcast_http_port" => json!(self.broadcast_http_port),
            "nsqlookupd_tcp_addresses" => json!(self.lookupd_tcp_addresses),
            "auth_http_addresses" => json!(self.auth_http_addresses),
            "auth_http_request_method" => json!(self.auth_http_request_method),
            "http_client_connect_timeout" => nanos(self.http_client_connect_timeout),
            "http_client_request_timeout" => nanos(self.http_client_request_timeout),
            "topology_region" => json!(self.topology_region),
            "topology_zone" => json!(self.topology_zone),
            "data_path" => json!(self.data_path),
            "mem_queue_size" => json!(self.mem_queue_size),
            "export_go_data_max_bytes" => json!(self.export_go_data_max_bytes),
            "raft_address" => json!(self.raft_address),
            "raft_peers" => json!(self.raft_peers),
            "max_bytes_per_file" => json!(self.max_bytes_per_file),
            "sync_every" => json!(self.sync_every),
            "sync_timeout" => nanos(self.sync_timeout),
            "queue_scan_worker_pool_max" => json!(self.queue_scan_worker_pool_max),
            "queue_scan_selection_count" => json!(self.queue_scan_selection_count),
            "msg_timeout" => nanos(self.msg_timeout),
            "max_msg_timeout" => nanos(self.max_msg_timeout),
            "max_msg_size" => json!(self.max_msg_size),
            "max_body_size" => json!(self.max_body_size),
            "max_req_timeout" => nanos(self.max_req_timeout),
            "max_heartbeat_interval" => nanos(self.max_heartbeat_interval),
            "max_rdy_count" => json!(self.max_rdy_count),
            "max_output_buffer_size" => json!(self.max_output_buffer_size),
            "max_output_buffer_timeout" => nanos(self.max_output_buffer_timeout),
            "min_output_buffer_timeout" => nanos(self.min_output_buffer_timeout),
            "output_buffer_timeout" => nanos(self.output_buffer_timeout),
            "max_channel_consumers" => json!(self.max_channel_consumers),
            "statsd_address" => json!(self.statsd_address),
            "statsd_prefix" => json!(self.statsd_prefix),
            "statsd_interval" => nanos(self.statsd_interval),
            "statsd_mem_stats" => json!(self.statsd_mem_stats),
            "statsd_udp_packet_size" => json!(self.statsd_udp_packet_size),
            "statsd_exclude_ephemeral" => json!(self.statsd_exclude_ephemeral),
            "e2e_processing_latency_window_time" => nanos(self.e2e_processing_latency_window_time),
            "e2e_processing_latency_percentiles" => Value::Array(
                self.e2e_processing_latency_percentiles
                    .iter()
                    .map(|&f| go_float(f))
                    .collect(),
            ),
            "tls_cert" => json!(self.tls_cert),
            "tls_key" => json!(self.tls_key),
            "tls_client_auth_policy" => json!(self.tls_client_auth_policy),
            "tls_root_ca_file" => json!(self.tls_root_ca_file),
            "tls_required" => json!(self.tls_required.go_value()),
            "tls_min_version" => json!(tls_version_number(&self.tls_min_version)),
            "deflate" => json!(self.deflate),
            "max_deflate_level" => json!(self.max_deflate_level),
            "snappy" => json!(self.snappy),
            "enable_experiment" => json!(self.enable_experiments),
            _ => return None,
        };
        Some(value.to_string())
    }

    /// Applies `PUT /config/<name>` with request body `body`, for the two options Go lets
    /// operators change at runtime: `nsqlookupd_tcp_addresses` (a JSON array of strings) and
    /// `log_level` (a bare level name).
    pub fn set_http_config_value(&mut self, name: &str, body: &[u8]) -> Result<(), SetConfigError> {
        match name {
            "nsqlookupd_tcp_addresses" => {
                self.lookupd_tcp_addresses =
                    serde_json::from_slice(body).map_err(|_| SetConfigError::InvalidValue)?;
            }
            "log_level" => {
                let text = std::str::from_utf8(body).map_err(|_| SetConfigError::InvalidValue)?;
                self.common.log_level = text.parse().map_err(|_| SetConfigError::InvalidValue)?;
            }
            _ => return Err(SetConfigError::InvalidOption),
        }
        Ok(())
    }
}

/// Why `PUT /config/<name>` was refused; the `Display` text is Go's HTTP error message
/// (status 400 for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetConfigError {
    /// The option does not exist or cannot be changed at runtime.
    #[error("INVALID_OPTION")]
    InvalidOption,
    /// The body is not a valid value for the option.
    #[error("INVALID_VALUE")]
    InvalidValue,
}

/// A duration as Go's JSON encoder writes a `time.Duration`: int64 nanoseconds.
fn nanos(d: Duration) -> Value {
    json!(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A float as Go's JSON encoder writes it: integral values without a fraction (`1`, not `1.0`).
fn go_float(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        // Exact: integral and well within i64's range.
        json!(f as i64)
    } else {
        json!(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io::Write;

    fn parse(args: &[&str]) -> Options {
        let argv = std::iter::once("nsqd").chain(args.iter().copied());
        match Options::parse_from(argv) {
            Ok(o) => o,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn parse_err(args: &[&str]) -> ConfigError {
        let argv = std::iter::once("nsqd").chain(args.iter().copied());
        match Options::parse_from(argv) {
            Ok(o) => panic!("{args:?} parsed: {o:?}"),
            Err(e) => e,
        }
    }

    fn config_file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults_match_go_nsqd_help() {
        let o = parse(&[]);
        assert_eq!(o.common.config, None);
        assert!(!o.common.version);
        assert_eq!(o.common.log_level, LogLevel::Info);
        assert_eq!(o.common.log_prefix, "[nsqd] ");
        assert!(!o.common.verbose);
        assert_eq!(o.node_id, node_id_for_hostname(&hostname()));
        assert!(!o.worker_id);
        assert_eq!(o.tcp_address, "0.0.0.0:4150");
        assert_eq!(o.http_address, "0.0.0.0:4151");
        assert_eq!(o.https_address, "0.0.0.0:4152");
        assert_eq!(o.broadcast_address, hostname());
        assert_eq!(o.broadcast_tcp_port, 0);
        assert_eq!(o.broadcast_http_port, 0);
        assert!(o.lookupd_tcp_addresses.is_empty());
        assert!(o.auth_http_addresses.is_empty());
        assert_eq!(o.auth_http_request_method, "get");
        assert_eq!(o.http_client_connect_timeout, secs(2));
        assert_eq!(o.http_client_request_timeout, secs(5));
        assert_eq!(o.topology_region, "");
        assert_eq!(o.topology_zone, "");
        assert_eq!(o.data_path, "");
        assert_eq!(o.mem_queue_size, 10_000);
        assert_eq!(o.max_bytes_per_file, 104_857_600);
        assert_eq!(o.sync_every, 2500);
        assert_eq!(o.sync_timeout, secs(2));
        assert_eq!(o.queue_scan_worker_pool_max, 4);
        assert_eq!(o.queue_scan_selection_count, 20);
        assert_eq!(o.msg_timeout, secs(60));
        assert_eq!(o.max_msg_timeout, secs(15 * 60));
        assert_eq!(o.max_msg_size, 1_048_576);
        assert_eq!(o.max_body_size, 5_242_880);
        assert_eq!(o.max_req_timeout, secs(3600));
        assert_eq!(o.max_heartbeat_interval, secs(60));
        assert_eq!(o.max_rdy_count, 2500);
        assert_eq!(o.max_output_buffer_size, 65_536);
        assert_eq!(o.max_output_buffer_timeout, secs(30));
        assert_eq!(o.min_output_buffer_timeout, Duration::from_millis(25));
        assert_eq!(o.output_buffer_timeout, Duration::from_millis(250));
        assert_eq!(o.max_channel_consumers, 0);
        assert_eq!(o.statsd_address, "");
        assert_eq!(o.statsd_prefix, "nsq.%s");
        assert_eq!(o.statsd_interval, secs(60));
        assert!(o.statsd_mem_stats);
        assert_eq!(o.statsd_udp_packet_size, 508);
        assert!(!o.statsd_exclude_ephemeral);
        assert!(o.e2e_processing_latency_percentiles.is_empty());
        assert_eq!(o.e2e_processing_latency_window_time, secs(600));
        assert_eq!(o.tls_cert, "");
        assert_eq!(o.tls_key, "");
        assert_eq!(o.tls_client_auth_policy, "");
        assert_eq!(o.tls_root_ca_file, "");
        assert_eq!(o.tls_required, TlsRequired::Off);
        assert_eq!(o.tls_min_version, "tls1.0");
        assert!(o.deflate);
        assert_eq!(o.max_deflate_level, 6);
        assert!(o.snappy);
        assert!(o.enable_experiments.is_empty());
        assert!(o.common.config_warnings.is_empty());
        assert_eq!(o, Options::default());
        o.validate().unwrap();
        assert!(o.unsupported_in_use().is_empty());
    }

    #[test]
    fn node_id_is_go_hash_of_hostname() {
        // From Go's `nsqd --help` on a host named "vm".
        assert_eq!(node_id_for_hostname("vm"), 617);
        assert!((0..1024).contains(&node_id_for_hostname("some.long.example.host.name")));
    }

    #[test]
    fn every_go_flag_exists() {
        let help = Options::command().render_long_help().to_string();
        for flag in [
            "auth-http-address",
            "auth-http-request-method",
            "broadcast-address",
            "broadcast-http-port",
            "broadcast-tcp-port",
            "config",
            "data-path",
            "deflate",
            "e2e-processing-latency-percentile",
            "e2e-processing-latency-window-time",
            "enable-experiment",
            "http-address",
            "http-client-connect-timeout",
            "http-client-request-timeout",
            "https-address",
            "log-level",
            "log-prefix",
            "lookupd-tcp-address",
            "max-body-size",
            "max-bytes-per-file",
            "max-channel-consumers",
            "max-deflate-level",
            "max-heartbeat-interval",
            "max-msg-size",
            "max-msg-timeout",
            "max-output-buffer-size",
            "max-output-buffer-timeout",
            "max-rdy-count",
            "max-req-timeout",
            "mem-queue-size",
            "min-output-buffer-timeout",
            "msg-timeout",
            "node-id",
            "output-buffer-timeout",
            "queue-scan-selection-count",
            "queue-scan-worker-pool-max",
            "snappy",
            "statsd-address",
            "statsd-exclude-ephemeral",
            "statsd-interval",
            "statsd-mem-stats",
            "statsd-prefix",
            "statsd-udp-packet-size",
            "sync-every",
            "sync-timeout",
            "tcp-address",
            "tls-cert",
            "tls-client-auth-policy",
            "tls-key",
            "tls-min-version",
            "tls-required",
            "tls-root-ca-file",
            "topology-region",
            "topology-zone",
            "verbose",
            "version",
            "worker-id",
        ] {
            assert!(help.contains(&format!("--{flag}")), "--{flag} missing");
        }
    }

    #[test]
    fn go_flag_spellings() {
        assert_eq!(parse(&["-mem-queue-size", "5"]).mem_queue_size, 5);
        assert_eq!(parse(&["-mem-queue-size=5"]).mem_queue_size, 5);
        assert_eq!(parse(&["--mem-queue-size", "5"]).mem_queue_size, 5);
        assert_eq!(parse(&["--mem-queue-size=5"]).mem_queue_size, 5);
        assert_eq!(parse(&["--mem-queue-size=0x10"]).mem_queue_size, 16);
        assert!(!parse(&["-snappy=false"]).snappy);
        assert!(!parse(&["--snappy=0", "--deflate=F"]).deflate);
        assert!(parse(&["--deflate"]).deflate);
        assert!(parse(&["-deflate=false", "-deflate"]).deflate);
        assert!(parse(&["--verbose"]).common.verbose);
        assert!(parse(&["-worker-id"]).worker_id);
        assert!(parse(&["-version"]).common.version);
        assert!(parse(&["--statsd-exclude-ephemeral=true"]).statsd_exclude_ephemeral);
        assert!(!parse(&["--statsd-mem-stats=false"]).statsd_mem_stats);
        // A Go bool flag never takes the next argument as its value.
        assert!(matches!(
            parse_err(&["--snappy", "false"]),
            ConfigError::Clap(_)
        ));
        // Last one wins for scalar flags, as in Go.
        assert_eq!(
            parse(&["--msg-timeout=1s", "-msg-timeout", "2m"]).msg_timeout,
            secs(120)
        );
        assert_eq!(parse(&["--node-id=1023"]).node_id, 1023);
    }

    #[test]
    fn special_values() {
        assert_eq!(
            parse(&["--log-level=DEBUG"]).common.log_level,
            LogLevel::Debug
        );
        assert_eq!(
            parse(&["-log-level", "Warn"]).common.log_level,
            LogLevel::Warn
        );
        assert!(matches!(
            parse_err(&["--log-level=verbose"]),
            ConfigError::Clap(_)
        ));
        assert_eq!(parse(&["--tls-required"]).tls_required, TlsRequired::On);
        assert_eq!(
            parse(&["--tls-required=TCP-HTTPS"]).tls_required,
            TlsRequired::TcpHttps
        );
        assert_eq!(parse(&["--tls-required=f"]).tls_required, TlsRequired::Off);
        assert!(matches!(
            parse_err(&["--tls-required=maybe"]),
            ConfigError::Clap(_)
        ));
        assert_eq!(
            parse(&["--tls-min-version=TLS1.2"]).tls_min_version,
            "tls1.2"
        );
        assert_eq!(parse(&["--tls-min-version="]).tls_min_version, "tls1.0");
        assert!(matches!(
            parse_err(&["--tls-min-version=tls2"]),
            ConfigError::Clap(_)
        ));
        assert_eq!(
            parse(&[
                "--e2e-processing-latency-percentile=1.0,0.99",
                "-e2e-processing-latency-percentile",
                "0.5"
            ])
            .e2e_processing_latency_percentiles,
            [1.0, 0.99, 0.5]
        );
        assert_eq!(
            parse(&[
                "--lookupd-tcp-address=a:4160",
                "-lookupd-tcp-address",
                "b:4160"
            ])
            .lookupd_tcp_addresses,
            ["a:4160", "b:4160"]
        );
        assert!(matches!(
            parse_err(&["--msg-timeout=60"]),
            ConfigError::Clap(_)
        ));
    }

    #[test]
    fn help_is_a_clap_error() {
        for args in [&["--help"][..], &["-help"], &["-h"]] {
            match parse_err(args) {
                ConfigError::Clap(e) => {
                    assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp)
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn config_file_and_precedence() {
        let f = config_file(
            r#"
            id = 12
            mem_queue_size = 77
            msg_timeout = 5000
            max_req_timeout = "2h"
            snappy = false
            log_level = "debug"
            tls_required = "tcp-https"
            nsqlookupd_tcp_addresses = ["c1:4160", "c2:4160"]
            auth_http_addresses = ["http://auth"]
            e2e_processing_latency_percentiles = [0.99, 1.0]
            enable_experiment = ["topology-aware-consumption"]
            bogus_key = 1
            verbose = "not a bool"
            "#,
        );
        let path = f.path().to_str().unwrap();

        let o = parse(&["--config", path]);
        assert_eq!(o.common.config.as_deref(), Some(f.path()));
        assert_eq!(o.node_id, 12);
        assert_eq!(o.mem_queue_size, 77);
        assert_eq!(o.msg_timeout, secs(5));
        assert_eq!(o.max_req_timeout, secs(7200));
        assert!(!o.snappy);
        assert_eq!(o.common.log_level, LogLevel::Debug);
        assert_eq!(o.tls_required, TlsRequired::TcpHttps);
        assert_eq!(o.lookupd_tcp_addresses, ["c1:4160", "c2:4160"]);
        assert_eq!(o.auth_http_addresses, ["http://auth"]);
        assert_eq!(o.e2e_processing_latency_percentiles, [0.99, 1.0]);
        assert_eq!(o.enable_experiments, ["topology-aware-consumption"]);
        assert!(!o.common.verbose);
        assert_eq!(
            o.common.config_warnings.len(),
            2,
            "{:?}",
            o.common.config_warnings
        );
        // Untouched options keep their defaults.
        assert_eq!(o.max_rdy_count, 2500);

        // The command line wins, for scalars and repeatable flags alike, in any position.
        let o = parse(&[
            "-mem-queue-size=1",
            "-config",
            path,
            "--snappy",
            "--lookupd-tcp-address=u:4160",
            "--node-id=3",
        ]);
        assert_eq!(o.mem_queue_size, 1);
        assert!(o.snappy);
        assert_eq!(o.lookupd_tcp_addresses, ["u:4160"]);
        assert_eq!(o.node_id, 3);
        assert_eq!(o.msg_timeout, secs(5));
        assert_eq!(o.auth_http_addresses, ["http://auth"]);
    }

    #[test]
    fn config_file_tls_required_as_bool() {
        let f = config_file("tls_required = true\ntls_min_version = 'tls1.2'");
        let o = parse(&["--config", f.path().to_str().unwrap()]);
        assert_eq!(o.tls_required, TlsRequired::On);
        assert_eq!(o.tls_min_version, "tls1.2");
        let o = parse(&[
            "--config",
            f.path().to_str().unwrap(),
            "--tls-required=false",
        ]);
        assert_eq!(o.tls_required, TlsRequired::Off);
    }

    #[test]
    fn config_file_errors() {
        match parse_err(&["--config=/nonexistent/nsqd.toml"]) {
            ConfigError::ReadConfig { path, .. } => {
                assert_eq!(path, std::path::PathBuf::from("/nonexistent/nsqd.toml"))
            }
            other => panic!("{other:?}"),
        }
        let f = config_file("mem_queue_size = ");
        let path = f.path().to_str().unwrap();
        assert!(matches!(
            parse_err(&["--config", path]),
            ConfigError::ConfigFile { .. }
        ));
        let f = config_file("mem_queue_size = 'lots'");
        let path = f.path().to_str().unwrap();
        let err = parse_err(&["--config", path]);
        assert!(matches!(err, ConfigError::ConfigValue { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("--mem-queue-size") && text.contains("lots"),
            "{text}"
        );
        // ... unless the command line overrides the bad value, as in Go.
        assert_eq!(
            parse(&["--config", path, "--mem-queue-size=3"]).mem_queue_size,
            3
        );
        // --version does not read the config file.
        assert!(
            parse(&["--config=/nonexistent/nsqd.toml", "--version"])
                .common
                .version
        );
    }

    #[test]
    fn validation() {
        let ok = Options::default();
        ok.validate().unwrap();
        type Mutation = Box<dyn Fn(&mut Options)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("--node-id", Box::new(|o| o.node_id = 1024)),
            ("--node-id", Box::new(|o| o.node_id = -1)),
            ("--max-deflate-level", Box::new(|o| o.max_deflate_level = 0)),
            (
                "--max-deflate-level",
                Box::new(|o| o.max_deflate_level = 10),
            ),
            (
                "--tls-client-auth-policy",
                Box::new(|o| {
                    o.tls_cert = "c".into();
                    o.tls_key = "k".into();
                    o.tls_client_auth_policy = "always".into();
                }),
            ),
            ("ssl3.0", Box::new(|o| o.tls_min_version = "ssl3.0".into())),
            (
                "--tls-min-version",
                Box::new(|o| o.tls_min_version = "tls9".into()),
            ),
            ("--tls-key", Box::new(|o| o.tls_cert = "c".into())),
            (
                "without TLS",
                Box::new(|o| o.tls_required = TlsRequired::On),
            ),
            (
                "without TLS",
                Box::new(|o| o.tls_client_auth_policy = "require".into()),
            ),
            (
                "percentile",
                Box::new(|o| o.e2e_processing_latency_percentiles = vec![0.0]),
            ),
            (
                "percentile",
                Box::new(|o| o.e2e_processing_latency_percentiles = vec![1.5]),
            ),
            (
                "percentile",
                Box::new(|o| o.e2e_processing_latency_percentiles = vec![f64::NAN]),
            ),
            ("--mem-queue-size", Box::new(|o| o.mem_queue_size = -1)),
            ("--max-msg-size", Box::new(|o| o.max_msg_size = 0)),
            ("--max-body-size", Box::new(|o| o.max_body_size = -5)),
            (
                "--max-bytes-per-file",
                Box::new(|o| o.max_bytes_per_file = 0),
            ),
            (
                "--broadcast-tcp-port",
                Box::new(|o| o.broadcast_tcp_port = 70_000),
            ),
            (
                "--auth-http-request-method",
                Box::new(|o| o.auth_http_request_method = "put".into()),
            ),
            (
                "--enable-experiment",
                Box::new(|o| o.enable_experiments = vec!["warp-drive".into()]),
            ),
            (
                "--statsd-interval",
                Box::new(|o| {
                    o.statsd_address = "127.0.0.1:8125".into();
                    o.statsd_interval = Duration::ZERO;
                }),
            ),
        ];
        for (needle, mutate) in cases {
            let mut o = ok.clone();
            mutate(&mut o);
            match o.validate() {
                Err(ConfigError::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("expected an error about {needle}, got {other:?}"),
            }
        }
        // Accepted edge values.
        let mut o = ok.clone();
        o.node_id = 0;
        o.max_deflate_level = 9;
        o.mem_queue_size = 0;
        o.e2e_processing_latency_percentiles = vec![1.0, 0.01];
        o.tls_cert = "c".into();
        o.tls_key = "k".into();
        o.tls_required = TlsRequired::TcpHttps;
        o.tls_client_auth_policy = "require-verify".into();
        o.tls_min_version = "tls1.3".into();
        o.auth_http_request_method = "post".into();
        // A zero statsd interval only matters when statsd is on.
        o.statsd_interval = Duration::ZERO;
        o.validate().unwrap();
        assert_eq!(o.effective_tls_required(), TlsRequired::TcpHttps);
        o.tls_required = TlsRequired::Off;
        assert_eq!(o.effective_tls_required(), TlsRequired::On);
    }

    #[test]
    fn unsupported_features_are_reported() {
        let o = parse(&[
            "--lookupd-tcp-address=l:4160",
            "--tls-cert=c",
            "--tls-key=k",
            "--auth-http-address=a",
            "--statsd-address=s:8125",
            "--e2e-processing-latency-percentile=0.9",
            "--enable-experiment=topology-aware-consumption",
            "--topology-zone=z",
            "--queue-scan-worker-pool-max=8",
            "--data-path=/var/lib/nsq",
            "--sync-every=10",
        ]);
        let notes = o.unsupported_in_use();
        let all = notes.join("\n");
        assert!(!all.contains("--lookupd-tcp-address"), "{all}");
        assert!(!all.contains("--tls-cert"), "TLS is supported: {all}");
        assert!(
            !all.contains("--auth-http-address"),
            "AUTH is supported: {all}"
        );
        assert!(
            !all.contains("--e2e-processing-latency-percentile"),
            "e2e latency is supported: {all}"
        );
        assert!(
            !all.contains("--statsd-address"),
            "statsd is supported: {all}"
        );
        for needle in ["--queue-scan-worker-pool-max", "no effect"] {
            assert!(all.contains(needle), "{needle} missing from:\n{all}");
        }
        // --data-path and --sync-every are in force (topic logs and go-diskqueue files), and so
        // is topology-aware consumption with a zone.
        assert!(!all.contains("--sync-every"), "{all}");
        assert!(!all.contains("--topology-zone"), "{all}");
        assert_eq!(notes.len(), 1, "{all}");
        assert!(o.topology_aware_consumption());
        // Topology settings that make the experiment do nothing are pointed out.
        let o = parse(&["--topology-zone=z"]);
        assert!(!o.topology_aware_consumption());
        let all = o.unsupported_in_use().join("\n");
        assert!(all.contains("--topology-zone: only reported"), "{all}");
        let o = parse(&["--enable-experiment", "topology-aware-consumption"]);
        let all = o.unsupported_in_use().join("\n");
        assert!(all.contains("no consumer is local"), "{all}");
        // Supported options do not produce notes.
        let o = parse(&["--mem-queue-size=1", "--snappy=false", "--msg-timeout=5s"]);
        assert!(o.unsupported_in_use().is_empty());
    }

    #[test]
    fn http_config_values_match_go_json() {
        let o = parse(&[
            "--node-id=7",
            "--lookupd-tcp-address=a:4160",
            "--e2e-processing-latency-percentile=1.0,0.99",
            "--log-prefix=[x] ",
        ]);
        let get = |name: &str| o.http_config_value(name);
        assert_eq!(get("id").as_deref(), Some("7"));
        assert_eq!(get("node_id"), None);
        assert_eq!(get("msg_timeout").as_deref(), Some("60000000000"));
        assert_eq!(
            get("min_output_buffer_timeout").as_deref(),
            Some("25000000")
        );
        assert_eq!(get("log_level").as_deref(), Some("2"));
        assert_eq!(get("log_prefix").as_deref(), Some("\"[x] \""));
        assert_eq!(
            get("nsqlookupd_tcp_addresses").as_deref(),
            Some("[\"a:4160\"]")
        );
        assert_eq!(get("auth_http_addresses").as_deref(), Some("[]"));
        assert_eq!(
            get("e2e_processing_latency_percentiles").as_deref(),
            Some("[1,0.99]")
        );
        assert_eq!(get("enable_experiment").as_deref(), Some("[]"));
        assert_eq!(get("snappy").as_deref(), Some("true"));
        assert_eq!(get("tls_required").as_deref(), Some("0"));
        assert_eq!(get("tls_min_version").as_deref(), Some("769"));
        assert_eq!(get("mem_queue_size").as_deref(), Some("10000"));
        for cli_only in [
            "config",
            "version",
            "verbose",
            "worker_id",
            "bogus",
            "http_api_token",
        ] {
            assert_eq!(get(cli_only), None, "{cli_only}");
        }
        // Every option with a config key has a /config answer.
        for arg in Options::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            // http-api-token: a secret, never served by GET /config.
            if [
                "config",
                "version",
                "verbose",
                "worker-id",
                "export-go-data",
                "http-api-token",
            ]
            .contains(&long)
            {
                continue;
            }
            let key = CONFIG_RENAMES
                .iter()
                .find(|(_, flag)| *flag == long)
                .map_or_else(|| long.replace('-', "_"), |(key, _)| (*key).to_owned());
            assert!(get(&key).is_some(), "/config/{key} missing");
        }
    }

    #[test]
    fn http_config_put() {
        let mut o = Options::default();
        o.set_http_config_value("nsqlookupd_tcp_addresses", br#"["x:4160","y:4160"]"#)
            .unwrap();
        assert_eq!(o.lookupd_tcp_addresses, ["x:4160", "y:4160"]);
        o.set_http_config_value("log_level", b"ERROR").unwrap();
        assert_eq!(o.common.log_level, LogLevel::Error);
        assert_eq!(
            o.set_http_config_value("log_level", b"loud"),
            Err(SetConfigError::InvalidValue)
        );
        assert_eq!(
            o.set_http_config_value("nsqlookupd_tcp_addresses", b"x"),
            Err(SetConfigError::InvalidValue)
        );
        assert_eq!(
            o.set_http_config_value("mem_queue_size", b"5"),
            Err(SetConfigError::InvalidOption)
        );
    }

    #[test]
    fn version_string_names_both_versions() {
        let v = Options::version_string();
        assert!(v.starts_with("nsqd v1.3.0 (nsq-rs "), "{v}");
    }
}
