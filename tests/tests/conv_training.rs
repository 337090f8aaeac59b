//! Convolutional GANs trained here, end to end: a narrow GAN of `dcgan.py`'s pattern trains on
//! 28x28 images resized to its side, resumes to the same bytes, keeps its discriminator's
//! BatchNorm statistics in the checkpoint, folds, quantizes, and its blob runs under QEMU
//! drawing the host simulation's bytes; `dcgan.py`'s own networks train a few batches and
//! load back as `dcgan.py`'s generator; the small-data recipe (translation, label smoothing,
//! the generator's weight average) trains one and resumes to the same bytes.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;
use mcugan_device_tools::firmware::{run_qemu, QemuOptions};
use mcugan_e2e::{build_firmware_with, Kernels};
use mcugan_model_tools::data::{write_split, Dataset, Split};
use mcugan_model_tools::quantize::{quantize, QuantizeOptions};
use mcugan_model_tools::simulate::{compare, simulate};
use mcugan_train::engine::Engine;
use mcugan_train::model::conv::{ConvGanSpec, DiscriminatorSpec, GeneratorSpec};
use mcugan_train::model::{fold, Architecture, Generator};
use mcugan_train::run::{load_generator, train, TrainConfig};

/// 64 images of a bright square at varying places.
fn squares(dir: &Path) {
    let mut pixels = Vec::new();
    for i in 0..64usize {
        let (x0, y0) = (2 + (i * 5) % 18, 2 + (i * 3) % 18);
        for y in 0..28 {
            for x in 0..28 {
                let on = (x0..x0 + 8).contains(&x) && (y0..y0 + 8).contains(&y);
                pixels.push(if on { 255 } else { 0 });
            }
        }
    }
    let data = Dataset {
        rows: 28,
        cols: 28,
        pixels,
        labels: vec![0; 64],
    };
    write_split(dir, Split::Train, &data).unwrap();
}

/// A narrow 16x16 GAN of `dcgan.py`'s pattern.
fn narrow() -> ConvGanSpec {
    ConvGanSpec {
        generator: GeneratorSpec {
            latent: 100,
            init_side: 4,
            channels: vec![16, 8, 8],
            first_norm_eps: 1e-5,
            norm_eps: 0.8,
            kernel: 3,
            image_channels: 1,
            upsampling: Default::default(),
            first_leaky_relu: false,
        },
        discriminator: DiscriminatorSpec {
            channels: vec![8, 16],
            dropout: 0.25,
            norm_eps: 0.8,
            kernel: 3,
        },
    }
}

fn config(data: &Path, out: &Path, spec: ConvGanSpec, epochs: usize) -> TrainConfig {
    let mut config = TrainConfig::reference(data.to_path_buf(), out.to_path_buf(), epochs);
    config.batch_size = 16;
    config.sample_interval = 3;
    config.progress = false;
    config.seed = 11;
    config.engine = Engine::Candle;
    config.architecture = Architecture::Conv(spec);
    config
}

fn tensor_bytes(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect()
}

#[test]
fn a_convolutional_gan_trains_resumes_quantizes_and_runs_bit_exact_under_qemu() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    squares(&data);

    let straight = work.path().join("straight");
    let summary = train(&config(&data, &straight, narrow(), 2)).unwrap();
    assert!(summary.final_d_loss.is_finite() && summary.final_g_loss.is_finite());
    let resumed = work.path().join("resumed");
    train(&config(&data, &resumed, narrow(), 1)).unwrap();
    let mut again = TrainConfig::resume(resumed.clone(), Some(2)).unwrap();
    assert_eq!(again.architecture, Architecture::Conv(narrow()));
    again.engine = Engine::Candle;
    again.progress = false;
    train(&again).unwrap();
    let a = tensor_bytes(&straight.join("generator.safetensors"));
    assert!(a.contains_key("conv_blocks.3.running_var"));
    assert!(
        a == tensor_bytes(&resumed.join("generator.safetensors")),
        "a resumed convolutional run differs from a straight one"
    );
    // The discriminator's BatchNorm statistics travel in the checkpoint.
    let checkpoint = tensor_bytes(&straight.join("checkpoint.safetensors"));
    for name in [
        "discriminator.model.6.running_mean",
        "discriminator.model.6.num_batches_tracked",
        "optimizer_d.model.3.weight.exp_avg",
        "optimizer_g.conv_blocks.2.weight.exp_avg_sq",
    ] {
        assert!(checkpoint.contains_key(name), "missing {name}");
    }
    // 8 batches, three discriminator passes each.
    assert_eq!(
        checkpoint["discriminator.model.6.num_batches_tracked"],
        24i64.to_le_bytes()
    );
    assert!(straight.join("samples/3.png").exists());

    // Load, fold, quantize; the blob on the emulated chip draws the simulation's bytes.
    let generator = load_generator(&straight.join("generator.safetensors"), &Device::Cpu).unwrap();
    assert!(matches!(generator, Generator::Conv(_)));
    let float = fold(&generator).unwrap();
    assert_eq!((float.image.width, float.layers.len()), (16, 4));
    let options = QuantizeOptions {
        name: "narrow".into(),
        calibration_images: 128,
        ..QuantizeOptions::default()
    };
    let quantized = quantize(&float, &options).unwrap();
    let seeds: Vec<u32> = vec![0, 1, 2, 77, u32::MAX];
    let comparison = compare(&float, &quantized.blob, &seeds).unwrap();
    assert!(comparison.psnr_db > 30.0, "PSNR {}", comparison.psnr_db);

    let blob_path = work.path().join("narrow.mcg");
    std::fs::write(&blob_path, &quantized.blob).unwrap();
    let elf = build_firmware_with(&blob_path, &work.path().join("fw.elf"), Kernels::Dsp).unwrap();
    let run = run_qemu(&elf, &seeds, &QemuOptions::with_timeout(180)).unwrap();
    assert!(run.succeeded(), "firmware failed:\n{}", run.log.join("\n"));
    let expected = simulate(&quantized.blob, &seeds).unwrap();
    assert_eq!(run.images.len(), seeds.len());
    for ((drawn, want), &seed) in run.images.iter().zip(&expected).zip(&seeds) {
        assert_eq!(drawn.seed, seed);
        assert_eq!(&drawn.pixels, want, "seed {seed}");
    }
}

