//! `cargo xtask fid-curve`: quality against training time for one recipe over several seeds,
//! the measurement behind the book's recipe table (docs/src/training/recipes.md).
//!
//! For each seed it trains with `mcugan train --seed S --save-every K` into `DIR/seed-S` (any
//! further `mcugan train` options pass through), evaluates every kept generator with `mcugan
//! eval` (FID and classes covered against the held-out digits), and writes
//! `DIR/seed-S/fid-curve.csv` (epoch, training seconds so far, FID, classes covered). With more
//! than one seed, `DIR/fid-curve.csv` holds the spread per epoch: median, best and worst FID,
//! the fewest classes covered, and the median training time. `DIR/fid-curve.svg` draws the
//! curves (FID on a log scale against epochs, a line per seed, a dashed line at `--goal`);
//! `--replot` redraws it and the spread from the CSVs without training.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::setup::*;
use crate::util::*;

/// One kept generator's figures.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    epoch: usize,
    train_seconds: f64,
    fid: f64,
    classes_covered: u64,
}

/// Runs the task with its options: `--out DIR [--every K] [--seeds A,B,…] [--goal FID]
/// [--replot] [train options…]`.
/// `cargo xtask fid-curve`'s options: its own, and the `mcugan train` options it passes on
/// (all but the seed, the sample interval and --save-every, which it sets itself).
#[derive(clap::Args)]
pub struct Args {
    /// Where each seed's run and the curves go.
    #[arg(long)]
    out: PathBuf,
    /// Evaluate the generator kept every K epochs.
    #[arg(long, default_value_t = 10)]
    every: usize,
    /// The training seeds, one run each.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    seeds: Vec<u64>,
    /// Draw a dashed line at this FID.
    #[arg(long)]
    goal: Option<f64>,
    /// Redraw from the CSVs already measured; no training.
    #[arg(long)]
    replot: bool,
    #[command(flatten)]
    train: TrainOptions,
}

/// The `mcugan train` options that `fid-curve` passes on.
#[derive(clap::Args)]
struct TrainOptions {
    /// `mcugan train --data`.
    #[arg(long)]
    data: Option<String>,
    /// `mcugan train --epochs`.
    #[arg(long)]
    epochs: Option<usize>,
    /// `mcugan train --limit`.
    #[arg(long)]
    limit: Option<usize>,
    /// `mcugan train --batch-size`.
    #[arg(long)]
    batch_size: Option<usize>,
    /// `mcugan train --recipe`.
    #[arg(long)]
    recipe: Option<String>,
    /// `mcugan train --lr`.
    #[arg(long)]
    lr: Option<String>,
    /// `mcugan train --device`.
    #[arg(long)]
    device: Option<String>,
    /// `mcugan train --engine`.
    #[arg(long)]
    engine: Option<String>,
    /// `mcugan train --threads`.
    #[arg(long)]
    threads: Option<usize>,
    /// `mcugan train --conditional`.
    #[arg(long)]
    conditional: bool,
    /// `mcugan train --classes`.
    #[arg(long)]
    classes: Option<usize>,
    /// `mcugan train --arch`.
    #[arg(long)]
    arch: Option<String>,
    /// `mcugan train --spec`.
    #[arg(long)]
    spec: Option<String>,
    /// `mcugan train --quiet`.
    #[arg(long)]
    quiet: bool,
    /// `mcugan train --force`.
    #[arg(long)]
    force: bool,
}

impl TrainOptions {
    /// The options as `mcugan train` arguments.
    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        let mut add = |flag: &str, value: Option<String>| {
            if let Some(value) = value {
                args.extend([flag.to_string(), value]);
            }
        };
        add("--data", self.data.clone());
        add("--epochs", self.epochs.map(|n| n.to_string()));
        add("--limit", self.limit.map(|n| n.to_string()));
        add("--batch-size", self.batch_size.map(|n| n.to_string()));
        add("--recipe", self.recipe.clone());
        add("--lr", self.lr.clone());
        add("--device", self.device.clone());
        add("--engine", self.engine.clone());
        add("--threads", self.threads.map(|n| n.to_string()));
        add("--classes", self.classes.map(|n| n.to_string()));
        add("--arch", self.arch.clone());
        add("--spec", self.spec.clone());
        for (flag, on) in [
            ("--conditional", self.conditional),
            ("--quiet", self.quiet),
            ("--force", self.force),
        ] {
            if on {
                args.push(flag.to_string());
            }
        }
        args
    }
}

