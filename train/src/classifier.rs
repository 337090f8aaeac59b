//! A small LeNet-style digit classifier, trained on a data set's training split, that gives
//! `mcugan eval` its feature space (FID) and its class probabilities (Inception-Score
//! analogue, class coverage).
//!
//! `conv 5x5 (1→16) → ReLU → max-pool 2 → conv 5x5 (16→32) → ReLU → max-pool 2 → linear
//! (1568→128) → ReLU → linear (128→10)`; the 128 values after the first linear layer's ReLU
//! are the features. Images enter as the GAN sees them, gray levels mapped to `[-1, 1]`.
//! Training is reproducible from its seed: initialisation, shuffling and the random shifts
//! that augment the training images all come from one ChaCha8 stream.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adam::{Adam, AdamConfig};
use mcugan_model_tools::data::Dataset;
use mcugan_model_tools::eval::FeatureExtractor;

/// Length of the feature vector FID is computed on.
pub const FEATURES: usize = 128;
pub use mcugan_model_tools::eval::{argmax, Rows, CLASSES, INPUT_PIXELS};
/// Images go through the classifier in batches of this many when evaluating.
const EVAL_BATCH: usize = 500;

/// The classifier's parameters, as named in its safetensors file.
const PARAMETERS: [(&str, &[usize]); 8] = [
    ("conv1.weight", &[16, 1, 5, 5]),
    ("conv1.bias", &[16]),
    ("conv2.weight", &[32, 16, 5, 5]),
    ("conv2.bias", &[32]),
    ("fc1.weight", &[FEATURES, 32 * 7 * 7]),
    ("fc1.bias", &[FEATURES]),
    ("fc2.weight", &[CLASSES, FEATURES]),
    ("fc2.bias", &[CLASSES]),
];

/// The trained classifier and what is known about it.
pub struct Classifier {
    vars: Vec<(String, Var)>,
    /// Metadata saved with it: data set, test accuracy, epochs, seed.
    pub meta: HashMap<String, String>,
}

/// Settings for [`Classifier::train`].
#[derive(Clone, Debug)]
pub struct ClassifierTraining {
    /// Passes over the training split.
    pub epochs: usize,
    /// Images per batch.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Largest random shift of a training image, in pixels.
    pub shift: usize,
    /// Seed of initialisation, shuffling and shifts.
    pub seed: u64,
    /// Show a progress bar.
    pub progress: bool,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        Self {
            epochs: 12,
            batch_size: 64,
            lr: 1e-3,
            shift: 2,
            seed: 0,
            progress: true,
        }
    }
}

/// Gray levels `[n, 784]` → the `[n, 1, 28, 28]` tensor in `[-1, 1]` the classifier reads.
pub fn images_tensor(pixels: &[u8], device: &Device) -> anyhow::Result<Tensor> {
    if !pixels.len().is_multiple_of(INPUT_PIXELS) {
        bail!("images must be 28x28 ({} pixels given)", pixels.len());
    }
    let n = pixels.len() / INPUT_PIXELS;
    Ok(Tensor::from_slice(pixels, (n, 1, 28, 28), device)?
        .to_dtype(DType::F32)?
        .affine(2.0 / 255.0, -1.0)?)
}

