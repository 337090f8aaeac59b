//! Phased convolutions (format version 5) against a plain reference written from their
//! definition: every output entry of random geometries, strides, phases and weight layouts,
//! chained with dense layers, and models that must not parse.

use mcugan_shared::conv::{ConvGeometry, ConvHeader, PhaseTaps, TapRun, TensorShape};
use mcugan_shared::encode::{encode, EncodeError, LayerSpec, ModelSpec, OutputSpec};
use mcugan_shared::format::{ChannelRequant, WeightFormat, LAYER_KINDS_VERSION};
use mcugan_shared::infer::run_from_input;
use mcugan_shared::{FormatError, ImageShape, Model, Requant};
use proptest::prelude::*;

/// xorshift64: the tests' deterministic numbers.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn int(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }
}

/// Phases of `(first offset, count)` taps.
fn taps(phases: &[(i8, u8)]) -> PhaseTaps {
    phases
        .iter()
        .map(|&(first, count)| TapRun::new(first, count))
        .collect()
}

/// One layer of a test model, with its weights and channels in the encoder's order.
struct TestLayer {
    conv: Option<ConvHeader>,
    inputs: u32,
    outputs: u32,
    weights: Vec<i8>,
    channels: Vec<ChannelRequant>,
    /// `None`: the last layer (pixels through the identity table); else the zero point of a
    /// hidden LeakyReLU (slope 0.25) or, with `linear`, of no activation.
    hidden: Option<(i8, bool)>,
}

const SLOPE_Q31: i32 = 1 << 29;

fn random_layer(
    numbers: &mut Numbers,
    conv: Option<ConvHeader>,
    inputs: u32,
    outputs: u32,
    hidden: Option<(i8, bool)>,
    format: WeightFormat,
) -> TestLayer {
    let (count, records) = match conv.as_ref().map(ConvGeometry::validate) {
        // A geometry the format refuses: no weights (the encoder refuses it first).
        Some(Err(_)) => (0, 0),
        Some(Ok(geometry)) => {
            let out = usize::from(geometry.output.channels);
            let count: usize = geometry
                .phases()
                .map(|(py, px)| geometry.patch_len(py, px) * out)
                .sum();
            (count, geometry.rows.phases() * geometry.cols.phases() * out)
        }
        None => ((inputs * outputs) as usize, outputs as usize),
    };
    let (low, high) = format.range();
    let weights = (0..count)
        .map(|_| numbers.int(i64::from(low), i64::from(high)) as i8)
        .collect();
    let channels = (0..records)
        .map(|_| ChannelRequant {
            bias: numbers.int(-20_000, 20_000) as i32,
            requant: Requant {
                multiplier: (1 << 30) + numbers.int(0, (1 << 30) - 1) as i32,
                shift: numbers.int(6, 10) as i32,
            },
        })
        .collect();
    TestLayer {
        conv,
        inputs,
        outputs,
        weights,
        channels,
        hidden,
    }
}

/// The identity table: a requantized value `r` in −128..=127 becomes the pixel `r + 128`.
fn identity_lut() -> Vec<u8> {
    (0..=255).collect()
}

fn blob_of(layers: &[TestLayer], latent: u16, image: ImageShape, format: WeightFormat) -> Vec<u8> {
    let lut = identity_lut();
    let specs: Vec<LayerSpec> = layers
        .iter()
        .map(|layer| LayerSpec {
            inputs: layer.inputs,
            outputs: layer.outputs,
            conv: layer.conv.clone(),
            weights: &layer.weights,
            weight_format: format,
            channels: &layer.channels,
            output: match layer.hidden {
                None => OutputSpec::TanhPixels { lut: &lut },
                Some((zero_point, false)) => OutputSpec::LeakyRelu {
                    zero_point,
                    negative_slope_q31: SLOPE_Q31,
                },
                Some((zero_point, true)) => OutputSpec::Linear { zero_point },
            },
        })
        .collect();
    encode(&ModelSpec {
        name: "conv-test",
        latent_dim: latent,
        image,
        layers: &specs,
        classes: None,
    })
    .unwrap()
}

