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

/// tract runs the graph as onnxruntime did (max abs error <= 1e-4), and the importer's dense
/// layers compute the same function (f64 forward pass within 1e-4 of onnxruntime too).
#[test]
fn tract_and_the_dense_layers_match_onnxruntime() {
    for &(name, ..) in IMPORTABLE {
        let g = import(&fixture(name)).unwrap().generator;
        let expected = expected(name);
        assert_eq!(
            expected.output_shape.iter().product::<usize>(),
            g.image.width as usize * g.image.height as usize
        );
        for (z, want) in expected.latents.iter().zip(&expected.outputs) {
            let tract = g.forward(z).unwrap();
            let layers = g.layers_forward_all(z).pop().unwrap();
            for (what, got) in [("tract", &tract), ("dense layers", &layers)] {
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

#[test]
fn a_deconvolution_generator_is_refused_with_every_unsupported_node() {
    let text = refused("refuse-convtranspose.onnx");
    for node in ["/up/up.0/ConvTranspose", "/up/up.3/ConvTranspose"] {
        assert!(
            text.contains(&format!("'{node}' (ConvTranspose)")),
            "{text}"
        );
    }
    assert!(text.contains("supported: Gemm"), "{text}");
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
