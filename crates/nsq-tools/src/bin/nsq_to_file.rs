//! `nsq_to_file`: consumes topics and appends every message body plus `\n` to a file per
//! topic (NSQ 1.3's `apps/nsq_to_file`).
//!
//! # Durability
//! Messages are written as they arrive but **finished only after the file has been fsynced**
//! (at-least-once): they are held (up to `--max-in-flight`) and synced + finished together
//! every `--sync-interval`, when `--max-in-flight` messages are held, when the consumer is
//! "starved" (one nsqd connection holds ≥ 85% of its share of `--max-in-flight`, go-nsq's
//! `IsStarved`), on rotation and on exit. With `--gzip` every sync ends the current gzip
//! member, so the file is a concatenation of complete members and a crash loses at most the
//! unfinished member, whose messages nsqd redelivers.
//!
//! # Files
//! `--filename-format` tokens: `<TOPIC>`, `<HOST>` (`--host-identifier`, else the short
//! hostname), `<PID>`, `<DATETIME>` (`--datetime-format`, strftime) and `<REV>` (`-000000`,
//! `-000001`, ... bumped when the file exists or is rotated; required with gzip, rotation
//! or a `--work-dir`, removed otherwise). `.gz` is appended with `--gzip`. In-progress
//! files live in `--work-dir` (default: `--output-dir`) and are moved to `--output-dir`
//! on close with an exclusive rename (hard link + unlink, bumping `<REV>` on conflicts).
//! SIGHUP closes the current files (they are reopened with the next message).
//!
//! # Differences from Go
//! - Without `--topic`, every topic of `/topics` of the lookupds (only those matching
//!   `--topic-pattern`, searched unanchored like Go's `regexp.MatchString`, when given) is
//!   logged, and the list is refreshed every `--topic-refresh`.
//! - `--log-level`/`--log-prefix` are accepted; logging goes through `NSQ_LOG`.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use clap::{ArgAction, Parser};
use flate2::write::GzEncoder;
use flate2::Compression;
use futures::StreamExt;
use nsq_client::{Config, Consumer, Message};
use nsq_tools::{fatal, go_bool, go_duration, go_int};
use tokio::sync::watch;

const TOOL: &str = "nsq_to_file";

