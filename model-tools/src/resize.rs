//! Grayscale images resized as Pillow's `Image.resize(size, Image.BILINEAR)` resizes them, to
//! the byte: the resize `dcgan.py`'s `transforms.Resize(32)` applies to the 28x28 digits (on
//! PIL images, before `ToTensor`). A triangle filter whose support grows with the reduction
//! factor, coefficients normalised per output pixel and rounded to 22-bit fixed point, a
//! horizontal pass into an 8-bit image and then a vertical one.

use crate::data::Dataset;

/// Fractional bits of the fixed-point coefficients (Pillow's `PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output position along one axis, the first input position it reads and its
/// fixed-point coefficients.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear filter's support is 1
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's truncating casts, as Pillow rounds the window's ends.
            let min = ((center - support + 0.5) as i64).max(0) as usize;
            let max = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (min..max)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    (if scaled < 0.0 {
                        scaled - 0.5
                    } else {
                        scaled + 0.5
                    }) as i32
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

/// A fixed-point sum to a byte, as Pillow's `clip8`.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `pixels` (`height` rows of `width`) resized to `out_height` rows of `out_width`.
pub fn resize_bilinear(
    pixels: &[u8],
    width: usize,
    height: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut rows = pixels.to_vec();
    let mut row_width = width;
    if out_width != width {
        let coeffs = coefficients(width, out_width);
        rows = vec![0u8; height * out_width];
        for y in 0..height {
            for (xx, (min, k)) in coeffs.iter().enumerate() {
                let sum = k.iter().enumerate().fold(half, |acc, (i, &w)| {
                    acc + i64::from(pixels[y * width + min + i]) * i64::from(w)
                });
                rows[y * out_width + xx] = clip8(sum);
            }
        }
        row_width = out_width;
    }
    if out_height == height {
        return rows;
    }
    let coeffs = coefficients(height, out_height);
    let mut out = vec![0u8; out_height * row_width];
    for (yy, (min, k)) in coeffs.iter().enumerate() {
        for x in 0..row_width {
            let sum = k.iter().enumerate().fold(half, |acc, (i, &w)| {
                acc + i64::from(rows[(min + i) * row_width + x]) * i64::from(w)
            });
            out[yy * row_width + x] = clip8(sum);
        }
    }
    out
}

impl Dataset {
    /// Every image resized to `side`x`side` as Pillow's bilinear resize does (labels kept);
    /// a copy when the images already have that size.
    pub fn resized(&self, side: usize) -> Dataset {
        if self.rows == side && self.cols == side {
            return self.clone();
        }
        let mut pixels = Vec::with_capacity(self.len() * side * side);
        for i in 0..self.len() {
            pixels.extend(resize_bilinear(
                self.image(i),
                self.cols,
                self.rows,
                side,
                side,
            ));
        }
        Dataset {
            rows: side,
            cols: side,
            pixels,
            labels: self.labels.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_image_stays_flat_and_the_same_size_is_a_copy() {
        let flat = vec![77u8; 28 * 28];
        assert!(resize_bilinear(&flat, 28, 28, 32, 32)
            .iter()
            .all(|&v| v == 77));
        let ramp: Vec<u8> = (0..28 * 28).map(|i| (i % 251) as u8).collect();
        assert_eq!(resize_bilinear(&ramp, 28, 28, 28, 28), ramp);
    }

    #[test]
    fn upscaling_interpolates_between_neighbours() {
        // One bright column: the doubled row holds it at its two copies' centre-weighted
        // values, and falls to 0 away from it.
        let mut image = vec![0u8; 4 * 4];
        for y in 0..4 {
            image[y * 4 + 1] = 200;
        }
        let out = resize_bilinear(&image, 4, 4, 8, 4);
        assert_eq!(&out[..8], &[0, 50, 150, 150, 50, 0, 0, 0]);
    }
}
