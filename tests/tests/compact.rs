//! The shipped compact digits model (`--arch dcgan-256k`): it keeps the 256 KB chip's budget
//! (int8 blob ≤ 256 KiB, arena and scratch ≤ 64 KiB, ≤ 15 M multiply-accumulates per image;
//! the int4 blob small enough for a 256 KB-flash part with the runtime beside it), its blobs
//! are what the quantizer makes of its generator, and the firmware under QEMU draws the host
//! simulation's bytes.

use candle_core::Device;
use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{
    build_firmware, shipped_compact_generator, shipped_compact_int4_model, shipped_compact_model,
};
use mcugan_model_tools::quantize::{quantize, QuantizeOptions};
use mcugan_model_tools::simulate::simulate;
use mcugan_shared::Model;
use mcugan_train::model::conv::ConvGanSpec;
use mcugan_train::model::{fold, Generator};
use mcugan_train::run::load_generator;

#[test]
fn the_compact_model_keeps_the_256_kb_chips_budget() {
    let blob = std::fs::read(shipped_compact_model()).unwrap();
    let model = Model::parse(&blob).unwrap();
    assert!(blob.len() <= 256 * 1024, "blob of {} bytes", blob.len());
    let ram = model.arena_len() + model.scratch_len();
    assert!(ram <= 64 * 1024, "arena and scratch of {ram} bytes");
    assert!(model.macs() <= 15_000_000, "{} MACs", model.macs());
    let image = model.image();
    assert_eq!((image.width, image.height, image.channels), (28, 28, 1));
    // The int4 blob and a runtime of 32 KiB fit 256 KiB of flash.
    let int4 = std::fs::read(shipped_compact_int4_model()).unwrap();
    Model::parse(&int4).unwrap();
    assert!(
        int4.len() + 32 * 1024 <= 256 * 1024,
        "int4 blob of {} bytes",
        int4.len()
    );
}

#[test]
fn the_shipped_compact_blob_is_what_the_quantizer_makes_of_its_generator() {
    let generator = load_generator(&shipped_compact_generator(), &Device::Cpu).unwrap();
    let Generator::Conv(conv) = &generator else {
        panic!("the compact generator is convolutional");
    };
    assert_eq!(conv.spec, ConvGanSpec::dcgan_256k().generator);
    let float = fold(&generator).unwrap();
    for (name, bits, path) in [
        ("mnist-digits-256k", vec![8], shipped_compact_model()),
        (
            "mnist-digits-256k-int4",
            vec![4, 8, 8, 8],
            shipped_compact_int4_model(),
        ),
    ] {
        let options = QuantizeOptions {
            name: name.into(),
            weight_bits: bits,
            ..QuantizeOptions::default()
        };
        let quantized = quantize(&float, &options).unwrap();
        let shipped = std::fs::read(&path).unwrap();
        assert!(
            quantized.blob == shipped,
            "re-quantizing models/mnist-digits-256k/generator.safetensors gives another {}",
            path.display()
        );
    }
}

#[test]
fn the_chip_draws_the_hosts_bytes() {
    let work = tempfile::tempdir().unwrap();
    let seeds: Vec<u32> = vec![0, 1, 2, 1234, u32::MAX];
    for (i, path) in [shipped_compact_model(), shipped_compact_int4_model()]
        .into_iter()
        .enumerate()
    {
        let blob = std::fs::read(&path).unwrap();
        let elf = build_firmware(&path, &work.path().join(format!("fw-{i}.elf"))).unwrap();
        let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(120)).unwrap();
        assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
        let expected = simulate(&blob, &seeds).unwrap();
        assert_eq!(run.images.len(), seeds.len());
        for ((drawn, want), &seed) in run.images.iter().zip(&expected).zip(&seeds) {
            assert_eq!(drawn.seed, seed);
            assert!(
                drawn.pixels == *want,
                "{}, seed {seed}: the chip differs from the host",
                path.display()
            );
        }
    }
}
