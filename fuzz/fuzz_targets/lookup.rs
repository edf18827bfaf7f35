#![no_main]
//! See `nsq_protocol::fuzzing::fuzz_lookup`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_protocol::fuzzing::fuzz_lookup(data));
