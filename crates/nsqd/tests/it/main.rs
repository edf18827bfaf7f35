//! The single integration-test binary (one link step for all integration tests).

mod bad_input;
mod harness;
mod http_api;
mod interop;
mod persistence;
mod protocol;
mod durability;
mod lookup;
mod interop_cluster;