#[derive(Parser, Debug)]
#[command(
    name = "nsq_to_file",
    about = "Consumes NSQ topics and writes every message to a file per topic",
    disable_version_flag = true
)]
struct Args {
    /// nsq channel
    #[arg(long, default_value = "nsq_to_file")]
    channel: String,
    /// option to passthrough to the consumer's Config, `key,value` (may be given multiple times)
    #[arg(long = "consumer-opt", value_name = "KEY,VALUE")]
    consumer_opt: Vec<String>,
    /// strftime compatible format for <DATETIME> in filename format
    #[arg(long = "datetime-format", default_value = "%Y-%m-%d_%H")]
    datetime_format: String,
    /// output filename format (<TOPIC>, <HOST>, <PID>, <DATETIME>, <REV> are replaced. <REV> is increased when file already exists)
    #[arg(
        long = "filename-format",
        default_value = "<TOPIC>.<HOST><REV>.<DATETIME>.log"
    )]
    filename_format: String,
    /// gzip output files.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    gzip: bool,
    /// gzip compression level (1-9, 1=BestSpeed, 9=BestCompression)
    #[arg(long = "gzip-level", default_value = "6", value_parser = go_int)]
    gzip_level: i64,
    /// value to output in log filename in place of hostname. <SHORT_HOST> and <HOSTNAME> are valid replacement tokens
    #[arg(
        long = "host-identifier",
        default_value = "",
        hide_default_value = true
    )]
    host_identifier: String,
    /// timeout for HTTP connect
    #[arg(long = "http-client-connect-timeout", default_value = "2s", value_parser = go_duration)]
    http_client_connect_timeout: Duration,
    /// timeout for HTTP request
    #[arg(long = "http-client-request-timeout", default_value = "5s", value_parser = go_duration)]
    http_client_request_timeout: Duration,
    /// set log verbosity: debug, info, warn, error, or fatal (accepted; use NSQ_LOG)
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    /// log message prefix (accepted, unused)
    #[arg(long = "log-prefix", default_value = "[nsq_to_file] ")]
    log_prefix: String,
    /// lookupd HTTP address (may be given multiple times)
    #[arg(long = "lookupd-http-address", value_name = "ADDR")]
    lookupd_http_address: Vec<String>,
    /// max number of messages to allow in flight
    #[arg(long = "max-in-flight", default_value = "200", value_parser = go_int)]
    max_in_flight: i64,
    /// nsqd TCP address (may be given multiple times)
    #[arg(long = "nsqd-tcp-address", value_name = "ADDR")]
    nsqd_tcp_address: Vec<String>,
    /// directory to write output files to
    #[arg(long = "output-dir", default_value = "/tmp")]
    output_dir: String,
    /// rotate the file every duration
    #[arg(long = "rotate-interval", default_value = "0s", value_parser = go_duration)]
    rotate_interval: Duration,
    /// rotate the file when it grows bigger than rotate-size bytes
    #[arg(long = "rotate-size", default_value = "0", value_parser = go_int)]
    rotate_size: i64,
    /// skip writing empty files
    #[arg(long = "skip-empty-files", action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    skip_empty_files: bool,
    /// sync file to disk every duration
    #[arg(long = "sync-interval", default_value = "30s", value_parser = go_duration)]
    sync_interval: Duration,
    /// nsq topic (may be given multiple times)
    #[arg(long, value_name = "TOPIC")]
    topic: Vec<String>,
    /// only log topics matching the following pattern (needs --lookupd-http-address)
    #[arg(long = "topic-pattern", default_value = "", hide_default_value = true)]
    topic_pattern: String,
    /// how frequently the topic list should be refreshed
    #[arg(long = "topic-refresh", default_value = "1m", value_parser = go_duration)]
    topic_refresh: Duration,
    /// print version string
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = go_bool)]
    version: bool,
    /// directory for in-progress files before moving to output-dir
    #[arg(long = "work-dir", default_value = "", hide_default_value = true)]
    work_dir: String,
    #[command(flatten)]
    tls: nsq_tools::HttpTlsArgs,
}

fn main() {
    let args: Args = nsq_tools::parse_args();
    if args.version {
        println!("{}", nsq_tools::version_string(TOOL));
        return;
    }
    nsq_tools::init_logging();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run(args));
    rt.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

/// Settings shared by every topic's logger.
#[derive(Debug)]
struct Settings {
    channel: String,
    output_dir: PathBuf,
    work_dir: PathBuf,
    datetime_format: String,
    filename_format: String,
    host_identifier: String,
    gzip: Option<Compression>,
    skip_empty_files: bool,
    rotate_size: u64,
    rotate_interval: Duration,
    sync_interval: Duration,
    max_in_flight: usize,
    nsqd: Vec<String>,
    lookupd: Vec<String>,
}

