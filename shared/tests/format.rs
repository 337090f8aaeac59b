//! The model format: round trips, every rejection path, and property tests that `Model::parse`
//! never panics and that whatever it accepts runs.

use mcugan_shared::encode::{
    encode, reseal, set_version, EncodeError, LayerSpec, ModelSpec, OutputSpec,
};
use mcugan_shared::format::{
    ArrayKind, ChannelRequant, WeightFormat, FORMAT_VERSION, MAX_IMAGE_PIXELS, MAX_WIDTH,
    OLDEST_FORMAT_VERSION,
};
use mcugan_shared::{generate, FormatError, ImageShape, Model, Requant};
use proptest::prelude::*;

/// A deterministic model with the given widths (latent first, pixels last).
fn model_blob(widths: &[u16], image: ImageShape, salt: u64) -> Vec<u8> {
    model_blob_as(widths, image, salt, WeightFormat::I8RowMajor, -127..=127)
}

/// [`model_blob`] with weights drawn from `range` and stored as `format`.
fn model_blob_as(
    widths: &[u16],
    image: ImageShape,
    salt: u64,
    format: WeightFormat,
    range: std::ops::RangeInclusive<i8>,
) -> Vec<u8> {
    let span = (i32::from(*range.end()) - i32::from(*range.start()) + 1) as u64;
    let mut state = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut weights = Vec::new();
    let mut channels = Vec::new();
    for pair in widths.windows(2) {
        let (i, o) = (pair[0] as usize, pair[1] as usize);
        weights.push(
            (0..i * o)
                .map(|_| (i64::from(*range.start()) + (next() % span) as i64) as i8)
                .collect::<Vec<_>>(),
        );
        channels.push(
            (0..o)
                .map(|_| ChannelRequant {
                    bias: (next() % 20_001) as i32 - 10_000,
                    requant: Requant {
                        multiplier: (1 << 30) + (next() % (1 << 30)) as i32,
                        shift: 8 + (next() % 4) as i32,
                    },
                })
                .collect::<Vec<_>>(),
        );
    }
    let lut: Vec<u8> = (0..256).map(|i| i as u8).collect();
    let last = widths.len() - 2;
    let layers: Vec<LayerSpec> = (0..=last)
        .map(|l| LayerSpec {
            inputs: u32::from(widths[l]),
            outputs: u32::from(widths[l + 1]),
            conv: None,
            weights: &weights[l],
            weight_format: format,
            channels: &channels[l],
            output: if l == last {
                OutputSpec::TanhPixels { lut: &lut }
            } else {
                OutputSpec::LeakyRelu {
                    zero_point: -100,
                    negative_slope_q31: 429_496_730,
                }
            },
        })
        .collect();
    encode(&ModelSpec {
        name: "test",
        latent_dim: widths[0],
        image,
        layers: &layers,
        classes: None,
    })
    .expect("test model encodes")
}

fn parse_err(bytes: &[u8]) -> Option<FormatError> {
    Model::parse(bytes).err()
}

fn small_blob() -> Vec<u8> {
    let image = ImageShape {
        width: 4,
        height: 4,
        channels: 1,
    };
    model_blob(&[8, 12, 16], image, 1)
}

fn reference_blob() -> Vec<u8> {
    let image = ImageShape {
        width: 28,
        height: 28,
        channels: 1,
    };
    model_blob(&[100, 128, 256, 512, 1024, 784], image, 2)
}

#[test]
fn a_reference_sized_model_round_trips() {
    let blob = reference_blob();
    let model = Model::parse(&blob).expect("valid");
    assert_eq!(model.name(), "test");
    assert_eq!(model.latent_dim(), 100);
    assert_eq!(model.pixel_count(), 784);
    assert_eq!(model.layers().len(), 5);
    assert_eq!(model.macs(), 1_503_744);
    assert_eq!(
        model.parameter_count(),
        1_503_744 + 128 + 256 + 512 + 1024 + 784
    );
    assert_eq!(model.blob_len(), blob.len());
    // The arrays are the bytes that were encoded, in place.
    let first = &model.layers()[0];
    assert_eq!(first.weights.len(), 100 * 128);
    let base = first.weights.as_ptr() as usize - blob.as_ptr() as usize;
    assert_eq!(
        base % 16,
        0,
        "arrays are 16-byte aligned from the blob start"
    );
    let mut pixels = [0u8; 784];
    generate(&model, 3, &mut pixels).expect("runs");
}

