//! ONNX import: an MLP generator exported from PyTorch (or any ONNX writer) becomes a
//! [`FloatGenerator`] for the quantizer, whose float reference is the ONNX graph itself, run by
//! tract.
//!
//! The graph is loaded with tract-onnx, its batch dimension fixed to 1, then typed and
//! decluttered: there `Gemm` and `MatMul` are `EinSum`s, inference-mode `BatchNormalization` a
//! `Mul` and an `Add` of constants, `Identity` gone, and the exporters' shape arithmetic folded.
//! The importer walks that graph from the latent input and keeps, for the current wire, the
//! affine map from the current layer's input to it: one tensor per input feature (the image of
//! a one-hot vector under the linear part) and one for the offset. Every linear op (`EinSum`,
//! `Mul`/`Div` by a constant, reshapes) is evaluated by tract itself on those tensors, an
//! `Add`/`Sub` of a constant moves the offset, and an activation closes a dense layer. A one-hot
//! input makes each product a single weight, so the weights come out exactly as stored; only
//! folded BatchNorm scales round once more in `f32`.
//!
//! A class-conditional generator in `cgan.py`'s form — a float latent input and an integer
//! label input, `Gather` of the label's row from a constant embedding table, `Concat` of that
//! row and the latent vector (the row first) — is imported by cutting the graph at the
//! `Concat`: its output becomes the graph's one input, the table becomes the model's class
//! embedding, and the rest is walked as above.
//!
//! Anything the chip cannot run is refused with the file, the node's name and op type, and
//! what is supported; every unsupported node of a graph is listed at once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mcugan_float_model::{
    Activation, ClassEmbedding, FloatGenerator, FloatLayer, FloatReference, ReferenceError,
};
use mcugan_shared::format::MAX_LAYERS;
use mcugan_shared::ImageShape;
use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::LeakyRelu;
use tract_onnx::tract_core::plan::EvalContext;

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
        "Add, Sub, Mul, Div",
        "with a constant operand: biases, scales",
    ),
    (
        "BatchNormalization",
        "inference form, folded into the layer before it",
    ),
    (
        "LeakyRelu, Relu",
        "hidden activations (any alpha in [0, 1))",
    ),
    ("Tanh, Sigmoid", "the output activation, last layer only"),
    ("Identity, Dropout", "no-ops in inference"),
    (
        "Reshape, Flatten, Unsqueeze, Squeeze",
        "at the output (and shape arithmetic that folds to constants)",
    ),
    (
        "Constant, Shape, Gather, Concat, Cast, Slice",
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
];

fn supported_list() -> String {
    SUPPORTED_OPS
        .iter()
        .map(|(ops, _)| *ops)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A node the importer cannot take, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedNode {
    /// The node's name in the ONNX graph (or in tract's typed graph, which keeps it as a
    /// prefix).
    pub name: String,
    /// The ONNX op type (e.g. `ConvTranspose`).
    pub op_type: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for RefusedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node '{}' ({}): {}",
            self.name, self.op_type, self.problem
        )
    }
}

/// Why an ONNX file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file could not be read.
    #[error("{}: cannot read", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The bytes are not an ONNX model (truncated, or another format).
    #[error("{}: not a readable ONNX model (truncated or another format): {reason}", path.display())]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The graph's inputs or outputs are not one latent vector in, one image out.
    #[error("{}: {problem}", path.display())]
    Interface {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Nodes the chip cannot run; all of them.
    #[error("{}: {} unsupported node(s):\n{}\nsupported: {}", path.display(), nodes.len(),
        nodes.iter().map(|n| format!("  - {n}")).collect::<Vec<_>>().join("\n"), supported_list())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// Every refused node.
        nodes: Vec<RefusedNode>,
    },
    /// tract could not type or run the graph (e.g. a weight whose shape does not fit).
    #[error("{}: tract cannot analyse the graph: {reason}", path.display())]
    Analysis {
        /// The file.
        path: PathBuf,
        /// tract's message chain, naming the node.
        reason: String,
    },
}

