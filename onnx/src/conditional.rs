//! A class-conditional generator in `cgan.py`'s form: a float latent input and an integer
//! label input, `Gather` of the label's row from a constant embedding table, `Concat` of that
//! row and the latent vector (the row first). The importer cuts the graph at the `Concat`: its
//! output becomes the graph's one input, the table becomes the model's class embedding.

use std::path::Path;

use mcugan_float_model::ClassEmbedding;
use tract_onnx::pb;

use crate::error::ImportError;
use crate::interface::{elem_type, real_inputs};

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
pub(crate) fn cut_at_label_concat(
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
