//! Replays every input kept by the cargo-fuzz targets (`fuzz/corpus/<target>/`, minimised
//! with `cargo fuzz cmin`) and every crash they found (`fuzz/regressions/<target>/`) through
//! the same functions the targets call, so CI on a stable toolchain re-checks the topic log,
//! the journal and recovery against everything the fuzzers found. See `docs/FUZZING.md`.

use nsq_store::fuzzing;

#[path = "../../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str, f: fn(&[u8])) {
    shared::replay(env!("CARGO_MANIFEST_DIR"), target, f);
}

#[test]
fn store_log_corpus() {
    replay("store_log", fuzzing::fuzz_store_log);
}

#[test]
fn store_journal_corpus() {
    replay("store_journal", fuzzing::fuzz_store_journal);
}

#[test]
fn store_recover_corpus() {
    replay("store_recover", fuzzing::fuzz_store_recover);
}
