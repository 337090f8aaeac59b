//! A convolution computed in its phased form on the CPU, the form the chip runs (see
//! `mcugan_shared::conv`): a nearest upsampling before a convolution is folded into per-phase
//! kernels (after a doubling, 4 taps instead of 9, and the upsampled tensor is never built), a
//! strided convolution reads only the inputs it needs, and each phase is one matrix product
//! over gathered patches. Forward pass and both gradients are candle custom ops, so candle's
//! autograd drives them; the tests hold them to candle's own `upsample_nearest2d` + `conv2d`.
//!
//! Layouts are candle's: inputs and outputs `[batch, channels, rows, columns]`, weights
//! `[out, in, kernel rows, kernel columns]` (no bias: the layer adds it). A phase's patch
//! matrix is `[(in channel, tap row, tap column)][(image, row, column of the phase's grid)]`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use mcugan_float_model::conv::{AxisPhases, Conv2d as Geometry};
use rayon::prelude::*;

use crate::cpu::matmul::{matmul_a_b, matmul_a_bt, matmul_at_b};

/// Scratch matrices kept between calls: a patch matrix of `dcgan.py`'s widest layer at batch
/// 64 is 34 MB, which the allocator would otherwise map and the kernel zero page by page on
/// every call.
static SCRATCH: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A scratch vector (empty, perhaps with capacity) from the pool.
fn scratch() -> Vec<f32> {
    SCRATCH
        .lock()
        .ok()
        .and_then(|mut pool| pool.pop())
        .unwrap_or_default()
}

/// Returns scratch vectors to the pool (at most four are kept).
fn recycle(vectors: impl IntoIterator<Item = Vec<f32>>) {
    if let Ok(mut pool) = SCRATCH.lock() {
        for mut v in vectors {
            if pool.len() < 4 {
                v.clear();
                pool.push(v);
            }
        }
    }
}

/// A convolution's geometry (for one image) and its phases along both axes.
#[derive(Clone, Debug)]
pub struct PhasedGeometry {
    geometry: Geometry,
    rows: AxisPhases,
    cols: AxisPhases,
}

/// One phase: its place in the output grid and the taps it reads.
#[derive(Clone, Copy, Debug)]
struct Phase {
    /// Row and column phase.
    py: usize,
    px: usize,
    /// Rows and columns of the phase's output grid.
    grid: (usize, usize),
    /// First input row and column offset, and the tap counts.
    first: (i64, i64),
    taps: (usize, usize),
}

impl PhasedGeometry {
    /// The phases of `geometry` (a plain, strided or upsampled convolution, or a transposed
    /// one), or why it has none.
    pub fn new(geometry: Geometry) -> anyhow::Result<Self> {
        let rows = geometry.axis_phases(0)?;
        let cols = geometry.axis_phases(1)?;
        Ok(Self {
            geometry,
            rows,
            cols,
        })
    }

