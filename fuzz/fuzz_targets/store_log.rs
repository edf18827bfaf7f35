#![no_main]
//! See `nsq_store::fuzzing::fuzz_store_log`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_store::fuzzing::fuzz_store_log(data));
