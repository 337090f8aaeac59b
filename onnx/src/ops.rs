//! The ONNX operators a generator the chip runs may use, checked on the protobuf before tract
//! sees the graph: every node of another type is named at once.

use std::path::Path;

use tract_onnx::pb;

use crate::error::{ImportError, RefusedNode};

/// The ONNX operators an importable generator may use, and what each may do.
pub const SUPPORTED_OPS: &[(&str, &str)] = &[
    (
        "Gemm",
        "a dense layer (any transB, alpha, beta); constant weight and bias",
    ),
    (
        "MatMul",
        "a dense layer with a constant weight, usually followed by Add",
    ),
    (
        "Conv",
        "2-D, kernel up to 7x7, stride 1 to 4, any padding, no dilation, one group; constant \
         weight and bias",
    ),
    (
        "ConvTranspose",
        "2-D, kernel up to 7x7, stride 1 to 4, padding, output padding, one group; on a 1x1 \
         input (a DCGAN's first layer) it is a dense layer",
    ),
    (
        "Resize, Upsample",
        "nearest, by the same integer factor (2 to 4) along rows and columns, right before a \
         Conv of stride 1",
    ),
    (
        "Add, Sub, Mul, Div",
        "with a constant operand: biases, scales (per channel after a convolution)",
    ),
    (
        "BatchNormalization",
        "inference form, folded into the layer before it",
    ),
    (
        "LeakyRelu, Relu",
        "hidden activations (any alpha in [0, 1)); a hidden layer may also have none",
    ),
    ("Tanh, Sigmoid", "the output activation, last layer only"),
    ("Identity, Dropout", "no-ops in inference"),
    (
        "Reshape, Flatten, Unsqueeze, Squeeze",
        "between dense layers and convolutions, at the output, and shape arithmetic that \
         folds to constants",
    ),
    (
        "Constant, Shape, Gather, Concat, Cast, Slice, Mod",
        "shape arithmetic that folds to constants",
    ),
    (
        "Gather + Concat on an integer label input",
        "a class-conditional generator (cgan.py): the label's row of a constant [classes, width] \
         table, concatenated before the latent vector",
    ),
];

/// ONNX op types accepted by the first pass; the walk of the typed graph checks how they are
/// used.
const ACCEPTED_OP_TYPES: &[&str] = &[
    "Gemm",
    "MatMul",
    "Conv",
    "ConvTranspose",
    "Resize",
    "Upsample",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "LeakyRelu",
    "Relu",
    "Tanh",
    "Sigmoid",
    "Identity",
    "Dropout",
    "Reshape",
    "Flatten",
    "Unsqueeze",
    "Squeeze",
    "Constant",
    "Shape",
    "Gather",
    "Concat",
    "Cast",
    "Slice",
    "Mod",
];

/// The supported operators, in one line.
pub(crate) fn supported_list() -> String {
    SUPPORTED_OPS
        .iter()
        .map(|(ops, _)| *ops)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lists every node whose op type is not one a generator the chip runs uses.
pub(crate) fn check_op_types(path: &Path, graph: &pb::GraphProto) -> Result<(), ImportError> {
    let nodes: Vec<RefusedNode> = graph
        .node
        .iter()
        .filter(|n| {
            let standard = n.domain.is_empty() || n.domain == "ai.onnx";
            !standard || !ACCEPTED_OP_TYPES.contains(&n.op_type.as_str())
        })
        .map(|n| RefusedNode {
            name: n.name.clone(),
            op_type: n.op_type.clone(),
            problem: "this operator is not part of a generator the chip runs".into(),
        })
        .collect();
    if nodes.is_empty() {
        Ok(())
    } else {
        Err(ImportError::Unsupported {
            path: path.to_path_buf(),
            nodes,
        })
    }
}