/// Images of every seed in `seeds` drawn by the model in `blob`.
fn images(blob: &[u8], seeds: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    let model = Model::parse(blob).expect("valid");
    seeds
        .map(|seed| {
            let mut pixels = vec![0u8; model.pixel_count()];
            generate(&model, seed, &mut pixels).expect("runs");
            pixels
        })
        .collect()
}

#[test]
fn every_weight_layout_draws_the_same_images() {
    // Shapes that are and are not multiples of the 4x8 blocks.
    let shapes: [(&[u16], ImageShape); 3] = [
        (&[100, 128, 256, 784], square(28)),
        (&[13, 7, 30, 9], square(3)),
        (&[5, 3, 1], square(1)),
    ];
    for (salt, (widths, image)) in shapes.into_iter().enumerate() {
        let salt = salt as u64 + 10;
        let row_major = model_blob_as(widths, image, salt, WeightFormat::I8RowMajor, -7..=7);
        let expected = images(&row_major, 0..6);
        for format in [WeightFormat::I8Blocked, WeightFormat::I4Blocked] {
            let blob = model_blob_as(widths, image, salt, format, -7..=7);
            assert_eq!(images(&blob, 0..6), expected, "{format:?} for {widths:?}");
        }
        // Full-range int8 weights: row-major and blocked still agree.
        let full = model_blob_as(widths, image, salt, WeightFormat::I8RowMajor, -127..=127);
        let blocked = model_blob_as(widths, image, salt, WeightFormat::I8Blocked, -127..=127);
        assert_eq!(images(&blocked, 0..6), images(&full, 0..6));
    }
}

#[test]
fn blocked_layouts_have_the_documented_sizes() {
    let blob = model_blob_as(
        &[100, 128, 256, 512, 1024, 784],
        square(28),
        3,
        WeightFormat::I4Blocked,
        -7..=7,
    );
    let model = Model::parse(&blob).expect("valid");
    // 100 inputs pad to 104; 784 outputs are already a multiple of 4.
    assert_eq!(model.layers()[0].weights.len(), 128 * 104 / 2);
    assert_eq!(model.layers()[4].weights.len(), 784 * 1024 / 2);
    // The reference generator as int4 fits a 1 MB part with room to spare.
    assert!(blob.len() < 800_000, "{} bytes", blob.len());
}

#[test]
fn weights_outside_the_format_do_not_encode() {
    let weights = [8i8, 0, 0, 0];
    let channel = ChannelRequant {
        bias: 0,
        requant: Requant {
            multiplier: 1 << 30,
            shift: 0,
        },
    };
    let layers = [LayerSpec {
        inputs: 2,
        outputs: 2,
        conv: None,
        weights: &weights,
        weight_format: WeightFormat::I4Blocked,
        channels: &[channel; 2],
        output: OutputSpec::TanhPixels { lut: &[0, 0] },
    }];
    let spec = ModelSpec {
        name: "int4",
        latent_dim: 2,
        image: ImageShape {
            width: 2,
            height: 1,
            channels: 1,
        },
        layers: &layers,
        classes: None,
    };
    assert!(matches!(
        encode(&spec),
        Err(EncodeError::WeightOutOfRange { value: 8, .. })
    ));
    let short = [LayerSpec {
        weights: &weights[..3],
        weight_format: WeightFormat::I8RowMajor,
        ..layers[0].clone()
    }];
    assert!(matches!(
        encode(&ModelSpec {
            layers: &short,
            classes: None,
            ..spec
        }),
        Err(EncodeError::WeightCount {
            expected: 4,
            found: 3,
            ..
        })
    ));
}

#[test]
fn version_one_blobs_are_still_read() {
    let mut blob = small_blob();
    assert!(set_version(&mut blob, OLDEST_FORMAT_VERSION as u8));
    assert!(Model::parse(&blob).is_ok());
}

#[test]
fn encoding_is_deterministic() {
    assert_eq!(reference_blob(), reference_blob());
}

