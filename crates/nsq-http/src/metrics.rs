//! Prometheus `/metrics`, the pieces nsqd, nsqlookupd and nsqadmin share: the exposition
//! (content negotiation between the Prometheus text format 0.0.4 and OpenMetrics 1.0), the
//! axum route, `nsq_build_info` / `nsq_start_time_seconds`, a `process_*` collector read from
//! `/proc/self` (Linux; nothing elsewhere), and small helpers for writing a metric family from
//! a snapshot inside a [`Collector`].
//!
//! # Why `prometheus-client`
//! It is the Prometheus organisation's own Rust client (`prometheus/client_rust`), written to
//! the OpenMetrics spec (counters are families named without `_total`, units are part of
//! the descriptor, `# EOF` ends an OpenMetrics exposition) and, since 0.24, with a
//! Prometheus text 0.0.4 encoder too, so both formats come from one registry. It has no global
//! registry (each daemon builds its own, so in-process tests running several daemons do not
//! mix their metrics), and its [`Collector`] trait lets a daemon produce metrics at scrape
//! time from its own state. That last point is what we need: nsqd's per-topic and per-channel
//! figures are written from one `/stats` snapshot per scrape, instead of registering a metric
//! per topic and updating it on the publish path. The older `prometheus` crate (tikv) has a
//! process-wide default registry, writes only the 0.0.4 text format and needs a `Desc`/
//! `MetricFamily` protobuf-shaped value per family for custom collectors.
//!
//! # Formats
//! A scrape whose `Accept` prefers `application/openmetrics-text` (Prometheus's default
//! scrape `Accept` does) gets OpenMetrics 1.0.0; anything else (`curl`, `promtool check
//! metrics` fed by `curl`, an `Accept` without it) gets the text format 0.0.4 with
//! `Content-Type: text/plain; version=0.0.4; charset=utf-8`.
//!
//! A scrape that accepts gzip (Prometheus does) gets the body gzipped at the fastest level.
//!
//! # Cost
//! Encoding (and compressing) runs on a blocking thread ([`tokio::task::spawn_blocking`]),
//! so a large exposition (nsqd with 10,000 topics: see BENCHMARKS.md) does not hold up a
//! runtime worker.

use std::fmt;
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::encoding::{
    EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
pub use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
pub use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of OpenMetrics 1.0.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition format of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality above 0 and at least that of any
    /// `text/plain` entry; the 0.0.4 text format otherwise (also without the header).
    pub fn from_accept(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut om, mut text) = (0.0f32, 0.0f32);
        for entry in accept.split(',') {
            let mut parts = entry.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    /// The response's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The exposition of `registry` in `format`.
pub fn encode(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(4096);
    match format {
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?,
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry)?,
    }
    Ok(out)
}

/// The `/metrics` response for a request with `headers` (see [`Format::from_accept`]). The
/// encoding (which runs the registry's collectors) happens on a blocking thread.
pub async fn respond(registry: Arc<Registry>, headers: &HeaderMap) -> Response {
    // Several `Accept` headers are one list (RFC 9110 5.3).
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let format = Format::from_accept((!accept.is_empty()).then(|| accept.join(",")).as_deref());
    let gzip = accepts_gzip(headers);
    let job = move || -> Result<(Vec<u8>, bool), fmt::Error> {
        let text = encode(&registry, format)?;
        if gzip {
            if let Some(z) = gzip_fast(text.as_bytes()) {
                return Ok((z, true));
            }
        }
        Ok((text.into_bytes(), false))
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(Ok((body, gzipped))) => {
            let mut res = body.into_response();
            let h = res.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            if gzipped {
                h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            h.insert(
                header::VARY,
                HeaderValue::from_static("Accept, Accept-Encoding"),
            );
            res
        }
        Ok(Err(fmt::Error)) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to encode metrics\n",
        )
            .into_response(),
    }
}

/// Whether `Accept-Encoding` allows gzip (Prometheus always sends `gzip`); `gzip;q=0`
/// refuses it.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// gzip at the fastest level: the exposition is repetitive text (nsqd's at 10,000 topics
/// shrinks about 20 times), and a scrape should not spend long compressing.
fn gzip_fast(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut z = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    z.write_all(data).ok()?;
    z.finish().ok()
}

/// The `GET /metrics` route serving `registry`, for any router state.
pub fn route<S>(registry: Arc<Registry>) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    axum::routing::get(move |headers: HeaderMap| {
        let registry = registry.clone();
        async move { respond(registry, &headers).await }
    })
}

