//! `mcugan train`: the reference GAN (or cgan.py's conditional one, or dcgan.py's convolutional one) on a folder of IDX files, with resume and Ctrl-C checkpoints.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use mcugan_train::engine::Engine;
use mcugan_train::model::conv::ConvGanSpec;
use mcugan_train::model::Architecture;
use mcugan_train::recipe::Recipe;
use mcugan_train::run::{self, Outcome, StopToken, TrainConfig};

use super::Global;

/// The command line of `mcugan train`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory of MNIST-style IDX files (raw or .gz).
    #[arg(long, default_value = "data/mnist-digits")]
    pub data: PathBuf,
    /// Output directory: checkpoint, generator, losses.csv, samples/.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// Epochs in all (default 200, as the reference; with --resume, the run's own number).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Seed of initialisation, shuffling and latent sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Save a 5x5 sample grid every N batches (0: never).
    #[arg(long, default_value_t = 400)]
    pub sample_interval: u64,
    /// Training recipe: `reference` (gan.py unchanged) or `small-data` (discriminator
    /// dropout, translation augmentation, label smoothing, generator weight average; a
    /// convolutional discriminator keeps its own Dropout2d).
    #[arg(long, value_enum, default_value_t = RecipeName::Reference)]
    pub recipe: RecipeName,
    /// Also keep the generator every N epochs in generators/ (0: only the last).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Continue the run whose checkpoint is in --out (its data, seed, batch size and recipe
    /// are kept; --epochs is the new total, --lr may lower the learning rate).
    #[arg(long)]
    pub resume: bool,
    /// Adam's learning rate (the reference's 0.0002 unless given).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Where to train: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// The training step: `auto` (fused on the CPU, candle elsewhere), `fused` (written out
    /// by hand, CPU only), `kernels` (the step as GPU kernels over one arena: CUDA, or
    /// emulated on the CPU, slowly, to check it) or `candle` (candle's autograd, any device).
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub engine: EngineChoice,
    /// Train cgan.py's class-conditional GAN: the generator draws the class it is asked
    /// for (candle's engine; MSE losses, as cgan.py).
    #[arg(long)]
    pub conditional: bool,
    /// Classes of the conditional GAN (default: the training labels' largest plus one).
    #[arg(long, requires = "conditional")]
    pub classes: Option<usize>,
    /// The networks: `gan` (gan.py's MLP, 28x28), `dcgan` (dcgan.py's convolutional GAN,
    /// 32x32: the images are resized as its transforms do; candle's engine) or `dcgan-256k`
    /// (a compact convolutional GAN of dcgan.py's pattern, 28x28, whose int8 model fits a
    /// 256 KB chip; candle's engine).
    #[arg(long, value_enum, default_value_t = ArchName::Gan)]
    pub arch: ArchName,
    /// Instead of --arch, a convolutional GAN of dcgan.py's pattern described in a JSON
    /// file: generator latent, first side, widths, BatchNorm eps, kernel, image channels,
    /// upsampling (nearest or transposed), a LeakyReLU after the first map; discriminator
    /// widths, dropout, eps, kernel (examples in train/specs/).
    #[arg(long, conflicts_with = "arch")]
    pub spec: Option<PathBuf>,
}

/// `--arch`: the named architectures (described in the flag's help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ArchName {
    // gan.py's MLP.
    Gan,
    // dcgan.py's convolutional GAN.
    Dcgan,
    // The compact convolutional GAN for a 256 KB chip.
    #[value(name = "dcgan-256k")]
    Dcgan256k,
}

impl ArchName {
    fn architecture(self) -> Architecture {
        match self {
            ArchName::Gan => Architecture::Mlp,
            ArchName::Dcgan => Architecture::Conv(ConvGanSpec::dcgan()),
            ArchName::Dcgan256k => Architecture::Conv(ConvGanSpec::dcgan_256k()),
        }
    }
}

/// `--recipe`: the named training recipes (described in the flag's help, which lists
/// them inline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RecipeName {
    // gan.py unchanged.
    Reference,
    // Discriminator dropout, translation augmentation, label smoothing, weight average.
    SmallData,
}

impl RecipeName {
    fn recipe(self) -> Recipe {
        match self {
            RecipeName::Reference => Recipe::REFERENCE,
            RecipeName::SmallData => Recipe::SMALL_DATA,
        }
    }
}

/// `--engine`: which training step runs (described in the flag's help).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    // Fused on the CPU, candle elsewhere (candle for the conditional and convolutional GANs).
    Auto,
    // Written out by hand, CPU only.
    Fused,
    // The step as GPU kernels over one arena (CUDA, or emulated on the CPU).
    Kernels,
    // candle's autograd, any device.
    Candle,
}

