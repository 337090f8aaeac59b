//! Pictures: grids of generated images written as grayscale PNG files.

use std::path::Path;

use anyhow::Context;

/// How a grid is laid out.
#[derive(Clone, Copy, Debug)]
pub struct GridLayout {
    /// Images per row.
    pub columns: usize,
    /// Pixels between images and around the grid.
    pub padding: usize,
    /// Gray level of the padding.
    pub padding_value: u8,
    /// Integer upscaling factor (nearest neighbour) of the whole picture.
    pub scale: usize,
}

impl GridLayout {
    /// The reference's sample grids: 5 per row, 2-pixel black padding, no upscaling
    /// (torchvision's `save_image(nrow=5)`).
    pub const REFERENCE: GridLayout = GridLayout {
        columns: 5,
        padding: 2,
        padding_value: 0,
        scale: 1,
    };
}

/// A grayscale picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major gray levels.
    pub pixels: Vec<u8>,
}

/// Lays `images` (each `side x side` gray levels) out in a grid.
pub fn grid(images: &[&[u8]], side: usize, layout: GridLayout) -> Picture {
    grid_of(images, side, side, layout)
}

/// Lays `images` (each `width x height` gray levels, row-major) out in a grid.
pub fn grid_of(
    images: &[&[u8]],
    image_width: usize,
    image_height: usize,
    layout: GridLayout,
) -> Picture {
    let columns = layout.columns.max(1);
    let rows = images.len().div_ceil(columns).max(1);
    let pad = layout.padding;
    let width = columns * (image_width + pad) + pad;
    let height = rows * (image_height + pad) + pad;
    let mut pixels = vec![layout.padding_value; width * height];
    for (n, image) in images.iter().enumerate() {
        let (gx, gy) = (n % columns, n / columns);
        let (x0, y0) = (
            pad + gx * (image_width + pad),
            pad + gy * (image_height + pad),
        );
        // An image shorter than width x height leaves the rest of its cell blank.
        for (y, row) in image
            .chunks_exact(image_width.max(1))
            .take(image_height)
            .enumerate()
        {
            let at = (y0 + y) * width + x0;
            pixels[at..at + image_width].copy_from_slice(row);
        }
    }
    upscale(
        &Picture {
            width,
            height,
            pixels,
        },
        layout.scale.max(1),
    )
}

/// Places pictures side by side, top-aligned, `gap` pixels of `fill` between them.
pub fn side_by_side(pictures: &[Picture], gap: usize, fill: u8) -> Picture {
    let height = pictures.iter().map(|p| p.height).max().unwrap_or(0);
    let width =
        pictures.iter().map(|p| p.width).sum::<usize>() + gap * pictures.len().saturating_sub(1);
    let mut pixels = vec![fill; width * height];
    let mut x0 = 0;
    for picture in pictures {
        for y in 0..picture.height {
            let src = &picture.pixels[y * picture.width..(y + 1) * picture.width];
            pixels[y * width + x0..y * width + x0 + picture.width].copy_from_slice(src);
        }
        x0 += picture.width + gap;
    }
    Picture {
        width,
        height,
        pixels,
    }
}

fn upscale(picture: &Picture, scale: usize) -> Picture {
    if scale == 1 {
        return picture.clone();
    }
    let (width, height) = (picture.width * scale, picture.height * scale);
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        let src = &picture.pixels[(y / scale) * picture.width..][..picture.width];
        for &p in src {
            pixels.extend(std::iter::repeat_n(p, scale));
        }
    }
    Picture {
        width,
        height,
        pixels,
    }
}

/// Maps float images to gray levels by the min..max of all of them together, as
/// torchvision's `save_image(normalize=True)` does for a grid.
pub fn normalize_min_max(values: &[f32]) -> Vec<u8> {
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let range = (hi - lo).max(1e-5);
    values
        .iter()
        .map(|&v| (((v - lo) / range) * 255.0 + 0.5).clamp(0.0, 255.0) as u8)
        .collect()
}