#[test]
fn dcgan_py_trains_and_loads_back_as_dcgan_py() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    squares(&data);
    let out = work.path().join("run");
    let mut config = config(&data, &out, ConvGanSpec::dcgan(), 1);
    config.batch_size = 32;
    train(&config).unwrap();
    let generator = load_generator(&out.join("generator.safetensors"), &Device::Cpu).unwrap();
    let Generator::Conv(conv) = &generator else {
        panic!("not a convolutional generator");
    };
    assert_eq!(conv.spec, ConvGanSpec::dcgan().generator);
    // The checkpoint loads as a generator too.
    let from_checkpoint = load_generator(&out.join("checkpoint.safetensors"), &Device::Cpu);
    assert!(matches!(from_checkpoint, Ok(Generator::Conv(_))));
    let float = fold(&generator).unwrap();
    assert_eq!((float.image.width, float.image.height), (32, 32));
    assert_eq!(float.layers.len(), 4);
}

#[test]
fn convolutional_runs_refuse_what_they_cannot_train() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    squares(&data);
    let out = work.path().join("run");
    let mut fused = config(&data, &out, narrow(), 1);
    fused.engine = Engine::Fused { threads: 1 };
    let error = format!("{:#}", train(&fused).unwrap_err());
    assert!(error.contains("candle"), "{error}");
    let mut conditional = config(&data, &out, narrow(), 1);
    conditional.classes = Some(2);
    let error = format!("{:#}", train(&conditional).unwrap_err());
    assert!(error.contains("unconditional"), "{error}");
}

#[test]
fn the_small_data_recipe_trains_a_convolutional_gan_and_resumes_to_the_same_bytes() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    squares(&data);
    let small_data = |out: &Path, epochs| {
        let mut config = config(&data, out, narrow(), epochs);
        config.recipe = mcugan_train::recipe::Recipe::SMALL_DATA;
        config
    };
    let straight = work.path().join("straight");
    train(&small_data(&straight, 2)).unwrap();
    let resumed = work.path().join("resumed");
    train(&small_data(&resumed, 1)).unwrap();
    let mut again = TrainConfig::resume(resumed.clone(), Some(2)).unwrap();
    assert_eq!(again.recipe, mcugan_train::recipe::Recipe::SMALL_DATA);
    again.engine = Engine::Candle;
    again.progress = false;
    train(&again).unwrap();
    let exported = tensor_bytes(&straight.join("generator.safetensors"));
    assert!(
        exported == tensor_bytes(&resumed.join("generator.safetensors")),
        "a resumed small-data run differs from a straight one"
    );
    // The generator file is the weight average (kept in the checkpoint), not the live weights.
    let checkpoint = tensor_bytes(&straight.join("checkpoint.safetensors"));
    let average = &checkpoint["generator_average.l1.0.weight"];
    assert_eq!(&exported["l1.0.weight"], average);
    assert_ne!(&checkpoint["generator.l1.0.weight"], average);
    // And a reference run of the same seed trains other weights: the recipe took effect.
    let reference = work.path().join("reference");
    train(&config(&data, &reference, narrow(), 2)).unwrap();
    assert_ne!(
        tensor_bytes(&reference.join("generator.safetensors"))["l1.0.weight"],
        exported["l1.0.weight"]
    );
}
