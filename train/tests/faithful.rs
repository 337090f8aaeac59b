//! The reference's training step, checked against a second implementation written here in
//! plain f64 Rust: the losses of the first batch, which generator and discriminator saw, the
//! size and direction of each network's first Adam step, and BatchNorm's running statistics.
//!
//! This is the engines' conformance suite: every engine (candle's autograd, the hand-fused
//! CPU step, the kernel step on its CPU emulator) is driven through the one `TrainingStep`
//! interface the training loop uses, and held to the same reference; `engines.rs` holds them
//! to each other over several epochs.
//!
//! What these pin, because each silently breaks GAN reproductions:
//! - the generator step comes first and is judged by the discriminator *before* its update;
//! - the discriminator's step uses the *same* fakes (from the generator before its update);
//! - each network is updated once per batch, by Adam without weight decay (a first Adam step
//!   moves every parameter by exactly `lr` against its gradient's sign);
//! - BatchNorm normalises with the batch's biased variance and eps 0.8, and moves its running
//!   statistics by momentum 0.1 towards the batch mean and unbiased variance.

use candle_core::{Device, Tensor};
use mcugan_train::adam::AdamConfig;
use mcugan_train::engine::{self, Batch, Engine, TrainingStep};
use mcugan_train::state::TrainState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 6;

/// A dense layer's weights in f64: `w[out][in]`, `b[out]`.
#[derive(Clone)]
struct Dense {
    w: Vec<Vec<f64>>,
    b: Vec<f64>,
}

impl Dense {
    fn from(weight: &Tensor, bias: &Tensor) -> Self {
        let w = weight.to_vec2::<f32>().unwrap();
        Self {
            w: w.iter()
                .map(|r| r.iter().map(|&x| f64::from(x)).collect())
                .collect(),
            b: bias
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| f64::from(x))
                .collect(),
        }
    }

    fn apply(&self, x: &[Vec<f64>]) -> Vec<Vec<f64>> {
        x.iter()
            .map(|row| {
                self.w
                    .iter()
                    .zip(&self.b)
                    .map(|(w, b)| b + w.iter().zip(row).map(|(a, c)| a * c).sum::<f64>())
                    .collect()
            })
            .collect()
    }
}

fn leaky(x: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    x.into_iter()
        .map(|r| {
            r.into_iter()
                .map(|v| if v > 0.0 { v } else { 0.2 * v })
                .collect()
        })
        .collect()
}

/// Training-mode BatchNorm1d (eps 0.8): the output, the batch mean and the unbiased variance.
fn batch_norm(x: &[Vec<f64>], gamma: &[f64], beta: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let n = x.len() as f64;
    let features = x[0].len();
    let mean: Vec<f64> = (0..features)
        .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let var: Vec<f64> = (0..features)
        .map(|j| x.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n)
        .collect();
    let y = x
        .iter()
        .map(|r| {
            (0..features)
                .map(|j| (r[j] - mean[j]) / (var[j] + 0.8).sqrt() * gamma[j] + beta[j])
                .collect()
        })
        .collect();
    let unbiased = var.iter().map(|v| v * n / (n - 1.0)).collect();
    (y, mean, unbiased)
}

struct Nets {
    g: Vec<Dense>,
    gamma: Vec<Vec<f64>>,
    beta: Vec<Vec<f64>>,
    d: Vec<Dense>,
}

impl Nets {
    fn of(state: &TrainState) -> Self {
        let vec = |t: &Tensor| -> Vec<f64> {
            t.to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|&x| f64::from(x))
                .collect()
        };
        Self {
            g: state
                .generator
                .mlp()
                .unwrap()
                .linears
                .iter()
                .map(|l| Dense::from(l.weight.as_tensor(), l.bias.as_tensor()))
                .collect(),
            gamma: state
                .generator
                .mlp()
                .unwrap()
                .norms
                .iter()
                .map(|n| vec(n.weight.as_tensor()))
                .collect(),
            beta: state
                .generator
                .mlp()
                .unwrap()
                .norms
                .iter()
                .map(|n| vec(n.bias.as_tensor()))
                .collect(),
            d: state
                .discriminator
                .mlp()
                .unwrap()
                .linears
                .iter()
                .map(|l| Dense::from(l.weight.as_tensor(), l.bias.as_tensor()))
                .collect(),
        }
    }

    /// The generator in training mode; also the first BatchNorm's batch statistics.
    fn generate(&self, z: &[Vec<f64>]) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
        let mut h = leaky(self.g[0].apply(z));
        let mut first_stats = None;
        for i in 0..3 {
            let (y, mean, var) =
                batch_norm(&self.g[i + 1].apply(&h), &self.gamma[i], &self.beta[i]);
            first_stats.get_or_insert((mean, var));
            h = leaky(y);
        }
        let out = self.g[4]
            .apply(&h)
            .into_iter()
            .map(|r| r.into_iter().map(f64::tanh).collect())
            .collect();
        let (mean, var) = first_stats.unwrap();
        (out, mean, var)
    }

    fn logits(&self, x: &[Vec<f64>]) -> Vec<f64> {
        let h = leaky(self.d[0].apply(x));
        let h = leaky(self.d[1].apply(&h));
        self.d[2].apply(&h).into_iter().map(|r| r[0]).collect()
    }
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `BCE(sigmoid(logit), target)` averaged.
fn bce(logits: &[f64], target: f64) -> f64 {
    logits
        .iter()
        .map(|&x| softplus(x) - target * x)
        .sum::<f64>()
        / logits.len() as f64
}

