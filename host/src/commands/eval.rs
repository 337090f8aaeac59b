//! `mcugan eval`: FID, the IS analogue, class coverage and class accuracy of any image source.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use mcugan::generator_file;
use mcugan::overwrite::{FileKind, OutputCheck};
use mcugan_device_tools::firmware::{self, QemuOptions};
use mcugan_model_tools::picture::{self, GridLayout};
use mcugan_model_tools::simulate;
use mcugan_shared::{ImageRequest, Model};
use mcugan_train::classifier::INPUT_PIXELS;
use mcugan_train::run;

use super::common::*;
use super::Global;

/// The command line of `mcugan eval`.
#[derive(clap::Args)]
pub struct Args {
    /// What to measure, any number: a generator (`.safetensors` or `.onnx`: the float model), a model
    /// blob (`.mcg`: the host simulation of the chip), a firmware ELF (run under QEMU), or a
    /// folder of 28x28 grayscale PNGs. Square grayscale images of other sides (8 to 64, e.g. a
    /// dcgan.py generator's 32x32) are resized to 28x28 (Pillow's bilinear resize) for the
    /// classifier.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// The data set whose test split is the reference.
    #[arg(long, default_value = "data/mnist-digits")]
    pub data: PathBuf,
    /// The classifier (from `mcugan classifier`).
    #[arg(long, default_value = "models/mnist-digits/classifier.safetensors")]
    pub classifier: PathBuf,
    /// Images to draw from each generator (default: as many as the test split has, at
    /// most 10,000; at most 100,000); the seeds are 0..N, the same for every model.
    #[arg(long)]
    pub images: Option<usize>,
    /// Leave out the calibration rows.
    #[arg(long)]
    pub no_calibration: bool,
    /// Also write the table as Markdown.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Also write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write a grid of each source's first images sorted by predicted class.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Wall-clock limit in seconds for each QEMU run (256 images).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// Runs `mcugan eval`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let Args {
        sources,
        data,
        classifier,
        images,
        no_calibration,
        markdown,
        json,
        png,
        timeout,
    } = args;
    eval_command(EvalArgs {
        force: global.force,
        sources,
        data,
        classifier,
        images,
        calibration: !no_calibration,
        markdown,
        json,
        png,
        timeout,
    })
}

/// Most images `eval` draws per source: FID's error at 10,000 is already small, and the
/// images and their features are held in memory.
pub(super) const MAX_EVAL_IMAGES: usize = 100_000;

pub(super) struct EvalArgs {
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
pub(super) fn eval_source_images(path: &Path, seeds: &[u32], timeout: u64) -> Result<EvalImages> {
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
        return Ok((format!("PNG folder {}", path.display()), pixels, None, 28));
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"\x7fELF") {
        let mut bar = progress("firmware under QEMU");
        let mut pixels = Vec::with_capacity(seeds.len() * INPUT_PIXELS);
        let mut asked: Vec<u16> = Vec::new();
        let mut drawn_side = 28;
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
                let side = square_side(image.pixels.len()).with_context(|| {
                    format!(
                        "the firmware draws {} pixels per image, not a square grayscale image",
                        image.pixels.len()
                    )
                })?;
                pixels.extend(for_classifier(&image.pixels, side));
                drawn_side = side;
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
            drawn_side,
        ));
    }
    if bytes.starts_with(&mcugan_shared::format::MAGIC) {
        let model = Model::parse(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", path.display()))?;
        let shape = model.image();
        let side = usize::from(shape.width);
        if shape.width != shape.height || shape.channels != 1 || square_side(side * side).is_none()
        {
            bail!(
                "{} draws {}x{}x{} images; eval reads square grayscale images of {} to {} \
                 pixels a side",
                path.display(),
                shape.width,
                shape.height,
                shape.channels,
                MIN_SIDE,
                MAX_SIDE
            );
        }
        let mut bar = progress("host simulation");
        let mut pixels = Vec::with_capacity(seeds.len() * INPUT_PIXELS);
        for chunk in seeds.chunks(256) {
            for image in simulate::simulate(&bytes, chunk)? {
                pixels.extend(for_classifier(&image, side));
            }
            bar.inc(chunk.len() as u64);
        }
        bar.finish();
        let classes = Model::parse(&bytes).ok().and_then(|m| m.classes());
        return Ok((
            format!("host simulation: {}", path.display()),
            pixels,
            asked_classes(seeds, classes),
            side,
        ));
    }
    let float = if generator_file::is_onnx(path) {
        generator_file::load_float_generator_contained(path)?
    } else {
        let generator = run::load_generator(path, &Device::Cpu).with_context(|| {
            format!(
                "{} is not a firmware ELF, a model blob (.mcg), an ONNX graph (.onnx) or a \
                 folder, so it was read as a generator",
                path.display()
            )
        })?;
        mcugan_train::model::fold(&generator)?
    };
    let image = float.image;
    let side = usize::from(image.width);
    if image.width != image.height || image.channels != 1 || square_side(side * side).is_none() {
        bail!(
            "{} draws {}x{}x{} images; eval reads square grayscale images of {} to {} pixels \
             a side",
            path.display(),
            image.width,
            image.height,
            image.channels,
            MIN_SIDE,
            MAX_SIDE
        );
    }
    let mut bar = progress("float");
    let mut pixels = Vec::with_capacity(seeds.len() * INPUT_PIXELS);
    for &seed in seeds {
        let gray: Vec<u8> = float
            .draw(seed)?
            .into_iter()
            .map(|g| g.round() as u8)
            .collect();
        pixels.extend(for_classifier(&gray, side));
        bar.inc(1);
    }
    bar.finish();
    Ok((
        format!("float: {}", path.display()),
        pixels,
        asked_classes(seeds, float.class_count()),
        side,
    ))
}

