//! The parts nsqadmin adds on top of reading the cluster: the sampler's rates and history,
//! `/config/{opt}` with its CIDR gate, gzip, and the `/lookup` and `/counter` pages' data.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(20);

/// Publishes to `topic` on `nsqd` every 20 ms until the returned flag is set.
fn publisher(nsqd: &Proc, topic: &str) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, topic, flag) = (nsqd.http, topic.to_owned(), stop.clone());
    let h = std::thread::spawn(move || {
        let mut n = 0;
        while !flag.load(Ordering::Relaxed) {
            let r = http_request(addr, "POST", &format!("/pub?topic={topic}"), Some("x"));
            assert_eq!(r.status, 200, "{}", r.body);
            n += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    });
    (stop, h)
}

fn samples(v: &Value) -> &Vec<Value> {
    v["samples"].as_array().expect("samples array")
}

#[test]
fn sampler_keeps_bounded_rates_and_depths_per_topic_and_channel() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    let n2 = start_nsqd(&lookupd);
    for n in [&n1, &n2] {
        nsqd_post(n, "/topic/create?topic=rated", "");
        nsqd_post(n, "/channel/create?topic=rated&channel=c", "");
    }
    let admin = start_admin(&[
        format!("--lookupd-http-address={}", lookupd.http),
        "--stats-sample-interval=200ms".into(),
        "--stats-sample-count=5".into(),
    ]);
    let (stop, pubs) = publisher(&n1, "rated");
    wait_until(WAIT, "a positive rate for topic rated", || {
        let h = admin.get_json("/api/history/rated");
        samples(&h).len() == 5 && samples(&h).iter().any(|s| s["rate"].as_f64() > Some(0.0))
    });
    let h = admin.get_json("/api/history/rated");
    assert_eq!(h["interval_ms"], 200);
    assert_eq!(h["message"], "");
    let s = samples(&h);
    assert!(s[0]["rate"].is_null(), "first sample has no rate: {h}");
    let ts: Vec<i64> = s.iter().map(|x| x["ts"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[1] > w[0]), "{ts:?}");
    // ~50 msg/s published; allow a wide margin on 2 shared cores.
    let rates: Vec<f64> = s.iter().filter_map(|x| x["rate"].as_f64()).collect();
    assert!(rates.iter().all(|r| (0.0..200.0).contains(r)), "{rates:?}");
    let ch = &h["channels"]["c"];
    assert_eq!(ch.as_array().unwrap().len(), 5, "{h}");
    // Nobody consumes: the channel's depth only grows.
    let depths: Vec<i64> = ch
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["depth"].as_i64().unwrap())
        .collect();
    assert!(depths.windows(2).all(|w| w[1] >= w[0]), "{depths:?}");
    let c = admin.get_json("/api/history/rated/c");
    assert_eq!(samples(&c).len(), 5);
    assert_eq!(c["channel"], "c");

    stop.store(true, Ordering::Relaxed);
    let published = pubs.join().unwrap();
    // After the publisher stops, the latest sample matches nsqd's own counters.
    wait_until(WAIT, "latest sample == nsqd message_count", || {
        let r = admin.get_json("/api/rates");
        r["topics"]["rated"]["message_count"] == json!(published)
            && r["topics"]["rated"]["rate"] == json!(0.0)
    });
    let r = admin.get_json("/api/rates");
    assert_eq!(r["interval_ms"], 200);
    assert_eq!(
        r["topics"]["rated"]["depth"],
        nsqd_topic(&n1, "rated").unwrap()["depth"]
    );
    assert_eq!(
        nsqd_topic(&n1, "rated").unwrap()["message_count"],
        json!(published)
    );

    // Delete the topic: its series goes after the next complete tick.
    let r = admin.http("DELETE", "/api/topics/rated", None);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(WAIT, "history of a deleted topic dropped", || {
        samples(&admin.get_json("/api/history/rated")).is_empty()
            && admin.get_json("/api/rates")["topics"]
                .as_object()
                .is_some_and(|m| !m.contains_key("rated"))
    });

    // With the sampler off the endpoints answer, empty.
    let off = start_admin(&[
        format!("--nsqd-http-address={}", n1.http),
        "--stats-sample-interval=0".into(),
    ]);
    let r = off.get_json("/api/rates");
    assert_eq!(
        (r["interval_ms"].clone(), r["topics"].clone()),
        (json!(0), json!({}))
    );
    assert!(samples(&off.get_json("/api/history/rated")).is_empty());
    let page = off.http("GET", "/", None);
    assert!(page.body.contains("sampleMs: 0"), "{}", page.body);
}

