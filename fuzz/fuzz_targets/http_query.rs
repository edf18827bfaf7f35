#![no_main]
//! See `nsq_http::fuzzing::fuzz_http_query`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_http::fuzzing::fuzz_http_query(data));
