//! Training recipes: the reference, and small-data improvements that leave the generator's
//! architecture — and so the model the chip runs — unchanged.
//!
//! The reference GAN overfits its discriminator on small data sets such as the 9,000 offline
//! digits (its loss falls towards 0.1) and the generator collapses onto a few noisy shapes; the
//! PyTorch reference does the same on the same data (see docs/src/training/recipes.md). The `small-data` recipe
//! adds, all from the run's seeded random stream:
//! - dropout in the discriminator's hidden layers;
//! - random translation of real and fake images before the discriminator, by whole pixels with
//!   background padding, differentiable (DiffAugment's "translation", Zhao et al. 2020);
//! - one-sided label smoothing (real target below 1; Salimans et al. 2016);
//! - an exponential moving average of the generator's weights, which is what gets exported,
//!   with its BatchNorm statistics recomputed for the averaged weights.

use candle_core::{Device, Result, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

mod average;

pub use average::WeightAverage;

/// How to train.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recipe {
    /// Dropout probability in the discriminator's two hidden layers (0: none).
    pub d_dropout: f32,
    /// Largest random shift, in pixels, of every image the discriminator sees (0: none).
    pub translate: usize,
    /// The target for real images (1: no smoothing).
    pub real_label: f64,
    /// Decay of the exported generator's weight average (`None`: export the live weights).
    pub g_ema: Option<f64>,
}

impl Recipe {
    /// PyTorch-GAN's `gan.py`, unchanged.
    pub const REFERENCE: Recipe = Recipe {
        d_dropout: 0.0,
        translate: 0,
        real_label: 1.0,
        g_ema: None,
    };

    /// The small-data improvements (see the module documentation).
    pub const SMALL_DATA: Recipe = Recipe {
        d_dropout: 0.3,
        translate: 2,
        real_label: 0.9,
        g_ema: Some(0.999),
    };

    /// The recipe called `name`: `reference` or `small-data`.
    pub fn by_name(name: &str) -> Option<Recipe> {
        match name {
            "reference" => Some(Recipe::REFERENCE),
            "small-data" => Some(Recipe::SMALL_DATA),
            _ => None,
        }
    }

    /// The recipe's name, if it is a named one.
    pub fn name(&self) -> &'static str {
        if *self == Recipe::REFERENCE {
            "reference"
        } else if *self == Recipe::SMALL_DATA {
            "small-data"
        } else {
            "custom"
        }
    }
}

/// Shifts every image of `images` (`[batch, channels · side²]`, values in `[-1, 1]`) by its
/// own random offset in `-max_shift..=max_shift` on both axes (the same for all its channels),
/// filling with the background value -1. One gather, so gradients flow back to the images.
pub fn translate(
    images: &Tensor,
    channels: usize,
    side: usize,
    max_shift: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    if max_shift == 0 {
        return Ok(images.clone());
    }
    let batch = images.dim(0)?;
    let padded_side = side + 2 * max_shift;
    let padded_len = padded_side * padded_side;
    // Pad with zeros around (x + 1), so the padding is -1 after subtracting 1 again.
    let padded = (images + 1.0)?
        .reshape((batch * channels, side, side))?
        .pad_with_zeros(1, max_shift, max_shift)?
        .pad_with_zeros(2, max_shift, max_shift)?
        .flatten_all()?;
    let mut indices = Vec::with_capacity(batch * channels * side * side);
    for b in 0..batch {
        let (dy, dx) = draw_shift(max_shift, rng);
        for c in 0..channels {
            let plane = (b * channels + c) * padded_len;
            for y in 0..side {
                for x in 0..side {
                    indices.push((plane + (y + dy) * padded_side + (x + dx)) as u32);
                }
            }
        }
    }
    let indices = Tensor::from_vec(indices, batch * channels * side * side, images.device())?;
    padded
        .index_select(&indices, 0)?
        .reshape((batch, channels * side * side))?
        - 1.0
}

/// One image's shift for [`translate`]: `(dy, dx)`, each in `0..=2·max_shift`, the offset into
/// the padded image (so `max_shift` means no shift). Every trainer draws shifts through this,
/// so they all consume the run's random stream alike.
pub fn draw_shift(max_shift: usize, rng: &mut ChaCha8Rng) -> (usize, usize) {
    let span = 2 * max_shift as i64 + 1;
    let dy = rng.random_range(0..span) as usize;
    let dx = rng.random_range(0..span) as usize;
    (dy, dx)
}

/// Fills `mask` with inverted-dropout factors drawn in order: each 0 with probability `p`, else
/// `1 / (1 - p)`.
pub fn fill_dropout_mask(mask: &mut [f32], p: f32, rng: &mut ChaCha8Rng) {
    let keep = 1.0 / (1.0 - p);
    for value in mask {
        *value = if rng.random::<f32>() < p { 0.0 } else { keep };
    }
}

/// An inverted-dropout mask: each element is 0 with probability `p`, else `1 / (1 - p)`.
pub fn dropout_mask(
    shape: (usize, usize),
    p: f32,
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor> {
    let mut values = vec![0f32; shape.0 * shape.1];
    fill_dropout_mask(&mut values, p, rng);
    Tensor::from_vec(values, shape, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;

    #[test]
    fn translation_moves_pixels_and_pads_with_background() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // One 4x4 image with a single bright pixel at (1, 1).
        let mut pixels = vec![-1f32; 16];
        pixels[5] = 1.0;
        let image = Tensor::from_vec(pixels, (1, 16), &device).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let out = translate(&image, 1, 4, 1, &mut rng)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            let bright: Vec<usize> = (0..16).filter(|&i| out[0][i] > 0.0).collect();
            assert_eq!(bright.len(), 1, "{out:?}");
            assert!(out[0].iter().all(|&v| v == 1.0 || v == -1.0));
            seen.insert(bright[0]);
        }
        // Shifts of -1..=1 on both axes put the pixel at 9 places.
        assert_eq!(seen.len(), 9);
    }

    #[test]
    fn translation_shifts_every_channel_of_an_image_alike() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        // Two images of three 4x4 channels, each channel one bright pixel at (1, 2).
        let mut pixels = vec![-1f32; 2 * 3 * 16];
        for plane in 0..6 {
            pixels[plane * 16 + 6] = 1.0;
        }
        let images = Tensor::from_vec(pixels, (2, 48), &device).unwrap();
        for _ in 0..50 {
            let out = translate(&images, 3, 4, 1, &mut rng)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for image in &out {
                let bright: Vec<usize> = (0..48).filter(|&i| image[i] > 0.0).collect();
                assert_eq!(bright.len(), 3, "{image:?}");
                assert_eq!(bright[0] + 16, bright[1]);
                assert_eq!(bright[1] + 16, bright[2]);
            }
        }
    }

    #[test]
    fn translation_passes_gradients_back() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let x =
            Var::from_tensor(&Tensor::zeros((2, 16), candle_core::DType::F32, &device).unwrap())
                .unwrap();
        let y = translate(x.as_tensor(), 1, 4, 1, &mut rng).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Every output pixel that came from the image (not the padding) adds one.
        assert!(g > 0.0 && g <= 32.0, "{g}");
    }

    #[test]
    fn dropout_masks_keep_the_expectation() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mask = dropout_mask((100, 100), 0.3, &mut rng, &Device::Cpu).unwrap();
        let v = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        let zeros = v.iter().filter(|&&x| x == 0.0).count() as f32 / v.len() as f32;
        assert!((zeros - 0.3).abs() < 0.03, "{zeros}");
    }
}