async fn run(mut args: Args) -> i32 {
    if args.channel.is_empty() {
        fatal(TOOL, "--channel is required");
    }
    if args.http_client_connect_timeout.is_zero() {
        fatal(TOOL, "--http-client-connect-timeout should be positive");
    }
    if args.http_client_request_timeout.is_zero() {
        fatal(TOOL, "--http-client-request-timeout should be positive");
    }
    if args.nsqd_tcp_address.is_empty() && args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "--nsqd-tcp-address or --lookupd-http-address required.",
        );
    }
    if !args.nsqd_tcp_address.is_empty() && !args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "use --nsqd-tcp-address or --lookupd-http-address not both",
        );
    }
    if !check_datetime_format(&args.datetime_format) {
        fatal(
            TOOL,
            format!("invalid --datetime-format {:?}", args.datetime_format),
        );
    }
    if !(1..=9).contains(&args.gzip_level) {
        fatal(
            TOOL,
            format!(
                "invalid --gzip-level value ({}), should be 1-9",
                args.gzip_level
            ),
        );
    }
    if !args.topic_pattern.is_empty() {
        if !args.topic.is_empty() {
            fatal(TOOL, "--topic and --topic-pattern cannot be used together");
        }
        if args.lookupd_http_address.is_empty() {
            fatal(TOOL, "--topic-pattern requires --lookupd-http-address");
        }
        if let Err(e) = regex::Regex::new(&args.topic_pattern) {
            fatal(TOOL, format!("invalid --topic-pattern: {e}"));
        }
    }
    if args.topic.is_empty() && args.lookupd_http_address.is_empty() {
        fatal(
            TOOL,
            "use --topic to list at least one topic to subscribe to or specify at least one \
             --lookupd-http-address to subscribe to all its topics",
        );
    }
    if args.max_in_flight <= 0 {
        fatal(TOOL, "--max-in-flight must be positive");
    }
    if args.rotate_size < 0 {
        fatal(TOOL, "--rotate-size must not be negative");
    }
    if args.sync_interval.is_zero() {
        fatal(TOOL, "--sync-interval should be positive");
    }
    if args.work_dir.is_empty() {
        args.work_dir = args.output_dir.clone();
    }

    let mut config = Config::new();
    config.user_agent = nsq_tools::user_agent(TOOL);
    if let Err(e) = nsq_tools::apply_opts(&mut config, &args.consumer_opt, "consumer-opt") {
        fatal(TOOL, format!("{e:#}"));
    }
    config.max_in_flight = args.max_in_flight as u64;
    config.lookupd_tls_root_ca_file = args.tls.http_client_tls_root_ca_file.clone();

    let settings = Arc::new(Settings {
        channel: args.channel.clone(),
        output_dir: PathBuf::from(&args.output_dir),
        work_dir: PathBuf::from(&args.work_dir),
        datetime_format: args.datetime_format.clone(),
        filename_format: args.filename_format.clone(),
        host_identifier: args.host_identifier.clone(),
        gzip: args.gzip.then(|| Compression::new(args.gzip_level as u32)),
        skip_empty_files: args.skip_empty_files,
        rotate_size: args.rotate_size as u64,
        rotate_interval: args.rotate_interval,
        sync_interval: args.sync_interval,
        max_in_flight: args.max_in_flight as usize,
        nsqd: args.nsqd_tcp_address.clone(),
        lookupd: args.lookupd_http_address.clone(),
    });
    // Validate the filename format once, before connecting anything.
    if let Err(e) = compute_filename_format(&settings, "topic") {
        fatal(TOOL, e);
    }

    // Control channel to the loggers: 0 = run, odd = HUP count, u64::MAX = terminate.
    let (ctl_tx, ctl_rx) = watch::channel(Control::default());
    let from_lookupd = args.topic.is_empty();
    let mut topics: Vec<String> = args.topic.clone();
    let http = if from_lookupd {
        match nsq_tools::http_client(
            TOOL,
            &args.tls,
            args.http_client_connect_timeout,
            args.http_client_request_timeout,
        ) {
            Ok(c) => Some(c),
            Err(e) => fatal(TOOL, format!("{e:#}")),
        }
    } else {
        None
    };
    if let Some(http) = &http {
        topics = match lookupd_topics(&args, http).await {
            Ok(t) => t,
            Err(e) => fatal(TOOL, format!("could not retrieve topic list: {e:#}")),
        };
    }
    let mut known: HashSet<String> = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for topic in topics {
        if known.insert(topic.clone()) {
            let logger = start_logger(&settings, &config, &topic, ctl_rx.clone()).await;
            tasks.spawn(logger.run());
        }
    }

    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
    let mut refresh = tokio::time::interval(args.topic_refresh.max(Duration::from_millis(10)));
    refresh.tick().await;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                ctl_tx.send_modify(|c| c.hup += 1);
            }
            _ = refresh.tick(), if from_lookupd => {
                let Some(http) = &http else { continue };
                match lookupd_topics(&args, http).await {
                    Ok(list) => {
                        for topic in list {
                            if known.insert(topic.clone()) {
                                let logger =
                                    start_logger(&settings, &config, &topic, ctl_rx.clone()).await;
                                tasks.spawn(logger.run());
                            }
                        }
                    }
                    Err(e) => eprintln!("{TOOL}: could not retrieve topic list: {e:#}"),
                }
            }
            Some(res) = tasks.join_next() => {
                if let Err(e) = res {
                    eprintln!("{TOOL}: logger task failed: {e}");
                    return 1;
                }
            }
        }
    }
    ctl_tx.send_modify(|c| c.term = true);
    while let Some(res) = tasks.join_next().await {
        if let Err(e) = res {
            eprintln!("{TOOL}: logger task failed: {e}");
            return 1;
        }
    }
    0
}

