//! `Model::parse` on arbitrary bytes must never panic, and a model that parsed must run:
//! `generate` may not fail or panic on it (the format's promise to the firmware).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcugan_shared::format::MAX_IMAGE_PIXELS;
use mcugan_shared::{generate, Model};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(model) = Model::parse(bytes) {
        assert!((1..=MAX_IMAGE_PIXELS).contains(&model.pixel_count()));
        let mut pixels = [0u8; MAX_IMAGE_PIXELS];
        let pixels = &mut pixels[..model.pixel_count()];
        for seed in [0, 1, u32::MAX] {
            generate(&model, seed, pixels).expect("a model that parsed runs");
        }
    }
});