/// An imported generator: its dense layers (for the quantizer) and the graph that computes it.
pub struct OnnxGenerator {
    /// The layers, with the tract graph as their float reference.
    pub generator: FloatGenerator,
    /// The ONNX opset the file declares.
    pub opset: i64,
    /// The program that wrote it (`producer_name` and version), when given.
    pub producer: String,
}

/// The ONNX graph run by tract, returning every layer's activation output.
struct TractReference {
    plan: Arc<TypedRunnableModel>,
    latent_dim: usize,
    source: String,
}

impl FloatReference for TractReference {
    fn describe(&self) -> String {
        format!("the ONNX graph {} run by tract-onnx", self.source)
    }

    fn forward_all(&self, z: &[f32]) -> Result<Vec<Vec<f32>>, ReferenceError> {
        let fail = |e: TractError| ReferenceError(format!("{}: tract: {e:#}", self.source));
        if z.len() != self.latent_dim {
            return Err(ReferenceError(format!(
                "{}: latent vector of {} values, the graph takes {}",
                self.source,
                z.len(),
                self.latent_dim
            )));
        }
        let input = Tensor::from_shape(&[1, self.latent_dim], z).map_err(fail)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(fail)?;
        outputs
            .iter()
            .map(|value| {
                value
                    .try_as_plain_ram()
                    .and_then(|plain| plain.as_slice::<f32>().map(<[f32]>::to_vec))
                    .map_err(fail)
            })
            .collect()
    }
}

/// Imports the MLP generator in the ONNX file at `path`.
pub fn import(path: &Path) -> Result<OnnxGenerator, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    import_bytes(path, &bytes)
}

