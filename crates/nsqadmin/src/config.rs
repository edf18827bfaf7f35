//! nsqadmin's options: flags, config file and defaults.
//!
//! The command line is Go nsqadmin 1.3's (`apps/nsqadmin/main.go`): same flag names, same
//! defaults, same value syntaxes, and the same TOML `--config` keys (flag names with `_` for
//! `-`, except the repeatable `nsqlookupd_http_addresses`, `nsqd_http_addresses` and
//! `admin_users`). [`nsq_cli`] supplies the Go compatibility layer; resolution is
//! command line > config file > default.

use std::time::Duration;

use clap::{ArgAction, Parser};
use nsq_cli::{CommonArgs, GoBoolArg};

pub use nsq_cli::daemon::{hostname, LogLevel, LogLevelError};
/// Why options could not be loaded (shared by the daemons).
pub use nsq_cli::ConfigError;
/// The NSQ release whose interface nsq-rs implements.
pub use nsq_cli::NSQ_VERSION;

/// Config file keys that differ from their flag's name (Go's `cfg` tags).
const CONFIG_RENAMES: &[(&str, &str)] = &[
    ("nsqlookupd_http_addresses", "lookupd-http-address"),
    ("nsqd_http_addresses", "nsqd-http-address"),
    ("admin_users", "admin-user"),
];

/// Every nsqadmin option, named after its Go flag.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "nsqadmin",
    about = "nsqadmin (nsq-rs): web UI and JSON API for an NSQ cluster; compatible with NSQ 1.3",
    long_about = None,
    args_override_self = true,
    disable_version_flag = true,
    max_term_width = 100,
    mut_arg("log_prefix", |a| a.default_value("[nsqadmin] "))
)]
pub struct Options {
    /// `--config`, `--version`, `--log-level`, `--log-prefix`, `--verbose`.
    #[command(flatten)]
    pub common: CommonArgs,

    /// `<addr>:<port>` to listen on for HTTP clients (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4171")]
    pub http_address: String,

    /// URL base path: every page and API path is served below it.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub base_path: String,

    /// nsqlookupd HTTP address (repeatable).
    #[arg(long = "lookupd-http-address", value_name = "ADDR", action = ArgAction::Append)]
    pub lookupd_http_addresses: Vec<String>,

    /// nsqd HTTP address (repeatable).
    #[arg(long = "nsqd-http-address", value_name = "ADDR", action = ArgAction::Append)]
    pub nsqd_http_addresses: Vec<String>,

    /// Graphite HTTP address (not yet supported).
    #[arg(long, value_name = "URL", default_value = "")]
    pub graphite_url: String,

    /// Proxy HTTP requests to graphite (not yet supported).
    #[arg(long, go_bool = false)]
    pub proxy_graphite: bool,

    /// Prefix used for keys sent to statsd (%s for host replacement, must match nsqd).
    #[arg(long, value_name = "PREFIX", default_value = "nsq.%s")]
    pub statsd_prefix: String,

    /// The counter stats key formatting applied by the statsd implementation.
    #[arg(long, value_name = "FORMAT", default_value = "stats.counters.%s.count")]
    pub statsd_counter_format: String,

    /// The gauge stats key formatting applied by the statsd implementation.
    #[arg(long, value_name = "FORMAT", default_value = "stats.gauges.%s")]
    pub statsd_gauge_format: String,

