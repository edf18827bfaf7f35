//! End-to-end browser tests: headless Chromium loads the UI of a live cluster (two nsqds, a
//! consumer, and a stale producer that does not answer), checks what the pages render, and
//! keeps screenshots in `crates/nsqadmin/docs/`.
//!
//! Needs Debian's `chromium` package (`/usr/bin/chromium`), hence ignored by default:
//! run with `cargo test -p nsqadmin --test it -- --ignored browser`.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
    "--window-size=1280,720",
];

fn chromium(extra: &[String], url: &str) -> String {
    let out = Command::new(CHROMIUM)
        .args(FLAGS)
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed on {url}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM after its scripts ran.
fn dom(url: &str) -> String {
    chromium(&["--dump-dom".to_owned()], url)
}

fn screenshot(url: &str, out: &Path) {
    chromium(&[format!("--screenshot={}", out.display())], url);
    let len = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    assert!(len > 1000, "screenshot {} is empty", out.display());
}

/// A raw protocol V2 consumer on `topic`/`channel`.
fn consumer(nsqd: &Proc, topic: &str, channel: &str) -> TcpStream {
    let mut s = TcpStream::connect(nsqd.tcp.unwrap()).unwrap();
    s.write_all(format!("  V2SUB {topic} {channel}\nRDY 0\n").as_bytes())
        .unwrap();
    s
}

#[test]
#[ignore = "needs chromium (issue 6 browser tests)"]
fn browser_pages_and_screenshots() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium) \
         to run the nsqadmin browser tests"
    );
    let _guard = cluster_lock();
    let lookupd = start_lookupd();
    let n1 = start_nsqd(&lookupd);
    let n2 = start_nsqd(&lookupd);
    for (i, n) in [&n1, &n2].into_iter().enumerate() {
        nsqd_post(n, "/topic/create?topic=orders", "");
        nsqd_post(n, "/channel/create?topic=orders&channel=billing", "");
        nsqd_post(n, "/channel/create?topic=orders&channel=audit", "");
        nsqd_post(n, "/topic/create?topic=payments", "");
        for j in 0..=i * 3 {
            nsqd_post(n, "/pub?topic=orders", &format!("m{j}"));
        }
    }
    nsqd_post(&n2, "/channel/pause?topic=orders&channel=audit", "");
    let _c = consumer(&n1, "orders", "billing");
    let ghost_port = closed_port();
    let _ghost = fake_producer(&lookupd, "orders", ghost_port);
    let admin = start_admin(&[format!("--lookupd-http-address={}", lookupd.http)]);
    wait_until(Duration::from_secs(15), "cluster visible", || {
        let r = admin.http("GET", "/api/topics/orders/billing", None);
        r.status == 200
            && r.json()["nodes"].as_array().map_or(0, Vec::len) == 2
            && r.json()["clients"].as_array().map_or(0, Vec::len) == 1
    });
    let base = format!("http://{}", admin.http);

    let topics = dom(&format!("{base}/topics"));
    assert!(
        topics.contains(">orders</a>") && topics.contains(">payments</a>"),
        "{topics}"
    );
    let topic = dom(&format!("{base}/topics/orders"));
    assert!(
        topic.contains(">billing</a>") && topic.contains(">audit</a>"),
        "{topic}"
    );
    assert!(topic.contains(">Pause</button>") && topic.contains(">Delete</button>"));
    assert!(
        topic.contains("class=\"error\""),
        "dead node row missing: {topic}"
    );
    assert!(topic.contains(&format!("127.0.0.1:{ghost_port}")));
    assert!(topic.contains("WARNING: "));
    let channel = dom(&format!("{base}/topics/orders/billing"));
    assert!(!channel.contains("No clients connected"), "{channel}");
    assert!(channel.contains(&n1.http.to_string()));
    let nodes = dom(&format!("{base}/nodes"));
    assert!(
        nodes.contains(&n1.http.port().to_string()) && nodes.contains("ghost"),
        "{nodes}"
    );

    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let node_page = format!("/nodes/{}", n1.http);
    for (page, file) in [
        ("/topics", "topics.png"),
        ("/topics/orders", "topic.png"),
        ("/topics/orders/billing", "channel.png"),
        ("/nodes", "nodes.png"),
        (node_page.as_str(), "node.png"),
    ] {
        screenshot(&format!("{base}{page}"), &docs.join(file));
    }
}
