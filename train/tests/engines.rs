//! The engines' conformance suite, second part: every engine, driven through the
//! `TrainingStep` interface as the training loop drives it, trains the same batches to the
//! same losses and the same weights over two epochs (with a short last batch), and hands its
//! state back for a checkpoint. `faithful.rs` holds each one to the reference's arithmetic.

use candle_core::Device;
use mcugan_train::adam::AdamConfig;
use mcugan_train::engine::{self, Batch, Engine, TrainingStep};
use mcugan_train::model::latent_batch;
use mcugan_train::state::TrainState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const IMAGES: usize = 40;
const BATCH: usize = 16;
const PIXELS: usize = 784;

fn images() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..IMAGES * PIXELS)
        .map(|_| {
            if rng.random::<f32>() < 0.15 {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

/// `engine` over `images`, starting from `state`, built by the factory the training loop
/// uses (the kernel step on its CPU emulator).
fn build(engine: Engine, state: &TrainState, images: &[f32]) -> Box<dyn TrainingStep> {
    let tensor = candle_core::Tensor::from_slice(images, (IMAGES, PIXELS), &Device::Cpu).unwrap();
    engine::build(engine, state, &tensor, None, BATCH).unwrap()
}

/// Two epochs by `engine`: every batch's losses, and the generator's weights at the end.
fn two_epochs(engine: Engine) -> (Vec<(f32, f32)>, Vec<f32>) {
    let mut state = TrainState::new(5, AdamConfig::REFERENCE, &Device::Cpu).unwrap();
    let images = images();
    let mut step = build(engine, &state, &images);
    let mut losses = Vec::new();
    let mut batches_done = 0u64;
    for epoch in 0..2u32 {
        // A fixed order per epoch, not the identity.
        let order: Vec<u32> = (0..IMAGES as u32)
            .map(|i| (i * 7 + epoch * 3) % IMAGES as u32)
            .collect();
        let mut latents = Vec::new();
        let mut rows = Vec::new();
        for start in (0..IMAGES).step_by(BATCH) {
            rows.push(latents.len() / 100);
            let len = BATCH.min(IMAGES - start);
            latent_batch(3, batches_done + rows.len() as u64 - 1, len, &mut latents);
        }
        step.begin_epoch(&order, &latents).unwrap();
        for (b, start) in (0..IMAGES).step_by(BATCH).enumerate() {
            let batch = Batch {
                order: &order,
                latents: &latents,
                start,
                len: BATCH.min(IMAGES - start),
                latent_row: rows[b],
            };
            step.train_batch(&mut state, &batch).unwrap();
            let fakes = step.fakes().unwrap();
            assert_eq!(
                fakes.len(),
                batch.len * PIXELS,
                "{engine:?}: the batch's fakes"
            );
            assert!(fakes.iter().all(|v| (-1.0..=1.0).contains(v)));
        }
        batches_done += rows.len() as u64;
        losses.extend(step.take_losses().unwrap());
    }
    step.store_into(&mut state).unwrap();
    let weights = state
        .generator
        .state()
        .unwrap()
        .into_iter()
        .filter(|(name, _)| name.ends_with("weight"))
        .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    (losses, weights)
}

#[test]
fn every_engine_trains_the_same_batches_to_the_same_losses_and_weights() {
    let (reference_losses, reference_weights) = two_epochs(Engine::Candle);
    assert_eq!(
        reference_losses.len(),
        6,
        "3 batches (the last one short) x 2 epochs"
    );
    for engine in [Engine::Fused { threads: 1 }, Engine::Kernels] {
        let (losses, weights) = two_epochs(engine);
        assert_eq!(losses.len(), reference_losses.len(), "{engine:?}");
        for (i, ((d, g), (rd, rg))) in losses.iter().zip(&reference_losses).enumerate() {
            assert!(
                (d - rd).abs() < 1e-4 && (g - rg).abs() < 1e-4,
                "{engine:?}, batch {i}: D {d} G {g}; candle D {rd} G {rg}"
            );
        }
        assert_eq!(weights.len(), reference_weights.len());
        let worst = weights
            .iter()
            .zip(&reference_weights)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst < 3e-5,
            "{engine:?}: weights differ from candle's by {worst}"
        );
    }
}
