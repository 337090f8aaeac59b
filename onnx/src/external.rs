//! Weights stored outside the graph: PyTorch's default exporter writes them to `NAME.onnx.data`
//! beside `NAME.onnx`, and each initializer names the file, an offset and a length. They are
//! checked here, on the protobuf, before tract reads a byte of them: the file is beside the
//! model, a regular file, long enough, and every tensor's declared size fits the format's
//! limits, so that a missing, truncated or hostile data file is a sentence, not an OS error
//! or gigabytes of memory.

use std::path::{Component, Path, PathBuf};

use tract_onnx::pb;

use crate::error::ImportError;

/// The most bytes one weight tensor may declare: 64 MiB of floats, 16 M weights, more than
/// any model a microcontroller's flash holds.
pub const MAX_TENSOR_BYTES: u64 = 64 << 20;
/// The most bytes all the weights may declare together.
pub const MAX_WEIGHT_BYTES: u64 = 256 << 20;

/// Bytes of one element of an ONNX data type (`None`: a type without a fixed size, e.g.
/// strings).
fn element_bytes(data_type: i32) -> Option<u64> {
    use pb::tensor_proto::DataType as T;
    let t = T::try_from(data_type).ok()?;
    Some(match t {
        T::Float | T::Int32 | T::Uint32 => 4,
        T::Double | T::Int64 | T::Uint64 | T::Complex64 => 8,
        T::Float16 | T::Bfloat16 | T::Int16 | T::Uint16 => 2,
        T::Int8 | T::Uint8 | T::Bool => 1,
        T::Complex128 => 16,
        _ => return None,
    })
}

/// The bytes `tensor`'s shape declares (`None` when they overflow or its type has no fixed
/// size).
fn declared_bytes(tensor: &pb::TensorProto) -> Option<u64> {
    let mut count: u64 = 1;
    for &dim in &tensor.dims {
        count = count.checked_mul(u64::try_from(dim).ok()?)?;
    }
    count.checked_mul(element_bytes(tensor.data_type)?)
}

/// A key of an initializer's external-data entries.
fn entry<'t>(tensor: &'t pb::TensorProto, key: &str) -> Option<&'t str> {
    tensor
        .external_data
        .iter()
        .find(|e| e.key == key)
        .map(|e| e.value.as_str())
}

/// The files beside the model that its initializers store their data in.
pub fn external_data_files(model: &Path, graph: &pb::GraphProto) -> Vec<PathBuf> {
    let dir = model.parent().unwrap_or(Path::new(""));
    let mut files: Vec<PathBuf> = graph
        .initializer
        .iter()
        .filter_map(|t| entry(t, "location"))
        .map(|location| dir.join(location))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Checks every initializer's declared size against the limits and every external one's
/// file; see the module comment.
pub(crate) fn check_weights(path: &Path, graph: &pb::GraphProto) -> Result<(), ImportError> {
    let problem = |problem: String| ImportError::Interface {
        path: path.to_path_buf(),
        problem,
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut total: u64 = 0;
    for tensor in &graph.initializer {
        let name = &tensor.name;
        let declared = declared_bytes(tensor).ok_or_else(|| {
            problem(format!(
                "the weight '{name}' has a data type without a fixed size or a shape of {:?} \
                 whose size overflows",
                tensor.dims
            ))
        })?;
        if declared > MAX_TENSOR_BYTES {
            return Err(problem(format!(
                "the weight '{name}' declares {declared} bytes (shape {:?}); a generator for \
                 the chip has none over {MAX_TENSOR_BYTES}",
                tensor.dims
            )));
        }
        total += declared;
        if total > MAX_WEIGHT_BYTES {
            return Err(problem(format!(
                "the weights declare more than {MAX_WEIGHT_BYTES} bytes in all; a generator for \
                 the chip has far fewer"
            )));
        }
        let external =
            tensor.data_location == Some(pb::tensor_proto::DataLocation::External as i32);
        if !external {
            continue;
        }
        let Some(location) = entry(tensor, "location") else {
            return Err(problem(format!(
                "the weight '{name}' is stored outside the model but names no file"
            )));
        };
        let inside = Path::new(location)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(problem(format!(
                "the weight '{name}' is stored in '{location}', which is not a file beside the \
                 model (an absolute path or one through '..')"
            )));
        }
        let number = |key: &str, default: u64| -> Result<u64, ImportError> {
            match entry(tensor, key) {
                None => Ok(default),
                Some(text) => text.parse().map_err(|_| {
                    problem(format!(
                        "the weight '{name}' has the {key} '{text}', not a number"
                    ))
                }),
            }
        };
        let offset = number("offset", 0)?;
        let length = number("length", declared)?;
        if length != declared {
            return Err(problem(format!(
                "the weight '{name}' declares {length} bytes in '{location}' but its shape \
                 {:?} holds {declared}",
                tensor.dims
            )));
        }
        let file = dir.join(location);
        let meta = std::fs::metadata(&file).map_err(|_| {
            problem(format!(
                "its weights are in '{location}' beside it, which is missing: keep the two files \
                 together (PyTorch's exporter writes both)"
            ))
        })?;
        if !meta.is_file() {
            return Err(problem(format!(
                "its weights should be in the file '{location}' beside it, which is not a \
                 regular file"
            )));
        }
        if offset
            .checked_add(length)
            .is_none_or(|end| end > meta.len())
        {
            return Err(problem(format!(
                "'{location}' holds {} bytes, but the weight '{name}' lies at bytes {offset} to \
                 {} (a truncated or foreign data file)",
                meta.len(),
                offset.saturating_add(length)
            )));
        }
    }
    Ok(())
}
