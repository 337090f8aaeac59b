//! ONNX import: a generator exported from PyTorch (or any ONNX writer) — an MLP, a DCGAN of
//! transposed convolutions, `dcgan.py`'s upsampling convolutions — becomes a
//! [`FloatGenerator`] for the quantizer, whose float reference is the ONNX graph itself, run by
//! tract.
//!
//! The phases, one module each:
//!
//! 1. the protobuf ([`interface`], [`ops`]): one latent input `[batch, Z]` or
//!    `[batch, Z, 1, 1]`, one output, supported op types only (every other node named at
//!    once), the batch made 1 (PyTorch's exporters declare a symbolic one);
//! 2. a class-conditional generator in `cgan.py`'s form is cut at its label `Concat`
//!    ([`conditional`]);
//! 3. tract loads the graph (weights inline or in an external `.onnx.data` file beside it,
//!    checked first, [`external`]), types and declutters it: `Gemm` and `MatMul` become `EinSum`s, an inference
//!    `BatchNormalization` a `Mul` and an `Add`, `Resize` a `NearestUpsample`, and the
//!    exporters' shape arithmetic folds away;
//! 4. the walk ([`walk`]) reads the layers off the typed graph;
//! 5. the layers are checked against the graph on one latent vector, and the graph becomes
//!    the float reference ([`reference`]).
//!
//! Anything the chip cannot run is refused with the file, the node's name and op type, and
//! what is supported.

use std::path::Path;
use std::sync::Arc;

use mcugan_float_model::{latent_for_seed, FloatGenerator, FloatReference};
use tract_onnx::prelude::*;

mod checker;
mod conditional;
mod error;
mod external;
mod interface;
mod ops;
mod reference;
mod walk;

pub use checker::{IR_VERSIONS, OPSETS};
pub use error::{ImportError, RefusedNode};
pub use external::{external_data_files, MAX_TENSOR_BYTES, MAX_WEIGHT_BYTES};
pub use ops::SUPPORTED_OPS;

use reference::TractReference;

/// An imported generator: its layers (for the quantizer) and the graph that computes it.
pub struct OnnxGenerator {
    /// The layers, with the tract graph as their float reference.
    pub generator: FloatGenerator,
    /// The ONNX opset the file declares.
    pub opset: i64,
    /// The program that wrote it (`producer_name` and version), when given.
    pub producer: String,
}

/// Imports the generator in the ONNX file at `path` (and the external data files it names,
/// beside it).
pub fn import(path: &Path) -> Result<OnnxGenerator, ImportError> {
    use std::io::Read;
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    // Bounded: weights inline within their limit, plus the graph; a device such as
    // /dev/zero ends in a refusal, not a read without end.
    let max = MAX_WEIGHT_BYTES + (16 << 20);
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(ImportError::NotOnnx {
            path: path.to_path_buf(),
            reason: format!("larger than any generator's ONNX file ({max} bytes)"),
        });
    }
    import_bytes(path, &bytes)
}

/// [`import`] of a file's bytes; `path` names it in errors and resolves external data.
///
/// A panic inside tract on a graph that passed the checks here is caught and refused by name.
/// What cannot be caught in a process (tract overflowing its stack, running out of memory)
/// the CLI contains by importing the file in a child process first (`mcugan check-onnx`).
pub fn import_bytes(path: &Path, bytes: &[u8]) -> Result<OnnxGenerator, ImportError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        import_unguarded(path, bytes)
    })) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(ImportError::Analysis {
                path: path.to_path_buf(),
                reason: format!(
                    "tract-onnx panicked on this graph ({}): the file is refused",
                    message.lines().next().unwrap_or_default()
                ),
            })
        }
    }
}