/// The accumulators of one layer from its definition: a dense layer's rows, or a phased
/// convolution's patches (taps outside the input read `zero_point`), channels last.
fn reference_accumulators(layer: &TestLayer, x: &[i8], zero_point: i8) -> Vec<(i32, usize)> {
    let Some(header) = &layer.conv else {
        let inputs = layer.inputs as usize;
        return layer
            .weights
            .chunks(inputs)
            .enumerate()
            .map(|(o, row)| {
                let sum: i32 = row
                    .iter()
                    .zip(x)
                    .map(|(&w, &v)| i32::from(w) * i32::from(v))
                    .sum();
                (layer.channels[o].bias + sum, o)
            })
            .collect();
    };
    let g = ConvGeometry::validate(header).unwrap();
    let (cin, ih, iw) = (
        usize::from(g.input.channels),
        i64::from(g.input.height),
        i64::from(g.input.width),
    );
    let (cout, oh, ow) = (
        usize::from(g.output.channels),
        usize::from(g.output.height),
        usize::from(g.output.width),
    );
    let (py_n, px_n) = (g.rows.phases(), g.cols.phases());
    let mut out = vec![(0, 0); cout * oh * ow];
    let mut weight_start = 0;
    let mut phase = 0;
    for py in 0..py_n {
        for px in 0..px_n {
            let ty: Vec<i64> = (0..g.rows.of(py).count)
                .map(|t| i64::from(g.rows.of(py).first) + i64::from(t))
                .collect();
            let tx: Vec<i64> = (0..g.cols.of(px).count)
                .map(|t| i64::from(g.cols.of(px).first) + i64::from(t))
                .collect();
            let patch = ty.len() * tx.len() * cin;
            for oy in (py..oh).step_by(py_n) {
                for ox in (px..ow).step_by(px_n) {
                    let (my, mx) = ((oy / py_n) as i64, (ox / px_n) as i64);
                    for c in 0..cout {
                        let row = &layer.weights[weight_start + c * patch..][..patch];
                        let mut acc = layer.channels[phase * cout + c].bias;
                        let mut k = 0;
                        for &dy in &ty {
                            for &dx in &tx {
                                let y = my * i64::from(g.stride[0]) + dy;
                                let xx = mx * i64::from(g.stride[1]) + dx;
                                for ci in 0..cin {
                                    let v = if (0..ih).contains(&y) && (0..iw).contains(&xx) {
                                        x[((y * iw + xx) as usize) * cin + ci]
                                    } else {
                                        zero_point
                                    };
                                    acc += i32::from(row[k]) * i32::from(v);
                                    k += 1;
                                }
                            }
                        }
                        out[(oy * ow + ox) * cout + c] = (acc, phase * cout + c);
                    }
                }
            }
            weight_start += patch * cout;
            phase += 1;
        }
    }
    out
}

/// A whole model from its definition: each layer's accumulators, then its output stage.
fn reference_image(layers: &[TestLayer], input: &[i8]) -> Vec<u8> {
    let mut x = input.to_vec();
    let mut zero_point = 0i8;
    for layer in layers {
        let accs = reference_accumulators(layer, &x, zero_point);
        let requant = |(acc, record): (i32, usize)| layer.channels[record].requant.apply(acc);
        match layer.hidden {
            None => {
                return accs
                    .into_iter()
                    .map(|a| (requant(a).clamp(-128, 127) + 128) as u8)
                    .collect()
            }
            Some((zp, linear)) => {
                x = accs
                    .into_iter()
                    .map(|(acc, record)| {
                        let mut r = layer.channels[record].requant;
                        if acc < 0 && !linear {
                            r = r.scaled_by_q31(SLOPE_Q31);
                        }
                        (r.apply(acc) + i32::from(zp)).clamp(-128, 127) as i8
                    })
                    .collect();
                zero_point = zp;
            }
        }
    }
    unreachable!("the last layer draws pixels")
}

fn shape(channels: u16, height: u16, width: u16) -> TensorShape {
    TensorShape {
        channels,
        height,
        width,
    }
}

fn image_of(t: TensorShape) -> ImageShape {
    ImageShape {
        width: t.width,
        height: t.height,
        channels: t.channels as u8,
    }
}

/// Runs `layers` on random inputs through the runtime and compares with the reference.
fn check_model(layers: &[TestLayer], format: WeightFormat, image: ImageShape, salt: u64) {
    let latent = layers[0].inputs as u16;
    let blob = blob_of(layers, latent, image, format);
    let model = Model::parse(&blob).unwrap();
    let mut numbers = Numbers(salt | 1);
    for _ in 0..3 {
        let input: Vec<i8> = (0..latent).map(|_| numbers.int(-128, 127) as i8).collect();
        let mut pixels = vec![0u8; model.pixel_count()];
        run_from_input(&model, &input, &mut pixels).unwrap();
        assert_eq!(pixels, reference_image(layers, &input), "{format:?}");
    }
}

