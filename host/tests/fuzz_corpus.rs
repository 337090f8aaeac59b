//! The seeds of the host's fuzz targets (`fuzz/corpus/idx_reader`, `fuzz/corpus/checkpoint`)
//! run through the same calls as the fuzzers, on stable: every finding that lands in a corpus
//! stays a regression test without a nightly toolchain.

use std::path::{Path, PathBuf};

use mcugan_model_tools::data::{decode_gz, parse_idx_images, parse_idx_labels};
use mcugan_train::state::{Checkpoint, TrainState};

fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn the_idx_seeds_parse_or_fail_cleanly() {
    let mut parsed = 0;
    for (path, bytes) in seeds("idx_reader") {
        let raw = if path.extension().is_some_and(|e| e == "gz") {
            decode_gz(&path, &bytes).expect("the gzip seed decodes")
        } else {
            bytes
        };
        if parse_idx_images(&path, &raw).is_ok() || parse_idx_labels(&path, &raw).is_ok() {
            parsed += 1;
        }
    }
    assert_eq!(parsed, 3, "the three seeds are valid IDX files");
}

#[test]
fn the_checkpoint_seeds_load_or_fail_cleanly() {
    for (path, bytes) in seeds("checkpoint") {
        let checkpoint = Checkpoint::from_bytes(&bytes, &path).expect("the seed is a checkpoint");
        // Its settings decode; the state is refused (it lacks the model's tensors), by name.
        checkpoint.settings().expect("settings");
        let err = match TrainState::from_checkpoint(&checkpoint) {
            Ok(_) => panic!("{}: a state without tensors restored", path.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("generator") || err.contains("tensor"), "{err}");
    }
}
