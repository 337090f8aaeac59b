//! `dcgan.py`'s training step, checked against a second implementation written here in plain
//! f64 Rust (direct convolutions from their definition, BatchNorm2d, `Dropout2d`, BCE): the
//! losses of the first batch, the fakes, the size and direction of each network's first Adam
//! step, and the BatchNorm running statistics of both networks.
//!
//! What these pin, beyond what the MLP's suite does:
//! - the discriminator runs in training mode in all three of its passes per batch (the fakes
//!   in the generator's step, the real images, the fakes again), each normalised with its own
//!   batch's statistics and each moving the running statistics;
//! - each pass draws its own `Dropout2d` masks (whole channels), after LeakyReLU and before
//!   BatchNorm, in the order generator step, real, fake;
//! - the generator's BatchNorms: PyTorch's default eps (1e-5) after the Linear, 0.8 in the
//!   blocks (`dcgan.py`'s positional quirk).
//!
//! A narrow network of the same pattern keeps the finite differences cheap.

use candle_core::{Device, Tensor};
use mcugan_float_model::conv::Conv2d as Geometry;
use mcugan_train::adam::AdamConfig;
use mcugan_train::engine::{self, Batch, Engine};
use mcugan_train::model::conv::{
    channel_dropout_mask, ConvDiscriminator, ConvGanSpec, ConvGenerator, DiscriminatorSpec,
    GeneratorSpec,
};
use mcugan_train::model::{Architecture, Discriminator, Generator};
use mcugan_train::recipe::Recipe;
use mcugan_train::state::TrainState;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 5;
const SIDE: usize = 16;

fn spec() -> ConvGanSpec {
    ConvGanSpec {
        generator: GeneratorSpec {
            latent: 100,
            init_side: 4,
            channels: vec![6, 4, 3],
            first_norm_eps: 1e-5,
            norm_eps: 0.8,
            kernel: 3,
            image_channels: 1,
            upsampling: Default::default(),
            first_leaky_relu: false,
        },
        discriminator: DiscriminatorSpec {
            channels: vec![3, 5],
            dropout: 0.25,
            norm_eps: 0.8,
            kernel: 3,
        },
    }
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// A convolution's weights and geometry in f64.
#[derive(Clone)]
struct Conv {
    w: Vec<f64>,
    b: Vec<f64>,
    g: Geometry,
}

impl Conv {
    /// The convolution of one channels-first image, from the definition: a nearest upsampling,
    /// zero padding, stride.
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        let g = &self.g;
        let (u, k) = (g.upsample.max(1), g.kernel[0]);
        let (uh, uw) = (g.input[0] * u, g.input[1] * u);
        let mut out = Vec::with_capacity(g.out_channels * g.output[0] * g.output[1]);
        for o in 0..g.out_channels {
            for oy in 0..g.output[0] {
                for ox in 0..g.output[1] {
                    let mut sum = self.b[o];
                    for c in 0..g.in_channels {
                        for ky in 0..k {
                            for kx in 0..k {
                                let y = (oy * g.stride[0] + ky) as i64 - g.padding[0] as i64;
                                let xx = (ox * g.stride[1] + kx) as i64 - g.padding[1] as i64;
                                if y < 0 || xx < 0 || y >= uh as i64 || xx >= uw as i64 {
                                    continue;
                                }
                                let (y, xx) = (y as usize / u, xx as usize / u);
                                sum += self.w[((o * g.in_channels + c) * k + ky) * k + kx]
                                    * x[(c * g.input[0] + y) * g.input[1] + xx];
                            }
                        }
                    }
                    out.push(sum);
                }
            }
        }
        out
    }
}

/// BatchNorm2d's parameters in f64.
#[derive(Clone)]
struct Norm {
    gamma: Vec<f64>,
    beta: Vec<f64>,
    eps: f64,
}

