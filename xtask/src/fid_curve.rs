//! `cargo xtask fid-curve`: quality against training time for one recipe over several seeds,
//! the measurement behind the README's recipe table.
//!
//! For each seed it trains with `mcugan train --seed S --save-every K` into `DIR/seed-S` (any
//! further `mcugan train` options pass through), evaluates every kept generator with `mcugan
//! eval` (FID and classes covered against the held-out digits), and writes
//! `DIR/seed-S/fid-curve.csv` (epoch, training seconds so far, FID, classes covered). With more
//! than one seed, `DIR/fid-curve.csv` holds the spread per epoch: median, best and worst FID,
//! the fewest classes covered, and the median training time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{mcugan, read_json, run, setup, step, USAGE};

/// One kept generator's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    epoch: usize,
    train_seconds: f64,
    fid: f64,
    classes_covered: u64,
}

/// Runs the task with its options: `--out DIR [--every K] [--seeds A,B,…] [train options…]`.
pub fn fid_curve(root: &Path, args: &[String]) -> Result<()> {
    let mut out = None;
    let mut every = 10usize;
    let mut seeds = vec![0u64];
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
            "--seeds" => {
                seeds = rest
                    .next()
                    .context("--seeds needs a list such as 0,1,2,3,4")?
                    .split(',')
                    .map(|s| s.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .context("--seeds needs a list of numbers such as 0,1,2,3,4")?
            }
            "--save-every" | "--sample-interval" | "--seed" => {
                bail!("{arg} is set by fid-curve itself (--every, --seeds)\n{USAGE}")
            }
            other => train_args.push(other.to_string()),
        }
    }
    let out = out.context("fid-curve needs --out DIR")?;
    if every == 0 {
        bail!("--every needs at least 1 epoch");
    }
    if seeds.is_empty() {
        bail!("--seeds needs at least one seed");
    }
    setup(root, false)?;
    crate::build_host_cli(root)?;
    let mut curves = Vec::new();
    for &seed in &seeds {
        let dir = out.join(format!("seed-{seed}"));
        let curve = one_seed(root, &dir, seed, every, &train_args)?;
        let csv = seed_csv(&curve);
        let path = dir.join("fid-curve.csv");
        std::fs::write(&path, &csv).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("\nseed {seed}:\n{csv}wrote {}", path.display());
        curves.push(curve);
    }
    if curves.len() > 1 {
        let csv = spread_csv(&curves)?;
        let path = out.join("fid-curve.csv");
        std::fs::write(&path, &csv).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("\nseeds {seeds:?}:\n{csv}wrote {}", path.display());
    }
    Ok(())
}

/// Trains one seed into `dir` and measures its kept generators.
fn one_seed(
    root: &Path,
    dir: &Path,
    seed: u64,
    every: usize,
    train_args: &[String],
) -> Result<Vec<Point>> {
    let dir_str = dir.to_string_lossy().into_owned();
    let every_str = every.to_string();
    let seed_str = seed.to_string();
    let mut train = vec![
        "train",
        "--out",
        &dir_str,
        "--seed",
        &seed_str,
        "--save-every",
        &every_str,
        "--sample-interval",
        "0",
    ];
    train.extend(train_args.iter().map(String::as_str));
    step(&format!(
        "seed {seed}: training, keeping the generator every {every} epochs"
    ));
    run(mcugan(root, &train))?;

    let summary = read_json(&dir.join("train-summary.json"))?;
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
    step(&format!(
        "seed {seed}: measuring every kept generator (mcugan eval)"
    ));
    let mut curve = Vec::new();
    for epoch in (every..=seconds.len()).step_by(every) {
        let generator = dir.join(format!("generators/epoch-{epoch}.safetensors"));
        let json = dir.join(format!("generators/epoch-{epoch}.eval.json"));
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
        curve.push(Point {
            epoch,
            train_seconds: seconds[..epoch].iter().sum(),
            fid: row.get("fid").and_then(Value::as_f64).context("no FID")?,
            classes_covered: row
                .get("classes_covered")
                .and_then(Value::as_u64)
                .context("no class coverage")?,
        });
    }
    Ok(curve)
}

fn seed_csv(curve: &[Point]) -> String {
    let mut csv = String::from("epoch,train_seconds,fid,classes_covered\n");
    for p in curve {
        let _ = writeln!(
            csv,
            "{},{:.1},{:.2},{}",
            p.epoch, p.train_seconds, p.fid, p.classes_covered
        );
    }
    csv
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The spread over seeds at every epoch all curves measured.
fn spread_csv(curves: &[Vec<Point>]) -> Result<String> {
    let mut csv = String::from(
        "epoch,median_train_seconds,median_fid,best_fid,worst_fid,fewest_classes,seeds\n",
    );
    let first = curves.first().context("no curves")?;
    for (i, p) in first.iter().enumerate() {
        let points: Vec<Point> = curves.iter().filter_map(|c| c.get(i).copied()).collect();
        if points.len() != curves.len() || points.iter().any(|q| q.epoch != p.epoch) {
            bail!("the seeds' runs kept different epochs");
        }
        let mut fids: Vec<f64> = points.iter().map(|q| q.fid).collect();
        let mut seconds: Vec<f64> = points.iter().map(|q| q.train_seconds).collect();
        let best = fids.iter().copied().fold(f64::INFINITY, f64::min);
        let worst = fids.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let fewest = points.iter().map(|q| q.classes_covered).min().unwrap_or(0);
        writeln!(
            csv,
            "{},{:.1},{:.2},{best:.2},{worst:.2},{fewest},{}",
            p.epoch,
            median(&mut seconds),
            median(&mut fids),
            points.len()
        )?;
    }
    Ok(csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(epoch: usize, fid: f64, classes_covered: u64) -> Point {
        Point {
            epoch,
            train_seconds: epoch as f64 * 2.0,
            fid,
            classes_covered,
        }
    }

    #[test]
    fn the_spread_has_median_best_worst_and_fewest_classes() {
        let curves = vec![
            vec![point(10, 300.0, 8), point(20, 90.0, 10)],
            vec![point(10, 200.0, 9), point(20, 70.0, 10)],
            vec![point(10, 100.0, 10), point(20, 80.0, 9)],
        ];
        let csv = spread_csv(&curves).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[1], "10,20.0,200.00,100.00,300.00,8,3");
        assert_eq!(lines[2], "20,40.0,80.00,70.00,90.00,9,3");
        let uneven = vec![vec![point(10, 1.0, 10)], vec![point(20, 1.0, 10)]];
        assert!(spread_csv(&uneven).is_err());
    }
}
