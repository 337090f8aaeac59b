//! The firmware under QEMU (`mps2-an386`, Cortex-M4F) against the host simulation.

use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{build_firmware, build_firmware_with, shipped_int4_model, shipped_model, Kernels};
use mcugan_model_tools::simulate::simulate;
use mcugan_shared::encode::set_version;
use mcugan_shared::{FormatError, Model};

fn qemu() -> QemuOptions {
    QemuOptions::with_timeout(120)
}

#[test]
fn the_chip_draws_the_host_simulations_bytes() {
    let work = tempfile::tempdir().unwrap();
    let blob = std::fs::read(shipped_model()).unwrap();
    let elf = build_firmware(&shipped_model(), &work.path().join("fw.elf")).unwrap();
    // Small, scattered and extreme seeds.
    let mut seeds: Vec<u32> = (0..12).collect();
    seeds.extend([77, 1_000, 65_535, 123_456_789, u32::MAX - 1, u32::MAX]);
    let run = run_qemu(&elf, &seeds, &qemu()).unwrap();
    assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
    assert_eq!(run.stream_error, None);

    let expected = simulate(&blob, &seeds).unwrap();
    assert_eq!(run.images.len(), seeds.len());
    for ((drawn, want), &seed) in run.images.iter().zip(&expected).zip(&seeds) {
        assert_eq!(drawn.seed, seed);
        assert_eq!(drawn.pixels.len(), 784);
        let differing = drawn
            .pixels
            .iter()
            .zip(want)
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            differing, 0,
            "seed {seed}: {differing} pixels differ from the host"
        );
    }
    // The images are real drawings, not a constant.
    let first = &run.images[0].pixels;
    assert!(first.iter().any(|&p| p > 200) && first.iter().any(|&p| p < 30));
    assert_ne!(run.images[0].pixels, run.images[1].pixels);
}

#[test]
fn dsp_and_portable_kernels_draw_the_host_simulations_bytes_for_int8_and_int4() {
    let work = tempfile::tempdir().unwrap();
    let seeds: Vec<u32> = vec![0, 1, 2, 3, 1_000, u32::MAX];
    for model in [shipped_model(), shipped_int4_model()] {
        let blob = std::fs::read(&model).unwrap();
        let expected = simulate(&blob, &seeds).unwrap();
        let mut instructions = Vec::new();
        for kernels in [Kernels::Dsp, Kernels::Portable] {
            let elf = work.path().join(format!("{kernels:?}.elf"));
            let elf = build_firmware_with(&model, &elf, kernels).unwrap();
            let run = run_qemu(&elf, &seeds, &qemu()).unwrap();
            assert!(run.succeeded(), "{kernels:?}:\n{}", run.log.join("\n"));
            let kind = match kernels {
                Kernels::Dsp => "DSP kernels",
                Kernels::Portable => "portable kernels",
            };
            assert!(
                run.log.iter().any(|l| l.contains(kind)),
                "{kernels:?} build reports {kind}: {:?}",
                run.log
            );
            let drawn: Vec<&Vec<u8>> = run.images.iter().map(|i| &i.pixels).collect();
            let want: Vec<&Vec<u8>> = expected.iter().collect();
            assert_eq!(drawn, want, "{kernels:?} on {}", model.display());
            instructions.push(run.instructions_per_image().unwrap());
            // Per-layer timing is reported for every layer.
            assert_eq!(run.layer_ticks.len(), 5);
            assert!(run.layer_ticks.iter().all(|&t| t > 0));
        }
        // The DSP kernels are the faster ones, by a wide margin.
        assert!(
            instructions[0] * 2.0 < instructions[1],
            "{}: DSP {} vs portable {} instructions per image",
            model.display(),
            instructions[0],
            instructions[1]
        );
    }
}

