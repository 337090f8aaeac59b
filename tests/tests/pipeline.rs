//! The host pipeline on a tiny synthetic data set: train, checkpoint, quantize, simulate.

use std::path::Path;

use candle_core::{Device, Tensor};
use mcugan_model_tools::data::{write_split, Dataset, Split};
use mcugan_model_tools::quantize::{quantize, QuantizeOptions};
use mcugan_model_tools::simulate::simulate;
use mcugan_train::model::fold;
use mcugan_train::run::{load_generator, train, TrainConfig};

/// 96 images of bright vertical or horizontal bars, labelled by orientation.
fn bars(dir: &Path) {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..96usize {
        let vertical = i % 2 == 0;
        let at = 4 + (i / 2) % 20;
        for y in 0..28 {
            for x in 0..28 {
                let on = if vertical {
                    x == at || x == at + 1
                } else {
                    y == at || y == at + 1
                };
                pixels.push(if on { 255 } else { 0 });
            }
        }
        labels.push(u8::from(vertical));
    }
    let data = Dataset {
        rows: 28,
        cols: 28,
        pixels,
        labels,
    };
    write_split(dir, Split::Train, &data).unwrap();
}

fn config(data: &Path, out: &Path) -> TrainConfig {
    let mut config = TrainConfig::reference(data.to_path_buf(), out.to_path_buf(), 2);
    config.batch_size = 32;
    config.sample_interval = 2;
    config.progress = false;
    config.seed = 5;
    config
}

#[test]
fn train_checkpoint_quantize_simulate() {
    let work = tempfile::tempdir().unwrap();
    let (data, out) = (work.path().join("data"), work.path().join("run"));
    bars(&data);
    let summary = train(&config(&data, &out)).unwrap();
    assert_eq!((summary.images, summary.epochs), (96, 2));
    assert!(summary.final_d_loss.is_finite() && summary.final_g_loss.is_finite());
    assert_eq!(summary.epoch_seconds.len(), 2);

    // 3 batches per epoch, 2 epochs: a header and 6 lines.
    let log = std::fs::read_to_string(out.join("losses.csv")).unwrap();
    assert_eq!(log.lines().count(), 7);
    assert!(log.starts_with("epoch,batch,batches_done,d_loss,g_loss\n"));
    // Sample grids at batches 0, 2 and 4: 5x5 images of 28 px with 2 px padding.
    for n in [0, 2, 4] {
        let grid =
            mcugan_model_tools::picture::load_png(&out.join(format!("samples/{n}.png"))).unwrap();
        assert_eq!((grid.width, grid.height), (152, 152));
    }

    // The generator file and the full checkpoint hold the same generator.
    let device = Device::Cpu;
    let from_file = load_generator(&out.join("generator.safetensors"), &device).unwrap();
    let from_checkpoint = load_generator(&out.join("checkpoint.safetensors"), &device).unwrap();
    let z = Tensor::randn(0f32, 1., (3, 100), &device).unwrap();
    let a = from_file
        .forward_eval(&z, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let b = from_checkpoint
        .forward_eval(&z, None)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    assert_eq!(a, b);

    let float = fold(&from_file).unwrap();
    let quantized = quantize(&float, &QuantizeOptions::default()).unwrap();
    let images = simulate(&quantized.blob, &[0, 1, 2]).unwrap();
    assert_eq!(images.len(), 3);
    assert!(images.iter().all(|i| i.len() == 784));
}

#[test]
fn the_same_seed_trains_the_same_generator() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    bars(&data);
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let out = work.path().join(name);
        let mut config = config(&data, &out);
        config.epochs = 1;
        config.sample_interval = 0;
        train(&config).unwrap();
        let flat = tensor_bytes(&out.join("generator.safetensors"));
        runs.push(flat);
    }
    assert_eq!(runs[0].len(), 8 * 2 + 3 * 3);
    assert!(
        runs[0] == runs[1],
        "two runs with one seed trained different generators"
    );
}

#[test]
fn the_small_data_recipe_exports_the_weight_average() {
    let work = tempfile::tempdir().unwrap();
    let (data, out) = (work.path().join("data"), work.path().join("run"));
    bars(&data);
    let mut config = config(&data, &out);
    config.recipe = mcugan_train::recipe::Recipe::SMALL_DATA;
    config.sample_interval = 0;
    let summary = train(&config).unwrap();
    assert_eq!(summary.recipe, "small-data");

    // The checkpoint keeps the live generator and the average; the exported generator is the
    // average, so it differs from the live one.
    let device = Device::Cpu;
    let exported = load_generator(&out.join("generator.safetensors"), &device).unwrap();
    let live = load_generator(&out.join("checkpoint.safetensors"), &device).unwrap();
    let bytes = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &device).unwrap();
    assert!(tensors.contains_key("generator_average.model.11.weight"));
    let a = exported.mlp().unwrap().linears[4].weight.as_tensor();
    let b = live.mlp().unwrap().linears[4].weight.as_tensor();
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() > 0.0);
    let expected = tensors["generator_average.model.11.weight"].clone();
    let same = (a - expected).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(same.to_scalar::<f32>().unwrap(), 0.0);

    let float = fold(&exported).unwrap();
    let quantized = quantize(&float, &QuantizeOptions::default()).unwrap();
    assert_eq!(simulate(&quantized.blob, &[3]).unwrap()[0].len(), 784);
}

