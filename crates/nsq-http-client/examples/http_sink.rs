//! A local HTTP endpoint for measuring `nsq_to_http` (BENCHMARKS.md, "nsq_to_http: keep-alive
//! and HTTPS"): answers every request `200 OK`, and once `N` requests have arrived prints how
//! long they took from the first one, the rate, and how many TCP connections carried them.
//!
//! `cargo run --release -p nsq-http-client --features testing --example http_sink -- N [https]`
//! prints `listening <url> [ca <file>]` first; with `https` it serves a fresh rcgen certificate
//! and names the CA file to trust.

use std::time::{Duration, Instant};

use nsq_http_client::testing::{Mode, Pki, TestServer};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: http_sink N [https]");
    let https = args.next().as_deref() == Some("https");
    let pki = Pki::new();
    let mode = if https { Mode::https(&pki) } else { Mode::Http };
    let first = std::sync::Arc::new(std::sync::OnceLock::<Instant>::new());
    let f = first.clone();
    let server = TestServer::start(mode, move |_, _| {
        f.get_or_init(Instant::now);
        (200, b"OK".to_vec())
    });
    if https {
        println!("listening {} ca {}", server.url(), pki.ca.display());
    } else {
        println!("listening {}", server.url());
    }
    loop {
        std::thread::sleep(Duration::from_millis(5));
        if server.request_count() >= n {
            break;
        }
    }
    let took = first.get().map_or(Duration::ZERO, |t| t.elapsed());
    println!(
        "requests={n} seconds={:.3} req_per_s={:.0} tcp_connections={}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        server.connections()
    );
}
