//! Shared plumbing for NSQ's command-line tools (`nsq_tail`, `to_nsq`, `nsq_stat`,
//! `nsq_to_file`, `nsq_to_nsq`, `nsq_to_http`), built on `nsq-client`: Go-style flag
//! parsing, `--version` strings, `--consumer-opt`/`--producer-opt` passthrough, signals,
//! fatal errors, the tools' HTTP client set-up (`nsq_http_client`: keep-alive, `http://` and
//! `https://`, `--http-client-tls-root-ca-file`), the `--mode` host pool and the
//! `--status-every` timing line.
//!
//! Every binary follows Go NSQ 1.3's flag names, defaults and validation messages (see
//! `../shared/nsq-interface.md` §7); differences are documented in the binary's module docs.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

/// The NSQ release whose tools these are.
pub const NSQ_VERSION: &str = "1.3.0";

/// `<tool> v1.3.0 (nsq-rs <crate version>)`.
pub fn version_string(tool: &str) -> String {
    format!(
        "{tool} v{NSQ_VERSION} (nsq-rs {})",
        env!("CARGO_PKG_VERSION")
    )
}

/// The IDENTIFY user agent: `<tool>/1.3.0 nsq-rs/<version>`.
pub fn user_agent(tool: &str) -> String {
    format!("{tool}/{NSQ_VERSION} nsq-rs/{}", env!("CARGO_PKG_VERSION"))
}

/// Parses the process arguments into `T`, accepting Go's spellings (`-flag value`,
/// `-flag=value`, `--flag value`). On a bad flag clap prints the error and the usage and
/// exits with status 2, as Go's `flag` package does.
pub fn parse_args<T: CommandFactory + FromArgMatches>() -> T {
    parse_args_from(std::env::args_os())
}

/// [`parse_args`] on explicit arguments (the first one is the program name).
pub fn parse_args_from<T: CommandFactory + FromArgMatches>(
    args: impl IntoIterator<Item = OsString>,
) -> T {
    let cmd = T::command();
    let longs = nsq_cli::long_flag_names(&cmd);
    let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
    let mut args = args.into_iter();
    let mut argv: Vec<OsString> = args.next().into_iter().collect();
    argv.extend(nsq_cli::normalize_go_args(args, &longs));
    let matches = cmd.try_get_matches_from(argv).unwrap_or_else(|e| e.exit());
    T::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// clap value parser for Go integer flags (`strconv.ParseInt(s, 0, 64)` syntax).
pub fn go_int(s: &str) -> Result<i64, String> {
    nsq_cli::parse_go_int(s).map_err(|e| e.to_string())
}

/// clap value parser for Go boolean flags.
pub fn go_bool(s: &str) -> Result<bool, String> {
    nsq_cli::parse_go_bool(s).map_err(|e| e.to_string())
}

/// clap value parser for Go durations (`250ms`, `2s`, `1m30s`).
pub fn go_duration(s: &str) -> Result<Duration, String> {
    nsq_cli::parse_go_duration(s).map_err(|e| e.to_string())
}

/// Prints `<tool>: <msg>` on stderr and exits with status 1 (Go's `log.Fatal`).
pub fn fatal(tool: &str, msg: impl std::fmt::Display) -> ! {
    eprintln!("{tool}: {msg}");
    std::process::exit(1)
}

/// Logs to stderr; `NSQ_LOG` (an `EnvFilter`) overrides the default level `warn`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NSQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Applies `--consumer-opt`/`--producer-opt` values (`key,value`; a bare `key` means
/// `key,true`, as go-nsq's `ConfigFlag`) to `config`. `flag` names the flag in errors.
///
/// Every go-nsq option `nsq_client::Config::set` knows is accepted, including TLS
/// (`tls_v1`, `tls_root_ca_file`, `tls_cert`, `tls_key`, `tls_insecure_skip_verify`),
/// compression (`snappy`, `deflate`, `deflate_level`) and `auth_secret`; Go's tools have no
/// dedicated flags for these either.
pub fn apply_opts(
    config: &mut nsq_client::Config,
    opts: &[String],
    flag: &str,
) -> anyhow::Result<()> {
    for opt in opts {
        let (key, value) = opt.split_once(',').unwrap_or((opt.as_str(), "true"));
        config
            .set(key, value)
            .with_context(|| format!("--{flag} {opt:?}"))?;
    }
    config.validate().with_context(|| format!("--{flag}"))?;
    Ok(())
}

/// Resolves when the process receives one of SIGINT, SIGTERM (and SIGHUP if `hup`).
pub async fn shutdown_signal(hup: bool) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut hangup = if hup {
        Some(signal(SignalKind::hangup()).expect("install SIGHUP handler"))
    } else {
        None
    };
    let hup_recv = async {
        match hangup.as_mut() {
            Some(h) => {
                h.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = hup_recv => {}
    }
}

/// A random number in `0..999_999`, like Go's `rand.Int() % 999999` in `nsq_tail`.
pub fn random_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish() % 999_999
}

/// `--http-client-tls-root-ca-file` (an nsq-rs option: Go's tools have no TLS flags for their
/// HTTP requests and trust only the system roots, which stay the default here). It applies to
/// the tool's own requests and to its consumers' `https://` lookupd queries
/// (`nsq_client::Config::lookupd_tls_root_ca_file`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct HttpTlsArgs {
    /// path to a PEM CA file trusted (instead of the system roots) for https:// addresses (nsq-rs)
    #[arg(long = "http-client-tls-root-ca-file", value_name = "FILE")]
    pub http_client_tls_root_ca_file: Option<std::path::PathBuf>,
}

