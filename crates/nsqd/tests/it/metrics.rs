//! Prometheus `GET /metrics` on a real nsqd: values after publishing and consuming over TCP,
//! the 0.0.4 text format checked by `promtool check metrics` (Debian's `prometheus` package;
//! `.ci/run` installs it), OpenMetrics on request, `--http-api-token` with and without
//! `--metrics-without-token`, and HTTPS.
//!
//! Without promtool the strict-parse part FAILS under `CI=true` and is reported as not run
//! otherwise (scripts/test.sh counts it so); the rest of each test still runs.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{try_http_request_with, wait_until, HttpResponse, RawClient, TestNsqd};

const WAIT: Duration = Duration::from_secs(10);
const TEXT_0_0_4: &str = "text/plain; version=0.0.4; charset=utf-8";

fn get_metrics(addr: SocketAddr, headers: &[(&str, &str)]) -> HttpResponse {
    try_http_request_with(addr, "GET", "/metrics", headers, b"").expect("GET /metrics")
}

/// The value of the sample named exactly `series` (name plus label set as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// `promtool`, if installed (`$NSQ_PROMTOOL`, else `promtool` on `PATH`).
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NSQ_PROMTOOL") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    })
}

/// `promtool check metrics` on `exposition` (it parses the 0.0.4 text format strictly and
/// lints names, units and help texts). Missing promtool: a failure under `CI=true`, a loud
/// "not run" otherwise.
fn promtool_check(exposition: &str) {
    let Some(tool) = promtool() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "promtool is missing under CI=true: install Debian's prometheus package \
                 (apt-get install prometheus; .ci/run does)"
            );
        }
        eprintln!(
            "\n*** NOT RUN: promtool check metrics (promtool not installed: apt-get install \
             prometheus) ***\n*** (it fails instead under CI=true) ***\n"
        );
        return;
    };
    let mut child = Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\nexposition:\n{exposition}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each line is a comment (`# HELP` / `# TYPE` of the family that follows) or
/// `name{labels} value`; every family is declared once; names carry the `nsq_` or `process_`
/// prefix; counters end in `_total`.
fn check_shape(text: &str) {
    let mut families = std::collections::HashSet::new();
    let mut family_type = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(families.insert(name.to_owned()), "{name} declared twice");
            assert!(
                name.starts_with("nsq_") || name.starts_with("process_"),
                "{name}"
            );
            if ty == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
            family_type = name.to_owned();
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        // A histogram's samples are `<family>_bucket`, `_sum` and `_count`.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|b| *b == family_type))
            .unwrap_or(name);
        assert_eq!(base, family_type, "sample outside its family: {line}");
        let v = line.rsplit(' ').next().unwrap();
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
}

