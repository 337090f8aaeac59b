//! The IDX reader, raw and gzip: arbitrary bytes give a data set or an error naming the
//! problem, never a panic, an overflow or an unbounded allocation.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcugan_model_tools::data::{decode_gz, parse_idx_images, parse_idx_labels};

fuzz_target!(|bytes: &[u8]| {
    let path = Path::new("fuzz-input");
    let parse = |bytes: &[u8]| {
        if let Ok((rows, cols, pixels)) = parse_idx_images(path, bytes) {
            assert!(rows > 0 && cols > 0);
            assert_eq!(pixels.len() % (rows * cols), 0);
        }
        let _ = parse_idx_labels(path, bytes);
    };
    parse(bytes);
    if let Ok(decoded) = decode_gz(path, bytes) {
        parse(&decoded);
    }
});
