//! nsqlookupd's options: flags, config file and defaults.
//!
//! The command line is Go nsqlookupd 1.3's (`apps/nsqlookupd/options.go`): same flag names,
//! same defaults, same value syntaxes (`-tcp-address :4160`, `--inactive-producer-timeout=1s`,
//! `--verbose`), and the same TOML `--config` keys (flag names with `_` for `-`). [`nsq_cli`]
//! supplies the Go compatibility layer; resolution is command line > config file > default.

use std::time::Duration;

use clap::Parser;
use nsq_cli::CommonArgs;

pub use nsq_cli::daemon::{hostname, LogLevel, LogLevelError};
/// Why options could not be loaded (shared by the daemons).
pub use nsq_cli::ConfigError;
/// The NSQ release whose interface nsq-rs implements.
pub use nsq_cli::NSQ_VERSION;

/// Every nsqlookupd option, named after its Go flag.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "nsqlookupd",
    about = "nsqlookupd (nsq-rs): the directory of which nsqd has which topic; compatible with NSQ 1.3",
    long_about = None,
    args_override_self = true,
    disable_version_flag = true,
    max_term_width = 100,
    mut_arg("log_prefix", |a| a.default_value("[nsqlookupd] "))
)]
pub struct Options {
    /// `--config`, `--version`, `--log-level`, `--log-prefix`, `--verbose`.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Where to accept nsqd connections (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4160")]
    pub tcp_address: String,

    /// Where to serve the HTTP API (host:port; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4161")]
    pub http_address: String,

    /// Address of this lookupd, returned to nsqds in IDENTIFY. Defaults to the OS hostname.
    #[arg(long, value_name = "HOST", default_value_t = hostname())]
    pub broadcast_address: String,

    /// How long an nsqd stays in /lookup and /nodes answers after its last PING.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "5m")]
    pub inactive_producer_timeout: Duration,

    /// How long a tombstoned producer stays hidden from /lookup.
    #[arg(long, value_name = "DURATION", value_parser = nsq_cli::parse_go_duration, default_value = "45s")]
    pub tombstone_lifetime: Duration,
}

nsq_cli::daemon_options!(Options, "nsqlookupd");

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io::Write;

    fn parse(args: &[&str]) -> Options {
        let argv = std::iter::once("nsqlookupd").chain(args.iter().copied());
        Options::parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn parse_err(args: &[&str]) -> ConfigError {
        let argv = std::iter::once("nsqlookupd").chain(args.iter().copied());
        match Options::parse_from(argv) {
            Ok(o) => panic!("{args:?} parsed: {o:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_match_go_help() {
        let o = parse(&[]);
        assert_eq!(o.common.config, None);
        assert!(!o.common.version);
        assert!(!o.common.verbose);
        assert_eq!(o.common.log_level, LogLevel::Info);
        assert_eq!(o.common.log_prefix, "[nsqlookupd] ");
        assert_eq!(o.tcp_address, "0.0.0.0:4160");
        assert_eq!(o.http_address, "0.0.0.0:4161");
        assert_eq!(o.broadcast_address, hostname());
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(300));
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(45));
        assert_eq!(o, Options::default());
    }

    #[test]
    fn every_go_flag_exists() {
        // The flags of `nsqlookupd -help` (shared/reference/nsqlookupd-help.txt).
        let help = [
            "broadcast-address",
            "config",
            "http-address",
            "inactive-producer-timeout",
            "log-level",
            "log-prefix",
            "tcp-address",
            "tombstone-lifetime",
            "verbose",
            "version",
        ];
        let names = nsq_cli::long_flag_names(&Options::command());
        for f in help {
            assert!(names.iter().any(|n| n == f), "missing --{f}");
        }
    }

    #[test]
    fn go_flag_spellings() {
        let o = parse(&[
            "-tcp-address",
            "127.0.0.1:0",
            "-http-address=127.0.0.1:0",
            "--broadcast-address=b",
            "-inactive-producer-timeout=1s",
            "--tombstone-lifetime",
            "1m30s",
            "-log-level=DEBUG",
            "-verbose",
        ]);
        assert_eq!(o.tcp_address, "127.0.0.1:0");
        assert_eq!(o.http_address, "127.0.0.1:0");
        assert_eq!(o.broadcast_address, "b");
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(1));
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(90));
        assert_eq!(o.common.log_level, LogLevel::Debug);
        assert!(o.common.verbose);
        assert!(parse(&["-version"]).common.version);
        assert!(matches!(
            parse_err(&["--tombstone-lifetime=soon"]),
            ConfigError::Clap(_)
        ));
        assert!(matches!(
            parse_err(&["--log-level=loud"]),
            ConfigError::Clap(_)
        ));
        match parse_err(&["-help"]) {
            ConfigError::Clap(e) => assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_file_and_precedence() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(
            br#"
            tcp_address = "127.0.0.1:5160"
            http_address = "127.0.0.1:5161"
            broadcast_address = "from-file"
            inactive_producer_timeout = 2000
            tombstone_lifetime = "10s"
            log_level = "warn"
            verbose = true
            bogus = 1
            "#,
        )
        .unwrap();
        let path = f.path().to_str().unwrap();
        let o = parse(&["--config", path]);
        assert_eq!(o.tcp_address, "127.0.0.1:5160");
        assert_eq!(o.http_address, "127.0.0.1:5161");
        assert_eq!(o.broadcast_address, "from-file");
        // An integer duration in a config file is milliseconds (go-options).
        assert_eq!(o.inactive_producer_timeout, Duration::from_secs(2));
        assert_eq!(o.tombstone_lifetime, Duration::from_secs(10));
        assert_eq!(o.common.log_level, LogLevel::Warn);
        assert!(!o.common.verbose);
        assert_eq!(
            o.common.config_warnings.len(),
            2,
            "{:?}",
            o.common.config_warnings
        );

        let o = parse(&["-tcp-address=127.0.0.1:0", "-config", path]);
        assert_eq!(o.tcp_address, "127.0.0.1:0");
        assert_eq!(o.http_address, "127.0.0.1:5161");

        let mut bad = tempfile::NamedTempFile::new().unwrap();
        bad.write_all(b"tombstone_lifetime = \"never\"").unwrap();
        assert!(matches!(
            parse_err(&["--config", bad.path().to_str().unwrap()]),
            ConfigError::ConfigValue { .. }
        ));
        assert!(matches!(
            parse_err(&["--config=/nonexistent/nsqlookupd.toml"]),
            ConfigError::ReadConfig { .. }
        ));
    }

    #[test]
    fn version_string_names_both_versions() {
        let v = Options::version_string();
        assert!(v.starts_with("nsqlookupd v1.3.0 (nsq-rs "), "{v}");
    }
}
