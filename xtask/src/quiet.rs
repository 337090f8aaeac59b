//! Long, chatty steps (apt, rustup, `cargo install`, cargo builds) shown as one line each.
//!
//! A newcomer's first `cargo xtask demo` used to print hundreds of lines of package-manager and
//! compiler output. Here each step's output goes to one log file (`target/xtask/steps.log`,
//! appended, the command line before each step's output) and the terminal shows one line per
//! step: what it does, a ticking elapsed time (and for cargo builds the crates compiled so far)
//! while it runs, and how long it took. When a step fails, the end of its output is printed with
//! the log's path, so nothing is hidden when it matters.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Lines of a failed step's output shown on the terminal.
const TAIL_LINES: usize = 40;

/// The log file every quiet step appends to.
pub fn log_path(root: &Path) -> PathBuf {
    root.join("target/xtask/steps.log")
}

/// Runs `command` as the step `what`: output to the log, one line on the terminal.
pub fn run(root: &Path, what: &str, command: &mut Command) -> Result<()> {
    run_counting(root, what, command, false)
}

/// Runs a cargo build as the step `what`, counting the crates it compiles: cargo's JSON
/// messages are read from its standard output, its rendered diagnostics go to the log.
pub fn cargo_build(root: &Path, what: &str, command: &mut Command) -> Result<()> {
    command.arg("--message-format=json-render-diagnostics");
    run_counting(root, what, command, true)
}

fn open_log(root: &Path) -> Result<(PathBuf, File)> {
    let path = log_path(root);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((path, file))
}

fn run_counting(root: &Path, what: &str, command: &mut Command, count_crates: bool) -> Result<()> {
    let (log, mut file) = open_log(root)?;
    let shown = format!("{command:?}");
    writeln!(file, "\n$ {shown}").with_context(|| format!("writing {}", log.display()))?;
    let start = file.metadata().map(|m| m.len()).unwrap_or(0);
    let stdout = if count_crates {
        Stdio::piped()
    } else {
        Stdio::from(file.try_clone()?)
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(file.try_clone()?))
        .spawn()
        .with_context(|| format!("could not start {shown}"))?;
    let compiled = Arc::new(AtomicUsize::new(0));
    let reader = child.stdout.take().map(|out| {
        let compiled = Arc::clone(&compiled);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(std::io::Result::ok) {
                if line.contains("\"reason\":\"compiler-artifact\"") {
                    compiled.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });

    let terminal = std::io::stderr().is_terminal();
    let began = Instant::now();
    let progress = |seconds: u64| {
        let crates = compiled.load(Ordering::Relaxed);
        if count_crates {
            format!("{crates} crates, {seconds} s")
        } else {
            format!("{seconds} s")
        }
    };
    if !terminal {
        eprint!("  {what} …");
    }
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for a step")? {
            break status;
        }
        if terminal {
            eprint!(
                "\r\x1b[2K  {what} … {}",
                progress(began.elapsed().as_secs())
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    let seconds = began.elapsed().as_secs();
    if terminal {
        eprint!("\r\x1b[2K  {what} …");
    }
    if status.success() {
        eprintln!(" done ({})", progress(seconds));
        return Ok(());
    }
    eprintln!(" FAILED ({status})");
    print_tail(&log, start);
    bail!(
        "{what} failed: {shown} ({status}); its whole output is in {}",
        log.display()
    )
}

/// Prints the last lines of what the log received from offset `start` on.
fn print_tail(log: &Path, start: u64) {
    let Ok(text) = fs::read(log) else {
        return;
    };
    let text = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    eprintln!("--- last {} lines of its output ---", lines.len() - from);
    for line in &lines[from..] {
        eprintln!("{line}");
    }
    eprintln!("--- (all of it: {}) ---", log.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_logs_its_output_and_a_failure_names_the_log() {
        let root = std::env::temp_dir().join(format!("mcugan-quiet-{}", std::process::id()));
        run(
            &root,
            "saying hello",
            Command::new("sh").args(["-c", "echo hello"]),
        )
        .unwrap();
        let err = run(
            &root,
            "failing",
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
        )
        .unwrap_err()
        .to_string();
        let log = fs::read_to_string(log_path(&root)).unwrap();
        assert!(log.contains("hello") && log.contains("boom"), "{log}");
        assert!(
            err.contains("failing failed") && err.contains("steps.log"),
            "{err}"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
