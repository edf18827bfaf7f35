//! The corpus replay shared by every decoder crate's `tests/fuzz_corpus.rs` (included with
//! `#[path]`, so the crates need no common dev-dependency): each input the cargo-fuzz targets
//! kept, and each crash they found, goes through the same function the target calls.

use std::path::PathBuf;

/// Runs `f` on every file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` (if
/// any), found from the calling crate's `manifest_dir`; panics, naming the file, if one fails.
pub fn replay(manifest_dir: &str, target: &str, f: fn(&[u8])) {
    let fuzz = PathBuf::from(manifest_dir).join("../../fuzz");
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