#[test]
fn a_flipped_byte_is_a_checksum_mismatch() {
    let mut blob = reference_blob();
    let at = blob.len() / 2;
    blob[at] ^= 0x01;
    assert!(matches!(
        Model::parse(&blob),
        Err(FormatError::ChecksumMismatch { .. })
    ));
}

#[test]
fn a_flipped_byte_of_a_version_2_blob_is_a_crc_mismatch() {
    let mut blob = reference_blob();
    assert!(set_version(&mut blob, 2));
    assert!(Model::parse(&blob).is_ok());
    let at = blob.len() / 2;
    blob[at] ^= 0x01;
    assert!(matches!(
        Model::parse(&blob),
        Err(FormatError::CrcMismatch { .. })
    ));
}

#[test]
fn versions_2_and_3_migrate_both_ways() {
    let v3 = reference_blob();
    let mut blob = v3.clone();
    assert!(set_version(&mut blob, 2));
    assert_eq!(blob.len() + 12, v3.len());
    assert!(set_version(&mut blob, 3));
    assert_eq!(blob, v3);
}

/// Every corruption of the kinds storage and transfers make is caught: random single bytes,
/// several random bytes, and bursts of random bytes (the probability of missing one is about
/// 2⁻⁶⁴; the sure cases are in `checksum.rs`'s proof and tested exhaustively below).
#[test]
fn random_flips_and_bursts_are_all_caught() {
    // SplitMix64: a fixed, dependency-free sequence of trial corruptions.
    let mut state = 13u64;
    let mut next = move |below: usize| {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % below as u64) as usize
    };
    let blob = reference_blob();
    let mut caught = 0;
    for trial in 0..600 {
        let mut bad = blob.clone();
        match trial % 3 {
            0 => {
                let at = next(bad.len());
                bad[at] ^= 1 + next(255) as u8;
            }
            1 => {
                for _ in 0..2 + next(15) {
                    let at = next(bad.len());
                    bad[at] ^= 1 + next(255) as u8;
                }
            }
            _ => {
                let len = 2 + next(63);
                let start = next(bad.len() - len);
                for byte in &mut bad[start..start + len] {
                    *byte = next(256) as u8;
                }
            }
        }
        if bad == blob {
            continue;
        }
        assert!(Model::parse(&bad).is_err(), "trial {trial} was not caught");
        caught += 1;
    }
    assert!(caught > 590, "{caught}");
}

/// The sure cases: every single-bit flip and every pair of flipped bits in two words (here all
/// pairs within a 64-byte window, at every bit, including the top bits that a 32-bit sum would
/// cancel), and every burst of up to 33 bits, over the whole data section.
#[test]
fn the_word_sums_catch_every_bit_pair_and_short_burst() {
    use mcugan_shared::format::WordSums;
    let small = small_blob();
    let body = &small[..];
    let good = WordSums::of(body);
    let mut bad = body.to_vec();
    for bit in 0..body.len() * 8 {
        bad[bit / 8] ^= 1 << (bit % 8);
        assert_ne!(WordSums::of(&bad), good, "bit {bit}");
        for other in bit + 1..(bit + 512).min(body.len() * 8) {
            if other % 61 != bit % 61 && other % 32 != 31 {
                continue; // a sample of the pairs, every top bit among them
            }
            bad[other / 8] ^= 1 << (other % 8);
            assert_ne!(WordSums::of(&bad), good, "bits {bit} and {other}");
            bad[other / 8] ^= 1 << (other % 8);
        }
        bad[bit / 8] ^= 1 << (bit % 8);
    }
    // Two bits far apart, at the top of their words: a plain 32-bit Fletcher sum misses these.
    let reference = reference_blob();
    let body = &reference[..];
    let good = WordSums::of(body);
    let mut bad = body.to_vec();
    let top = |word: usize| word * 32 + 31;
    for (a, b) in [(0, 2), (1, 5), (3, 3 + 1024), (0, body.len() / 4 - 2)] {
        bad[top(a) / 8] ^= 0x80;
        bad[top(b) / 8] ^= 0x80;
        assert_ne!(WordSums::of(&bad), good, "top bits of words {a} and {b}");
        bad.copy_from_slice(body);
    }
    // Bursts: every start bit of the small blob, lengths 2..=33, every bit of the burst
    // flipped (any pattern is two word differences to the sums).
    let body = &small[..];
    let good = WordSums::of(body);
    let mut bad = body.to_vec();
    for start in 0..body.len() * 8 - 33 {
        for len in [2usize, 7, 16, 31, 32, 33] {
            for bit in start..start + len {
                bad[bit / 8] ^= 1 << (bit % 8);
            }
            assert_ne!(WordSums::of(&bad), good, "burst at bit {start}, {len} bits");
            bad[start / 8..(start + len).div_ceil(8)]
                .copy_from_slice(&body[start / 8..(start + len).div_ceil(8)]);
        }
    }
}