    /// The geometry it was made from.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    fn phases(&self) -> Vec<Phase> {
        let (ny, nx) = (self.rows.runs.len(), self.cols.runs.len());
        let [oh, ow] = self.geometry.output;
        let mut phases = Vec::with_capacity(ny * nx);
        for (py, row) in self.rows.runs.iter().enumerate() {
            for (px, col) in self.cols.runs.iter().enumerate() {
                let grid = (
                    oh.saturating_sub(py).div_ceil(ny),
                    ow.saturating_sub(px).div_ceil(nx),
                );
                phases.push(Phase {
                    py,
                    px,
                    grid,
                    first: (i64::from(row.first), i64::from(col.first)),
                    taps: (usize::from(row.count), usize::from(col.count)),
                });
            }
        }
        phases
    }

    fn patch_len(&self, phase: &Phase) -> usize {
        self.geometry.in_channels * phase.taps.0 * phase.taps.1
    }

    /// The phase's weight matrix `[out][(in, tap row, tap column)]`: the kernel positions that
    /// read the same input pixel summed.
    fn phase_weights(&self, weight: &[f32], phase: &Phase) -> Vec<f32> {
        let g = &self.geometry;
        let [kh, kw] = g.kernel;
        let (ty_n, tx_n) = phase.taps;
        let patch = self.patch_len(phase);
        let mut matrix = vec![0f32; g.out_channels * patch];
        for o in 0..g.out_channels {
            for c in 0..g.in_channels {
                for ky in 0..kh {
                    let Some(ty) = self.rows.tap_of[phase.py][ky] else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(tx) = self.cols.tap_of[phase.px][kx] else {
                            continue;
                        };
                        matrix[o * patch + (c * ty_n + ty) * tx_n + tx] +=
                            weight[((o * g.in_channels + c) * kh + ky) * kw + kx];
                    }
                }
            }
        }
        matrix
    }

    /// Adds the gradient of a phase's weight matrix to the kernel's gradient.
    fn add_weight_gradient(&self, phase_grad: &[f32], phase: &Phase, grad: &mut [f32]) {
        let g = &self.geometry;
        let [kh, kw] = g.kernel;
        let (ty_n, tx_n) = phase.taps;
        let patch = self.patch_len(phase);
        for o in 0..g.out_channels {
            for c in 0..g.in_channels {
                for ky in 0..kh {
                    let Some(ty) = self.rows.tap_of[phase.py][ky] else {
                        continue;
                    };
                    for kx in 0..kw {
                        let Some(tx) = self.cols.tap_of[phase.px][kx] else {
                            continue;
                        };
                        grad[((o * g.in_channels + c) * kh + ky) * kw + kx] +=
                            phase_grad[o * patch + (c * ty_n + ty) * tx_n + tx];
                    }
                }
            }
        }
    }

    /// For tap `(ty, tx)` of the phase: per grid row, the input row it reads (`None`: padding),
    /// and the grid columns `first..end` that read inside the input, the first of them
    /// reading input column `from` (then every `stride`-th).
    fn tap_span(
        &self,
        phase: &Phase,
        ty: usize,
        tx: usize,
    ) -> (Vec<Option<usize>>, usize, usize, usize) {
        let [ih, iw] = self.geometry.input;
        let (mh, mw) = phase.grid;
        let rows = (0..mh)
            .map(|my| {
                let y = (self.rows.stride * my) as i64 + phase.first.0 + ty as i64;
                (0..ih as i64).contains(&y).then_some(y as usize)
            })
            .collect();
        let column = |mx: usize| (self.cols.stride * mx) as i64 + phase.first.1 + tx as i64;
        let first = (0..mw).find(|&mx| column(mx) >= 0).unwrap_or(mw);
        let end = (first..mw)
            .find(|&mx| column(mx) >= iw as i64)
            .unwrap_or(mw);
        let from = if first < end {
            column(first) as usize
        } else {
            0
        };
        (rows, first, end, from)
    }

    /// The phase's patch matrix of `input` (`batch` images) into `cols`.
    fn gather(&self, input: &[f32], batch: usize, phase: &Phase, cols: &mut Vec<f32>) {
        let g = &self.geometry;
        let (plane, iw) = (g.input[0] * g.input[1], g.input[1]);
        let (mh, mw) = phase.grid;
        let n = batch * mh * mw;
        let (ty_n, tx_n) = phase.taps;
        let stride = self.cols.stride;
        cols.clear();
        cols.resize(self.patch_len(phase) * n, 0.0);
        cols.par_chunks_mut(n).enumerate().for_each(|(row, out)| {
            let (c, t) = (row / (ty_n * tx_n), row % (ty_n * tx_n));
            let (ty, tx) = (t / tx_n, t % tx_n);
            let (rows, first, end, from) = self.tap_span(phase, ty, tx);
            for b in 0..batch {
                let image = &input[(b * g.in_channels + c) * plane..][..plane];
                for (my, y) in rows.iter().enumerate() {
                    let Some(y) = *y else { continue };
                    let dst = &mut out[(b * mh + my) * mw..][first..end];
                    let src = &image[y * iw + from..];
                    if stride == 1 {
                        dst.copy_from_slice(&src[..end - first]);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
                            *d = *s;
                        }
                    }
                }
            }
        });
    }

    /// Adds a phase's patch-matrix gradient `cols` back onto the input gradient.
    fn scatter_input(&self, cols: &[f32], batch: usize, phase: &Phase, grad: &mut [f32]) {
        let g = &self.geometry;
        let (plane, iw) = (g.input[0] * g.input[1], g.input[1]);
        let (mh, mw) = phase.grid;
        let n = batch * mh * mw;
        let (ty_n, tx_n) = phase.taps;
        let stride = self.cols.stride;
        let spans: Vec<_> = (0..ty_n * tx_n)
            .map(|t| self.tap_span(phase, t / tx_n, t % tx_n))
            .collect();
        grad.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(bc, image)| {
                let (b, c) = (bc / g.in_channels, bc % g.in_channels);
                for (t, (rows, first, end, from)) in spans.iter().enumerate() {
                    let row = &cols[(c * ty_n * tx_n + t) * n..][..n];
                    for (my, y) in rows.iter().enumerate() {
                        let Some(y) = *y else { continue };
                        let src = &row[(b * mh + my) * mw..][*first..*end];
                        let dst = &mut image[y * iw + from..];
                        if stride == 1 {
                            for (d, s) in dst.iter_mut().zip(src) {
                                *d += *s;
                            }
                        } else {
                            for (d, s) in dst.iter_mut().step_by(stride).zip(src) {
                                *d += *s;
                            }
                        }
                    }
                }
            });
    }

    /// Where grid row `my` of a phase lies in an output plane: the index of its first pixel,
    /// and the step between its pixels.
    fn output_run(&self, phase: &Phase, my: usize) -> (usize, usize) {
        let (ny, nx) = (self.rows.runs.len(), self.cols.runs.len());
        (
            (ny * my + phase.py) * self.geometry.output[1] + phase.px,
            nx,
        )
    }

    /// The convolution of `input` (`batch` images) with `weight`, without bias.
    pub fn forward(
        &self,
        input: &[f32],
        weight: &[f32],
        batch: usize,
        par: Parallelism,
    ) -> Vec<f32> {
        let g = &self.geometry;
        if super::direct::applies(g) {
            return super::direct::forward(g, input, weight, batch);
        }
        let out_plane = g.output[0] * g.output[1];
        let mut output = vec![0f32; batch * g.out_channels * out_plane];
        let (mut cols, mut product) = (scratch(), scratch());
        for phase in self.phases() {
            let (mh, mw) = phase.grid;
            let n = batch * mh * mw;
            if n == 0 {
                continue;
            }
            let k = self.patch_len(&phase);
            let matrix = self.phase_weights(weight, &phase);
            self.gather(input, batch, &phase, &mut cols);
            product.resize(g.out_channels * n, 0.0);
            matmul_a_b(par, &mut product, &matrix, &cols, g.out_channels, n, k);
            output
                .par_chunks_mut(out_plane)
                .enumerate()
                .for_each(|(bo, plane)| {
                    let (b, o) = (bo / g.out_channels, bo % g.out_channels);
                    let row = &product[o * n + b * mh * mw..][..mh * mw];
                    for (my, src) in row.chunks(mw.max(1)).enumerate() {
                        let (start, step) = self.output_run(&phase, my);
                        for (d, s) in plane[start..].iter_mut().step_by(step).zip(src) {
                            *d = *s;
                        }
                    }
                });
        }
        recycle([cols, product]);
        output
    }

    /// One phase's rows of the output gradient, `[out][(image, row, column)]`.
    fn phase_gradient(
        &self,
        grad_output: &[f32],
        batch: usize,
        phase: &Phase,
        rows: &mut Vec<f32>,
    ) {
        let g = &self.geometry;
        let out_plane = g.output[0] * g.output[1];
        let (mh, mw) = phase.grid;
        let n = batch * mh * mw;
        rows.clear();
        rows.resize(g.out_channels * n, 0.0);
        rows.par_chunks_mut(n).enumerate().for_each(|(o, row)| {
            for b in 0..batch {
                let plane = &grad_output[(b * g.out_channels + o) * out_plane..][..out_plane];
                for my in 0..mh {
                    let (start, step) = self.output_run(phase, my);
                    let dst = &mut row[(b * mh + my) * mw..][..mw];
                    for (d, s) in dst.iter_mut().zip(plane[start..].iter().step_by(step)) {
                        *d = *s;
                    }
                }
            }
        });
    }

    /// The gradient with respect to the input, given the output's.
    pub fn input_gradient(
        &self,
        grad_output: &[f32],
        weight: &[f32],
        batch: usize,
        par: Parallelism,
    ) -> Vec<f32> {
        let g = &self.geometry;
        if super::direct::applies(g) {
            return super::direct::input_gradient(g, grad_output, weight, batch);
        }
        let mut grad = vec![0f32; batch * g.input_len()];
        let (mut cols, mut rows) = (scratch(), scratch());
        for phase in self.phases() {
            let (mh, mw) = phase.grid;
            let n = batch * mh * mw;
            if n == 0 {
                continue;
            }
            let k = self.patch_len(&phase);
            let matrix = self.phase_weights(weight, &phase);
            self.phase_gradient(grad_output, batch, &phase, &mut rows);
            cols.resize(k * n, 0.0);
            matmul_at_b(par, &mut cols, &matrix, &rows, g.out_channels, k, n);
            self.scatter_input(&cols, batch, &phase, &mut grad);
        }
        recycle([cols, rows]);
        grad
    }

    /// The gradient with respect to the weights, given the input and the output's gradient.
    pub fn weight_gradient(
        &self,
        input: &[f32],
        grad_output: &[f32],
        batch: usize,
        par: Parallelism,
    ) -> Vec<f32> {
        let g = &self.geometry;
        if super::direct::applies(g) {
            return super::direct::weight_gradient(g, input, grad_output, batch);
        }
        let mut grad = vec![0f32; g.out_channels * g.row_len()];
        let (mut cols, mut product, mut rows) = (scratch(), scratch(), scratch());
        for phase in self.phases() {
            let (mh, mw) = phase.grid;
            let n = batch * mh * mw;
            if n == 0 {
                continue;
            }
            let k = self.patch_len(&phase);
            self.gather(input, batch, &phase, &mut cols);
            self.phase_gradient(grad_output, batch, &phase, &mut rows);
            product.resize(g.out_channels * k, 0.0);
            matmul_a_bt(par, &mut product, &rows, &cols, g.out_channels, k, n);
            self.add_weight_gradient(&product, &phase, &mut grad);
        }
        recycle([cols, product, rows]);
        grad
    }
}

