//! TOML config files as synthetic command-line arguments.
//!
//! Every NSQ daemon takes `--config=<file>`, a TOML file whose keys are the flag names with `-`
//! replaced by `_` (plus a few historical renames such as `nsqlookupd_tcp_addresses` for
//! `--lookupd-tcp-address`). Go resolves each option as *flag given on the command line* >
//! *config file* > *default* (`go-options`).
//!
//! Instead of a second, hand-written set of config structs, [`config_to_args`] turns the file
//! into `--flag=value` arguments that go through the very same clap definition as the command
//! line, so names, value syntaxes and validation cannot drift apart. The caller then parses
//! `[program] + config args + user args` with `Command::args_override_self(true)`: a user value
//! comes later and replaces a config value. For repeatable flags, where clap would append
//! instead, [`drop_overridden`](crate::drop_overridden) removes the config values first.
//!
//! Value conversion follows go-options:
//! * strings are passed through unchanged (duration flags thus accept `"60s"`);
//! * integers are passed as decimal text, except for *duration* flags where an integer means
//!   milliseconds (`msg_timeout = 60000` is `--msg-timeout=1m0s`). A flag is a duration flag
//!   when its clap value parser produces [`std::time::Duration`] or [`GoDuration`];
//! * booleans become `=true`/`=false` (for presence-only `ArgAction::SetTrue` flags, `true`
//!   becomes the bare flag and `false` nothing);
//! * floats are passed as decimal text;
//! * arrays become one argument per element and are only accepted for repeatable
//!   (`ArgAction::Append`) flags; for those a single string is split on `,` like go-options does.
//!
//! Go silently ignores keys it does not know. We report them in [`ConfigArgs::warnings`] so the
//! daemon can log them: a typo in a config file should not go unnoticed, but should not stop a
//! daemon that Go would have started either. Keys for `config`, `version` and `help` are
//! treated as unknown: they only make sense on the command line.

use std::any::TypeId;
use std::ffi::OsString;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};

use crate::duration::{format_go_duration, GoDuration};

/// Flags a config file cannot set.
const CLI_ONLY: &[&str] = &["config", "version", "help"];

/// A config file that cannot be turned into arguments.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The text is not valid TOML.
    #[error("invalid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// A known key has a value of the wrong shape (a table, a nested array, a negative
    /// millisecond count, an array for a flag that takes one value, ...).
    #[error("config option {key:?}: {message}")]
    InvalidValue {
        /// The TOML key, as written in the file.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The arguments produced from a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigArgs {
    /// `--flag=value` (or bare `--flag`) arguments, in key order.
    pub args: Vec<OsString>,
    /// Human-readable notes about keys that were ignored (unknown or command-line only).
    pub warnings: Vec<String>,
}

/// Converts a TOML config file into `--flag=value` arguments for `cmd`.
///
/// A key maps to the flag of the same name with `_` replaced by `-`, unless `renames` lists it
/// as `(config_key, flag_name)`. A flag that is the target of a rename can only be set through
/// its renamed key, as in Go (where e.g. `lookupd_tcp_address` is not a config key at all).
/// See the [module docs](self) for how values are converted.
pub fn config_to_args(
    toml_text: &str,
    renames: &[(&str, &str)],
    cmd: &Command,
) -> Result<ConfigArgs, ConfigFileError> {
    config_to_args_except(toml_text, renames, &[], cmd)
}

/// [`config_to_args`] for a command with extra command-line-only flags.
///
/// Keys naming one of `cli_only` (flag names, e.g. deprecated no-op flags such as nsqd's
/// `verbose` and `worker-id`, which Go's option structs do not contain) are ignored with a
/// warning, as `config`, `version` and `help` always are.
pub fn config_to_args_except(
    toml_text: &str,
    renames: &[(&str, &str)],
    cli_only: &[&str],
    cmd: &Command,
) -> Result<ConfigArgs, ConfigFileError> {
    let table: toml::Table = toml::from_str(toml_text)?;
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = ConfigArgs::default();
    for (key, value) in &table {
        let renamed = renames.iter().find(|(k, _)| k == key).map(|(_, f)| *f);
        let flag = match renamed {
            Some(flag) => flag.to_owned(),
            None => key.replace('_', "-"),
        };
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()))
            .filter(|_| !is_cli_only(&flag, cli_only))
            .filter(|a| !is_generated(a));
        let shadowed = renamed.is_none() && renames.iter().any(|(_, f)| *f == flag);
        let arg = match arg {
            Some(arg) if !shadowed => arg,
            _ => {
                out.warnings
                    .push(unknown_key_warning(key, &flag, renames, cli_only));
                continue;
            }
        };
        push_value(&mut out.args, key, &flag, arg, value)?;
    }
    Ok(out)
}

