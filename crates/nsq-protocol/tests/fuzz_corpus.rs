//! Replays every input kept by the cargo-fuzz targets (`fuzz/corpus/<target>/`, minimised
//! with `cargo fuzz cmin`) and every crash they found (`fuzz/regressions/<target>/`) through
//! the same functions the targets call, so CI on a stable toolchain re-checks every decoder
//! against everything the fuzzers found. See `docs/FUZZING.md`.

use nsq_protocol::fuzzing;

#[path = "../../../fuzz/replay.rs"]
mod shared;

fn replay(target: &str, f: fn(&[u8])) {
    shared::replay(env!("CARGO_MANIFEST_DIR"), target, f);
}

#[test]
fn command_corpus() {
    replay("command", fuzzing::fuzz_command);
}

#[test]
fn identify_corpus() {
    replay("identify", fuzzing::fuzz_identify);
}

#[test]
fn message_corpus() {
    replay("message", fuzzing::fuzz_message);
}

#[test]
fn frame_corpus() {
    replay("frame", fuzzing::fuzz_frame);
}

#[test]
fn names_corpus() {
    replay("names", fuzzing::fuzz_names);
}

#[test]
fn lookup_corpus() {
    replay("lookup", fuzzing::fuzz_lookup);
}
