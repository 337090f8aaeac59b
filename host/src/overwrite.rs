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
    /// Two outputs of one command name the same file.
    #[error(
        "{} is named by both {other} and {flag}: one would replace the other; choose two paths",
        output.display()
    )]
    TwoOutputs {
        /// The path.
        output: PathBuf,
        /// The second output's flag.
        flag: String,
        /// The first output's flag.
        other: String,
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

/// The paths one command reads and writes, checked together before it starts work: an output
/// is never one of the command's inputs (nor a file inside an input folder, such as a data
/// set's label file), never a second output of the same command, and never a file of another
/// kind unless `--force`.
///
/// Register every input first, then each output; an output is checked as it is registered.
pub struct OutputCheck {
    force: bool,
    inputs: Vec<(PathBuf, String)>,
    outputs: Vec<(PathBuf, String)>,
}

impl OutputCheck {
    /// A check for a command run with (`force`) or without `--force`.
    pub fn new(force: bool) -> Self {
        Self {
            force,
            inputs: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Registers an input file or folder, read under `flag`.
    pub fn input(&mut self, path: &Path, flag: &str) -> &mut Self {
        self.inputs.push((path.to_path_buf(), flag.to_string()));
        self
    }

    /// Registers and checks an output file of `kind`, written under `flag`.
    pub fn output(
        &mut self,
        path: &Path,
        flag: &str,
        kind: FileKind,
    ) -> Result<(), OverwriteError> {
        self.not_read_or_written(path, flag)?;
        refuse_other_kind(path, flag, kind, self.force)?;
        self.outputs.push((path.to_path_buf(), flag.to_string()));
        Ok(())
    }

    /// Registers and checks an output folder, written under `flag`: neither an input nor
    /// inside one, nor another output.
    pub fn output_dir(&mut self, dir: &Path, flag: &str) -> Result<(), OverwriteError> {
        self.not_read_or_written(dir, flag)?;
        self.outputs.push((dir.to_path_buf(), flag.to_string()));
        Ok(())
    }

    fn not_read_or_written(&self, output: &Path, flag: &str) -> Result<(), OverwriteError> {
        for (input, input_flag) in &self.inputs {
            let in_folder = input.is_dir() && output.exists() && inside(output, input);
            if same_file(output, input) || in_folder {
                return Err(OverwriteError::IsInput {
                    output: output.to_path_buf(),
                    input: if in_folder && !same_file(output, input) {
                        format!("{input_flag} folder's file")
                    } else {
                        input_flag.clone()
                    },
                    flag: flag.to_string(),
                });
            }
        }
        for (other, other_flag) in &self.outputs {
            if same_file(output, other) {
                return Err(OverwriteError::TwoOutputs {
                    output: output.to_path_buf(),
                    flag: flag.to_string(),
                    other: other_flag.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Whether `path` lies inside the folder `dir` (also through links or `..`).
fn inside(path: &Path, dir: &Path) -> bool {
    match (resolve(path), resolve(dir)) {
        (Some(path), Some(dir)) => path != dir && path.starts_with(&dir),
        _ => false,
    }
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
    let mut head = [0u8; 4096];
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
    } else if looks_like_text(head) {
        "a text file"
    } else {
        "data of another kind"
    })
}

/// UTF-8 without NUL bytes (a multi-byte character cut off at the end of `head` counts).
fn looks_like_text(head: &[u8]) -> bool {
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    }
}

fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{' && head[..8].iter().skip(4).all(|&b| b == 0)
}

/// Refuses to replace an existing `output` of another kind than `kind` (a PNG over a model
/// blob, a Markdown table over a data set's binary label file), or a directory, unless
/// `force`.
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
        FileKind::Text => what == "a text file",
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
    mcugan_train::run::CHECKPOINT_FILE,
    mcugan_train::run::GENERATOR_FILE,
    mcugan_train::run::LOSS_LOG_FILE,
    mcugan_train::run::SUMMARY_FILE,
    mcugan_train::run::SAMPLES_DIR,
    mcugan_train::run::GENERATORS_DIR,
];

/// The advisory lock file in a run directory, held by the run that writes there.
pub const RUN_LOCK_FILE: &str = ".mcugan-train.lock";

/// The lock on a run directory: while it lives, no other `mcugan train` writes there.
/// The operating system releases it when the process ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: fs::File,
}

/// Creates `dir` if needed and takes its run lock ([`RUN_LOCK_FILE`]); refuses, naming the
/// holder's process id, when another process holds it.
pub fn lock_run_dir(dir: &Path) -> anyhow::Result<RunLock> {
    use std::io::{Read, Seek, Write};
    fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let path = dir.join(RUN_LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("opening the run lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                String::new()
            } else {
                format!(" (process {holder})")
            };
            anyhow::bail!(
                "{} is in use by another mcugan train{by}: wait for it to finish, or choose \
                 another --out",
                dir.display()
            );
        }
        Err(fs::TryLockError::Error(e)) => {
            anyhow::bail!("locking {}: {e}", path.display())
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(RunLock { _file: file })
}

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
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_none_or(|n| n != RUN_LOCK_FILE))
                .collect()
        })
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
