//! Replays every input kept by the cargo-fuzz targets (`fuzz/corpus/<target>/`, minimised
//! with `cargo fuzz cmin`) and every crash they found (`fuzz/regressions/<target>/`) through
//! the same functions the targets call, so CI on a stable toolchain re-checks query parsing and JSON escaping
//! against everything the fuzzers found. See `docs/FUZZING.md`.

use nsq_http::fuzzing;

#[path = "../../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str, f: fn(&[u8])) {
    shared::replay(env!("CARGO_MANIFEST_DIR"), target, f);
}

#[test]
fn http_query_corpus() {
    replay("http_query", fuzzing::fuzz_http_query);
}
