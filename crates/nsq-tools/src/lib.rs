//! Shared plumbing for NSQ's command-line tools (`nsq_tail`, `to_nsq`, `nsq_stat`,
//! `nsq_to_file`, `nsq_to_nsq`, `nsq_to_http`), built on `nsq-client`: Go-style flag
//! parsing, `--version` strings, `--consumer-opt`/`--producer-opt` passthrough, signals,
//! fatal errors, a minimal HTTP/1.1 client (`/stats`, lookupd, `nsq_to_http`'s requests),
//! the `--mode` host pool and the `--status-every` timing line.
//!
//! Every binary follows Go NSQ 1.3's flag names, defaults and validation messages (see
//! `../shared/nsq-interface.md` §7); differences are documented in the binary's module docs.

use std::ffi::OsString;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{CommandFactory, FromArgMatches};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Strips an optional `http://` scheme and trailing slash: `host:port`.
pub fn host_port(addr: &str) -> &str {
    addr.trim_start_matches("http://").trim_end_matches('/')
}

/// One `GET` over HTTP/1.1 (`Connection: close`): returns status and body.
/// `connect_timeout` bounds the TCP connect, `request_timeout` the rest.
pub async fn http_get(
    addr: &str,
    path: &str,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let hp = host_port(addr);
    let mut stream = tokio::time::timeout(connect_timeout, TcpStream::connect(hp))
        .await
        .map_err(|_| anyhow!("connect to {hp}: timed out after {connect_timeout:?}"))?
        .with_context(|| format!("connect to {hp}"))?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {hp}\r\nAccept: application/vnd.nsq; version=1.0\r\n\
         User-Agent: nsq-rs/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let raw = tokio::time::timeout(request_timeout, async {
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    })
    .await
    .map_err(|_| anyhow!("GET http://{hp}{path}: timed out after {request_timeout:?}"))?
    .with_context(|| format!("GET http://{hp}{path}"))?;
    parse_response(&raw).with_context(|| format!("GET http://{hp}{path}"))
}

fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP response (no header end)"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP status line"))?;
    let body = &raw[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunked body"))?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            return Ok(out);
        }
        let start = eol + 2;
        if data.len() < start + size {
            bail!("truncated chunked body");
        }
        out.extend_from_slice(&data[start..start + size]);
        data = data.get(start + size + 2..).unwrap_or_default();
    }
}

/// An `http://host[:port]/path?query` URL split for a raw HTTP/1.1 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port` to connect to (port 80 when absent).
    pub authority: String,
    /// The `Host` header value (as written in the URL).
    pub host: String,
    /// Path and query (`/` when empty).
    pub path: String,
}

/// Parses an `http://` URL; `https://` and other schemes are errors (not supported yet).
pub fn parse_http_url(url: &str) -> anyhow::Result<HttpUrl> {
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            bail!("{url}: https is not supported yet by nsq-rs (use http://)");
        }
        bail!("{url}: unsupported URL (expected http://host:port/path)");
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if host.is_empty() {
        bail!("{url}: missing host");
    }
    let authority = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Ok(HttpUrl {
        authority,
        host: host.to_owned(),
        path,
    })
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

/// One HTTP/1.1 request (`Connection: close`) with extra `headers`; returns the status.
/// `connect_timeout` bounds the TCP connect, `request_timeout` the whole exchange.
pub async fn http_request(
    method: &str,
    url: &HttpUrl,
    headers: &[(String, String)],
    body: Option<&[u8]>,
    connect_timeout: Duration,
    request_timeout: Duration,
) -> anyhow::Result<u16> {
    let work = async {
        let mut stream = tokio::time::timeout(connect_timeout, TcpStream::connect(&url.authority))
            .await
            .map_err(|_| anyhow!("connect to {}: timed out", url.authority))?
            .with_context(|| format!("connect to {}", url.authority))?;
        let _ = stream.set_nodelay(true);
        let mut req = format!(
            "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            url.path, url.host
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        req.push_str("\r\n");
        let mut buf = req.into_bytes();
        if let Some(b) = body {
            buf.extend_from_slice(b);
        }
        stream.write_all(&buf).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let (status, _) = parse_response(&raw)?;
        Ok::<u16, anyhow::Error>(status)
    };
    tokio::time::timeout(request_timeout, work)
        .await
        .map_err(|_| anyhow!("{method} http://{}{}: timed out", url.host, url.path))?
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
    fn parses_plain_and_chunked_responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((s, b.as_slice()), (200, b"ok".as_slice()));
        let (s, b) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (404, b"abcde".as_slice()));
    }

    #[test]
    fn version_and_suffix() {
        assert!(version_string("nsq_tail").starts_with("nsq_tail v1.3.0 (nsq-rs "));
        assert!(random_suffix() < 999_999);
        assert_eq!(host_port("http://127.0.0.1:4161/"), "127.0.0.1:4161");
    }

    #[test]
    fn urls_and_escaping() {
        let u = parse_http_url("http://127.0.0.1:8080/p?q=1").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080", "/p?q=1")
        );
        let u = parse_http_url("http://example.com?x").unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("example.com:80", "/?x")
        );
        assert!(parse_http_url("https://x/")
            .unwrap_err()
            .to_string()
            .contains("not supported yet"));
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