/// What a training-mode BatchNorm saw: per channel, the batch mean and unbiased variance.
type Seen = (Vec<f64>, Vec<f64>);

impl Norm {
    /// Training mode over a batch of channels-first maps.
    fn apply(&self, x: &mut [Vec<f64>], seen: &mut Vec<Seen>) {
        let channels = self.gamma.len();
        let pixels = x[0].len() / channels;
        let count = (x.len() * pixels) as f64;
        let (mut means, mut unbiased) = (Vec::new(), Vec::new());
        for c in 0..channels {
            let all = || x.iter().flat_map(|m| &m[c * pixels..(c + 1) * pixels]);
            let mean = all().sum::<f64>() / count;
            let var = all().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
            means.push(mean);
            unbiased.push(var * count / (count - 1.0));
            for map in x.iter_mut() {
                for v in &mut map[c * pixels..(c + 1) * pixels] {
                    *v = (*v - mean) / (var + self.eps).sqrt() * self.gamma[c] + self.beta[c];
                }
            }
        }
        seen.push((means, unbiased));
    }
}

fn leaky(x: &mut [f64]) {
    for v in x {
        if *v < 0.0 {
            *v *= 0.2;
        }
    }
}

/// Both networks in f64.
#[derive(Clone)]
struct Nets {
    l1_w: Vec<f64>,
    l1_b: Vec<f64>,
    g_norms: Vec<Norm>,
    g_convs: Vec<Conv>,
    d_convs: Vec<Conv>,
    d_norms: Vec<Option<Norm>>,
    adv_w: Vec<f64>,
    adv_b: f64,
}

fn conv_of(c: &mcugan_train::model::conv::Conv2d) -> Conv {
    Conv {
        w: values(c.weight.as_tensor()),
        b: values(c.bias.as_tensor()),
        g: c.geometry().clone(),
    }
}

fn norm_of(n: &mcugan_train::model::conv::BatchNorm2d) -> Norm {
    Norm {
        gamma: values(n.weight.as_tensor()),
        beta: values(n.bias.as_tensor()),
        eps: n.eps,
    }
}

fn networks(state: &TrainState) -> (&ConvGenerator, &ConvDiscriminator) {
    match (&state.generator, &state.discriminator) {
        (Generator::Conv(g), Discriminator::Conv(d)) => (g, d),
        _ => panic!("not a convolutional GAN"),
    }
}

impl Nets {
    fn of(state: &TrainState) -> Self {
        let (g, d) = networks(state);
        Self {
            l1_w: values(g.l1.weight.as_tensor()),
            l1_b: values(g.l1.bias.as_tensor()),
            g_norms: g.norms.iter().map(norm_of).collect(),
            g_convs: g.convs.iter().map(conv_of).collect(),
            d_convs: d.convs.iter().map(conv_of).collect(),
            d_norms: d.norms.iter().map(|n| n.as_ref().map(norm_of)).collect(),
            adv_w: values(d.adv.weight.as_tensor()),
            adv_b: values(d.adv.bias.as_tensor())[0],
        }
    }

    /// Training-mode images for `z`, and what each BatchNorm saw.
    fn generate(&self, z: &[Vec<f64>]) -> (Vec<Vec<f64>>, Vec<Seen>) {
        let latent = z[0].len();
        let mut maps: Vec<Vec<f64>> = z
            .iter()
            .map(|z| {
                self.l1_b
                    .iter()
                    .enumerate()
                    .map(|(o, b)| {
                        b + (0..latent)
                            .map(|i| self.l1_w[o * latent + i] * z[i])
                            .sum::<f64>()
                    })
                    .collect()
            })
            .collect();
        let mut seen = Vec::new();
        self.g_norms[0].apply(&mut maps, &mut seen);
        let blocks = self.g_convs.len() - 1;
        for i in 0..blocks {
            maps = maps.iter().map(|m| self.g_convs[i].apply(m)).collect();
            self.g_norms[i + 1].apply(&mut maps, &mut seen);
            maps.iter_mut().for_each(|m| leaky(m));
        }
        let images = maps
            .iter()
            .map(|m| {
                self.g_convs[blocks]
                    .apply(m)
                    .iter()
                    .map(|v| v.tanh())
                    .collect()
            })
            .collect();
        (images, seen)
    }