fn g_loss(nets: &Nets, z: &[Vec<f64>]) -> f64 {
    bce(&nets.logits(&nets.generate(z).0), 1.0)
}

fn d_loss(nets: &Nets, real: &[Vec<f64>], fakes: &[Vec<f64>]) -> f64 {
    (bce(&nets.logits(real), 1.0) + bce(&nets.logits(fakes), 0.0)) / 2.0
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect()
}

/// Central finite difference of `f` with respect to one weight, in f64.
fn numeric_gradient(
    nets: &mut Nets,
    pick: impl Fn(&mut Nets) -> &mut f64,
    f: impl Fn(&Nets) -> f64,
) -> f64 {
    let h = 1e-5;
    let original = *pick(nets);
    *pick(nets) = original + h;
    let up = f(nets);
    *pick(nets) = original - h;
    let down = f(nets);
    *pick(nets) = original;
    (up - down) / (2.0 * h)
}

fn fixed_batch() -> (TrainState, Tensor, Tensor) {
    let device = Device::Cpu;
    let state = TrainState::new(11, AdamConfig::REFERENCE, &device).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let real: Vec<f32> = (0..BATCH * 784)
        .map(|_| if rng.random::<f32>() < 0.2 { 1.0 } else { -1.0 })
        .collect();
    let real = Tensor::from_vec(real, (BATCH, 784), &device).unwrap();
    let z = mcugan_train::model::sample_z(&mut rng, BATCH, &device).unwrap();
    (state, real, z)
}

/// Every engine (the kernel step on its CPU emulator), built by the factory the training loop
/// uses.
const ENGINES: [Engine; 3] = [
    Engine::Candle,
    Engine::Fused { threads: 2 },
    Engine::Kernels,
];

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// `engine` over the training images `real`, starting from `state`.
fn build(engine: Engine, state: &TrainState, real: &Tensor) -> Box<dyn TrainingStep> {
    engine::build(engine, state, real, None, BATCH).unwrap()
}

/// One training batch by `engine`, through the [`TrainingStep`] interface alone, its result
/// back in `state`: the G and D losses and the fakes.
fn train_batch(
    state: &mut TrainState,
    real: &Tensor,
    z: &Tensor,
    engine: Engine,
) -> (f64, f64, Vec<Vec<f64>>) {
    let mut step = build(engine, state, real);
    let order: Vec<u32> = (0..BATCH as u32).collect();
    let latents = flat(z);
    step.begin_epoch(&order, &latents).unwrap();
    let batch = Batch {
        order: &order,
        latents: &latents,
        start: 0,
        len: BATCH,
        latent_row: 0,
    };
    step.train_batch(state, &batch).unwrap();
    let losses = step.take_losses().unwrap();
    assert_eq!(losses.len(), 1, "{engine:?}: one batch, one pair of losses");
    assert!(
        step.take_losses().unwrap().is_empty(),
        "{engine:?}: losses are taken once"
    );
    let (d, g) = losses[0];
    let fakes = step
        .fakes()
        .unwrap()
        .chunks(784)
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect();
    step.store_into(state).unwrap();
    (f64::from(g), f64::from(d), fakes)
}

#[test]
fn first_batch_losses_match_an_independent_implementation() {
    for engine in ENGINES {
        first_batch_losses(engine);
    }
}