#[test]
fn a_truncated_blob_is_truncated() {
    let blob = reference_blob();
    for cut in [blob.len() - 1, blob.len() / 2, 64, 8] {
        assert_eq!(
            parse_err(&blob[..cut]),
            Some(FormatError::Truncated {
                declared: blob.len() as u32,
                actual: cut
            }),
            "cut at {cut}"
        );
    }
    assert_eq!(parse_err(&blob[..3]), Some(FormatError::BadMagic));
    assert_eq!(parse_err(&blob[..5]), Some(FormatError::MalformedPreamble));
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut blob = small_blob();
    blob.push(0);
    assert!(matches!(
        Model::parse(&blob),
        Err(FormatError::TrailingBytes { .. })
    ));
}

#[test]
fn another_version_is_unsupported() {
    let mut blob = small_blob();
    let next = FORMAT_VERSION as u8 + 1;
    assert!(set_version(&mut blob, next));
    assert_eq!(
        parse_err(&blob),
        Some(FormatError::UnsupportedVersion {
            found: u16::from(next),
            supported: FORMAT_VERSION
        })
    );
}

#[test]
fn bad_magic_is_rejected() {
    let mut blob = small_blob();
    blob[0] = b'X';
    assert_eq!(parse_err(&blob), Some(FormatError::BadMagic));
    assert_eq!(parse_err(b""), Some(FormatError::BadMagic));
    assert_eq!(parse_err(b"PK\x03\x04 zip"), Some(FormatError::BadMagic));
}

#[test]
fn errors_name_the_problem() {
    let text = FormatError::CrcMismatch {
        stored: 1,
        computed: 2,
    }
    .to_string();
    assert!(text.contains("CRC mismatch"), "{text}");
    let text = FormatError::ChecksumMismatch {
        stored_sum: 1,
        stored_weighted: 2,
        computed_sum: 3,
        computed_weighted: 4,
    }
    .to_string();
    assert!(text.contains("checksum mismatch"), "{text}");
    let text = FormatError::UnsupportedVersion {
        found: 9,
        supported: 1,
    }
    .to_string();
    assert!(text.contains("version 9"), "{text}");
}

/// Encodes a spec whose shapes do not chain, bypassing `encode`'s own validation by patching a
/// valid blob: the second layer's input width is rewritten in the header.
#[test]
fn a_broken_layer_chain_is_rejected() {
    // Layers [8 -> 12 -> 16]; the header stores widths as varints (8, 12, 12, 16 all < 128, so
    // one byte each). Find the second layer's inputs (12 after 8,12) and change it to 13.
    let blob = small_blob();
    let model = Model::parse(&blob).expect("valid");
    assert_eq!(model.layers()[1].inputs, 12);
    let mut found = false;
    for at in 0..64 {
        let mut patched = blob.clone();
        if patched[at] == 12 && patched[at + 1] == 16 {
            patched[at] = 13;
            reseal(&mut patched);
            if let Err(FormatError::ShapeMismatch {
                layer,
                expected,
                found: got,
            }) = Model::parse(&patched)
            {
                assert_eq!((layer, expected, got), (1, 12, 13));
                found = true;
                break;
            }
        }
    }
    assert!(
        found,
        "patching the second layer's width gives ShapeMismatch"
    );
}

/// Encodes one zero-weight pixel layer `latent -> outputs` whose channels all use `shift`.
fn encode_one_layer(
    latent: u16,
    outputs: u16,
    image: ImageShape,
    shift: i32,
) -> Result<Vec<u8>, EncodeError> {
    let weights = vec![0i8; usize::from(latent) * usize::from(outputs)];
    let channel = ChannelRequant {
        bias: 0,
        requant: Requant {
            multiplier: 1 << 30,
            shift,
        },
    };
    let channels = vec![channel; usize::from(outputs)];
    let lut = [0u8; 2];
    let layers = [LayerSpec {
        inputs: u32::from(latent),
        outputs: u32::from(outputs),
        conv: None,
        weights: &weights,
        weight_format: WeightFormat::I8RowMajor,
        channels: &channels,
        output: OutputSpec::TanhPixels { lut: &lut },
    }];
    encode(&ModelSpec {
        name: "one-layer",
        latent_dim: latent,
        image,
        layers: &layers,
        classes: None,
    })
}

