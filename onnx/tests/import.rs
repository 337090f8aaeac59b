//! Every ONNX fixture of `tests/fixtures/onnx` (written by `bench/onnx_fixtures.py` with
//! PyTorch's exporters) imports, and tract's float output equals what onnxruntime recorded;
//! every refused fixture names its nodes.

use std::path::{Path, PathBuf};

use mcugan_float_model::Activation;
use mcugan_onnx::{import, import_bytes, ImportError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/onnx")
        .join(name)
}

#[derive(serde::Deserialize)]
struct Expected {
    output_shape: Vec<usize>,
    latents: Vec<Vec<f32>>,
    outputs: Vec<Vec<f32>>,
}

fn expected(name: &str) -> Expected {
    let path = fixture(&name.replace(".onnx", ".expected.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The importable fixtures: name, latent size, widths (latent first), output activation,
/// hidden slope, image side.
const IMPORTABLE: &[(&str, &[usize], Activation, f32, u16)] = &[
    (
        "gan-digits-opset17.onnx",
        &[100, 128, 256, 512, 1024, 784],
        Activation::Tanh,
        0.2,
        28,
    ),
    (
        "small-gemm-opset11.onnx",
        &[16, 32, 48, 64],
        Activation::Tanh,
        0.1,
        8,
    ),
    (
        "small-matmul-sigmoid-opset13.onnx",
        &[20, 40, 144],
        Activation::Sigmoid,
        0.0,
        12,
    ),
    (
        "small-dynamo-opset18.onnx",
        &[24, 32, 64, 256],
        Activation::Tanh,
        0.2,
        16,
    ),
];

#[test]
fn every_exported_generator_imports_with_its_layers_and_image() {
    for &(name, widths, output, slope, side) in IMPORTABLE {
        let imported = import(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = &imported.generator;
        let found: Vec<usize> = std::iter::once(g.latent_dim())
            .chain(g.layers.iter().map(|l| l.outputs))
            .collect();
        assert_eq!(found, widths, "{name}");
        assert_eq!(g.output_activation(), output, "{name}");
        for layer in &g.layers[..g.layers.len() - 1] {
            assert_eq!(layer.activation, Activation::LeakyRelu(slope), "{name}");
        }
        assert_eq!(
            (g.image.width, g.image.height, g.image.channels),
            (side, side, 1)
        );
        assert!(g.reference_name().contains("tract"), "{name}");
        assert!(imported.opset >= 11, "{name}");
    }
}

/// The convolutional fixtures: file, the default export whose onnxruntime outputs it is checked
/// against (the same weights), each layer's kind (`dense`, `conv`, `up+conv`: an upsampling
/// folded into the convolution, `convT`), and the image (width, height, channels).
type ConvFixture = (
    &'static str,
    &'static str,
    &'static [&'static str],
    (u16, u16, u8),
);

const CONV: &[ConvFixture] = &[
    (
        "dcgan-digits-dynamo.onnx",
        "dcgan-digits-dynamo",
        &["dense", "convT", "convT"],
        (28, 28, 1),
    ),
    (
        "dcgan-digits-torchscript-opset17.onnx",
        "dcgan-digits-dynamo",
        &["dense", "convT", "convT"],
        (28, 28, 1),
    ),
    (
        "readme/my_generator.onnx",
        "readme/my_generator",
        &["dense", "up+conv", "up+conv", "conv"],
        (32, 32, 1),
    ),
    (
        "dcganpy-digits-torchscript-opset11.onnx",
        "readme/my_generator",
        &["dense", "up+conv", "up+conv", "conv"],
        (32, 32, 1),
    ),
    (
        "dcganpy-digits-torchscript-opset10.onnx",
        "readme/my_generator",
        &["dense", "up+conv", "up+conv", "conv"],
        (32, 32, 1),
    ),
    (
        "rgb-shapes-dynamo.onnx",
        "rgb-shapes-dynamo",
        &["dense", "convT", "up+conv"],
        (16, 16, 3),
    ),
    (
        "rgb-shapes-torchscript-opset13.onnx",
        "rgb-shapes-dynamo",
        &["dense", "convT", "up+conv"],
        (16, 16, 3),
    ),
    (
        "small-deconv-opset13.onnx",
        "small-deconv-opset13",
        &["dense", "convT", "convT"],
        (16, 16, 1),
    ),
    (
        "small-deconv-dynamo-unoptimized.onnx",
        "small-deconv-opset13",
        &["dense", "convT", "convT"],
        (16, 16, 1),
    ),
];

fn kind(layer: &mcugan_float_model::FloatLayer) -> &'static str {
    match &layer.conv {
        None => "dense",
        Some(c) if c.transposed => "convT",
        Some(c) if c.upsample > 1 => "up+conv",
        Some(_) => "conv",
    }
}

#[test]
fn every_convolutional_generator_imports_with_its_layers_and_image() {
    for &(name, _, kinds, (width, height, channels)) in CONV {
        let imported = import(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let g = &imported.generator;
        let found: Vec<&str> = g.layers.iter().map(kind).collect();
        assert_eq!(found, kinds, "{name}");
        assert_eq!(
            (g.image.width, g.image.height, g.image.channels),
            (width, height, channels),
            "{name}"
        );
        // BatchNorm folded: no layer but convolutions and dense layers, the hidden ones with
        // an activation or, before a convolution, none.
        assert!(g.output_activation().makes_pixels(), "{name}");
    }
}

/// What PyTorch's default exporter writes, as a user gets it: opset 18 or newer, the weights
/// in NAME.onnx.data beside the graph, a symbolic batch in the input and the output.
#[test]
fn the_default_exporters_files_import_with_their_external_data() {
    for name in [
        "readme/my_generator.onnx",
        "dcgan-digits-dynamo.onnx",
        "rgb-shapes-dynamo.onnx",
    ] {
        let path = fixture(name);
        let data = PathBuf::from(format!("{}.data", path.display()));
        assert!(data.is_file(), "{name}: no external data file");
        assert!(
            std::fs::metadata(&data).unwrap().len() > std::fs::metadata(&path).unwrap().len(),
            "{name}: the weights are not in the external data"
        );
        let imported = import(&path).unwrap();
        assert!(imported.opset >= 18, "{name}: opset {}", imported.opset);
    }
    // Without its data file the graph is refused by name, not a panic.
    let work = tempfile::tempdir().unwrap();
    let alone = work.path().join("my_generator.onnx");
    std::fs::copy(fixture("readme/my_generator.onnx"), &alone).unwrap();
    let err = import(&alone).err().expect("refused");
    assert!(err.to_string().contains("my_generator.onnx"), "{err}");
}

/// tract runs the graph as onnxruntime did (max abs error <= 1e-4), and the importer's layers
/// compute the same function (f64 forward pass within 1e-4 of onnxruntime too).
#[test]
fn tract_and_the_layers_match_onnxruntime() {
    let mlps = IMPORTABLE
        .iter()
        .map(|&(name, ..)| (name, name.trim_end_matches(".onnx")));
    let convs = CONV.iter().map(|&(name, recorded, ..)| (name, recorded));
    for (name, recorded) in mlps.chain(convs) {
        let g = import(&fixture(name)).unwrap().generator;
        let expected = expected(&format!("{recorded}.onnx"));
        assert_eq!(
            expected.output_shape.iter().product::<usize>(),
            g.image.pixel_count() as usize
        );
        for (z, want) in expected.latents.iter().zip(&expected.outputs) {
            let tract = g.forward(z).unwrap();
            let layers = g.layers_forward_all(z).pop().unwrap();
            for (what, got) in [("tract", &tract), ("layers", &layers)] {
                assert_eq!(got.len(), want.len(), "{name} {what}");
                let max = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(max <= 1e-4, "{name} {what}: max abs error {max}");
            }
        }
    }
}

fn refused(name: &str) -> String {
    match import(&fixture(name)) {
        Ok(_) => panic!("{name} imported"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(name),
                "{name}: the error does not name the file: {text}"
            );
            text
        }
    }
}

/// Convolutions the chip does not run, each refused naming its node and what is wrong.
#[test]
fn convolutions_the_chip_cannot_run_are_refused_by_name() {
    for (name, node, words) in [
        (
            "refuse-conv-grouped.onnx",
            "'/conv/Conv' (Conv)",
            "2 groups",
        ),
        (
            "refuse-conv-dilated.onnx",
            "'/conv/Conv' (Conv)",
            "dilation 1",
        ),
        ("refuse-conv-9x9.onnx", "'/conv/Conv' (Conv)", "at most 7"),
        ("refuse-conv-bilinear.onnx", "'/Resize' (Resize)", "nearest"),
        (
            "refuse-conv-batchnorm-after-activation.onnx",
            "'/Mul' (Mul)",
            "16384 inputs",
        ),
        ("refuse-conv-two-channels.onnx", "(Tanh)", "2 channels"),
    ] {
        let text = refused(name);
        assert!(
            text.contains(node) && text.contains(words),
            "{name}: {text}"
        );
        assert!(text.contains("supported: Gemm"), "{text}");
    }
}

#[test]
fn two_unsupported_nodes_are_listed_at_once() {
    let text = refused("refuse-two-unsupported.onnx");
    assert!(text.contains("2 unsupported node(s)"), "{text}");
    assert!(text.contains("'hidden_softmax' (Softmax)"), "{text}");
    assert!(text.contains("'output_exp' (Exp)"), "{text}");
}

#[test]
fn a_second_output_or_input_is_refused() {
    let text = refused("refuse-two-outputs.onnx");
    assert!(text.contains("2 outputs (a, b)"), "{text}");
    let text = refused("refuse-weight-input.onnx");
    assert!(text.contains("2 inputs (z, w_in)"), "{text}");
    assert!(text.contains("initializers or constants"), "{text}");
}

#[test]
fn an_initializer_that_does_not_fit_its_gemm_is_refused_naming_the_node() {
    let text = refused("refuse-bad-initializer.onnx");
    assert!(text.contains("gemm_misfit"), "{text}");
}

#[test]
fn truncated_and_foreign_files_are_refused() {
    let bytes = std::fs::read(fixture("small-gemm-opset11.onnx")).unwrap();
    let cut = Path::new("cut.onnx");
    for len in [bytes.len() / 2, 100, 7] {
        let err = import_bytes(cut, &bytes[..len]).err().expect("refused");
        assert!(
            matches!(
                err,
                ImportError::NotOnnx { .. } | ImportError::Interface { .. }
            ),
            "{len}: {err}"
        );
        assert!(err.to_string().contains("cut.onnx"), "{err}");
    }
    let err = import_bytes(Path::new("x.onnx"), b"MCGN this is a model blob")
        .err()
        .unwrap();
    assert!(matches!(err, ImportError::NotOnnx { .. }), "{err}");
    let err = import(Path::new("/nonexistent/g.onnx")).err().unwrap();
    assert!(matches!(err, ImportError::Io { .. }), "{err}");
}

#[test]
fn a_hidden_tanh_is_refused_naming_what_follows_it() {
    let text = refused("refuse-hidden-tanh.onnx");
    assert!(text.contains("'fc2' (Gemm)"), "{text}");
    assert!(text.contains("only to the last layer"), "{text}");
}

#[test]
fn an_input_that_is_not_one_latent_vector_is_refused() {
    let text = refused("refuse-image-input.onnx");
    assert!(
        text.contains("input 'z' is not a single float vector"),
        "{text}"
    );
}

#[derive(serde::Deserialize)]
struct ConditionalExpected {
    latents: Vec<Vec<f32>>,
    labels: Vec<u16>,
    outputs: Vec<Vec<f32>>,
}

/// cgan.py's generator as PyTorch exports it (inputs `z` and an int64 `label`, `Gather` on the
/// embedding table, `Concat` before the first `Gemm`): the table becomes the class embedding,
/// the graph is cut at the `Concat`, and tract's image for (z, label) is onnxruntime's.
#[test]
fn a_conditional_generator_imports_with_its_class_embedding() {
    let name = "cgan-digits-opset17.onnx";
    let imported = import(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let g = &imported.generator;
    let classes = g.classes.as_ref().expect("a class embedding");
    assert_eq!((classes.classes, classes.width), (10, 10));
    assert_eq!((g.latent_dim(), g.layers[0].inputs), (100, 110));
    let widths: Vec<usize> = g.layers.iter().map(|l| l.outputs).collect();
    assert_eq!(widths, [128, 256, 512, 1024, 784]);
    assert_eq!(g.output_activation(), Activation::Tanh);

    let path = fixture("cgan-digits-opset17.expected.json");
    let expected: ConditionalExpected =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for ((z, &label), want) in expected
        .latents
        .iter()
        .zip(&expected.labels)
        .zip(&expected.outputs)
    {
        let row = classes.row(usize::from(label)).unwrap();
        let input: Vec<f32> = row.iter().chain(z).copied().collect();
        let tract = g.forward(&input).unwrap();
        let layers = g.layers_forward_all(&input).pop().unwrap();
        for (what, got) in [("tract", &tract), ("dense layers", &layers)] {
            let max = got
                .iter()
                .zip(want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max <= 1e-4, "label {label}, {what}: max abs error {max}");
        }
    }
}

#[test]
fn a_label_row_after_the_latent_vector_is_refused_saying_why() {
    let text = refused("refuse-label-after-latent.onnx");
    assert!(
        text.contains("join") && text.contains("the row first"),
        "{text}"
    );
}