pub fn fid_curve(root: &Path, args: Args) -> Result<()> {
    let Args {
        out,
        every,
        seeds,
        goal,
        replot,
        train,
    } = args;
    let train_args = train.to_args();
    if every == 0 {
        bail!("--every needs at least 1 epoch");
    }
    if seeds.is_empty() {
        bail!("--seeds needs at least one seed");
    }
    if let Some(goal) = goal.filter(|g| !(g.is_finite() && *g > 0.0)) {
        bail!("--goal needs a positive FID (the picture's scale is logarithmic), got {goal}");
    }
    // A schedule shorter than --every keeps no generator: say so before training, not after.
    if let Some(epochs) = train.epochs.filter(|&n| n < every) {
        bail!("--epochs {epochs} is fewer than --every {every}: no generator would be kept");
    }
    if replot && !train_args.is_empty() {
        bail!("--replot reads the curves already measured: it takes no training options");
    }
    let mut curves = Vec::new();
    if replot {
        for &seed in &seeds {
            let path = out.join(format!("seed-{seed}")).join("fid-curve.csv");
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            curves.push(parse_seed_csv(&text).with_context(|| format!("in {}", path.display()))?);
        }
    } else {
        setup(root, false)?;
        build_host_cli(root)?;
        for &seed in &seeds {
            let dir = out.join(format!("seed-{seed}"));
            let curve = one_seed(root, &dir, seed, every, &train_args)?;
            let csv = seed_csv(&curve);
            let path = dir.join("fid-curve.csv");
            std::fs::write(&path, &csv).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("\nseed {seed}:\n{csv}wrote {}", path.display());
            curves.push(curve);
        }
    }
    if curves.len() > 1 {
        let csv = spread_csv(&curves)?;
        let path = out.join("fid-curve.csv");
        std::fs::write(&path, &csv).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("\nseeds {seeds:?}:\n{csv}wrote {}", path.display());
    }
    let labelled: Vec<(u64, &[Point])> = seeds
        .iter()
        .copied()
        .zip(curves.iter().map(Vec::as_slice))
        .collect();
    let path = out.join("fid-curve.svg");
    std::fs::write(&path, curve_svg(&labelled, goal)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} (FID against epochs, one line per seed)",
        path.display()
    );
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
    if seconds.len() < every {
        bail!(
            "the run trained {} epochs, fewer than --every {every}: no generator was kept",
            seconds.len()
        );
    }
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

