//! What the three daemons' option structs share: the common flags ([`CommonArgs`], flattened
//! into each `Options`), the one command line + `--config` resolution ([`parse_from`]) and its
//! error ([`ConfigError`]), and the `--version` line.
//!
//! Go's nsqd, nsqlookupd and nsqadmin each declare `-config`, `-version`, `-log-level`,
//! `-log-prefix` and the deprecated `-verbose`, and each `main` loads the config file the same
//! way (`go-options`: flag > config file > default). Here each daemon keeps only what is its
//! own: its flags, its config-key renames and its command-line-only flags
//! ([`DaemonOptions`]); the loading is written once.
//!
//! A daemon embeds the common flags with
//!
//! ```ignore
//! #[command(flatten)]
//! pub common: nsq_cli::CommonArgs,
//! ```
//!
//! gives `--log-prefix` its own default (`[nsqd] `) with
//! `#[command(mut_arg("log_prefix", |a| a.default_value("[nsqd] ")))]`, so `--help` shows it,
//! and gets the rest from [`daemon_options!`](crate::daemon_options).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser};

use crate::daemon::LogLevel;
use crate::value::GoBoolArg;

/// The NSQ release whose interface nsq-rs implements (`--version`, user agents).
pub const NSQ_VERSION: &str = "1.3.0";

/// The `--version` line of daemon `name`: `nsqd v1.3.0 (nsq-rs <version>)`.
pub fn version_string(name: &str) -> String {
    format!(
        "{name} v{NSQ_VERSION} (nsq-rs {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// The flags every daemon has, with Go's names and defaults. `--log-prefix` has no useful
/// default of its own: each daemon sets its `[name] ` (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Args)]
pub struct CommonArgs {
    /// Read options from this TOML file (keys are flag names with '_' for '-'); flags given on
    /// the command line take precedence.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the version and exit.
    #[arg(long, go_bool = false)]
    pub version: bool,

    /// How much to log: debug, info, warn, error or fatal.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: LogLevel,

    /// Text put in front of every log line.
    #[arg(long, value_name = "PREFIX", default_value = "")]
    pub log_prefix: String,

    /// Deprecated and ignored; use --log-level.
    #[arg(long, go_bool = false)]
    pub verbose: bool,

    /// Ignored config file keys (unknown or command-line only), for `main` to log.
    #[arg(skip)]
    pub config_warnings: Vec<String>,
}

impl CommonArgs {
    /// Starts the daemon's logging ([`crate::daemon::init_logging`] at `--log-level` with
    /// `--log-prefix`) and logs the ignored config file keys as warnings.
    pub fn init_logging(&self) {
        crate::daemon::init_logging(self.log_level.as_tracing_filter(), &self.log_prefix);
        for w in &self.config_warnings {
            tracing::warn!("{w}");
        }
    }
}

/// A daemon's `Options`: a clap parser that flattens [`CommonArgs`], plus what its config file
/// does differently.
pub trait DaemonOptions: Parser {
    /// The program name (`nsqd`), used when the arguments are empty.
    const NAME: &'static str;
    /// Config file keys whose flag name differs from the key (Go's `cfg` struct tags), as
    /// `(config_key, flag_name)`.
    const CONFIG_RENAMES: &'static [(&'static str, &'static str)] = &[];
    /// Flags that are not options in Go (deprecated no-ops, one-shot commands), hence not
    /// config file keys either.
    const CLI_ONLY: &'static [&'static str] = &["verbose"];

    /// The common flags.
    fn common(&self) -> &CommonArgs;
    /// The common flags, to record the config file's warnings.
    fn common_mut(&mut self) -> &mut CommonArgs;
}

/// Implements [`DaemonOptions`] for a daemon's `Options` (whose [`CommonArgs`] field is named
/// `common`), its `Default` (the built-in defaults, as the daemon with no arguments uses
/// them), and the inherent `version_string()`, `parse_from(args)` and `parse_from_env()` its
/// `main` and tests call. Inherent, so that they win over clap's `Parser::parse_from` (which
/// exits instead of returning the error, and knows nothing of Go spellings or `--config`).
///
/// ```ignore
/// nsq_cli::daemon_options!(Options, "nsqd", renames = CONFIG_RENAMES, cli_only = CLI_ONLY);
/// ```
#[macro_export]
macro_rules! daemon_options {
    ($ty:ty, $name:literal $(, renames = $renames:expr)? $(, cli_only = $cli_only:expr)? $(,)?) => {
        impl $crate::DaemonOptions for $ty {
            const NAME: &'static str = $name;
            $(const CONFIG_RENAMES: &'static [(&'static str, &'static str)] = $renames;)?
            $(const CLI_ONLY: &'static [&'static str] = $cli_only;)?

            fn common(&self) -> &$crate::CommonArgs {
                &self.common
            }

            fn common_mut(&mut self) -> &mut $crate::CommonArgs {
                &mut self.common
            }
        }

        impl ::std::default::Default for $ty {
            /// The built-in defaults, as the daemon with no arguments uses them.
            fn default() -> Self {
                // The defaults are constants of the options' definition, checked by its unit
                // tests; failing to parse them is a programming error, not an input error.
                <$ty>::parse_from([$name]).expect(concat!($name, "'s built-in defaults must parse"))
            }
        }

        impl $ty {
            #[doc = concat!("The `--version` line: `", $name, " v1.3.0 (nsq-rs <version>)`.")]
            pub fn version_string() -> ::std::string::String {
                $crate::version_string($name)
            }

            /// Parses the process's own command line (and the `--config` file it names).
            pub fn parse_from_env() -> ::std::result::Result<Self, $crate::ConfigError> {
                $crate::parse_from_env()
            }

            /// Parses `args` (program name first) with Go's flag spellings, reads the
            /// `--config` file if one is named (not with `--version`), and resolves each
            /// option as command line > config file > default ([`nsq_cli::parse_from`]). The
            /// result is not validated.
            pub fn parse_from<I, T>(args: I) -> ::std::result::Result<Self, $crate::ConfigError>
            where
                I: ::std::iter::IntoIterator<Item = T>,
                T: ::std::convert::Into<::std::ffi::OsString>,
            {
                $crate::parse_from(args)
            }
        }
    };
}

/// Why options could not be loaded or are not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line problem, or a request for `--help`: `main` should call
    /// [`clap::Error::exit`], which prints help to stdout or the error to stderr.
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
        source: crate::ConfigFileError,
    },
    /// A value from the `--config` file was rejected by the flag's parser.
    #[error("failed to load config file {} - {}", path.display(), clap_message(source))]
    ConfigValue {
        /// The `--config` path.
        path: PathBuf,
        /// The parser's complaint (phrased in terms of the flag).
        source: clap::Error,
    },
    /// The options parse but are not acceptable together (a daemon's `validate`).
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// Reports the error the way the Go binary would and exits: clap errors and `--help` go
    /// through clap (exit code 0 for help, 2 for usage errors), anything else is printed as
    /// `[<daemon>] FATAL: <error>` with exit code 1.
    pub fn exit(&self, daemon: &str) -> ! {
        match self {
            ConfigError::Clap(e) => e.exit(),
            other => {
                eprintln!("[{daemon}] FATAL: {other}");
                std::process::exit(1)
            }
        }
    }
}

