//! `cargo xtask demo`, the main job: train → int8 → firmware on the emulated chip → picture,
//! ending with the figures a person wants to see (quality, flash, RAM, instructions, time).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::firmware::*;
use crate::quiet;
use crate::setup::*;
use crate::util::*;

/// The demo's default schedule: 100 epochs, where seeds 0–4 all drew the ten digits with FID
/// 32.7–38.1 (README, "Recipe research"; at 70 epochs they spread from 39 to 79), about 2.5
/// minutes on 2 cores.
const DEMO_EPOCHS: usize = 100;
/// The demo's default recipe: the reference collapses on the 9,000 offline digits (in PyTorch
/// too); this one keeps the generator's architecture and draws clear digits (see docs/src/training/recipes.md).
const DEMO_RECIPE: &str = "small-data";
/// The demo's learning rate, both networks: twice the reference's 0.0002, which with the
/// small-data recipe reaches a given FID in about half the epochs (README, "Recipe research").
const DEMO_LR: &str = "0.0004";

/// Runs the demo with its command-line options (`--epochs N`, `--recipe R`, `--lr X`,
/// `--seed S`, `--out DIR`).
/// `cargo xtask demo`'s options.
#[derive(clap::Args)]
pub struct Args {
    /// Epochs to train.
    #[arg(long, default_value_t = DEMO_EPOCHS)]
    epochs: usize,
    /// The training recipe (`mcugan train --recipe`).
    #[arg(long, default_value = DEMO_RECIPE)]
    recipe: String,
    /// Adam's learning rate.
    #[arg(long, default_value = DEMO_LR)]
    lr: String,
    /// The training seed.
    #[arg(long, default_value = "0")]
    seed: String,
    /// Where the run, the model, the firmware and the picture go.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
}

/// Builds the host CLI while the missing tools install in the background (apt and rustup wait
/// on the network, the build on the CPU), then prints the installs' lines.
fn build_cli_while_installing(root: &Path) -> Result<()> {
    let needs_npm = !digits_made(root);
    let (built, (installed, lines)) = std::thread::scope(|scope| {
        let installs =
            scope.spawn(|| quiet::in_background(|| install_tools(root, needs_npm, false)));
        let built = build_host_cli(root);
        let installs = installs.join().unwrap_or_else(|_| {
            (
                Err(anyhow::anyhow!("the install thread panicked")),
                Vec::new(),
            )
        });
        (built, installs)
    });
    if !lines.is_empty() {
        step("installed meanwhile (their output: target/xtask/background-steps.log)");
        for line in lines {
            eprintln!("{line}");
        }
    }
    built?;
    installed
}

pub fn demo(root: &Path, args: Args) -> Result<()> {
    let Args {
        epochs,
        recipe,
        lr,
        seed,
        out,
    } = args;
    let started = Instant::now();
    build_cli_while_installing(root)?;
    make_data(root, Profile::Release)?;
    let prepared = started.elapsed().as_secs_f64();

    let out_str = out.to_string_lossy().into_owned();
    let generator = out.join("generator.safetensors");
    let blob = out.join("generator-int8.mcg");
    step(&format!(
        "training the reference GAN's architecture for {epochs} epochs on the CPU \
         ({recipe} recipe, learning rate {lr}, seed {seed})"
    ));
    let training = Instant::now();
    run(mcugan(
        root,
        &[
            "train",
            "--data",
            "data/mnist-digits",
            "--epochs",
            &epochs.to_string(),
            "--recipe",
            &recipe,
            "--lr",
            &lr,
            "--seed",
            &seed,
            "--out",
            &out_str,
            // The demo's own directory: a new demo replaces the last one.
            "--force",
        ],
    ))?;
    let training = training.elapsed().as_secs_f64();
    step("quantizing the generator to int8");
    run(mcugan(
        root,
        &[
            "quantize",
            "--generator",
            &generator.to_string_lossy(),
            "--out",
            &blob.to_string_lossy(),
            "--name",
            "mnist-digits-demo",
        ],
    ))?;
    step("building the firmware around the new model");
    // Kept with the run (and named shortly in the tables) beside the model it was built for.
    let elf = out.join("mcugan-firmware.elf");
    build_firmware(root, &blob, &elf)?;
    step("running the firmware on the emulated Cortex-M4F (QEMU mps2-an386) and measuring");
    let report = out.join("report.md");
    let report_json = out.join("report.json");
    let picture = out.join("chip-digits.png");
    run(mcugan(
        root,
        &[
            "report",
            "--generator",
            &generator.to_string_lossy(),
            "--model",
            &blob.to_string_lossy(),
            "--elf",
            &elf.to_string_lossy(),
            "--train-summary",
            &out.join("train-summary.json").to_string_lossy(),
            "--out",
            &report.to_string_lossy(),
            "--png",
            &picture.to_string_lossy(),
        ],
    ))?;
    step("measuring quality: FID / IS / class coverage of float, int8 simulation and the chip");
    let eval_md = out.join("eval.md");
    let eval_json = out.join("eval.json");
    // The table goes to eval.md and is printed once, at the end; progress stays on stderr.
    let mut eval = mcugan(
        root,
        &[
            "eval",
            &generator.to_string_lossy(),
            &blob.to_string_lossy(),
            &elf.to_string_lossy(),
            "--markdown",
            &eval_md.to_string_lossy(),
            "--json",
            &eval_json.to_string_lossy(),
            "--png",
            &out.join("eval-by-class.png").to_string_lossy(),
        ],
    );
    run(eval.stdout(std::process::Stdio::null()))?;
    let times = Times {
        prepared,
        training,
        total: started.elapsed().as_secs_f64(),
    };
    let summary = summary(&read_json(&report_json)?, &read_json(&eval_json)?, &times)?;
    let table = std::fs::read_to_string(&eval_md)
        .with_context(|| format!("reading {}", eval_md.display()))?;
    eprintln!(
        "\n==> done: the digits the emulated chip drew are in {}\n\n{table}\n{summary}\n\
         figures: {}, quality: {}, install and build output: {}",
        picture.display(),
        report.display(),
        eval_md.display(),
        quiet::log_path(root).display()
    );
    Ok(())
}

