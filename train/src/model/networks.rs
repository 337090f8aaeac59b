//! What a run trains, whatever the architecture: [`Architecture`] names it, [`Generator`] and
//! [`Discriminator`] hold either family's networks and answer what the state, the checkpoint
//! and the export ask of any of them.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::conv::{ConvDiscriminator, ConvGanSpec, ConvGenerator};
use super::mlp::{MlpDiscriminator, MlpGenerator};
use super::{IMAGE_PIXELS, LATENT_DIM};

/// The networks a run trains.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Architecture {
    /// `gan.py`'s MLP (or, with classes, `cgan.py`'s), 28x28.
    #[default]
    Mlp,
    /// A convolutional GAN: `dcgan.py`'s, or a variant of its pattern.
    Conv(ConvGanSpec),
}

impl Architecture {
    /// The networks in words, for messages.
    pub fn describe(&self) -> String {
        match self {
            Architecture::Mlp => "gan.py's MLP".to_string(),
            Architecture::Conv(spec) if *spec == ConvGanSpec::dcgan() => {
                "dcgan.py's convolutional GAN".to_string()
            }
            Architecture::Conv(spec) => format!(
                "a convolutional GAN (generator channels {:?}, discriminator channels {:?})",
                spec.generator.channels, spec.discriminator.channels
            ),
        }
    }

    /// Side of the images it draws and judges.
    pub fn image_side(&self) -> usize {
        match self {
            Architecture::Mlp => 28,
            Architecture::Conv(spec) => spec.generator.image_side(),
        }
    }

    /// Values of one image.
    pub fn image_len(&self) -> usize {
        match self {
            Architecture::Mlp => IMAGE_PIXELS,
            Architecture::Conv(spec) => spec.generator.image_len(),
        }
    }

    /// Latent vector length.
    pub fn latent(&self) -> usize {
        match self {
            Architecture::Mlp => LATENT_DIM,
            Architecture::Conv(spec) => spec.generator.latent,
        }
    }

    /// Both networks, freshly initialised from `rng` (generator first), for `classes`
    /// (`cgan.py`'s conditional MLP) or none.
    pub fn networks(
        &self,
        classes: Option<usize>,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> anyhow::Result<(Generator, Discriminator)> {
        Ok(match (self, classes) {
            (Architecture::Mlp, Some(classes)) => (
                Generator::Mlp(MlpGenerator::conditional(classes, rng, device)?),
                Discriminator::Mlp(MlpDiscriminator::conditional(classes, rng, device)?),
            ),
            (Architecture::Mlp, None) => (
                Generator::Mlp(MlpGenerator::new(rng, device)?),
                Discriminator::Mlp(MlpDiscriminator::new(rng, device)?),
            ),
            (Architecture::Conv(spec), None) => {
                spec.check()?;
                (
                    Generator::Conv(ConvGenerator::new(&spec.generator, rng, device)?),
                    Discriminator::Conv(ConvDiscriminator::new(spec, rng, device)?),
                )
            }
            (Architecture::Conv(_), Some(_)) => {
                anyhow::bail!("the convolutional GANs are unconditional: leave --conditional out")
            }
        })
    }
}

/// A generator of either family.
pub enum Generator {
    /// `gan.py`'s (or `cgan.py`'s).
    Mlp(MlpGenerator),
    /// `dcgan.py`'s pattern.
    Conv(ConvGenerator),
}

/// A discriminator of either family.
pub enum Discriminator {
    /// `gan.py`'s (or `cgan.py`'s).
    Mlp(MlpDiscriminator),
    /// `dcgan.py`'s pattern.
    Conv(ConvDiscriminator),
}

impl Generator {
    /// The MLP, when it is one.
    pub fn mlp(&self) -> Option<&MlpGenerator> {
        match self {
            Generator::Mlp(g) => Some(g),
            Generator::Conv(_) => None,
        }
    }

    /// The MLP, when it is one, mutably.
    pub fn mlp_mut(&mut self) -> Option<&mut MlpGenerator> {
        match self {
            Generator::Mlp(g) => Some(g),
            Generator::Conv(_) => None,
        }
    }

    /// Classes of a conditional generator; `None` for an unconditional one.
    pub fn classes(&self) -> Option<usize> {
        self.mlp().and_then(MlpGenerator::classes)
    }

