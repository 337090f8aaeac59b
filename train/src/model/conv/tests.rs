//! The convolutional networks against PyTorch's facts and against candle's own operators: the
//! phased convolution (forward and both gradients) against candle's `upsample_nearest2d` +
//! `conv2d`, `dcgan.py`'s tensor names and shapes, the fold into float layers against
//! evaluation mode, `Dropout2d`'s masks, and the state's round trip.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{Device, Tensor, Var};
use mcugan_float_model::conv::Conv2d as Geometry;
use mcugan_float_model::latent_for_seed;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::phased::{conv2d, PhasedGeometry};
use super::*;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    super::layers::normal(&mut rng, shape, 0.0, 1.0, &Device::Cpu).unwrap()
}

fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The convolution as candle computes it: an upsampling, then `conv2d`.
fn candle_conv(x: &Tensor, w: &Tensor, g: &Geometry) -> Tensor {
    let x = if g.upsample > 1 {
        x.upsample_nearest2d(g.input[0] * g.upsample, g.input[1] * g.upsample)
            .unwrap()
    } else {
        x.clone()
    };
    x.conv2d(w, g.padding[0], g.stride[0], 1, 1).unwrap()
}

fn geometry(cin: usize, cout: usize, side: usize, stride: usize, upsample: usize) -> Geometry {
    let out = (side * upsample + 2 - 3) / stride + 1;
    Geometry {
        transposed: false,
        in_channels: cin,
        out_channels: cout,
        input: [side, side],
        output: [out, out],
        kernel: [3, 3],
        stride: [stride, stride],
        padding: [1, 1],
        upsample,
    }
}

/// `ours` and `theirs` (the same convolution of `x` by `w`, computed two ways) agree, and so
/// do the gradients of `sum(output · r)` with respect to `x` and `w`.
fn assert_same_outputs_and_gradients(
    ours: &Tensor,
    theirs: &Tensor,
    r: &Tensor,
    [x, w]: [&Var; 2],
    g: &Geometry,
) {
    assert_eq!(ours.dims(), theirs.dims(), "{g:?}");
    assert!(max_difference(ours, theirs) < 1e-4, "forward of {g:?}");
    let gradients = |y: &Tensor| (y * r).unwrap().sum_all().unwrap().backward().unwrap();
    let (grads_ours, grads_theirs) = (gradients(ours), gradients(theirs));
    for (name, var) in [("input", x), ("weight", w)] {
        let a = grads_ours.get(var.as_tensor()).unwrap();
        let b = grads_theirs.get(var.as_tensor()).unwrap();
        assert!(max_difference(a, b) < 1e-3, "{name} gradient of {g:?}");
    }
}