/// A 3x3 convolution of stride 2 and padding 1 (one phase), a ConvTranspose 4x4 of stride 2
/// and padding 1 (four phases of 2x2 taps), and an upsample-by-2 3x3 convolution (four phases
/// of 2x2 taps), each as the quantizer stores them.
fn geometries() -> Vec<ConvHeader> {
    vec![
        ConvHeader {
            input: shape(3, 7, 6),
            output: shape(5, 4, 3),
            stride: [2, 2],
            row_taps: taps(&[(-1, 3)]),
            col_taps: taps(&[(-1, 3)]),
        },
        ConvHeader {
            input: shape(4, 3, 3),
            output: shape(6, 6, 6),
            stride: [1, 1],
            row_taps: taps(&[(-1, 2), (0, 2)]),
            col_taps: taps(&[(-1, 2), (0, 2)]),
        },
        ConvHeader {
            input: shape(5, 4, 3),
            output: shape(2, 8, 6),
            stride: [1, 1],
            row_taps: taps(&[(-1, 2), (0, 2)]),
            col_taps: taps(&[(-1, 2), (0, 2)]),
        },
        // Uneven phases: 3 row phases over 7 rows, taps of several lengths.
        ConvHeader {
            input: shape(2, 3, 4),
            output: shape(3, 7, 4),
            stride: [1, 1],
            row_taps: taps(&[(0, 1), (-1, 3), (1, 2)]),
            col_taps: taps(&[(-2, 5)]),
        },
    ]
}

#[test]
fn each_geometry_draws_its_definition_in_every_layout() {
    for (i, header) in geometries().into_iter().enumerate() {
        for format in [
            WeightFormat::I8RowMajor,
            WeightFormat::I8Blocked,
            WeightFormat::I4Blocked,
        ] {
            let mut numbers = Numbers(17 + i as u64);
            let (input, output) = (header.input, header.output);
            let layer = random_layer(
                &mut numbers,
                Some(header.clone()),
                input.volume() as u32,
                output.volume() as u32,
                None,
                format,
            );
            check_model(&[layer], format, image_of(output), 99 + i as u64);
        }
    }
}

#[test]
fn dense_and_conv_layers_chain_through_the_arena() {
    // dense -> conv (no activation between, as dcgan.py's Linear and its first convolution)
    // -> conv (LeakyReLU) -> conv to RGB pixels.
    let mut numbers = Numbers(5);
    let format = WeightFormat::I8Blocked;
    let first = shape(4, 3, 3);
    let up = ConvHeader {
        input: first,
        output: shape(6, 6, 6),
        stride: [1, 1],
        row_taps: taps(&[(-1, 2), (0, 2)]),
        col_taps: taps(&[(-1, 2), (0, 2)]),
    };
    let same = ConvHeader {
        input: shape(6, 6, 6),
        output: shape(5, 6, 6),
        stride: [1, 1],
        row_taps: taps(&[(-1, 3)]),
        col_taps: taps(&[(-1, 3)]),
    };
    let rgb = ConvHeader {
        input: shape(5, 6, 6),
        output: shape(3, 6, 6),
        stride: [1, 1],
        row_taps: taps(&[(-1, 3)]),
        col_taps: taps(&[(-1, 3)]),
    };
    let layers = vec![
        random_layer(&mut numbers, None, 10, 36, Some((-3, true)), format),
        random_layer(&mut numbers, Some(up), 36, 216, Some((-100, false)), format),
        random_layer(&mut numbers, Some(same), 216, 180, Some((7, true)), format),
        random_layer(&mut numbers, Some(rgb), 180, 108, None, format),
    ];
    check_model(&layers, format, image_of(shape(3, 6, 6)), 7);
    let blob = blob_of(&layers, 10, image_of(shape(3, 6, 6)), format);
    assert_eq!(blob[4] as u16, LAYER_KINDS_VERSION);
    let model = Model::parse(&blob).unwrap();
    // The widest neighbours: the second convolution's input and output side by side.
    assert_eq!(model.arena_len(), 216 + 180);
    assert_eq!(model.scratch_len(), 56); // 9 taps of 6 channels, to a whole column block
                                         // conv -> dense -> pixels: a dense layer reads the channels-last tensor whole.
    let layers = vec![
        random_layer(
            &mut numbers,
            Some(ConvHeader {
                input: shape(2, 4, 4),
                output: shape(3, 2, 2),
                stride: [2, 2],
                row_taps: taps(&[(0, 2)]),
                col_taps: taps(&[(0, 2)]),
            }),
            32,
            12,
            Some((0, false)),
            format,
        ),
        random_layer(&mut numbers, None, 12, 16, None, format),
    ];
    check_model(&layers, format, image_of(shape(1, 4, 4)), 8);
}