/// [`import`] of a file's bytes; `path` names it in errors and resolves external data.
pub fn import_bytes(path: &Path, bytes: &[u8]) -> Result<OnnxGenerator, ImportError> {
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &bytes[..])
        .map_err(|e| ImportError::NotOnnx {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        })?;
    let graph = proto.graph.as_ref().ok_or_else(|| ImportError::NotOnnx {
        path: path.to_path_buf(),
        reason: "the model has no graph".into(),
    })?;
    let (proto, classes) = match cut_at_label_concat(path, &proto, graph)? {
        Some((cut, classes)) => (cut, Some(classes)),
        None => (proto, None),
    };
    let graph = proto.graph.as_ref().ok_or_else(|| ImportError::NotOnnx {
        path: path.to_path_buf(),
        reason: "the model has no graph".into(),
    })?;
    let latent_dim = check_interface(path, graph)?;
    check_op_types(path, graph)?;
    let onnx_ops: Vec<(String, String)> = graph
        .node
        .iter()
        .map(|n| (n.name.clone(), n.op_type.clone()))
        .collect();

    let analysis = |e: TractError| ImportError::Analysis {
        path: path.to_path_buf(),
        reason: format!("{e:#}"),
    };
    let dir = path.parent().and_then(Path::to_str);
    let parsed = onnx.parse(&proto, dir).map_err(analysis)?;
    let typed = parsed
        .model
        .with_input_fact(0, f32::fact([1, latent_dim]).into())
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .map_err(analysis)?;

    let walked = walk(&typed, latent_dim).map_err(|refusal| ImportError::Unsupported {
        path: path.to_path_buf(),
        nodes: vec![refusal.into_node(&onnx_ops)],
    })?;
    let plan = typed
        .with_output_outlets(&walked.layer_outlets)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(analysis)?;
    let reference = TractReference {
        plan,
        latent_dim,
        source: path.display().to_string(),
    };
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
    let generator =
        FloatGenerator::with_reference(walked.layers, walked.image, Arc::new(reference));
    let generator = match classes {
        Some(classes) => {
            if classes.width >= latent_dim {
                return Err(ImportError::Interface {
                    path: path.to_path_buf(),
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

/// The graph inputs that are not initializers.
fn real_inputs(graph: &pb::GraphProto) -> Vec<&pb::ValueInfoProto> {
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect()
}

/// The element type of a graph input, if it is a tensor.
fn elem_type(input: &pb::ValueInfoProto) -> Option<i32> {
    let pb::type_proto::Value::TensorType(tensor) = input.r#type.as_ref()?.value.as_ref()?;
    Some(tensor.elem_type)
}

/// An integer attribute of `node`, or `default`.
fn int_attribute(node: &pb::NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

/// The values of a float initializer of two dimensions, `[rows, columns]`.
fn float_table(tensor: &pb::TensorProto) -> Option<(usize, usize, Vec<f32>)> {
    let [rows, columns] = tensor.dims.as_slice() else {
        return None;
    };
    let (rows, columns) = (
        usize::try_from(*rows).ok()?,
        usize::try_from(*columns).ok()?,
    );
    if tensor.data_type != pb::tensor_proto::DataType::Float as i32 {
        return None;
    }
    let values: Vec<f32> = if !tensor.raw_data.is_empty() {
        tensor
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        tensor.float_data.clone()
    };
    (values.len() == rows.checked_mul(columns)?).then_some((rows, columns, values))
}

/// Recognises `cgan.py`'s conditioning — an integer label input whose only use is a `Gather`
/// (axis 0) from a constant `[classes, width]` table, whose only use in turn is the first
/// operand of a two-operand `Concat` on the last axis with the float latent input — and returns
/// the graph cut at the `Concat` (its output is the new, only input, `[batch, width + latent]`)
/// with the table as the class embedding. `None` for a graph without an integer input; an
/// integer input used any other way is an error that says what is expected.
fn cut_at_label_concat(
    path: &Path,
    proto: &pb::ModelProto,
    graph: &pb::GraphProto,
) -> Result<Option<(pb::ModelProto, ClassEmbedding)>, ImportError> {
    use pb::tensor_proto::DataType;
    let inputs = real_inputs(graph);
    let integer = |i: &&pb::ValueInfoProto| matches!(elem_type(i), Some(t) if t == DataType::Int64 as i32 || t == DataType::Int32 as i32);
    let Some(label) = inputs.iter().find(|i| integer(i)) else {
        return Ok(None);
    };
    let problem = |problem: String| ImportError::Interface {
        path: path.to_path_buf(),
        problem,
    };
    let expected = "a conditional generator feeds its integer label input to one Gather (axis 0) \
                    of a constant [classes, width] float table, and that row to a Concat on the \
                    last axis before the float latent vector, as cgan.py does: \
                    Concat(Gather(table, label), z)";
    let latent = match inputs.as_slice() {
        [a, b] if !integer(a) || !integer(b) => {
            if a.name == label.name {
                *b
            } else {
                *a
            }
        }
        _ => {
            return Err(problem(format!(
                "the graph has {} inputs with the integer input '{}'; {expected}",
                inputs.len(),
                label.name
            )))
        }
    };
    let users = |name: &str| users_of(graph, name);
    let [gather_at] = users(&label.name)[..] else {
        return Err(problem(format!(
            "the label input '{}' is used by {} nodes; {expected}",
            label.name,
            users(&label.name).len()
        )));
    };
    let gather = &graph.node[gather_at];
    let table = gather
        .input
        .first()
        .and_then(|name| graph.initializer.iter().find(|t| &t.name == name));
    let table = match (gather.op_type.as_str(), gather.input.get(1), table) {
        ("Gather", Some(index), Some(table))
            if index == &label.name && int_attribute(gather, "axis", 0) == 0 =>
        {
            table
        }
        _ => {
            return Err(problem(format!(
                "node '{}' ({}) takes the label input; {expected}",
                gather.name, gather.op_type
            )))
        }
    };
    let (classes, width, values) = class_table(table).map_err(problem)?;
    let Some(row) = gather.output.first() else {
        return Err(problem(format!("node '{}' has no output", gather.name)));
    };
    let [concat_at] = users(row)[..] else {
        return Err(problem(format!(
            "the label's embedding row is used by {} nodes; {expected}",
            users(row).len()
        )));
    };
    let concat = &graph.node[concat_at];
    let axis = int_attribute(concat, "axis", 0);
    let on_features = axis == 1 || axis == -1;
    if concat.op_type != "Concat"
        || concat.input.len() != 2
        || concat.input[0] != *row
        || concat.input[1] != latent.name
        || !on_features
    {
        return Err(problem(format!(
            "node '{}' ({}) takes the label's embedding row; {expected} (the row first: the \
             chip's first layer reads the class row before the latent vector)",
            concat.name, concat.op_type
        )));
    }
    if users(&latent.name).len() != 1 || users(&table.name).len() != 1 {
        return Err(problem(format!(
            "the latent input '{}' or the table '{}' is used elsewhere too; {expected}",
            latent.name, table.name
        )));
    }
    let Some(joined) = concat.output.first().cloned() else {
        return Err(problem(format!("node '{}' has no output", concat.name)));
    };
    let Some(latent_width) = fixed_width(latent) else {
        return Err(problem(format!(
            "the latent input '{}' is not a float vector [batch, latent] of fixed width",
            latent.name
        )));
    };
    let model = without_embedding(
        proto,
        graph,
        [gather_at, concat_at],
        [&table.name, &label.name, &latent.name],
        latent,
        joined,
        width + latent_width,
    );
    Ok(Some((
        model,
        ClassEmbedding {
            classes,
            width,
            table: values,
        },
    )))
}

/// The nodes of `graph` that take the value `name` as an input.
fn users_of(graph: &pb::GraphProto, name: &str) -> Vec<usize> {
    graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| n.input.iter().any(|i| i == name))
        .map(|(i, _)| i)
        .collect()
}

/// The label embedding `table` as `(classes, width, values)`, if it is a float table of
/// classes the chip holds.
fn class_table(table: &pb::TensorProto) -> Result<(usize, usize, Vec<f32>), String> {
    let Some((classes, width, values)) = float_table(table) else {
        return Err(format!(
            "the label embedding '{}' is not a [classes, width] float table stored in the file",
            table.name
        ));
    };
    if classes == 0 || width == 0 || classes > mcugan_shared::format::MAX_CLASSES {
        return Err(format!(
            "the label embedding '{}' has {classes} classes of {width} values (the chip holds \
             1 to {} classes)",
            table.name,
            mcugan_shared::format::MAX_CLASSES
        ));
    }
    Ok((classes, width, values))
}

/// The fixed width of a `[batch, width]` input.
fn fixed_width(input: &pb::ValueInfoProto) -> Option<usize> {
    match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(tensor)) => tensor
            .shape
            .as_ref()
            .and_then(|s| s.dim.get(1))
            .and_then(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                    usize::try_from(v).ok()
                }
                _ => None,
            }),
        _ => None,
    }
}

/// The graph without the label's Gather and Concat (`nodes`), the table, the label and the
/// latent inputs (`removed`): the Concat's output `joined` (`[batch, width]`) becomes its
/// input, declared like `latent`.
fn without_embedding(
    proto: &pb::ModelProto,
    graph: &pb::GraphProto,
    nodes: [usize; 2],
    removed: [&String; 3],
    latent: &pb::ValueInfoProto,
    joined: String,
    width: usize,
) -> pb::ModelProto {
    let mut cut = graph.clone();
    let mut new_input = latent.clone();
    new_input.name = joined;
    if let Some(pb::type_proto::Value::TensorType(tensor)) =
        new_input.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        if let Some(dim) = tensor.shape.as_mut().and_then(|s| s.dim.get_mut(1)) {
            dim.value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(
                width as i64,
            ));
        }
    }
    cut.node = graph
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| !nodes.contains(i))
        .map(|(_, n)| n.clone())
        .collect();
    let [table_name, ..] = removed;
    cut.initializer.retain(|t| &t.name != table_name);
    cut.input.retain(|i| !removed.contains(&&i.name));
    cut.input.insert(0, new_input);
    let mut model = proto.clone();
    model.graph = Some(cut);
    model
}