    /// Time interval nsqd is configured to push to statsd (must match nsqd).
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "1m")]
    pub statsd_interval: Duration,

    /// HTTP endpoint (fully qualified) to which POST notifications of admin actions are sent.
    #[arg(long, value_name = "URL", default_value = "")]
    pub notification_http_endpoint: String,

    /// Timeout for HTTP connect.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "2s")]
    pub http_client_connect_timeout: Duration,

    /// Timeout for HTTP request.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "5s")]
    pub http_client_request_timeout: Duration,

    /// nsq-rs extension: sent as `Authorization: Bearer <token>` with every request to nsqd
    /// and nsqlookupd, for nsqds started with `--http-api-token` (lookupd ignores it).
    #[arg(
        long,
        value_name = "TOKEN",
        default_value = "",
        env = "NSQADMIN_HTTP_API_TOKEN",
        hide_env_values = true
    )]
    pub http_api_token: String,

    /// Configure the HTTP client to skip verification of TLS certificates.
    #[arg(long, go_bool = false)]
    pub http_client_tls_insecure_skip_verify: bool,

    /// Path to CA file for the HTTP client.
    #[arg(long, value_name = "FILE", default_value = "")]
    pub http_client_tls_root_ca_file: String,

    /// Path to certificate file for the HTTP client.
    #[arg(long, value_name = "FILE", default_value = "")]
    pub http_client_tls_cert: String,

    /// Path to key file for the HTTP client.
    #[arg(long, value_name = "FILE", default_value = "")]
    pub http_client_tls_key: String,

    /// A CIDR from which to allow HTTP requests to the /config endpoint.
    #[arg(long, value_name = "CIDR", default_value = "127.0.0.1/8")]
    pub allow_config_from_cidr: String,

    /// HTTP header to check for authenticated admin users.
    #[arg(long, value_name = "HEADER", default_value = "X-Forwarded-User")]
    pub acl_http_header: String,

    /// Admin user (repeatable); if given, only these users may perform privileged actions.
    #[arg(long = "admin-user", value_name = "USER", action = ArgAction::Append)]
    pub admin_users: Vec<String>,

    /// (development use only) serve assets from this directory instead of the binary.
    #[arg(long, value_name = "DIR", default_value = "")]
    pub dev_static_dir: String,

    /// (nsq-rs) How often nsqadmin samples the cluster's /stats for its rate and depth
    /// charts; 0 turns the sampler off.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "10s")]
    pub stats_sample_interval: Duration,

    /// (nsq-rs) Samples kept per topic and per channel (60 × 10s = the last 10 minutes).
    #[arg(long, value_name = "N", default_value = "60", value_parser = clap::value_parser!(u16).range(2..))]
    pub stats_sample_count: u16,

    /// (nsq-rs) A Prometheus server that scrapes the nsqds' /metrics (e.g.
    /// http://127.0.0.1:9090): the rate and depth charts and the topics list query it, over
    /// --stats-sample-count points --stats-sample-interval apart, and nsqadmin's own sampler
    /// is off.
    #[arg(long, value_name = "URL", default_value = "")]
    pub prometheus_url: String,
}

/// An IP network (`--allow-config-from-cidr`), as Go's `net.ParseCIDR` reads it (an address
/// and a prefix length; the host bits may be set, as in Go's default `127.0.0.1/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;

    /// Go's error text: `invalid CIDR address: <s>`.
    fn from_str(s: &str) -> Result<Cidr, String> {
        s.parse()
            .map(Cidr)
            .map_err(|_| format!("invalid CIDR address: {s}"))
    }
}

impl Cidr {
    /// Whether `ip` is inside the network (an IPv4-mapped IPv6 address counts as IPv4, as Go
    /// stores IPv4 addresses in their mapped form).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

nsq_cli::daemon_options!(Options, "nsqadmin", renames = CONFIG_RENAMES);

impl Options {
    /// Go's `nsqadmin.New` checks: exactly one kind of upstream address, cert and key
    /// together, a sane base path.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.prometheus_url;
        if !(p.is_empty() || p.starts_with("http://") || p.starts_with("https://")) {
            return Err(format!(
                "--prometheus-url {p:?}: expected an http:// or https:// URL"
            ));
        }
        if !p.is_empty() && self.stats_sample_interval.is_zero() {
            return Err(
                "--prometheus-url needs a non-zero --stats-sample-interval (the charts' step)"
                    .into(),
            );
        }
        match (
            self.lookupd_http_addresses.is_empty(),
            self.nsqd_http_addresses.is_empty(),
        ) {
            (true, true) => {
                return Err("--nsqd-http-address or --lookupd-http-address required".into())
            }
            (false, false) => {
                return Err("use --nsqd-http-address or --lookupd-http-address not both".into())
            }
            _ => {}
        }
        if !self.http_client_tls_cert.is_empty() && self.http_client_tls_key.is_empty() {
            return Err(
                "--http-client-tls-key must be specified with --http-client-tls-cert".into(),
            );
        }
        if !self.http_client_tls_key.is_empty() && self.http_client_tls_cert.is_empty() {
            return Err(
                "--http-client-tls-cert must be specified with --http-client-tls-key".into(),
            );
        }
        Ok(())
    }

