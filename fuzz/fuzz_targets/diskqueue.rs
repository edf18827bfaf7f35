#![no_main]
//! See `nsq_diskqueue::fuzzing::fuzz_diskqueue`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| nsq_diskqueue::fuzzing::fuzz_diskqueue(data));