/// One float input `[batch, latent]` (batch fixed or symbolic), one output; returns the
/// latent size.
fn check_interface(path: &Path, graph: &pb::GraphProto) -> Result<usize, ImportError> {
    let problem = |problem: String| ImportError::Interface {
        path: path.to_path_buf(),
        problem,
    };
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect();
    if inputs.len() != 1 {
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(problem(format!(
            "the graph has {} inputs ({}); a generator takes one, the latent vector \
             (weights must be initializers or constants, not inputs)",
            inputs.len(),
            names.join(", ")
        )));
    }
    if graph.output.len() != 1 {
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        return Err(problem(format!(
            "the graph has {} outputs ({}); a generator makes one, the image",
            graph.output.len(),
            names.join(", ")
        )));
    }
    let input = inputs[0];
    let not_a_vector = || {
        problem(format!(
            "input '{}' is not a single float vector [batch, latent]: the chip feeds the \
             generator one N(0, 1) latent vector",
            input.name
        ))
    };
    let Some(pb::type_proto::Value::TensorType(tensor)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(not_a_vector());
    };
    if tensor.elem_type != pb::tensor_proto::DataType::Float as i32 {
        return Err(not_a_vector());
    }
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or(&[]);
    let fixed = |d: &pb::tensor_shape_proto::Dimension| match d.value {
        Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
        _ => None,
    };
    match dims {
        [batch, latent] if fixed(batch).is_none_or(|b| b == 1) => match fixed(latent) {
            Some(latent) if latent > 0 => usize::try_from(latent).map_err(|_| not_a_vector()),
            _ => Err(not_a_vector()),
        },
        _ => Err(not_a_vector()),
    }
}

