use super::*;
use mcugan_shared::ImageShape;

#[test]
fn requant_from_real_is_accurate_and_normalised() {
    for factor in [
        1e-6,
        0.000_123_4,
        0.01,
        0.5,
        0.999_999_999_9,
        1.0,
        3.7,
        1234.5,
    ] {
        let r = requant_from_real(factor).unwrap();
        assert!(
            (1 << 30..=i32::MAX).contains(&r.multiplier),
            "{factor}: {r:?}"
        );
        let back = requant_to_real(r);
        assert!(
            ((back - factor) / factor).abs() < 1e-9,
            "{factor} -> {back}"
        );
    }
    assert!(requant_from_real(0.0).is_err());
    assert!(requant_from_real(f64::NAN).is_err());
    assert!(requant_from_real(1e30).is_err());
}

#[test]
fn requantization_rounds_like_the_real_product() {
    // The chip's integer requantization against round-half-up of the exact real product.
    let r = requant_from_real(0.013_7).unwrap();
    let exact = requant_to_real(r);
    for acc in -100_000..100_000 {
        let expected = (f64::from(acc) * exact + 0.5).floor() as i32;
        assert_eq!(r.apply(acc), expected, "acc {acc}");
    }
}

#[test]
fn activation_quant_covers_its_range() {
    let q = ActivationQuant::covering(-0.4, 5.0);
    assert!((q.round_trip(0.0)).abs() < 1e-9, "zero is exact");
    assert!((q.round_trip(5.0) - 5.0).abs() <= q.scale as f32);
    assert!((q.round_trip(-0.4) + 0.4).abs() <= q.scale as f32);
    // Clipping above the range.
    assert!((q.round_trip(50.0) - 5.0).abs() <= q.scale as f32);
}

fn dense(inputs: usize, outputs: usize, activation: Activation) -> FloatLayer {
    FloatLayer::dense(
        inputs,
        outputs,
        vec![0.01; inputs * outputs],
        vec![0.0; outputs],
        activation,
    )
}

fn quantize_err(layers: Vec<FloatLayer>, image: ImageShape) -> String {
    let model = FloatGenerator::new(layers, image);
    let options = QuantizeOptions {
        calibration_images: 2,
        ..QuantizeOptions::default()
    };
    quantize(&model, &options).unwrap_err().to_string()
}

/// Widths are checked against the format before they are narrowed: 2^18 + 16 outputs are
/// beyond any tensor the format holds, and a dense layer takes at most 4,096 inputs.
#[test]
fn widths_and_images_beyond_the_format_are_refused_before_narrowing() {
    let image = |w: u16, h: u16| ImageShape {
        width: w,
        height: h,
        channels: 1,
    };
    let text = quantize_err(
        vec![
            dense(2, (1 << 18) + 16, Activation::LeakyRelu(0.2)),
            dense((1 << 18) + 16, 16, Activation::Tanh),
        ],
        image(4, 4),
    );
    assert!(
        text.contains("262160 outputs") && text.contains("1..=262144"),
        "{text}"
    );
    let text = quantize_err(
        vec![
            dense(2, 8192, Activation::LeakyRelu(0.2)),
            dense(8192, 16, Activation::Tanh),
        ],
        image(4, 4),
    );
    assert!(
        text.contains("8192 inputs") && text.contains("at most 4096"),
        "{text}"
    );
    let text = quantize_err(
        vec![
            dense(2, 8, Activation::LeakyRelu(0.2)),
            dense(8, 12_289, Activation::Tanh),
        ],
        image(12_289, 1),
    );
    assert!(text.contains("at most 12288 pixels"), "{text}");
    // An image shape that does not hold the last layer's outputs.
    let text = quantize_err(
        vec![
            dense(2, 8, Activation::LeakyRelu(0.2)),
            dense(8, 16, Activation::Tanh),
        ],
        image(5, 5),
    );
    assert!(
        text.contains("5x5x1") && text.contains("16 outputs"),
        "{text}"
    );
    // A hidden Tanh, a LeakyReLU slope of 1 or more.
    let text = quantize_err(
        vec![
            dense(2, 8, Activation::Tanh),
            dense(8, 16, Activation::Tanh),
        ],
        image(4, 4),
    );
    assert!(text.contains("hidden layers must use LeakyReLU"), "{text}");
    let text = quantize_err(
        vec![
            dense(2, 8, Activation::LeakyRelu(1.5)),
            dense(8, 16, Activation::Sigmoid),
        ],
        image(4, 4),
    );
    assert!(text.contains("layer 0"), "{text}");
}

#[test]
fn lut_and_slope_constants() {
    assert_eq!(slope_q31(0.2), 429_496_730);
    assert_eq!(slope_q31(slope_as_written(0.2f32)), 429_496_730);
    assert_eq!(tanh_output_to_gray(-1.0), 0.0);
    assert_eq!(tanh_output_to_gray(1.0), 255.0);
}