fn import_unguarded(path: &Path, bytes: &[u8]) -> Result<OnnxGenerator, ImportError> {
    let file = || path.to_path_buf();
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ImportError::NotOnnx {
            path: file(),
            reason: format!("{e:#}"),
        })?;
    let no_graph = || ImportError::NotOnnx {
        path: file(),
        reason: "the model has no graph".into(),
    };
    checker::check_model(path, &proto)?;
    let graph = proto.graph.as_ref().ok_or_else(no_graph)?;
    external::check_weights(path, graph)?;
    let (proto, classes) = match conditional::cut_at_label_concat(path, &proto, graph)? {
        Some((cut, classes)) => (cut, Some(classes)),
        None => (proto, None),
    };
    let graph = proto.graph.as_ref().ok_or_else(no_graph)?;
    let input_shape = interface::check_interface(path, graph)?;
    ops::check_op_types(path, graph)?;
    let onnx_ops: Vec<(String, String)> = graph
        .node
        .iter()
        .map(|n| (n.name.clone(), n.op_type.clone()))
        .collect();
    let proto = interface::with_batch_of_one(proto);

    let analysis = |e: TractError| ImportError::Analysis {
        path: file(),
        reason: error::tract_reason(&e),
    };
    let dir = path.parent().and_then(Path::to_str);
    let parsed = onnx.parse(&proto, dir).map_err(analysis)?;
    let typed = parsed
        .model
        .with_input_fact(0, f32::fact(&input_shape).into())
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(analysis)?;

    let walked = walk::walk(&typed).map_err(|refusal| ImportError::Unsupported {
        path: file(),
        nodes: vec![refusal.into_node(&onnx_ops)],
    })?;
    let plan = typed
        .with_output_outlets(&walked.layer_outlets)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(analysis)?;
    let reference = TractReference {
        plan,
        input_shape: input_shape.clone(),
        source: path.display().to_string(),
    };
    check_layers_reproduce_the_graph(path, &walked.layers, &reference, &input_shape)?;
    let producer = [
        proto.producer_name.as_str(),
        proto.producer_version.as_str(),
    ]
    .iter()
    .filter(|s| !s.is_empty())
    .copied()
    .collect::<Vec<_>>()
    .join(" ");
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(0, |o| o.version);
    let latent_dim: usize = input_shape.iter().product();
    let generator =
        FloatGenerator::with_reference(walked.layers, walked.image, Arc::new(reference));
    let generator = match classes {
        Some(classes) => {
            if classes.width >= latent_dim {
                return Err(ImportError::Interface {
                    path: file(),
                    problem: format!(
                        "the label embedding is {} wide, as wide as the first layer's {} inputs: \
                         no latent vector is left",
                        classes.width, latent_dim
                    ),
                });
            }
            generator.with_classes(classes)
        }
        None => generator,
    };
    Ok(OnnxGenerator {
        generator,
        opset,
        producer,
    })
}

/// Runs the layers read from the graph (this crate's f64 forward pass) and the graph itself
/// (tract) on one latent vector: a layer whose output differs is an importer bug, refused by
/// name rather than quantized into a wrong model.
fn check_layers_reproduce_the_graph(
    path: &Path,
    layers: &[mcugan_float_model::FloatLayer],
    reference: &TractReference,
    input_shape: &[usize],
) -> Result<(), ImportError> {
    let width: usize = input_shape.iter().product();
    let z = latent_for_seed(0x6d63_6761, width);
    let from_graph = reference
        .forward_all(&z)
        .map_err(|e| ImportError::Analysis {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let unchecked = FloatGenerator::new(
        layers.to_vec(),
        mcugan_shared::ImageShape {
            width: 1,
            height: 1,
            channels: 1,
        },
    );
    let from_layers = unchecked.layers_forward_all(&z);
    for (index, (graph, ours)) in from_graph.iter().zip(&from_layers).enumerate() {
        let scale = graph.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = graph
            .iter()
            .zip(ours)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        if graph.len() != ours.len() || worst > 1e-3 * scale {
            return Err(ImportError::Analysis {
                path: path.to_path_buf(),
                reason: format!(
                    "layer {index} as read from the graph does not reproduce it (its outputs \
                     differ by up to {worst:e}): an importer bug, please report it with the file"
                ),
            });
        }
    }
    Ok(())
}
