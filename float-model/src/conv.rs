//! Convolutional layers in PyTorch's terms (`Conv2d`, `ConvTranspose2d`, a nearest
//! `Upsample` before a `Conv2d`), their float forward pass, and their translation into the
//! chip's phased convolution ([`mcugan_shared::conv`]).
//!
//! The forward pass follows the operators' definitions directly (channels first, as PyTorch
//! and ONNX store tensors); the phased form is derived separately, and the tests check that
//! both compute the same thing.

use mcugan_shared::conv::{ConvHeader, TapRun, TensorShape, MAX_PHASES, MAX_TAPS};

/// A 2-D convolution's geometry. Weights are stored `[out][in][kernel rows][kernel columns]`
/// for both kinds (a `ConvTranspose`'s `[in][out][..]` is transposed at import).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// A transposed convolution (`ConvTranspose2d`) rather than a plain one.
    pub transposed: bool,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input rows and columns (before any upsampling).
    pub input: [usize; 2],
    /// Output rows and columns.
    pub output: [usize; 2],
    /// Kernel rows and columns.
    pub kernel: [usize; 2],
    /// Stride along rows and columns.
    pub stride: [usize; 2],
    /// Padding before the first row and column (the padding after them only sets the
    /// output's size, which [`Conv2d::output`] holds).
    pub padding: [usize; 2],
    /// A nearest upsampling of the input by this factor before a plain convolution (1: none).
    pub upsample: usize,
}

/// Why a convolution has no phased form the chip runs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PhaseError(pub String);

/// One axis of a phased convolution: per phase, its taps and which tap each kernel position
/// feeds (`None`: none, a transposed convolution's kernel position of another phase). The
/// chip's kernels and the training's phased convolution both read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AxisPhases {
    /// Input rows (or columns) per step of a phase's output grid.
    pub stride: usize,
    /// Per phase, the run of input offsets its taps read.
    pub runs: Vec<TapRun>,
    /// Per phase and kernel position, the tap it is summed into.
    pub tap_of: Vec<Vec<Option<usize>>>,
}

/// `a / b` rounded towards −∞.
fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

impl Conv2d {
    /// Entries of the input tensor.
    pub fn input_len(&self) -> usize {
        self.in_channels * self.input[0] * self.input[1]
    }

    /// Entries of the output tensor.
    pub fn output_len(&self) -> usize {
        self.out_channels * self.output[0] * self.output[1]
    }

    /// Weights per output channel.
    pub fn row_len(&self) -> usize {
        self.in_channels * self.kernel[0] * self.kernel[1]
    }

    /// Multiply-accumulates of the operator as defined (an upsampled input's zeros and
    /// repeats, a transposed convolution's inserted zeros not counted twice: one per weight
    /// per input or output position it is applied to).
    pub fn operator_macs(&self) -> usize {
        let per_weight = if self.transposed {
            self.input[0] * self.input[1]
        } else {
            self.output[0] * self.output[1]
        };
        per_weight * self.row_len() * self.out_channels
    }

