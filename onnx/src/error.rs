//! What the importer says when it cannot import a file: the file, and for a graph the chip
//! cannot run, each node's name and op type with what is wrong and what is supported.

use std::fmt;
use std::path::PathBuf;

use tract_onnx::prelude::TypedNode;

use crate::ops::supported_list;

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
    /// The file breaks a rule of the ONNX specification (which onnx's checker enforces).
    #[error("{}: not a valid ONNX model ({rule}): {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The rule, as the ONNX specification names it.
        rule: String,
        /// What breaks it.
        problem: String,
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

/// tract's account of why it cannot analyse or run a graph, in one line a user can act on: the
/// node it names (`node 'NAME' (OP)`) and the last cause, with tract's own vocabulary
/// (`Impossible to unify Val(8) with Val(9)`, fact dumps, OS errors) translated or cut short.
pub(crate) fn tract_reason(error: &tract_onnx::prelude::TractError) -> String {
    let chain: Vec<String> = error.chain().map(|cause| cause.to_string()).collect();
    // "Failed analyse for node #3 "gemm_misfit" Gemm", and the like.
    let node = chain.iter().find_map(|cause| {
        let start = cause.find("node #")?;
        let rest = &cause[start..];
        let open = rest.find('"')? + 1;
        let close = open + rest[open..].find('"')?;
        let name = &rest[open..close];
        let op = rest[close + 1..].split_whitespace().next().unwrap_or("?");
        Some(format!("node '{name}' ({})", op.trim_end_matches(':')))
    });
    let cause = chain.last().map(String::as_str).unwrap_or("unknown");
    let cause = translate_cause(cause);
    match node {
        Some(node) => format!("{node}: its inputs do not fit together ({cause})"),
        None => cause,
    }
}

/// One cause of tract's, in words: unification failures as the dimensions they compare,
/// anything long cut to its first line and 160 characters.
fn translate_cause(cause: &str) -> String {
    let cause = cause.trim().trim_end_matches('.');
    if let Some(rest) = cause.strip_prefix("Impossible to unify ") {
        let value = |v: &str| -> String {
            let v = v.trim();
            v.strip_prefix("Val(")
                .and_then(|v| v.strip_suffix(')'))
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        };
        if let Some((found, expected)) = rest.split_once(" with ") {
            return format!(
                "dimensions {} and {} that must be equal",
                value(found),
                value(expected)
            );
        }
    }
    let first = cause.lines().next().unwrap_or_default();
    if first.chars().count() > 160 {
        let cut: String = first.chars().take(160).collect();
        format!("{cut}…")
    } else {
        first.to_string()
    }
}

/// A problem found while walking the typed graph, at a tract node.
pub(crate) struct Refusal {
    pub tract_name: String,
    pub tract_op: String,
    pub problem: String,
}

impl Refusal {
    /// A problem at `node`.
    pub fn new(node: &TypedNode, problem: impl Into<String>) -> Self {
        Self {
            tract_name: node.name.clone(),
            tract_op: node.op.name().to_string(),
            problem: problem.into(),
        }
    }

    /// A problem with the graph as a whole (`what`: the part of it).
    pub fn graph(what: &str, problem: impl Into<String>) -> Self {
        Self {
            tract_name: what.into(),
            tract_op: "-".into(),
            problem: problem.into(),
        }
    }

    /// Names the ONNX node the tract node came from: tract names what it makes of a node
    /// after the node (`/model.0/Gemm`, `/model.0/Gemm.ab`, ...).
    pub fn into_node(self, onnx_ops: &[(String, String)]) -> RefusedNode {
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