#[test]
fn the_firmware_reports_its_measurements() {
    let work = tempfile::tempdir().unwrap();
    let elf = build_firmware(&shipped_model(), &work.path().join("fw.elf")).unwrap();
    let run = run_qemu(&elf, &[0, 1], &qemu()).unwrap();
    assert!(run.succeeded(), "{}", run.log.join("\n"));
    // SysTick at 25 MHz under -icount shift=0: 40 instructions per tick.
    let per_tick = run.instructions_per_tick().unwrap();
    assert!(
        (per_tick - 40.0).abs() < 0.01,
        "instructions per tick {per_tick}"
    );
    let per_image = run.instructions_per_image().unwrap();
    assert!(
        per_image > 1_503_744.0 && per_image < 20.0 * 1_503_744.0,
        "instructions per image {per_image}"
    );
    // The boot check (format version 3's word sums, then the layout checks) costs no more
    // than one image: instructions are counted, not timed, so this is exact.
    let validation = f64::from(run.stats["validation_ticks"]) * per_tick;
    assert!(
        validation <= per_image && validation <= 1.6e6,
        "validating the blob took {validation} instructions, an image {per_image}"
    );
    let stack = run.stats["stack_peak_bytes"];
    assert!(stack > 2048 && stack < 16 * 1024, "stack {stack}");
    // The RAM budget: statics, activations and stack within 8 KiB.
    let sizes = mcugan_device_tools::firmware::elf_sizes(&elf).unwrap();
    let ram = sizes.static_ram() + u64::from(stack);
    assert!(ram <= 8 * 1024, "RAM {ram} B exceeds the 8 KiB budget");
    // flip-link's layout: the stack starts below .bss, so an overflow runs off the bottom of
    // RAM (a fault) instead of into the statics.
    let (stack_start, bss) =
        mcugan_device_tools::firmware::elf_symbol_and_section(&elf, "_stack_start", ".bss")
            .unwrap();
    let (stack_start, bss) = (stack_start.unwrap(), bss.unwrap());
    assert!(
        stack_start <= bss,
        "stack top {stack_start:#x} above .bss {bss:#x}: no flip-link?"
    );
    // The whole runtime (this board's semihosting harness, the dense and the convolution
    // kernels, and the reader of every format version included) stays small.
    assert!(
        sizes.runtime_flash() <= 27 * 1024,
        "runtime flash {} B",
        sizes.runtime_flash()
    );
    let blob_len = std::fs::metadata(shipped_model()).unwrap().len() as u32;
    assert_eq!(run.stats["model_bytes"], blob_len);
    assert!(
        run.log
            .iter()
            .any(|l| l.contains("model 'mnist-digits' valid")),
        "{:?}",
        run.log
    );
}

/// A corrupted blob is rejected by the host with the named error, and by the firmware with a
/// failure exit that logs the same error — no image, no fault, no hang.
fn check_rejected(name: &str, blob: &[u8], expect: fn(&FormatError) -> bool, log_word: &str) {
    let err = Model::parse(blob).expect_err("the host rejects it");
    assert!(expect(&err), "{name}: host error {err:?}");

    let work = tempfile::tempdir().unwrap();
    let path = work.path().join(format!("{name}.mcg"));
    std::fs::write(&path, blob).unwrap();
    let elf = build_firmware(&path, &work.path().join("fw.elf")).unwrap();
    let run = run_qemu(&elf, &[0, 1], &qemu()).unwrap();
    assert!(!run.timed_out, "{name}: the firmware hung");
    assert_eq!(
        run.exit_code,
        Some(1),
        "{name}: exit code\n{}",
        run.log.join("\n")
    );
    assert!(run.images.is_empty(), "{name}: drew images from a bad blob");
    assert!(
        run.log
            .iter()
            .any(|l| l.contains("invalid model") && l.contains(log_word)),
        "{name}: log does not name {log_word}:\n{}",
        run.log.join("\n")
    );
    assert!(!run
        .log
        .iter()
        .any(|l| l.contains("HardFault") || l.contains("panic")));
}

#[test]
fn a_flipped_byte_is_rejected_by_host_and_chip() {
    let mut blob = std::fs::read(shipped_model()).unwrap();
    let at = blob.len() * 2 / 3;
    blob[at] ^= 0x10;
    check_rejected(
        "flipped",
        &blob,
        |e| matches!(e, FormatError::ChecksumMismatch { .. }),
        "ChecksumMismatch",
    );
}

#[test]
fn a_truncated_blob_is_rejected_by_host_and_chip() {
    let blob = std::fs::read(shipped_model()).unwrap();
    check_rejected(
        "truncated",
        &blob[..blob.len() - 1000],
        |e| matches!(e, FormatError::Truncated { .. }),
        "Truncated",
    );
}

#[test]
fn a_wrong_version_blob_is_rejected_by_host_and_chip() {
    let mut blob = std::fs::read(shipped_model()).unwrap();
    assert!(set_version(&mut blob, 7));
    check_rejected(
        "version",
        &blob,
        |e| matches!(e, FormatError::UnsupportedVersion { found: 7, .. }),
        "UnsupportedVersion",
    );
}

