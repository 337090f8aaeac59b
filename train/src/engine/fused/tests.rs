//! The fused step against candle's, batch by batch.

use candle_core::{Device, Tensor};

use super::math::tanh;
use super::*;
use crate::adam::AdamConfig;
use crate::test_support::{assert_losses_agree, assert_states_agree, batch, max_abs_difference};

/// Trains both trainers from the same state on the same batches and checks that they
/// agree: losses and fakes to rounding, parameters to within a small share of Adam's step.
fn same_as_candle(recipe: Recipe, batches: usize, b: usize) {
    let device = Device::Cpu;
    let adam = AdamConfig::REFERENCE;
    let mut reference = TrainState::with_recipe(5, adam, recipe, &device).unwrap();
    let mut state = TrainState::with_recipe(5, adam, recipe, &device).unwrap();
    let mut fused = FusedTrainer::new(&state, 2).unwrap();
    for i in 0..batches {
        let (real, z) = batch(i as u64, b);
        let expected = reference
            .train_batch(
                &Tensor::from_slice(&real, (b, IMAGE_PIXELS), &device).unwrap(),
                &Tensor::from_slice(&z, (b, LATENT_DIM), &device).unwrap(),
                None,
            )
            .unwrap();
        let got = fused.train_batch(&mut state.rng, &real, &z).unwrap();
        let d = expected.d_loss.to_scalar::<f32>().unwrap();
        let g = expected.g_loss.to_scalar::<f32>().unwrap();
        assert_losses_agree(i, (d, g), (got.d_loss, got.g_loss));
        let fakes = expected
            .fakes
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let worst = max_abs_difference(&fakes, fused.fakes());
        assert!(worst < 1e-3, "batch {i}: fakes differ by {worst}");
    }
    assert_eq!(reference.rng.get_word_pos(), state.rng.get_word_pos());
    fused.store_into(&mut state).unwrap();
    assert_eq!(state.opt_g.steps(), batches as u64);
    assert_states_agree(&reference, &state, adam.lr as f32, recipe.g_ema.is_some());
}

#[test]
fn the_reference_recipe_trains_as_candle_does() {
    same_as_candle(Recipe::REFERENCE, 3, 16);
}

#[test]
fn the_small_data_recipe_trains_as_candle_does() {
    same_as_candle(Recipe::SMALL_DATA, 3, 16);
}

#[test]
fn tanh_is_accurate() {
    let mut worst = 0f64;
    for i in -200_000..=200_000 {
        let x = i as f32 * 1e-4;
        let err = (f64::from(tanh(x)) - f64::from(x).tanh()).abs();
        worst = worst.max(err);
    }
    assert!(worst < 2e-7, "worst error {worst}");
    assert_eq!(tanh(100.0), 1.0);
    assert_eq!(tanh(-100.0), -1.0);
    assert_eq!(tanh(0.0), 0.0);
}

#[test]
fn a_last_short_batch_and_bad_shapes() {
    let state = TrainState::new(1, AdamConfig::REFERENCE, &Device::Cpu).unwrap();
    let mut state2 = TrainState::new(1, AdamConfig::REFERENCE, &Device::Cpu).unwrap();
    let mut fused = FusedTrainer::new(&state, 1).unwrap();
    let (real, z) = batch(0, 8);
    fused.train_batch(&mut state2.rng, &real, &z).unwrap();
    let (real, z) = batch(1, 3);
    fused.train_batch(&mut state2.rng, &real, &z).unwrap();
    assert_eq!(fused.fakes().len(), 3 * IMAGE_PIXELS);
    assert!(fused.train_batch(&mut state2.rng, &real[..10], &z).is_err());
    let (real, z) = batch(2, 1);
    assert!(fused.train_batch(&mut state2.rng, &real, &z).is_err());
}
