//! Checkpoint loading (what `mcugan train --resume` reads): arbitrary bytes give a training
//! state or an error, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mcugan_train::state::{Checkpoint, TrainState};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(checkpoint) = Checkpoint::from_bytes(bytes, Path::new("fuzz-input")) {
        let _ = checkpoint.settings();
        let _ = TrainState::from_checkpoint(&checkpoint);
    }
});
