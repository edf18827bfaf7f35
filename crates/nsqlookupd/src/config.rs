//! nsqlookupd's options: flags, config file and defaults.
//!
//! The command line is Go nsqlookupd 1.3's (`apps/nsqlookupd/options.go`): same flag names,
//! same defaults, same value syntaxes (`-tcp-address :4160`, `--inactive-producer-timeout=1s`,
//! `--verbose`), and the same TOML `--config` keys (flag names with `_` for `-`). [`nsq_cli`]
//! supplies the Go compatibility layer; resolution is command line > config file > default.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};

/// The NSQ release whose interface nsq-rs implements.
pub const NSQ_VERSION: &str = "1.3.0";

/// Flags that are not options in Go (deprecated no-ops), hence not config file keys either.
const CLI_ONLY: &[&str] = &["verbose"];

/// Why options could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line problem, or a request for `--help`: `main` should call
    /// [`clap::Error::exit`].
    #[error(transparent)]
    Clap(#[from] clap::Error),
    /// The `--config` file could not be read.
    #[error("failed to read config file {} - {source}", path.display())]
    ReadConfig {
        /// The `--config` path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML or has a value of the wrong shape.
    #[error("failed to load config file {} - {source}", path.display())]
    ConfigFile {
        /// The `--config` path.
        path: PathBuf,
        /// What is wrong with it.
        source: nsq_cli::ConfigError,
    },
    /// A value from the `--config` file was rejected by the flag's parser.
    #[error("failed to load config file {} - {}", path.display(), clap_message(source))]
    ConfigValue {
        /// The `--config` path.
        path: PathBuf,
        /// The parser's complaint.
        source: clap::Error,
    },
}

fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

pub use nsq_cli::daemon::{hostname, LogLevel, LogLevelError};

/// Every nsqlookupd option, named after its Go flag.
#[derive(Debug, Clone, PartialEq, Parser)]
#[command(
    name = "nsqlookupd",
    about = "nsqlookupd (nsq-rs): the directory of which nsqd has which topic; compatible with NSQ 1.3",
    long_about = None,
    args_override_self = true,
    disable_version_flag = true,
    max_term_width = 100
)]
pub struct Options {
    /// Read options from this TOML file (keys are flag names with '_' for '-'); flags given on
    /// the command line take precedence.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the version and exit.
    #[arg(
        long,
        action = ArgAction::Set,
        value_parser = nsq_cli::parse_go_bool,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true
    )]
    pub version: bool,

    /// How much to log: debug, info, warn, error or fatal.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: LogLevel,

    /// Text put in front of every log line.
    #[arg(long, value_name = "PREFIX", default_value = "[nsqlookupd] ")]
    pub log_prefix: String,

    /// Deprecated and ignored; use --log-level.
    #[arg(
        long,
        action = ArgAction::Set,
        value_parser = nsq_cli::parse_go_bool,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        default_value = "false",
        hide_default_value = true
    )]
    pub verbose: bool,

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

    /// Ignored config file keys (unknown or command-line only), for `main` to log.
    #[arg(skip)]
    pub config_warnings: Vec<String>,
}

impl Default for Options {
    /// The built-in defaults, as `nsqlookupd` with no arguments would use them.
    fn default() -> Self {
        Options::parse_from(["nsqlookupd"]).expect("nsqlookupd's built-in defaults must parse")
    }
}

impl Options {
    /// The `--version` line: `nsqlookupd v1.3.0 (nsq-rs <version>)`.
    pub fn version_string() -> String {
        format!(
            "nsqlookupd v{NSQ_VERSION} (nsq-rs {})",
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Parses the process's own command line (and the `--config` file it names).
    pub fn parse_from_env() -> Result<Options, ConfigError> {
        Self::parse_from(std::env::args_os())
    }

    /// Parses `args` (program name first) with Go's flag spellings, reads the `--config` file
    /// if one is named (not when `--version` is given), and resolves each option as
    /// command line > config file > default.
    pub fn parse_from<I, T>(args: I) -> Result<Options, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let mut args = args.into_iter().map(Into::into);
        let program = args.next().unwrap_or_else(|| OsString::from("nsqlookupd"));
        let cmd = Options::command();
        let long_flags = nsq_cli::long_flag_names(&cmd);
        let long_flags: Vec<&str> = long_flags.iter().map(String::as_str).collect();
        let user_args = nsq_cli::normalize_go_args(args, &long_flags);

        let argv = std::iter::once(program.clone()).chain(user_args.iter().cloned());
        let from_command_line = Options::try_parse_from(argv)?;
        if from_command_line.version {
            return Ok(from_command_line);
        }
        let path = match &from_command_line.config {
            Some(path) if !path.as_os_str().is_empty() => path.clone(),
            _ => return Ok(from_command_line),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadConfig {
            path: path.clone(),
            source,
        })?;
        let config =
            nsq_cli::config_to_args_except(&text, &[], CLI_ONLY, &cmd).map_err(|source| {
                ConfigError::ConfigFile {
                    path: path.clone(),
                    source,
                }
            })?;
        let mut argv = vec![program];
        argv.extend(nsq_cli::drop_overridden(&config.args, &user_args, &cmd));
        argv.extend(user_args);
        let mut options = Options::try_parse_from(argv)
            .map_err(|source| ConfigError::ConfigValue { path, source })?;
        options.config_warnings = config.warnings;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(o.config, None);
        assert!(!o.version);
        assert!(!o.verbose);
        assert_eq!(o.log_level, LogLevel::Info);
        assert_eq!(o.log_prefix, "[nsqlookupd] ");
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
        assert_eq!(o.log_level, LogLevel::Debug);
        assert!(o.verbose);
        assert!(parse(&["-version"]).version);
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
        assert_eq!(o.log_level, LogLevel::Warn);
        assert!(!o.verbose);
        assert_eq!(o.config_warnings.len(), 2, "{:?}", o.config_warnings);

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
