//! Where commands write: nothing a user made is replaced without asking.
//!
//! Every command checks its outputs before it starts work: an output may never be one of the
//! command's own inputs, a training run or a trained classifier is replaced only with
//! `--force`, and a file is not replaced by one of another kind (a PNG over a model blob)
//! without `--force` either. Files of the same kind that a command regenerates (a picture, a
//! report, a blob) are replaced, atomically.

use std::fs;
use std::path::{Path, PathBuf};

/// Why a command refused to write.
#[derive(Debug, thiserror::Error)]
pub enum OverwriteError {
    /// The output is one of the command's inputs.
    #[error(
        "{} is also this command's {input}; writing it would destroy it: choose another {flag}",
        output.display()
    )]
    IsInput {
        /// The output path.
        output: PathBuf,
        /// Which input it is (`--generator`, ...).
        input: String,
        /// The output's flag.
        flag: String,
    },
    /// The output directory holds a training run.
    #[error(
        "{} already holds a training run ({found}); continue it with --resume, replace it \
         with --force, or choose another --out",
        dir.display()
    )]
    ExistingRun {
        /// The directory.
        dir: PathBuf,
        /// The run's files found there.
        found: String,
    },
    /// The output exists and is replaced only on request.
    #[error("{} exists ({what}); replace it with --force or choose another {flag}", path.display())]
    Exists {
        /// The output path.
        path: PathBuf,
        /// What it holds.
        what: String,
        /// The output's flag.
        flag: String,
    },
}

/// Whether `a` and `b` name the same file (also through links or `..`); a path that does not
/// exist yet is compared by its parent directory and name.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(path) = fs::canonicalize(path) {
        return Some(path);
    }
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(fs::canonicalize(parent).ok()?.join(name))
}

/// Refuses `output` (written under `flag`) when it is one of `inputs` (path, flag): also with
/// `--force`, since the command would read what it is destroying.
pub fn refuse_input(
    output: &Path,
    flag: &str,
    inputs: &[(&Path, &str)],
) -> Result<(), OverwriteError> {
    for (input, input_flag) in inputs {
        if same_file(output, input) {
            return Err(OverwriteError::IsInput {
                output: output.to_path_buf(),
                input: (*input_flag).to_string(),
                flag: flag.to_string(),
            });
        }
    }
    Ok(())
}

/// The kinds of file a command writes, known by their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A PNG picture.
    Png,
    /// An mcugan model blob.
    ModelBlob,
    /// A safetensors file.
    Safetensors,
    /// Text (Markdown, JSON, CSV): any content.
    Text,
}

impl FileKind {
    fn name(self) -> &'static str {
        match self {
            FileKind::Png => "PNG",
            FileKind::ModelBlob => "model blob",
            FileKind::Safetensors => "safetensors",
            FileKind::Text => "text",
        }
    }
}

/// What the file at `path` holds, by its first bytes: `None` when it cannot be read.
pub fn sniff(path: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let mut file = fs::File::open(path).ok()?;
    let n = file.read(&mut head).ok()?;
    let head = &head[..n];
    Some(if head.starts_with(b"\x89PNG") {
        "a PNG picture"
    } else if head.starts_with(&mcugan_shared::format::MAGIC) {
        "a model blob"
    } else if head.starts_with(b"\x7fELF") {
        "an ELF executable"
    } else if looks_like_safetensors(head) {
        "a safetensors file"
    } else if head.is_empty() {
        "an empty file"
    } else {
        "data of another kind"
    })
}

fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && head[..8].iter().skip(4).all(|&b| b == 0)
}