fn one_conv_blob(header: ConvHeader) -> Result<Vec<u8>, EncodeError> {
    let mut numbers = Numbers(3);
    let (input, output) = (header.input, header.output);
    let layer = random_layer(
        &mut numbers,
        Some(header),
        input.volume() as u32,
        output.volume() as u32,
        None,
        WeightFormat::I8Blocked,
    );
    let lut = identity_lut();
    encode(&ModelSpec {
        name: "bad",
        latent_dim: input.volume() as u16,
        image: image_of(output),
        layers: &[LayerSpec {
            inputs: layer.inputs,
            outputs: layer.outputs,
            conv: layer.conv.clone(),
            weights: &layer.weights,
            weight_format: WeightFormat::I8Blocked,
            channels: &layer.channels,
            output: OutputSpec::TanhPixels { lut: &lut },
        }],
        classes: None,
    })
}

#[test]
fn geometries_out_of_bounds_and_mismatched_tensors_are_refused() {
    let base = geometries().remove(0);
    let refused = |header: ConvHeader| one_conv_blob(header).err();
    // A stride of 0, a phase without taps, a patch wider than the kernels take.
    assert!(matches!(
        refused(ConvHeader {
            stride: [0, 1],
            ..base.clone()
        }),
        Some(EncodeError::BadConv { .. })
    ));
    assert!(matches!(
        refused(ConvHeader {
            row_taps: taps(&[(0, 0)]),
            ..base.clone()
        }),
        Some(EncodeError::BadConv { .. })
    ));
    assert!(matches!(
        refused(ConvHeader {
            input: shape(100, 7, 6),
            row_taps: taps(&[(-3, 7)]),
            col_taps: taps(&[(-3, 7)]),
            ..base.clone()
        }),
        Some(EncodeError::BadConv { .. })
    ));
    // The last convolution must draw the image's rows, columns and channels.
    let header = geometries().remove(1);
    let mut numbers = Numbers(4);
    let layer = random_layer(
        &mut numbers,
        Some(header.clone()),
        36,
        216,
        None,
        WeightFormat::I8Blocked,
    );
    let lut = identity_lut();
    let transposed = ImageShape {
        width: 36,
        height: 1,
        channels: 6,
    };
    let err = encode(&ModelSpec {
        name: "bad",
        latent_dim: 36,
        image: transposed,
        layers: &[LayerSpec {
            inputs: 36,
            outputs: 216,
            conv: Some(header),
            weights: &layer.weights,
            weight_format: WeightFormat::I8Blocked,
            channels: &layer.channels,
            output: OutputSpec::TanhPixels { lut: &lut },
        }],
        classes: None,
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            EncodeError::Invalid(FormatError::ImageSizeMismatch { .. })
        ),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random geometries, strides and phases: the runtime draws the definition.
    #[test]
    fn random_phased_convolutions_match_their_definition(
        salt in any::<u64>(),
        cin in 1u16..5, cout in 1u16..6,
        ih in 1u16..6, iw in 1u16..6,
        py in 1usize..4, px in 1usize..3,
        sy in 1u8..3, sx in 1u8..3,
        int4 in any::<bool>(),
    ) {
        let mut numbers = Numbers(salt | 1);
        let mut axis = |phases: usize| -> PhaseTaps {
            (0..phases)
                .map(|_| TapRun::new(numbers.int(-3, 3) as i8, numbers.int(1, 4) as u8))
                .collect()
        };
        let (row_taps, col_taps) = (axis(py), axis(px));
        let oh = (numbers.int(1, 6) as u16).max(py as u16);
        let ow = (numbers.int(1, 6) as u16).max(px as u16);
        let header = ConvHeader {
            input: shape(cin, ih, iw),
            output: shape(cout, oh, ow),
            stride: [sy, sx],
            row_taps,
            col_taps,
        };
        let format = if int4 { WeightFormat::I4Blocked } else { WeightFormat::I8Blocked };
        let (input, output) = (header.input, header.output);
        let layer = random_layer(
            &mut numbers,
            Some(header),
            input.volume() as u32,
            output.volume() as u32,
            None,
            format,
        );
        check_model(&[layer], format, image_of(output), salt);
    }
}

/// The small convolutional models the fuzz corpus starts from: a DCGAN-like chain (dense,
/// upsampling convolution, RGB convolution) and a transposed-convolution one, int8 and int4.
fn corpus_models() -> Vec<(&'static str, Vec<u8>)> {
    let mut numbers = Numbers(41);
    let chain = |numbers: &mut Numbers, format| {
        let up = ConvHeader {
            input: shape(2, 2, 2),
            output: shape(3, 4, 4),
            stride: [1, 1],
            row_taps: taps(&[(-1, 2), (0, 2)]),
            col_taps: taps(&[(-1, 2), (0, 2)]),
        };
        let rgb = ConvHeader {
            input: shape(3, 4, 4),
            output: shape(3, 4, 4),
            stride: [1, 1],
            row_taps: taps(&[(-1, 3)]),
            col_taps: taps(&[(-1, 3)]),
        };
        let layers = vec![
            random_layer(numbers, None, 4, 8, Some((-3, true)), format),
            random_layer(numbers, Some(up), 8, 48, Some((-100, false)), format),
            random_layer(numbers, Some(rgb), 48, 48, None, format),
        ];
        blob_of(&layers, 4, image_of(shape(3, 4, 4)), format)
    };
    let transposed = |numbers: &mut Numbers| {
        let doubling = ConvHeader {
            input: shape(2, 2, 2),
            output: shape(1, 4, 4),
            stride: [1, 1],
            row_taps: taps(&[(0, 2), (0, 2)]),
            col_taps: taps(&[(0, 2), (0, 2)]),
        };
        let layers = vec![
            random_layer(
                numbers,
                None,
                3,
                8,
                Some((0, false)),
                WeightFormat::I8Blocked,
            ),
            random_layer(
                numbers,
                Some(doubling),
                8,
                16,
                None,
                WeightFormat::I8Blocked,
            ),
        ];
        blob_of(
            &layers,
            3,
            image_of(shape(1, 4, 4)),
            WeightFormat::I8Blocked,
        )
    };
    vec![
        (
            "tiny-valid-conv-rgb.mcg",
            chain(&mut numbers, WeightFormat::I8Blocked),
        ),
        (
            "tiny-valid-conv-rgb-int4.mcg",
            chain(&mut numbers, WeightFormat::I4Blocked),
        ),
        ("tiny-valid-conv-transposed.mcg", transposed(&mut numbers)),
    ]
}

/// Parsing never panics, and a model that parses runs.
fn parse_and_run(bytes: &[u8]) {
    if let Ok(model) = Model::parse(bytes) {
        let mut pixels = vec![0u8; model.pixel_count()];
        mcugan_shared::generate(&model, 5, &mut pixels).expect("a parsed model runs");
    }
}

/// The fuzz corpus (`fuzz/corpus/parse_model`) holds the convolutional seeds as this test builds
/// them (`MCUGAN_BLESS=1` rewrites them after a deliberate change of the format).
#[test]
fn the_fuzz_corpus_holds_the_convolutional_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_model");
    for (name, blob) in corpus_models() {
        let path = dir.join(name);
        if std::env::var_os("MCUGAN_BLESS").is_some() {
            std::fs::write(&path, &blob).unwrap();
        }
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (MCUGAN_BLESS=1 writes it)", path.display()));
        assert_eq!(stored, blob, "{name} is not what this test builds");
        assert!(Model::parse(&blob)
            .unwrap()
            .layers()
            .iter()
            .any(|l| l.conv.is_some()));
        parse_and_run(&blob);
    }
}

fn mutate(blob: &[u8], edits: &[(usize, u8)]) -> Vec<u8> {
    let mut out = blob.to_vec();
    for &(at, value) in edits {
        let at = at % out.len();
        out[at] = value;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Header mutations of convolutional blobs, resealed so that they reach the geometry
    /// checks: never a panic, and whatever parses runs.
    #[test]
    fn mutated_convolutional_headers_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((0usize..160, any::<u8>()), 1..5),
    ) {
        let (_, blob) = corpus_models().swap_remove(which);
        let mut mutated = mutate(&blob, &edits);
        mcugan_shared::encode::reseal(&mut mutated);
        parse_and_run(&mutated);
    }

    /// Mutations anywhere in convolutional blobs, resealed.
    #[test]
    fn mutated_convolutional_bodies_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let (_, blob) = corpus_models().swap_remove(which);
        let mut mutated = mutate(&blob, &edits);
        mcugan_shared::encode::reseal(&mut mutated);
        parse_and_run(&mutated);
    }
}