/// An image of 33025 x 65026 x 2 pixels (2^32 + 4) would wrap to 4 in the chip's
/// 32-bit arithmetic and parse; the firmware logs the named error and exits 1.
#[test]
fn an_image_size_that_overflows_32_bits_is_rejected_by_host_and_chip() {
    let seed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/parse_model/image-pixels-overflow-u32.mcg");
    let blob = std::fs::read(&seed).unwrap();
    check_rejected(
        "image-overflow",
        &blob,
        |e| {
            matches!(
                e,
                FormatError::BadImageSize {
                    pixels: 4_294_967_300,
                    ..
                }
            )
        },
        "BadImageSize",
    );
}

/// The DSP int8 kernel at the edge of its shifted sums: a layer of 1024 inputs, all -128 (the
/// first layer saturates every output to -128), into odd rows of -128 weights, so each
/// 512-column chunk sums to exactly 2²³, the one value that wraps (see
/// `mcugan_shared::dsp::I8_CHUNK_BLOCKS`). The chip must draw the host's (portable, exact)
/// pixels: 255 where the odd rows' sums are +2²⁴, not 0.
#[test]
fn the_dsp_kernel_is_exact_at_the_edge_of_its_shifted_sums() {
    use mcugan_shared::encode::{encode, reseal, LayerSpec, ModelSpec, OutputSpec};
    use mcugan_shared::format::{ChannelRequant, WeightFormat};
    use mcugan_shared::{ImageShape, Requant};
    let saturate = ChannelRequant {
        bias: -(1 << 30),
        requant: Requant {
            multiplier: 1 << 30,
            shift: 0,
        },
    };
    let to_lut = ChannelRequant {
        bias: 0,
        requant: Requant {
            multiplier: 1 << 30,
            shift: 16,
        },
    };
    let zeros = vec![0i8; 1024 * 1024];
    let heavy: Vec<i8> = (0..4 * 1024)
        .map(|i| {
            if (i / 1024) % 2 == 1 {
                -127
            } else {
                ((i % 200) as i16 - 100) as i8
            }
        })
        .collect();
    let lut: Vec<u8> = (0..=255).collect();
    let layers = [
        LayerSpec {
            inputs: 1024,
            outputs: 1024,
            conv: None,
            weights: &zeros,
            weight_format: WeightFormat::I8Blocked,
            channels: &vec![saturate; 1024],
            output: OutputSpec::LeakyRelu {
                zero_point: -128,
                negative_slope_q31: 1 << 30,
            },
        },
        LayerSpec {
            inputs: 1024,
            outputs: 4,
            conv: None,
            weights: &heavy,
            weight_format: WeightFormat::I8Blocked,
            channels: &[to_lut; 4],
            output: OutputSpec::TanhPixels { lut: &lut },
        },
    ];
    let spec = ModelSpec {
        name: "edge",
        latent_dim: 1024,
        image: ImageShape {
            width: 2,
            height: 2,
            channels: 1,
        },
        layers: &layers,
        classes: None,
    };
    let mut blob = encode(&spec).unwrap();
    // The encoder writes weights in -127..=127; -128, which a foreign encoder may write, is
    // patched into the odd bytes (the odd rows) of the last layer.
    let (start, len) = {
        let model = Model::parse(&blob).unwrap();
        let weights = model.layers()[1].weights;
        (
            weights.as_ptr() as usize - blob.as_ptr() as usize,
            weights.len(),
        )
    };
    for at in (start + 1..start + len).step_by(2) {
        blob[at] = (-128i8) as u8;
    }
    reseal(&mut blob);
    let host = simulate(&blob, &[0, 1]).unwrap();
    assert_eq!(host[0][1], 255, "the host's odd row: {:?}", host[0]);
    assert_eq!(host[0][3], 255, "the host's odd row: {:?}", host[0]);
    let work = tempfile::tempdir().unwrap();
    let path = work.path().join("edge.mcg");
    std::fs::write(&path, &blob).unwrap();
    let elf = build_firmware(&path, &work.path().join("edge.elf")).unwrap();
    let run = run_qemu(&elf, &[0, 1], &qemu()).unwrap();
    assert!(run.succeeded(), "{}", run.log.join("\n"));
    let chip: Vec<Vec<u8>> = run.images.iter().map(|i| i.pixels.clone()).collect();
    assert_eq!(chip, host);
}
