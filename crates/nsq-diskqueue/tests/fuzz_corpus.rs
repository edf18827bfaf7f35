//! Replays every input kept by the cargo-fuzz targets (`fuzz/corpus/<target>/`, minimised
//! with `cargo fuzz cmin`) and every crash they found (`fuzz/regressions/<target>/`) through
//! the same functions the targets call, so CI on a stable toolchain re-checks the go-diskqueue reader
//! against everything the fuzzers found. See `docs/FUZZING.md`.

use nsq_diskqueue::fuzzing;

#[path = "../../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str, f: fn(&[u8])) {
    shared::replay(env!("CARGO_MANIFEST_DIR"), target, f);
}

#[test]
fn diskqueue_corpus() {
    replay("diskqueue", fuzzing::fuzz_diskqueue);
}
