//! Writing files so that a crash or a kill never leaves a half-written one behind, and so that
//! the same content always gives the same bytes.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file beside it (tempfile's, removed if
/// anything fails) is written, flushed to disk and renamed over `path`, so readers see the old
/// file or the new one, never a mix. The new file has the usual permissions (0666 less the
/// umask), not a temporary file's 0600.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    remove_stale_temporaries(dir, name);
    let mut prefix = temporary_prefix(name);
    prefix.push(format!("{}.", std::process::id()));
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut file = builder.tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    // Make the rename itself durable.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// The start of the names of [`write_atomically`]'s temporaries for the file `name`:
/// `.NAME.`, then the writer's process id, a dot, random letters and `.tmp`.
fn temporary_prefix(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    prefix
}

/// Removes the temporaries that earlier writers of `name` in `dir` left behind when they were
/// killed (`kill -9`, a power cut) before renaming them: those whose process is gone, or, where
/// that cannot be told, that are a day old.
fn remove_stale_temporaries(dir: &Path, name: &std::ffi::OsStr) {
    let prefix = temporary_prefix(name);
    let Some(prefix) = prefix.to_str() else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .filter(|rest| rest.ends_with(".tmp"))
        else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let stale = match pid {
            Some(pid) if pid == std::process::id() => false,
            Some(pid) if Path::new("/proc/self").exists() => {
                !Path::new(&format!("/proc/{pid}")).exists()
            }
            _ => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 24 * 3600),
        };
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// `safetensors::serialize` with the header's keys in sorted order. The crate writes the
/// `__metadata__` map in `HashMap` order, which changes from process to process; re-encoding the
/// JSON header (serde_json's maps are sorted) makes the same tensors and metadata give the same
/// bytes, so two runs of a command with the same seed write identical files.
pub fn safetensors_bytes<V: safetensors::View>(
    tensors: impl IntoIterator<Item = (String, V)>,
    metadata: std::collections::HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let bytes = safetensors::serialize(tensors, Some(metadata))?;
    let header_len = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .ok_or_else(|| anyhow::anyhow!("safetensors wrote no header"))?;
    let header_end = 8 + usize::try_from(header_len)?;
    let header: serde_json::Value = serde_json::from_slice(
        bytes
            .get(8..header_end)
            .ok_or_else(|| anyhow::anyhow!("safetensors wrote a short header"))?,
    )?;
    let mut sorted = serde_json::to_vec(&header)?;
    while !sorted.len().is_multiple_of(8) {
        sorted.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + sorted.len() + bytes.len() - header_end);
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[header_end..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_metadata_is_written_in_one_order() {
        let data: Vec<u8> = [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data).unwrap();
        let meta: std::collections::HashMap<String, String> = (0..20)
            .map(|i| (format!("key{i}"), i.to_string()))
            .collect();
        let a = safetensors_bytes([("t".to_string(), tensor.clone())], meta.clone()).unwrap();
        // Another HashMap of the same entries iterates in another order.
        let other: std::collections::HashMap<String, String> = meta.into_iter().collect();
        let b = safetensors_bytes([("t".to_string(), tensor)], other).unwrap();
        assert_eq!(a, b);
        let loaded = safetensors::SafeTensors::deserialize(&a).unwrap();
        assert_eq!(loaded.names().len(), 1);
    }

    #[test]
    fn a_killed_writers_temporary_is_removed_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.mcg");
        // A process id that no process has (beyond Linux's pid_max).
        let dead = dir.path().join(".m.mcg.4194399.Ab12Cd.tmp");
        let other_file = dir.path().join(".other.mcg.4194399.Ab12Cd.tmp");
        fs::write(&dead, b"half").unwrap();
        fs::write(&other_file, b"half").unwrap();
        write_atomically(&path, b"whole").unwrap();
        assert!(!dead.exists());
        assert!(
            other_file.exists(),
            "another file's temporary is not touched"
        );
        assert_eq!(fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