/// Every tensor of a safetensors file as bytes, by name.
fn tensor_bytes(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    tensors
        .into_iter()
        .map(|(name, t)| {
            let t = t.flatten_all().unwrap();
            let bytes = match t.dtype() {
                candle_core::DType::F32 => t
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
                _ => t
                    .to_dtype(candle_core::DType::I64)
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            };
            (name, bytes)
        })
        .collect()
}

fn conditional_config(data: &Path, out: &Path, epochs: usize) -> TrainConfig {
    let mut config = config(data, out);
    config.classes = Some(2);
    config.engine = mcugan_train::engine::Engine::Candle;
    config.sample_interval = 0;
    config.epochs = epochs;
    config
}

#[test]
fn the_conditional_gan_trains_resumes_quantizes_and_draws_each_class() {
    use mcugan_model_tools::simulate::{class_grid_requests, simulate_requests};
    use mcugan_shared::ImageRequest;

    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    bars(&data);

    // Two epochs in one go, and one epoch resumed to two: the same generator, byte for byte
    // (the asked labels come from the run's random generator, which the checkpoint keeps).
    let straight = work.path().join("straight");
    train(&conditional_config(&data, &straight, 2)).unwrap();
    let resumed = work.path().join("resumed");
    train(&conditional_config(&data, &resumed, 1)).unwrap();
    let mut again = TrainConfig::resume(resumed.clone(), Some(2)).unwrap();
    assert_eq!(again.classes, Some(2), "resume keeps the conditional model");
    again.engine = mcugan_train::engine::Engine::Candle;
    again.progress = false;
    train(&again).unwrap();
    let a = tensor_bytes(&straight.join("generator.safetensors"));
    let b = tensor_bytes(&resumed.join("generator.safetensors"));
    assert!(a.contains_key("label_emb.weight"));
    assert!(
        a == b,
        "a resumed conditional run differs from a straight one"
    );

    // cgan.py's discriminator: its label embedding and four linear layers, in the checkpoint.
    let checkpoint = tensor_bytes(&straight.join("checkpoint.safetensors"));
    for name in [
        "discriminator.label_embedding.weight",
        "discriminator.model.0.weight",
        "discriminator.model.8.weight",
        "optimizer_d.label_embedding.weight.exp_avg",
        "optimizer_g.label_emb.weight.exp_avg_sq",
    ] {
        assert!(checkpoint.contains_key(name), "missing {name}");
    }
    assert_eq!(
        checkpoint["discriminator.model.0.weight"].len(),
        512 * 786 * 4
    );

    // The generator, folded and quantized: a version-4 blob with two classes whose int8
    // images follow the float model's for every class.
    let generator = load_generator(&straight.join("generator.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(generator.classes(), Some(2));
    let float = fold(&generator).unwrap();
    assert_eq!((float.class_count(), float.latent_dim()), (Some(2), 100));
    let quantized = quantize(&float, &QuantizeOptions::default()).unwrap();
    assert_eq!(quantized.class_codes_clipped, 0);
    let model = mcugan_shared::Model::parse(&quantized.blob).unwrap();
    assert_eq!((model.classes(), model.input_width()), (Some(2), 102));
    let requests = class_grid_requests(&[0, 1, 2], 2);
    assert_eq!(requests[3], ImageRequest::class(0, 1));
    let images = simulate_requests(&quantized.blob, &requests).unwrap();
    for (request, image) in requests.iter().zip(&images) {
        let reference = float.draw_request(*request).unwrap();
        let psnr = mcugan_model_tools::simulate::psnr(&reference, image);
        assert!(psnr > 25.0, "{request:?}: int8 vs float PSNR {psnr:.1} dB");
    }
    assert_ne!(images[0], images[3], "the class does not change the image");
    // The default request of a seed, as simulate() draws it: class seed mod 2.
    assert_eq!(simulate(&quantized.blob, &[1]).unwrap()[0], images[4]);
}

#[test]
fn the_conditional_gan_refuses_what_it_cannot_train() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    bars(&data);
    let out = work.path().join("run");
    let err = |config: TrainConfig| format!("{:#}", train(&config).unwrap_err());

    let mut fused = conditional_config(&data, &out, 1);
    fused.engine = mcugan_train::engine::Engine::Fused { threads: 1 };
    assert!(err(fused).contains("--engine candle"));
    let mut one = conditional_config(&data, &out, 1);
    one.classes = Some(1);
    assert!(err(one).contains("2 to 256 classes"));
    let mut dropout = conditional_config(&data, &out, 1);
    dropout.recipe = mcugan_train::recipe::Recipe::SMALL_DATA;
    assert!(err(dropout).contains("dropout"));
}