#[test]
fn metrics_follow_publishing_and_consuming() {
    const N: usize = 7;
    let nsqd = TestNsqd::start(&[]);
    let addr = nsqd.http_addr();

    // A TCP producer publishes N messages (it then counts as a producer).
    let mut producer = RawClient::connect(nsqd.tcp_addr());
    for i in 0..N {
        producer.pub_ok("prom_orders", format!("message-{i}").as_bytes());
    }
    let r = get_metrics(addr, &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(TEXT_0_0_4));
    let text = r.text();
    assert_eq!(
        value(&text, r#"nsq_topic_depth{topic="prom_orders"}"#),
        N as f64
    );
    assert_eq!(
        value(&text, r#"nsq_topic_messages_total{topic="prom_orders"}"#),
        N as f64
    );
    let bytes: usize = (0..N).map(|i| format!("message-{i}").len()).sum();
    assert_eq!(
        value(
            &text,
            r#"nsq_topic_message_bytes_total{topic="prom_orders"}"#
        ),
        bytes as f64
    );
    assert_eq!(
        value(&text, r#"nsq_topic_channels{topic="prom_orders"}"#),
        0.0
    );
    assert_eq!(value(&text, "nsq_producers"), 1.0);
    assert_eq!(value(&text, "nsq_topics"), 1.0);
    assert!(
        text.contains("nsq_build_info{daemon=\"nsqd\",version=\"1.3.0\",nsq_rs_version=\""),
        "{text}"
    );
    assert!(value(&text, "process_resident_memory_bytes") > 0.0);
    assert!(value(&text, "process_open_fds") > 0.0);
    let start = value(&text, "nsq_start_time_seconds");
    assert_eq!(start, nsqd.stats("")["start_time"].as_f64().unwrap());
    assert!((value(&text, "process_start_time_seconds") - start).abs() < 5.0);
    check_shape(&text);

    // A channel takes the topic's messages; a consumer with RDY 2 holds two in flight.
    let r = try_http_request_with(
        addr,
        "POST",
        "/channel/create?topic=prom_orders&channel=billing",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let ch = r#"{topic="prom_orders",channel="billing"}"#;
    wait_until(WAIT, "the channel holds the N messages", || {
        sample(
            &get_metrics(addr, &[]).text(),
            &format!("nsq_channel_depth{ch}"),
        ) == Some(N as f64)
    });
    let mut consumer = RawClient::connect(nsqd.tcp_addr());
    consumer.sub_ok("prom_orders", "billing", 2);
    wait_until(WAIT, "two messages in flight", || {
        sample(
            &get_metrics(addr, &[]).text(),
            &format!("nsq_channel_in_flight{ch}"),
        ) == Some(2.0)
    });
    let text = get_metrics(addr, &[]).text();
    assert_eq!(value(&text, r#"nsq_topic_depth{topic="prom_orders"}"#), 0.0);
    assert_eq!(
        value(&text, &format!("nsq_channel_depth{ch}")),
        (N - 2) as f64
    );
    assert_eq!(
        value(&text, &format!("nsq_channel_messages_total{ch}")),
        N as f64
    );
    assert_eq!(value(&text, &format!("nsq_channel_clients{ch}")), 1.0);
    assert_eq!(value(&text, &format!("nsq_channel_deferred{ch}")), 0.0);
    assert_eq!(
        value(&text, &format!("nsq_channel_requeued_total{ch}")),
        0.0
    );
    assert_eq!(
        value(&text, &format!("nsq_channel_timed_out_total{ch}")),
        0.0
    );
    assert_eq!(value(&text, &format!("nsq_channel_paused{ch}")), 0.0);
    assert_eq!(value(&text, "nsq_clients"), 1.0);
    assert_eq!(value(&text, "nsq_channels"), 1.0);
    check_shape(&text);
    promtool_check(&text);

    // Paused shows as 1.
    let r =
        try_http_request_with(addr, "POST", "/topic/pause?topic=prom_orders", &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let text = get_metrics(addr, &[]).text();
    assert_eq!(
        value(&text, r#"nsq_topic_paused{topic="prom_orders"}"#),
        1.0
    );

    // OpenMetrics when the scraper prefers it (as Prometheus does).
    let r = get_metrics(
        addr,
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert_eq!(
        r.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om = r.text();
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE nsq_topic_messages counter\n"), "{om}");
    assert_eq!(
        value(&om, r#"nsq_topic_messages_total{topic="prom_orders"}"#),
        N as f64
    );
    drop(consumer);
    drop(producer);
}

#[test]
fn metrics_are_behind_the_api_token_unless_exempted() {
    let auth = [("Authorization", "Bearer s3cret")];
    let nsqd = TestNsqd::start(&["--http-api-token=s3cret"]);
    let r = get_metrics(nsqd.http_addr(), &[]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["message"], "UNAUTHORIZED");
    let r = get_metrics(nsqd.http_addr(), &auth);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text().contains("nsq_topics 0\n"), "{}", r.text());
    drop(nsqd);

    let nsqd = TestNsqd::start(&["--http-api-token=s3cret", "--metrics-without-token"]);
    let r = get_metrics(nsqd.http_addr(), &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(TEXT_0_0_4));
    // Only /metrics is exempted.
    let r = try_http_request_with(nsqd.http_addr(), "GET", "/stats", &[], b"").unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    let r =
        try_http_request_with(nsqd.http_addr(), "POST", "/topic/create?topic=x", &[], b"").unwrap();
    assert_eq!(r.status, 401, "{r:?}");
    let r = try_http_request_with(
        nsqd.http_addr(),
        "GET",
        "/config/metrics_without_token",
        &auth,
        b"",
    )
    .unwrap();
    assert_eq!(r.text(), "true");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_over_https() {
    use crate::tls::{https_addr, https_get, start_tls, Pki};
    let pki = Pki::new();
    let nsqd = start_tls(&pki, &["--tls-required=true"]);
    let https = https_addr(&nsqd);
    let (status, body) = https_get(https, pki.client_config(None), "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nsq_build_info{daemon=\"nsqd\""), "{body}");
    // Plain HTTP answers TLS_REQUIRED, as for every other path.
    let r = get_metrics(nsqd.http_addr(), &[]);
    assert_eq!(r.status, 403, "{r:?}");
}

/// docs/grafana/nsqd.json queries only metrics a live nsqd serves (with the features the
/// dashboard shows: e2e percentiles, a ttl and a dead-letter policy that have acted).
#[test]
fn grafana_dashboard_queries_only_metrics_nsqd_serves() {
    let path = crate::harness::workspace_root().join("docs/grafana/nsqd.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the dashboard lives in the repository)",
            path.display()
        )
    });
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs: Vec<String> = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        exprs.push(v["query"].as_str().expect("query").to_owned());
    }
    let name = regex::Regex::new(r"\b(nsq_[a-z_]+|process_[a-z_]+)\b").unwrap();
    let wanted: std::collections::BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| name.find_iter(e).map(|m| m.as_str().to_owned()))
        .collect();
    assert!(wanted.len() >= 20, "{wanted:?}");

    let nsqd = TestNsqd::start(&["--e2e-processing-latency-percentile=0.99"]);
    let mut c = RawClient::connect(nsqd.tcp_addr());
    c.sub_ok("dash", "work", 0);
    let policy = r#"{"ttl":"100ms","max_attempts":1,"dead_letter_topic":"dash.dead"}"#;
    let r = nsqd.http_post("/channel/config?topic=dash&channel=work", policy.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let mut p = RawClient::connect(nsqd.tcp_addr());
    p.pub_ok("dash", b"expires");
    std::thread::sleep(Duration::from_millis(150));
    p.pub_ok("dash", b"finished");
    p.pub_ok("dash", b"dead");
    c.rdy(5);
    let m = c.read_message(crate::harness::READ_TIMEOUT);
    c.fin(&m.id);
    let m = c.read_message(crate::harness::READ_TIMEOUT);
    c.req(&m.id, 0);
    wait_until(
        Duration::from_secs(5),
        "expired, finished, dead-lettered",
        || {
            let s = nsqd.stats("");
            crate::harness::find_channel(&s, "dash", "work").is_some_and(|ch| {
                ch["expired_count"] == 1
                    && ch["dead_lettered_count"] == 1
                    && ch["e2e_processing_latency"]["count"] == 1
            })
        },
    );
    let served = get_metrics(nsqd.http_addr(), &[]).text();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !served.lines().any(|l| l.starts_with(m.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nsqd does not serve: {missing:?}"
    );
}

/// The per-topic opt-out (`"metrics": false` in `/topic/config`): the topic and its channels
/// leave `/metrics` (cardinality at many topics) but still count in `nsq_topics`.
#[test]
fn a_topic_can_opt_out_of_metrics() {
    let nsqd = TestNsqd::start(&[]);
    for t in ["shown", "hidden"] {
        assert_eq!(
            nsqd.http_post(&format!("/topic/create?topic={t}"), b"")
                .status,
            200
        );
        let path = format!("/channel/create?topic={t}&channel=c");
        assert_eq!(nsqd.http_post(&path, b"").status, 200);
    }
    let r = nsqd.http_post("/topic/config?topic=hidden", br#"{"metrics":false}"#);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"metrics": false}));
    let text = get_metrics(nsqd.http_addr(), &[]).text();
    assert!(text.contains(r#"nsq_topic_depth{topic="shown"}"#), "{text}");
    assert!(!text.contains(r#"topic="hidden""#), "{text}");
    assert_eq!(value(&text, "nsq_topics"), 2.0);
    // Back on.
    let r = nsqd.http_post("/topic/config?topic=hidden", br#"{"metrics":null}"#);
    assert_eq!(r.json(), serde_json::json!({}));
    let text = get_metrics(nsqd.http_addr(), &[]).text();
    assert!(
        text.contains(r#"nsq_channel_depth{topic="hidden",channel="c"}"#),
        "{text}"
    );
}

/// Durable mode with `--sync-every=1`: every publish is fsynced, and the histogram counts it.
#[test]
fn fsync_latency_histogram_counts_the_syncs() {
    let nsqd = TestNsqd::start(&["--mem-queue-size=0", "--sync-every=1"]);
    let mut p = RawClient::connect(nsqd.tcp_addr());
    for i in 0..5 {
        p.pub_ok("synced", format!("m{i}").as_bytes());
    }
    let text = get_metrics(nsqd.http_addr(), &[]).text();
    let count = value(&text, "nsq_fsync_duration_seconds_count");
    assert!(
        count >= 5.0,
        "{count} fsyncs for 5 synced publishes:\n{text}"
    );
    assert!(
        text.contains(r#"nsq_fsync_duration_seconds_bucket{le="+Inf"}"#),
        "{text}"
    );
    assert!(value(&text, "nsq_fsync_duration_seconds_sum") > 0.0);
}
