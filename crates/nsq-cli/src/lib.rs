//! Command-line plumbing shared by every nsq-rs binary.
//!
//! NSQ's Go binaries parse their flags with Go's standard `flag` package and read an optional
//! TOML config file through `go-options`. Operators, init scripts and test suites rely on the
//! quirks of both, so a drop-in replacement has to accept the same spellings and the same
//! value syntaxes. clap does most of the work, but differs from Go in four places, each of
//! which has a module here:
//!
//! * [`args`]: Go accepts `-name`, `-name=value`, `--name` and `--name=value` for every long
//!   flag; clap only accepts the double-dash form. [`normalize_go_args`] rewrites the
//!   single-dash spelling before clap sees it, and [`drop_overridden`] implements the
//!   "command line beats config file" rule for repeatable flags.
//! * [`duration`]: Go durations (`250ms`, `1m0s`, `1.5h`) are parsed and printed exactly like
//!   `time.ParseDuration` / `time.Duration.String()` so help texts, logs and `/config` answers
//!   look the same as Go's.
//! * [`value`]: Go boolean flags take `--flag` or `--flag=<bool>` (never `--flag <bool>`), with
//!   `strconv.ParseBool`'s spellings; Go integer flags accept `0x`/`0o`/`0b` prefixes.
//! * [`config_file`]: a TOML config file is turned into synthetic `--flag=value` arguments, so
//!   a single clap definition validates flags and config values alike.
//!
//! [`options`] puts these together for the daemons: the flags all three share
//! ([`CommonArgs`]), one [`parse_from`] (command line > `--config` file > default) and its
//! [`ConfigError`]. [`daemon`] is what their `main`s share at run time (logging, signals).
//!
//! # Putting it together
//!
//! ```
//! use clap::{Arg, ArgAction, Command};
//! use std::ffi::OsString;
//!
//! let cmd = Command::new("nsqd")
//!     .args_override_self(true)
//!     .arg(Arg::new("mem-queue-size").long("mem-queue-size").default_value("10000"))
//!     .arg(Arg::new("lookupd-tcp-address").long("lookupd-tcp-address").action(ArgAction::Append));
//! let long_flags = nsq_cli::long_flag_names(&cmd);
//! let long_flags: Vec<&str> = long_flags.iter().map(String::as_str).collect();
//!
//! // 1. Go-style spellings become clap spellings.
//! let user = nsq_cli::normalize_go_args(
//!     ["-lookupd-tcp-address", "127.0.0.1:4160"].map(OsString::from),
//!     &long_flags,
//! );
//! // 2. The config file becomes arguments too (keys may be renamed, see `config_to_args`).
//! let config = nsq_cli::config_to_args(
//!     "mem_queue_size = 5\nnsqlookupd_tcp_addresses = ['a:4160', 'b:4160']",
//!     &[("nsqlookupd_tcp_addresses", "lookupd-tcp-address")],
//!     &cmd,
//! )
//! .unwrap();
//! // 3. Config values for flags given on the command line are dropped; for the rest the
//! //    user's arguments come last so `args_override_self` lets them win.
//! let mut argv = vec![OsString::from("nsqd")];
//! argv.extend(nsq_cli::drop_overridden(&config.args, &user, &cmd));
//! argv.extend(user);
//! let m = cmd.try_get_matches_from(argv).unwrap();
//! assert_eq!(m.get_one::<String>("mem-queue-size").unwrap(), "5");
//! let lookupds: Vec<&String> = m.get_many("lookupd-tcp-address").unwrap().collect();
//! assert_eq!(lookupds, ["127.0.0.1:4160"]);
//! ```

pub mod args;
pub mod config_file;
pub mod daemon;
pub mod duration;
pub mod options;
pub mod value;

pub use args::{drop_overridden, long_flag_names, normalize_go_args};
pub use config_file::{config_to_args, config_to_args_except, ConfigArgs, ConfigFileError};
pub use duration::{format_go_duration, parse_go_duration, DurationError, GoDuration};
pub use options::{
    parse_from, parse_from_env, version_string, CommonArgs, ConfigError, DaemonOptions, NSQ_VERSION,
};
pub use value::{go_bool_flag, parse_go_bool, parse_go_int, BoolError, GoBoolArg, IntError};