fn is_cli_only(flag: &str, cli_only: &[&str]) -> bool {
    CLI_ONLY.contains(&flag) || cli_only.contains(&flag)
}

fn unknown_key_warning(
    key: &str,
    flag: &str,
    renames: &[(&str, &str)],
    cli_only: &[&str],
) -> String {
    if is_cli_only(flag, cli_only) {
        return format!("ignoring config option {key:?}: it can only be given on the command line");
    }
    match renames.iter().find(|(_, f)| *f == flag) {
        Some((cfg_key, _)) => {
            format!("ignoring unknown config option {key:?} (did you mean {cfg_key:?}?)")
        }
        None => format!("ignoring unknown config option {key:?}"),
    }
}

fn is_generated(arg: &Arg) -> bool {
    matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    )
}

fn push_value(
    args: &mut Vec<OsString>,
    key: &str,
    flag: &str,
    arg: &Arg,
    value: &toml::Value,
) -> Result<(), ConfigFileError> {
    let invalid = |message: String| ConfigFileError::InvalidValue {
        key: key.to_owned(),
        message,
    };
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    match value {
        toml::Value::Array(items) => {
            if !repeatable {
                return Err(invalid(format!(
                    "--{flag} takes a single value, not an array"
                )));
            }
            for item in items {
                let text = scalar_text(arg, item).map_err(&invalid)?;
                args.push(format!("--{flag}={text}").into());
            }
        }
        toml::Value::String(s) if repeatable => {
            for part in s.split(',') {
                args.push(format!("--{flag}={part}").into());
            }
        }
        toml::Value::Boolean(b) if switch => {
            if *b {
                args.push(format!("--{flag}").into());
            }
        }
        _ if !arg.get_action().takes_values() => {
            return Err(invalid(format!(
                "--{flag} cannot be set from a config file"
            )));
        }
        scalar => {
            let text = scalar_text(arg, scalar).map_err(&invalid)?;
            args.push(format!("--{flag}={text}").into());
        }
    }
    Ok(())
}

/// The flag-value text for one TOML scalar.
fn scalar_text(arg: &Arg, value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Integer(i) if is_duration(arg) => {
            let ms = u64::try_from(*i)
                .map_err(|_| format!("negative duration {i} (integers are milliseconds)"))?;
            Ok(format_go_duration(Duration::from_millis(ms)))
        }
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(_) if is_duration(arg) => Err(
            "a duration must be a string such as \"1.5s\" or an integer number of milliseconds"
                .to_owned(),
        ),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Datetime(_) => Err("dates are not valid option values".to_owned()),
        toml::Value::Array(_) => Err("nested arrays are not valid option values".to_owned()),
        toml::Value::Table(_) => Err("tables are not valid option values".to_owned()),
    }
}