/// What one of the three custom ops computes.
#[derive(Clone, Copy, Debug)]
enum Pass {
    /// `(input, weight)` → output.
    Forward,
    /// `(output gradient, weight)` → input gradient.
    InputGradient,
    /// `(input, output gradient)` → weight gradient.
    WeightGradient,
}

/// A phased convolution as a candle op (see [`conv2d`]).
struct PhasedConv {
    geometry: Arc<PhasedGeometry>,
    pass: Pass,
}

/// The contiguous f32 values of a CPU tensor.
fn values<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("the phased convolution's {what} must be f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the phased convolution's {what} must be contiguous");
    };
    Ok(&all[start..end])
}

impl CustomOp2 for PhasedConv {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "phased-conv2d",
            Pass::InputGradient => "phased-conv2d-input-gradient",
            Pass::WeightGradient => "phased-conv2d-weight-gradient",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geometry.geometry();
        let (a, b) = (
            values(s1, l1, "first operand")?,
            values(s2, l2, "second operand")?,
        );
        let batch = l1.dims()[0];
        let weight_shape = Shape::from((g.out_channels, g.in_channels, g.kernel[0], g.kernel[1]));
        let (in_shape, out_shape) = (
            Shape::from((batch, g.in_channels, g.input[0], g.input[1])),
            Shape::from((batch, g.out_channels, g.output[0], g.output[1])),
        );
        let (expect1, expect2, result_shape) = match self.pass {
            Pass::Forward => (&in_shape, &weight_shape, out_shape.clone()),
            Pass::InputGradient => (&out_shape, &weight_shape, in_shape.clone()),
            Pass::WeightGradient => (&in_shape, &out_shape, weight_shape.clone()),
        };
        if l1.shape() != expect1 || l2.shape() != expect2 {
            candle_core::bail!(
                "{}: operands of shapes {:?} and {:?}, expected {:?} and {:?}",
                self.name(),
                l1.dims(),
                l2.dims(),
                expect1.dims(),
                expect2.dims()
            );
        }
        let geometry = &self.geometry;
        let result = crate::cpu::run_conv(|par| match self.pass {
            Pass::Forward => geometry.forward(a, b, batch, par),
            Pass::InputGradient => geometry.input_gradient(a, b, batch, par),
            Pass::WeightGradient => geometry.weight_gradient(a, b, batch, par),
        });
        Ok((CpuStorage::F32(result), result_shape))
    }

    fn bwd(
        &self,
        input: &Tensor,
        weight: &Tensor,
        _output: &Tensor,
        grad_output: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = |pass| PhasedConv {
            geometry: Arc::clone(&self.geometry),
            pass,
        };
        let grad_output = grad_output.contiguous()?;
        let grad_input = grad_output.apply_op2_no_bwd(weight, &op(Pass::InputGradient))?;
        let grad_weight = input.apply_op2_no_bwd(&grad_output, &op(Pass::WeightGradient))?;
        Ok((Some(grad_input), Some(grad_weight)))
    }
}

/// The convolution `geometry` describes of `input` (`[batch, in, rows, columns]`) with
/// `weight` (`[out, in, kernel rows, kernel columns]`), without bias, in its phased form, with
/// gradients for both, on [`crate::cpu::run_conv`]'s threads. CPU tensors only.
pub fn conv2d(input: &Tensor, weight: &Tensor, geometry: &Arc<PhasedGeometry>) -> Result<Tensor> {
    input.contiguous()?.apply_op2(
        &weight.contiguous()?,
        PhasedConv {
            geometry: Arc::clone(geometry),
            pass: Pass::Forward,
        },
    )
}
