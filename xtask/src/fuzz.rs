//! `cargo xtask fuzz`: a fuzzing campaign over the cargo-fuzz targets.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::*;

/// The cargo-fuzz targets in fuzz/, each with its seed folder fuzz/corpus/<target>.
pub(crate) const FUZZ_TARGETS: [&str; 5] = [
    "parse_model",
    "stream_records",
    "idx_reader",
    "checkpoint",
    "onnx_import",
];

/// The targets that need the fuzz crate's `host` feature (the host crates: candle and tract,
/// a long build under the sanitizer).
pub(crate) const HOST_FUZZ_TARGETS: [&str; 3] = ["idx_reader", "checkpoint", "onnx_import"];

/// `cargo xtask fuzz`: runs each target from its committed seeds (new inputs go to
/// target/fuzz-corpus, so the seed folders stay as committed) and prints a line per target
/// with libFuzzer's executions, speed and findings.
/// `cargo xtask fuzz`'s options.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// The targets to run (default: all).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(FUZZ_TARGETS))]
    targets: Vec<String>,
}

pub(crate) fn fuzz(root: &Path, args: Args) -> Result<()> {
    let Args {
        seconds,
        mut targets,
    } = args;
    if targets.is_empty() {
        targets = FUZZ_TARGETS.iter().map(|t| t.to_string()).collect();
    }
    step("checking the fuzzing tools (nightly toolchain, cargo-fuzz)");
    let toolchains = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&toolchains.stdout).contains("nightly") {
        eprintln!("installing the nightly toolchain (cargo-fuzz needs it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let has_fuzz = Command::new("rustup")
        .args(["run", "nightly", "cargo", "fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fuzz {
        eprintln!("installing cargo-fuzz");
        run(cargo(&["install", "cargo-fuzz", "--locked"]))?;
    }
    let fuzz_dir = root.join("fuzz");
    let mut summary = Vec::new();
    for target in &targets {
        step(&format!("fuzzing {target} for {seconds} s"));
        let work = root.join("target/fuzz-corpus").join(target);
        let artifacts = fuzz_dir.join("artifacts").join(target);
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&artifacts)?;
        let mut command = Command::new("rustup");
        command.args(["run", "nightly", "cargo", "fuzz", "run", target]);
        if HOST_FUZZ_TARGETS.contains(&target.as_str()) {
            command.args(["--features", "host"]);
        }
        let output = command
            .arg(&work)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-max_len=65536")
            .arg("-rss_limit_mb=4096")
            .current_dir(&fuzz_dir)
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .context("running cargo fuzz")?;
        let log = String::from_utf8_lossy(&output.stderr);
        let done = log
            .lines()
            .rev()
            .find(|l| l.contains("DONE") || l.starts_with("Done "))
            .unwrap_or("")
            .to_string();
        let findings = std::fs::read_dir(&artifacts).map_or(0, |d| d.count());
        let line = format!(
            "{target}: {} ({}), {findings} finding(s) in {}",
            if output.status.success() {
                "passed"
            } else {
                "FAILED"
            },
            done.trim(),
            artifacts.display()
        );
        if !output.status.success() {
            eprintln!(
                "{}",
                log.lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        eprintln!("{line}");
        summary.push((output.status.success(), line));
    }
    step("fuzzing summary");
    for (_, line) in &summary {
        println!("{line}");
    }
    if summary.iter().any(|(ok, _)| !ok) {
        bail!("a fuzz target failed; the input that broke it is in fuzz/artifacts/");
    }
    Ok(())
}
