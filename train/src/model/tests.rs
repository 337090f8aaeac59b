//! The networks against PyTorch's facts: parameter counts, initialisation, BatchNorm, losses,
//! state names.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::mlp::{MlpDiscriminator, MlpGenerator};
use super::*;

#[test]
fn parameter_counts_match_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let g = MlpGenerator::new(&mut rng, &Device::Cpu).unwrap();
    let d = MlpDiscriminator::new(&mut rng, &Device::Cpu).unwrap();
    let count = |vars: Vec<(String, Var)>| -> usize {
        vars.iter().map(|(_, v)| v.as_tensor().elem_count()).sum()
    };
    // 1,506,448 Linear weights and biases + 2 * (256 + 512 + 1024) BatchNorm affine
    // parameters = 1,510,032, the reference's count.
    assert_eq!(count(g.vars()), 1_510_032);
    assert_eq!(count(d.vars()), 784 * 512 + 512 + 512 * 256 + 256 + 256 + 1);
}

#[test]
fn default_init_ranges_match_pytorch() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let g = MlpGenerator::new(&mut rng, &Device::Cpu).unwrap();
    for (linear, fan_in) in g.linears.iter().zip(GENERATOR_WIDTHS) {
        let bound = 1.0 / (fan_in as f32).sqrt();
        for t in [linear.weight.as_tensor(), linear.bias.as_tensor()] {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(
                max <= bound && max > 0.95 * bound,
                "fan_in {fan_in}: max {max}"
            );
        }
    }
    for norm in &g.norms {
        let w = norm.weight.as_tensor().to_vec1::<f32>().unwrap();
        let b = norm.bias.as_tensor().to_vec1::<f32>().unwrap();
        assert!(w.iter().all(|&x| x == 1.0) && b.iter().all(|&x| x == 0.0));
    }
}

#[test]
fn batch_norm_training_and_running_statistics() {
    let device = Device::Cpu;
    let mut bn = BatchNorm1d::new(2, &device).unwrap();
    let x = Tensor::new(&[[1f32, 10.], [3., 10.], [5., 13.]], &device).unwrap();
    let y = bn.forward_train(&x).unwrap().to_vec2::<f32>().unwrap();
    // Column 0: mean 3, biased var 8/3; eps 0.8.
    let s0 = (8f32 / 3.0 + 0.8).sqrt();
    let expected0 = [-2.0 / s0, 0.0, 2.0 / s0];
    for (row, e) in y.iter().zip(expected0) {
        assert!((row[0] - e).abs() < 1e-6);
    }
    // Running stats: 0.9 * init + 0.1 * batch, with the unbiased variance (4 for column 0).
    let rm = bn.running_mean.to_vec1::<f32>().unwrap();
    let rv = bn.running_var.to_vec1::<f32>().unwrap();
    assert!((rm[0] - 0.3).abs() < 1e-6 && (rm[1] - 1.1).abs() < 1e-6);
    assert!((rv[0] - (0.9 + 0.4)).abs() < 1e-6 && (rv[1] - (0.9 + 0.3)).abs() < 1e-6);
    assert_eq!(bn.num_batches_tracked, 1);
    // Eval mode uses the running statistics.
    let e = bn.forward_eval(&x).unwrap().to_vec2::<f32>().unwrap();
    assert!((e[0][0] - (1.0 - 0.3) / (1.3f32 + 0.8).sqrt()).abs() < 1e-6);
}

#[test]
fn bce_matches_the_definition() {
    let device = Device::Cpu;
    let logits = Tensor::new(&[[0.3f32], [-2.0], [5.0]], &device).unwrap();
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    for target in [0.0, 1.0] {
        let expected: f64 = [0.3, -2.0, 5.0]
            .iter()
            .map(|&x| {
                let p = sigmoid(x);
                -(target * p.ln() + (1.0 - target) * (1.0 - p).ln())
            })
            .sum::<f64>()
            / 3.0;
        let got = bce_with_logits(&logits, target)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
    }
}

#[test]
fn state_round_trips_with_pytorch_names() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let device = Device::Cpu;
    let mut g = MlpGenerator::new(&mut rng, &device).unwrap();
    let z = Tensor::randn(0f32, 1., (4, LATENT_DIM), &device).unwrap();
    g.forward_train(&z).unwrap();
    let state: HashMap<String, Tensor> = g.state().unwrap().into_iter().collect();
    assert!(state.contains_key("model.11.weight"));
    assert!(state.contains_key("model.9.running_var"));
    let mut h = MlpGenerator::new(&mut rng, &device).unwrap();
    h.load_state(&state, "").unwrap();
    let a = g.forward_eval(&z).unwrap().to_vec2::<f32>().unwrap();
    let b = h.forward_eval(&z).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(a, b);
    assert_eq!(h.norms[0].num_batches_tracked, 1);
}
