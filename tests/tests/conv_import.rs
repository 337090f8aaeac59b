//! Convolutional ONNX generators end to end: every fixture (both of PyTorch's exporters, the
//! book's snippet verbatim among them) imports, quantizes within 30 dB of its graph, and its
//! blob runs under QEMU drawing the host simulation's bytes, with the DSP and the portable
//! kernels, int8 and int4.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mcugan::generator_file::load_float_generator;
use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{build_firmware_with, repo_root, Kernels};
use mcugan_model_tools::quantize::{quantize, QuantizeOptions};
use mcugan_model_tools::simulate::{compare, simulate};
use mcugan_shared::Model;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/onnx").join(name)
}

/// Every convolutional fixture, both exporters of each model.
const CONV_FIXTURES: &[&str] = &[
    "dcgan-digits-dynamo.onnx",
    "dcgan-digits-torchscript-opset17.onnx",
    "readme/my_generator.onnx",
    "dcganpy-digits-torchscript-opset11.onnx",
    "dcganpy-digits-torchscript-opset10.onnx",
    "rgb-shapes-dynamo.onnx",
    "rgb-shapes-torchscript-opset13.onnx",
    "small-deconv-opset13.onnx",
    "small-deconv-dynamo-unoptimized.onnx",
];

fn options(name: &str, bits: u8) -> QuantizeOptions {
    QuantizeOptions {
        name: name.into(),
        calibration_images: 256,
        weight_bits: vec![bits],
        ..QuantizeOptions::default()
    }
}

/// Runs `blob` under QEMU with `kernels` and requires the host simulation's bytes.
fn runs_bit_exact(blob: &[u8], what: &str, kernels: Kernels) {
    let work = tempfile::tempdir().unwrap();
    let blob_path = work.path().join("model.mcg");
    std::fs::write(&blob_path, blob).unwrap();
    let elf = build_firmware_with(&blob_path, &work.path().join("fw.elf"), kernels).unwrap();
    let seeds: Vec<u32> = vec![0, 1, 2, 77, u32::MAX];
    let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(180)).unwrap();
    assert!(
        run.succeeded(),
        "{what} ({kernels:?}): firmware failed:\n{}",
        run.log.join("\n")
    );
    let expected = simulate(blob, &seeds).unwrap();
    assert_eq!(run.images.len(), seeds.len(), "{what}");
    for ((drawn, want), &seed) in run.images.iter().zip(&expected).zip(&seeds) {
        assert_eq!(drawn.seed, seed);
        assert_eq!(&drawn.pixels, want, "{what} ({kernels:?}): seed {seed}");
    }
    let model = Model::parse(blob).unwrap();
    assert_eq!(run.layer_ticks.len(), model.layers().len(), "{what}");
}

#[test]
fn every_convolutional_fixture_quantizes_within_30_db_and_runs_bit_exact_under_qemu() {
    let seeds: Vec<u32> = (0..64).collect();
    // Blobs by content (TorchScript's opsets 10 and 11 give the same; the default exporter
    // folds BatchNorm itself, in another f32 order, so its blob differs in the last bits).
    let mut blobs: BTreeMap<Vec<u8>, Vec<&str>> = BTreeMap::new();
    for &name in CONV_FIXTURES {
        let float =
            load_float_generator(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let quantized = quantize(&float, &options("conv", 8)).unwrap();
        {
            let model = Model::parse(&quantized.blob).unwrap();
            assert_eq!(model.image(), float.image, "{name}");
            assert!(model.layers().iter().any(|l| l.conv.is_some()), "{name}");
        }
        let comparison = compare(&float, &quantized.blob, &seeds).unwrap();
        assert!(
            comparison.psnr_db >= 30.0,
            "{name}: float vs int8 PSNR {:.2} dB",
            comparison.psnr_db
        );
        blobs.entry(quantized.blob).or_default().push(name);
    }
    for (blob, names) in &blobs {
        runs_bit_exact(blob, &names.join(", "), Kernels::Dsp);
    }
}

/// The portable kernels (what a core without the DSP extension runs) and int4 weights draw the
/// same bytes on the chip as on the host, for transposed and upsampling convolutions.
#[test]
fn portable_kernels_and_int4_convolutions_run_bit_exact_under_qemu() {
    for name in ["dcgan-digits-dynamo.onnx", "readme/my_generator.onnx"] {
        let float = load_float_generator(&fixture(name)).unwrap();
        let int8 = quantize(&float, &options("conv", 8)).unwrap().blob;
        runs_bit_exact(&int8, name, Kernels::Portable);
        let int4 = quantize(&float, &options("conv-int4", 4)).unwrap().blob;
        runs_bit_exact(&int4, &format!("{name} int4"), Kernels::Dsp);
    }
}