/// The first line of a clap error without its `error: ` prefix, for embedding in a sentence.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Parses `args` (program name first) with Go's flag spellings, reads the `--config` file if
/// one is named, and resolves each option as command line > config file > default.
///
/// When `--version` is given the config file is not read (as in Go); the caller prints
/// [`version_string`] and exits. The result is not validated.
pub fn parse_from<T, I, A>(args: I) -> Result<T, ConfigError>
where
    T: DaemonOptions,
    I: IntoIterator<Item = A>,
    A: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into);
    let program = args.next().unwrap_or_else(|| OsString::from(T::NAME));
    let cmd = T::command();
    let long_flags = crate::long_flag_names(&cmd);
    let long_flags: Vec<&str> = long_flags.iter().map(String::as_str).collect();
    let user_args = crate::normalize_go_args(args, &long_flags);

    let argv = std::iter::once(program.clone()).chain(user_args.iter().cloned());
    let from_command_line = T::try_parse_from(argv)?;
    let common = from_command_line.common();
    if common.version {
        return Ok(from_command_line);
    }
    let path = match &common.config {
        Some(path) if !path.as_os_str().is_empty() => path.clone(),
        _ => return Ok(from_command_line),
    };

    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadConfig {
        path: path.clone(),
        source,
    })?;
    let config = crate::config_to_args_except(&text, T::CONFIG_RENAMES, T::CLI_ONLY, &cmd)
        .map_err(|source| ConfigError::ConfigFile {
            path: path.clone(),
            source,
        })?;
    let mut argv = vec![program];
    argv.extend(crate::drop_overridden(&config.args, &user_args, &cmd));
    argv.extend(user_args);
    // The command line alone parsed, so an error now comes from a config value.
    let mut options =
        T::try_parse_from(argv).map_err(|source| ConfigError::ConfigValue { path, source })?;
    options.common_mut().config_warnings = config.warnings;
    Ok(options)
}

