//! Benchmark tools for nsq-rs.
//!
//! The numbers in `BENCHMARKS.md` come from these binaries (driven by `scripts/bench.sh`):
//!
//! - `bench_writer`, `bench_reader`, `bench_channels`: ports of NSQ's Go tools in `bench/`,
//!   with the same flag names and defaults, so that the same command lines can be pointed at
//!   Go nsqd and at nsq-rs and the results compared directly. Go-style single-dash flags
//!   (`-runfor=5s`) are accepted as well as `--runfor=5s` (see [`args`]).
//! - `tcp_ceiling`: the same-run baseline. It moves the same bytes over loopback TCP with a
//!   trivial server (read and discard, a 10-byte ack per MPUB; or stream pre-built message
//!   frames and count FIN lines), using the very same client loops as `bench_writer` and
//!   `bench_reader`. Whatever nsqd reaches is compared against this ceiling measured on the
//!   same machine in the same run, which makes results comparable across machines.
//! - `bench_mem`: nsqd's resident memory per queued message (RSS delta / message count).
//! - `bench_writer --tls/--snappy/--deflate`, `bench_reader` likewise: the same loops over
//!   TLS and/or compression ([`layers`]), to record each layer's cost next to plain TCP.
//! - `bench_topics`: the "many idle topics" bar: creation time, idle CPU, RSS and `/stats`
//!   latency with 10,000 topics.
//!
//! - `bench_http_pub`: `POST /pub` over keep-alive connections: msg/s, latency, nsqd CPU per
//!   message.
//!
//! TCP is blocking `std` I/O on threads (one connection per core, like Go's tools use one
//! goroutine per `GOMAXPROCS`), except `bench_channels` which holds 10,000 connections and
//! uses tokio. HTTP goes through the workspace's one HTTP client, `nsq-http-client`, on a
//! current-thread tokio runtime ([`http`]), except the two request-rate figures
//! (`bench_http_pub`, `bench_topics`' creation), which a measurement showed it would cap
//! ([`raw_http`] has the numbers). Client loops batch their writes so that the client costs as little CPU as
//! possible: on a shared 2-core machine every cycle the client burns is a cycle nsqd does
//! not get.

pub mod args;
pub mod http;
pub mod layers;
pub mod procfs;
pub mod raw_http;
pub mod report;
pub mod wire;
