//! Every core of the machine table under QEMU — Cortex-M0 (micro:bit), M3, M4F, M7, M33, M55
//! and the STM32F405's memory map — draws the host simulation's bytes, each with the largest
//! digits model its memory holds: the shipped int8 model where 1.6 MB fit, the int4 one in the
//! STM32F405's 1 MB, and a small convolutional digits generator (imported from its ONNX
//! fixture, 125 KB) in the micro:bit's 256 KB flash and 16 KB RAM.

use std::path::PathBuf;

use mcugan::generator_file::load_float_generator;
use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{build_firmware_on, repo_root, shipped_int4_model, shipped_model, MACHINES};
use mcugan_model_tools::quantize::{quantize, QuantizeOptions};
use mcugan_model_tools::simulate::simulate;

/// The small convolutional digits generator, quantized to int8 into `dir`.
fn small_conv_model(dir: &std::path::Path) -> PathBuf {
    let onnx = repo_root().join("tests/fixtures/onnx/dcgan-digits-dynamo.onnx");
    let float = load_float_generator(&onnx).unwrap();
    let options = QuantizeOptions {
        name: "dcgan-digits-small".into(),
        calibration_images: 256,
        weight_bits: vec![8],
        ..QuantizeOptions::default()
    };
    let blob = quantize(&float, &options).unwrap().blob;
    let path = dir.join("dcgan-digits-small-int8.mcg");
    std::fs::write(&path, blob).unwrap();
    path
}

#[test]
fn every_core_draws_the_host_simulations_bytes() {
    let work = tempfile::tempdir().unwrap();
    let small = small_conv_model(work.path());
    let seeds: Vec<u32> = vec![0, 1, 77, u32::MAX];
    let mut cores = Vec::new();
    for machine in MACHINES {
        let model = [shipped_model(), shipped_int4_model(), small.clone()]
            .into_iter()
            .find(|m| machine.holds_model(std::fs::metadata(m).unwrap().len()))
            .unwrap_or_else(|| panic!("no model fits the {}", machine.name));
        let elf = work.path().join(format!("{}.elf", machine.name));
        let elf = build_firmware_on(machine, &model, &elf)
            .unwrap_or_else(|e| panic!("{}: {e:#}", machine.name));
        let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(180)).unwrap();
        assert!(
            run.succeeded(),
            "{} ({}): firmware failed:\n{}",
            machine.name,
            machine.core,
            run.log.join("\n")
        );
        let blob = std::fs::read(&model).unwrap();
        let expected = simulate(&blob, &seeds).unwrap();
        assert_eq!(run.images.len(), seeds.len(), "{}", machine.name);
        for ((drawn, want), &seed) in run.images.iter().zip(&expected).zip(&seeds) {
            assert_eq!(drawn.seed, seed);
            assert_eq!(
                &drawn.pixels, want,
                "{} ({}): seed {seed} differs from the host",
                machine.name, machine.core
            );
        }
        cores.push(format!(
            "{} ({}): {} ok",
            machine.name,
            machine.core,
            model.file_name().unwrap().to_string_lossy()
        ));
    }
    assert_eq!(cores.len(), MACHINES.len());
    eprintln!("{}", cores.join("\n"));
}