#[derive(Debug, Default, Clone, Copy)]
struct Control {
    hup: u64,
    term: bool,
}

/// Fetches the topic list of every lookupd (`/topics`), merged and sorted.
async fn lookupd_topics(
    args: &Args,
    client: &nsq_http_client::Client,
) -> anyhow::Result<Vec<String>> {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for addr in &args.lookupd_http_address {
        let r = nsq_tools::http_get(client, addr, "/topics").await;
        match r {
            Ok((200, body)) => {
                let t: nsq_http::api::lookupd::Topics = nsq_http::api::from_body(&body)?;
                all.extend(t.topics);
            }
            Ok((status, _)) => errors.push(format!("{addr}: status {status}")),
            Err(e) => errors.push(format!("{addr}: {e:#}")),
        }
    }
    if all.is_empty() && !errors.is_empty() {
        anyhow::bail!("{}", errors.join("; "));
    }
    if !args.topic_pattern.is_empty() {
        let re = regex::Regex::new(&args.topic_pattern)?;
        all.retain(|t| re.is_match(t));
    }
    all.sort();
    all.dedup();
    Ok(all)
}

async fn start_logger(
    settings: &Arc<Settings>,
    config: &Config,
    topic: &str,
    ctl: watch::Receiver<Control>,
) -> FileLogger {
    let format = match compute_filename_format(settings, topic) {
        Ok(f) => f,
        Err(e) => fatal(TOOL, e),
    };
    let consumer = match Consumer::new(topic.to_owned(), settings.channel.clone(), config.clone()) {
        Ok(c) => c,
        Err(e) => fatal(
            TOOL,
            format!("couldn't create logger for topic {topic}: {e}"),
        ),
    };
    for addr in &settings.nsqd {
        if let Err(e) = consumer.connect_to_nsqd(addr).await {
            fatal(TOOL, format!("failed to connect to nsqd {addr}: {e}"));
        }
    }
    for addr in &settings.lookupd {
        if let Err(e) = consumer.connect_to_lookupd(addr).await {
            fatal(TOOL, format!("bad --lookupd-http-address {addr}: {e}"));
        }
    }
    FileLogger {
        settings: settings.clone(),
        topic: topic.to_owned(),
        format,
        consumer: Some(consumer),
        ctl,
        out: None,
        filename: String::new(),
        open_time: Instant::now(),
        filesize: 0,
        rev: 0,
    }
}

/// Applies `<TOPIC>`, `<HOST>`, `<PID>` and the `<REV>` rules to `--filename-format`.
fn compute_filename_format(s: &Settings, topic: &str) -> Result<String, String> {
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let short = hostname.split('.').next().unwrap_or("").to_owned();
    let identifier = if s.host_identifier.is_empty() {
        short.clone()
    } else {
        s.host_identifier
            .replace("<SHORT_HOST>", &short)
            .replace("<HOSTNAME>", &hostname)
    };
    let mut f = s.filename_format.clone();
    if s.gzip.is_some()
        || s.rotate_size > 0
        || !s.rotate_interval.is_zero()
        || s.work_dir != s.output_dir
    {
        if !f.contains("<REV>") {
            return Err(
                "missing <REV> in --filename-format when gzip, rotation, or work dir enabled"
                    .into(),
            );
        }
    } else {
        f = f.replace("<REV>", "");
    }
    f = f
        .replace("<TOPIC>", topic)
        .replace("<HOST>", &identifier)
        .replace("<PID>", &std::process::id().to_string());
    if s.gzip.is_some() && !f.ends_with(".gz") {
        f.push_str(".gz");
    }
    Ok(f)
}

enum Sink {
    Plain(File),
    Gzip(GzEncoder<File>),
}

struct Output {
    path: PathBuf,
    sink: Sink,
}

