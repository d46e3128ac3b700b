//! Replays every file of `fuzz/corpus/<target>/` through the fuzz target's
//! body, so inputs the fuzzer found (and the seeds) stay regression tests in
//! the ordinary test run.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no seeds", dir.display());
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap();
        let result = std::panic::catch_unwind(|| body(&data));
        assert!(result.is_ok(), "{target}: {} panicked", file.display());
    }
}

#[test]
fn sxp_corpus() {
    replay("sxp", relocd_tests::fuzz_entry::sxp);
}

#[test]
fn config_corpus() {
    replay("config", relocd_tests::fuzz_entry::config);
}