fn square(side: u16) -> ImageShape {
    ImageShape {
        width: side,
        height: side,
        channels: 1,
    }
}

#[test]
fn an_inconsistent_spec_does_not_encode() {
    assert_eq!(
        encode_one_layer(4, 3, square(2), 0).err(),
        Some(EncodeError::Invalid(FormatError::ImageSizeMismatch {
            expected: 4,
            found: 3
        }))
    );
    // A requantization shift outside the supported range.
    assert_eq!(
        encode_one_layer(4, 4, square(2), 40).err(),
        Some(EncodeError::Invalid(FormatError::BadChannel {
            layer: 0,
            channel: 0
        }))
    );
    assert!(encode_one_layer(4, 4, square(2), 0).is_ok());
}

#[test]
fn widths_beyond_the_buffers_are_rejected() {
    // Dense inputs (a row of weights the kernels read at once) at most MAX_WIDTH.
    assert!(matches!(
        encode_one_layer((MAX_WIDTH + 1) as u16, 4, square(2), 0),
        Err(EncodeError::BadWidth { layer: 0, .. })
    ));
}

#[test]
fn the_generated_image_depends_on_the_seed_only() {
    let blob = small_blob();
    let model = Model::parse(&blob).expect("valid");
    let (mut a, mut b, mut c) = ([0u8; 16], [0u8; 16], [0u8; 16]);
    generate(&model, 11, &mut a).expect("runs");
    generate(&model, 11, &mut b).expect("runs");
    generate(&model, 12, &mut c).expect("runs");
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut wrong = [0u8; 15];
    assert!(generate(&model, 1, &mut wrong).is_err());
}

#[test]
fn array_kinds_are_reported() {
    // Shrink the weight array's declared length by patching its varint (12*8 = 96 < 128).
    let blob = small_blob();
    let mut hit = false;
    for at in 0..80 {
        let mut patched = blob.clone();
        if patched[at] == 96 {
            patched[at] = 95;
            reseal(&mut patched);
            if let Err(FormatError::ArrayLength { layer, array, .. }) = Model::parse(&patched) {
                assert_eq!((layer, array), (0, ArrayKind::Weights));
                hit = true;
                break;
            }
        }
    }
    assert!(hit);
}

fn mutate(blob: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut out = blob.to_vec();
    for &(at, value) in edits {
        let at = at % out.len();
        out[at] = value;
    }
    out.truncate(out.len().saturating_sub(cut % 4));
    out
}

/// Parsing must never panic, and a model that parses must run.
fn parse_and_run(bytes: &[u8]) {
    if let Ok(model) = Model::parse(bytes) {
        let mut pixels = vec![0u8; model.pixel_count()];
        generate(&model, 5, &mut pixels).expect("a parsed model runs");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Model::parse(&bytes);
        let mut with_magic = b"MCGN".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = Model::parse(&with_magic);
        reseal(&mut with_magic);
        parse_and_run(&with_magic);
    }

    #[test]
    fn mutated_blobs_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let blob = small_blob();
        let mutated = mutate(&blob, &edits, cut);
        let _ = Model::parse(&mutated);
    }

    /// Mutations in the preamble and header with a valid CRC reach the structural checks.
    #[test]
    fn mutated_and_resealed_headers_never_panic(
        edits in proptest::collection::vec((0usize..96, any::<u8>()), 1..4),
    ) {
        let blob = small_blob();
        let mut mutated = mutate(&blob, &edits, 0);
        reseal(&mut mutated);
        parse_and_run(&mutated);
    }

    /// Mutations anywhere with a valid CRC: channel records and LUTs included.
    #[test]
    fn mutated_and_resealed_bodies_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let blob = small_blob();
        let mut mutated = mutate(&blob, &edits, 0);
        reseal(&mut mutated);
        parse_and_run(&mutated);
    }
}

