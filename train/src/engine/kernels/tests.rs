//! The kernel trainer, emulated on the CPU, against the fused CPU trainer.

use candle_core::Device;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::emulator::Emulator;
use super::*;
use crate::engine::fused::FusedTrainer;
use crate::test_support::{assert_losses_agree, assert_states_agree, batch, max_abs_difference};

/// The emulator, boxed as the train loop has its backends.
fn emulator(floats: usize, words: usize) -> anyhow::Result<Box<dyn Backend>> {
    Ok(Box::new(Emulator::new(floats, words)?))
}

/// Trains both trainers from one state on the same shuffled data (the last batch short) and
/// requires the same losses and fakes batch by batch and the same parameters at the end; the
/// kernel trainer runs on the backend `backend` makes.
fn same_as_fused(
    recipe: Recipe,
    images: usize,
    b: usize,
    backend: impl FnOnce(usize, usize) -> anyhow::Result<Box<dyn Backend>>,
) {
    let device = Device::Cpu;
    let adam = AdamConfig::REFERENCE;
    let mut reference = TrainState::with_recipe(3, adam, recipe, &device).unwrap();
    let mut state = TrainState::with_recipe(3, adam, recipe, &device).unwrap();
    let (data, _) = batch(11, images);
    let mut fused = FusedTrainer::new(&reference, 1).unwrap();
    let mut kernels = KernelTrainer::new(&state, &data, b, backend).unwrap();

    let mut order: Vec<u32> = (0..images as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(1));
    let batches: Vec<(usize, usize)> = (0..images)
        .step_by(b)
        .map(|start| (start, b.min(images - start)))
        .collect();
    let mut latents = Vec::new();
    for (number, &(_, len)) in batches.iter().enumerate() {
        crate::model::latent_batch(9, number as u64, len, &mut latents);
    }
    kernels.begin_epoch(&order, &latents).unwrap();

    let mut expected = Vec::new();
    for &(start, len) in &batches {
        let real: Vec<f32> = order[start..start + len]
            .iter()
            .flat_map(|&i| &data[i as usize * IMAGE_PIXELS..(i as usize + 1) * IMAGE_PIXELS])
            .copied()
            .collect();
        let z = &latents[start * LATENT_DIM..(start + len) * LATENT_DIM];
        expected.push(fused.train_batch(&mut reference.rng, &real, z).unwrap());
        kernels.train_batch(start, len, start).unwrap();
        let fakes = kernels.fakes().unwrap();
        assert_eq!(fakes.len(), len * IMAGE_PIXELS);
        let worst = max_abs_difference(&fakes, fused.fakes());
        assert!(worst < 1e-3, "batch at {start}: fakes differ by {worst}");
    }
    let losses = kernels.take_losses().unwrap();
    assert_eq!(losses.len(), batches.len());
    for (i, (&got, want)) in losses.iter().zip(&expected).enumerate() {
        assert_losses_agree(i, (want.d_loss, want.g_loss), got);
    }
    assert!(kernels.take_losses().unwrap().is_empty());

    fused.store_into(&mut reference).unwrap();
    kernels.store_into(&mut state).unwrap();
    assert_eq!(state.opt_g.steps(), batches.len() as u64);
    assert_eq!(state.opt_d.steps(), batches.len() as u64);
    for (a, b) in reference
        .generator
        .mlp()
        .unwrap()
        .norms
        .iter()
        .zip(&state.generator.mlp().unwrap().norms)
    {
        assert_eq!(a.num_batches_tracked, b.num_batches_tracked);
        let (ma, mb) = (
            a.running_mean.to_vec1::<f32>().unwrap(),
            b.running_mean.to_vec1::<f32>().unwrap(),
        );
        let worst = ma
            .iter()
            .zip(&mb)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst < 1e-4, "running means differ by {worst}");
    }
    assert_states_agree(&reference, &state, adam.lr as f32, recipe.g_ema.is_some());
}

#[test]
fn the_emulated_kernels_train_as_the_fused_trainer_does() {
    same_as_fused(Recipe::REFERENCE, 37, 16, emulator);
}