/// Lists every node whose op type is not one an MLP generator uses.
fn check_op_types(path: &Path, graph: &pb::GraphProto) -> Result<(), ImportError> {
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
            problem: "this operator is not part of an MLP generator the chip runs".into(),
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

/// A problem found while walking the typed graph, at a tract node.
struct Refusal {
    tract_name: String,
    tract_op: String,
    problem: String,
}

impl Refusal {
    fn new(node: &TypedNode, problem: impl Into<String>) -> Self {
        Self {
            tract_name: node.name.clone(),
            tract_op: node.op.name().to_string(),
            problem: problem.into(),
        }
    }

    /// Names the ONNX node the tract node came from: tract names what it makes of a node
    /// after the node (`/model.0/Gemm`, `/model.0/Gemm.ab`, ...).
    fn into_node(self, onnx_ops: &[(String, String)]) -> RefusedNode {
        let origin = onnx_ops
            .iter()
            .filter(|(name, _)| {
                !name.is_empty()
                    && (self.tract_name == *name
                        || self.tract_name.starts_with(&format!("{name}.")))
            })
            .max_by_key(|(name, _)| name.len());
        match origin {
            Some((name, op_type)) => RefusedNode {
                name: name.clone(),
                op_type: op_type.clone(),
                problem: self.problem,
            },
            None => RefusedNode {
                name: self.tract_name,
                op_type: format!("tract {}", self.tract_op),
                problem: self.problem,
            },
        }
    }
}

/// The affine map from the current layer's input to a wire: `lin[k]` is the wire's value for
/// the one-hot input `e_k` through the linear part, `offset` its value for input 0.
struct Affine {
    lin: Vec<Tensor>,
    offset: Tensor,
}

impl Affine {
    /// The identity on a wire of `shape` whose volume is the layer's input width.
    fn identity(shape: &[usize]) -> TractResult<Self> {
        let width: usize = shape.iter().product();
        let lin = (0..width)
            .map(|k| {
                let mut one_hot = vec![0f32; width];
                one_hot[k] = 1.0;
                Tensor::from_shape(shape, &one_hot)
            })
            .collect::<TractResult<Vec<_>>>()?;
        let offset = Tensor::from_shape(shape, &vec![0f32; width])?;
        Ok(Self { lin, offset })
    }
}

struct Walked {
    layers: Vec<FloatLayer>,
    /// Each layer's activation output, in order.
    layer_outlets: Vec<OutletId>,
    image: ImageShape,
}

/// Runs `op` on `inputs`, the wire's tensor standing at `slot` and constants elsewhere.
fn eval_with(
    op: &dyn TypedOp,
    consts: &[Option<Arc<Tensor>>],
    slot: usize,
    wire: &Tensor,
) -> TractResult<Tensor> {
    let inputs: TVec<TValue> = consts
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            _ if i == slot => wire.clone().into_tvalue(),
            Some(c) => (**c).clone().into_tvalue(),
            None => wire.clone().into_tvalue(),
        })
        .collect();
    let mut outputs = op.eval(&EvalContext::out_of_plan(), inputs)?;
    Ok(outputs.remove(0).into_tensor())
}

