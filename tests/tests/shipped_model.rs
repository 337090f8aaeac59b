//! The model that ships in `models/`: valid, reproducible from its checkpoint, close to float.

use candle_core::Device;
use mcugan_e2e::{shipped_generator, shipped_int4_model, shipped_model};
use mcugan_model_tools::quantize::{quantize, FloatGenerator, QuantizeOptions};
use mcugan_model_tools::simulate::compare;
use mcugan_shared::Model;
use mcugan_train::model::fold;
use mcugan_train::run::load_generator;

fn float() -> FloatGenerator {
    fold(&load_generator(&shipped_generator(), &Device::Cpu).unwrap()).unwrap()
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

#[test]
fn the_shipped_int4_blob_fits_a_1_mb_part_and_is_reproducible() {
    use mcugan_shared::format::WeightFormat;
    let shipped = std::fs::read(shipped_int4_model()).unwrap();
    assert!(shipped.len() <= 800_000, "{} bytes", shipped.len());
    let model = Model::parse(&shipped).unwrap();
    let formats: Vec<WeightFormat> = model.layers().iter().map(|l| l.weight_format).collect();
    assert_eq!(formats[0], WeightFormat::I8Blocked);
    assert!(formats[1..].iter().all(|&f| f == WeightFormat::I4Blocked));
    let options = QuantizeOptions {
        name: "mnist-digits-int4".into(),
        weight_bits: vec![8, 4, 4, 4, 4],
        ..QuantizeOptions::default()
    };
    let blob = quantize(&float(), &options).unwrap().blob;
    assert!(
        blob == shipped,
        "re-quantizing the shipped generator with --bits 8,4,4,4,4 gives another blob"
    );
    // int4 costs quality, but the digits stay close to the float model's.
    let seeds: Vec<u32> = (0..256).collect();
    let result = compare(&float(), &shipped, &seeds).unwrap();
    assert!(result.psnr_db >= 28.0, "PSNR {:.2} dB", result.psnr_db);
}

#[test]
fn int4_quantization_rejects_other_bit_widths_clearly() {
    let options = QuantizeOptions {
        weight_bits: vec![3],
        ..QuantizeOptions::default()
    };
    let err = quantize(&float(), &options).unwrap_err().to_string();
    assert!(err.contains("3-bit weights are not supported"), "{err}");
    let options = QuantizeOptions {
        weight_bits: vec![8, 4],
        ..QuantizeOptions::default()
    };
    let err = quantize(&float(), &options).unwrap_err().to_string();
    assert!(err.contains("lists 2 layers"), "{err}");
}
