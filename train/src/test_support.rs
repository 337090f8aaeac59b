//! What the tests of both hand-written trainers share: data, and the comparison of two
//! trained states.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::IMAGE_PIXELS;
use crate::state::TrainState;

/// The images' side.
const SIDE: usize = 28;

/// A batch of blobby images and latent vectors, from `seed`.
pub(crate) fn batch(seed: u64, b: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut real = Vec::with_capacity(b * IMAGE_PIXELS);
    for _ in 0..b {
        let (cy, cx) = (
            rng.random_range(8.0..20.0f32),
            rng.random_range(8.0..20.0f32),
        );
        for y in 0..SIDE {
            for x in 0..SIDE {
                let r2 = (y as f32 - cy).powi(2) + (x as f32 - cx).powi(2);
                real.push(if r2 < 25.0 { 1.0 } else { -1.0 });
            }
        }
    }
    let mut z = Vec::new();
    crate::model::latent_batch(seed, 0, b, &mut z);
    (real, z)
}

/// Largest difference between two states' tensors relative to `scale`, and the share of
/// elements that differ by more than `scale / 10`.
fn differences(a: &[(String, Tensor)], b: &[(String, Tensor)], scale: f32) -> (f32, f64) {
    let (mut worst, mut off, mut total) = (0f32, 0usize, 0usize);
    for ((name_a, ta), (name_b, tb)) in a.iter().zip(b) {
        assert_eq!(name_a, name_b);
        let va = ta
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        let vb = tb
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap();
        for (x, y) in va
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(vb.to_vec1::<f32>().unwrap())
        {
            let d = (x - y).abs() / scale;
            worst = worst.max(d);
            off += usize::from(d > 0.1);
            total += 1;
        }
    }
    (worst, off as f64 / total as f64)
}

/// Requires batch `batch`'s losses `(D, G)` to agree with the expected ones to 1e-4.
pub(crate) fn assert_losses_agree(batch: usize, expected: (f32, f32), got: (f32, f32)) {
    let ((d, g), (got_d, got_g)) = (expected, got);
    assert!((d - got_d).abs() < 1e-4, "batch {batch}: D {d} vs {got_d}");
    assert!((g - got_g).abs() < 1e-4, "batch {batch}: G {g} vs {got_g}");
}

/// The largest absolute difference between two equally long runs of values.
pub(crate) fn max_abs_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Requires `state` to have trained as `reference` did: every parameter (and Adam moment,
/// and the weight average when `with_average`) within a small share of Adam's step `lr`.
pub(crate) fn assert_states_agree(
    reference: &TrainState,
    state: &TrainState,
    lr: f32,
    with_average: bool,
) {
    let g = differences(
        &reference.generator.state().unwrap(),
        &state.generator.state().unwrap(),
        lr,
    );
    let to_state = |s: &TrainState| -> Vec<(String, Tensor)> {
        s.discriminator
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .chain(s.opt_d.state("").unwrap())
            .collect()
    };
    let d = differences(&to_state(reference), &to_state(state), lr);
    // Adam moves a parameter by about lr whatever its gradient's size, so a gradient that
    // is rounding noise (the biases before BatchNorm, which cancel) may move either way.
    for (which, (worst, share)) in [("generator", g), ("discriminator", d)] {
        assert!(
            share < 0.001,
            "{which}: {share} of the parameters differ by > 0.1 lr"
        );
        assert!(worst < 1.0, "{which}: a parameter differs by {worst} lr");
    }
    if with_average {
        let a = differences(
            &reference.average.as_ref().unwrap().tensors(),
            &state.average.as_ref().unwrap().tensors(),
            lr,
        );
        assert!(a.1 < 0.001, "weight average: {a:?}");
    }
}