/// Encodes a picture as an 8-bit grayscale PNG.
pub fn encode_png(picture: &Picture) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder =
            png::Encoder::new(&mut bytes, picture.width as u32, picture.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&picture.pixels)?;
    }
    Ok(bytes)
}

/// Encodes pictures of one size as an animated PNG (APNG) that loops forever, showing each
/// frame for `frame_ms` milliseconds; viewers without APNG support show the first frame.
pub fn encode_apng(frames: &[Picture], frame_ms: u16) -> anyhow::Result<Vec<u8>> {
    let first = frames
        .first()
        .context("an animation needs at least one frame")?;
    anyhow::ensure!(
        frames
            .iter()
            .all(|f| (f.width, f.height) == (first.width, first.height)),
        "the frames of an animation must have one size"
    );
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, first.width as u32, first.height as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_animated(u32::try_from(frames.len())?, 0)?;
        encoder.set_frame_delay(frame_ms, 1000)?;
        let mut writer = encoder.write_header()?;
        for frame in frames {
            writer.write_image_data(&frame.pixels)?;
        }
        writer.finish()?;
    }
    Ok(bytes)
}

/// Writes pictures as an animated PNG file, atomically (see [`encode_apng`]).
pub fn save_apng(path: &Path, frames: &[Picture], frame_ms: u16) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = encode_apng(frames, frame_ms)?;
    crate::fsutil::write_atomically(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes a picture as a PNG file, atomically.
pub fn save_png(path: &Path, picture: &Picture) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = encode_png(picture)?;
    crate::fsutil::write_atomically(path, &bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads an 8-bit grayscale PNG (for tests and tools).
pub fn load_png(path: &Path) -> anyhow::Result<Picture> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = || path.display().to_string();
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .with_context(|| format!("{} is not a readable PNG", name()))?;
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("{} is too large a PNG", name()))?;
    let mut pixels = vec![0; size];
    let info = reader
        .next_frame(&mut pixels)
        .with_context(|| format!("{}: damaged PNG image data", name()))?;
    anyhow::ensure!(
        info.color_type == png::ColorType::Grayscale && info.bit_depth == png::BitDepth::Eight,
        "{} is not 8-bit grayscale",
        path.display()
    );
    pixels.truncate(info.buffer_size());
    Ok(Picture {
        width: info.width as usize,
        height: info.height as usize,
        pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_images_with_padding_and_scales() {
        let a = [10u8; 4];
        let b = [20u8; 4];
        let layout = GridLayout {
            columns: 2,
            padding: 1,
            padding_value: 0,
            scale: 2,
        };
        let picture = grid(&[&a, &b, &a], 2, layout);
        // 2 columns x 2 rows of 2x2 with 1 px padding = 7x7, times 2.
        assert_eq!((picture.width, picture.height), (14, 14));
        let at = |x: usize, y: usize| picture.pixels[y * picture.width + x];
        assert_eq!(at(0, 0), 0);
        assert_eq!(at(2, 2), 10);
        assert_eq!(at(8, 2), 20);
        assert_eq!(at(2, 8), 10);
        assert_eq!(at(8, 8), 0);
    }

    #[test]
    fn side_by_side_keeps_both_pictures() {
        let a = Picture {
            width: 1,
            height: 2,
            pixels: vec![1, 2],
        };
        let b = Picture {
            width: 2,
            height: 1,
            pixels: vec![3, 4],
        };
        let both = side_by_side(&[a, b], 1, 9);
        assert_eq!((both.width, both.height), (4, 2));
        assert_eq!(both.pixels, vec![1, 9, 3, 4, 2, 9, 9, 9]);
    }

    #[test]
    fn png_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let picture = Picture {
            width: 3,
            height: 2,
            pixels: vec![0, 50, 100, 150, 200, 250],
        };
        save_png(&path, &picture).unwrap();
        assert_eq!(load_png(&path).unwrap(), picture);
    }

    #[test]
    fn min_max_normalisation_spans_the_range() {
        assert_eq!(normalize_min_max(&[-1.0, 0.0, 1.0]), vec![0, 128, 255]);
    }
}