/// The smallest and largest image side eval reads (other sides than 28 are resized to it).
const MIN_SIDE: usize = 8;
const MAX_SIDE: usize = 64;

/// The side of a square image of `pixels` gray levels within eval's sizes.
fn square_side(pixels: usize) -> Option<usize> {
    let side = (pixels as f64).sqrt().round() as usize;
    (side * side == pixels && (MIN_SIDE..=MAX_SIDE).contains(&side)).then_some(side)
}

/// An image of `side`x`side` as the 28x28 classifier reads it: resized with Pillow's bilinear
/// resize when it is another size (a 32x32 generator's images, as `dcgan.py`'s transforms
/// would size them the other way).
fn for_classifier(gray: &[u8], side: usize) -> Vec<u8> {
    if side == 28 {
        gray.to_vec()
    } else {
        mcugan_model_tools::resize::resize_bilinear(gray, side, side, 28, 28)
    }
}

/// An eval source's name, its images (28x28), the classes they were asked for (conditional
/// models only), and the side of the images as the source drew them.
pub(super) type EvalImages = (String, Vec<u8>, Option<Vec<u16>>, usize);

/// The classes a conditional model of `classes` classes draws for `seeds` by default.
pub(super) fn asked_classes(seeds: &[u32], classes: Option<usize>) -> Option<Vec<u16>> {
    classes?;
    Some(
        seeds
            .iter()
            .filter_map(|&seed| ImageRequest::default_for(seed, classes).class)
            .collect(),
    )
}

pub(super) fn eval_command(args: EvalArgs) -> Result<()> {
    use mcugan_model_tools::eval::{markdown_table, Evaluator};
    let mut outputs = OutputCheck::new(args.force);
    for source in &args.sources {
        outputs.input(source, "source");
    }
    outputs
        .input(&args.classifier, "--classifier")
        .input(&args.data, "--data");
    for (output, flag, kind) in [
        (&args.markdown, "--markdown", FileKind::Text),
        (&args.json, "--json", FileKind::Text),
        (&args.png, "--png", FileKind::Png),
    ] {
        if let Some(output) = output {
            outputs.output(output, flag, kind)?;
        }
    }
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
    let seeds: Vec<u32> = (0..n as u32).collect();
    let evaluator = Evaluator::new(classifier, &test.pixels)?;
    let mut drawn = Vec::new();
    for source in &args.sources {
        drawn.push(eval_source_images(source, &seeds, args.timeout)?);
    }
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
        // What the resize to 28x28 alone costs: the same digits resized to a source's side
        // and back.
        let mut sides: Vec<usize> = drawn.iter().map(|d| d.3).filter(|&s| s != 28).collect();
        sides.dedup();
        for side in sides {
            let round_trip: Vec<u8> = picked
                .chunks(INPUT_PIXELS)
                .flat_map(|image| {
                    let up = mcugan_model_tools::resize::resize_bilinear(image, 28, 28, side, side);
                    for_classifier(&up, side)
                })
                .collect();
            rows.push(evaluator.measure(
                &format!("calibration: real train images resized to {side}x{side} and back"),
                &round_trip,
            )?);
        }
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let noise: Vec<u8> = (0..n * INPUT_PIXELS)
            .map(|_| rand::Rng::random::<u8>(&mut rng))
            .collect();
        rows.push(evaluator.measure("calibration: uniform noise", &noise)?);
    }
    for (name, pixels, asked, side) in drawn {
        let name = if side == 28 {
            name
        } else {
            format!("{name} ({side}x{side}, resized to 28x28)")
        };
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

/// A 10x10 grid of the first 100 images, sorted by the class the classifier sees in them.
pub(super) fn sorted_by_class(
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
