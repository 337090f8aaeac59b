//! The microcontroller, simulated: the host runs the model blob through exactly the code the
//! firmware links (`mcugan_shared::generate`), so its bytes are the chip's bytes. Also the
//! float-versus-int8 comparison.

use anyhow::Context;
use mcugan_shared::{generate_request, generate_walk_frame, ImageRequest, Model, Walk};

use crate::quantize::FloatGenerator;

/// The images the chip draws for `seeds`, computed on the host (a conditional model draws each
/// seed's default class, [`ImageRequest::default_for`]).
pub fn simulate(blob: &[u8], seeds: &[u32]) -> anyhow::Result<Vec<Vec<u8>>> {
    let model = Model::parse(blob).context("invalid model blob")?;
    seeds
        .iter()
        .map(|&seed| {
            let mut pixels = vec![0u8; model.pixel_count()];
            generate_request(
                &model,
                ImageRequest::default_for(seed, model.classes()),
                &mut pixels,
            )?;
            Ok(pixels)
        })
        .collect()
}

/// The images the chip draws for `requests` (seed and class each), computed on the host.
pub fn simulate_requests(blob: &[u8], requests: &[ImageRequest]) -> anyhow::Result<Vec<Vec<u8>>> {
    let model = Model::parse(blob).context("invalid model blob")?;
    requests
        .iter()
        .map(|&request| {
            let mut pixels = vec![0u8; model.pixel_count()];
            generate_request(&model, request, &mut pixels)
                .with_context(|| format!("seed {}", request.seed))?;
            Ok(pixels)
        })
        .collect()
}

/// What a simulation draws for `seeds`: each seed in `class` when one is given, else in the
/// seed's default class ([`ImageRequest::default_for`]).
pub fn requests_for(
    seeds: &[u32],
    class: Option<u16>,
    classes: Option<usize>,
) -> Vec<ImageRequest> {
    seeds
        .iter()
        .map(|&seed| match class {
            Some(class) => ImageRequest {
                seed,
                class: Some(class),
            },
            None => ImageRequest::default_for(seed, classes),
        })
        .collect()
}

/// Every frame of `walk`, as the chip draws it.
pub fn simulate_walk(blob: &[u8], walk: &Walk) -> anyhow::Result<Vec<Vec<u8>>> {
    let model = Model::parse(blob).context("invalid model blob")?;
    (0..walk.frames)
        .map(|frame| {
            let mut pixels = vec![0u8; model.pixel_count()];
            generate_walk_frame(&model, walk, frame, &mut pixels)
                .with_context(|| format!("walk frame {frame}"))?;
            Ok(pixels)
        })
        .collect()
}

/// The requests of a class grid: row `c` holds every seed of `seeds` drawn in class `c`.
pub fn class_grid_requests(seeds: &[u32], classes: usize) -> Vec<ImageRequest> {
    (0..classes)
        .flat_map(|class| {
            seeds
                .iter()
                .map(move |&seed| ImageRequest::class(seed, class as u16))
        })
        .collect()
}

/// Draws each of `seeds` with the chip's code and hands it to `sink` as it is drawn, holding
/// one image at a time: for any number of seeds.
/// `class` picks the class of a conditional model (default: each seed's own).
pub fn simulate_each(
    blob: &[u8],
    seeds: impl Iterator<Item = u32>,
    class: Option<u16>,
    mut sink: impl FnMut(u32, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let model = Model::parse(blob).context("invalid model blob")?;
    let mut pixels = vec![0u8; model.pixel_count()];
    for seed in seeds {
        let request = match class {
            Some(class) => ImageRequest::class(seed, class),
            None => ImageRequest::default_for(seed, model.classes()),
        };
        generate_request(&model, request, &mut pixels)?;
        sink(seed, &pixels)?;
    }
    Ok(())
}

/// Peak signal-to-noise ratio in dB of `test` against `reference`, both gray levels
/// (peak 255). Infinite for identical images.
pub fn psnr(reference: &[f32], test: &[u8]) -> f64 {
    let mse = reference
        .iter()
        .zip(test)
        .map(|(&r, &t)| {
            let d = f64::from(r) - f64::from(t);
            d * d
        })
        .sum::<f64>()
        / reference.len().max(1) as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// How far the int8 model is from the float model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FloatVsInt8 {
    /// Images compared.
    pub images: usize,
    /// PSNR over all their pixels, dB.
    pub psnr_db: f64,
    /// Mean absolute difference, gray levels.
    pub mean_abs_error: f64,
    /// Largest absolute difference, gray levels.
    pub max_abs_error: f64,
}

/// Compares the float generator with the int8 blob on the same latent vectors.
pub fn compare(float: &FloatGenerator, blob: &[u8], seeds: &[u32]) -> anyhow::Result<FloatVsInt8> {
    let int8 = simulate(blob, seeds)?;
    let mut reference = Vec::new();
    let mut test = Vec::new();
    for (&seed, image) in seeds.iter().zip(&int8) {
        reference.extend(float.draw(seed)?);
        test.extend_from_slice(image);
    }
    let diffs: Vec<f64> = reference
        .iter()
        .zip(&test)
        .map(|(&r, &t)| (f64::from(r) - f64::from(t)).abs())
        .collect();
    Ok(FloatVsInt8 {
        images: seeds.len(),
        psnr_db: psnr(&reference, &test),
        mean_abs_error: diffs.iter().sum::<f64>() / diffs.len().max(1) as f64,
        max_abs_error: diffs.iter().fold(0.0, |m: f64, &d| m.max(d)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_of_known_errors() {
        assert!(psnr(&[10.0, 20.0], &[10, 20]).is_infinite());
        // MSE 1 -> 20 log10(255) = 48.13 dB.
        let p = psnr(&[10.0, 20.0], &[11, 19]);
        assert!((p - 48.1308).abs() < 1e-3, "{p}");
    }
}
