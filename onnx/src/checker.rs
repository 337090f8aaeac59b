//! The rules of the ONNX specification that tract does not enforce (it reads some files that
//! break them, and panics or overflows its stack on others), checked on the protobuf before
//! tract sees the graph; each refusal names its rule, as onnx's own checker does.

use std::collections::HashSet;
use std::path::Path;

use tract_onnx::pb;

use crate::error::ImportError;

/// The IR versions an ONNX file may declare: 3 (the first with opset imports) to 14 (the
/// newest that onnx 1.23, PyTorch 2.15's, writes).
pub const IR_VERSIONS: std::ops::RangeInclusive<i64> = 3..=14;
/// The default-domain opsets a file may import: 1 to 28 (onnx 1.23's newest).
pub const OPSETS: std::ops::RangeInclusive<i64> = 1..=28;
/// The largest magnitude an `axis` or `axes` value may have: no tensor of the chip's
/// generators has more dimensions.
const MAX_AXIS: i64 = 16;

/// Checks `proto` against the rules; see the module comment.
pub(crate) fn check_model(path: &Path, proto: &pb::ModelProto) -> Result<(), ImportError> {
    let broken = |rule: &str, problem: String| ImportError::Invalid {
        path: path.to_path_buf(),
        rule: rule.to_string(),
        problem,
    };
    if !IR_VERSIONS.contains(&proto.ir_version) {
        return Err(broken(
            "ir_version",
            format!(
                "the file declares IR version {}; ONNX files have {} to {}",
                proto.ir_version,
                IR_VERSIONS.start(),
                IR_VERSIONS.end()
            ),
        ));
    }
    let default_opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx");
    match default_opset {
        None => {
            return Err(broken(
                "opset_import",
                "the file imports no opset of the default (ai.onnx) domain".into(),
            ))
        }
        Some(opset) if !OPSETS.contains(&opset.version) => {
            return Err(broken(
                "opset_import",
                format!(
                    "the file imports opset {} of the default domain; there are opsets {} to {}",
                    opset.version,
                    OPSETS.start(),
                    OPSETS.end()
                ),
            ))
        }
        Some(_) => {}
    }
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| broken("graph", "the model has no graph".into()))?;
    check_graph(graph).map_err(|(rule, problem)| broken(rule, problem))
}

/// Single assignment, definition before use, outputs that exist, tensors of fixed-size types,
/// axes within any rank.
fn check_graph(graph: &pb::GraphProto) -> Result<(), (&'static str, String)> {
    let mut defined: HashSet<&str> = HashSet::new();
    for initializer in &graph.initializer {
        if initializer.data_type == pb::tensor_proto::DataType::String as i32 {
            return Err((
                "initializer type",
                format!(
                    "the initializer '{}' holds strings; a generator's weights are numbers",
                    initializer.name
                ),
            ));
        }
        if !defined.insert(&initializer.name) {
            return Err((
                "single assignment",
                format!("two initializers are named '{}'", initializer.name),
            ));
        }
    }
    for input in &graph.input {
        // Before IR version 4 initializers were listed among the inputs too.
        if !defined.insert(&input.name) && !graph.initializer.iter().any(|t| t.name == input.name) {
            return Err((
                "single assignment",
                format!("two graph inputs are named '{}'", input.name),
            ));
        }
    }
    for node in &graph.node {
        let who = format!("node '{}' ({})", node.name, node.op_type);
        for input in &node.input {
            if !input.is_empty() && !defined.contains(input.as_str()) {
                return Err((
                    "topological order",
                    format!(
                        "{who} reads '{input}', which no input, initializer or earlier node \
                         defines"
                    ),
                ));
            }
        }
        for attribute in &node.attribute {
            let axes = attribute.ints.iter().chain(
                (attribute.r#type == pb::attribute_proto::AttributeType::Int as i32)
                    .then_some(&attribute.i),
            );
            if matches!(attribute.name.as_str(), "axis" | "axes")
                && axes.clone().any(|a| a.unsigned_abs() > MAX_AXIS as u64)
            {
                return Err((
                    "attribute range",
                    format!(
                        "{who} has {} {:?}, beyond any tensor's dimensions",
                        attribute.name,
                        axes.collect::<Vec<_>>()
                    ),
                ));
            }
            if let Some(tensor) = &attribute.t {
                if tensor.data_type == pb::tensor_proto::DataType::String as i32 {
                    return Err((
                        "initializer type",
                        format!("{who} holds a tensor of strings"),
                    ));
                }
            }
        }
        if matches!(node.op_type.as_str(), "Unsqueeze" | "Squeeze") {
            let axes = node
                .input
                .get(1)
                .and_then(|name| graph.initializer.iter().find(|t| &t.name == name));
            if let Some(axes) = axes {
                let values: Vec<i64> = if axes.raw_data.is_empty() {
                    axes.int64_data.clone()
                } else {
                    axes.raw_data
                        .chunks_exact(8)
                        .map(|b| {
                            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                        })
                        .collect()
                };
                if values.iter().any(|a| a.unsigned_abs() > MAX_AXIS as u64) {
                    return Err((
                        "attribute range",
                        format!("{who} has axes {values:?}, beyond any tensor's dimensions"),
                    ));
                }
            }
        }
        for output in &node.output {
            if output.is_empty() {
                continue;
            }
            if !defined.insert(output) {
                return Err((
                    "single assignment",
                    format!("{who} writes '{output}', which is already defined"),
                ));
            }
        }
    }
    for output in &graph.output {
        if !defined.contains(output.name.as_str()) {
            return Err((
                "graph outputs",
                format!(
                    "the graph's output '{}' is produced by no node, input or initializer",
                    output.name
                ),
            ));
        }
    }
    Ok(())
}