    /// Training-mode logits of `images` with `masks` (per block, `[batch][channels]`).
    fn logits(&self, images: &[Vec<f64>], masks: &[Vec<f64>], seen: &mut Vec<Seen>) -> Vec<f64> {
        let mut maps = images.to_vec();
        for (i, conv) in self.d_convs.iter().enumerate() {
            maps = maps.iter().map(|m| conv.apply(m)).collect();
            let channels = conv.g.out_channels;
            for (b, map) in maps.iter_mut().enumerate() {
                leaky(map);
                let pixels = map.len() / channels;
                for (c, chunk) in map.chunks_mut(pixels).enumerate() {
                    chunk
                        .iter_mut()
                        .for_each(|v| *v *= masks[i][b * channels + c]);
                }
            }
            if let Some(norm) = &self.d_norms[i] {
                norm.apply(&mut maps, seen);
            }
        }
        maps.iter()
            .map(|m| self.adv_b + m.iter().zip(&self.adv_w).map(|(a, w)| a * w).sum::<f64>())
            .collect()
    }
}

fn bce(logits: &[f64], target: f64) -> f64 {
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    logits
        .iter()
        .map(|&x| softplus(x) - x * target)
        .sum::<f64>()
        / logits.len() as f64
}

/// The masks of one batch's three discriminator passes, drawn as the step draws them.
struct Masks {
    generator_step: Vec<Vec<f64>>,
    real: Vec<Vec<f64>>,
    fake: Vec<Vec<f64>>,
}

fn masks(state: &TrainState) -> Masks {
    let mut rng = state.rng.clone();
    let spec = spec();
    let mut pass = || -> Vec<Vec<f64>> {
        spec.discriminator
            .channels
            .iter()
            .map(|&c| {
                let mask = channel_dropout_mask(BATCH, c, 0.25, &mut rng, &Device::Cpu).unwrap();
                values(&mask)
            })
            .collect()
    };
    Masks {
        generator_step: pass(),
        real: pass(),
        fake: pass(),
    }
}

fn g_loss(nets: &Nets, z: &[Vec<f64>], masks: &Masks) -> f64 {
    let fakes = nets.generate(z).0;
    bce(
        &nets.logits(&fakes, &masks.generator_step, &mut Vec::new()),
        1.0,
    )
}

fn d_loss(nets: &Nets, real: &[Vec<f64>], fakes: &[Vec<f64>], masks: &Masks) -> f64 {
    let mut seen = Vec::new();
    (bce(&nets.logits(real, &masks.real, &mut seen), 1.0)
        + bce(&nets.logits(fakes, &masks.fake, &mut seen), 0.0))
        / 2.0
}

fn fixed_batch() -> (TrainState, Tensor, Tensor) {
    let device = Device::Cpu;
    let state = TrainState::for_model(
        13,
        AdamConfig::REFERENCE,
        Recipe::REFERENCE,
        &Architecture::Conv(spec()),
        None,
        &device,
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(98);
    let real: Vec<f32> = (0..BATCH * SIDE * SIDE)
        .map(|_| if rng.random::<f32>() < 0.2 { 1.0 } else { -1.0 })
        .collect();
    let real = Tensor::from_vec(real, (BATCH, SIDE * SIDE), &device).unwrap();
    let z = mcugan_train::model::sample_z(&mut rng, BATCH, &device).unwrap();
    (state, real, z)
}

fn rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_vec2::<f32>()
        .unwrap()
        .iter()
        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
        .collect()
}

