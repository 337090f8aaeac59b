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
    /// The networks: `gan` (gan.py's MLP, against bench/pytorch_reference.py) or `dcgan`
    /// (dcgan.py's, against bench/pytorch_dcgan.py).
    #[arg(long, default_value = "gan")]
    arch: String,
    /// Train on the first N images only (both trainers).
    #[arg(long)]
    limit: Option<usize>,
}

pub(crate) fn bench_train(root: &Path, args: Args) -> Result<()> {
    let Args {
        epochs,
        threads,
        data,
        arch,
        limit,
    } = args;
    let dcgan = match arch.as_str() {
        "gan" => false,
        "dcgan" => true,
        other => bail!("--arch {other}: gan or dcgan"),
    };
    setup(root, false)?;
    build_host_cli(root)?;
    make_data(root, Profile::Release)?;
    let python = python_venv(
        root,
        ".venv-bench",
        "PyTorch (CPU), for the comparison",
        &["torch", "numpy", "safetensors", "pillow"],
    )?;
    let out = root.join("runs/bench-train");
    std::fs::create_dir_all(&out)?;
    let epochs_s = epochs.to_string();
    let threads_s = threads.to_string();
    let limit_s = limit.map(|l| l.to_string());
    let mut results = Vec::new();
    let mut images = 0.0;
    let ours: &[(&str, &str)] = if dcgan {
        &[("mcugan --arch dcgan, candle autograd", "candle")]
    } else {
        &[
            ("mcugan, fused CPU step (default)", "fused"),
            ("mcugan, candle autograd (--engine candle)", "candle"),
        ]
    };
    for &(label, engine) in ours {
        step(&format!("{label}: {epochs} epochs, {threads} threads"));
        let run_dir = out.join(format!("mcugan-{arch}-{engine}"));
        let run_dir_s = run_dir.to_string_lossy().into_owned();
        let mut command_line = vec![
            "--threads",
            &threads_s,
            "train",
            "--arch",
            &arch,
            "--data",
            &data,
            "--epochs",
            &epochs_s,
            "--engine",
            engine,
            "--out",
            &run_dir_s,
            "--quiet",
            // The benchmark's own scratch runs: replaced on every benchmark.
            "--force",
        ];
        if let Some(limit) = &limit_s {
            command_line.extend(["--limit", limit]);
        }
        let ours = mcugan(root, &command_line)
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
    let theirs: &[(&str, Option<&str>)] = if dcgan {
        &[("PyTorch dcgan.py, data held in memory", None)]
    } else {
        &[
            ("PyTorch, data held in memory", None),
            ("PyTorch, the reference's DataLoader", Some("--dataloader")),
        ]
    };
    let script = if dcgan {
        "bench/pytorch_dcgan.py"
    } else {
        "bench/pytorch_reference.py"
    };
    for &(label, extra) in theirs {
        step(&format!("{label}: {epochs} epochs, {threads} threads"));
        let mut command = Command::new(&python);
        command.arg(root.join(script)).args([
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
        if let Some(limit) = &limit_s {
            command.args(["--limit", limit]);
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
        "## Training speed, {arch}: {data}{}, {epochs} epochs (first epoch left out), {threads} threads, {cpu}, {cores} cores\n\n\
         | trainer | s/epoch | images/s | mcugan speed-up |\n|---|---:|---:|---:|\n",
        limit.map_or(String::new(), |l| format!(" (first {l} images)"))
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
    let file = out.join(format!("train-{arch}.md"));
    std::fs::write(&file, &report)?;
    eprintln!("written to {}", file.display());
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
