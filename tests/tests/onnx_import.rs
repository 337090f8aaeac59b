//! ONNX generators end to end: imported with tract, quantized (the graph is the float
//! reference), simulated, and run by the firmware under QEMU; and the shipped generator's two
//! entry points (safetensors and its ONNX export) against each other.

use std::path::PathBuf;

use mcugan::generator_file::load_float_generator;
use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{build_firmware, repo_root, shipped_generator};
use mcugan_model_tools::quantize::{quantize, QuantizeOptions};
use mcugan_model_tools::simulate::{compare, simulate};
use mcugan_shared::Model;

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/onnx").join(name)
}

const IMPORTABLE: &[&str] = &[
    "gan-digits-opset17.onnx",
    "small-gemm-opset11.onnx",
    "small-matmul-sigmoid-opset13.onnx",
    "small-dynamo-opset18.onnx",
    "wide-64x64-opset17.onnx",
];

fn options(name: &str) -> QuantizeOptions {
    QuantizeOptions {
        name: name.into(),
        ..QuantizeOptions::default()
    }
}

/// Every imported fixture quantizes to a blob whose images are >= 30 dB PSNR from the ONNX
/// graph's own (tract's) images on the same latent vectors.
#[test]
fn every_imported_generator_quantizes_within_30_db_of_its_graph() {
    let seeds: Vec<u32> = (0..64).collect();
    for name in IMPORTABLE {
        let float = load_float_generator(&fixture(name)).unwrap();
        let quantized = quantize(&float, &options(name)).unwrap();
        let model = Model::parse(&quantized.blob).unwrap();
        assert_eq!(model.pixel_count(), float.layers.last().unwrap().outputs);
        assert_eq!(model.image(), float.image, "{name}");
        let comparison = compare(&float, &quantized.blob, &seeds).unwrap();
        assert!(
            comparison.psnr_db >= 30.0,
            "{name}: float vs int8 PSNR {:.2} dB",
            comparison.psnr_db
        );
    }
}

/// An imported model (sigmoid output, 12x12 images, ReLU, MatMul + Add) on the emulated chip
/// draws the host simulation's bytes.
#[test]
fn an_imported_model_runs_under_qemu_as_the_host_simulates_it() {
    let work = tempfile::tempdir().unwrap();
    let float = load_float_generator(&fixture("small-matmul-sigmoid-opset13.onnx")).unwrap();
    let quantized = quantize(&float, &options("onnx-matmul-sigmoid")).unwrap();
    let blob_path = work.path().join("imported.mcg");
    std::fs::write(&blob_path, &quantized.blob).unwrap();
    let elf = build_firmware(&blob_path, &work.path().join("fw.elf")).unwrap();
    let seeds: Vec<u32> = vec![0, 1, 2, 3, 99, u32::MAX];
    let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(120)).unwrap();
    assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
    let expected = simulate(&quantized.blob, &seeds).unwrap();
    assert_eq!(run.images.len(), seeds.len());
    for (drawn, want) in run.images.iter().zip(&expected) {
        assert_eq!(drawn.pixels.len(), 144);
        assert_eq!(&drawn.pixels, want, "seed {}", drawn.seed);
    }
    assert_ne!(run.images[0].pixels, run.images[1].pixels);
}

/// A 64x64 generator (a 4,096-wide last layer, four times the 1,024-byte image buffer the
/// firmware once had): the firmware sizes its buffers from the embedded model (a 4,096-byte
/// image, activations of 64 entries), draws the host's bytes, and its peak stack shows it.
#[test]
fn a_64x64_imported_model_runs_under_qemu_in_buffers_sized_for_it() {
    let work = tempfile::tempdir().unwrap();
    let float = load_float_generator(&fixture("wide-64x64-opset17.onnx")).unwrap();
    let quantized = quantize(&float, &options("onnx-wide-64x64")).unwrap();
    let model = Model::parse(&quantized.blob).unwrap();
    assert_eq!((model.image().width, model.image().height), (64, 64));
    assert_eq!((model.arena_len(), model.scratch_len()), (64, 64));
    let blob_path = work.path().join("wide.mcg");
    std::fs::write(&blob_path, &quantized.blob).unwrap();
    let elf = build_firmware(&blob_path, &work.path().join("fw.elf")).unwrap();
    let seeds: Vec<u32> = vec![0, 1, 7];
    let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(120)).unwrap();
    assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
    let expected = simulate(&quantized.blob, &seeds).unwrap();
    for (drawn, want) in run.images.iter().zip(&expected) {
        assert_eq!(drawn.pixels.len(), 4096);
        assert_eq!(&drawn.pixels, want, "seed {}", drawn.seed);
    }
    let stack = run.stats.get("stack_peak_bytes").copied().unwrap_or(0);
    assert!(
        (4096..16 * 1024).contains(&stack),
        "peak stack {stack} bytes for a 4,096-pixel image"
    );
}