struct FileLogger {
    settings: Arc<Settings>,
    topic: String,
    format: String,
    consumer: Option<Consumer>,
    ctl: watch::Receiver<Control>,
    out: Option<Output>,
    /// The current filename (format applied, `<REV>` not yet).
    filename: String,
    open_time: Instant,
    /// Uncompressed bytes written to the current file.
    filesize: u64,
    rev: u32,
}

impl FileLogger {
    fn die(&self, what: impl std::fmt::Display) -> ! {
        fatal(
            TOOL,
            format!("[{}/{}] {what}", self.topic, self.settings.channel),
        )
    }

    async fn run(mut self) {
        let mut consumer = self.consumer.take().expect("consumer");
        let stop = consumer.stop_handle();
        let mut held: Vec<Message> = Vec::with_capacity(self.settings.max_in_flight);
        let mut per_conn: HashMap<String, usize> = HashMap::new();
        let start = tokio::time::Instant::now() + self.settings.sync_interval;
        let mut ticker = tokio::time::interval_at(start, self.settings.sync_interval);
        let mut last_hup = self.ctl.borrow().hup;
        let mut stopping = false;
        loop {
            let mut sync = false;
            let mut close_file = false;
            let mut exit = false;
            tokio::select! {
                changed = self.ctl.changed(), if !stopping => {
                    let c = *self.ctl.borrow_and_update();
                    if changed.is_err() || c.term {
                        // Sync and finish what is held, then stop: the consumer requeues what
                        // it buffered and ends the stream once every message is answered.
                        stopping = true;
                        sync = true;
                        stop.stop();
                    } else if c.hup != last_hup {
                        last_hup = c.hup;
                        sync = true;
                        close_file = true;
                    }
                }
                _ = ticker.tick(), if !stopping => {
                    if self.needs_rotation() {
                        if self.settings.skip_empty_files {
                            close_file = true;
                        } else {
                            self.update_file();
                        }
                    }
                    sync = true;
                }
                next = consumer.next() => match next {
                    None => {
                        sync = true;
                        close_file = true;
                        exit = true;
                    }
                    Some(msg) => {
                        if self.needs_rotation() {
                            // Sync the old file (and finish its messages) before closing it.
                            self.sync_and_finish(&mut held, &mut per_conn);
                            self.update_file();
                        }
                        self.write(msg.body());
                        *per_conn.entry(msg.nsqd_address().to_owned()).or_default() += 1;
                        held.push(msg);
                        if held.len() >= self.settings.max_in_flight
                            || self.starved(&consumer, &per_conn)
                        {
                            sync = true;
                        }
                    }
                },
            }
            if sync {
                self.sync_and_finish(&mut held, &mut per_conn);
            }
            if close_file {
                self.close();
            }
            if exit {
                break;
            }
        }
    }

    /// go-nsq's `IsStarved`: some connection holds ≥ 85% of its RDY share.
    fn starved(&self, consumer: &Consumer, per_conn: &HashMap<String, usize>) -> bool {
        let conns = consumer.stats().connections.max(1);
        let share = (self.settings.max_in_flight / conns).max(1);
        let threshold = ((share as f64 * 0.85) as usize).max(1);
        per_conn.values().any(|&n| n >= threshold)
    }

    fn write(&mut self, body: &[u8]) {
        let Some(out) = self.out.as_mut() else {
            self.die("no output file open");
        };
        let r = match &mut out.sink {
            Sink::Plain(f) => f.write_all(body).and_then(|_| f.write_all(b"\n")),
            Sink::Gzip(g) => g.write_all(body).and_then(|_| g.write_all(b"\n")),
        };
        if let Err(e) = r {
            self.die(format!("writing message to disk: {e}"));
        }
        self.filesize += body.len() as u64 + 1;
    }

