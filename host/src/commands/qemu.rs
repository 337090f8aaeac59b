//! `mcugan qemu`: a firmware ELF under QEMU, its log, and what it drew.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcugan::overwrite::{FileKind, OutputCheck};
use mcugan_device_tools::firmware::{self, QemuOptions};
use mcugan_model_tools::image_files::{ImageFolder, ImageFormat};
use mcugan_model_tools::simulate;
use mcugan_shared::{ImageRequest, Model};

use super::common::*;
use super::walk::*;
use super::Global;

/// The command line of `mcugan qemu`.
#[derive(clap::Args)]
pub struct Args {
    /// The firmware ELF.
    pub elf: PathBuf,
    /// Seeds: `A..B` (B excluded) or `A,B,C`, 32-bit numbers; at most 256 (the firmware's
    /// seed list).
    #[arg(long, default_value = "0..25")]
    pub seeds: String,
    /// PNG grid of the images the emulated chip drew.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// Also write one file per image into this folder (`seed-0000000042.png`).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// The files of --out-dir.
    #[arg(long, value_enum, default_value = "png")]
    pub format: ImageFormat,
    /// Also check every image against the host simulation of this blob.
    #[arg(long)]
    pub check: Option<PathBuf>,
    /// Wall-clock limit in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// The class a conditional model draws every seed in (default: `seed mod classes`).
    #[arg(long, conflicts_with = "class_rows")]
    pub class: Option<u16>,
    /// Draw every seed in each of the classes 0..N of a conditional model: the picture
    /// has one row per class, the seeds across.
    #[arg(long)]
    pub class_rows: Option<u16>,
    #[command(flatten)]
    pub walk: WalkArgs,
}

/// Runs `mcugan qemu`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let force = global.force;
    let Args {
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
    } = args;
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
    let requests: Vec<(u32, Option<u16>)> = asked.iter().map(|r| (r.seed, r.class)).collect();
    let mut outputs = OutputCheck::new(force);
    outputs.input(&elf, "ELF");
    if let Some(model) = &check {
        outputs.input(model, "--check");
    }
    if let Some(png) = &png {
        outputs.output(png, "--png", FileKind::Png)?;
    }
    if let Some(dir) = &out_dir {
        outputs.output_dir(dir, "--out-dir")?;
    }
    if let Some(model) = &check {
        mcugan_device_tools::elf::check_embeds(&elf, &read(model)?, model)?;
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
        check_against_simulation(&run, &asked, model)?;
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
    Ok(())
}

/// Checks that the chip drew the (seed, class) pairs `asked` for (seeds without a class in
/// the model's default class of each), and that every image is the host simulation's of the
/// blob `model`, byte for byte.
fn check_against_simulation(
    run: &firmware::FirmwareRun,
    asked: &[ImageRequest],
    model: &Path,
) -> Result<()> {
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
        let describe = |r: &ImageRequest| match r.class {
            Some(class) => format!("seed {} in class {class}", r.seed),
            None => format!("seed {}", r.seed),
        };
        let first = drawn.iter().zip(&asked).find(|(d, a)| d != a);
        bail!(
            "the chip drew other images than asked for: {}",
            match first {
                Some((d, a)) => format!("{} where {} was asked", describe(d), describe(a)),
                None => format!("{} images for {} asked", drawn.len(), asked.len()),
            }
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
    Ok(())
}

/// Prints a firmware run's log (and a broken image stream); an error if the run failed.
pub(super) fn show_run(run: &firmware::FirmwareRun) -> Result<()> {
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
pub(super) fn qemu_walk_command(
    elf: &Path,
    walk: &mcugan_shared::Walk,
    check: Option<PathBuf>,
    png: Option<PathBuf>,
    timeout: u64,
    force: bool,
) -> Result<()> {
    let mut outputs = OutputCheck::new(force);
    outputs.input(elf, "ELF");
    if let Some(model) = &check {
        outputs.input(model, "--check");
    }
    if let Some(png) = &png {
        outputs.output(png, "--png", FileKind::Png)?;
    }
    let checked = match &check {
        Some(path) => {
            let blob = read(path)?;
            let model = Model::parse(&blob)
                .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", path.display()))?;
            mcugan_device_tools::elf::check_embeds(elf, &blob, path)?;
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