fn flat_f32(tensor: &Tensor) -> TractResult<Vec<f32>> {
    Ok(tensor
        .cast_to::<f32>()?
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .to_vec())
}

/// What a node does to the chain.
enum Step {
    /// Linear in the wire: applied to every part of the affine map.
    Linear,
    /// Adds a constant: moves the offset only (`negate`: the wire is subtracted from it).
    Shift { negate: bool },
    /// Closes the layer.
    Activation(Activation),
    /// Changes only the shape (allowed after the output activation).
    Shape,
}

fn classify(node: &TypedNode, slot: usize, consts: &[Option<Arc<Tensor>>]) -> Result<Step, String> {
    let op_name = node.op.name();
    if let Some(ew) = node.op_as::<ElementWiseOp>() {
        if let Some(leaky) = ew.0.downcast_ref::<LeakyRelu>() {
            return Ok(Step::Activation(Activation::LeakyRelu(leaky.alpha)));
        }
        return match ew.0.name().as_str() {
            "Tanh" => Ok(Step::Activation(Activation::Tanh)),
            "Sigmoid" => Ok(Step::Activation(Activation::Sigmoid)),
            other => Err(format!(
                "element-wise {other} is not an activation the chip runs"
            )),
        };
    }
    if let Some(bin) = node.op_as::<TypedBinOp>() {
        let other = consts.iter().enumerate().find(|(i, _)| *i != slot);
        let constant = other.and_then(|(_, c)| c.as_ref());
        let Some(constant) = constant else {
            return Err("both operands depend on the input (not a constant operand)".into());
        };
        let values = flat_f32(constant).map_err(|e| format!("{e:#}"))?;
        return match (bin.0.name(), slot) {
            ("Add", _) => Ok(Step::Shift { negate: false }),
            ("Sub", 0) => Ok(Step::Shift { negate: false }),
            ("Sub", _) => Ok(Step::Shift { negate: true }),
            ("Mul", _) | ("Div", 0) => Ok(Step::Linear),
            ("Max", _) if values.iter().all(|&v| v == 0.0) => {
                Ok(Step::Activation(Activation::LeakyRelu(0.0)))
            }
            (name, _) => Err(format!(
                "{name} with a constant is not part of a dense layer"
            )),
        };
    }
    match op_name.as_ref() {
        "EinSum" => {
            if consts
                .iter()
                .enumerate()
                .any(|(i, c)| i != slot && c.is_none())
            {
                Err("its weight is not a constant (an input or a computed tensor)".into())
            } else {
                Ok(Step::Linear)
            }
        }
        "AddAxis" | "RmAxis" | "Reshape" | "Identity" => Ok(Step::Shape),
        other => Err(format!("tract op {other} is not part of an MLP generator")),
    }
}