#[test]
fn config_endpoint_is_gated_by_cidr_and_switches_lookupds() {
    let _guard = cluster_lock();
    let l1 = start_lookupd();
    let l2 = start_lookupd();
    let n1 = start_nsqd(&l1);
    nsqd_post(&n1, "/topic/create?topic=on_l1", "");
    let r = l2.http("POST", "/topic/create?topic=only_on_l2", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let admin = start_admin(&[
        format!("--lookupd-http-address={}", l1.http),
        "--http-client-connect-timeout=750ms".into(),
    ]);
    wait_until(WAIT, "on_l1 registered", || {
        admin.get_json("/api/topics")["topics"] == json!(["on_l1"])
    });
    let get = |opt: &str| {
        let r = admin.http("GET", &format!("/config/{opt}"), None);
        assert_eq!(r.status, 200, "{opt}: {}", r.body);
        assert_eq!(
            r.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        r.json()
    };
    assert_eq!(
        get("nsqlookupd_http_addresses"),
        json!([l1.http.to_string()])
    );
    assert_eq!(get("nsqd_http_addresses"), json!([]));
    assert_eq!(get("http_client_connect_timeout"), json!(750_000_000u64));
    assert_eq!(get("allow_config_from_cidr"), json!("127.0.0.1/8"));
    assert_eq!(get("log_level"), json!(2));
    assert_eq!(get("admin_users"), json!([]));
    let r = admin.http("GET", "/config/nope", None);
    assert_eq!(
        (r.status, r.json()["message"].clone()),
        (400, json!("INVALID_OPTION"))
    );

    // PUT the lookupds: the next reads go to l2.
    let body = json!([l2.http.to_string()]).to_string();
    let r = admin.http("PUT", "/config/nsqlookupd_http_addresses", Some(&body));
    assert_eq!((r.status, r.json()), (200, json!([l2.http.to_string()])));
    assert_eq!(
        admin.get_json("/api/topics")["topics"],
        json!(["only_on_l2"])
    );
    assert!(admin
        .http("GET", "/lookup", None)
        .body
        .contains(&l2.http.to_string()));
    let r = admin.http("PUT", "/config/log_level", Some("debug"));
    assert_eq!((r.status, r.body.as_str()), (200, "1"));
    assert_eq!(get("log_level"), json!(1));
    for (opt, body, status, msg) in [
        ("log_level", "verbose", 400, "INVALID_VALUE"),
        ("nsqlookupd_http_addresses", "h:1", 400, "INVALID_VALUE"),
        ("http_address", "\"x\"", 400, "INVALID_OPTION"),
        ("log_level", "", 413, "INVALID_VALUE"),
    ] {
        let r = admin.http("PUT", &format!("/config/{opt}"), Some(body));
        assert_eq!(
            (r.status, r.json()["message"].clone()),
            (status, json!(msg)),
            "PUT {opt} {body:?}"
        );
    }
    assert_eq!(
        admin.http("POST", "/config/log_level", Some("x")).status,
        405
    );

    // From outside --allow-config-from-cidr: 403 for GET and PUT, nothing changes.
    let gated = start_admin(&[
        format!("--lookupd-http-address={}", l1.http),
        "--allow-config-from-cidr=10.0.0.0/8".into(),
    ]);
    for method in ["GET", "PUT"] {
        let r = gated.http(method, "/config/nsqlookupd_http_addresses", Some("[]"));
        assert_eq!(
            (r.status, r.json()["message"].clone()),
            (403, json!("FORBIDDEN"))
        );
    }
    assert_eq!(gated.get_json("/api/topics")["topics"], json!(["on_l1"]));
    // An empty CIDR means no restriction, as in Go.
    let open = start_admin(&[
        format!("--lookupd-http-address={}", l1.http),
        "--allow-config-from-cidr=".into(),
    ]);
    assert_eq!(open.http("GET", "/config/base_path", None).body, "\"/\"");
}

/// `PUT /config/log_level` changes what the running nsqadmin logs: started at `warn`, its
/// INFO request lines are not written; after the PUT to `info` the same request is logged.
#[test]
fn put_config_log_level_changes_the_running_filter() {
    let admin = start_admin_quiet(&[
        "--log-level=warn".into(),
        format!("--nsqd-http-address=127.0.0.1:{}", closed_port()),
    ]);
    // The harness's /ping is the first request; this is the second.
    assert_eq!(admin.http("GET", "/ping", None).status, 200);
    assert_eq!(admin.http("GET", "/config/log_level", None).body, "3");
    let r = admin.http("PUT", "/config/log_level", Some("info"));
    assert_eq!((r.status, r.body.as_str()), (200, "2"));
    // The PUT's own request line is written after the filter changed; the /ping lines, had
    // they been written, would come before it through the same pipe.
    admin.wait_for_log("PUT /config/log_level", Duration::from_secs(5));
    let logs = admin.logs();
    assert!(
        !logs
            .iter()
            .any(|l| l.contains("GET /ping") || l.contains("listening on")),
        "INFO lines logged at --log-level=warn: {logs:#?}"
    );
    assert_eq!(admin.http("GET", "/ping", None).status, 200);
    admin.wait_for_log("200 GET /ping", Duration::from_secs(5));
}

#[test]
fn bad_cidr_is_a_startup_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nsqadmin"))
        .args([
            "--http-address=127.0.0.1:0",
            "--nsqd-http-address=127.0.0.1:1",
            "--allow-config-from-cidr=127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow-config-from-cidr"), "{err}");
}

#[test]
fn responses_are_gzipped_when_accepted() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    for i in 0..50 {
        nsqd_post(
            &n1,
            &format!("/topic/create?topic=gzip_test_topic_{i:02}"),
            "",
        );
    }
    let admin = start_admin(&[format!("--lookupd-http-address={}", lookupd.http)]);
    wait_until(WAIT, "50 topics", || {
        admin.get_json("/api/topics")["topics"]
            .as_array()
            .map_or(0, Vec::len)
            == 50
    });
    for path in ["/api/topics", "/static/app.js", "/topics", "/api/nodes"] {
        let (status, headers, plain) = http_raw(admin.http, "GET", path, None, &[]);
        assert_eq!(status, 200);
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("content-encoding"), None, "{path}");
        let (status, headers, gz) = http_raw(
            admin.http,
            "GET",
            path,
            None,
            &[("Accept-Encoding", "deflate, gzip;q=0.8, br")],
        );
        assert_eq!(status, 200);
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(h("content-encoding"), Some("gzip"), "{path}");
        assert_eq!(h("vary"), Some("Accept-Encoding"), "{path}");
        assert_eq!(h("x-nsq-content-type"), Some("nsq; version=1.0"));
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut unzipped)
            .unwrap_or_else(|e| panic!("{path}: not gzip: {e}"));
        assert!(gz.len() < unzipped.len(), "{path}: did not shrink");
        if path == "/api/nodes" || path == "/api/topics" {
            let a: Value = serde_json::from_slice(&plain).unwrap();
            let b: Value = serde_json::from_slice(&unzipped).unwrap();
            assert_eq!(a, b, "{path}");
        } else {
            assert_eq!(plain, unzipped, "{path}");
        }
    }
    // q=0 refuses gzip; tiny bodies are sent as they are.
    let (_, headers, _) = http_raw(
        admin.http,
        "GET",
        "/api/topics",
        None,
        &[("Accept-Encoding", "gzip;q=0")],
    );
    assert!(!headers.iter().any(|(k, _)| k == "content-encoding"));
    let (_, headers, body) = http_raw(
        admin.http,
        "GET",
        "/ping",
        None,
        &[("Accept-Encoding", "gzip")],
    );
    assert_eq!(body, b"OK");
    assert!(!headers.iter().any(|(k, _)| k == "content-encoding"));
}

