//! Helpers more than one command uses: seed lists, digit grids, reading inputs.

use std::path::Path;

use anyhow::Result;
use mcugan_model_tools::picture::{self, GridLayout};
use mcugan_model_tools::seeds::Seeds;

/// Parses `A..B` (end exclusive) or `A,B,C` into a list of at most `max` seeds (`what`
/// names the limit in the error).
pub(super) fn parse_seeds(text: &str, max: u64, what: &str) -> Result<Vec<u32>> {
    Ok(Seeds::parse(text)?.to_vec_at_most(max, what)?)
}

/// Most seeds a list-taking command holds at once (`quantize`'s and `report`'s PSNR seeds).
pub(super) const MAX_LISTED_SEEDS: u64 = 1 << 20;

/// Most images a PNG grid holds: 32 x 32.
pub(super) const MAX_GRID_IMAGES: u64 = 1024;

/// Reads a model blob or another input file whole; a file larger than any the tools read (a
/// device such as `/dev/zero` among them) is refused after reading a little more than that.
pub(super) fn read(path: &Path) -> Result<Vec<u8>> {
    mcugan_device_tools::elf::read_bounded(path, mcugan_device_tools::elf::MAX_FILE_BYTES, "input")
}

/// The layout of pictures of generated digits.
pub(super) const DIGITS_LAYOUT: GridLayout = GridLayout {
    columns: 5,
    padding: 2,
    padding_value: 48,
    scale: 4,
};

pub(super) fn save_digits(
    path: &Path,
    images: &[&[u8]],
    image: mcugan_shared::ImageShape,
) -> Result<()> {
    let columns = (images.len() as f64).sqrt().ceil().max(1.0) as usize;
    save_digits_in_columns(path, images, image, columns)
}

/// [`save_digits`] with `columns` images per row.
pub(super) fn save_digits_in_columns(
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