    /// Evaluation-mode images `[batch, values]` in `[-1, 1]` for latent vectors `z` and, for a
    /// conditional generator, class `labels`.
    pub fn forward_eval(&self, z: &Tensor, labels: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Generator::Mlp(g) => g.forward_eval(&g.input(z, labels)?),
            Generator::Conv(g) => match labels {
                None => g.forward_eval(z),
                Some(_) => candle_core::bail!("the unconditional generator takes no labels"),
            },
        }
    }

    /// The trainable variables with their PyTorch names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        match self {
            Generator::Mlp(g) => g.vars(),
            Generator::Conv(g) => g.vars(),
        }
    }

    /// Training-mode images of an unconditional generator for latent vectors `z` (batch
    /// statistics; running statistics updated).
    pub fn forward_train_unconditional(&mut self, z: &Tensor) -> Result<Tensor> {
        match self {
            Generator::Mlp(g) if g.classes().is_some() => {
                candle_core::bail!("the conditional generator needs labels")
            }
            Generator::Mlp(g) => g.forward_train(z),
            Generator::Conv(g) => g.forward_train(z),
        }
    }

    /// Resets every BatchNorm's running statistics to mean 0, variance 1.
    pub fn reset_norm_statistics(&mut self) -> Result<()> {
        match self {
            Generator::Mlp(g) => {
                for norm in &mut g.norms {
                    norm.running_mean = norm.running_mean.zeros_like()?;
                    norm.running_var = norm.running_var.ones_like()?;
                }
            }
            Generator::Conv(g) => {
                for norm in &mut g.norms {
                    norm.running_mean = norm.running_mean.zeros_like()?;
                    norm.running_var = norm.running_var.ones_like()?;
                }
            }
        }
        Ok(())
    }

    /// Sets every BatchNorm's momentum (the weight of the next batch's statistics).
    pub fn set_norm_momentum(&mut self, momentum: f64) {
        match self {
            Generator::Mlp(g) => g.norms.iter_mut().for_each(|n| n.momentum = momentum),
            Generator::Conv(g) => g.norms.iter_mut().for_each(|n| n.momentum = momentum),
        }
    }

    /// Takes every BatchNorm's momentum and batch count from `other`, a generator of the
    /// same shape.
    pub fn copy_norm_schedule(&mut self, other: &Generator) {
        match (self, other) {
            (Generator::Mlp(g), Generator::Mlp(o)) => {
                for (norm, theirs) in g.norms.iter_mut().zip(&o.norms) {
                    norm.momentum = theirs.momentum;
                    norm.num_batches_tracked = theirs.num_batches_tracked;
                }
            }
            (Generator::Conv(g), Generator::Conv(o)) => {
                for (norm, theirs) in g.norms.iter_mut().zip(&o.norms) {
                    norm.momentum = theirs.momentum;
                    norm.num_batches_tracked = theirs.num_batches_tracked;
                }
            }
            _ => {}
        }
    }

    /// Every tensor of the state, PyTorch names.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Generator::Mlp(g) => g.state(),
            Generator::Conv(g) => g.state(),
        }
    }

    /// Restores a state saved by [`Generator::state`] under `prefix`.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        match self {
            Generator::Mlp(g) => g.load_state(tensors, prefix),
            Generator::Conv(g) => g.load_state(tensors, prefix),
        }
    }
}

impl Discriminator {
    /// The MLP, when it is one.
    pub fn mlp(&self) -> Option<&MlpDiscriminator> {
        match self {
            Discriminator::Mlp(d) => Some(d),
            Discriminator::Conv(_) => None,
        }
    }

    /// The trainable variables with their PyTorch names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        match self {
            Discriminator::Mlp(d) => d.vars(),
            Discriminator::Conv(d) => d.vars(),
        }
    }

    /// Every tensor of the state (the variables, and a convolutional discriminator's
    /// BatchNorm statistics), PyTorch names.
    pub fn state(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Discriminator::Mlp(d) => Ok(d
                .vars()
                .into_iter()
                .map(|(name, var)| (name, var.as_tensor().clone()))
                .collect()),
            Discriminator::Conv(d) => d.state(),
        }
    }

    /// Restores a state saved by [`Discriminator::state`] under `prefix`.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, prefix: &str) -> Result<()> {
        match self {
            Discriminator::Mlp(d) => d.load_state(tensors, prefix),
            Discriminator::Conv(d) => d.load_state(tensors, prefix),
        }
    }
}