/// Reads back what [`seed_csv`] wrote.
fn parse_seed_csv(text: &str) -> Result<Vec<Point>> {
    let mut lines = text.lines();
    if lines.next() != Some("epoch,train_seconds,fid,classes_covered") {
        bail!("not a fid-curve CSV (its first line is not the expected header)");
    }
    let curve = lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let [epoch, seconds, fid, classes] = fields[..] else {
                bail!("{line:?} does not have 4 fields");
            };
            Ok(Point {
                epoch: epoch
                    .parse()
                    .with_context(|| format!("epoch in {line:?}"))?,
                train_seconds: seconds
                    .parse()
                    .with_context(|| format!("seconds in {line:?}"))?,
                fid: fid.parse().with_context(|| format!("FID in {line:?}"))?,
                classes_covered: classes
                    .parse()
                    .with_context(|| format!("classes in {line:?}"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if curve.is_empty() {
        bail!("the CSV has no rows");
    }
    Ok(curve)
}

/// Colours of the seeds' lines, in turn.
const LINE_COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// A picture of the curves: FID (log scale) against epochs, one line per seed (labelled at its
/// end), a dashed line at `goal` if given. Plain SVG, so the book shows it as it is.
fn curve_svg(curves: &[(u64, &[Point])], goal: Option<f64>) -> Result<String> {
    let points = curves.iter().flat_map(|(_, c)| c.iter());
    let last_epoch = points
        .clone()
        .map(|p| p.epoch)
        .max()
        .context("no points to draw")?;
    let fids = points.map(|p| p.fid).chain(goal);
    let (mut low, mut high) = (f64::INFINITY, 0f64);
    for fid in fids {
        if !(fid.is_finite() && fid > 0.0) {
            bail!("an FID of {fid} cannot be drawn on a log scale");
        }
        (low, high) = (low.min(fid), high.max(fid));
    }
    // Whole decades below and above, so the grid has round numbers.
    let (y_min, y_max) = (
        10f64.powf(low.log10().floor()),
        10f64.powf(high.log10().ceil()),
    );
    let (left, top, width, height) = (60.0, 20.0, 560.0, 300.0);
    let x = |epoch: f64| left + width * epoch / last_epoch as f64;
    let y =
        |fid: f64| top + height * (y_max.log10() - fid.log10()) / (y_max.log10() - y_min.log10());
    let mut svg = String::new();
    writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="700" height="370" font-family="sans-serif" font-size="12">
<rect width="700" height="370" fill="white"/>
<text x="{}" y="360" text-anchor="middle">epochs</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">FID (log scale)</text>"##,
        left + width / 2.0,
        top + height / 2.0,
        top + height / 2.0,
    )?;
    let mut decade = y_min;
    while decade <= y_max * 1.001 {
        for step in [1.0, 2.0, 5.0] {
            let value = decade * step;
            if value > y_max * 1.001 {
                break;
            }
            writeln!(
                svg,
                r##"<line x1="{left}" x2="{right}" y1="{at:.1}" y2="{at:.1}" stroke="#ddd"/><text x="{label_x}" y="{label_y:.1}" text-anchor="end">{value}</text>"##,
                right = left + width,
                at = y(value),
                label_x = left - 6.0,
                label_y = y(value) + 4.0,
            )?;
        }
        decade *= 10.0;
    }
    let tick = (last_epoch / 10).max(1);
    for epoch in (0..=last_epoch).step_by(tick) {
        writeln!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}" stroke="#eee"/><text x="{0:.1}" y="{2}" text-anchor="middle">{epoch}</text>"##,
            x(epoch as f64),
            top + height,
            top + height + 16.0,
        )?;
    }
    writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#444"/>"##
    )?;
    if let Some(goal) = goal {
        writeln!(
            svg,
            r##"<line x1="{left}" x2="{right}" y1="{at:.1}" y2="{at:.1}" stroke="#000" stroke-dasharray="6 4"/><text x="{label_x}" y="{label_y:.1}">goal {goal}</text>"##,
            right = left + width,
            at = y(goal),
            label_x = left + 6.0,
            label_y = y(goal) - 4.0,
        )?;
    }
    // Labels at the lines' ends, moved apart where the ends are close (13 px per line).
    let mut labels: Vec<(f64, usize)> = curves
        .iter()
        .enumerate()
        .filter_map(|(i, (_, curve))| Some((y(curve.last()?.fid) + 4.0, i)))
        .collect();
    labels.sort_by(|a, b| a.0.total_cmp(&b.0));
    for k in 1..labels.len() {
        labels[k].0 = labels[k].0.max(labels[k - 1].0 + 13.0);
    }
    for (i, (seed, curve)) in curves.iter().enumerate() {
        let colour = LINE_COLOURS[i % LINE_COLOURS.len()];
        let line: Vec<String> = curve
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.epoch as f64), y(p.fid)))
            .collect();
        writeln!(
            svg,
            r##"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
            line.join(" ")
        )?;
        let label = labels.iter().find(|(_, j)| *j == i);
        if let (Some(end), Some((label_y, _))) = (curve.last(), label) {
            writeln!(
                svg,
                r##"<text x="{:.1}" y="{label_y:.1}" fill="{colour}">seed {seed}: {:.1}</text>"##,
                x(end.epoch as f64) + 6.0,
                end.fid
            )?;
        }
    }
    svg.push_str("</svg>\n");
    Ok(svg)
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

    #[test]
    fn a_seed_csv_reads_back_and_damage_is_an_error() {
        let curve = vec![point(10, 300.5, 8), point(20, 90.25, 10)];
        assert_eq!(parse_seed_csv(&seed_csv(&curve)).unwrap(), curve);
        assert!(parse_seed_csv("epoch,train_seconds,fid,classes_covered\n").is_err());
        assert!(parse_seed_csv("a,b\n10,1,2,3\n").is_err());
        assert!(parse_seed_csv("epoch,train_seconds,fid,classes_covered\n10,x,2,3\n").is_err());
        assert!(parse_seed_csv("epoch,train_seconds,fid,classes_covered\n10,2,3\n").is_err());
    }

    #[test]
    fn the_picture_has_a_line_per_seed_inside_the_plot() {
        let a = vec![point(10, 800.0, 8), point(20, 90.0, 10)];
        let b = vec![point(10, 300.0, 9), point(20, 40.0, 10)];
        let svg = curve_svg(&[(0, &a), (7, &b)], Some(82.1)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("seed 7: 40.0") && svg.contains("goal 82.1"));
        // The grid spans whole decades: 10 to 1000 here.
        assert!(svg.contains(">10</text>") && svg.contains(">1000</text>"));
        // Every point lies inside the plot's frame (x 60..620, y 20..320).
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let points = line
                .split("points=\"")
                .nth(1)
                .unwrap()
                .trim_end_matches("\"/>");
            for xy in points.split(' ') {
                let (x, y) = xy.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!(
                    (60.0..=620.0).contains(&x) && (20.0..=320.0).contains(&y),
                    "{xy}"
                );
            }
        }
        assert!(curve_svg(&[(0, &[point(10, f64::NAN, 1)])], None).is_err());
        assert!(curve_svg(&[], None).is_err());
    }
}