#[test]
fn label_smoothing_and_the_weight_average_on_the_kernels() {
    let recipe = Recipe {
        real_label: 0.9,
        g_ema: Some(0.99),
        ..Recipe::REFERENCE
    };
    same_as_fused(recipe, 20, 8, emulator);
}

/// The same check on an NVIDIA GPU: the CUDA backend's launches and cuBLAS calls. It needs a
/// GPU, so it is ignored unless asked for (`--ignored`, as `bench/gpu-run.sh verify` does).
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn the_gpu_kernels_train_as_the_fused_trainer_does() {
    let device = Device::new_cuda(0).expect("a CUDA device");
    let candle_core::Device::Cuda(cuda) = &device else {
        unreachable!("new_cuda makes a CUDA device")
    };
    for (recipe, images, b) in [
        (Recipe::REFERENCE, 37, 16),
        (Recipe::REFERENCE, 200, 64),
        (
            Recipe {
                real_label: 0.9,
                g_ema: Some(0.99),
                ..Recipe::REFERENCE
            },
            20,
            8,
        ),
    ] {
        same_as_fused(recipe, images, b, |floats, words| {
            Ok(Box::new(super::cuda::CudaBackend::new(
                cuda, floats, words,
            )?))
        });
    }
}

#[test]
fn the_row_major_products_become_the_right_column_major_calls() {
    // A [2×3], B [3×2] row-major; C = A·B, then Aᵀ-stored and Bᵀ-stored variants.
    let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
    let want = [58.0, 64.0, 139.0, 154.0];
    let transpose = |x: &[f32], r: usize, c: usize| -> Vec<f32> {
        (0..c)
            .flat_map(|j| (0..r).map(move |i| x[i * c + j]))
            .collect()
    };
    let cases = [
        (a.to_vec(), false, b.to_vec(), false),
        (transpose(&a, 2, 3), true, b.to_vec(), false),
        (a.to_vec(), false, transpose(&b, 3, 2), true),
        (transpose(&a, 2, 3), true, transpose(&b, 3, 2), true),
    ];
    for (a, ta, b, tb) in cases {
        let mut emulator = Emulator::new(16, 0).unwrap();
        emulator.write_floats(0, &a).unwrap();
        emulator.write_floats(6, &b).unwrap();
        let op = |offset, t| if t { transposed(offset) } else { rows(offset) };
        emulator
            .gemm(&row_major_gemm(12, op(0, ta), op(6, tb), 2, 2, 3))
            .unwrap();
        let mut c = [0.0; 4];
        emulator.read_floats(12, &mut c).unwrap();
        assert_eq!(c, want, "transposed: {ta} {tb}");
    }
}

#[test]
fn bad_batches_and_recipes_are_errors() {
    let device = Device::Cpu;
    let state = TrainState::new(1, AdamConfig::REFERENCE, &device).unwrap();
    let (data, _) = batch(0, 10);
    let mut kernels = KernelTrainer::new(&state, &data, 4, Emulator::new).unwrap();
    let latents = vec![0.0; 10 * LATENT_DIM];
    assert!(kernels.begin_epoch(&[0, 1, 2], &latents).is_err());
    let mut order: Vec<u32> = (0..10).collect();
    order[3] = 10;
    assert!(kernels.begin_epoch(&order, &latents).is_err());
    order[3] = 3;
    kernels.begin_epoch(&order, &latents).unwrap();
    assert!(kernels.train_batch(0, 1, 0).is_err());
    assert!(kernels.train_batch(0, 5, 0).is_err());
    assert!(kernels.train_batch(8, 4, 0).is_err());
    kernels.train_batch(8, 2, 8).unwrap();
    assert!(KernelTrainer::new(&state, &data[..100], 4, Emulator::new).is_err());
    let small_data =
        TrainState::with_recipe(1, AdamConfig::REFERENCE, Recipe::SMALL_DATA, &device).unwrap();
    assert!(KernelTrainer::new(&small_data, &data, 4, Emulator::new).is_err());
}