/// Walks the decluttered graph from its input to its output; see the module comment.
fn walk(model: &TypedModel, latent_dim: usize) -> Result<Walked, Refusal> {
    let input = model.input_outlets().map_err(|_| Refusal {
        tract_name: "input".into(),
        tract_op: "Source".into(),
        problem: "no input".into(),
    })?[0];
    let output = model.output_outlets().map_err(|_| Refusal {
        tract_name: "output".into(),
        tract_op: "Sink".into(),
        problem: "no output".into(),
    })?[0];
    let order = model.eval_order().map_err(|e| Refusal {
        tract_name: "graph".into(),
        tract_op: "-".into(),
        problem: format!("{e:#}"),
    })?;

    let mut current = input;
    let mut affine = Affine::identity(&[1, latent_dim]).map_err(|e| Refusal {
        tract_name: "input".into(),
        tract_op: "Source".into(),
        problem: format!("{e:#}"),
    })?;
    let mut layers: Vec<FloatLayer> = Vec::new();
    let mut layer_outlets = Vec::new();
    let mut inputs_width = latent_dim;
    let mut finished = false;

    for &id in &order {
        let node = model.node(id);
        if node.inputs.is_empty() {
            continue; // the source, and constants
        }
        let consts: Vec<Option<Arc<Tensor>>> = node
            .inputs
            .iter()
            .map(|&i| model.outlet_fact(i).ok().and_then(|f| f.konst.clone()))
            .collect();
        let Some(slot) = chain_slot(node, current, &consts)? else {
            continue; // constant arithmetic that declutter left
        };
        let step = classify(node, slot, &consts).map_err(|p| Refusal::new(node, p))?;
        let out = OutletId::new(id, 0);
        if finished {
            if !matches!(step, Step::Shape) {
                return Err(Refusal::new(
                    node,
                    "follows a Tanh or Sigmoid: the chip applies those only to the last layer \
                     (hidden layers use LeakyRelu or Relu), and only reshapes may follow it",
                ));
            }
            current = out;
            continue;
        }
        if let Step::Activation(activation) = step {
            if layers.len() == MAX_LAYERS {
                return Err(Refusal::new(
                    node,
                    format!("the model format holds at most {MAX_LAYERS} layers"),
                ));
            }
            let layer = close_layer(node, activation, &affine, inputs_width)?;
            inputs_width = layer.outputs;
            layers.push(layer);
            layer_outlets.push(out);
            if activation.makes_pixels() {
                finished = true;
            } else {
                let shape = shape_of(model, out)
                    .ok_or_else(|| Refusal::new(node, "its output has no fixed shape"))?;
                affine =
                    Affine::identity(&shape).map_err(|e| Refusal::new(node, format!("{e:#}")))?;
            }
        } else {
            apply_to_wire(node, step, slot, &consts, &mut affine)?;
        }
        current = out;
    }
    finish_walk(
        model,
        &order,
        current,
        output,
        finished,
        layers,
        layer_outlets,
    )
}

/// The output shape of `outlet`, when it is fixed.
fn shape_of(model: &TypedModel, outlet: OutletId) -> Option<Vec<usize>> {
    model
        .outlet_fact(outlet)
        .ok()?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
}

/// Which input of `node` is the chain's wire (`current`); `None` for a node off the chain
/// made of constants only. Refuses a second branch, a second wire into one node, and a
/// non-constant operand.
fn chain_slot(
    node: &TypedNode,
    current: OutletId,
    consts: &[Option<Arc<Tensor>>],
) -> Result<Option<usize>, Refusal> {
    let on_chain: Vec<usize> = node
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, &i)| i == current)
        .map(|(slot, _)| slot)
        .collect();
    if on_chain.is_empty() {
        if consts.iter().all(Option::is_some) {
            return Ok(None);
        }
        return Err(Refusal::new(
            node,
            "is not on the single chain from the latent input to the image \
                 (a second branch or a non-constant operand)",
        ));
    }
    if on_chain.len() > 1
        || consts
            .iter()
            .enumerate()
            .any(|(i, c)| c.is_none() && !on_chain.contains(&i))
    {
        return Err(Refusal::new(
            node,
            "combines the chain with a non-constant tensor (a skip connection, a second \
                 input or a computed weight)",
        ));
    }
    Ok(Some(on_chain[0]))
}

/// Applies a linear, reshaping or shifting `step` to the affine map the wire carries since
/// the last activation.
fn apply_to_wire(
    node: &TypedNode,
    step: Step,
    slot: usize,
    consts: &[Option<Arc<Tensor>>],
    affine: &mut Affine,
) -> Result<(), Refusal> {
    let fail = |e: TractError| Refusal::new(node, format!("{e:#}"));
    match step {
        Step::Linear | Step::Shape => {
            affine.lin = affine
                .lin
                .iter()
                .map(|t| eval_with(node.op.as_ref(), consts, slot, t))
                .collect::<TractResult<_>>()
                .map_err(fail)?;
            affine.offset =
                eval_with(node.op.as_ref(), consts, slot, &affine.offset).map_err(fail)?;
        }
        Step::Shift { negate } => {
            let shifted =
                eval_with(node.op.as_ref(), consts, slot, &affine.offset).map_err(fail)?;
            if shifted.shape() != affine.offset.shape() {
                return Err(Refusal::new(
                    node,
                    "its constant broadcasts the wire to another shape",
                ));
            }
            affine.offset = shifted;
            if negate {
                for t in &mut affine.lin {
                    let negated: Vec<f32> = flat_f32(t).map_err(fail)?.iter().map(|v| -v).collect();
                    *t = Tensor::from_shape(t.shape(), &negated).map_err(fail)?;
                }
            }
        }
        Step::Activation(_) => {}
    }
    Ok(())
}

