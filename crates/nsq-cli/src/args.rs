//! Go flag spellings on top of clap.
//!
//! Go's `flag` package treats `-name` and `--name` the same, so NSQ documentation, init scripts
//! and test suites use both (`nsqd -mem-queue-size 5`, `nsqd --snappy=false`). clap reads a
//! single dash as a cluster of short flags, so `-mem-queue-size` would fail. Rather than
//! teaching clap Go's rules, [`normalize_go_args`] rewrites the arguments beforehand: a single
//! dash followed by a *known* long flag name becomes a double dash. Anything else (short flags
//! such as nsq_tail's `-n`, values, positional arguments) is left alone.

use std::collections::HashSet;
use std::ffi::OsString;

use clap::{Arg, ArgAction, Command};

/// Rewrites Go-style single-dash long flags (`-name`, `-name=value`) into clap's `--name`
/// spelling.
///
/// An argument is rewritten only when the text after the single dash is exactly one of
/// `long_flags`, or one of them followed by `=`. Everything after a bare `--` is left as is,
/// as are arguments that are not valid UTF-8.
pub fn normalize_go_args(
    args: impl IntoIterator<Item = OsString>,
    long_flags: &[&str],
) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut past_terminator = false;
    for arg in args {
        if past_terminator {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            past_terminator = true;
            out.push(arg);
            continue;
        }
        let rewritten = arg.to_str().and_then(|s| {
            let rest = s.strip_prefix('-')?;
            if rest.starts_with('-') {
                return None;
            }
            let name = rest.split_once('=').map_or(rest, |(name, _)| name);
            long_flags
                .contains(&name)
                .then(|| OsString::from(format!("-{s}")))
        });
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// Every long flag name `cmd` accepts (including aliases and clap's generated `help`/`version`),
/// for use as [`normalize_go_args`]'s `long_flags`.
pub fn long_flag_names(cmd: &Command) -> Vec<String> {
    let mut cmd = cmd.clone();
    cmd.build();
    let mut names = Vec::new();
    for arg in cmd.get_arguments() {
        names.extend(arg.get_long().map(str::to_owned));
        names.extend(
            arg.get_all_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned),
        );
    }
    names
}

/// Removes from `config_args` every argument for a flag that also appears in `user_args`.
///
/// This is what makes "command line > config file" hold for repeatable flags: with
/// `args_override_self` a later scalar value replaces an earlier one, but a repeatable
/// (`ArgAction::Append`) flag would accumulate the config values *and* the user's. Go replaces
/// the whole list instead, and so do we, for every flag (dropping scalars too keeps a bad config
/// value for a flag the user overrode from producing an error, as in Go).
///
/// `config_args` must be in the `--name[=value]` form produced by
/// [`config_to_args`](crate::config_to_args); `user_args` should already have gone through
/// [`normalize_go_args`] and must not include the program name.
pub fn drop_overridden(
    config_args: &[OsString],
    user_args: &[OsString],
    cmd: &Command,
) -> Vec<OsString> {
    let mut cmd = cmd.clone();
    cmd.build();
    let user_set = flags_set_by(user_args, &cmd);
    config_args
        .iter()
        .filter(|arg| {
            let id = arg
                .to_str()
                .and_then(|s| s.strip_prefix("--"))
                .map(|rest| rest.split_once('=').map_or(rest, |(name, _)| name))
                .and_then(|name| find_long(&cmd, name))
                .map(|a| a.get_id().as_str().to_owned());
            !matches!(id, Some(id) if user_set.contains(&id))
        })
        .cloned()
        .collect()
}

/// The ids of the arguments that `args` sets. `cmd` must have been built.
fn flags_set_by(args: &[OsString], cmd: &Command) -> HashSet<String> {
    let mut set = HashSet::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str() else { continue };
        if s == "--" {
            break;
        }
        if let Some(rest) = s.strip_prefix("--") {
            let (name, has_value) = match rest.split_once('=') {
                Some((name, _)) => (name, true),
                None => (rest, false),
            };
            if let Some(a) = find_long(cmd, name) {
                set.insert(a.get_id().as_str().to_owned());
                if !has_value && takes_separate_value(a) {
                    iter.next();
                }
            }
        } else if let Some(cluster) = s.strip_prefix('-') {
            // A cluster of short flags: `-n5`, `-n 5`, `-vq`.
            for (i, c) in cluster.char_indices() {
                let Some(a) = find_short(cmd, c) else { break };
                set.insert(a.get_id().as_str().to_owned());
                if a.get_action().takes_values() {
                    let value_follows = i + c.len_utf8() == cluster.len();
                    if value_follows && takes_separate_value(a) {
                        iter.next();
                    }
                    break;
                }
            }
        }
    }
    set
}

