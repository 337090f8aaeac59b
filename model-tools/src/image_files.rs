//! One file per generated image, for other tools: PNG (which `mcugan eval` reads back), NumPy
//! `.npy` or raw bytes. Files are named by seed, zero-padded so that names sort in seed order,
//! and the same image always gives the same bytes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use mcugan_shared::ImageShape;

/// The file format of an image folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImageFormat {
    /// 8-bit grayscale (one channel) or RGB (three) PNG.
    Png,
    /// NumPy array of `uint8`, shape `(height, width)` or `(height, width, channels)`.
    Npy,
    /// The pixel bytes only, row-major, channels interleaved.
    Raw,
}

impl ImageFormat {
    /// The file extension.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Npy => "npy",
            ImageFormat::Raw => "raw",
        }
    }
}

/// A folder being filled with one file per image.
#[derive(Debug)]
pub struct ImageFolder {
    dir: PathBuf,
    format: ImageFormat,
    image: ImageShape,
}

impl ImageFolder {
    /// Creates `dir` (or uses an empty one) for images of `image`'s shape. A folder that already
    /// holds images of this format is refused unless `force`, which replaces them file by file.
    pub fn create(dir: &Path, format: ImageFormat, image: ImageShape, force: bool) -> Result<Self> {
        if dir.exists() && !dir.is_dir() {
            bail!(
                "{} exists and is not a directory; choose another --out-dir",
                dir.display()
            );
        }
        if format == ImageFormat::Png && !matches!(image.channels, 1 | 3) {
            bail!(
                "PNG holds 1 or 3 channels; these images have {}: write --format npy or raw",
                image.channels
            );
        }
        if dir.is_dir() && !force {
            let extension = format.extension();
            let taken = std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .filter_map(|e| e.ok())
                .any(|e| e.path().extension().is_some_and(|x| x == extension));
            if taken {
                bail!(
                    "{} already holds .{extension} images; replace them with --force or choose \
                     another --out-dir",
                    dir.display()
                );
            }
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            format,
            image,
        })
    }

    /// The path of `seed`'s file.
    pub fn path_of(&self, seed: u32) -> PathBuf {
        self.dir
            .join(format!("seed-{seed:010}.{}", self.format.extension()))
    }

    /// Writes `seed`'s image.
    pub fn write(&self, seed: u32, pixels: &[u8]) -> Result<()> {
        let expected = self.image.pixel_count();
        if pixels.len() as u64 != expected {
            bail!(
                "seed {seed}: {} bytes drawn, the image shape needs {expected}",
                pixels.len()
            );
        }
        let bytes = match self.format {
            ImageFormat::Png => encode_png(self.image, pixels)?,
            ImageFormat::Npy => encode_npy(self.image, pixels),
            ImageFormat::Raw => pixels.to_vec(),
        };
        let path = self.path_of(seed);
        crate::fsutil::write_atomically(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))
    }
}

fn encode_png(image: ImageShape, pixels: &[u8]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder =
            png::Encoder::new(&mut bytes, u32::from(image.width), u32::from(image.height));
        encoder.set_color(if image.channels == 3 {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(pixels)?;
    }
    Ok(bytes)
}

/// A version-1.0 `.npy` file: magic, header length, a Python dict literal padded with spaces
/// to a multiple of 64 bytes and ended by a newline, then the data.
pub fn encode_npy(image: ImageShape, pixels: &[u8]) -> Vec<u8> {
    let shape = if image.channels == 1 {
        format!("({}, {})", image.height, image.width)
    } else {
        format!("({}, {}, {})", image.height, image.width, image.channels)
    };
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}");
    const PREFIX: usize = 10;
    while !(PREFIX + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(PREFIX + header.len() + pixels.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    // The header is shorter than 64 KiB by construction.
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(pixels);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGIT: ImageShape = ImageShape {
        width: 28,
        height: 28,
        channels: 1,
    };

    #[test]
    fn npy_header_is_aligned_and_describes_the_image() {
        let bytes = encode_npy(DIGIT, &[7; 784]);
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
        assert!(header.contains("'shape': (28, 28)"), "{header}");
        assert!(header.ends_with('\n'));
        assert_eq!(bytes.len(), 10 + header_len + 784);
    }

    #[test]
    fn a_folder_of_images_is_not_replaced_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("images");
        let folder = ImageFolder::create(&out, ImageFormat::Png, DIGIT, false).unwrap();
        folder.write(3, &[0; 784]).unwrap();
        assert!(folder.path_of(3).ends_with("seed-0000000003.png"));
        assert!(ImageFolder::create(&out, ImageFormat::Png, DIGIT, false).is_err());
        assert!(ImageFolder::create(&out, ImageFormat::Raw, DIGIT, false).is_ok());
        assert!(ImageFolder::create(&out, ImageFormat::Png, DIGIT, true).is_ok());
        assert!(folder.write(4, &[0; 783]).is_err());
    }
}
