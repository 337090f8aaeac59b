//! The graph's interface, on the protobuf: one float latent input of `[batch, Z]` or
//! `[batch, Z, 1, 1]` (a DCGAN's), one output; and the batch made 1 everywhere, so that the
//! symbolic batch PyTorch's exporters declare (in the inputs, the outputs and the dynamo
//! exporter's value infos) does not clash with the single image the chip draws.

use std::path::Path;

use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::dimension::Value as Dim;

use crate::error::ImportError;

/// The graph inputs that are not initializers.
pub(crate) fn real_inputs(graph: &pb::GraphProto) -> Vec<&pb::ValueInfoProto> {
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name.as_str()))
        .collect()
}

/// The element type of a graph input, if it is a tensor.
pub(crate) fn elem_type(input: &pb::ValueInfoProto) -> Option<i32> {
    let pb::type_proto::Value::TensorType(tensor) = input.r#type.as_ref()?.value.as_ref()?;
    Some(tensor.elem_type)
}

/// The dimensions of a tensor input: `Some(size)` for a fixed one, `None` for a symbolic or
/// missing one.
pub(crate) fn dims(input: &pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    let pb::type_proto::Value::TensorType(tensor) = input.r#type.as_ref()?.value.as_ref()?;
    Some(
        tensor
            .shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) => Some(v),
                _ => None,
            })
            .collect(),
    )
}

/// One float input `[batch, latent]` or `[batch, latent, 1, 1]` (batch fixed to 1 or
/// symbolic), one output; returns the input's shape for one image.
pub(crate) fn check_interface(
    path: &Path,
    graph: &pb::GraphProto,
) -> Result<Vec<usize>, ImportError> {
    let problem = |problem: String| ImportError::Interface {
        path: path.to_path_buf(),
        problem,
    };
    let inputs = real_inputs(graph);
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
            "input '{}' is not a single float vector [batch, latent] or [batch, latent, 1, 1]: \
             the chip feeds the generator one N(0, 1) latent vector",
            input.name
        ))
    };
    if elem_type(input) != Some(pb::tensor_proto::DataType::Float as i32) {
        return Err(not_a_vector());
    }
    let dims = dims(input).ok_or_else(not_a_vector)?;
    let batch_ok = |b: &Option<i64>| b.is_none_or(|b| b == 1);
    let latent = match dims.as_slice() {
        [batch, Some(latent)] if batch_ok(batch) => *latent,
        [batch, Some(latent), Some(1), Some(1)] if batch_ok(batch) => *latent,
        _ => return Err(not_a_vector()),
    };
    let latent = usize::try_from(latent)
        .ok()
        .filter(|&l| l > 0)
        .ok_or_else(not_a_vector)?;
    let mut shape = vec![1, latent];
    shape.resize(dims.len(), 1);
    Ok(shape)
}

/// The model with one image per run: the graph input's batch fixed to 1, the outputs' and
/// value infos' declared shapes dropped (tract infers them from the input; a symbolic batch
/// there would not unify with 1).
pub(crate) fn with_batch_of_one(mut proto: pb::ModelProto) -> pb::ModelProto {
    if let Some(graph) = proto.graph.as_mut() {
        for input in &mut graph.input {
            if let Some(pb::type_proto::Value::TensorType(tensor)) =
                input.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                if let Some(batch) = tensor.shape.as_mut().and_then(|s| s.dim.first_mut()) {
                    if !matches!(batch.value, Some(Dim::DimValue(_))) {
                        batch.value = Some(Dim::DimValue(1));
                    }
                }
            }
        }
        for output in &mut graph.output {
            if let Some(pb::type_proto::Value::TensorType(tensor)) =
                output.r#type.as_mut().and_then(|t| t.value.as_mut())
            {
                tensor.shape = None;
            }
        }
        graph.value_info.clear();
    }
    proto
}
