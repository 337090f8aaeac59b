//! Latent vectors for training: z ~ N(0, 1), drawn either from the run's random generator or
//! from a stream of its own per batch (so an epoch's batches can be drawn in parallel, and
//! every engine trains on the same z). A leaf: the state, the recipes and the engines use it.

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::LATENT_DIM;

/// `batch x 100` standard normal samples from `rng`.
pub fn sample_z(rng: &mut ChaCha8Rng, batch: usize, device: &Device) -> anyhow::Result<Tensor> {
    let values: Vec<f32> = (0..batch * LATENT_DIM)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    Ok(Tensor::from_vec(values, (batch, LATENT_DIM), device)?)
}

/// Appends the latent vectors of training batch number `batch_number` (counted over the whole
/// run) to `out`: `batch x 100` standard normal samples from that batch's own random stream,
/// so any batch's latents can be drawn again — ahead of time, or after a resume.
pub fn latent_batch(seed: u64, batch_number: u64, batch: usize, out: &mut Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ LATENT_SEED_SALT);
    rng.set_stream(batch_number);
    out.extend((0..batch * LATENT_DIM).map(|_| -> f32 { StandardNormal.sample(&mut rng) }));
}

/// Separates the latent streams from the stream of initialisation and shuffling.
const LATENT_SEED_SALT: u64 = 0x1a7e_47f0_0d5e_ed00;
