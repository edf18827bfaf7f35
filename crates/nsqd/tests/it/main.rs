//! The single integration-test binary (one link step for all integration tests).

mod abuse;
mod auth;
mod bad_input;
mod durability;
mod e2e_latency;
mod handback;
mod harness;
mod http_api;
mod interop;
mod interop_cluster;
mod lookup;
mod metrics;
mod netns;
mod persistence;
mod policy;
mod protocol;
mod replication;
mod statsd;
mod tls;
mod topology;
