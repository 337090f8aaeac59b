//! BatchNorm2d in training mode, optionally followed by LeakyReLU, as one candle op on the CPU:
//! per channel, the batch statistics and the normalisation in two sweeps, and the backward
//! pass in two more, on the convolutions' threads. Written out with tensors, the same layer is
//! a dozen candle ops, each allocating a tensor, whose backward passes reduce over the batch and
//! both spatial axes; that graph was the largest share of `dcgan.py`'s step after the
//! convolutions. The tensor version ([`super::BatchNorm2d`] on other devices) is the reference
//! the tests hold this op to.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// The per-channel statistics of the batch a forward pass normalised: mean and biased
/// variance.
#[derive(Clone, Debug, Default)]
pub(crate) struct BatchStatistics {
    pub(crate) mean: Vec<f64>,
    pub(crate) variance: Vec<f64>,
}

/// `leaky(γ·(x − mean)/√(var + eps) + β)` over `[batch, channels, rows, columns]` with the
/// batch's statistics; `slope: None` leaves out the LeakyReLU.
pub(crate) struct NormTrain {
    pub(crate) eps: f64,
    pub(crate) slope: Option<f32>,
    /// What the forward pass measured, for the running statistics and the backward pass.
    pub(crate) statistics: Arc<Mutex<BatchStatistics>>,
}

/// The contiguous f32 values behind a CPU storage.
fn slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("BatchNorm2d takes f32 tensors");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("BatchNorm2d takes contiguous tensors");
    };
    Ok(&all[start..end])
}

/// Runs `f` on the contiguous f32 values of a CPU tensor.
fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("the fused BatchNorm2d runs on the CPU");
    };
    f(slice(cpu, layout)?)
}

/// The values of channel `c`: one run of `plane` per image.
fn channel_runs(
    values: &[f32],
    channels: usize,
    plane: usize,
    c: usize,
) -> impl Iterator<Item = &[f32]> {
    values.chunks(plane).skip(c).step_by(channels)
}

impl NormTrain {
    fn scale_shift(&self, stats: &BatchStatistics, gamma: &[f32], beta: &[f32]) -> Vec<(f32, f32)> {
        (0..gamma.len())
            .map(|c| {
                let inv = 1.0 / (stats.variance[c] + self.eps).sqrt();
                let scale = f64::from(gamma[c]) * inv;
                (
                    scale as f32,
                    (f64::from(beta[c]) - stats.mean[c] * scale) as f32,
                )
            })
            .collect()
    }

    fn activate(&self, z: f32) -> f32 {
        match self.slope {
            Some(slope) if z < 0.0 => z * slope,
            _ => z,
        }
    }
}

impl CustomOp3 for NormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-2d-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (batch, channels, rows, cols) = l1.shape().dims4()?;
        if gamma.len() != channels || beta.len() != channels {
            candle_core::bail!("BatchNorm2d of {} channels given {channels}", gamma.len());
        }
        let plane = rows * cols;
        let count = (batch * plane) as f64;
        let per_channel: Vec<(f64, f64)> = crate::cpu::run_conv(|_| {
            (0..channels)
                .into_par_iter()
                .map(|c| {
                    let sum: f64 = channel_runs(x, channels, plane, c)
                        .flat_map(|run| run.iter())
                        .map(|&v| f64::from(v))
                        .sum();
                    let mean = sum / count;
                    let squares: f64 = channel_runs(x, channels, plane, c)
                        .flat_map(|run| run.iter())
                        .map(|&v| (f64::from(v) - mean).powi(2))
                        .sum();
                    (mean, squares / count)
                })
                .collect()
        });
        let stats = BatchStatistics {
            mean: per_channel.iter().map(|s| s.0).collect(),
            variance: per_channel.iter().map(|s| s.1).collect(),
        };
        let factors = self.scale_shift(&stats, gamma, beta);
        let mut y = vec![0f32; x.len()];
        crate::cpu::run_conv(|_| {
            y.par_chunks_mut(plane)
                .zip(x.par_chunks(plane))
                .enumerate()
                .for_each(|(i, (out, input))| {
                    let (scale, shift) = factors[i % channels];
                    for (o, &v) in out.iter_mut().zip(input) {
                        *o = self.activate(v * scale + shift);
                    }
                });
        });
        if let Ok(mut cell) = self.statistics.lock() {
            *cell = stats;
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (batch, channels, rows, cols) = x.dims4()?;
        let plane = rows * cols;
        let count = (batch * plane) as f64;
        let stats =
            self.statistics.lock().map(|s| s.clone()).map_err(|_| {
                candle_core::Error::Msg("BatchNorm2d's statistics were lost".into())
            })?;
        let gamma_v = gamma.to_vec1::<f32>()?;
        let beta_v = beta.to_vec1::<f32>()?;
        let factors = self.scale_shift(&stats, &gamma_v, &beta_v);
        let inv: Vec<f64> = stats
            .variance
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        let slope = self.slope.unwrap_or(1.0);
        let (dx, dgamma, dbeta) = with_values(x, |x| {
            with_values(grad, |dy| {
                // dz = dy · leaky'(z); per channel Σdz and Σdz·x̂.
                let dz_of = |i: usize, v: f32, g: f32| {
                    let (scale, shift) = factors[i % channels];
                    if self.slope.is_some() && v * scale + shift < 0.0 {
                        g * slope
                    } else {
                        g
                    }
                };
                let sums: Vec<(f64, f64)> = crate::cpu::run_conv(|_| {
                    (0..channels)
                        .into_par_iter()
                        .map(|c| {
                            let (mut s, mut sx) = (0f64, 0f64);
                            for (xr, gr) in channel_runs(x, channels, plane, c)
                                .zip(channel_runs(dy, channels, plane, c))
                            {
                                for (&v, &g) in xr.iter().zip(gr) {
                                    let dz = f64::from(dz_of(c, v, g));
                                    s += dz;
                                    sx += dz * (f64::from(v) - stats.mean[c]) * inv[c];
                                }
                            }
                            (s, sx)
                        })
                        .collect()
                });
                let mut dx = vec![0f32; x.len()];
                crate::cpu::run_conv(|_| {
                    dx.par_chunks_mut(plane)
                        .zip(x.par_chunks(plane).zip(dy.par_chunks(plane)))
                        .enumerate()
                        .for_each(|(i, (out, (xr, gr)))| {
                            let c = i % channels;
                            let k = f64::from(gamma_v[c]) * inv[c];
                            let (mean_dz, mean_dzx) = (sums[c].0 / count, sums[c].1 / count);
                            for ((o, &v), &g) in out.iter_mut().zip(xr).zip(gr) {
                                let dz = f64::from(dz_of(c, v, g));
                                let xhat = (f64::from(v) - stats.mean[c]) * inv[c];
                                *o = (k * (dz - mean_dz - xhat * mean_dzx)) as f32;
                            }
                        });
                });
                let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
                let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
                Ok((dx, dgamma, dbeta))
            })
        })?;
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(dgamma, channels, device)?),
            Some(Tensor::from_vec(dbeta, channels, device)?),
        ))
    }
}
