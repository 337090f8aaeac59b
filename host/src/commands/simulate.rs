//! `mcugan simulate`: the chip's own code on the host (seed grids, image folders, latent walks).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcugan::overwrite::{FileKind, OutputCheck};
use mcugan_model_tools::image_files::{ImageFolder, ImageFormat};
use mcugan_model_tools::picture::{self, GridLayout};
use mcugan_model_tools::seeds::Seeds;
use mcugan_model_tools::simulate;
use mcugan_shared::Model;

use super::common::*;
use super::walk::*;
use super::Global;

/// The command line of `mcugan simulate`.
#[derive(clap::Args)]
pub struct Args {
    /// The blob; repeat to draw several models side by side.
    #[arg(long, required = true)]
    pub model: Vec<PathBuf>,
    /// Seeds: `A..B` (B excluded) or `A,B,C`, 32-bit numbers.
    #[arg(long, default_value = "0..25")]
    pub seeds: String,
    /// PNG grid to write (at most 1,024 images; default `simulated.png` unless --out-dir
    /// is given).
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Also (or instead) write one file per seed into this folder (`seed-0000000042.png`),
    /// as they are drawn: any number of seeds.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The files of --out-dir.
    #[arg(long, value_enum, default_value = "png")]
    pub format: ImageFormat,
    /// The class a conditional model draws for every seed. Without it, the PNG grid of a
    /// conditional model has one row per class (the seeds across), and --out-dir draws
    /// each seed in class `seed mod classes`.
    #[arg(long)]
    pub class: Option<u16>,
    #[command(flatten)]
    pub walk: WalkArgs,
    /// Write a --walk as one still picture, its frames in a row, instead of an animation.
    #[arg(long, requires = "walk")]
    pub strip: bool,
}

/// Runs `mcugan simulate`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let Args {
        model,
        seeds,
        png,
        out_dir,
        format,
        class,
        walk,
        strip,
    } = args;
    match walk.walk(class)? {
        Some(walk) => simulate_walk_command(&model, &walk, png, strip, global.force),
        None => simulate_command(&model, &seeds, png, out_dir, format, class, global.force),
    }
}

/// `mcugan simulate --walk`: the walk's frames drawn by the simulated chip, as an animated PNG.
pub(super) fn simulate_walk_command(
    models: &[PathBuf],
    walk: &mcugan_shared::Walk,
    png: Option<PathBuf>,
    strip: bool,
    force: bool,
) -> Result<()> {
    let png = png.unwrap_or_else(|| PathBuf::from("walk.png"));
    let mut outputs = OutputCheck::new(force);
    for model in models {
        outputs.input(model, "--model");
    }
    outputs.output(&png, "--png", FileKind::Png)?;
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

/// `mcugan simulate`: a PNG grid (bounded) and/or a folder of one file per seed (streamed).
pub(super) fn simulate_command(
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
    let mut outputs = OutputCheck::new(force);
    for model in models {
        outputs.input(model, "--model");
    }
    if let Some(png) = &png {
        outputs.output(png, "--png", FileKind::Png)?;
    }
    if let Some(dir) = &out_dir {
        outputs.output_dir(dir, "--out-dir")?;
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
        .map(|path| read_model_for_class(path, class))
        .collect::<Result<Vec<_>>>()?;
    if let Some(dir) = &out_dir {
        write_image_folders(&blobs, dir, format, &seeds, class, force)?;
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

/// Reads and validates the blob at `path`, checking that it can draw `class`; returns it with
/// its image shape.
fn read_model_for_class(
    path: &PathBuf,
    class: Option<u16>,
) -> Result<(&PathBuf, Vec<u8>, mcugan_shared::ImageShape)> {
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
}

/// `--out-dir`: one file per seed for each model (in a folder per model when there are
/// several), streamed as they are drawn.
fn write_image_folders(
    blobs: &[(&PathBuf, Vec<u8>, mcugan_shared::ImageShape)],
    dir: &Path,
    format: ImageFormat,
    seeds: &Seeds,
    class: Option<u16>,
    force: bool,
) -> Result<()> {
    for (path, blob, image) in blobs {
        let folder_dir = if blobs.len() == 1 {
            dir.to_path_buf()
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
    Ok(())
}