/// `bias + Σ w·x` per output channel, the obvious way.
fn naive_sums(weights: &[i8], inputs: usize, x: &[i16], biases: &[i32]) -> Vec<i32> {
    weights
        .chunks_exact(inputs)
        .zip(biases)
        .map(|(row, bias)| {
            bias + row
                .iter()
                .zip(x)
                .map(|(&w, &x)| i32::from(w) * i32::from(x))
                .sum::<i32>()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every layout's kernel gives the naive sums, for any shape and any int8 activations.
    #[test]
    fn dense_kernels_give_the_naive_sums(
        inputs in 1usize..40,
        outputs in 1usize..13,
        seed in any::<u64>(),
        int4 in any::<bool>(),
    ) {
        use mcugan_shared::kernels::dense;
        let mut state = seed | 1;
        let mut next = move || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
        let (low, span) = if int4 { (-7i64, 15u64) } else { (-127, 255) };
        let weights: Vec<i8> = (0..inputs * outputs).map(|_| (low + (next() % span) as i64) as i8).collect();
        let mut x = vec![0i16; MAX_WIDTH];
        for v in x.iter_mut().take(inputs) {
            *v = i16::from(next() as i8);
        }
        let biases: Vec<i32> = (0..outputs).map(|_| (next() % 2001) as i32 - 1000).collect();
        let channels: Vec<ChannelRequant> = biases
            .iter()
            .map(|&bias| ChannelRequant { bias, requant: Requant { multiplier: 1 << 30, shift: 0 } })
            .collect();
        let format = if int4 { WeightFormat::I4Blocked } else { WeightFormat::I8Blocked };
        let lut = [0u8; 2];
        let layers = [LayerSpec {
            inputs: inputs as u32,
            outputs: outputs as u32,
            conv: None,
            weights: &weights,
            weight_format: format,
            channels: &channels,
            output: OutputSpec::TanhPixels { lut: &lut },
        }];
        let blob = encode(&ModelSpec {
            name: "kernel",
            latent_dim: inputs as u16,
            image: ImageShape { width: outputs as u16, height: 1, channels: 1 },
            layers: &layers,
            classes: None,
        }).expect("encodes");
        let model = Model::parse(&blob).expect("valid");
        let layer = &model.layers()[0];
        let mut sums = Vec::new();
        dense(layer.weight_format, layer.weights, layer.channels, inputs, &x, None, |_, acc| sums.push(acc));
        prop_assert_eq!(sums, naive_sums(&weights, inputs, &x, &biases));
    }
}

#[test]
fn the_checksum_is_standard_crc32() {
    let reference = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    for bytes in [&b""[..], b"123456789", &reference_blob()[..]] {
        assert_eq!(
            mcugan_shared::format::CRC32.checksum(bytes),
            reference.checksum(bytes)
        );
    }
    assert_eq!(
        mcugan_shared::format::CRC32.checksum(b"123456789"),
        0xCBF4_3926
    );
}

/// Heavy interleaved rows (1024 inputs of -128 in the odd rows, Σ|w| = 131,072, twice what
/// one pass of the DSP kernel's shifted sums holds) parse and sum exactly: the DSP kernel takes
/// wide layers in chunks (`dsp::I8_CHUNK_BLOCKS`); the firmware test draws such a model under
/// QEMU byte for byte.
#[test]
fn heavy_interleaved_rows_parse_and_sum_exactly() {
    let blob = heavy_rows_blob();
    let model = Model::parse(&blob).expect("valid");
    let layer = &model.layers()[0];
    let x: Vec<i16> = (0..1024)
        .map(|i| if i % 3 == 0 { -128 } else { 127 })
        .collect();
    let mut sums = Vec::new();
    mcugan_shared::kernels::dense(
        layer.weight_format,
        layer.weights,
        layer.channels,
        1024,
        &x,
        None,
        |_, acc| sums.push(acc),
    );
    let weights = heavy_weights();
    let naive: Vec<i32> = (0..4)
        .map(|r| {
            (0..1024)
                .map(|c| i32::from(weights[r * 1024 + c]) * i32::from(x[c]))
                .sum()
        })
        .collect();
    assert_eq!(sums, naive);
}

fn heavy_weights() -> Vec<i8> {
    (0..4 * 1024)
        .map(|i| {
            if (i / 1024) % 2 == 1 {
                -128
            } else {
                ((i % 255) as i16 - 127) as i8
            }
        })
        .collect()
}

/// A 1024 -> 4 -> image 2x2 model whose odd rows are all -128 (which the encoder does not
/// write: it is patched in, as a hostile or foreign encoder could).
pub fn heavy_rows_blob() -> Vec<u8> {
    let weights: Vec<i8> = heavy_weights().iter().map(|&w| w.max(-127)).collect();
    let channel = ChannelRequant {
        bias: 0,
        requant: Requant {
            multiplier: 1 << 30,
            shift: 0,
        },
    };
    let layers = [LayerSpec {
        inputs: 1024,
        outputs: 4,
        conv: None,
        weights: &weights,
        weight_format: WeightFormat::I8Blocked,
        channels: &[channel; 4],
        output: OutputSpec::TanhPixels { lut: &[0, 255] },
    }];
    let spec = ModelSpec {
        name: "heavy",
        latent_dim: 1024,
        image: ImageShape {
            width: 2,
            height: 2,
            channels: 1,
        },
        layers: &layers,
        classes: None,
    };
    let mut blob = encode(&spec).expect("encodes");
    let (start, len) = {
        let model = Model::parse(&blob).expect("valid");
        let weights = model.layers()[0].weights;
        (
            weights.as_ptr() as usize - blob.as_ptr() as usize,
            weights.len(),
        )
    };
    // Odd bytes of the interleaved layout are the odd rows' weights.
    for at in (start + 1..start + len).step_by(2) {
        blob[at] = (-128i8) as u8;
    }
    reseal(&mut blob);
    blob
}

/// The fuzz corpus (`fuzz/corpus/parse_model`): every seed parses without a panic, and a model
/// that parses runs. New crashes found by `cargo fuzz` land there as regression seeds.
fn corpus_seeds() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_model");
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus seed reads"))
        })
        .collect();
    seeds.sort();
    seeds
}

