//! The fused step's element-wise arithmetic, each pass fused into one loop (its matrix
//! products are `crate::cpu::matmul`'s).

use rand_chacha::ChaCha8Rng;

use super::SIDE;
use crate::model::IMAGE_PIXELS;
use crate::recipe::draw_shift;

use crate::model::LEAKY_SLOPE;

pub(crate) fn softplus(x: f32) -> f64 {
    let x = f64::from(x);
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

pub(crate) fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

pub(crate) fn leaky_relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        x * LEAKY_SLOPE as f32
    }
}

/// `tanh(x)` to within 2e-7, branch-free so that loops over it vectorise (libm's `tanhf` is a
/// call per element, and the generator's output layer has 50,176 of them per batch).
pub(crate) fn tanh(x: f32) -> f32 {
    // tanh(±9) rounds to ±1 in f32.
    let e = exp(2.0 * x.clamp(-9.0, 9.0));
    (e - 1.0) / (e + 1.0)
}

/// `e^y` for `|y| ≤ 18` to a few units in the last place: `2^n · 2^f` with `n` the nearest
/// integer to `y / ln 2` and `2^f`, `|f| ≤ 1/2`, from its Taylor series in `f · ln 2`.
pub(crate) fn exp(y: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to nearest
    let t = y * std::f32::consts::LOG2_E;
    let n = (t + ROUND) - ROUND;
    let r = (t - n) * std::f32::consts::LN_2;
    let mut p = 1.0 / 5040.0;
    for c in [
        1.0 / 720.0,
        1.0 / 120.0,
        1.0 / 24.0,
        1.0 / 6.0,
        0.5,
        1.0,
        1.0,
    ] {
        p = p * r + c;
    }
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Adds `bias` to every row of `rows`.
pub(crate) fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        for (x, &b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

/// `rows = LeakyReLU(rows + bias)`, times the dropout factors when there are some.
pub(crate) fn bias_leaky_relu(rows: &mut [f32], bias: &[f32], mask: Option<&[f32]>) {
    let width = bias.len();
    match mask {
        None => {
            for row in rows.chunks_exact_mut(width) {
                for (x, &b) in row.iter_mut().zip(bias) {
                    *x = leaky_relu(*x + b);
                }
            }
        }
        Some(mask) => {
            for (row, m_row) in rows.chunks_exact_mut(width).zip(mask.chunks_exact(width)) {
                for ((x, &b), &m) in row.iter_mut().zip(bias).zip(m_row) {
                    *x = leaky_relu(*x + b) * m;
                }
            }
        }
    }
}

/// `grad *= LeakyReLU'(·) · mask`, the activation's sign read from its output `y` (positive
/// output iff positive input: dropout factors are positive where they keep a unit).
pub(crate) fn leaky_relu_backward(grad: &mut [f32], y: &[f32], mask: Option<&[f32]>) {
    let slope = LEAKY_SLOPE as f32;
    match mask {
        None => {
            for (g, &y) in grad.iter_mut().zip(y) {
                *g *= if y > 0.0 { 1.0 } else { slope };
            }
        }
        Some(mask) => {
            for ((g, &y), &m) in grad.iter_mut().zip(y).zip(mask) {
                *g *= if y > 0.0 { m } else { slope * m };
            }
        }
    }
}

/// `out[c] = Σ_rows x[row][c]`, `out.len()` columns.
pub(crate) fn column_sums(out: &mut [f32], x: &[f32]) {
    out.fill(0.0);
    for row in x.chunks_exact(out.len()) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v;
        }
    }
}

/// Copies `images` into `rows`, each shifted by its own random offset (padding -1) when
/// `max_shift > 0`; `sources` records where each pixel came from (`u32::MAX`: padding).
pub(crate) fn place_images(
    rows: &mut [f32],
    images: &[f32],
    max_shift: usize,
    rng: &mut ChaCha8Rng,
    sources: Option<&mut [u32]>,
) {
    if max_shift == 0 {
        rows.copy_from_slice(images);
        return;
    }
    let mut sources = sources;
    for (i, (row, image)) in rows
        .chunks_exact_mut(IMAGE_PIXELS)
        .zip(images.chunks_exact(IMAGE_PIXELS))
        .enumerate()
    {
        let (dy, dx) = draw_shift(max_shift, rng);
        for y in 0..SIDE {
            for x in 0..SIDE {
                // The padded image's pixel (y + dy, x + dx) is the image's (y + dy − s, x + dx − s).
                let sy = (y + dy).checked_sub(max_shift).filter(|&v| v < SIDE);
                let sx = (x + dx).checked_sub(max_shift).filter(|&v| v < SIDE);
                let source = sy.zip(sx).map(|(sy, sx)| sy * SIDE + sx);
                row[y * SIDE + x] = source.map_or(-1.0, |s| image[s]);
                if let Some(sources) = sources.as_deref_mut() {
                    sources[i * IMAGE_PIXELS + y * SIDE + x] =
                        source.map_or(u32::MAX, |s| s as u32);
                }
            }
        }
    }
}