    /// `--base-path` normalised: `""` for the root, else `/a/b` (leading slash, no trailing one).
    pub fn normalized_base_path(&self) -> String {
        let trimmed = self.base_path.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("/{trimmed}")
        }
    }

    /// `GET /config/{opt}`: the option named by its config-file key, as Go's
    /// `getOptByCfgName` marshals it (durations in nanoseconds, `log_level` as Go's number).
    /// `lookupds` and `log_level` are the values in force (they can be changed at run time).
    pub fn config_value(
        &self,
        opt: &str,
        lookupds: &[String],
        log_level: LogLevel,
    ) -> Option<serde_json::Value> {
        use serde_json::json;
        let ns = |d: Duration| json!(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Some(match opt {
            "log_level" => json!(log_level.go_value()),
            "log_prefix" => json!(self.common.log_prefix),
            "http_address" => json!(self.http_address),
            "base_path" => json!(self.base_path),
            "dev_static_dir" => json!(self.dev_static_dir),
            "graphite_url" => json!(self.graphite_url),
            "proxy_graphite" => json!(self.proxy_graphite),
            "statsd_prefix" => json!(self.statsd_prefix),
            "statsd_counter_format" => json!(self.statsd_counter_format),
            "statsd_gauge_format" => json!(self.statsd_gauge_format),
            "statsd_interval" => ns(self.statsd_interval),
            "nsqlookupd_http_addresses" => json!(lookupds),
            "nsqd_http_addresses" => json!(self.nsqd_http_addresses),
            "http_client_connect_timeout" => ns(self.http_client_connect_timeout),
            "http_client_request_timeout" => ns(self.http_client_request_timeout),
            "http_client_tls_insecure_skip_verify" => {
                json!(self.http_client_tls_insecure_skip_verify)
            }
            "http_client_tls_root_ca_file" => json!(self.http_client_tls_root_ca_file),
            "http_client_tls_cert" => json!(self.http_client_tls_cert),
            "http_client_tls_key" => json!(self.http_client_tls_key),
            "allow_config_from_cidr" => json!(self.allow_config_from_cidr),
            "notification_http_endpoint" => json!(self.notification_http_endpoint),
            "acl_http_header" => json!(self.acl_http_header),
            "admin_users" => json!(self.admin_users),
            "stats_sample_interval" => ns(self.stats_sample_interval),
            "stats_sample_count" => json!(self.stats_sample_count),
            "prometheus_url" => json!(self.prometheus_url),
            _ => return None,
        })
    }

    /// Flags in use whose feature is not implemented yet, for `main` to warn about.
    pub fn unsupported_in_use(&self) -> Vec<&'static str> {
        let d = Options::default();
        let mut out = Vec::new();
        if !self.graphite_url.is_empty() {
            out.push("--graphite-url");
        }
        if self.proxy_graphite {
            out.push("--proxy-graphite");
        }
        if self.statsd_prefix != d.statsd_prefix {
            out.push("--statsd-prefix");
        }
        if self.statsd_counter_format != d.statsd_counter_format {
            out.push("--statsd-counter-format");
        }
        if self.statsd_gauge_format != d.statsd_gauge_format {
            out.push("--statsd-gauge-format");
        }
        if self.statsd_interval != d.statsd_interval {
            out.push("--statsd-interval");
        }
        if !self.dev_static_dir.is_empty() {
            out.push("--dev-static-dir");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io::Write;

    fn parse(args: &[&str]) -> Options {
        let argv = std::iter::once("nsqadmin").chain(args.iter().copied());
        Options::parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    #[test]
    fn defaults_match_go_help() {
        let o = parse(&[]);
        assert_eq!(o.http_address, "0.0.0.0:4171");
        assert_eq!(o.base_path, "/");
        assert_eq!(o.common.log_prefix, "[nsqadmin] ");
        assert_eq!(o.http_client_connect_timeout, Duration::from_secs(2));
        assert_eq!(o.http_client_request_timeout, Duration::from_secs(5));
        assert_eq!(o.statsd_interval, Duration::from_secs(60));
        assert_eq!(o.statsd_prefix, "nsq.%s");
        assert_eq!(o.statsd_counter_format, "stats.counters.%s.count");
        assert_eq!(o.statsd_gauge_format, "stats.gauges.%s");
        assert_eq!(o.allow_config_from_cidr, "127.0.0.1/8");
        assert_eq!(o.acl_http_header, "X-Forwarded-User");
        assert!(o.admin_users.is_empty());
        assert!(o.unsupported_in_use().is_empty());
        assert_eq!(o.stats_sample_interval, Duration::from_secs(10));
        assert_eq!(o.stats_sample_count, 60);
        assert_eq!(o, Options::default());
        assert!(o.validate().is_err());
    }

    #[test]
    fn every_go_flag_exists() {
        let help = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/reference/nsqadmin-help.txt"
        ));
        let names = nsq_cli::long_flag_names(&Options::command());
        let flags: Vec<String> = match help {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.trim_start().strip_prefix('-'))
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_owned)
                .collect(),
            Err(_) => vec!["http-address".into(), "lookupd-http-address".into()],
        };
        assert!(!flags.is_empty());
        for f in flags {
            assert!(names.contains(&f), "missing --{f}");
        }
    }

    #[test]
    fn go_spellings_repeats_and_validation() {
        let o = parse(&[
            "-lookupd-http-address",
            "127.0.0.1:4161",
            "--lookupd-http-address=127.0.0.1:5161",
            "-base-path=/admin/",
            "-http-client-connect-timeout=100ms",
            "-graphite-url=http://g",
        ]);
        assert_eq!(
            o.lookupd_http_addresses,
            ["127.0.0.1:4161", "127.0.0.1:5161"]
        );
        assert_eq!(o.normalized_base_path(), "/admin");
        assert_eq!(o.http_client_connect_timeout, Duration::from_millis(100));
        assert_eq!(o.unsupported_in_use(), ["--graphite-url"]);
        assert!(o.validate().is_ok());
        let both = parse(&["--lookupd-http-address=a:1", "--nsqd-http-address=b:2"]);
        assert!(both.validate().unwrap_err().contains("not both"));
        assert_eq!(parse(&["--base-path=/"]).normalized_base_path(), "");
        assert!(parse(&["-version"]).common.version);
    }

    #[test]
    fn cidr_like_go() {
        let c: Cidr = "127.0.0.1/8".parse().unwrap();
        assert!(c.contains("127.9.8.7".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for bad in ["127.0.0.1", "127.0.0.1/33", "x/8", "::/129", "1.2.3.4/+8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        let o = parse(&[
            "--nsqd-http-address=a:1",
            "--http-client-connect-timeout=1s",
        ]);
        let v = |k: &str| o.config_value(k, &[], LogLevel::Debug);
        assert_eq!(
            v("http_client_connect_timeout"),
            Some(serde_json::json!(1_000_000_000u64))
        );
        assert_eq!(v("nsqd_http_addresses"), Some(serde_json::json!(["a:1"])));
        assert_eq!(v("log_level"), Some(serde_json::json!(1)));
        assert_eq!(v("nope"), None);
    }

    #[test]
    fn config_file_keys() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(
            br#"
            nsqlookupd_http_addresses = ["127.0.0.1:4161", "127.0.0.1:4162"]
            admin_users = ["alice"]
            http_address = "127.0.0.1:9999"
            http_client_request_timeout = "1s"
            "#,
        )
        .unwrap();
        let path = f.path().to_str().unwrap();
        let o = parse(&["--config", path]);
        assert_eq!(
            o.lookupd_http_addresses,
            ["127.0.0.1:4161", "127.0.0.1:4162"]
        );
        assert_eq!(o.admin_users, ["alice"]);
        assert_eq!(o.http_address, "127.0.0.1:9999");
        assert_eq!(o.http_client_request_timeout, Duration::from_secs(1));
        let o = parse(&["--http-address=127.0.0.1:0", "--config", path]);
        assert_eq!(o.http_address, "127.0.0.1:0");
    }
}