/// Refuses to replace an existing `output` of another kind than `kind` (a PNG over a model
/// blob), or a directory, unless `force`.
pub fn refuse_other_kind(
    output: &Path,
    flag: &str,
    kind: FileKind,
    force: bool,
) -> Result<(), OverwriteError> {
    if force || !output.exists() {
        return Ok(());
    }
    let what = if output.is_dir() {
        "a directory"
    } else {
        match sniff(output) {
            Some(what) => what,
            None => return Ok(()),
        }
    };
    let same = match kind {
        FileKind::Png => what == "a PNG picture",
        FileKind::ModelBlob => what == "a model blob",
        FileKind::Safetensors => what == "a safetensors file",
        FileKind::Text => what == "data of another kind" || what == "an empty file",
    } || what == "an empty file";
    if same {
        return Ok(());
    }
    Err(OverwriteError::Exists {
        path: output.to_path_buf(),
        what: format!("{what}, not {}", kind.name()),
        flag: flag.to_string(),
    })
}

/// Refuses to replace an existing `output` at all unless `force` (a trained classifier).
pub fn refuse_existing(
    output: &Path,
    flag: &str,
    what: &str,
    force: bool,
) -> Result<(), OverwriteError> {
    if force || !output.exists() {
        return Ok(());
    }
    Err(OverwriteError::Exists {
        path: output.to_path_buf(),
        what: what.to_string(),
        flag: flag.to_string(),
    })
}

/// The files and directories a training run writes into its `--out` directory.
pub const RUN_ENTRIES: [&str; 6] = [
    mcugan_train::train::CHECKPOINT_FILE,
    mcugan_train::train::GENERATOR_FILE,
    mcugan_train::train::LOSS_LOG_FILE,
    mcugan_train::train::SUMMARY_FILE,
    mcugan_train::train::SAMPLES_DIR,
    mcugan_train::train::GENERATORS_DIR,
];

/// Prepares `dir` for a new training run: refuses one that holds a run unless `force`; with
/// `force`, removes the old run's entries ([`RUN_ENTRIES`]) and returns the other entries left
/// in `dir`, which the caller reports.
pub fn prepare_run_dir(dir: &Path, force: bool) -> anyhow::Result<Vec<PathBuf>> {
    let found: Vec<&str> = RUN_ENTRIES
        .iter()
        .copied()
        .filter(|entry| dir.join(entry).exists())
        .collect();
    if found.is_empty() {
        return Ok(Vec::new());
    }
    if !force {
        return Err(OverwriteError::ExistingRun {
            dir: dir.to_path_buf(),
            found: found.join(", "),
        }
        .into());
    }
    for entry in &found {
        let path = dir.join(entry);
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| anyhow::anyhow!("removing the old run's {}: {e}", path.display()))?;
    }
    let mut others: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    others.sort();
    Ok(others)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_sees_through_dot_dot_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.bin");
        fs::write(&a, b"x").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(same_file(&a, &dir.path().join("sub/../a.bin")));
        assert!(same_file(
            &dir.path().join("new"),
            &dir.path().join("sub/../new")
        ));
        assert!(!same_file(&a, &dir.path().join("b.bin")));
    }

    #[test]
    fn a_picture_does_not_replace_a_blob_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("model.mcg");
        fs::write(&blob, b"MCGN\x03....").unwrap();
        assert!(refuse_other_kind(&blob, "--png", FileKind::Png, false).is_err());
        assert!(refuse_other_kind(&blob, "--png", FileKind::Png, true).is_ok());
        assert!(refuse_other_kind(&blob, "--out", FileKind::ModelBlob, false).is_ok());
    }

    #[test]
    fn a_run_is_replaced_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        assert!(prepare_run_dir(dir.path(), false).unwrap().is_empty());
        fs::write(dir.path().join("losses.csv"), b"x").unwrap();
        fs::create_dir(dir.path().join("samples")).unwrap();
        fs::write(dir.path().join("model.mcg"), b"MCGN").unwrap();
        let err = prepare_run_dir(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("--resume") && err.contains("--force"), "{err}");
        let left = prepare_run_dir(dir.path(), true).unwrap();
        assert_eq!(left, vec![dir.path().join("model.mcg")]);
        assert!(!dir.path().join("samples").exists());
    }
}
