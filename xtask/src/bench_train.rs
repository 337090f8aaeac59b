//! `cargo xtask bench-train`: training speed, ours beside the PyTorch reference script.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::*;
use crate::util::*;

/// Training speed, ours beside the PyTorch reference script, same data, threads and epochs.
/// `cargo xtask bench-train`'s options.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Epochs each trainer runs (the first is left out of the speed, as warm-up).
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// CPU threads for both.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The data set.
    #[arg(long, default_value = "data/mnist-digits")]
    data: String,
}

pub(crate) fn bench_train(root: &Path, args: Args) -> Result<()> {
    let Args {
        epochs,
        threads,
        data,
    } = args;
    setup(root, false)?;
    build_host_cli(root)?;
    make_data(root, Profile::Release)?;
    let python = python_venv(
        root,
        ".venv-bench",
        "PyTorch (CPU), for the comparison",
        &["torch", "numpy", "safetensors"],
    )?;
    let out = root.join("runs/bench-train");
    std::fs::create_dir_all(&out)?;
    let epochs_s = epochs.to_string();
    let threads_s = threads.to_string();
    let mut results = Vec::new();
    let mut images = 0.0;
    for (label, engine) in [
        ("mcugan, fused CPU step (default)", "fused"),
        ("mcugan, candle autograd (--engine candle)", "candle"),
    ] {
        step(&format!("{label}: {epochs} epochs, {threads} threads"));
        let run_dir = out.join(format!("mcugan-{engine}"));
        let ours = mcugan(
            root,
            &[
                "--threads",
                &threads_s,
                "train",
                "--data",
                &data,
                "--epochs",
                &epochs_s,
                "--engine",
                engine,
                "--out",
                &run_dir.to_string_lossy(),
                "--quiet",
                // The benchmark's own scratch runs: replaced on every benchmark.
                "--force",
            ],
        )
        .output()
        .context("running mcugan train")?;
        if !ours.status.success() {
            bail!(
                "mcugan train failed: {}",
                String::from_utf8_lossy(&ours.stderr)
            );
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("train-summary.json"))?)?;
        images = summary["images"].as_u64().unwrap_or(0) as f64;
        results.push((
            label.to_string(),
            seconds_after_first(&summary["epoch_seconds"]),
        ));
    }
    for (label, extra) in [
        ("PyTorch, data held in memory", None),
        ("PyTorch, the reference's DataLoader", Some("--dataloader")),
    ] {
        step(&format!("{label}: {epochs} epochs, {threads} threads"));
        let mut command = Command::new(&python);
        command.arg(root.join("bench/pytorch_reference.py")).args([
            "train",
            "--data",
            &data,
            "--epochs",
            &epochs_s,
            "--threads",
            &threads_s,
        ]);
        if let Some(flag) = extra {
            command.arg(flag);
        }
        let output = command.output().context("running the PyTorch reference")?;
        if !output.status.success() {
            bail!(
                "the PyTorch reference failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout
            .lines()
            .last()
            .context("no summary from the PyTorch script")?;
        let summary: serde_json::Value = serde_json::from_str(line)?;
        results.push((
            label.to_string(),
            seconds_after_first(&summary["epoch_seconds"]),
        ));
    }
    let cpu = cpu_name();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = format!(
        "## Training speed: {data}, {epochs} epochs (first epoch left out), {threads} threads, {cpu}, {cores} cores\n\n\
         | trainer | s/epoch | images/s | mcugan speed-up |\n|---|---:|---:|---:|\n"
    );
    let ours_s = results[0].1;
    for (label, s) in &results {
        report += &format!(
            "| {label} | {s:.2} | {:.0} | {:.2}x |\n",
            images / s,
            s / ours_s
        );
    }
    eprintln!("\n{report}");
    std::fs::write(out.join("train.md"), &report)?;
    eprintln!("written to {}", out.join("train.md").display());
    Ok(())
}

/// Mean of the epoch times after the first (warm-up) one, or of all if there is only one.
pub(crate) fn seconds_after_first(epochs: &serde_json::Value) -> f64 {
    let times: Vec<f64> = epochs
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_f64()).collect())
        .unwrap_or_default();
    let kept = if times.len() > 1 {
        &times[1..]
    } else {
        &times[..]
    };
    kept.iter().sum::<f64>() / kept.len().max(1) as f64
}

/// The CPU's model name, as /proc/cpuinfo gives it.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}