/// Runs `mcugan train`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    if args.epochs == Some(0) {
        bail!("--epochs must be at least 1");
    }
    // Held until the run ends: a second `mcugan train --out` on this folder is refused
    // instead of racing this one's writes.
    let _lock = mcugan::overwrite::lock_run_dir(&args.out)?;
    if !args.resume {
        // Refused before an old run in --out is replaced.
        check_arch(&args)?;
    }
    let mut config = if args.resume {
        resumed_config(&args, global)?
    } else {
        new_config(&args, global)?
    };
    config.sample_interval = args.sample_interval;
    config.progress = !args.quiet;
    config.save_every = args.save_every;
    if let Some(lr) = args.lr {
        if !(lr.is_finite() && lr > 0.0) {
            bail!("--lr must be a positive number, got {lr}");
        }
        config.adam.lr = lr;
    }
    config.device = mcugan_train::device::parse(&args.device)?;
    let threads = mcugan_train::cpu::training_threads(global.threads);
    mcugan_train::cpu::set_conv_threads(threads);
    config.engine = match args.engine {
        EngineChoice::Auto if config.classes.is_some() => Engine::Candle,
        EngineChoice::Auto if config.architecture != Architecture::Mlp => Engine::Candle,
        EngineChoice::Auto => Engine::for_device(&config.device, threads),
        EngineChoice::Fused => Engine::Fused { threads },
        EngineChoice::Kernels => Engine::Kernels,
        EngineChoice::Candle => Engine::Candle,
    };
    let stop = StopToken::new();
    install_interrupt_handler(stop.clone());
    let out = &args.out;
    match run::train_until(&config, &stop)? {
        Outcome::Finished(summary) => {
            println!(
                "trained {} epochs on {} images: {:.2} s/epoch, {:.0} images/s on {}; generator in {}",
                summary.epochs,
                summary.images,
                summary.mean_epoch_seconds,
                summary.images_per_second,
                summary.device,
                out.join(run::GENERATOR_FILE).display()
            );
            Ok(())
        }
        Outcome::Interrupted(stopped) => {
            eprintln!(
                "{stopped}\nresume with: mcugan train --resume --out {} --epochs {}",
                out.display(),
                config.epochs
            );
            std::process::exit(130);
        }
    }
}

/// What the convolutional GANs cannot train (the training loop checks it too; here it is
/// refused before `--force` replaces an old run).
fn check_arch(args: &Args) -> Result<()> {
    if args.arch == ArchName::Gan && args.spec.is_none() {
        return Ok(());
    }
    if args.conditional {
        bail!("the convolutional GANs are unconditional: leave --conditional out");
    }
    if matches!(args.engine, EngineChoice::Fused | EngineChoice::Kernels) {
        bail!(
            "the convolutional GANs train on candle's engine only: pass --engine candle (or \
             leave --engine out)"
        );
    }
    Ok(())
}

/// The run's own settings, as `--resume` takes them from its checkpoint; flags it ignores
/// are named.
fn resumed_config(args: &Args, global: &Global) -> Result<TrainConfig> {
    let given = global.given;
    let mut config = TrainConfig::resume(args.out.clone(), args.epochs)?;
    for (id, flag) in KEPT_ON_RESUME {
        if given(id) {
            eprintln!(
                "note: --resume keeps the run's own {} ({}); {flag} is ignored",
                flag.trim_start_matches("--"),
                match id {
                    "seed" => config.seed.to_string(),
                    "limit" => config
                        .limit
                        .map_or_else(|| "none".to_string(), |l| l.to_string()),
                    "batch_size" => config.batch_size.to_string(),
                    _ => config.recipe.name().to_string(),
                }
            );
        }
    }
    if given("conditional") {
        eprintln!(
            "note: --resume keeps the run's own model ({}); --conditional is ignored",
            run::describe_model(config.classes)
        );
    }
    for (id, flag) in [("arch", "--arch"), ("spec", "--spec")] {
        if given(id) {
            eprintln!(
                "note: --resume keeps the run's own networks ({}); {flag} is ignored",
                config.architecture.describe()
            );
        }
    }
    if given("data") {
        // The same images in another place: the content hash decides.
        config.data_dir = args.data.clone();
    }
    Ok(config)
}

/// A new run's settings (an old run in `--out` is replaced, with `--force`).
fn new_config(args: &Args, global: &Global) -> Result<TrainConfig> {
    let out = &args.out;
    let left = mcugan::overwrite::prepare_run_dir(out, global.force)?;
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        eprintln!(
            "note: replaced the old run in {}; its other files stay and do not belong \
             to the new run: {}",
            out.display(),
            names.join(", ")
        );
    }
    let mut config =
        TrainConfig::reference(args.data.clone(), out.clone(), args.epochs.unwrap_or(200));
    config.seed = args.seed;
    config.limit = args.limit;
    config.batch_size = args.batch_size;
    config.recipe = args.recipe.recipe();
    config.architecture = match &args.spec {
        Some(path) => Architecture::Conv(read_spec(path)?),
        None => args.arch.architecture(),
    };
    if args.conditional {
        let classes = match args.classes {
            Some(classes) => classes,
            None => mcugan_model_tools::data::class_count(
                &config.data_dir,
                mcugan_model_tools::data::Split::Train,
            )
            .with_context(|| format!("reading the labels in {}", config.data_dir.display()))?,
        };
        config.classes = Some(classes);
    }
    Ok(config)
}

/// The convolutional GAN that `--spec` describes, checked.
fn read_spec(path: &Path) -> Result<ConvGanSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let spec: ConvGanSpec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a GAN spec", path.display()))?;
    spec.check()
        .with_context(|| format!("the GAN spec in {}", path.display()))?;
    Ok(spec)
}

/// Ctrl-C, SIGTERM and SIGHUP (what `timeout`, systemd, schedulers and `docker stop` send)
/// ask the training run to save a checkpoint and stop; a second one exits at once
/// (checkpoints are written atomically, so nothing half-written is left).
fn install_interrupt_handler(stop: StopToken) {
    let installed = ctrlc::set_handler(move || {
        if stop.request() {
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: stopping after this batch and saving a checkpoint (Ctrl-C again to \
             quit now)"
        );
    });
    if let Err(e) = installed {
        eprintln!("warning: Ctrl-C will not save a checkpoint: {e}");
    }
}

/// The `train` flags that `--resume` takes from the checkpoint instead: (clap id, flag).
const KEPT_ON_RESUME: [(&str, &str); 4] = [
    ("seed", "--seed"),
    ("limit", "--limit"),
    ("batch_size", "--batch-size"),
    ("recipe", "--recipe"),
];
