//! `cargo xtask fid-curve`: quality against training time for one recipe and seed, the
//! measurement behind the README's recipe table.
//!
//! It trains with `mcugan train --save-every K` (any further `mcugan train` options pass
//! through), evaluates every kept generator with `mcugan eval` (FID, classes covered against the
//! held-out digits), and writes `fid-curve.csv` into the run: epoch, training seconds so far,
//! FID, classes covered.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{mcugan, read_json, run, setup, step, USAGE};

/// Runs the task with its options: `--out DIR --every K [mcugan train options…]`.
pub fn fid_curve(root: &Path, args: &[String]) -> Result<()> {
    let mut out = None;
    let mut every = 10usize;
    let mut train_args = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--out" => {
                out = Some(PathBuf::from(
                    rest.next().context("--out needs a directory")?,
                ))
            }
            "--every" => {
                every = rest
                    .next()
                    .context("--every needs a number of epochs")?
                    .parse()
                    .context("--every needs a number of epochs")?
            }
            "--save-every" | "--sample-interval" => {
                bail!("{arg} is set by fid-curve itself (use --every)\n{USAGE}")
            }
            other => train_args.push(other.to_string()),
        }
    }
    let out = out.context("fid-curve needs --out DIR (a new run directory)")?;
    if every == 0 {
        bail!("--every needs at least 1 epoch");
    }
    setup(root, false)?;
    step("building the host CLI (release)");
    run(crate::cargo(&["build", "--release", "-p", "mcugan"]))?;
    let out_str = out.to_string_lossy().into_owned();
    let every_str = every.to_string();
    let mut train = vec![
        "train",
        "--out",
        &out_str,
        "--save-every",
        &every_str,
        "--sample-interval",
        "0",
    ];
    train.extend(train_args.iter().map(String::as_str));
    step(&format!(
        "training, keeping the generator every {every} epochs"
    ));
    run(mcugan(root, &train))?;

    let summary = read_json(&out.join("train-summary.json"))?;
    let seconds: Vec<f64> = summary
        .get("epoch_seconds")
        .and_then(Value::as_array)
        .context("train-summary.json has no epoch_seconds")?
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    let data = summary
        .get("data_dir")
        .and_then(Value::as_str)
        .context("train-summary.json has no data_dir")?
        .to_string();
    step("measuring every kept generator (mcugan eval)");
    let mut csv = String::from("epoch,train_seconds,fid,classes_covered\n");
    for epoch in (every..=seconds.len()).step_by(every) {
        let generator = out.join(format!("generators/epoch-{epoch}.safetensors"));
        let json = out.join(format!("generators/epoch-{epoch}.eval.json"));
        run(mcugan(
            root,
            &[
                "eval",
                &generator.to_string_lossy(),
                "--data",
                &data,
                "--no-calibration",
                "--json",
                &json.to_string_lossy(),
                "--force",
            ],
        ))?;
        let row = read_json(&json)?
            .pointer("/rows/0")
            .cloned()
            .context("the eval file has no row")?;
        let fid = row.get("fid").and_then(Value::as_f64).context("no FID")?;
        let covered = row
            .get("classes_covered")
            .and_then(Value::as_u64)
            .context("no class coverage")?;
        let trained: f64 = seconds[..epoch].iter().sum();
        writeln!(csv, "{epoch},{trained:.1},{fid:.2},{covered}")?;
    }
    let path = out.join("fid-curve.csv");
    std::fs::write(&path, &csv).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("\n{csv}wrote {}", path.display());
    Ok(())
}