#[test]
fn every_fuzz_corpus_seed_parses_without_panic() {
    let seeds = corpus_seeds();
    assert!(!seeds.is_empty(), "the fuzz corpus is empty");
    for (_, bytes) in &seeds {
        parse_and_run(bytes);
    }
    // A small valid model is among them, so the fuzzer starts from something that parses.
    assert!(seeds
        .iter()
        .any(|(name, bytes)| name.starts_with("tiny-valid") && Model::parse(bytes).is_ok()));
}

/// A header image of 33025 x 65026 x 2 = 2^32 + 4 pixels would wrap to 4 in `u32`
/// and pass as the output of a 1 -> 4 layer: it is refused.
#[test]
fn an_image_whose_pixel_count_overflows_32_bits_is_refused() {
    let (_, blob) = corpus_seeds()
        .into_iter()
        .find(|(name, _)| name == "image-pixels-overflow-u32.mcg")
        .expect("the regression seed is in the corpus");
    assert_eq!(blob.len(), 118);
    let err = parse_err(&blob).expect("refused");
    assert_eq!(
        err,
        FormatError::BadImageSize {
            width: 33025,
            height: 65026,
            channels: 2,
            pixels: (1 << 32) + 4,
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("33025x65026x2") && text.contains("4294967300"),
        "{text}"
    );
}

#[test]
fn images_beyond_the_pixel_bound_or_empty_are_refused() {
    // One channel more than 64x64 RGB.
    let too_large = ImageShape {
        width: 64,
        height: 64,
        channels: 4,
    };
    assert_eq!(
        encode_one_layer(4, 4 * 4096, too_large, 0).err(),
        Some(EncodeError::Invalid(FormatError::BadImageSize {
            width: 64,
            height: 64,
            channels: 4,
            pixels: 16384,
        }))
    );
    let empty = ImageShape {
        width: 4,
        height: 0,
        channels: 1,
    };
    assert!(matches!(
        encode_one_layer(4, 4, empty, 0),
        Err(EncodeError::Invalid(FormatError::BadImageSize {
            pixels: 0,
            ..
        }))
    ));
    // The largest image the format holds: 64x64 RGB, from one dense layer (format version 5,
    // since its 12,288 outputs are more than versions 3 and 4 hold).
    let rgb = ImageShape {
        width: 64,
        height: 64,
        channels: 3,
    };
    let blob = encode_one_layer(4, 3 * 4096, rgb, 0).unwrap();
    assert_eq!(blob[4], 5, "format version");
    assert_eq!(MAX_IMAGE_PIXELS, 3 * 4096);
    // A 64x64 grayscale model stays version 3.
    assert_eq!(encode_one_layer(4, 4096, square(64), 0).unwrap()[4], 3);
}

proptest! {
    /// The size arithmetic is exact for every shape the header can hold (on 32-bit targets too:
    /// CI runs these tests for i686), and accepts exactly the products in 1..=MAX_IMAGE_PIXELS.
    #[test]
    fn pixel_counts_are_exact_for_every_storable_shape(
        width in any::<u16>(),
        height in any::<u16>(),
        channels in any::<u8>(),
    ) {
        let shape = ImageShape { width, height, channels };
        let exact = u128::from(width) * u128::from(height) * u128::from(channels);
        prop_assert_eq!(u128::from(shape.pixel_count()), exact);
        let accepted = shape.checked_pixel_count();
        prop_assert_eq!(accepted.is_some(), (1..=MAX_IMAGE_PIXELS as u128).contains(&exact));
        if let Some(pixels) = accepted {
            prop_assert_eq!(pixels as u128, exact);
        }
    }
}

/// Inference in caller-sized buffers: enough for the model's widest input runs and draws what
/// `generate` draws; too few entries is a named error, not a panic.
#[test]
fn activation_buffers_must_hold_the_widest_layer_input() {
    use mcugan_shared::{generate_in, ImageRequest, InferenceError};
    let blob = small_blob(); // 8 -> 12 -> 16
    let model = Model::parse(&blob).unwrap();
    assert_eq!(model.arena_len(), 12); // the widest hidden tensor
    assert_eq!(model.scratch_len(), 16); // 12 inputs rounded up to a column block
    let mut want = vec![0u8; 16];
    generate(&model, 3, &mut want).unwrap();
    let mut got = vec![0u8; 16];
    generate_in::<12, 16>(&model, ImageRequest::seed(3), &mut got, &mut ()).unwrap();
    assert_eq!(got, want);
    assert_eq!(
        generate_in::<8, 16>(&model, ImageRequest::seed(3), &mut got, &mut ()),
        Err(InferenceError::ActivationBuffers {
            needed: 12,
            capacity: 8
        })
    );
    assert_eq!(
        generate_in::<12, 8>(&model, ImageRequest::seed(3), &mut got, &mut ()),
        Err(InferenceError::ScratchBuffer {
            needed: 16,
            capacity: 8
        })
    );
}

/// Hidden layers wider than the 1,024 entries the buffers once had: the host's `generate`
/// holds them; buffers sized for a narrower model refuse by name.
#[test]
fn hidden_layers_up_to_max_width_run() {
    use mcugan_shared::{generate_in, ImageRequest, InferenceError};
    let blob = model_blob(&[8, 2048, 16], square(4), 5);
    let model = Model::parse(&blob).unwrap();
    assert_eq!((model.arena_len(), model.scratch_len()), (2048, 2048));
    let mut pixels = vec![0u8; 16];
    generate(&model, 1, &mut pixels).unwrap();
    let mut again = vec![0u8; 16];
    generate_in::<2048, 2048>(&model, ImageRequest::seed(1), &mut again, &mut ()).unwrap();
    assert_eq!(pixels, again);
    assert!(matches!(
        generate_in::<1024, 2048>(&model, ImageRequest::seed(1), &mut again, &mut ()),
        Err(InferenceError::ActivationBuffers { needed: 2048, .. })
    ));
}

/// The seeds of the stream fuzzer (`fuzz/corpus/stream_records`) decode into records or stop at
/// a clean error.
#[test]
fn the_stream_corpus_decodes_or_stops_cleanly() {
    use mcugan_shared::stream::RecordReader;
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/stream_records");
    let mut complete = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let records: Vec<_> = RecordReader::new(&bytes).unwrap().collect();
        if records.iter().all(Result::is_ok) {
            complete += 1;
        }
    }
    assert_eq!(
        complete, 1,
        "one seed is whole, one is cut inside its image"
    );
}