/// [`parse_from`] on the process's own command line.
pub fn parse_from_env<T: DaemonOptions>() -> Result<T, ConfigError> {
    parse_from(std::env::args_os())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::io::Write;
    use std::time::Duration;

    /// A daemon with one renamed repeatable flag and one command-line-only flag.
    #[derive(Debug, Parser)]
    #[command(
        name = "toyd",
        args_override_self = true,
        disable_version_flag = true,
        mut_arg("log_prefix", |a| a.default_value("[toyd] "))
    )]
    struct Toy {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long, value_parser = crate::parse_go_duration, default_value = "5s")]
        timeout: Duration,
        #[arg(long = "peer", action = clap::ArgAction::Append)]
        peers: Vec<String>,
        #[arg(long, go_bool = true)]
        snappy: bool,
        #[arg(long, go_bool = false)]
        once: bool,
    }

    crate::daemon_options!(
        Toy,
        "toyd",
        renames = &[("peers", "peer")],
        cli_only = &["verbose", "once"],
    );

    fn parse(args: &[&str]) -> Result<Toy, ConfigError> {
        Toy::parse_from(std::iter::once("toyd").chain(args.iter().copied()))
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_and_go_spellings() {
        let t = parse(&[]).unwrap();
        assert_eq!(t.common.log_prefix, "[toyd] ");
        assert_eq!(t.common.log_level, LogLevel::Info);
        assert!(!t.common.version && !t.common.verbose && !t.once);
        assert!(t.snappy);
        let t = parse(&["-log-level=debug", "-snappy=false", "-once", "-verbose"]).unwrap();
        assert_eq!(t.common.log_level, LogLevel::Debug);
        assert!(!t.snappy && t.once && t.common.verbose);
        // A Go boolean never takes the next argument as its value.
        assert!(matches!(
            parse(&["--snappy", "false"]),
            Err(ConfigError::Clap(_))
        ));
        match parse(&["-help"]) {
            Err(ConfigError::Clap(e)) => {
                assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
                let help = Toy::command().render_long_help().to_string();
                assert!(help.contains(r#"[default: "[toyd] "]"#), "{help}");
                assert!(help.contains("--snappy[=<BOOL>]"), "{help}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_file_precedence_and_errors() {
        let f =
            file("timeout = 2000\npeers = ['a', 'b']\nonce = true\nbogus = 1\nlog_prefix = 'x'");
        let path = f.path().to_str().unwrap();
        let t = parse(&["--config", path]).unwrap();
        assert_eq!(t.timeout, Duration::from_secs(2));
        assert_eq!(t.peers, ["a", "b"]);
        assert!(!t.once, "command-line-only flags are not config keys");
        assert_eq!(t.common.log_prefix, "x");
        assert_eq!(
            t.common.config_warnings.len(),
            2,
            "{:?}",
            t.common.config_warnings
        );
        let t = parse(&["-peer=c", "-config", path]).unwrap();
        assert_eq!(t.peers, ["c"]);
        // --version does not read the config file.
        assert!(
            parse(&["--version", "--config=/nonexistent"])
                .unwrap()
                .common
                .version
        );

        let e = parse(&["--config=/nonexistent/toyd.toml"]).unwrap_err();
        assert!(matches!(e, ConfigError::ReadConfig { .. }), "{e:?}");
        assert!(e
            .to_string()
            .starts_with("failed to read config file /nonexistent/toyd.toml - "));
        let bad = file("timeout = 'soon'");
        let e = parse(&["--config", bad.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(e, ConfigError::ConfigValue { .. }), "{e:?}");
        assert!(!e.to_string().contains("error: "), "{e}");
        let bad = file("timeout = [");
        let e = parse(&["--config", bad.path().to_str().unwrap()]).unwrap_err();
        assert!(matches!(e, ConfigError::ConfigFile { .. }), "{e:?}");
    }

    #[test]
    fn version_line() {
        assert!(Toy::version_string().starts_with("toyd v1.3.0 (nsq-rs "));
        assert_eq!(Toy::default().timeout, Duration::from_secs(5));
        // What `main` calls (the test binary's own arguments are not the toy's).
        let _: fn() -> Result<Toy, ConfigError> = Toy::parse_from_env;
    }
}