#[test]
fn the_phased_convolution_and_its_gradients_match_candle() {
    // The generator's upsampling blocks, its last convolution, the discriminator's strided ones
    // (an odd side included: 7 → 4).
    for (i, g) in [
        geometry(3, 5, 4, 1, 2),
        geometry(4, 1, 8, 1, 1),
        geometry(2, 6, 8, 2, 1),
        geometry(3, 4, 7, 2, 1),
        // Few outputs: computed directly, without patch matrices.
        geometry(6, 1, 9, 1, 1),
        geometry(5, 3, 6, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 10 * i as u64;
        let x =
            Var::from_tensor(&random(&[3, g.in_channels, g.input[0], g.input[1]], seed)).unwrap();
        let w =
            Var::from_tensor(&random(&[g.out_channels, g.in_channels, 3, 3], seed + 1)).unwrap();
        let r = random(&[3, g.out_channels, g.output[0], g.output[1]], seed + 2);
        let phased = Arc::new(PhasedGeometry::new(g.clone()).unwrap());

        let ours = conv2d(x.as_tensor(), w.as_tensor(), &phased).unwrap();
        let theirs = candle_conv(x.as_tensor(), w.as_tensor(), &g);
        assert_same_outputs_and_gradients(&ours, &theirs, &r, [&x, &w], &g);
    }
}

#[test]
fn the_phased_transposed_convolution_and_its_gradients_match_candle() {
    // ConvTranspose2d(4, stride 2, padding 1), the transposed generator's block, at two sides.
    for (i, (cin, cout, side)) in [(3, 5, 4), (4, 2, 7)].into_iter().enumerate() {
        let g = super::generator::doubling_transposed_conv(cin, cout, side);
        let seed = 100 + 10 * i as u64;
        let x = Var::from_tensor(&random(&[2, cin, side, side], seed)).unwrap();
        // PyTorch's (and candle's) ConvTranspose2d layout: [in, out, kh, kw].
        let w = Var::from_tensor(&random(&[cin, cout, 4, 4], seed + 1)).unwrap();
        let r = random(&[2, cout, 2 * side, 2 * side], seed + 2);
        let phased = Arc::new(PhasedGeometry::new(g.clone()).unwrap());

        let w_out_in = w.as_tensor().transpose(0, 1).unwrap().contiguous().unwrap();
        let ours = conv2d(x.as_tensor(), &w_out_in, &phased).unwrap();
        let theirs = x
            .as_tensor()
            .conv_transpose2d(w.as_tensor(), 1, 0, 2, 1)
            .unwrap();
        assert_same_outputs_and_gradients(&ours, &theirs, &r, [&x, &w], &g);
    }
}

/// A small spec of the same pattern, quick to run.
fn small() -> ConvGanSpec {
    ConvGanSpec {
        generator: GeneratorSpec {
            latent: 100,
            init_side: 4,
            channels: vec![8, 6, 4],
            first_norm_eps: 1e-5,
            norm_eps: 0.8,
            kernel: 3,
            image_channels: 1,
            upsampling: Default::default(),
            first_leaky_relu: false,
        },
        discriminator: DiscriminatorSpec {
            channels: vec![4, 8],
            dropout: 0.25,
            norm_eps: 0.8,
            kernel: 3,
        },
    }
}

#[test]
fn dcgan_py_names_and_shapes() {
    let spec = ConvGanSpec::dcgan();
    spec.check().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let g = ConvGenerator::new(&spec.generator, &mut rng, &Device::Cpu).unwrap();
    let d = ConvDiscriminator::new(&spec, &mut rng, &Device::Cpu).unwrap();
    let shapes = |state: Vec<(String, Tensor)>| -> HashMap<String, Vec<usize>> {
        state
            .into_iter()
            .map(|(n, t)| (n, t.dims().to_vec()))
            .collect()
    };
    let norm = |name: &str, c: usize| {
        [
            (format!("{name}.weight"), vec![c]),
            (format!("{name}.bias"), vec![c]),
            (format!("{name}.running_mean"), vec![c]),
            (format!("{name}.running_var"), vec![c]),
            (format!("{name}.num_batches_tracked"), vec![1]),
        ]
    };
    // `dcgan.py`'s `state_dict()` (num_batches_tracked is a 0-d tensor there; one value here).
    let mut expected: HashMap<String, Vec<usize>> = HashMap::from([
        ("l1.0.weight".into(), vec![8192, 100]),
        ("l1.0.bias".into(), vec![8192]),
        ("conv_blocks.2.weight".into(), vec![128, 128, 3, 3]),
        ("conv_blocks.2.bias".into(), vec![128]),
        ("conv_blocks.6.weight".into(), vec![64, 128, 3, 3]),
        ("conv_blocks.6.bias".into(), vec![64]),
        ("conv_blocks.9.weight".into(), vec![1, 64, 3, 3]),
        ("conv_blocks.9.bias".into(), vec![1]),
    ]);
    expected.extend(norm("conv_blocks.0", 128));
    expected.extend(norm("conv_blocks.3", 128));
    expected.extend(norm("conv_blocks.7", 64));
    assert_eq!(shapes(g.state().unwrap()), expected);

    let mut expected: HashMap<String, Vec<usize>> = HashMap::from([
        ("model.0.weight".into(), vec![16, 1, 3, 3]),
        ("model.0.bias".into(), vec![16]),
        ("model.3.weight".into(), vec![32, 16, 3, 3]),
        ("model.3.bias".into(), vec![32]),
        ("model.7.weight".into(), vec![64, 32, 3, 3]),
        ("model.7.bias".into(), vec![64]),
        ("model.11.weight".into(), vec![128, 64, 3, 3]),
        ("model.11.bias".into(), vec![128]),
        ("adv_layer.0.weight".into(), vec![1, 512]),
        ("adv_layer.0.bias".into(), vec![1]),
    ]);
    expected.extend(norm("model.6", 32));
    expected.extend(norm("model.10", 64));
    expected.extend(norm("model.14", 128));
    assert_eq!(shapes(d.state().unwrap()), expected);

    // 1,049,985 trainable parameters in the generator, as PyTorch counts them.
    let params: usize = g.vars().iter().map(|(_, v)| v.elem_count()).sum();
    assert_eq!(params, 1_049_985);
}

#[test]
fn weights_init_normal_is_applied() {
    let spec = ConvGanSpec::dcgan();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let g = ConvGenerator::new(&spec.generator, &mut rng, &Device::Cpu).unwrap();
    let stats = |t: &Tensor| {
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / v.len() as f64;
        (mean, var.sqrt())
    };
    // Convolutions N(0, 0.02); BatchNorm γ N(1, 0.02), β 0; the Linear keeps PyTorch's
    // default U(±1/√100), standard deviation 0.1/√3.
    let (mean, std) = stats(g.convs[0].weight.as_tensor());
    assert!(
        mean.abs() < 0.002 && (std - 0.02).abs() < 0.001,
        "{mean} {std}"
    );
    let (mean, std) = stats(g.norms[1].weight.as_tensor());
    assert!(
        (mean - 1.0).abs() < 0.01 && (std - 0.02).abs() < 0.01,
        "{mean} {std}"
    );
    assert_eq!(stats(g.norms[1].bias.as_tensor()), (0.0, 0.0));
    let (_, std) = stats(g.l1.weight.as_tensor());
    assert!((std - 0.1 / 3f64.sqrt()).abs() < 0.002, "{std}");
}

#[test]
fn the_folded_generator_matches_evaluation_mode() {
    for (upsampling, first_leaky_relu) in [
        (Upsampling::Nearest, false),
        (Upsampling::Transposed, false),
        (Upsampling::Nearest, true),
    ] {
        let mut spec = small().generator;
        spec.upsampling = upsampling;
        spec.first_leaky_relu = first_leaky_relu;
        folded_generator_matches_evaluation_mode(&spec);
    }
}

fn folded_generator_matches_evaluation_mode(spec: &GeneratorSpec) {
    let device = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut g = ConvGenerator::new(spec, &mut rng, &device).unwrap();
    for _ in 0..3 {
        let z = random(&[8, 100], 4);
        g.forward_train(&z).unwrap();
    }
    for (i, norm) in g.norms.iter().enumerate() {
        let n = norm.weight.as_tensor().dim(0).unwrap();
        norm.weight
            .set(&random(&[n], 20 + i as u64).affine(0.3, 1.0).unwrap())
            .unwrap();
        norm.bias
            .set(&(random(&[n], 30 + i as u64) * 0.3).unwrap())
            .unwrap();
    }
    let folded = fold(&g).unwrap();
    assert_eq!(folded.image.width, 16);
    let z = latent_for_seed(9, 100);
    let expected = g
        .forward_eval(&Tensor::from_slice(&z, (1, 100), &device).unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let got = folded.forward(&z).unwrap();
    assert_eq!(got.len(), 256);
    let worst = expected
        .iter()
        .zip(&got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst < 1e-4,
        "folded {:?} model (first LeakyReLU {}) differs by {worst}",
        spec.upsampling,
        spec.first_leaky_relu
    );
}

#[test]
fn dropout2d_drops_whole_channels() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mask = channel_dropout_mask(200, 50, 0.25, &mut rng, &Device::Cpu).unwrap();
    assert_eq!(mask.dims(), &[200, 50, 1, 1]);
    let v = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(v.iter().all(|&x| x == 0.0 || (x - 4.0 / 3.0).abs() < 1e-6));
    let dropped = v.iter().filter(|&&x| x == 0.0).count() as f64 / v.len() as f64;
    assert!((dropped - 0.25).abs() < 0.02, "{dropped}");
}

#[test]
fn the_state_round_trips() {
    let spec = small();
    let device = Device::Cpu;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut g = ConvGenerator::new(&spec.generator, &mut rng, &device).unwrap();
    let mut d = ConvDiscriminator::new(&spec, &mut rng, &device).unwrap();
    g.forward_train(&random(&[4, 100], 7)).unwrap();
    let images = random(&[4, 256], 8);
    d.logits(&images, &[], false).unwrap();
    let saved_g: HashMap<String, Tensor> = g.state().unwrap().into_iter().collect();
    let saved_d: HashMap<String, Tensor> = d.state().unwrap().into_iter().collect();

    let mut g2 = ConvGenerator::new(&spec.generator, &mut rng, &device).unwrap();
    let mut d2 = ConvDiscriminator::new(&spec, &mut rng, &device).unwrap();
    g2.load_state(&saved_g, "").unwrap();
    d2.load_state(&saved_d, "").unwrap();
    let z = random(&[2, 100], 9);
    assert_eq!(
        max_difference(&g.forward_eval(&z).unwrap(), &g2.forward_eval(&z).unwrap()),
        0.0
    );
    assert_eq!(g2.norms[1].num_batches_tracked, 1);
    assert_eq!(d2.norms[1].as_ref().unwrap().num_batches_tracked, 1);
    let (a, b) = (
        d.logits(&images, &[], false).unwrap(),
        d2.logits(&images, &[], false).unwrap(),
    );
    assert_eq!(max_difference(&a, &b), 0.0);
}

#[test]
fn the_fused_batch_norm_matches_the_tensor_version() {
    let device = Device::Cpu;
    for slope in [None, Some(0.2f32)] {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut fused = BatchNorm2d::new(5, 0.8, &mut rng, &device).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let mut tensors = BatchNorm2d::new(5, 0.8, &mut rng, &device).unwrap();
        let beta = random(&[5], 40);
        fused.bias.set(&beta).unwrap();
        tensors.bias.set(&beta).unwrap();
        let x = Var::from_tensor(&(random(&[4, 5, 3, 6], 41) * 2.0).unwrap()).unwrap();
        let r = random(&[4, 5, 3, 6], 42);

        let a = fused.forward_train(x.as_tensor(), false, slope).unwrap();
        let b = tensors.forward_train_tensors(x.as_tensor(), false).unwrap();
        let b = match slope {
            Some(s) => b.maximum(&(&b * f64::from(s)).unwrap()).unwrap(),
            None => b,
        };
        assert!(max_difference(&a, &b) < 1e-5, "forward, slope {slope:?}");
        assert!(max_difference(&fused.running_mean, &tensors.running_mean) < 1e-6);
        assert!(max_difference(&fused.running_var, &tensors.running_var) < 1e-5);

        let ga = (a * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, (p, q)) in [
            ("input", (x.as_tensor(), x.as_tensor())),
            (
                "gamma",
                (fused.weight.as_tensor(), tensors.weight.as_tensor()),
            ),
            ("beta", (fused.bias.as_tensor(), tensors.bias.as_tensor())),
        ] {
            let (da, db) = (ga.get(p).unwrap(), gb.get(q).unwrap());
            assert!(
                max_difference(da, db) < 1e-4,
                "{name} gradient, slope {slope:?}"
            );
        }
    }
}

#[test]
fn the_variant_specs_in_train_specs_are_well_formed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let spec: ConvGanSpec =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        spec.check()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if path.file_name().is_some_and(|n| n == "g36t-d32.json") {
            assert_eq!(
                spec,
                ConvGanSpec::dcgan_256k(),
                "--arch dcgan-256k is g36t-d32"
            );
        }
        count += 1;
    }
    assert!(count >= 6, "{count} specs in {}", dir.display());
}
