//! The model that ships in `models/`: valid, reproducible from its checkpoint, close to float.

use candle_core::Device;
use mcugan::quantize::{quantize, FloatGenerator, QuantizeOptions};
use mcugan::simulate::compare;
use mcugan::train::load_generator;
use mcugan_e2e::{shipped_generator, shipped_model};
use mcugan_shared::Model;

fn float() -> FloatGenerator {
    FloatGenerator::fold(&load_generator(&shipped_generator(), &Device::Cpu).unwrap()).unwrap()
}

#[test]
fn the_shipped_blob_is_valid() {
    let blob = std::fs::read(shipped_model()).unwrap();
    let model = Model::parse(&blob).unwrap();
    assert_eq!(model.name(), "mnist-digits");
    assert_eq!(model.latent_dim(), 100);
    assert_eq!(model.pixel_count(), 784);
    assert_eq!(model.macs(), 1_503_744);
}

#[test]
fn the_shipped_blob_is_what_the_quantizer_makes_of_the_shipped_generator() {
    let options = QuantizeOptions {
        name: "mnist-digits".into(),
        ..QuantizeOptions::default()
    };
    let blob = quantize(&float(), &options).unwrap().blob;
    assert!(
        blob == std::fs::read(shipped_model()).unwrap(),
        "re-quantizing models/mnist-digits/generator.safetensors gives another blob"
    );
}

#[test]
fn int8_is_within_30_db_of_float() {
    let blob = std::fs::read(shipped_model()).unwrap();
    let seeds: Vec<u32> = (0..256).collect();
    let result = compare(&float(), &blob, &seeds).unwrap();
    assert!(result.psnr_db >= 30.0, "PSNR {:.2} dB", result.psnr_db);
}
