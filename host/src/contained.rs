//! Running the ONNX importer where a crash cannot take the command down: a child process
//! (this executable's hidden `check-onnx` subcommand) with a memory limit and a time limit.
//! Its exit tells the parent what happened: 0 imported, 2 refused (the reason on its stderr),
//! a signal or an abort a crash inside tract, which the parent names.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// The most memory (data segment) the child may take: far more than any refusal needs (the
/// checks run before weights load) and than the largest generator the format holds.
pub const CHILD_MEMORY_BYTES: u64 = 3 << 30;
/// How long the child may take before it is stopped.
pub const CHILD_SECONDS: u64 = 300;
/// The exit status of a child that refused the file (its reason on stderr).
pub const REFUSED: i32 = 2;

/// Imports `path` in a child process and returns `Ok` when that worked; a refusal or a crash
/// becomes an error that names the file.
pub fn check_in_child(path: &Path) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the mcugan executable")?;
    let mut command = Command::new(exe);
    command
        .arg("check-onnx")
        .arg(path)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    limit_child(&mut command);
    let mut child = command.spawn().context("starting the ONNX check")?;
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            let _ = stderr.take(64 * 1024).read_to_string(&mut text);
        }
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > Duration::from_secs(CHILD_SECONDS) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{}: importing the graph took more than {CHILD_SECONDS} s; the file is refused",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap_or_default();
    let last = text.trim().lines().last().unwrap_or_default().to_string();
    match status.code() {
        Some(0) => Ok(()),
        Some(REFUSED) => bail!("{}", text.trim_end()),
        code => {
            let what = if text.contains("overflowed its stack") {
                "it overflowed its stack".to_string()
            } else if text.contains("memory allocation of") {
                format!(
                    "it needed more than the {} GiB of memory allowed",
                    CHILD_MEMORY_BYTES >> 30
                )
            } else {
                match (code, signal(&status)) {
                    (_, Some(6)) => "it aborted".to_string(),
                    (_, Some(11)) => "it crashed on a memory fault, signal 11".to_string(),
                    (_, Some(signal)) => format!("it ended on signal {signal}"),
                    (Some(code), None) => format!("it exited with status {code}: {last}"),
                    (None, None) => "it ended".to_string(),
                }
            };
            bail!(
                "{}: tract-onnx crashed analysing this graph ({what}); the file is refused",
                path.display()
            )
        }
    }
}

#[cfg(unix)]
fn signal(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn signal(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// Limits the child's memory and turns off its core dumps.
#[cfg(unix)]
fn limit_child(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only setrlimit, which is async-signal-safe, is called.
    unsafe {
        command.pre_exec(|| {
            let memory = libc::rlimit {
                rlim_cur: CHILD_MEMORY_BYTES as libc::rlim_t,
                rlim_max: CHILD_MEMORY_BYTES as libc::rlim_t,
            };
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_DATA, &memory);
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn limit_child(_command: &mut Command) {}