/// The dense layer that the affine map since the last activation makes, ended by `node`'s
/// `activation`.
fn close_layer(
    node: &TypedNode,
    activation: Activation,
    affine: &Affine,
    inputs_width: usize,
) -> Result<FloatLayer, Refusal> {
    let fail = |e: TractError| Refusal::new(node, format!("{e:#}"));
    let offset = flat_f32(&affine.offset).map_err(fail)?;
    let outputs = offset.len();
    let mut weight = vec![0f32; outputs * inputs_width];
    for (k, column) in affine.lin.iter().enumerate() {
        let column = flat_f32(column).map_err(fail)?;
        for (o, &w) in column.iter().enumerate() {
            weight[o * inputs_width + k] = w;
        }
    }
    if let Activation::LeakyRelu(slope) = activation {
        if !(0.0..1.0).contains(&slope) {
            return Err(Refusal::new(
                node,
                format!("LeakyRelu alpha {slope} is outside [0, 1)"),
            ));
        }
    }
    Ok(FloatLayer::dense(
        inputs_width,
        outputs,
        weight,
        offset,
        activation,
    ))
}

/// Checks that the chain ends at the graph's output in a pixel activation, and reads the
/// image shape off the output.
fn finish_walk(
    model: &TypedModel,
    order: &[usize],
    current: OutletId,
    output: OutletId,
    finished: bool,
    layers: Vec<FloatLayer>,
    layer_outlets: Vec<OutletId>,
) -> Result<Walked, Refusal> {
    let last = order.last().map(|&id| model.node(id));
    let Some(last) = last else {
        return Err(Refusal {
            tract_name: "graph".into(),
            tract_op: "-".into(),
            problem: "the graph is empty".into(),
        });
    };
    if current != output {
        return Err(Refusal::new(
            last,
            "the graph's output is not the end of the chain",
        ));
    }
    if !finished {
        return Err(Refusal::new(
            last,
            "the graph does not end in Tanh or Sigmoid (the chip's pixel output)",
        ));
    }
    let shape = shape_of(model, output)
        .ok_or_else(|| Refusal::new(last, "the output has no fixed shape"))?;
    let pixels = layers.last().map_or(0, |l| l.outputs);
    let image = image_shape(&shape, pixels).map_err(|p| Refusal::new(last, p))?;
    Ok(Walked {
        layers,
        layer_outlets,
        image,
    })
}

/// The image shape of an output of `shape` (batch first): `[1, 1, H, W]`, `[1, H, W]`, or a
/// flat `[1, H*W]` of a square image.
fn image_shape(shape: &[usize], pixels: usize) -> Result<ImageShape, String> {
    let side = |v: usize| u16::try_from(v).map_err(|_| format!("an image side of {v} pixels"));
    let dims: Vec<usize> = shape.iter().copied().skip(1).collect();
    let (width, height) = match dims.as_slice() {
        [1, h, w] | [h, w] => (*w, *h),
        [n] => {
            let square = FloatGenerator::square_image(*n).ok_or_else(|| {
                format!(
                    "a flat output of {n} values is not a square image; reshape it to \
                     [batch, 1, H, W] at export"
                )
            })?;
            return Ok(square);
        }
        [c, _, _] => {
            return Err(format!(
                "an image of {c} channels; the chip draws one channel (grayscale)"
            ))
        }
        _ => return Err(format!("output shape {shape:?} is not [batch, 1, H, W]")),
    };
    if width * height != pixels {
        return Err(format!(
            "output shape {shape:?} holds {} values, the last layer makes {pixels}",
            width * height
        ));
    }
    Ok(ImageShape {
        width: side(width)?,
        height: side(height)?,
        channels: 1,
    })
}
