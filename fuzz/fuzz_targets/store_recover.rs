#![no_main]
//! See `nsq_store::fuzzing::fuzz_store_recover`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_store::fuzzing::fuzz_store_recover(data));