fn first_batch_losses(engine: Engine) {
    let (mut state, real, z) = fixed_batch();
    let before = Nets::of(&state);
    let (z64, real64) = (rows(&z), rows(&real));
    let (fakes, _, _) = before.generate(&z64);
    // Generator step judged by the discriminator before its update; discriminator step on
    // the same fakes, from the generator before its update.
    let expected_g = g_loss(&before, &z64);
    let expected_d = d_loss(&before, &real64, &fakes);

    let (got_g, got_d, returned) = train_batch(&mut state, &real, &z, engine);
    assert!(
        (got_g - expected_g).abs() < 1e-5,
        "{engine:?}: G loss {got_g} vs {expected_g}"
    );
    assert!(
        (got_d - expected_d).abs() < 1e-5,
        "{engine:?}: D loss {got_d} vs {expected_d}"
    );
    // The fakes returned are the ones the discriminator saw.
    assert_eq!(returned.len(), fakes.len());
    for (a, b) in returned.iter().flatten().zip(fakes.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "{engine:?}: fake pixel {a} vs {b}");
    }
}

#[test]
fn each_network_takes_one_adam_step_without_weight_decay() {
    for engine in ENGINES {
        one_adam_step(engine);
    }
}

fn one_adam_step(engine: Engine) {
    let (mut state, real, z) = fixed_batch();
    let mut before = Nets::of(&state);
    let (z64, real64) = (rows(&z), rows(&real));
    let fakes = before.generate(&z64).0;
    train_batch(&mut state, &real, &z, engine);
    let after = Nets::of(&state);
    let lr = AdamConfig::REFERENCE.lr;

    // A first Adam step (no weight decay) moves a weight by lr against its gradient's sign:
    // m̂ = g and v̂ = g², so the step is lr·g/(|g| + 1e-8). A second update (fakes not
    // detached, gradients accumulated) would double it; weight decay would bend it.
    let mut checked = 0;
    for (layer, row, col) in [
        (4usize, 3usize, 17usize),
        (4, 500, 1000),
        (0, 7, 42),
        (0, 100, 99),
    ] {
        let grad = numeric_gradient(
            &mut before,
            |n| &mut n.g[layer].w[row][col],
            |n| g_loss(n, &z64),
        );
        if grad.abs() < 1e-6 {
            continue;
        }
        let moved = after.g[layer].w[row][col] - before.g[layer].w[row][col];
        let expected = -lr * grad.signum();
        assert!(
            (moved - expected).abs() < 0.02 * lr,
            "{engine:?}: generator layer {layer} [{row},{col}]: moved {moved}, expected {expected} (gradient {grad})"
        );
        checked += 1;
    }
    for (layer, row, col) in [
        (0usize, 5usize, 300usize),
        (0, 400, 10),
        (1, 20, 30),
        (2, 0, 100),
    ] {
        let grad = numeric_gradient(
            &mut before,
            |n| &mut n.d[layer].w[row][col],
            |n| d_loss(n, &real64, &fakes),
        );
        if grad.abs() < 1e-6 {
            continue;
        }
        let moved = after.d[layer].w[row][col] - before.d[layer].w[row][col];
        let expected = -lr * grad.signum();
        assert!(
            (moved - expected).abs() < 0.02 * lr,
            "{engine:?}: discriminator layer {layer} [{row},{col}]: moved {moved}, expected {expected} (gradient {grad})"
        );
        checked += 1;
    }
    assert!(
        checked >= 6,
        "too few weights with a usable gradient ({checked})"
    );
}

#[test]
fn batch_norm_running_statistics_follow_the_training_batch() {
    for engine in ENGINES {
        running_statistics(engine);
    }
}

fn running_statistics(engine: Engine) {
    let (mut state, real, z) = fixed_batch();
    let before = Nets::of(&state);
    let (_, mean, unbiased_var) = before.generate(&rows(&z));
    train_batch(&mut state, &real, &z, engine);
    let norm = &state.generator.mlp().unwrap().norms[0];
    assert_eq!((norm.eps, norm.momentum), (0.8, 0.1));
    let running_mean = norm.running_mean.to_vec1::<f32>().unwrap();
    let running_var = norm.running_var.to_vec1::<f32>().unwrap();
    for j in 0..running_mean.len() {
        let expected_mean = 0.1 * mean[j];
        let expected_var = 0.9 + 0.1 * unbiased_var[j];
        assert!(
            (f64::from(running_mean[j]) - expected_mean).abs() < 1e-5,
            "{engine:?}: running mean {j}"
        );
        assert!(
            (f64::from(running_var[j]) - expected_var).abs() < 1e-4 * expected_var.max(1.0),
            "{engine:?}: running variance {j}"
        );
    }
    assert_eq!(norm.num_batches_tracked, 1);
}
