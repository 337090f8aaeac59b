//! A plain stride-1 convolution to a few output channels (a generator's last layer, to the
//! image's channels), computed directly: each kernel tap adds a shifted row of the input to a
//! row of the output. Its patch matrix would be 9·in channels rows of every output pixel — 151
//! MB for `dcgan.py`'s last layer at batch 64 — for a matrix product of one row, so gathering
//! it cost 20 times the arithmetic. The phased convolution hands these layers here.

use mcugan_float_model::conv::Conv2d as Geometry;
use rayon::prelude::*;

/// Whether `g` is computed here: stride 1, no upsampling, not transposed, at most 4 outputs.
pub(crate) fn applies(g: &Geometry) -> bool {
    !g.transposed && g.stride == [1, 1] && g.upsample <= 1 && g.out_channels <= 4
}

/// For kernel offset `k` along an axis of `input` positions and `output` positions: the first
/// output position whose input lies inside, the end of that run, and its first input position.
fn span(k: usize, pad: usize, input: usize, output: usize) -> (usize, usize, usize) {
    let first = pad.saturating_sub(k).min(output);
    let end = (input + pad).saturating_sub(k).clamp(first, output);
    (first, end, first + k - pad.min(first + k))
}

/// The convolution of `input` (`batch` images) with `weight`, without bias.
pub(crate) fn forward(g: &Geometry, input: &[f32], weight: &[f32], batch: usize) -> Vec<f32> {
    let ([ih, iw], [oh, ow], [kh, kw], [py, px]) = (g.input, g.output, g.kernel, g.padding);
    let (cin, cout) = (g.in_channels, g.out_channels);
    let mut output = vec![0f32; batch * cout * oh * ow];
    output
        .par_chunks_mut(oh * ow)
        .enumerate()
        .for_each(|(bo, plane)| {
            let (b, o) = (bo / cout, bo % cout);
            for c in 0..cin {
                let image = &input[(b * cin + c) * ih * iw..][..ih * iw];
                for ky in 0..kh {
                    let (y0, y1, iy0) = span(ky, py, ih, oh);
                    for kx in 0..kw {
                        let (x0, x1, ix0) = span(kx, px, iw, ow);
                        let w = weight[((o * cin + c) * kh + ky) * kw + kx];
                        for (i, oy) in (y0..y1).enumerate() {
                            let src = &image[(iy0 + i) * iw + ix0..][..x1 - x0];
                            let dst = &mut plane[oy * ow + x0..oy * ow + x1];
                            for (d, s) in dst.iter_mut().zip(src) {
                                *d += w * s;
                            }
                        }
                    }
                }
            }
        });
    output
}

/// The gradient with respect to the input, given the output's.
pub(crate) fn input_gradient(
    g: &Geometry,
    grad_output: &[f32],
    weight: &[f32],
    batch: usize,
) -> Vec<f32> {
    let ([ih, iw], [oh, ow], [kh, kw], [py, px]) = (g.input, g.output, g.kernel, g.padding);
    let (cin, cout) = (g.in_channels, g.out_channels);
    let mut grad = vec![0f32; batch * cin * ih * iw];
    grad.par_chunks_mut(ih * iw)
        .enumerate()
        .for_each(|(bc, image)| {
            let (b, c) = (bc / cin, bc % cin);
            for o in 0..cout {
                let plane = &grad_output[(b * cout + o) * oh * ow..][..oh * ow];
                for ky in 0..kh {
                    let (y0, y1, iy0) = span(ky, py, ih, oh);
                    for kx in 0..kw {
                        let (x0, x1, ix0) = span(kx, px, iw, ow);
                        let w = weight[((o * cin + c) * kh + ky) * kw + kx];
                        for (i, oy) in (y0..y1).enumerate() {
                            let src = &plane[oy * ow + x0..oy * ow + x1];
                            let dst = &mut image[(iy0 + i) * iw + ix0..][..x1 - x0];
                            for (d, s) in dst.iter_mut().zip(src) {
                                *d += w * s;
                            }
                        }
                    }
                }
            }
        });
    grad
}

/// The gradient with respect to the weights, given the input and the output's gradient.
pub(crate) fn weight_gradient(
    g: &Geometry,
    input: &[f32],
    grad_output: &[f32],
    batch: usize,
) -> Vec<f32> {
    let ([ih, iw], [oh, ow], [kh, kw], [py, px]) = (g.input, g.output, g.kernel, g.padding);
    let (cin, cout) = (g.in_channels, g.out_channels);
    let mut grad = vec![0f32; cout * cin * kh * kw];
    grad.par_chunks_mut(kh * kw)
        .enumerate()
        .for_each(|(oc, taps)| {
            let (o, c) = (oc / cin, oc % cin);
            for ky in 0..kh {
                let (y0, y1, iy0) = span(ky, py, ih, oh);
                for kx in 0..kw {
                    let (x0, x1, ix0) = span(kx, px, iw, ow);
                    let mut sum = 0f64;
                    for b in 0..batch {
                        let image = &input[(b * cin + c) * ih * iw..][..ih * iw];
                        let plane = &grad_output[(b * cout + o) * oh * ow..][..oh * ow];
                        for (i, oy) in (y0..y1).enumerate() {
                            let x = &image[(iy0 + i) * iw + ix0..][..x1 - x0];
                            let dy = &plane[oy * ow + x0..oy * ow + x1];
                            sum += f64::from(x.iter().zip(dy).map(|(a, b)| a * b).sum::<f32>());
                        }
                    }
                    taps[ky * kw + kx] = sum as f32;
                }
            }
        });
    grad
}
