//! The generator's exponential moving average of weights, the export of the `small-data`
//! recipe: the live weights of a GAN's generator wander around a good solution from batch to
//! batch, and their average draws cleaner images. Kept for either family of generator.

use std::collections::HashMap;

use anyhow::bail;
use candle_core::{CpuStorage, Device, Layout, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::model::conv::ConvGenerator;
use crate::model::mlp::MlpGenerator;
use crate::model::Generator;

/// `average += (1 − decay) · (value − average)` in place, in one pass, on the CPU.
struct EmaCpuUpdate {
    decay: f32,
}

impl candle_core::InplaceOp2 for EmaCpuUpdate {
    fn name(&self) -> &'static str {
        "weight-ema"
    }

    fn cpu_fwd(
        &self,
        avg: &mut CpuStorage,
        avg_l: &Layout,
        value: &CpuStorage,
        value_l: &Layout,
    ) -> Result<()> {
        let (avg, value) = crate::cpu::f32_operands("weight EMA", avg, avg_l, value, value_l)?;
        let rate = 1.0 - self.decay;
        for (a, &v) in avg.iter_mut().zip(value) {
            *a += rate * (v - *a);
        }
        Ok(())
    }
}

/// An exponential moving average of a generator's trainable weights.
pub struct WeightAverage {
    decay: f64,
    averages: Vec<(String, Var)>,
}

impl WeightAverage {
    /// Starts the average at the generator's current weights.
    pub fn new(generator: &Generator, decay: f64) -> Result<Self> {
        let averages = generator
            .vars()
            .into_iter()
            .map(|(name, var)| Ok((name, Var::from_tensor(&var.as_tensor().copy()?)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { decay, averages })
    }

    /// Moves the average towards the generator's current weights.
    pub fn update(&mut self, generator: &Generator) -> Result<()> {
        for ((_, avg), (_, var)) in self.averages.iter().zip(generator.vars()) {
            if avg.device().is_cpu() {
                avg.as_tensor().inplace_op2(
                    var.as_tensor(),
                    &EmaCpuUpdate {
                        decay: self.decay as f32,
                    },
                )?;
            } else {
                let next =
                    ((avg.as_tensor() * self.decay)? + (var.as_tensor() * (1.0 - self.decay))?)?;
                avg.set(&next)?;
            }
        }
        Ok(())
    }

    /// The averaged weights with their PyTorch names.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.averages
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect()
    }

    /// Restores averages saved by [`WeightAverage::tensors`].
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        for (name, var) in &self.averages {
            let key = format!("{prefix}{name}");
            let t = tensors
                .get(&key)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing tensor {key}")))?;
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// A generator with the averaged weights and BatchNorm statistics measured for them: the
    /// running statistics are reset and recomputed as plain averages over `batches` training-
    /// mode passes of `batch` latent vectors.
    pub fn export(
        &self,
        live: &Generator,
        batches: usize,
        batch: usize,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<Generator> {
        let device = self
            .averages
            .first()
            .map_or(Device::Cpu, |(_, v)| v.device().clone());
        let tensors: HashMap<String, Tensor> =
            live.state()?.into_iter().chain(self.tensors()).collect();
        let mut generator = match live {
            Generator::Mlp(g) if g.classes().is_some() => {
                bail!("the weight average is kept for unconditional generators only")
            }
            Generator::Mlp(_) => Generator::Mlp(MlpGenerator::new(rng, &device)?),
            Generator::Conv(g) => Generator::Conv(ConvGenerator::new(&g.spec, rng, &device)?),
        };
        generator.load_state(&tensors, "")?;
        generator.reset_norm_statistics()?;
        for k in 1..=batches.max(1) {
            generator.set_norm_momentum(1.0 / k as f64);
            let z = crate::model::sample_z(rng, batch, &device)?;
            generator.forward_train_unconditional(&z)?;
        }
        generator.copy_norm_schedule(live);
        Ok(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn the_weight_average_follows_the_weights() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mlp = MlpGenerator::new(&mut rng, &device).unwrap();
        let before = mlp.linears[0].weight.as_tensor().copy().unwrap();
        let g = Generator::Mlp(mlp);
        let mut avg = WeightAverage::new(&g, 0.9).unwrap();
        g.mlp().unwrap().linears[0]
            .weight
            .set(&(before.clone() + 1.0).unwrap())
            .unwrap();
        avg.update(&g).unwrap();
        let a = &avg.tensors()[0].1;
        let diff = (a - (before + 0.1).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn a_convolutional_generator_exports_its_average_with_fresh_statistics() {
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let spec = crate::model::conv::ConvGanSpec::dcgan_256k().generator;
        let live = Generator::Conv(ConvGenerator::new(&spec, &mut rng, &device).unwrap());
        let avg = WeightAverage::new(&live, 0.999).unwrap();
        let exported = avg.export(&live, 4, 32, &mut rng).unwrap();
        let Generator::Conv(g) = &exported else {
            panic!("the export of a convolutional generator is convolutional");
        };
        // The live generator never ran, so its running statistics are 0 and 1; the export's
        // are measured.
        let mean = g.norms[1]
            .running_mean
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(mean > 0.0, "{mean}");
        let z = crate::model::sample_z(&mut rng, 2, &device).unwrap();
        let images = exported.forward_eval(&z, None).unwrap();
        assert_eq!(images.dims(), &[2, spec.image_len()]);
    }
}