impl Classifier {
    /// A freshly initialised classifier (PyTorch's default initialisation ranges).
    pub fn new(seed: u64, device: &Device) -> anyhow::Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::new();
        let mut fan_in = 1;
        for (name, shape) in PARAMETERS {
            if name.ends_with("weight") {
                fan_in = shape[1..].iter().product::<usize>();
            }
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
            let tensor = Tensor::from_vec(values, shape, device)?;
            vars.push((name.to_string(), Var::from_tensor(&tensor)?));
        }
        Ok(Self {
            vars,
            meta: HashMap::new(),
        })
    }

    fn param(&self, index: usize) -> &Tensor {
        self.vars[index].1.as_tensor()
    }

    /// The 128 features and the 10 logits of `images` (`[n, 1, 28, 28]`, in `[-1, 1]`).
    pub fn forward(&self, images: &Tensor) -> anyhow::Result<(Tensor, Tensor)> {
        let conv = |x: &Tensor, w: usize| -> candle_core::Result<Tensor> {
            x.conv2d(self.param(w), 2, 1, 1, 1)?
                .broadcast_add(&self.param(w + 1).reshape((1, (), 1, 1))?)?
                .relu()?
                .max_pool2d(2)
        };
        let x = conv(images, 0)?;
        let x = conv(&x, 2)?.flatten_from(1)?;
        let features = x
            .matmul(&self.param(4).t()?)?
            .broadcast_add(self.param(5))?
            .relu()?;
        let logits = features
            .matmul(&self.param(6).t()?)?
            .broadcast_add(self.param(7))?;
        Ok((features, logits))
    }

    /// Features `[n, 128]` and class probabilities `[n, 10]` of gray-level images, as f64.
    pub fn features_and_probabilities(&self, pixels: &[u8]) -> anyhow::Result<(Rows, Rows)> {
        let device = self.param(0).device().clone();
        let mut features = Vec::new();
        let mut probabilities = Vec::new();
        for chunk in pixels.chunks(EVAL_BATCH * INPUT_PIXELS) {
            let (f, logits) = self.forward(&images_tensor(chunk, &device)?)?;
            let p = candle_nn::ops::softmax_last_dim(&logits)?;
            let to_rows = |t: Tensor| -> anyhow::Result<Vec<Vec<f64>>> {
                Ok(t.to_dtype(DType::F64)?.to_vec2::<f64>()?)
            };
            features.extend(to_rows(f)?);
            probabilities.extend(to_rows(p)?);
        }
        Ok((features, probabilities))
    }

    /// Predicted class of every image.
    pub fn predict(&self, pixels: &[u8]) -> anyhow::Result<Vec<usize>> {
        FeatureExtractor::predict(self, pixels)
    }

    /// Fraction of `data`'s images classified as their label.
    pub fn accuracy(&self, data: &Dataset) -> anyhow::Result<f64> {
        if data.is_empty() {
            bail!("no images to measure accuracy on");
        }
        let predicted = self.predict(&data.pixels)?;
        let right = predicted
            .iter()
            .zip(&data.labels)
            .filter(|(p, &l)| **p == usize::from(l))
            .count();
        Ok(right as f64 / data.len() as f64)
    }

    /// Trains a fresh classifier on `train` (cross-entropy, Adam, random shifts).
    pub fn train(train: &Dataset, settings: &ClassifierTraining) -> anyhow::Result<Self> {
        if train.image_len() != INPUT_PIXELS {
            bail!("the classifier reads 28x28 images");
        }
        if let Some(&bad) = train.labels.iter().find(|&&l| usize::from(l) >= CLASSES) {
            bail!("label {bad} is not one of the {CLASSES} classes");
        }
        let device = Device::Cpu;
        let mut classifier = Self::new(settings.seed, &device)?;
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed ^ 0xc1a5_51f1);
        let config = AdamConfig {
            lr: settings.lr,
            ..AdamConfig::REFERENCE
        };
        let config = AdamConfig {
            beta1: 0.9,
            ..config
        };
        let mut adam = Adam::new(classifier.vars.clone(), config)?;
        let images = Tensor::from_slice(&train.pixels, (train.len(), INPUT_PIXELS), &device)?
            .to_dtype(DType::F32)?
            .affine(2.0 / 255.0, -1.0)?;
        let labels =
            Tensor::from_slice(&train.labels, train.len(), &device)?.to_dtype(DType::U32)?;
        let batches = train.len().div_ceil(settings.batch_size);
        let bar = if settings.progress {
            let bar = ProgressBar::new((settings.epochs * batches) as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "classifier [{elapsed_precise}] [{bar:30}] {pos}/{len} batches, ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut order: Vec<u32> = (0..train.len() as u32).collect();
        let started = std::time::Instant::now();
        for epoch in 0..settings.epochs {
            order.shuffle(&mut rng);
            // Cosine decay of the learning rate over the run.
            let progress = epoch as f64 / settings.epochs.max(1) as f64;
            adam.set_lr(settings.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
            for chunk in order.chunks(settings.batch_size) {
                let ids = Tensor::from_slice(chunk, chunk.len(), &device)?;
                let x = images.index_select(&ids, 0)?;
                let x = crate::recipe::translate(&x, 1, 28, settings.shift, &mut rng)?
                    .reshape((chunk.len(), 1, 28, 28))?;
                let y = labels.index_select(&ids, 0)?;
                let (_, logits) = classifier.forward(&x)?;
                let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
                adam.step(&loss.backward()?)?;
                bar.inc(1);
            }
            bar.set_message(format!("epoch {}/{}", epoch + 1, settings.epochs));
            if settings.progress && bar.is_hidden() {
                // No terminal (a log file, CI): a line per epoch instead of the bar.
                eprintln!(
                    "classifier: epoch {}/{} ({:.0} s)",
                    epoch + 1,
                    settings.epochs,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        bar.finish_and_clear();
        classifier
            .meta
            .insert("epochs".into(), settings.epochs.to_string());
        classifier
            .meta
            .insert("seed".into(), settings.seed.to_string());
        classifier
            .meta
            .insert("train_images".into(), train.len().to_string());
        Ok(classifier)
    }

    /// Writes the classifier and its metadata as safetensors.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let mut meta = self.meta.clone();
        meta.insert("format".into(), "mcugan-classifier-1".into());
        let bytes = mcugan_model_tools::fsutil::safetensors_bytes(tensors, meta)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        mcugan_model_tools::fsutil::write_atomically(path, &bytes)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads a classifier written by [`Classifier::save`].
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "reading the classifier {} (train one with `mcugan classifier`)",
                path.display()
            )
        })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{} is not a safetensors file", path.display()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some("mcugan-classifier-1") {
            bail!("{} is not an mcugan classifier", path.display());
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
        let mut vars = Vec::new();
        for (name, shape) in PARAMETERS {
            let t = tensors
                .get(name)
                .with_context(|| format!("{} has no tensor {name}", path.display()))?;
            if t.dims() != shape {
                bail!(
                    "{}: {name} has shape {:?}, expected {shape:?}",
                    path.display(),
                    t.dims()
                );
            }
            vars.push((
                name.to_string(),
                Var::from_tensor(&t.to_dtype(DType::F32)?)?,
            ));
        }
        Ok(Self { vars, meta })
    }
}

impl FeatureExtractor for Classifier {
    fn features_and_probabilities(&self, pixels: &[u8]) -> anyhow::Result<(Rows, Rows)> {
        Classifier::features_and_probabilities(self, pixels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Classifier::new(3, &Device::Cpu).unwrap();
        let pixels = vec![100u8; 3 * 784];
        let (f, p) = c.features_and_probabilities(&pixels).unwrap();
        assert_eq!((f.len(), f[0].len(), p[0].len()), (3, FEATURES, CLASSES));
        assert!((p[0].iter().sum::<f64>() - 1.0).abs() < 1e-5);
        let path = dir.path().join("c.safetensors");
        c.save(&path).unwrap();
        let d = Classifier::load(&path).unwrap();
        assert_eq!(d.features_and_probabilities(&pixels).unwrap().0, f);
    }

    #[test]
    fn rejects_a_file_that_is_not_a_classifier() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.safetensors");
        std::fs::write(&path, b"nonsense").unwrap();
        assert!(Classifier::load(&path).is_err());
    }
}
