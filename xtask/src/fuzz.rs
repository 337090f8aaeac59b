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

/// The targets that need a feature of the fuzz crate, and which: `host` (the model tools and
/// the training crate, candle) or `onnx` (the importer, tract): long builds under the sanitizer.
pub(crate) const FEATURE_FUZZ_TARGETS: [(&str, &str); 3] = [
    ("idx_reader", "host"),
    ("checkpoint", "host"),
    ("onnx_import", "onnx"),
];

/// The ONNX importer's promise: no refusal takes more than 200 MB, so no single allocation of
/// it may (libFuzzer reports one as a finding).
fn malloc_limit(target: &str) -> Option<&'static str> {
    (target == "onnx_import").then_some("-malloc_limit_mb=200")
}

/// The memory the fuzzing process may take (libFuzzer reports an input that takes it past this
/// as a finding): the sanitizer's and the corpus's share included.
fn rss_limit_mb(target: &str) -> u32 {
    if target == "onnx_import" {
        1024
    } else {
        4096
    }
}

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
        if let Some((_, feature)) = FEATURE_FUZZ_TARGETS.iter().find(|(t, _)| t == target) {
            command.args(["--features", feature]);
        }
        let output = command
            .arg(&work)
            .arg(fuzz_dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-max_len=65536")
            .arg(format!("-rss_limit_mb={}", rss_limit_mb(target)))
            .args(malloc_limit(target))
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