    /// Makes everything written durable, then finishes the held messages.
    fn sync_and_finish(&mut self, held: &mut Vec<Message>, per_conn: &mut HashMap<String, usize>) {
        if held.is_empty() {
            return;
        }
        tracing::info!(
            "[{}/{}] syncing {} records to disk",
            self.topic,
            self.settings.channel,
            held.len()
        );
        if let Err(e) = tokio::task::block_in_place(|| self.sync()) {
            self.die(format!("failed syncing messages: {e}"));
        }
        for m in held.drain(..) {
            m.finish();
        }
        per_conn.clear();
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let level = self.settings.gzip;
        let sink = std::mem::replace(&mut out.sink, Sink::Plain(placeholder_file()?));
        out.sink = match sink {
            Sink::Plain(mut f) => {
                f.flush()?;
                f.sync_all()?;
                Sink::Plain(f)
            }
            Sink::Gzip(g) => {
                // End the current gzip member (its trailer has the checksum) and start a
                // new one: the file is a concatenation of complete members.
                let f = g.finish()?;
                f.sync_all()?;
                Sink::Gzip(GzEncoder::new(f, level.unwrap_or_default()))
            }
        };
        Ok(())
    }

    fn current_filename(&self) -> String {
        let dt = strftime(&self.settings.datetime_format, SystemTime::now());
        self.format.replace("<DATETIME>", &dt)
    }

    fn needs_rotation(&self) -> bool {
        if self.out.is_none() {
            return true;
        }
        if self.current_filename() != self.filename {
            return true;
        }
        if !self.settings.rotate_interval.is_zero()
            && self.open_time.elapsed() > self.settings.rotate_interval
        {
            return true;
        }
        self.settings.rotate_size > 0 && self.filesize > self.settings.rotate_size
    }

    /// Closes the current file: ends gzip, fsyncs and moves it to the output dir.
    fn close(&mut self) {
        let Some(out) = self.out.take() else { return };
        let file = match out.sink {
            Sink::Plain(f) => Ok(f),
            Sink::Gzip(g) => g.finish(),
        };
        let file = file.unwrap_or_else(|e| self.die(format!("failed to close GZIP writer: {e}")));
        if let Err(e) = tokio::task::block_in_place(|| file.sync_all()) {
            self.die(format!("failed to fsync output file: {e}"));
        }
        drop(file);
        let s = &self.settings;
        if s.work_dir == s.output_dir {
            return;
        }
        let src = out.path;
        let rel = src.strip_prefix(&s.work_dir).unwrap_or(&src).to_path_buf();
        let dst = s.output_dir.join(&rel);
        match exclusive_rename(&src, &dst) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => self.die(format!(
                "unable to move file from {} to {}: {e}",
                src.display(),
                dst.display()
            )),
        }
        let template = s.output_dir.join(&self.filename);
        let mut rev = self.rev + 1;
        loop {
            let dst = PathBuf::from(
                template
                    .to_string_lossy()
                    .replace("<REV>", &format!("-{rev:06}")),
            );
            match exclusive_rename(&src, &dst) {
                Ok(()) => {
                    tracing::info!(
                        "renamed finished file {} to {} to avoid overwrite",
                        src.display(),
                        dst.display()
                    );
                    return;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => rev += 1,
                Err(e) => self.die(format!(
                    "unable to rename file from {} to {}: {e}",
                    src.display(),
                    dst.display()
                )),
            }
        }
    }

    /// Closes the current file and opens the next one (bumping `<REV>` as needed).
    fn update_file(&mut self) {
        self.close();
        let filename = self.current_filename();
        if filename != self.filename {
            self.rev = 0;
        } else {
            self.rev += 1;
        }
        self.filename = filename;
        self.open_time = Instant::now();
        let s = self.settings.clone();
        let full = s.work_dir.join(&self.filename);
        if let Err(e) = make_parent_dir(&full) {
            self.die(format!("unable to create dir: {e}"));
        }
        loop {
            let abs = PathBuf::from(
                full.to_string_lossy()
                    .replace("<REV>", &format!("-{:06}", self.rev)),
            );
            if s.work_dir != s.output_dir {
                let rel = abs.strip_prefix(&s.work_dir).unwrap_or(&abs);
                let out_name = s.output_dir.join(rel);
                if let Err(e) = make_parent_dir(&out_name) {
                    self.die(format!("unable to create dir: {e}"));
                }
                match std::fs::metadata(&out_name) {
                    Ok(_) => {
                        tracing::warn!("output file already exists: {}", out_name.display());
                        self.rev += 1;
                        continue;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => self.die(format!(
                        "unable to stat output file {}: {e}",
                        out_name.display()
                    )),
                }
            }
            let mut oo = OpenOptions::new();
            oo.write(true);
            if s.gzip.is_some() || !s.rotate_interval.is_zero() {
                oo.create_new(true);
            } else {
                oo.create(true).append(true);
            }
            let file = match oo.open(&abs) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::warn!("working file already exists: {}", abs.display());
                    self.rev += 1;
                    continue;
                }
                Err(e) => self.die(format!("unable to open {}: {e}", abs.display())),
            };
            tracing::info!("[{}/{}] opening {}", self.topic, s.channel, abs.display());
            let size = file
                .metadata()
                .unwrap_or_else(|e| self.die(format!("unable to stat {}: {e}", abs.display())))
                .len();
            self.filesize = size;
            if s.rotate_size > 0 && size > s.rotate_size {
                self.rev += 1;
                continue;
            }
            let sink = match s.gzip {
                Some(level) => Sink::Gzip(GzEncoder::new(file, level)),
                None => Sink::Plain(file),
            };
            self.out = Some(Output { path: abs, sink });
            return;
        }
    }
}