/// One batch by candle's engine through the factory and the `TrainingStep` interface the
/// training loop uses: the G and D losses and the fakes.
fn train_batch(state: &mut TrainState, real: &Tensor, z: &Tensor) -> (f64, f64, Vec<f64>) {
    let mut step = engine::build(Engine::Candle, state, real, None, BATCH).unwrap();
    let order: Vec<u32> = (0..BATCH as u32).collect();
    let latents = values(z).into_iter().map(|v| v as f32).collect::<Vec<_>>();
    step.begin_epoch(&order, &latents).unwrap();
    let batch = Batch {
        order: &order,
        latents: &latents,
        start: 0,
        len: BATCH,
        latent_row: 0,
    };
    step.train_batch(state, &batch).unwrap();
    let (d, g) = step.take_losses().unwrap()[0];
    let fakes = step.fakes().unwrap().into_iter().map(f64::from).collect();
    step.store_into(state).unwrap();
    (f64::from(g), f64::from(d), fakes)
}

#[test]
fn first_batch_losses_and_fakes_match_an_independent_implementation() {
    let (mut state, real, z) = fixed_batch();
    let before = Nets::of(&state);
    let masks = masks(&state);
    assert!(
        masks.real.iter().flatten().any(|&m| m == 0.0),
        "the masks drop nothing: the test would not see where they apply"
    );
    let (z64, real64) = (rows(&z), rows(&real));
    let fakes = before.generate(&z64).0;
    let expected_g = g_loss(&before, &z64, &masks);
    let expected_d = d_loss(&before, &real64, &fakes, &masks);

    let (got_g, got_d, returned) = train_batch(&mut state, &real, &z);
    assert!(
        (got_g - expected_g).abs() < 1e-5,
        "G loss {got_g} vs {expected_g}"
    );
    assert!(
        (got_d - expected_d).abs() < 1e-5,
        "D loss {got_d} vs {expected_d}"
    );
    for (a, b) in returned.iter().zip(fakes.iter().flatten()) {
        assert!((a - b).abs() < 1e-5, "fake pixel {a} vs {b}");
    }
}

/// Central finite difference of `f` with respect to one weight, in f64.
fn numeric_gradient(
    nets: &mut Nets,
    pick: impl Fn(&mut Nets) -> &mut f64,
    f: impl Fn(&Nets) -> f64,
) -> f64 {
    let h = 1e-6;
    let original = *pick(nets);
    *pick(nets) = original + h;
    let up = f(nets);
    *pick(nets) = original - h;
    let down = f(nets);
    *pick(nets) = original;
    (up - down) / (2.0 * h)
}

