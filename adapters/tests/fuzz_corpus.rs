//! Replays the fuzz corpus (`fuzz/corpus/<target>/*`) through the fuzz targets' checks on stable
//! Rust, so `cargo test` keeps every seed and every input a fuzzing run saved passing. The checks
//! are `fuzz/src/lib.rs` itself, included as a module: one copy for the fuzzer and the tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

use adapters::bedrock::eventstream::EventStreamDecoder;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target} in {}", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// Each file as saved, then with other read sizes and the target's flag flipped: one seed covers
/// one-byte reads, odd splits and the whole body at once.
#[test]
fn corpus_replays_through_the_fuzz_checks() {
    for (target, check) in checks::TARGETS {
        for (path, data) in corpus(target) {
            let body = data.get(1..).unwrap_or_default();
            let mut variants = vec![data.clone()];
            for plan in [0u8, 1, 3, 64, 0x80, 0x81, 0x87] {
                variants.push([&[plan][..], body].concat());
            }
            for input in variants {
                let plan = input.first().copied();
                let run = std::panic::catch_unwind(|| check(&input));
                assert!(run.is_ok(), "{target}: {} with plan byte {plan:?} failed", path.display());
            }
        }
    }
}

/// The eventstream seeds made from golden files are well-formed streams, so the fuzzer starts
/// from inputs that get past the framing.
#[test]
fn eventstream_seeds_are_well_formed() {
    for target in ["bedrock_eventstream", "converse_stream"] {
        for (path, data) in corpus(target) {
            if !path.file_name().unwrap().to_string_lossy().starts_with("golden-") {
                continue;
            }
            let mut decoder = EventStreamDecoder::new(1 << 20);
            let mut messages = Vec::new();
            let fed = decoder.feed(&data[1..], &mut messages);
            assert!(fed.is_ok() && decoder.finish().is_ok(), "{}: {fed:?}", path.display());
            assert!(!messages.is_empty(), "{}", path.display());
        }
    }
}