/// A throwaway handle used while swapping sinks (never written to).
fn placeholder_file() -> std::io::Result<File> {
    File::open("/dev/null")
}

fn make_parent_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir),
        _ => Ok(()),
    }
}

/// Moves `src` to `dst` without overwriting: hard link, then unlink.
fn exclusive_rename(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::hard_link(src, dst)?;
    std::fs::remove_file(src)
}

/// `<DATETIME>`: `t` in the local time zone (as Go's nsq_to_file), formatted with chrono's
/// strftime. The format was checked at start-up by [`check_datetime_format`].
fn strftime(format: &str, t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Local> = t.into();
    format_time(format, &dt)
}

fn format_time<Tz: chrono::TimeZone>(format: &str, dt: &chrono::DateTime<Tz>) -> String
where
    Tz::Offset: std::fmt::Display,
{
    use std::fmt::Write;
    let mut s = String::new();
    if write!(s, "{}", dt.format(format)).is_err() {
        // Unreachable after check_datetime_format; never panic on a log file name.
        s = format.to_owned();
    }
    s
}

/// Whether chrono understands every `%` sequence of `format`.
fn check_datetime_format(format: &str) -> bool {
    !chrono::format::StrftimeItems::new(format).any(|i| matches!(i, chrono::format::Item::Error))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_formats() {
        use chrono::TimeZone;
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = chrono::Utc.timestamp_opt(1_709_211_909, 0).unwrap();
        assert_eq!(format_time("%Y-%m-%d_%H", &t), "2024-02-29_13");
        assert_eq!(
            format_time("%F %T %a %b %j %y %I%p %%", &t),
            "2024-02-29 13:05:09 Thu Feb 060 24 01PM %"
        );
        assert!(check_datetime_format("%Y-%m-%d_%H"));
        assert!(!check_datetime_format("%Y %!"));
    }

    #[test]
    fn filename_format_rules() {
        let mut s = Settings {
            channel: "c".into(),
            output_dir: "/tmp".into(),
            work_dir: "/tmp".into(),
            datetime_format: "%Y".into(),
            filename_format: "<TOPIC>.<HOST><REV>.<DATETIME>.log".into(),
            host_identifier: "id-<SHORT_HOST>".into(),
            gzip: None,
            skip_empty_files: false,
            rotate_size: 0,
            rotate_interval: Duration::ZERO,
            sync_interval: Duration::from_secs(30),
            max_in_flight: 200,
            nsqd: vec![],
            lookupd: vec![],
        };
        let f = compute_filename_format(&s, "t").unwrap();
        assert!(
            f.starts_with("t.id-") && f.ends_with(".<DATETIME>.log"),
            "{f}"
        );
        assert!(!f.contains("<REV>"));
        s.gzip = Some(Compression::new(6));
        let f = compute_filename_format(&s, "t").unwrap();
        assert!(f.contains("<REV>") && f.ends_with(".log.gz"), "{f}");
        s.filename_format = "<TOPIC>.log".into();
        assert!(compute_filename_format(&s, "t").is_err());
    }
}
