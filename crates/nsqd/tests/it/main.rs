//! The single integration-test binary (one link step for all integration tests).

mod harness;
mod interop;
mod bad_input;
mod protocol;