fn is_duration(arg: &Arg) -> bool {
    let id = arg.get_value_parser().type_id();
    id == TypeId::of::<Duration>() || id == TypeId::of::<GoDuration>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{drop_overridden, normalize_go_args, parse_go_bool, parse_go_duration};

    fn cmd() -> Command {
        Command::new("nsqd")
            .args_override_self(true)
            .arg(Arg::new("config").long("config"))
            .arg(
                Arg::new("mem-queue-size")
                    .long("mem-queue-size")
                    .default_value("10000"),
            )
            .arg(
                Arg::new("msg-timeout")
                    .long("msg-timeout")
                    .value_parser(parse_go_duration)
                    .default_value("1m0s"),
            )
            .arg(
                Arg::new("sync-timeout")
                    .long("sync-timeout")
                    .value_parser(clap::value_parser!(GoDuration))
                    .default_value("2s"),
            )
            .arg(
                crate::value::go_bool_flag(Arg::new("snappy").long("snappy")).default_value("true"),
            )
            .arg(Arg::new("switch").long("switch").action(ArgAction::SetTrue))
            .arg(
                Arg::new("lookupd-tcp-address")
                    .long("lookupd-tcp-address")
                    .action(ArgAction::Append),
            )
            .arg(
                Arg::new("pct")
                    .long("pct")
                    .action(ArgAction::Append)
                    .value_delimiter(',')
                    .value_parser(clap::value_parser!(f64)),
            )
            .arg(Arg::new("node-id").long("node-id"))
    }

    const RENAMES: &[(&str, &str)] = &[
        ("id", "node-id"),
        ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
    ];

    fn strs(c: &ConfigArgs) -> Vec<String> {
        c.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn converts_every_value_kind() {
        let c = config_to_args(
            r#"
            mem_queue_size = 5
            msg_timeout = 60000
            sync_timeout = "1.5s"
            snappy = false
            switch = true
            nsqlookupd_tcp_addresses = ["a:4160", "b:4160"]
            pct = [1.0, 0.99]
            id = 7
            "#,
            RENAMES,
            &cmd(),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let mut got = strs(&c);
        got.sort();
        assert_eq!(
            got,
            [
                "--lookupd-tcp-address=a:4160",
                "--lookupd-tcp-address=b:4160",
                "--mem-queue-size=5",
                "--msg-timeout=1m0s",
                "--node-id=7",
                "--pct=0.99",
                "--pct=1",
                "--snappy=false",
                "--switch",
                "--sync-timeout=1.5s",
            ]
        );
        let mut argv = vec![OsString::from("nsqd")];
        argv.extend(c.args);
        let m = cmd().try_get_matches_from(argv).unwrap();
        assert_eq!(
            m.get_one::<Duration>("msg-timeout"),
            Some(&Duration::from_secs(60))
        );
        assert_eq!(
            m.get_one::<GoDuration>("sync-timeout"),
            Some(&GoDuration(Duration::from_millis(1500)))
        );
        assert_eq!(m.get_one::<bool>("snappy"), Some(&false));
        assert!(m.get_flag("switch"));
    }

    #[test]
    fn switch_false_is_omitted_and_strings_split_for_repeatables() {
        let c = config_to_args(
            "switch = false\nnsqlookupd_tcp_addresses = 'a:1,b:2'",
            RENAMES,
            &cmd(),
        )
        .unwrap();
        assert_eq!(
            strs(&c),
            ["--lookupd-tcp-address=a:1", "--lookupd-tcp-address=b:2"]
        );
    }

    #[test]
    fn unknown_and_shadowed_keys_are_warnings() {
        let c = config_to_args(
            "bogus = 1\nlookupd_tcp_address = ['x']\nconfig = 'x.toml'\nhelp = true\nnode_id = 3",
            RENAMES,
            &cmd(),
        )
        .unwrap();
        assert!(c.args.is_empty(), "{:?}", c.args);
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
        let all = c.warnings.join("\n");
        assert!(all.contains("\"bogus\""));
        assert!(all.contains("did you mean \"nsqlookupd_tcp_addresses\""));
        assert!(all.contains("did you mean \"id\""));
        assert!(all.contains("only be given on the command line"));
    }

    #[test]
    fn extra_cli_only_flags_are_ignored() {
        let c = config_to_args_except(
            "mem_queue_size = 'nope'",
            RENAMES,
            &["mem-queue-size"],
            &cmd(),
        )
        .unwrap();
        assert!(c.args.is_empty());
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (text, key) in [
            ("mem_queue_size = [1, 2]", "mem_queue_size"),
            ("msg_timeout = -5", "msg_timeout"),
            ("msg_timeout = 1.5", "msg_timeout"),
            ("mem_queue_size = { a = 1 }", "mem_queue_size"),
            (
                "nsqlookupd_tcp_addresses = [['a']]",
                "nsqlookupd_tcp_addresses",
            ),
            ("mem_queue_size = 1979-05-27", "mem_queue_size"),
        ] {
            match config_to_args(text, RENAMES, &cmd()) {
                Err(ConfigFileError::InvalidValue { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            config_to_args("mem_queue_size = ", RENAMES, &cmd()),
            Err(ConfigFileError::Toml(_))
        ));
    }

    #[test]
    fn command_line_beats_config_beats_default() {
        let cmd = cmd();
        let names = crate::long_flag_names(&cmd);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let config = config_to_args(
            "mem_queue_size = 5\nmsg_timeout = '5s'\nnsqlookupd_tcp_addresses = ['c:1', 'c:2']\nsnappy = false",
            RENAMES,
            &cmd,
        )
        .unwrap();
        let user = normalize_go_args(
            ["-mem-queue-size", "9", "-lookupd-tcp-address=u:1"].map(OsString::from),
            &names,
        );
        let mut argv = vec![OsString::from("nsqd")];
        argv.extend(drop_overridden(&config.args, &user, &cmd));
        argv.extend(user);
        let m = cmd.try_get_matches_from(argv).unwrap();
        assert_eq!(m.get_one::<String>("mem-queue-size").unwrap(), "9");
        assert_eq!(
            m.get_one::<Duration>("msg-timeout"),
            Some(&Duration::from_secs(5))
        );
        let lookupds: Vec<&String> = m.get_many("lookupd-tcp-address").unwrap().collect();
        assert_eq!(lookupds, ["u:1"]);
        assert_eq!(m.get_one::<bool>("snappy"), Some(&false));
        assert_eq!(
            m.get_one::<GoDuration>("sync-timeout"),
            Some(&GoDuration(Duration::from_secs(2)))
        );
        assert!(parse_go_bool("true").unwrap());
    }
}
