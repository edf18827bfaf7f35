//! Replays every input kept by the cargo-fuzz targets (`fuzz/corpus/<target>/`, minimised
//! with `cargo fuzz cmin`) and every crash they found (`fuzz/regressions/<target>/`) through
//! the same functions the targets call, so CI on a stable toolchain re-checks query parsing and JSON escaping
//! against everything the fuzzers found. See `docs/FUZZING.md`.

use std::path::PathBuf;

use nsq_http::fuzzing;

/// Runs `f` on every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (if
/// any); panics, naming the file, if one fails.
fn replay(target: &str, f: fn(&[u8])) {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap_or_else(|e| panic!("corpus directory {} missing: {e}", corpus.display()))
        .map(|e| e.expect("read corpus entry").path())
        .collect();
    assert!(!files.is_empty(), "corpus {} is empty", corpus.display());
    if let Ok(dir) = std::fs::read_dir(fuzz.join("regressions").join(target)) {
        files.extend(dir.map(|e| e.expect("read regression entry").path()));
    }
    for path in &files {
        let data = std::fs::read(path).expect("read corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| f(&data)) {
            panic!(
                "fuzz target {target} fails on {}: {panic:?}",
                path.display()
            );
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn http_query_corpus() {
    replay("http_query", fuzzing::fuzz_http_query);
}
