//! The files a run writes in its output folder, and the generator file read back.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::TrainConfig;
use crate::model::conv::{ConvGanSpec, ConvGenerator, GeneratorSpec};
use crate::model::mlp::MlpGenerator;
use crate::model::{Architecture, Generator, GENERATOR_EMBEDDING};
use mcugan_model_tools::data::Dataset;

/// File name of the full training checkpoint in the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// File name of the generator alone (PyTorch names) in the output directory.
pub const GENERATOR_FILE: &str = "generator.safetensors";
/// File name of the per-batch loss log.
pub const LOSS_LOG_FILE: &str = "losses.csv";
/// File name of the run summary.
pub const SUMMARY_FILE: &str = "train-summary.json";
/// Directory of the sample grids saved during training.
pub const SAMPLES_DIR: &str = "samples";
/// Directory of the generators kept every `save_every` epochs.
pub const GENERATORS_DIR: &str = "generators";

/// SHA-256 of a data set's images and labels, in hex: what identifies the training data of a
/// run, wherever its files lie and however they are compressed.
pub fn content_hash(data: &Dataset) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((data.rows as u64).to_le_bytes());
    hasher.update((data.cols as u64).to_le_bytes());
    hasher.update(&data.pixels);
    hasher.update(&data.labels);
    crate::state::hex(&hasher.finalize())
}

/// Writes the generator alone with PyTorch names, atomically.
pub fn save_generator(
    generator: &Generator,
    path: &Path,
    meta: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes = mcugan_model_tools::fsutil::safetensors_bytes(generator.state()?, meta)?;
    mcugan_model_tools::fsutil::write_atomically(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Metadata key of a convolutional generator's spec (JSON of its [`GeneratorSpec`]).
pub const GENERATOR_SPEC_KEY: &str = "generator_spec";

pub(super) fn generator_metadata(
    config: &TrainConfig,
    data: &Dataset,
    epoch: usize,
) -> HashMap<String, String> {
    let mut meta = HashMap::from([
        ("format".to_string(), "mcugan-generator-1".to_string()),
        ("epochs".to_string(), epoch.to_string()),
        ("images".to_string(), data.len().to_string()),
        (
            "data_dir".to_string(),
            config.data_dir.display().to_string(),
        ),
        ("seed".to_string(), config.seed.to_string()),
        ("recipe".to_string(), config.recipe.name().to_string()),
        (
            "classes".to_string(),
            config.classes.map_or("none".to_string(), |c| c.to_string()),
        ),
    ]);
    if let Architecture::Conv(spec) = &config.architecture {
        if let Ok(json) = serde_json::to_string(&spec.generator) {
            meta.insert(GENERATOR_SPEC_KEY.to_string(), json);
        }
    }
    meta
}

/// The spec of the convolutional generator in a safetensors file: from its metadata (a
/// generator file written here, or a checkpoint's run settings), else `dcgan.py`'s when the
/// tensors have its shapes (a `state_dict` saved in PyTorch).
fn conv_spec(
    bytes: &[u8],
    tensors: &HashMap<String, candle_core::Tensor>,
    prefix: &str,
) -> anyhow::Result<GeneratorSpec> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    if let Some(json) = meta.get(GENERATOR_SPEC_KEY) {
        return serde_json::from_str(json).context("its generator_spec metadata");
    }
    if let Some(json) = meta.get("config") {
        let settings: crate::state::RunSettings =
            serde_json::from_str(json).context("its run settings")?;
        if let Architecture::Conv(spec) = settings.architecture {
            return Ok(spec.generator);
        }
    }
    let dcgan = ConvGanSpec::dcgan().generator;
    let l1 = tensors
        .get(&format!("{prefix}l1.0.weight"))
        .map(|t| t.dims().to_vec());
    let expected = vec![
        dcgan.channels[0] * dcgan.init_side * dcgan.init_side,
        dcgan.latent,
    ];
    if l1.as_ref() == Some(&expected) {
        return Ok(dcgan);
    }
    bail!(
        "it has no generator_spec metadata and its l1.0.weight ({l1:?}) is not dcgan.py's \
         {expected:?}"
    )
}

/// Loads a generator from a safetensors file: either a generator file (PyTorch names, as
/// written here or by `safetensors.torch.save_file(generator.state_dict(), …)` in PyTorch) or a
/// full training checkpoint.
pub fn load_generator(path: &Path, device: &Device) -> anyhow::Result<Generator> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .with_context(|| format!("{} is not a safetensors file", path.display()))?;
    let prefix = if tensors.contains_key("generator.model.0.weight")
        || tensors.contains_key("generator.l1.0.weight")
    {
        "generator."
    } else {
        ""
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    if tensors.contains_key(&format!("{prefix}l1.0.weight")) {
        let spec = conv_spec(&bytes, &tensors, prefix)
            .with_context(|| format!("{}: which convolutional generator", path.display()))?;
        let mut generator = Generator::Conv(ConvGenerator::new(&spec, &mut rng, device)?);
        generator.load_state(&tensors, prefix).with_context(|| {
            format!(
                "{} does not hold the generator its metadata describes",
                path.display()
            )
        })?;
        return Ok(generator);
    }
    let embedding = format!("{prefix}{}", GENERATOR_EMBEDDING);
    let mut generator = match tensors.get(&embedding).map(|t| t.dims().to_vec()) {
        Some(dims) if dims.len() == 2 && dims[0] == dims[1] && dims[0] >= 2 => {
            Generator::Mlp(MlpGenerator::conditional(dims[0], &mut rng, device)?)
        }
        Some(dims) => bail!(
            "{}: its label embedding has shape {dims:?}; cgan.py's is [classes, classes]",
            path.display()
        ),
        None => Generator::Mlp(MlpGenerator::new(&mut rng, device)?),
    };
    generator
        .load_state(&tensors, prefix)
        .with_context(|| format!("{} does not hold the reference generator", path.display()))?;
    Ok(generator)
}
