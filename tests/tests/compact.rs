//! The shipped compact digits model (`--arch dcgan-256k`): it keeps the 256 KB chip's budget
//! (int8 blob ≤ 256 KiB, arena and scratch ≤ 64 KiB, ≤ 15 M multiply-accumulates per image),
//! its blob is what the quantizer makes of its generator, and the firmware under QEMU draws
//! the host simulation's bytes.

use candle_core::Device;
use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{build_firmware, shipped_compact_generator, shipped_compact_model};
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
}

#[test]
fn the_shipped_compact_blob_is_what_the_quantizer_makes_of_its_generator() {
    let generator = load_generator(&shipped_compact_generator(), &Device::Cpu).unwrap();
    let Generator::Conv(conv) = &generator else {
        panic!("the compact generator is convolutional");
    };
    assert_eq!(conv.spec, ConvGanSpec::dcgan_256k().generator);
    let options = QuantizeOptions {
        name: "mnist-digits-256k".into(),
        ..QuantizeOptions::default()
    };
    let quantized = quantize(&fold(&generator).unwrap(), &options).unwrap();
    let shipped = std::fs::read(shipped_compact_model()).unwrap();
    assert!(
        quantized.blob == shipped,
        "re-quantizing models/mnist-digits-256k/generator.safetensors gives another blob"
    );
}

#[test]
fn the_chip_draws_the_hosts_bytes() {
    let work = tempfile::tempdir().unwrap();
    let blob = std::fs::read(shipped_compact_model()).unwrap();
    let elf = build_firmware(&shipped_compact_model(), &work.path().join("fw.elf")).unwrap();
    let seeds: Vec<u32> = vec![0, 1, 2, 1234, u32::MAX];
    let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(120)).unwrap();
    assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
    let expected = simulate(&blob, &seeds).unwrap();
    assert_eq!(run.images.len(), seeds.len());
    for ((drawn, want), &seed) in run.images.iter().zip(&expected).zip(&seeds) {
        assert_eq!(drawn.seed, seed);
        assert!(
            drawn.pixels == *want,
            "seed {seed}: the chip differs from the host"
        );
    }
}
