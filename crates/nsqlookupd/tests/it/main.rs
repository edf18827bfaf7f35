//! The single integration-test binary: runs the real `nsqlookupd` on loopback.

/// Malformed and hostile input; the daemon keeps serving.
mod bad_input;
/// Flags, config file, version, signals, HTTP port hygiene.
mod cli;
/// Spawning the binary, raw V1 and HTTP clients.
mod harness;
/// Prometheus `/metrics`.
mod metrics;
/// Registration flows over TCP as seen through the HTTP API.
mod registration;
/// `/lookup/watch` Server-Sent Events.
mod watch;