#[test]
fn each_network_takes_one_adam_step_without_weight_decay() {
    let (mut state, real, z) = fixed_batch();
    let mut before = Nets::of(&state);
    let masks = masks(&state);
    let (z64, real64) = (rows(&z), rows(&real));
    let fakes = before.generate(&z64).0;
    train_batch(&mut state, &real, &z);
    let after = Nets::of(&state);
    let lr = AdamConfig::REFERENCE.lr;

    // A first Adam step moves a weight by lr against its gradient's sign. (The biases before
    // a BatchNorm have no gradient: the norm subtracts them again.)
    type Pick = fn(&mut Nets) -> &mut f64;
    let generator_weights: [(&str, Pick); 5] = [
        ("l1.0.weight[37]", |n| &mut n.l1_w[37]),
        ("l1.0.weight[911]", |n| &mut n.l1_w[911]),
        ("conv_blocks.2.weight[11]", |n| &mut n.g_convs[0].w[11]),
        ("conv_blocks.3.weight[1]", |n| &mut n.g_norms[1].gamma[1]),
        ("conv_blocks.9.weight[4]", |n| &mut n.g_convs[2].w[4]),
    ];
    let discriminator_weights: [(&str, Pick); 5] = [
        ("model.0.weight[3]", |n| &mut n.d_convs[0].w[3]),
        ("model.3.weight[20]", |n| &mut n.d_convs[1].w[20]),
        ("model.6.bias[2]", |n| {
            &mut n.d_norms[1].as_mut().unwrap().beta[2]
        }),
        ("adv_layer.0.weight[9]", |n| &mut n.adv_w[9]),
        ("adv_layer.0.bias", |n| &mut n.adv_b),
    ];
    let mut checked = 0;
    for (generator, weights) in [(true, generator_weights), (false, discriminator_weights)] {
        for (name, pick) in weights {
            let grad = if generator {
                numeric_gradient(&mut before, pick, |n| g_loss(n, &z64, &masks))
            } else {
                numeric_gradient(&mut before, pick, |n| d_loss(n, &real64, &fakes, &masks))
            };
            if grad.abs() < 1e-9 {
                continue;
            }
            let moved = *pick(&mut after.clone()) - *pick(&mut before.clone());
            // m̂ = g and v̂ = g² after one step: lr·g/(|g| + 1e-8), nearly lr·sign(g) (the
            // generator's first gradients are small: its discriminator starts near-constant).
            let expected = -lr * grad / (grad.abs() + 1e-8);
            assert!(
                (moved - expected).abs() < 0.03 * lr,
                "{name}: moved {moved}, expected {expected} (gradient {grad})"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "too few weights with a usable gradient ({checked})"
    );
}

#[test]
fn batch_norm_running_statistics_follow_every_training_pass() {
    let (mut state, real, z) = fixed_batch();
    let before = Nets::of(&state);
    let masks = masks(&state);
    let (z64, real64) = (rows(&z), rows(&real));
    let (fakes, g_seen) = before.generate(&z64);
    // The discriminator's passes: fakes (generator step), real, fakes — all with the weights
    // before the update.
    let mut d_seen = Vec::new();
    before.logits(&fakes, &masks.generator_step, &mut d_seen);
    before.logits(&real64, &masks.real, &mut d_seen);
    before.logits(&fakes, &masks.fake, &mut d_seen);
    train_batch(&mut state, &real, &z);
    let (g, d) = networks(&state);

    let close = |what: String, got: &Tensor, want: &[f64]| {
        let got = values(got);
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "{what}: {a} vs {b}");
        }
    };
    // Momentum 0.1 from mean 0 and variance 1.
    for (i, (norm, (mean, var))) in g.norms.iter().zip(&g_seen).enumerate() {
        assert_eq!(norm.num_batches_tracked, 1);
        let m: Vec<f64> = mean.iter().map(|m| 0.1 * m).collect();
        let v: Vec<f64> = var.iter().map(|v| 0.9 + 0.1 * v).collect();
        close(format!("generator norm {i} mean"), &norm.running_mean, &m);
        close(
            format!("generator norm {i} variance"),
            &norm.running_var,
            &v,
        );
    }
    assert_eq!(g.norms[0].eps, 1e-5);
    assert_eq!(g.norms[1].eps, 0.8);
    // Each discriminator norm saw three passes, in order.
    let norms: Vec<_> = d.norms.iter().flatten().collect();
    for (j, norm) in norms.iter().enumerate() {
        assert_eq!(norm.num_batches_tracked, 3);
        let (mut m, mut v) = (vec![0.0; d_seen[j].0.len()], vec![1.0; d_seen[j].0.len()]);
        for pass in 0..3 {
            let (mean, var) = &d_seen[pass * norms.len() + j];
            for c in 0..m.len() {
                m[c] = 0.9 * m[c] + 0.1 * mean[c];
                v[c] = 0.9 * v[c] + 0.1 * var[c];
            }
        }
        close(
            format!("discriminator norm {j} mean"),
            &norm.running_mean,
            &m,
        );
        close(
            format!("discriminator norm {j} variance"),
            &norm.running_var,
            &v,
        );
    }
}