/// The shipped generator, exported to ONNX by `bench/onnx_fixtures.py` and imported, against
/// the same generator read from `generator.safetensors`: the same layers up to f32 rounding of
/// the folded BatchNorm, and blobs that differ only where that rounding and the float
/// reference (tract's f32 graph vs the f64 forward pass) move a rounding decision: no weight
/// code by more than 1, fewer than 0.1 % of weights, and at least 99.5 % of the two blobs'
/// pixels equal, the others within 4 gray levels.
#[test]
fn the_shipped_generator_quantizes_alike_from_safetensors_and_from_onnx() {
    let from_onnx = load_float_generator(&fixture("gan-digits-opset17.onnx")).unwrap();
    let from_safetensors = load_float_generator(&shipped_generator()).unwrap();
    assert_eq!(from_onnx.layers.len(), from_safetensors.layers.len());
    assert_eq!(from_onnx.image, from_safetensors.image);
    for (l, (a, b)) in from_onnx
        .layers
        .iter()
        .zip(&from_safetensors.layers)
        .enumerate()
    {
        assert_eq!(
            (a.inputs, a.outputs, a.activation),
            (b.inputs, b.outputs, b.activation)
        );
        // tract folds BatchNorm in f32 (w * slope; b * slope + (beta - mean * slope)), the
        // safetensors path in f64 rounded once: weights agree to a few ulps, biases to the
        // rounding of the larger terms they were computed from.
        for (x, y) in a.weight.iter().zip(&b.weight) {
            assert!(
                (x - y).abs() <= 4.0 * f32::EPSILON * y.abs(),
                "layer {l}: weight {x} vs {y}"
            );
        }
        for (x, y) in a.bias.iter().zip(&b.bias) {
            assert!((x - y).abs() <= 1e-6, "layer {l}: bias {x} vs {y}");
        }
    }

    let opts = options("mnist-digits");
    let onnx_blob = quantize(&from_onnx, &opts).unwrap().blob;
    let st_blob = quantize(&from_safetensors, &opts).unwrap().blob;
    assert_eq!(onnx_blob.len(), st_blob.len());
    let (a, b) = (
        Model::parse(&onnx_blob).unwrap(),
        Model::parse(&st_blob).unwrap(),
    );
    let mut weights_differing = 0usize;
    let mut weights_total = 0usize;
    for (la, lb) in a.layers().iter().zip(b.layers()) {
        assert_eq!(la.weight_format, lb.weight_format);
        weights_total += la.weights.len();
        for (&x, &y) in la.weights.iter().zip(lb.weights) {
            if x != y {
                weights_differing += 1;
                // Blocked int8 stores the even rows offset by 128: compare as codes.
                let d = (i16::from(x as i8) - i16::from(y as i8)).abs();
                let d_offset = (i16::from(x) - i16::from(y)).abs();
                assert!(
                    d <= 1 || d_offset <= 1,
                    "a weight code moved by more than 1"
                );
            }
        }
    }
    let share = weights_differing as f64 / weights_total as f64;
    assert!(
        share < 1e-3,
        "{weights_differing} of {weights_total} weight bytes differ"
    );

    let seeds: Vec<u32> = (0..64).collect();
    let images_onnx = simulate(&onnx_blob, &seeds).unwrap();
    let images_st = simulate(&st_blob, &seeds).unwrap();
    let mut max_diff = 0u8;
    for (x, y) in images_onnx.iter().flatten().zip(images_st.iter().flatten()) {
        max_diff = max_diff.max(x.abs_diff(*y));
    }
    let same_pixels = images_onnx
        .iter()
        .flatten()
        .zip(images_st.iter().flatten())
        .filter(|(x, y)| x == y)
        .count();
    eprintln!(
        "round trip: {weights_differing} of {weights_total} weight bytes differ ({:.4} %); \
         {same_pixels} of {} pixels equal, the others by at most {max_diff}",
        share * 100.0,
        seeds.len() * 784
    );
    // Measured on the shipped model: 0 weight bytes, 17 of 50,176 pixels (by 1 level) differ
    // (the previous shipped model: 3 weight bytes, 71 pixels by at most 3 levels).
    assert!(
        same_pixels as f64 >= 0.995 * (seeds.len() * 784) as f64 && max_diff <= 4,
        "the two blobs' images differ in {} pixels, by up to {max_diff} gray levels",
        seeds.len() * 784 - same_pixels
    );
}

/// The shipped conditional generator's ONNX export (cgan.py's form) quantizes to a blob with
/// the same class table as the one from `generator.safetensors`, images within 30 dB of the
/// graph's own for every class, and (nearly) the same pixels as the safetensors blob's.
#[test]
fn the_conditional_generator_quantizes_alike_from_safetensors_and_from_onnx() {
    use mcugan_model_tools::simulate::{class_grid_requests, simulate_requests};
    let from_onnx = load_float_generator(&fixture("cgan-digits-opset17.onnx")).unwrap();
    let from_safetensors =
        load_float_generator(&mcugan_e2e::shipped_conditional_generator()).unwrap();
    assert!(from_onnx.reference_name().contains("tract"));
    assert_eq!(from_onnx.classes, from_safetensors.classes);

    let opts = options("mnist-digits-conditional");
    let onnx_blob = quantize(&from_onnx, &opts).unwrap().blob;
    let st_blob = quantize(&from_safetensors, &opts).unwrap().blob;
    let (a, b) = (
        Model::parse(&onnx_blob).unwrap(),
        Model::parse(&st_blob).unwrap(),
    );
    assert_eq!(a.classes(), Some(10));
    let (ta, tb) = (a.class_table().unwrap(), b.class_table().unwrap());
    for class in 0..10 {
        assert_eq!(ta.row(class), tb.row(class), "class {class}");
    }

    let requests = class_grid_requests(&[0, 1, 2], 10);
    let onnx_images = simulate_requests(&onnx_blob, &requests).unwrap();
    let st_images = simulate_requests(&st_blob, &requests).unwrap();
    let (mut equal, mut total) = (0usize, 0usize);
    for ((request, x), y) in requests.iter().zip(&onnx_images).zip(&st_images) {
        let reference = from_onnx.draw_request(*request).unwrap();
        let psnr = mcugan_model_tools::simulate::psnr(&reference, x);
        assert!(psnr >= 30.0, "{request:?}: {psnr:.1} dB from the graph");
        equal += x.iter().zip(y).filter(|(p, q)| p == q).count();
        total += x.len();
    }
    assert!(
        equal as f64 >= 0.99 * total as f64,
        "{equal} of {total} pixels equal"
    );
}
