//! Latent walks (`--walk A..B`), shared by `simulate` and `qemu`.

use std::path::Path;

use anyhow::{bail, Result};
use mcugan_device_tools::firmware::{self};
use mcugan_model_tools::picture::{self, GridLayout};
use mcugan_shared::ImageRequest;

use super::common::*;

/// A latent walk's options (`simulate` and `qemu`).
#[derive(clap::Args, Debug)]
pub struct WalkArgs {
    /// Draw a latent walk instead of seeds: from seed A to seed B (`A..B`, both ends drawn),
    /// --frames images; --png becomes an animated PNG. A conditional model walks in --class,
    /// or between --walk-classes, or else from A's default class to B's.
    #[arg(long, conflicts_with = "seeds")]
    walk: Option<String>,
    /// Frames of a --walk, both ends included (default 16).
    #[arg(long, requires = "walk")]
    frames: Option<u32>,
    /// The classes a --walk of a conditional model runs between (`C..D`).
    #[arg(long, requires = "walk", conflicts_with = "class")]
    walk_classes: Option<String>,
}

impl WalkArgs {
    /// The walk asked for, if any; `class` is the command's `--class`.
    pub(super) fn walk(&self, class: Option<u16>) -> Result<Option<mcugan_shared::Walk>> {
        self.walk
            .as_deref()
            .map(|walk| {
                parse_walk(
                    walk,
                    self.frames.unwrap_or(DEFAULT_WALK_FRAMES),
                    class,
                    self.walk_classes.as_deref(),
                )
            })
            .transpose()
    }
}

/// Frames of a walk when `--frames` is not given.
pub(super) const DEFAULT_WALK_FRAMES: u32 = 16;

/// `A..B` (two 32-bit seeds) and the walk's classes: `--walk-classes C..D`, else
/// `--class C` at both ends, else none (a conditional model then walks between the two seeds'
/// default classes, resolved once the model is read: see [`resolve_walk`]).
pub(super) fn parse_walk(
    text: &str,
    frames: u32,
    class: Option<u16>,
    walk_classes: Option<&str>,
) -> Result<mcugan_shared::Walk> {
    fn pair<T: std::str::FromStr>(text: &str, what: &str) -> Result<(T, T)> {
        let Some((a, b)) = text.split_once("..") else {
            bail!("'{text}' is not {what}: a walk goes from one to another, A..B");
        };
        let parse = |s: &str| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("'{text}' is not {what}"))
        };
        Ok((parse(a)?, parse(b)?))
    }
    let (from, to) = pair::<u32>(text, "a walk A..B between two 32-bit seeds")?;
    if !(2..=firmware::MAX_WALK_FRAMES).contains(&frames) {
        bail!(
            "--frames must be 2 to {} (a walk draws both its ends), not {frames}",
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
pub(super) fn resolve_walk(
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
pub(super) fn save_walk(
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
pub(super) const WALK_FRAME_MS: u16 = 120;
