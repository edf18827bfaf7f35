use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(15);

fn channel<'a>(topic: &'a Value, name: &str) -> &'a Value {
    topic["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_name"] == name)
        .unwrap_or_else(|| panic!("no channel {name} in {topic}"))
}

fn nsqd_channel(nsqd: &Proc, topic: &str, ch: &str) -> Option<Value> {
    nsqd_topic(nsqd, topic)?["channels"]
        .as_array()?
        .iter()
        .find(|c| c["channel_name"] == ch)
        .cloned()
}

fn action(admin: &Proc, path: &str, action: &str) {
    let r = admin.http("POST", path, Some(&format!(r#"{{"action":"{action}"}}"#)));
    assert_eq!(r.status, 200, "{action} {path}: {}", r.body);
    assert_eq!(r.json()["message"], "", "{}", r.body);
}

#[test]
fn api_against_a_two_node_cluster() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    let n2 = start_nsqd(&lookupd);
    for n in [&n1, &n2] {
        nsqd_post(n, "/topic/create?topic=orders", "");
        nsqd_post(n, "/channel/create?topic=orders&channel=billing", "");
        nsqd_post(n, "/channel/create?topic=orders&channel=audit", "");
    }
    for i in 0..3 {
        nsqd_post(&n1, "/pub?topic=orders", &format!("a{i}"));
    }
    for i in 0..2 {
        nsqd_post(&n2, "/pub?topic=orders", &format!("b{i}"));
    }
    let admin = start_admin(&[format!("--lookupd-http-address={}", lookupd.http)]);

    // Both producers registered with lookupd: the topic aggregates both.
    wait_until(WAIT, "both nodes in /api/topics/orders", || {
        let r = admin.http("GET", "/api/topics/orders", None);
        r.status == 200 && r.json()["nodes"].as_array().map_or(0, Vec::len) == 2
    });
    let topics = admin.get_json("/api/topics");
    assert_eq!(topics["topics"], serde_json::json!(["orders"]));
    assert_eq!(topics["message"], "");

    let t = admin.get_json("/api/topics/orders");
    assert_eq!(t["message"], "");
    assert_eq!(t["node"], "*");
    assert_eq!(t["topic_name"], "orders");
    assert_eq!(t["depth"], 0, "{t}"); // the channels took the messages
    assert_eq!(t["message_count"], 5);
    assert_eq!(t["paused"], false);
    let names: Vec<&str> = t["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    let billing = channel(&t, "billing");
    assert_eq!(billing["depth"], 5);
    assert_eq!(billing["memory_depth"], 5);
    assert_eq!(billing["message_count"], 5);
    assert_eq!(billing["nodes"].as_array().unwrap().len(), 2);
    let mut per_node: Vec<i64> = t["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["message_count"].as_i64().unwrap())
        .collect();
    per_node.sort();
    assert_eq!(per_node, [2, 3]);

    let c = admin.get_json("/api/topics/orders/billing");
    assert_eq!(c["channel_name"], "billing");
    assert_eq!(c["depth"], 5);
    assert_eq!(c["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(c["clients"], serde_json::json!([]));
    assert_eq!(c["message"], "");

    let nodes = admin.get_json("/api/nodes");
    let list = nodes["nodes"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{nodes}");
    let mut ports: Vec<i64> = list
        .iter()
        .map(|n| n["http_port"].as_i64().unwrap())
        .collect();
    ports.sort();
    let mut want = vec![i64::from(n1.http.port()), i64::from(n2.http.port())];
    want.sort();
    assert_eq!(ports, want);
    assert_eq!(list[0]["topics"][0]["topic"], "orders");
    assert_eq!(list[0]["out_of_date"], false);
    assert_eq!(nodes["message"], "");

    // Not found, bad requests.
    // A topic nothing produces: 502 UPSTREAM_ERROR, as Go nsqadmin answers.
    for path in ["/api/topics/nope", "/api/topics/nope/c"] {
        let r = admin.http("GET", path, None);
        let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert_eq!(r.status, 502, "{path}: {}", r.body);
        assert!(
            msg.starts_with("UPSTREAM_ERROR: ") && msg.contains("TOPIC_NOT_FOUND"),
            "{msg}"
        );
    }
    let r = admin.http("POST", "/api/topics/nope", Some(r#"{"action":"pause"}"#));
    assert_eq!(r.status, 502, "{}", r.body);
    let r = admin.http("GET", "/api/topics/orders/nope", None);
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (404, Some("CHANNEL_NOT_FOUND"))
    );
    let r = admin.http(
        "POST",
        "/api/topics/orders",
        Some(r#"{"action":"explode"}"#),
    );
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (400, Some("INVALID_ACTION"))
    );
    let r = admin.http("PUT", "/api/topics/orders", Some("{}"));
    assert_eq!(r.status, 405);

    // Topic pause / unpause reach every node.
    action(&admin, "/api/topics/orders", "pause");
    for n in [&n1, &n2] {
        assert_eq!(nsqd_topic(n, "orders").unwrap()["paused"], true);
    }
    assert_eq!(admin.get_json("/api/topics/orders")["paused"], true);
    action(&admin, "/api/topics/orders", "unpause");
    for n in [&n1, &n2] {
        assert_eq!(nsqd_topic(n, "orders").unwrap()["paused"], false);
    }

    // Channel pause, empty.
    action(&admin, "/api/topics/orders/billing", "pause");
    for n in [&n1, &n2] {
        assert_eq!(
            nsqd_channel(n, "orders", "billing").unwrap()["paused"],
            true
        );
    }
    action(&admin, "/api/topics/orders/billing", "empty");
    for n in [&n1, &n2] {
        assert_eq!(nsqd_channel(n, "orders", "billing").unwrap()["depth"], 0);
    }
    assert_eq!(admin.get_json("/api/topics/orders/billing")["depth"], 0);
    assert_eq!(admin.get_json("/api/topics/orders/audit")["depth"], 5);

    // Topic empty keeps channel contents (nsqd semantics); publish with no channel to see it.
    action(&admin, "/api/topics/orders", "empty");

    // Counter.
    let counter = admin.get_json("/api/counter");
    let key = format!("orders:billing:{}", n1.http);
    assert_eq!(counter["stats"][&key]["message_count"], 3, "{counter}");
    assert_eq!(counter["stats"][&key]["channel_name"], "billing");
    assert_eq!(counter["stats"].as_object().unwrap().len(), 4);

    // Node detail.
    let node1 = n1.http.to_string();
    let nd = admin.get_json(&format!("/api/nodes/{node1}"));
    assert_eq!(nd["node"], node1.as_str());
    assert_eq!(nd["total_messages"], 3);
    assert_eq!(nd["total_clients"], 0);
    assert_eq!(nd["topics"][0]["topic_name"], "orders");
    assert_eq!(nd["topics"][0]["channels"].as_array().unwrap().len(), 2);
    let r = admin.http("GET", "/api/nodes/127.0.0.1:1", None);
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (404, Some("NODE_NOT_FOUND"))
    );

    // Create a topic and channel through lookupd.
    let r = admin.http(
        "POST",
        "/api/topics",
        Some(r#"{"topic":"fresh","channel":"ch"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let l = lookupd.get_json("/channels?topic=fresh");
    assert_eq!(l["channels"], serde_json::json!(["ch"]));
    let r = admin.http("POST", "/api/topics", Some(r#"{"topic":"bad name"}"#));
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (400, Some("INVALID_TOPIC"))
    );
    let r = admin.http(
        "POST",
        "/api/topics",
        Some(r#"{"topic":"ok","channel":"b@d"}"#),
    );
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (400, Some("INVALID_CHANNEL"))
    );

    // Tombstone n2's orders: lookupd hides it, n2 deletes the topic.
    let node2 = n2.http.to_string();
    let r = admin.http(
        "DELETE",
        &format!("/api/nodes/{node2}"),
        Some(r#"{"topic":"orders"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(nsqd_topic(&n2, "orders").is_none());
    wait_until(WAIT, "orders only on n1", || {
        admin.get_json("/api/topics/orders")["nodes"]
            .as_array()
            .map_or(0, Vec::len)
            == 1
    });

    // Delete a channel, then the topic.
    let r = admin.http("DELETE", "/api/topics/orders/audit", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(nsqd_channel(&n1, "orders", "audit").is_none());
    let r = admin.http("DELETE", "/api/topics/orders", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["message"], "");
    assert!(nsqd_topic(&n1, "orders").is_none());
    wait_until(WAIT, "orders gone from /api/topics", || {
        admin.get_json("/api/topics")["topics"] == serde_json::json!(["fresh"])
    });
}

#[test]
fn dead_nodes_are_reported_while_the_rest_still_shows() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    let mut n2 = start_nsqd(&lookupd);
    for n in [&n1, &n2] {
        nsqd_post(n, "/topic/create?topic=survivor", "");
        nsqd_post(n, "/channel/create?topic=survivor&channel=c", "");
        nsqd_post(n, "/pub?topic=survivor", "x");
    }
    let by_nsqd = start_admin(&[
        format!("--nsqd-http-address={}", n1.http),
        format!("--nsqd-http-address={}", n2.http),
    ]);
    let t = by_nsqd.get_json("/api/topics/survivor");
    // --nsqd-http-address mode: a topic no nsqd has is a 502, as in Go.
    let r = by_nsqd.http("GET", "/api/topics/nope", None);
    assert_eq!(r.status, 502, "{}", r.body);
    let r = by_nsqd.http("GET", "/api/topics/nope/c", None);
    assert_eq!(r.status, 502, "{}", r.body);
    let r = by_nsqd.http("GET", "/api/topics/survivor/nope", None);
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (404, Some("CHANNEL_NOT_FOUND"))
    );
    assert_eq!(t["message_count"], 2);
    assert_eq!(
        by_nsqd.get_json("/api/topics")["topics"],
        serde_json::json!(["survivor"])
    );
    assert_eq!(
        by_nsqd.get_json("/api/nodes")["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // A lookupd that still lists a producer which does not answer (a stale registration).
    let ghost_port = closed_port();
    let _ghost = fake_producer(&lookupd, "survivor", ghost_port);
    let by_lookupd = start_admin(&[format!("--lookupd-http-address={}", lookupd.http)]);
    wait_until(WAIT, "3 producers of survivor", || {
        let r = by_lookupd.http("GET", "/api/topics/survivor", None);
        r.status == 200
            && r.json()["nodes"].as_array().map_or(0, Vec::len) == 2
            && r.json()["node_errors"].as_array().map_or(0, Vec::len) == 1
    });
    let t = by_lookupd.get_json("/api/topics/survivor");
    assert_eq!(t["message_count"], 2);
    let msg = t["message"].as_str().unwrap();
    assert!(msg.starts_with("WARNING: "), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{ghost_port}")), "{msg}");
    assert_eq!(
        t["node_errors"][0]["node"],
        format!("127.0.0.1:{ghost_port}")
    );
    let nodes = by_lookupd.get_json("/api/nodes");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 3);
    assert_eq!(nodes["node_errors"].as_array().unwrap().len(), 1, "{nodes}");
    // Actions still reach the live nodes, with a warning about the dead one.
    let r = by_lookupd.http(
        "POST",
        "/api/topics/survivor/c",
        Some(r#"{"action":"pause"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("WARNING: "));
    assert_eq!(nsqd_channel(&n1, "survivor", "c").unwrap()["paused"], true);

    // Kill an nsqd: with --nsqd-http-address it shows as an error, the other still shows.
    n2.kill();
    let started = std::time::Instant::now();
    let r = by_nsqd.http("GET", "/api/topics/survivor", None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let t = r.json();
    assert_eq!(t["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(t["message_count"], 1);
    assert_eq!(t["node_errors"][0]["node"], n2.http.to_string());
    assert!(t["message"].as_str().unwrap().starts_with("WARNING: "));
    let topics = by_nsqd.get_json("/api/topics");
    assert_eq!(topics["topics"], serde_json::json!(["survivor"]));
    assert!(topics["message"].as_str().unwrap().starts_with("WARNING: "));
    let nodes = by_nsqd.get_json("/api/nodes");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(nodes["node_errors"].as_array().unwrap().len(), 1);
    drop(n1);
    // Every node dead: 502.
    let r = by_nsqd.http("GET", "/api/topics", None);
    assert_eq!(r.status, 502, "{}", r.body);
}

#[test]
fn a_thousand_topics_do_not_stall() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    for i in 0..1000 {
        nsqd_post(&n1, &format!("/topic/create?topic=t{i:04}"), "");
    }
    nsqd_post(&n1, "/channel/create?topic=t0999&channel=c", "");
    let admin = start_admin(&[
        format!("--lookupd-http-address={}", lookupd.http),
        "--stats-sample-interval=500ms".into(),
        // The sampler's per-tick timing is a debug line.
        "--log-level=debug".into(),
    ]);
    let idle_rss = admin.rss_kib();
    wait_until(WAIT, "1000 topics registered", || {
        admin.get_json("/api/topics")["topics"]
            .as_array()
            .map_or(0, Vec::len)
            == 1000
    });
    for path in [
        "/api/topics",
        "/api/nodes",
        "/api/topics/t0999",
        "/api/topics/t0999/c",
        "/",
    ] {
        let started = std::time::Instant::now();
        let r = admin.http("GET", path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let nodes = admin.get_json("/api/nodes");
    assert_eq!(nodes["nodes"][0]["topics"].as_array().unwrap().len(), 1000);
    // The sampler follows all of them, with full rings, in bounded memory.
    wait_until(
        Duration::from_secs(60),
        "1000 topics with 60 samples",
        || {
            let r = admin.get_json("/api/rates");
            r["topics"].as_object().map_or(0, |m| m.len()) == 1000
                && admin.get_json("/api/history/t0999")["samples"]
                    .as_array()
                    .map_or(0, Vec::len)
                    == 60
        },
    );
    let rss = admin.rss_kib();
    eprintln!("nsqadmin RSS with 1000 topics sampled (60 samples each): {rss} KiB (at start {idle_rss} KiB)");
    assert!(
        rss < idle_rss + 64 * 1024,
        "sampler memory grew by {} KiB",
        rss - idle_rss
    );
    let started = std::time::Instant::now();
    let r = admin.http("GET", "/api/rates", None);
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn admin_users_and_notifications() {
    use std::io::{BufRead, BufReader, Read, Write};
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    nsqd_post(&n1, "/topic/create?topic=guarded", "");
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_addr = hook.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in hook.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8(body).unwrap());
        }
    });
    let admin = start_admin(&[
        format!("--nsqd-http-address={}", n1.http),
        "--admin-user=alice".into(),
        format!("--notification-http-endpoint=http://{hook_addr}/notify"),
    ]);
    let pause = r#"{"action":"pause"}"#;
    let r = admin.http("POST", "/api/topics/guarded", Some(pause));
    assert_eq!(
        (r.status, r.json()["message"].as_str()),
        (403, Some("FORBIDDEN"))
    );
    let r = http_request_with(
        admin.http,
        "POST",
        "/api/topics/guarded",
        Some(pause),
        &[("X-Forwarded-User", "mallory")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(nsqd_topic(&n1, "guarded").unwrap()["paused"], false);
    let r = http_request_with(
        admin.http,
        "POST",
        "/api/topics/guarded",
        Some(pause),
        &[("X-Forwarded-User", "alice"), ("User-Agent", "test-agent")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(nsqd_topic(&n1, "guarded").unwrap()["paused"], true);
    let note: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!(note["action"], "pause_topic");
    assert_eq!(note["topic"], "guarded");
    assert_eq!(note["user"], "alice");
    assert_eq!(note["user_agent"], "test-agent");
    assert_eq!(note["remote_ip"], "127.0.0.1");
    assert_eq!(note["url"], "/api/topics/guarded");
    assert!(note["timestamp"].as_i64().unwrap() > 0);
    assert!(note.get("channel").is_none());
    // Reads need no privileges.
    assert_eq!(admin.get_json("/api/topics/guarded")["paused"], true);
}

/// POST over HTTPS to an nsqd, trusting `ca` (the nsqd below refuses plain HTTP).
fn https_post(ca: &std::path::Path, addr: &str, path: &str, body: &str) {
    let (status, r) = nsq_http_client::testing::request_blocking(
        ca,
        nsq_http_client::Method::POST,
        &format!("https://{addr}{path}"),
        body,
    );
    assert_eq!(status, 200, "POST {path}: {}", String::from_utf8_lossy(&r));
}

/// nsqadmin against an nsqd whose HTTP API is reachable only over HTTPS (`--tls-required`:
/// plain HTTP answers 403 TLS_REQUIRED): given as `--nsqd-http-address=https://…`, and found
/// through nsqlookupd (which reports only the HTTP port; nsqadmin follows the 403 to the HTTPS
/// port as Go's `http_api` does), with `--http-client-tls-root-ca-file`; without it the node
/// is an error row that says why. An action (pause) goes over HTTPS too.
#[test]
fn nsqd_reachable_only_over_https() {
    let _guard = cluster_lock();
    let pki = nsq_http_client::testing::Pki::new();
    let lookupd = start_lookupd();
    let data = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(daemon_bin("nsqd"));
    cmd.arg("--tcp-address=127.0.0.1:0")
        .arg("--http-address=127.0.0.1:0")
        .arg("--https-address=127.0.0.1:0")
        .arg(format!("--tls-cert={}", pki.server_cert.display()))
        .arg(format!("--tls-key={}", pki.server_key.display()))
        .arg("--tls-required=true")
        .arg("--broadcast-address=127.0.0.1")
        .arg(format!("--lookupd-tcp-address={}", lookupd.tcp.unwrap()))
        .arg(format!("--data-path={}", data.path().display()));
    let nsqd = Proc::spawn_cmd("nsqd", cmd);
    let https = nsqd
        .logs()
        .iter()
        .find_map(|l| {
            l.split("HTTPS: listening on ")
                .nth(1)
                .map(|a| a.trim().to_owned())
        })
        .expect("nsqd logs its HTTPS address");
    assert_eq!(nsqd.http("GET", "/stats?format=json", None).status, 403);
    https_post(&pki.ca, &https, "/topic/create?topic=secure", "");
    https_post(
        &pki.ca,
        &https,
        "/channel/create?topic=secure&channel=ch",
        "",
    );
    https_post(&pki.ca, &https, "/mpub?topic=secure", "1\n2\n3");
    let ca = format!("--http-client-tls-root-ca-file={}", pki.ca.display());

    let direct = start_admin(&[format!("--nsqd-http-address=https://{https}"), ca.clone()]);
    // A new topic holds its messages until nsqd has asked the lookupd for its channels (our
    // pre-creation runs after /topic/create answers; Go's blocks it): wait for the release.
    wait_until(WAIT, "the 3 messages reach channel ch", || {
        channel(&direct.get_json("/api/topics/secure"), "ch")["depth"] == 3
    });
    let t = direct.get_json("/api/topics/secure");
    assert_eq!(t["message"], "", "{t}");
    assert_eq!(t["message_count"], 3, "{t}");
    assert_eq!(channel(&t, "ch")["depth"], 3, "{t}");
    let nodes = direct.get_json("/api/nodes");
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 1, "{nodes}");
    // Nodes are named by broadcast address and HTTP port (from /info); the node page asks
    // that port, gets 403 TLS_REQUIRED and follows it to HTTPS.
    let node = format!("127.0.0.1:{}", nsqd.http.port());
    let r = direct.http("GET", &format!("/api/nodes/{node}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["total_messages"], 3, "{}", r.body);
    let r = direct.http(
        "POST",
        "/api/topics/secure/ch",
        Some(r#"{"action":"pause"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["message"], "", "{}", r.body);
    let t = direct.get_json("/api/topics/secure/ch");
    assert_eq!(t["paused"], true, "{t}");

    let via_lookupd = start_admin(&[format!("--lookupd-http-address={}", lookupd.http), ca]);
    wait_until(WAIT, "the TLS-only nsqd through lookupd", || {
        let r = via_lookupd.http("GET", "/api/topics/secure", None);
        r.status == 200 && r.json()["message_count"] == 3
    });
    let t = via_lookupd.get_json("/api/topics/secure");
    assert_eq!(t["message"], "", "{t}");
    assert_eq!(t["nodes"].as_array().unwrap().len(), 1, "{t}");

    let untrusting = start_admin(&[format!("--nsqd-http-address=https://{https}")]);
    let r = untrusting.http("GET", "/api/topics/secure", None);
    assert_eq!(r.status, 502, "{}", r.body);
    let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("certificate"), "{msg}");
}

/// A replicated topic (nsq-rs) on three nsqd members: lookupd lists only the leader, and
/// nsqadmin's topic shows the leader's view of the Raft group (leader, members, log index).
#[test]
fn a_replicated_topic_shows_its_raft_group() {
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let raft: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", closed_port()))
        .collect();
    let nodes: Vec<Proc> = (0..3)
        .map(|i| {
            let peers: Vec<String> = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("{}@{}", j + 1, raft[j]))
                .collect();
            let args = [
                format!("--node-id={}", i + 1),
                format!("--raft-address={}", raft[i]),
                format!("--raft-peers={}", peers.join(",")),
            ];
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            start_nsqd_with(&lookupd, &refs)
        })
        .collect();
    nsqd_post(&nodes[0], "/topic/create?topic=replicated&replicas=3", "");
    nsqd_post(&nodes[1], "/pub?topic=replicated", "through a member");
    let admin = start_admin(&[format!("--lookupd-http-address={}", lookupd.http)]);
    wait_until(WAIT, "nsqadmin to show the replicated topic", || {
        let r = admin.http("GET", "/api/topics/replicated", None);
        r.status == 200 && r.json()["replication"]["role"] == "leader"
    });
    let t = admin.get_json("/api/topics/replicated");
    assert_eq!(
        t["nodes"].as_array().map(Vec::len),
        Some(1),
        "only the leader serves it: {t}"
    );
    let r = &t["replication"];
    assert_eq!(r["members"], serde_json::json!([1, 2, 3]));
    assert!(r["log_index"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["messages"], 1);
    assert_eq!(t["depth"], 1);
}