#[test]
fn lookup_and_counter_pages_and_their_data() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    nsqd_post(&n1, "/topic/create?topic=live", "");
    nsqd_post(&n1, "/channel/create?topic=live&channel=c", "");
    for _ in 0..4 {
        nsqd_post(&n1, "/pub?topic=live", "m");
    }
    let admin = start_admin(&[format!("--lookupd-http-address={}", lookupd.http)]);
    for page in ["/lookup", "/counter"] {
        let r = admin.http("GET", page, None);
        assert_eq!(r.status, 200);
        assert!(
            r.body.contains(&format!("lookupd: [\"{}\"]", lookupd.http)),
            "{page}: {}",
            r.body
        );
    }
    // Create an inactive topic + channel on the lookupds (the /lookup page's form).
    let r = admin.http(
        "POST",
        "/api/topics",
        Some(r#"{"topic":"dormant","channel":"later"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until(WAIT, "live registered", || {
        admin.get_json("/api/topics")["topics"] == json!(["dormant", "live"])
    });
    let inactive = admin.get_json("/api/topics?inactive=true");
    assert_eq!(inactive["topics"], json!({"dormant": ["later"]}));
    // The counter sums every channel's message_count.
    let counter = admin.get_json("/api/counter");
    let total: i64 = counter["stats"]
        .as_object()
        .unwrap()
        .values()
        .map(|s| s["message_count"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 4);
    // Delete the inactive channel, then the topic, from the lookupds.
    let r = admin.http("DELETE", "/api/topics/dormant/later", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        lookupd.get_json("/channels?topic=dormant")["channels"],
        json!([])
    );
    let r = admin.http("DELETE", "/api/topics/dormant", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(lookupd.get_json("/topics")["topics"], json!(["live"]));
}

/// nsqds started with `--http-api-token` answer 401 without it; nsqadmin's
/// `--http-api-token` sends it, so the same cluster is readable and steerable.
#[test]
fn http_api_token_is_sent_to_nsqd() {
    let nsqd = start_nsqd_alone(&["--http-api-token=admin-secret"]);
    let auth = [("Authorization", "Bearer admin-secret")];
    let r = http_request_with(
        nsqd.http,
        "POST",
        "/topic/create?topic=guarded",
        None,
        &auth,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let node = format!("--nsqd-http-address={}", nsqd.http);
    let without = start_admin(std::slice::from_ref(&node));
    let with = start_admin(&[node, "--http-api-token=admin-secret".to_owned()]);

    let v = with.get_json("/api/topics");
    assert_eq!(v["topics"], serde_json::json!(["guarded"]), "{v}");
    let v = with.get_json("/api/topics/guarded");
    assert!(v.get("message").is_none_or(|m| m == ""), "{v}");
    // An action goes through too.
    let r = with.http("POST", "/api/topics/guarded", Some(r#"{"action":"pause"}"#));
    assert_eq!(r.status, 200, "{r:?}");
    let stats = http_request_with(nsqd.http, "GET", "/stats?format=json", None, &auth).json();
    assert_eq!(stats["topics"][0]["paused"], true, "{stats}");

    // Without the token nsqadmin reports the refusal instead of data.
    let r = without.http("GET", "/api/topics/guarded", None);
    let text = format!("{} {}", r.status, r.body);
    assert!(
        text.contains("401") || text.contains("UNAUTHORIZED"),
        "{text}"
    );
}