/// Wall-clock seconds of the demo's parts.
struct Times {
    /// Installs, builds and data, before training.
    prepared: f64,
    /// The `mcugan train` run.
    training: f64,
    /// The whole demo.
    total: f64,
}

fn number(value: &Value, path: &[&str]) -> Result<f64> {
    let mut at = value;
    for key in path {
        at = at
            .get(key)
            .with_context(|| format!("the report has no {}", path.join(".")))?;
    }
    at.as_f64()
        .with_context(|| format!("{} is not a number", path.join(".")))
}

/// One line per figure that matters, from `mcugan report --json`'s and `mcugan eval --json`'s
/// files.
fn summary(report: &Value, eval: &Value, times: &Times) -> Result<String> {
    let mut lines = Vec::new();
    let rows = eval
        .get("rows")
        .and_then(Value::as_array)
        .context("the eval file has no rows")?;
    let measured: Vec<&Value> = rows
        .iter()
        .filter(|row| {
            row.get("source")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.starts_with("calibration"))
        })
        .collect();
    let names = ["float", "int8 host simulation", "int8 chip (QEMU)"];
    let quality: Vec<String> = measured
        .iter()
        .zip(names)
        .map(|(row, name)| {
            Ok(format!(
                "{name} {:.1} ({}/10 classes)",
                number(row, &["fid"])?,
                number(row, &["classes_covered"])?
            ))
        })
        .collect::<Result<_>>()?;
    lines.push(format!("quality, FID ↓:  {}", quality.join(", ")));
    let identical = report
        .pointer("/firmware/identical_to_host")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    lines.push(format!(
        "chip = host:     {}",
        if identical {
            "yes, byte for byte"
        } else {
            "NO: the chip's images differ from the host simulation"
        }
    ));
    let elf = |key: &str| number(report, &["elf", key]);
    let code = elf("vector_table")? + elf("text")? + elf("rodata")? + elf("data")?;
    lines.push(format!(
        "flash:           {:.0} B model + {code:.0} B firmware",
        elf("model")?
    ));
    let ram = elf("data")? + elf("bss")? + elf("uninit")?;
    let stack = number(report, &["firmware", "stack_peak_bytes"])?;
    lines.push(format!(
        "RAM:             {:.0} B (static {ram:.0} + peak stack {stack:.0})",
        ram + stack
    ));
    lines.push(format!(
        "per image:       {:.0} instructions ({:.2} per MAC); boot check {:.0}",
        number(report, &["firmware", "instructions_per_image"])?,
        number(report, &["firmware", "instructions_per_mac"])?,
        number(report, &["firmware", "validation_instructions"])?
    ));
    lines.push(format!(
        "wall time:       {:.0} s in all: {:.0} s installs and builds, {:.0} s training ({:.0} epochs), {:.0} s quantize, chip and eval",
        times.total,
        times.prepared,
        times.training,
        number(report, &["training", "epochs"])?,
        times.total - times.prepared - times.training
    ));
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_has_one_line_per_figure() {
        let report = serde_json::json!({
            "elf": {"vector_table": 68, "text": 15976, "rodata": 2800, "model": 1537888,
                    "data": 0, "bss": 20, "uninit": 0},
            "firmware": {"identical_to_host": true, "instructions_per_image": 1665368.0,
                         "instructions_per_mac": 1.1075, "validation_instructions": 1402520.0,
                         "stack_peak_bytes": 7464},
            "training": {"epochs": 50},
        });
        let eval = serde_json::json!({"rows": [
            {"source": "calibration: real train images", "fid": 6.8, "classes_covered": 10},
            {"source": "float: g.safetensors", "fid": 60.25, "classes_covered": 10},
            {"source": "host simulation: g.mcg", "fid": 60.3, "classes_covered": 10},
            {"source": "firmware under QEMU: elf", "fid": 60.3, "classes_covered": 9},
        ]});
        let times = Times {
            prepared: 100.0,
            training: 200.0,
            total: 400.0,
        };
        let text = summary(&report, &eval, &times).unwrap();
        assert!(text.contains("float 60.2 (10/10 classes)"), "{text}");
        assert!(
            text.contains("int8 chip (QEMU) 60.3 (9/10 classes)"),
            "{text}"
        );
        assert!(
            text.contains("1537888 B model + 18844 B firmware"),
            "{text}"
        );
        assert!(text.contains("RAM:             7484 B"), "{text}");
        assert!(
            text.contains(
                "400 s in all: 100 s installs and builds, 200 s training (50 epochs), 100 s"
            ),
            "{text}"
        );
        assert_eq!(text.lines().count(), 6);
        let broken = serde_json::json!({"elf": {}});
        assert!(summary(&broken, &eval, &times).is_err());
    }
}