/// A registry with what every daemon exposes: `nsq_build_info{daemon,version,nsq_rs_version}`
/// (`version`: the NSQ version implemented, as `/info` reports it; `nsq_rs_version`: this
/// implementation's),
/// `nsq_start_time_seconds` and the `process_*` metrics ([`ProcessCollector`]).
pub fn daemon_registry(
    daemon: &'static str,
    nsq_version: &'static str,
    start_time_unix: i64,
) -> Registry {
    let mut r = Registry::default();
    r.register(
        "nsq_build",
        "Build information: the NSQ version implemented and the nsq-rs version.",
        Info::new(vec![
            ("daemon", daemon),
            ("version", nsq_version),
            ("nsq_rs_version", env!("CARGO_PKG_VERSION")),
        ]),
    );
    r.register_collector(Box::new(StartTime(start_time_unix)));
    r.register_collector(Box::new(ProcessCollector));
    r
}

#[derive(Debug)]
struct StartTime(i64);

impl Collector for StartTime {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        gauge(
            &mut enc,
            "nsq_start_time",
            "When the daemon started, Unix time.",
            Some(&Unit::Seconds),
            self.0,
        )
    }
}

/// One unlabelled gauge.
pub fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeGaugeValue,
) -> Result<(), fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

/// One unlabelled counter. `name` is without the unit and `_total`: the encoders append
/// `_<unit>` and then `_total` (OpenMetrics names the family without `_total`).
pub fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl EncodeCounterValue,
) -> Result<(), fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    ConstCounter::new(value).encode(m)
}

/// A gauge family: one sample per `(labels, value)`. Nothing is written when `samples` is
/// empty (a family without samples would only be noise).
pub fn gauge_family<L, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, V)>,
) -> Result<(), fmt::Error>
where
    L: EncodeLabelSet,
    V: EncodeGaugeValue,
{
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family (`name` without `_total`); nothing when `samples` is empty.
pub fn counter_family<L, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, V)>,
) -> Result<(), fmt::Error>
where
    L: EncodeLabelSet,
    V: EncodeCounterValue,
{
    let mut samples = samples.into_iter().peekable();
    if samples.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// This process's figures, the names and meanings of client_golang's process collector:
/// `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`. Read from `/proc/self` at each scrape; a figure that cannot
/// be read is left out (so on systems without `/proc` there are none).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessCollector;

/// What [`ProcessCollector`] reads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Process start, Unix seconds.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/stat`, `/proc/stat` (boot time), `/proc/self/fd` and
    /// `/proc/self/limits`.
    pub fn read() -> ProcessStats {
        let read = |p: &str| std::fs::read_to_string(p).ok();
        let mut s = read("/proc/self/stat")
            .map(|stat| {
                ProcessStats::from_stat(
                    &stat,
                    read("/proc/stat").as_deref().and_then(boot_time),
                    rustix::param::clock_ticks_per_second(),
                    rustix::param::page_size() as u64,
                )
            })
            .unwrap_or_default();
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        s.max_fds = read("/proc/self/limits")
            .as_deref()
            .and_then(max_open_files);
        s
    }

    /// Parses `/proc/<pid>/stat` (see proc(5)): fields 14 and 15 (utime, stime, in clock
    /// ticks), 22 (starttime, ticks after boot), 23 (vsize, bytes), 24 (rss, pages). The
    /// command name (field 2) may hold spaces and parentheses, so fields are counted from
    /// the last `)`.
    pub fn from_stat(stat: &str, boot_time: Option<u64>, ticks: u64, page: u64) -> ProcessStats {
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return ProcessStats::default();
        };
        // rest starts at field 3 (state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = ticks.max(1) as f64;
        ProcessStats {
            cpu_seconds: field(14)
                .zip(field(15))
                .map(|(u, s)| (u + s) as f64 / ticks),
            resident_bytes: field(24).map(|p| p * page),
            virtual_bytes: field(23),
            open_fds: None,
            max_fds: None,
            start_time_seconds: field(22)
                .zip(boot_time)
                .map(|(start, boot)| boot as f64 + start as f64 / ticks),
        }
    }
}