/// Whether `--name value` (value in the next argument) is how `arg` takes its value.
fn takes_separate_value(arg: &Arg) -> bool {
    let takes_values = !matches!(
        arg.get_action(),
        ArgAction::SetTrue
            | ArgAction::SetFalse
            | ArgAction::Count
            | ArgAction::Help
            | ArgAction::HelpShort
            | ArgAction::HelpLong
            | ArgAction::Version
    );
    let min_values = arg.get_num_args().map_or(1, |r| r.min_values());
    takes_values && !arg.is_require_equals_set() && min_values > 0
}

fn find_long<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name))
    })
}

fn find_short(cmd: &Command, c: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| {
        a.get_short() == Some(c) || a.get_all_short_aliases().is_some_and(|al| al.contains(&c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn cmd() -> Command {
        Command::new("t")
            .args_override_self(true)
            .arg(Arg::new("topic").long("topic").action(ArgAction::Append))
            .arg(Arg::new("mem-queue-size").long("mem-queue-size"))
            .arg(
                Arg::new("snappy")
                    .long("snappy")
                    .num_args(0..=1)
                    .require_equals(true)
                    .default_missing_value("true"),
            )
            .arg(Arg::new("n").short('n'))
            .arg(Arg::new("v").short('v').action(ArgAction::SetTrue))
            .arg(Arg::new("old").long("new-name").alias("old-name"))
    }

    #[test]
    fn rewrites_single_dash_long_flags() {
        let flags = ["mem-queue-size", "snappy", "topic"];
        let got = normalize_go_args(
            os(&[
                "-mem-queue-size",
                "5",
                "-snappy=false",
                "--topic=a",
                "-topic",
                "b",
                "-n",
                "3",
                "-unknown",
                "-",
                "-snappyx",
                "--",
                "-topic",
            ]),
            &flags,
        );
        assert_eq!(
            got,
            os(&[
                "--mem-queue-size",
                "5",
                "--snappy=false",
                "--topic=a",
                "--topic",
                "b",
                "-n",
                "3",
                "-unknown",
                "-",
                "-snappyx",
                "--",
                "-topic",
            ])
        );
    }

    #[test]
    fn short_flags_are_rewritten_only_when_listed() {
        assert_eq!(
            normalize_go_args(os(&["-n", "5"]), &["n"]),
            os(&["--n", "5"])
        );
        assert_eq!(normalize_go_args(os(&["-n5"]), &["n"]), os(&["-n5"]));
    }

    #[test]
    fn long_flag_names_include_aliases_and_help() {
        let names = long_flag_names(&cmd());
        for n in [
            "topic",
            "mem-queue-size",
            "snappy",
            "new-name",
            "old-name",
            "help",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
        assert!(!names.iter().any(|x| x == "n"));
    }

    #[test]
    fn help_is_reachable_with_a_single_dash() {
        let cmd = cmd();
        let names = long_flag_names(&cmd);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut argv = os(&["t"]);
        argv.extend(normalize_go_args(os(&["-help"]), &names));
        let err = cmd.try_get_matches_from(argv).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn drops_config_args_for_flags_the_user_set() {
        let config = os(&[
            "--topic=c1",
            "--topic=c2",
            "--mem-queue-size=7",
            "--snappy=false",
            "--new-name=x",
        ]);
        let user = os(&["--topic", "u1", "--old-name=y"]);
        assert_eq!(
            drop_overridden(&config, &user, &cmd()),
            os(&["--mem-queue-size=7", "--snappy=false"])
        );
        // A bare require-equals flag does not swallow the next argument.
        let user = os(&["--snappy", "--mem-queue-size", "--topic"]);
        assert_eq!(
            drop_overridden(&config, &user, &cmd()),
            os(&["--topic=c1", "--topic=c2", "--new-name=x"])
        );
        // Everything after `--` is positional.
        let user = os(&["--", "--topic=x"]);
        assert_eq!(drop_overridden(&config, &user, &cmd()), config);
    }

    #[test]
    fn short_clusters_are_understood() {
        let c = Command::new("t")
            .arg(Arg::new("n").short('n').long("n-long"))
            .arg(Arg::new("v").short('v').action(ArgAction::SetTrue))
            .arg(Arg::new("topic").long("topic"));
        let config = os(&["--n-long=1", "--topic=t"]);
        assert_eq!(
            drop_overridden(&config, &os(&["-vn5"]), &c),
            os(&["--topic=t"])
        );
        // `-n --topic`: "--topic" is -n's value, not a flag.
        assert_eq!(
            drop_overridden(&config, &os(&["-n", "--topic"]), &c),
            os(&["--topic=t"])
        );
    }
}