impl HttpTlsArgs {
    /// The client options every tool starts from: `User-Agent` `<tool>/1.3.0 nsq-rs/<version>`,
    /// the given timeouts, the CA file.
    fn options(
        &self,
        tool: &str,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> nsq_http_client::Options {
        nsq_http_client::Options {
            connect_timeout,
            request_timeout,
            tls: nsq_http_client::TlsOptions {
                root_ca_file: self.http_client_tls_root_ca_file.clone(),
                ..Default::default()
            },
            user_agent: Some(user_agent(tool)),
            ..Default::default()
        }
    }
}

/// The tools' client for NSQ daemons (`nsq_http_client`, pooled, `http://` and `https://`),
/// with Go's `http_api` retry over HTTPS when an nsqd with `--tls-required` answers 403.
pub fn http_client(
    tool: &str,
    tls: &HttpTlsArgs,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> anyhow::Result<nsq_http_client::Client> {
    nsq_http_client::Client::new(nsq_http_client::Options {
        follow_tls_required: true,
        ..tls.options(tool, connect_timeout, request_timeout)
    })
    .context("--http-client-tls-root-ca-file")
}

/// The client for user endpoints (`nsq_to_http`): no TLS_REQUIRED retry, up to `max_idle`
/// kept-alive connections per host.
pub fn endpoint_client(
    tool: &str,
    tls: &HttpTlsArgs,
    connect_timeout: Duration,
    request_timeout: Duration,
    max_idle: usize,
) -> anyhow::Result<nsq_http_client::Client> {
    nsq_http_client::Client::new(nsq_http_client::Options {
        pool_max_idle_per_host: max_idle,
        ..tls.options(tool, connect_timeout, request_timeout)
    })
    .context("--http-client-tls-root-ca-file")
}

/// `GET <addr><path>` of an NSQ daemon's API (`addr` is `host:port`, `http://host:port` or
/// `https://host:port`) with NSQ's V1 `Accept` header: status and body.
pub async fn http_get(
    client: &nsq_http_client::Client,
    addr: &str,
    path: &str,
) -> anyhow::Result<(u16, bytes::Bytes)> {
    let r = client
        .get_nsq(&nsq_http_client::endpoint(addr, path))
        .await?;
    Ok((r.status, r.body))
}

/// Go's `url.QueryEscape`: unreserved bytes kept, space as `+`, the rest `%XX`.
pub fn query_escape(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len());
    for &b in data {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Upstream selection of `nsq_to_nsq`/`nsq_to_http` (`--mode`).
///
/// nsq-rs implements `hostpool` and `epsilon-greedy` as round-robin over the hosts that
/// are not marked dead: a host that failed is skipped for a retry period (30 s, doubling up
/// to 15 min like go-hostpool's), unless every host is marked, then all are tried again.
#[derive(Debug)]
pub struct HostPool {
    hosts: Vec<String>,
    state: std::sync::Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    next: usize,
    /// Per host: (dead until, current retry delay).
    dead: Vec<Option<(std::time::Instant, Duration)>>,
}

/// The `--mode` values Go accepts.
pub fn parse_mode(mode: &str) -> Result<(), String> {
    match mode {
        "round-robin" | "hostpool" | "epsilon-greedy" => Ok(()),
        other => Err(format!(
            "invalid --mode {other:?} (round-robin, hostpool, epsilon-greedy)"
        )),
    }
}

impl HostPool {
    /// A pool over `hosts`; `round_robin` disables dead-host marking.
    pub fn new(hosts: Vec<String>) -> HostPool {
        let n = hosts.len();
        HostPool {
            hosts,
            state: std::sync::Mutex::new(PoolState {
                next: 0,
                dead: vec![None; n],
            }),
        }
    }

    /// Index of the next host to use.
    pub fn get(&self, skip_dead: bool) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let n = self.hosts.len().max(1);
        let now = std::time::Instant::now();
        for _ in 0..n {
            let i = st.next % n;
            st.next = st.next.wrapping_add(1);
            let alive = match st.dead.get(i).copied().flatten() {
                Some((until, _)) => until <= now,
                None => true,
            };
            if !skip_dead || alive {
                return i;
            }
        }
        let i = st.next % n;
        st.next = st.next.wrapping_add(1);
        i
    }

    /// Records the outcome of a request to host `i`.
    pub fn mark(&self, i: usize, ok: bool) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = st.dead.get_mut(i) else {
            return;
        };
        if ok {
            *slot = None;
        } else {
            let delay = slot.map_or(Duration::from_secs(30), |(_, d)| {
                (d * 2).min(Duration::from_secs(900))
            });
            *slot = Some((std::time::Instant::now() + delay, delay));
        }
    }

    /// The hosts.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }
}

/// `--status-every`: collects request durations and prints
/// `finished N requests - 99th: Xms - 95th: Yms - avg: Zms` (Go's format) every `every`.
#[derive(Debug)]
pub struct StatusEvery {
    tool: &'static str,
    every: usize,
    reqs: std::sync::Mutex<Vec<Duration>>,
}

impl StatusEvery {
    /// `every` = 0 disables it.
    pub fn new(tool: &'static str, every: usize) -> StatusEvery {
        StatusEvery {
            tool,
            every,
            reqs: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Records one request's duration, printing the status line when due.
    pub fn record(&self, d: Duration) {
        if self.every == 0 {
            return;
        }
        let mut reqs = self.reqs.lock().unwrap_or_else(|e| e.into_inner());
        reqs.push(d);
        if reqs.len() < self.every {
            return;
        }
        let len = reqs.len();
        let total: Duration = reqs.iter().sum();
        let avg = total.as_secs_f64() * 1000.0 / len as f64;
        reqs.sort();
        let pct = |p: f64| {
            let idx = ((p / 100.0) * len as f64 + 0.5).ceil() as usize;
            reqs[idx.min(len - 1)].as_secs_f64() * 1000.0
        };
        eprintln!(
            "{}: finished {} requests - 99th: {:.02}ms - 95th: {:.02}ms - avg: {:.02}ms",
            self.tool,
            len,
            pct(99.0),
            pct(95.0),
            avg
        );
        reqs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_suffix() {
        assert!(version_string("nsq_tail").starts_with("nsq_tail v1.3.0 (nsq-rs "));
        assert!(random_suffix() < 999_999);
    }

    #[test]
    fn escaping() {
        assert_eq!(query_escape(b"a b&c=d/~*"), "a+b%26c%3Dd%2F~%2A");
    }

    #[test]
    fn opts_are_applied() {
        let mut c = nsq_client::Config::new();
        apply_opts(&mut c, &["max_attempts,7".into()], "consumer-opt").unwrap();
        assert_eq!(c.max_attempts, 7);
        assert!(apply_opts(&mut c, &["nope,1".into()], "consumer-opt").is_err());
    }
}
