//! Long, chatty steps (apt, rustup, `cargo install`, cargo builds) shown as one line each.
//!
//! A newcomer's first `cargo xtask demo` used to print hundreds of lines of package-manager and
//! compiler output. Here each step's output goes to one log file (`target/xtask/steps.log`,
//! appended, the command line before each step's output) and the terminal shows one line per
//! step: what it does, a ticking elapsed time (and for cargo builds the crates compiled so far)
//! while it runs, and how long it took. When a step fails, the end of its output is printed with
//! the log's path, so nothing is hidden when it matters.
//!
//! Steps can also run in the background ([`in_background`]), beside a foreground build: they
//! write to their own log and keep their one-line reports until the caller prints them, so two
//! steps never share a terminal line.

use std::cell::RefCell;
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

/// The log file of steps run [`in_background`].
pub fn background_log_path(root: &Path) -> PathBuf {
    root.join("target/xtask/background-steps.log")
}

thread_local! {
    /// Set while this thread runs steps in the background: their report lines, kept.
    static BACKGROUND: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `work` with its quiet steps in the background mode: nothing on the terminal, output
/// to [`background_log_path`]. Returns what `work` returned and the steps' report lines
/// (`what … done (N s)`, or the failure and its output's tail) for the caller to print.
pub fn in_background<T>(work: impl FnOnce() -> Result<T>) -> (Result<T>, Vec<String>) {
    BACKGROUND.with(|b| *b.borrow_mut() = Some(Vec::new()));
    let result = work();
    let lines = BACKGROUND
        .with(|b| b.borrow_mut().take())
        .unwrap_or_default();
    (result, lines)
}

fn in_background_mode() -> bool {
    BACKGROUND.with(|b| b.borrow().is_some())
}

/// Prints a step's report line now, or keeps it when the step runs in the background.
fn report(line: String) {
    BACKGROUND.with(|b| match b.borrow_mut().as_mut() {
        Some(kept) => kept.push(line),
        None => eprintln!("{line}"),
    });
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
    let path = if in_background_mode() {
        background_log_path(root)
    } else {
        log_path(root)
    };
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

    let background = in_background_mode();
    let terminal = !background && std::io::stderr().is_terminal();
    let began = Instant::now();
    let progress = |seconds: u64| {
        let crates = compiled.load(Ordering::Relaxed);
        if count_crates {
            format!("{crates} crates, {seconds} s")
        } else {
            format!("{seconds} s")
        }
    };
    if !terminal && !background {
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
    // In the background the line is reported whole; in the foreground its start is shown.
    let head = if background {
        format!("  {what} …")
    } else {
        String::new()
    };
    if status.success() {
        report(format!("{head} done ({})", progress(seconds)));
        return Ok(());
    }
    report(format!("{head} FAILED ({status})"));
    report(tail(&log, start));
    bail!(
        "{what} failed: {shown} ({status}); its whole output is in {}",
        log.display()
    )
}

/// The last lines of what the log received from offset `start` on, framed for the terminal.
fn tail(log: &Path, start: u64) -> String {
    let Ok(text) = fs::read(log) else {
        return format!("--- (its output: {}) ---", log.display());
    };
    let text = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default());
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(TAIL_LINES);
    let mut shown = format!("--- last {} lines of its output ---\n", lines.len() - from);
    for line in &lines[from..] {
        shown += line;
        shown.push('\n');
    }
    shown + &format!("--- (all of it: {}) ---", log.display())
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

    #[test]
    fn background_steps_keep_their_lines_and_their_own_log() {
        let root = std::env::temp_dir().join(format!("mcugan-quiet-bg-{}", std::process::id()));
        let (result, lines) = in_background(|| {
            run(
                &root,
                "saying hello quietly",
                Command::new("sh").args(["-c", "echo hello-bg"]),
            )?;
            run(
                &root,
                "failing quietly",
                Command::new("sh").args(["-c", "echo boom-bg >&2; exit 3"]),
            )
        });
        assert!(result.is_err());
        assert!(
            lines[0].contains("saying hello quietly … done"),
            "{lines:?}"
        );
        assert!(lines[1].contains("failing quietly … FAILED"), "{lines:?}");
        assert!(lines[2].contains("boom-bg"), "{lines:?}");
        let log = fs::read_to_string(background_log_path(&root)).unwrap();
        assert!(log.contains("hello-bg"), "{log}");
        assert!(!log_path(&root).exists());
        fs::remove_dir_all(&root).unwrap();
    }
}