/// `btime` of `/proc/stat`: boot time, Unix seconds.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits` (`unlimited` is left out).
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.cpu_seconds {
            counter(
                &mut enc,
                "process_cpu",
                "Total user and system CPU time spent.",
                Some(&Unit::Seconds),
                v,
            )?;
        }
        if let Some(v) = s.resident_bytes {
            gauge(
                &mut enc,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                v,
            )?;
        }
        if let Some(v) = s.virtual_bytes {
            gauge(
                &mut enc,
                "process_virtual_memory",
                "Virtual memory size.",
                Some(&Unit::Bytes),
                v,
            )?;
        }
        if let Some(v) = s.open_fds {
            gauge(
                &mut enc,
                "process_open_fds",
                "Open file descriptors.",
                None,
                v,
            )?;
        }
        if let Some(v) = s.max_fds {
            gauge(
                &mut enc,
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit).",
                None,
                v,
            )?;
        }
        if let Some(v) = s.start_time_seconds {
            gauge(
                &mut enc,
                "process_start_time",
                "Start time of the process, Unix time.",
                Some(&Unit::Seconds),
                v,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Text);
        assert_eq!(
            Format::from_accept(Some("text/plain;version=0.0.4")),
            Format::Text
        );
        // Prometheus 2.x's default scrape Accept.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0")),
            Format::Text
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text;q=0.2, text/plain")),
            Format::Text
        );
    }

    #[test]
    fn gzip_negotiation_and_round_trip() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            accepts_gzip(&m)
        };
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(h("gzip"));
        assert!(h("deflate, GZIP;q=0.5"));
        assert!(!h("gzip;q=0"));
        assert!(!h("identity"));
        let text = "nsq_topic_depth{topic=\"a\"} 1\n".repeat(1000);
        let z = gzip_fast(text.as_bytes()).unwrap();
        assert!(z.len() < text.len() / 10, "{}", z.len());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&z[..]), &mut back)
            .unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn proc_stat_fields() {
        // comm with a space and a ')' inside, as the kernel writes it.
        let stat = "4242 (nsq d) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 150 0 0 20 0 \
                    9 0 12345 104857600 2560 18446744073709551615";
        let s = ProcessStats::from_stat(stat, Some(1_700_000_000), 100, 4096);
        assert_eq!(s.cpu_seconds, Some(4.0));
        assert_eq!(s.resident_bytes, Some(2560 * 4096));
        assert_eq!(s.virtual_bytes, Some(104_857_600));
        assert_eq!(s.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(
            ProcessStats::from_stat("garbage", None, 100, 4096),
            ProcessStats::default()
        );
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files("Max open files  unlimited unlimited files\n"),
            None
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() > 0);
        assert!(s.cpu_seconds.unwrap() >= 0.0);
        let start = s.start_time_seconds.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }

    #[derive(Debug)]
    struct Families;

    impl Collector for Families {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
            gauge_family(
                &mut enc,
                "nsq_x_depth",
                "Depth.",
                None,
                [([("topic", "a")], 3u64), ([("topic", "b\"\\")], 0)],
            )?;
            counter_family(
                &mut enc,
                "nsq_x_messages",
                "Messages.",
                None,
                [([("topic", "a")], 7u64)],
            )?;
            // Empty: not written at all.
            gauge_family::<[(&str, &str); 1], u64>(&mut enc, "nsq_x_none", "None.", None, [])?;
            counter(&mut enc, "nsq_x", "Bytes.", Some(&Unit::Bytes), 9u64)
        }
    }

    #[test]
    fn both_formats() {
        let mut r = daemon_registry("nsqd", "1.3.0", 1_700_000_000);
        r.register_collector(Box::new(Families));
        let text = encode(&r, Format::Text).unwrap();
        for want in [
            "# TYPE nsq_build_info gauge\n",
            "nsq_build_info{daemon=\"nsqd\",version=\"1.3.0\",nsq_rs_version=\"",
            "# TYPE nsq_start_time_seconds gauge\nnsq_start_time_seconds 1700000000\n",
            "# HELP nsq_x_depth Depth.\n# TYPE nsq_x_depth gauge\nnsq_x_depth{topic=\"a\"} 3\n\
             nsq_x_depth{topic=\"b\\\"\\\\\"} 0\n",
            "# TYPE nsq_x_messages_total counter\nnsq_x_messages_total{topic=\"a\"} 7\n",
            "# TYPE nsq_x_bytes_total counter\nnsq_x_bytes_total 9\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(!text.contains("nsq_x_none"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
        #[cfg(target_os = "linux")]
        for want in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let om = encode(&r, Format::OpenMetrics).unwrap();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE nsq_build info\n"), "{om}");
        assert!(
            om.contains("# TYPE nsq_x_messages counter\nnsq_x_messages_total{topic=\"a\"} 7\n"),
            "{om}"
        );
        assert!(om.contains("# UNIT nsq_x_bytes bytes\n"), "{om}");
    }
}
