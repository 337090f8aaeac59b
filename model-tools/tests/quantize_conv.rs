//! Convolutional generators through the quantizer: the int8 model the chip runs draws what
//! the float model draws (PSNR), for transposed convolutions, upsampling convolutions, dense
//! layers meeting convolutions, and RGB images (channels last on the chip).

use mcugan_model_tools::quantize::{
    quantize, Activation, Conv2d, FloatGenerator, FloatLayer, QuantizeOptions,
};
use mcugan_model_tools::simulate::compare;
use mcugan_shared::{ImageShape, Model};

/// Deterministic weights of a smooth, trained-looking spread.
fn values(n: usize, salt: u64, scale: f32) -> Vec<f32> {
    let mut state = salt.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // The sum of three uniforms: roughly normal.
            let u = |s: u64| ((s >> 11) as f64 / (1u64 << 53) as f64) as f32 - 0.5;
            (u(state) + u(state.rotate_left(21)) + u(state.rotate_left(42))) * scale
        })
        .collect()
}

fn dense(inputs: usize, outputs: usize, activation: Activation, salt: u64) -> FloatLayer {
    let scale = 2.0 / (inputs as f32).sqrt();
    FloatLayer::dense(
        inputs,
        outputs,
        values(inputs * outputs, salt, scale),
        values(outputs, salt + 1, 0.1),
        activation,
    )
}

fn conv(geometry: Conv2d, activation: Activation, salt: u64) -> FloatLayer {
    let scale = 2.0 / (geometry.row_len() as f32).sqrt();
    let weights = values(geometry.out_channels * geometry.row_len(), salt, scale);
    let bias = values(geometry.out_channels, salt + 1, 0.1);
    FloatLayer::convolution(geometry, weights, bias, activation)
}

fn geometry(
    transposed: bool,
    (cin, ih, iw): (usize, usize, usize),
    (cout, oh, ow): (usize, usize, usize),
    kernel: usize,
    stride: usize,
    padding: usize,
    upsample: usize,
) -> Conv2d {
    Conv2d {
        transposed,
        in_channels: cin,
        out_channels: cout,
        input: [ih, iw],
        output: [oh, ow],
        kernel: [kernel, kernel],
        stride: [stride, stride],
        padding: [padding, padding],
        upsample,
    }
}

fn image(width: u16, height: u16, channels: u8) -> ImageShape {
    ImageShape {
        width,
        height,
        channels,
    }
}

/// Quantizes `model` and returns the int8 model's PSNR against the float model over 32 seeds.
fn psnr(model: &FloatGenerator) -> f64 {
    let quantized = quantize(
        model,
        &QuantizeOptions {
            calibration_images: 256,
            ..QuantizeOptions::default()
        },
    )
    .unwrap();
    let parsed = Model::parse(&quantized.blob).unwrap();
    assert_eq!(parsed.layers().len(), model.layers.len());
    let seeds: Vec<u32> = (0..32).collect();
    compare(model, &quantized.blob, &seeds).unwrap().psnr_db
}

#[test]
fn a_dcgan_of_transposed_convolutions_quantizes_well() {
    // DCGAN's shape: a latent vector as a 1x1 map, ConvTranspose 4x4 to 4x4, then doubling.
    let model = FloatGenerator::new(
        vec![
            conv(
                geometry(true, (16, 1, 1), (12, 4, 4), 4, 1, 0, 1),
                Activation::LeakyRelu(0.2),
                1,
            ),
            conv(
                geometry(true, (12, 4, 4), (8, 8, 8), 4, 2, 1, 1),
                Activation::LeakyRelu(0.0),
                3,
            ),
            conv(
                geometry(true, (8, 8, 8), (1, 16, 16), 4, 2, 1, 1),
                Activation::Tanh,
                5,
            ),
        ],
        image(16, 16, 1),
    );
    let db = psnr(&model);
    assert!(db >= 30.0, "PSNR {db:.1} dB");
}

#[test]
fn dcgan_py_blocks_of_dense_upsample_and_convolution_quantize_well_in_rgb() {
    // dcgan.py's pattern: Linear -> (BatchNorm) -> Upsample -> Conv 3x3 -> LeakyReLU ->
    // Upsample -> Conv -> LeakyReLU -> Conv -> Tanh, here with three output channels.
    let model = FloatGenerator::new(
        vec![
            dense(10, 8 * 4 * 4, Activation::Identity, 1),
            conv(
                geometry(false, (8, 4, 4), (8, 8, 8), 3, 1, 1, 2),
                Activation::LeakyRelu(0.2),
                3,
            ),
            conv(
                geometry(false, (8, 8, 8), (6, 16, 16), 3, 1, 1, 2),
                Activation::LeakyRelu(0.2),
                5,
            ),
            conv(
                geometry(false, (6, 16, 16), (3, 16, 16), 3, 1, 1, 1),
                Activation::Tanh,
                7,
            ),
        ],
        image(16, 16, 3),
    );
    let db = psnr(&model);
    assert!(db >= 30.0, "PSNR {db:.1} dB");
}

#[test]
fn dense_layers_after_a_convolution_and_into_an_rgb_image_are_laid_out_channels_last() {
    // A dense layer reading a convolution's tensor (its columns permuted) and drawing an RGB
    // image (its rows permuted): a wrong order would scramble the image, far below 30 dB.
    let model = FloatGenerator::new(
        vec![
            dense(8, 2 * 4 * 4, Activation::LeakyRelu(0.2), 11),
            conv(
                geometry(false, (2, 4, 4), (3, 2, 2), 3, 2, 1, 1),
                Activation::LeakyRelu(0.2),
                13,
            ),
            dense(12, 3 * 4 * 4, Activation::Sigmoid, 15),
        ],
        image(4, 4, 3),
    );
    let db = psnr(&model);
    assert!(db >= 30.0, "PSNR {db:.1} dB");
}