    /// The convolution's output for the channels-first input `x`, accumulated in f64, with
    /// `weight` (`[out][in][kh][kw]`) and `bias` (`[out]`), before any activation.
    pub fn forward(&self, weight: &[f32], bias: &[f32], x: &[f32]) -> Vec<f64> {
        let [ih, iw] = self.input;
        let [oh, ow] = self.output;
        let [kh, kw] = self.kernel;
        let [sy, sx] = self.stride;
        let [py, px] = self.padding;
        let u = self.upsample.max(1);
        let mut out = vec![0f64; self.output_len()];
        for o in 0..self.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    out[(o * oh + oy) * ow + ox] = f64::from(bias[o]);
                }
            }
        }
        let w = |o: usize, c: usize, ky: usize, kx: usize| {
            f64::from(weight[((o * self.in_channels + c) * kh + ky) * kw + kx])
        };
        if self.transposed {
            // Every input pixel scatters the kernel onto the output.
            for c in 0..self.in_channels {
                for iy in 0..ih {
                    for ix in 0..iw {
                        let v = f64::from(x[(c * ih + iy) * iw + ix]);
                        for ky in 0..kh {
                            let oy = (iy * sy + ky) as i64 - py as i64;
                            if !(0..oh as i64).contains(&oy) {
                                continue;
                            }
                            for kx in 0..kw {
                                let ox = (ix * sx + kx) as i64 - px as i64;
                                if !(0..ow as i64).contains(&ox) {
                                    continue;
                                }
                                for o in 0..self.out_channels {
                                    out[(o * oh + oy as usize) * ow + ox as usize] +=
                                        v * w(o, c, ky, kx);
                                }
                            }
                        }
                    }
                }
            }
            return out;
        }
        // A plain convolution over the (nearest-upsampled) input: each output's sum runs
        // over channels, kernel rows and kernel columns in that order, a plane at a time.
        let (uh, uw) = (ih * u, iw * u);
        // The input column each output column reads through kernel column `kx` (`None`:
        // padding), and likewise for rows.
        let source = |outputs: usize, stride: usize, pad: usize, k: usize, len: usize| {
            (0..outputs)
                .map(|o| {
                    let at = (o * stride + k) as i64 - pad as i64;
                    (0..len as i64).contains(&at).then_some(at as usize / u)
                })
                .collect::<Vec<Option<usize>>>()
        };
        let columns: Vec<Vec<Option<usize>>> =
            (0..kw).map(|kx| source(ow, sx, px, kx, uw)).collect();
        let rows: Vec<Vec<Option<usize>>> = (0..kh).map(|ky| source(oh, sy, py, ky, uh)).collect();
        let mut sums = vec![0f64; oh * ow];
        // The upsampled input in f64, once; with stride 1 an output row's taps through kernel
        // column `kx` are one contiguous run of an upsampled row.
        let upsampled: Vec<f64> = (0..self.in_channels * uh * uw)
            .map(|i| {
                let (c, y, xx) = (i / (uh * uw), i / uw % uh, i % uw);
                f64::from(x[(c * ih + y / u) * iw + xx / u])
            })
            .collect();
        let runs: Vec<(usize, usize)> = (0..kw)
            .map(|kx| {
                let first = px.saturating_sub(kx).min(ow);
                let end = (uw + px).saturating_sub(kx).clamp(first, ow);
                (first, end)
            })
            .collect();
        for o in 0..self.out_channels {
            sums.iter_mut().for_each(|s| *s = 0.0);
            for c in 0..self.in_channels {
                let plane = &upsampled[c * uh * uw..(c + 1) * uh * uw];
                for (ky, row_of) in rows.iter().enumerate() {
                    for oy in 0..oh {
                        let y = (oy * sy + ky) as i64 - py as i64;
                        if row_of[oy].is_none() {
                            continue;
                        }
                        let input_row = &plane[y as usize * uw..(y as usize + 1) * uw];
                        let sum_row = &mut sums[oy * ow..(oy + 1) * ow];
                        for (kx, column_of) in columns.iter().enumerate() {
                            let wv = w(o, c, ky, kx);
                            if sx == 1 {
                                let (first, end) = runs[kx];
                                let from = first + kx - px;
                                for (sum, &v) in sum_row[first..end]
                                    .iter_mut()
                                    .zip(&input_row[from..from + (end - first)])
                                {
                                    *sum += v * wv;
                                }
                                continue;
                            }
                            for (ox, sum) in sum_row.iter_mut().enumerate() {
                                if column_of[ox].is_some() {
                                    *sum += input_row[ox * sx + kx - px] * wv;
                                }
                            }
                        }
                    }
                }
            }
            for (out, sum) in out[o * oh * ow..(o + 1) * oh * ow].iter_mut().zip(&sums) {
                *out += sum;
            }
        }
        out
    }

    /// One axis (`axis` 0: rows, 1: columns) as phases (see [`mcugan_shared::conv`]).
    pub fn axis_phases(&self, axis: usize) -> Result<AxisPhases, PhaseError> {
        let (k, s, p) = (
            self.kernel[axis] as i64,
            self.stride[axis] as i64,
            self.padding[axis] as i64,
        );
        let u = self.upsample.max(1) as i64;
        let name = ["rows", "columns"][axis];
        let (phases, stride) = match (self.transposed, u) {
            (false, 1) => (1, s),
            (false, u) if s == 1 => (u, 1),
            (false, _) => {
                return Err(PhaseError(format!(
                    "an upsampling by {u} before a convolution of stride {s}: the chip runs \
                     upsampling only before stride 1"
                )))
            }
            (true, _) => (s, 1),
        };
        if phases as usize > MAX_PHASES || stride > i64::from(mcugan_shared::conv::MAX_STRIDE) {
            return Err(PhaseError(format!(
                "a stride or upsampling of {} along the {name}: the chip runs at most {MAX_PHASES}",
                phases.max(stride)
            )));
        }
        let mut runs = Vec::new();
        let mut tap_of = Vec::new();
        for phase in 0..phases {
            // The input offset kernel position `ky` reads in this phase, if it reads one.
            let offsets: Vec<Option<i64>> = (0..k)
                .map(|ky| match (self.transposed, u) {
                    (false, 1) => Some(ky - p),
                    (false, u) => Some(floor_div(phase - p + ky, u)),
                    (true, _) => {
                        let d = phase + p - ky;
                        (d.rem_euclid(s) == 0).then(|| d.div_euclid(s))
                    }
                })
                .collect();
            let used: Vec<i64> = offsets.iter().flatten().copied().collect();
            let (first, last) = match (used.iter().min(), used.iter().max()) {
                (Some(&first), Some(&last)) => (first, last),
                // A transposed convolution's phase no kernel position lands on (kernel
                // smaller than the stride): one tap of zero weights, the bias alone.
                _ => (0, 0),
            };
            let count = last - first + 1;
            if count as usize > MAX_TAPS || !(-128..=127).contains(&first) {
                return Err(PhaseError(format!(
                    "{count} taps along the {name} from offset {first}: the chip takes at most \
                     {MAX_TAPS} (a kernel up to 7x7)"
                )));
            }
            runs.push(TapRun::new(first as i8, count as u8));
            tap_of.push(
                offsets
                    .iter()
                    .map(|o| o.map(|o| (o - first) as usize))
                    .collect(),
            );
        }
        Ok(AxisPhases {
            stride: stride as usize,
            runs,
            tap_of,
        })
    }

    /// Whether the chip runs this convolution (see [`Conv2d::phased`]): strides, upsampling
    /// and kernel within its bounds.
    pub fn check(&self) -> Result<(), PhaseError> {
        self.axis_phases(0)?;
        self.axis_phases(1)?;
        Ok(())
    }

    /// The phased form the chip runs: its geometry and, phase after phase (row phase major),
    /// each phase's weight matrix `[out][tap row][tap column][in]` (kernel positions that
    /// read the same input pixel through an upsampling summed into one weight).
    pub fn phased(&self, weight: &[f32]) -> Result<(ConvHeader, Vec<f32>), PhaseError> {
        let (rows, cols) = (self.axis_phases(0)?, self.axis_phases(1)?);
        if weight.len() != self.out_channels * self.row_len() {
            return Err(PhaseError(format!(
                "{} weights for {} output channels of {} each",
                weight.len(),
                self.out_channels,
                self.row_len()
            )));
        }
        let tensor = |c: usize, [h, w]: [usize; 2]| -> Result<TensorShape, PhaseError> {
            let side = |v: usize| {
                u16::try_from(v).map_err(|_| PhaseError(format!("a tensor side of {v}")))
            };
            Ok(TensorShape {
                channels: side(c)?,
                height: side(h)?,
                width: side(w)?,
            })
        };
        let header = ConvHeader {
            input: tensor(self.in_channels, self.input)?,
            output: tensor(self.out_channels, self.output)?,
            stride: [rows.stride as u8, cols.stride as u8],
            row_taps: rows.runs.iter().copied().collect(),
            col_taps: cols.runs.iter().copied().collect(),
        };
        let [kh, kw] = self.kernel;
        let cin = self.in_channels;
        let mut matrices = Vec::new();
        for (py, row_run) in rows.runs.iter().enumerate() {
            for (px, col_run) in cols.runs.iter().enumerate() {
                let (ty_n, tx_n) = (usize::from(row_run.count), usize::from(col_run.count));
                let patch = ty_n * tx_n * cin;
                let mut matrix = vec![0f32; self.out_channels * patch];
                for o in 0..self.out_channels {
                    for c in 0..cin {
                        for ky in 0..kh {
                            let Some(ty) = rows.tap_of[py][ky] else {
                                continue;
                            };
                            for kx in 0..kw {
                                let Some(tx) = cols.tap_of[px][kx] else {
                                    continue;
                                };
                                matrix[o * patch + (ty * tx_n + tx) * cin + c] +=
                                    weight[((o * cin + c) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
                matrices.extend(matrix);
            }
        }
        Ok((header, matrices))
    }
}

/// A channels-first tensor of `channels` channels in channels-last order.
pub fn channels_last(values: &[f32], channels: usize) -> Vec<f32> {
    let pixels = values.len() / channels.max(1);
    let mut out = vec![0f32; values.len()];
    for c in 0..channels {
        for p in 0..pixels {
            out[p * channels + c] = values[c * pixels + p];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcugan_shared::conv::ConvGeometry;

    /// The phased form's output from its definition, channels first, for comparison.
    fn phased_forward(conv: &Conv2d, weight: &[f32], bias: &[f32], x: &[f32]) -> Vec<f64> {
        let (header, matrices) = conv.phased(weight).unwrap();
        let g = ConvGeometry::validate(&header).unwrap();
        let [ih, iw] = conv.input.map(|v| v as i64);
        let [oh, ow] = conv.output;
        let cin = conv.in_channels;
        let mut out = vec![0f64; conv.output_len()];
        let mut start = 0;
        for (py, px) in g.phases() {
            let (ry, rx) = (g.rows.of(py), g.cols.of(px));
            let patch = g.patch_len(py, px);
            let (pn_y, pn_x) = (g.rows.phases(), g.cols.phases());
            for oy in (py..oh).step_by(pn_y) {
                for ox in (px..ow).step_by(pn_x) {
                    let (my, mx) = ((oy / pn_y) as i64, (ox / pn_x) as i64);
                    for o in 0..conv.out_channels {
                        let mut sum = f64::from(bias[o]);
                        for ty in 0..i64::from(ry.count) {
                            for tx in 0..i64::from(rx.count) {
                                let y = my * i64::from(g.stride[0]) + i64::from(ry.first) + ty;
                                let xx = mx * i64::from(g.stride[1]) + i64::from(rx.first) + tx;
                                if !(0..ih).contains(&y) || !(0..iw).contains(&xx) {
                                    continue;
                                }
                                for c in 0..cin {
                                    let k = ((ty * i64::from(rx.count) + tx) as usize) * cin + c;
                                    let v = x[(c * ih as usize + y as usize) * iw as usize
                                        + xx as usize];
                                    sum +=
                                        f64::from(matrices[start + o * patch + k]) * f64::from(v);
                                }
                            }
                        }
                        out[(o * oh + oy) * ow + ox] = sum;
                    }
                }
            }
            start += patch * conv.out_channels;
        }
        out
    }

    fn values(n: usize, salt: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ salt) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn check(conv: Conv2d) {
        let weight = values(conv.out_channels * conv.row_len(), 7);
        let bias = values(conv.out_channels, 11);
        let x = values(conv.input_len(), 13);
        let direct = conv.forward(&weight, &bias, &x);
        let phased = phased_forward(&conv, &weight, &bias, &x);
        for (i, (a, b)) in direct.iter().zip(&phased).enumerate() {
            assert!((a - b).abs() < 1e-4, "{conv:?}: output {i}: {a} vs {b}");
        }
    }

    fn conv(transposed: bool, input: usize, output: usize, k: usize, s: usize, p: usize) -> Conv2d {
        Conv2d {
            transposed,
            in_channels: 3,
            out_channels: 2,
            input: [input, input + 1],
            output: [output, output + if transposed { s } else { 0 }],
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            upsample: 1,
        }
    }

    #[test]
    fn phases_compute_what_the_operators_define() {
        // Conv 3x3 stride 1 pad 1, stride 2 pad 1, 5x5 pad 2, 4x4 stride 2 pad 1.
        check(conv(false, 6, 6, 3, 1, 1));
        check(Conv2d {
            output: [3, 4],
            ..conv(false, 6, 6, 3, 2, 1)
        });
        check(conv(false, 6, 6, 5, 1, 2));
        check(Conv2d {
            output: [3, 3],
            ..conv(false, 6, 6, 4, 2, 1)
        });
        // ConvTranspose 4x4 stride 2 pad 1 (doubling), 7x7 from 1x1, 3x3 stride 2 pad 1 with
        // output padding 1, 5x5 stride 1 pad 2, kernel smaller than the stride.
        check(Conv2d {
            output: [8, 10],
            ..conv(true, 4, 8, 4, 2, 1)
        });
        check(Conv2d {
            input: [1, 1],
            output: [7, 7],
            ..conv(true, 1, 7, 7, 1, 0)
        });
        check(Conv2d {
            output: [8, 10],
            ..conv(true, 4, 8, 3, 2, 1)
        });
        check(Conv2d {
            output: [4, 5],
            ..conv(true, 4, 4, 5, 1, 2)
        });
        check(Conv2d {
            output: [8, 10],
            ..conv(true, 4, 8, 1, 2, 0)
        });
        // Nearest upsampling by 2 and 3 before 3x3 and 5x5 convolutions (dcgan.py's blocks).
        for (u, k, p) in [(2, 3, 1), (3, 3, 1), (2, 5, 2), (2, 1, 0)] {
            check(Conv2d {
                input: [4, 3],
                output: [4 * u, 3 * u],
                upsample: u,
                ..conv(false, 4, 4 * u, k, 1, p)
            });
        }
    }

    #[test]
    fn upsampling_folds_into_fewer_taps() {
        let up = Conv2d {
            input: [8, 8],
            output: [16, 16],
            upsample: 2,
            ..conv(false, 8, 16, 3, 1, 1)
        };
        let (header, matrices) = up.phased(&values(2 * up.row_len(), 1)).unwrap();
        let g = ConvGeometry::validate(&header).unwrap();
        // Four phases of 2x2 taps: 4/9 of the operator's multiply-accumulates.
        assert_eq!(g.max_patch_len(), 4 * 3);
        assert_eq!(g.macs() * 9, up.operator_macs() * 4);
        assert_eq!(matrices.len(), 4 * 2 * 12);
    }

    #[test]
    fn what_the_chip_cannot_run_is_refused_by_name() {
        let too_wide = conv(false, 9, 1, 9, 1, 0);
        assert!(too_wide.check().unwrap_err().0.contains("at most 7"));
        let strided_upsample = Conv2d {
            upsample: 2,
            ..conv(false, 4, 4, 3, 2, 1)
        };
        assert!(strided_upsample.check().unwrap_err().0.contains("stride 1"));
    }

    #[test]
    fn channels_last_interleaves() {
        assert_eq!(
            channels_last(&[1.0, 2.0, 10.0, 20.0, 100.0, 200.0], 3),
            vec![1.0, 10.0, 100.0, 2.0, 20.0, 200.0]
        );
    }
}
