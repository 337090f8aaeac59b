//! Conditional models (format version 4): the class table's round trip, inference by
//! `(seed, class)`, and every way a class table or a request can be wrong.

use mcugan_shared::encode::{encode, reseal, ClassTableSpec, LayerSpec, ModelSpec, OutputSpec};
use mcugan_shared::format::{
    ArrayKind, ChannelRequant, Header, Preamble, WeightFormat, CLASS_TABLE_VERSION, FORMAT_VERSION,
};
use mcugan_shared::infer::{run_from_input, run_from_latent};
use mcugan_shared::latent::sample_latent;
use mcugan_shared::{
    generate, generate_request, FormatError, ImageRequest, ImageShape, InferenceError, Model,
    Requant,
};
use proptest::prelude::*;

const LATENT: u16 = 6;
const CLASSES: usize = 3;
const WIDTH: u16 = 4;

/// Deterministic bytes from `salt`.
fn stream(salt: u64) -> impl FnMut() -> u64 {
    let mut state = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// A small model (`[class row, latent] → 12 → 16 pixels`) with `class_codes` as its class
/// table (`None`: unconditional, latent only).
fn blob(class_codes: Option<&[i8]>, format: WeightFormat) -> Vec<u8> {
    let mut next = stream(7);
    let first = LATENT + class_codes.map_or(0, |_| WIDTH);
    let widths = [first, 12, 16];
    let mut weights = Vec::new();
    let mut channels = Vec::new();
    for pair in widths.windows(2) {
        let (i, o) = (usize::from(pair[0]), usize::from(pair[1]));
        weights.push(
            (0..i * o)
                .map(|_| ((next() % 15) as i8) - 7)
                .collect::<Vec<_>>(),
        );
        channels.push(
            (0..o)
                .map(|_| ChannelRequant {
                    bias: (next() % 2001) as i32 - 1000,
                    requant: Requant {
                        multiplier: (1 << 30) + (next() % (1 << 29)) as i32,
                        shift: 6,
                    },
                })
                .collect::<Vec<_>>(),
        );
    }
    let lut: Vec<u8> = (0..256).map(|i| i as u8).collect();
    let layers = [
        LayerSpec {
            inputs: u32::from(widths[0]),
            outputs: u32::from(widths[1]),
            conv: None,
            weights: &weights[0],
            weight_format: format,
            channels: &channels[0],
            output: OutputSpec::LeakyRelu {
                zero_point: -100,
                negative_slope_q31: 429_496_730,
            },
        },
        LayerSpec {
            inputs: u32::from(widths[1]),
            outputs: u32::from(widths[2]),
            conv: None,
            weights: &weights[1],
            weight_format: format,
            channels: &channels[1],
            output: OutputSpec::TanhPixels { lut: &lut },
        },
    ];
    encode(&ModelSpec {
        name: "conditional",
        latent_dim: LATENT,
        image: ImageShape {
            width: 4,
            height: 4,
            channels: 1,
        },
        layers: &layers,
        classes: class_codes.map(|codes| ClassTableSpec {
            width: WIDTH,
            codes,
        }),
    })
    .expect("the test model encodes")
}

/// Class `c`'s row: distinct, and reaching both ends of the code range.
fn table() -> Vec<i8> {
    vec![
        -127, 0, 5, 127, //
        30, -30, 60, -60, //
        1, 2, 3, -128,
    ]
}

fn version(blob: &[u8]) -> u16 {
    postcard::take_from_bytes::<Preamble>(blob)
        .unwrap()
        .0
        .version
}

#[test]
fn the_class_table_round_trips_and_only_conditional_models_are_version_4() {
    let codes = table();
    let conditional = blob(Some(&codes), WeightFormat::I8Blocked);
    // A conditional MLP is written as version 4, the oldest that holds a class table.
    assert_eq!(version(&conditional), CLASS_TABLE_VERSION);
    const { assert!(FORMAT_VERSION > CLASS_TABLE_VERSION) };
    let model = Model::parse(&conditional).unwrap();
    assert_eq!(model.classes(), Some(CLASSES));
    assert_eq!(model.latent_dim(), usize::from(LATENT));
    assert_eq!(model.input_width(), usize::from(LATENT + WIDTH));
    let table = model.class_table().unwrap();
    assert_eq!(table.width(), usize::from(WIDTH));
    for class in 0..CLASSES {
        let row: Vec<i8> = table.codes(class).unwrap().collect();
        assert_eq!(row, codes[class * 4..class * 4 + 4]);
    }
    assert!(table.row(CLASSES).is_none());

    // An unconditional model is written as version 3, as before the class table existed.
    let plain = blob(None, WeightFormat::I8Blocked);
    assert_eq!(version(&plain), CLASS_TABLE_VERSION - 1);
    let model = Model::parse(&plain).unwrap();
    assert_eq!((model.classes(), model.input_width()), (None, 6));
}

#[test]
fn a_class_draws_its_row_before_the_seed_latent_vector() {
    let codes = table();
    for format in [
        WeightFormat::I8RowMajor,
        WeightFormat::I8Blocked,
        WeightFormat::I4Blocked,
    ] {
        let bytes = blob(Some(&codes), format);
        let model = Model::parse(&bytes).unwrap();
        let mut images = Vec::new();
        for class in 0..CLASSES as u16 {
            for seed in [0u32, 1, 99] {
                let mut drawn = [0u8; 16];
                generate_request(&model, ImageRequest::class(seed, class), &mut drawn).unwrap();
                let mut input: Vec<i8> =
                    codes[usize::from(class) * 4..usize::from(class) * 4 + 4].to_vec();
                let mut latent = [0i8; LATENT as usize];
                sample_latent(seed, &mut latent);
                input.extend_from_slice(&latent);
                let mut expected = [0u8; 16];
                run_from_input(&model, &input, &mut expected).unwrap();
                assert_eq!(drawn, expected, "{format:?}, class {class}, seed {seed}");
                images.push(drawn);
            }
        }
        // The class changes the image: the three classes of one seed differ.
        assert!(
            images[0] != images[3] && images[3] != images[6],
            "{format:?}"
        );
    }
}

#[test]
fn requests_that_do_not_fit_the_model_are_named_errors() {
    let codes = table();
    let bytes = blob(Some(&codes), WeightFormat::I8Blocked);
    let model = Model::parse(&bytes).unwrap();
    let mut pixels = [0u8; 16];
    assert_eq!(
        generate(&model, 3, &mut pixels),
        Err(InferenceError::ClassRequired { classes: 3 })
    );
    assert_eq!(
        generate_request(&model, ImageRequest::class(3, 3), &mut pixels),
        Err(InferenceError::ClassOutOfRange {
            class: 3,
            classes: 3
        })
    );
    assert_eq!(
        run_from_latent(&model, &[0; 6], &mut pixels),
        Err(InferenceError::ClassRequired { classes: 3 })
    );
    assert_eq!(
        run_from_input(&model, &[0; 6], &mut pixels),
        Err(InferenceError::InputSize {
            expected: 10,
            found: 6
        })
    );
    let plain_bytes = blob(None, WeightFormat::I8Blocked);
    let plain = Model::parse(&plain_bytes).unwrap();
    assert_eq!(
        generate_request(&plain, ImageRequest::class(3, 0), &mut pixels),
        Err(InferenceError::NotConditional)
    );
    // The default request of a seed: class `seed mod classes`, none when unconditional.
    assert_eq!(
        ImageRequest::default_for(14, Some(3)),
        ImageRequest::class(14, 2)
    );
    assert_eq!(ImageRequest::default_for(14, None), ImageRequest::seed(14));
    generate_request(
        &model,
        ImageRequest::default_for(14, model.classes()),
        &mut pixels,
    )
    .unwrap();
}

/// Rewrites the header of `blob` with `edit`, moves the data section to the next 16-byte
/// boundary after the new header (array offsets are relative to it), and reseals.
fn with_header(blob: &[u8], edit: impl FnOnce(&mut Header<'_>)) -> Vec<u8> {
    use mcugan_shared::format::{DATA_ALIGN, WORD_SUMS_LEN};
    let (preamble, after_preamble) = postcard::take_from_bytes::<Preamble>(blob).unwrap();
    let (mut header, rest) = postcard::take_from_bytes::<Header<'_>>(after_preamble).unwrap();
    let header_end = blob.len() - rest.len();
    let data_start = header_end.div_ceil(DATA_ALIGN) * DATA_ALIGN;
    let data = blob[data_start..blob.len() - WORD_SUMS_LEN].to_vec();
    edit(&mut header);
    let body = postcard::to_allocvec(&header).unwrap();
    let mut blob_len = 0u32;
    loop {
        let mut out = postcard::to_allocvec(&Preamble {
            blob_len,
            ..preamble
        })
        .unwrap();
        out.extend_from_slice(&body);
        while !out.len().is_multiple_of(DATA_ALIGN) {
            out.push(0);
        }
        out.extend_from_slice(&data);
        out.extend_from_slice(&[0; WORD_SUMS_LEN]);
        if out.len() as u32 == blob_len {
            reseal(&mut out);
            return out;
        }
        blob_len = out.len() as u32;
    }
}

#[test]
fn a_broken_class_table_is_refused() {
    let codes = table();
    let good = blob(Some(&codes), WeightFormat::I8Blocked);
    let err = |edit: fn(&mut Header<'_>)| Model::parse(&with_header(&good, edit)).err();

    assert_eq!(
        err(|h| h.classes.as_mut().unwrap().classes = 0),
        Some(FormatError::BadClassTable {
            classes: 0,
            width: 4
        })
    );
    assert_eq!(
        err(|h| h.classes.as_mut().unwrap().width = 0),
        Some(FormatError::BadClassTable {
            classes: 3,
            width: 0
        })
    );
    // One class more than the table holds: its length no longer fits.
    assert_eq!(
        err(|h| h.classes.as_mut().unwrap().classes = 4),
        Some(FormatError::ArrayLength {
            layer: 0,
            array: ArrayKind::ClassTable,
            expected: 16,
            found: 12
        })
    );
    // Wider rows than the first layer takes.
    assert_eq!(
        err(|h| {
            let table = h.classes.as_mut().unwrap();
            table.width = 5;
            table.classes = 2;
            table.table.len = 10;
        }),
        Some(FormatError::ShapeMismatch {
            layer: 0,
            expected: 11,
            found: 10
        })
    );
    // The table may not share bytes with the weights.
    assert_eq!(
        err(|h| {
            let weights = h.layers[0].weights;
            h.classes.as_mut().unwrap().table.offset = weights.offset;
        }),
        Some(FormatError::ArraysOverlap {
            layer: 0,
            array: ArrayKind::Weights
        })
    );
    // Beyond the data section.
    assert_eq!(
        err(|h| h.classes.as_mut().unwrap().table.offset = 1 << 20),
        Some(FormatError::ArrayOutOfBounds {
            layer: 0,
            array: ArrayKind::ClassTable
        })
    );
    // Dropping the table leaves a first layer wider than the latent vector.
    let dropped = with_header(&good, |h| h.classes = None);
    assert_eq!(
        Model::parse(&dropped).err(),
        Some(FormatError::ShapeMismatch {
            layer: 0,
            expected: 6,
            found: 10
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever a corrupted conditional blob holds, parsing never panics, and what parses
    /// draws every class of the table.
    #[test]
    fn corrupted_conditional_blobs_never_panic(at in 0usize..4096, value: u8) {
        let codes = table();
        let mut bytes = blob(Some(&codes), WeightFormat::I8Blocked);
        let at = at % bytes.len();
        bytes[at] = value;
        reseal(&mut bytes);
        let parsed = Model::parse(&bytes);
        if let Ok(model) = &parsed {
            let mut pixels = vec![0u8; model.pixel_count()];
            for class in 0..model.classes().unwrap_or(0).min(300) as u16 {
                prop_assert!(
                    generate_request(model, ImageRequest::class(1, class), &mut pixels).is_ok()
                );
            }
        }
        drop(parsed);
    }
}
