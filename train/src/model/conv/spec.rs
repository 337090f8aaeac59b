//! The shape of a convolutional GAN: `dcgan.py`'s, and the variants of the same pattern that
//! the compact architectures are (narrower, fewer blocks). A run stores its spec in its
//! checkpoint and generator file, so a model is rebuilt exactly as it was trained.

use serde::{Deserialize, Serialize};

/// How a generator block doubles its feature map's side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upsampling {
    /// `dcgan.py`'s: nearest upsampling ×2, then Conv(k, stride 1, same padding).
    #[default]
    Nearest,
    /// The DCGAN paper's: ConvTranspose2d(4, stride 2, padding 1). On the chip it costs the
    /// same multiply-accumulates as a nearest upsampling and a 3x3 convolution (4 taps per
    /// output in phased form), with 16 rather than 9 weights per input and output channel.
    Transposed,
}

/// The generator: `Linear(latent, C0·s·s)` → view `[C0, s, s]` → BatchNorm2d(C0) → for each
/// further width `Ci`: an upsampling convolution ([`Upsampling`]) → BatchNorm2d(Ci, eps) →
/// LeakyReLU(0.2) → then Conv(k) to the image's channels → Tanh.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorSpec {
    /// Latent vector length.
    pub latent: usize,
    /// Side `s` of the first feature map.
    pub init_side: usize,
    /// Channels of the first feature map, then of each upsampling block's output.
    pub channels: Vec<usize>,
    /// eps of the BatchNorm after the first layer (`dcgan.py`: PyTorch's default 1e-5).
    pub first_norm_eps: f64,
    /// eps of the blocks' BatchNorms (`dcgan.py`: 0.8, the positional-argument quirk).
    pub norm_eps: f64,
    /// Kernel side of every convolution.
    pub kernel: usize,
    /// Channels of the image (1: grayscale).
    pub image_channels: usize,
    /// How each block doubles the side (absent in a spec file: `nearest`).
    #[serde(default)]
    pub upsampling: Upsampling,
    /// A LeakyReLU(0.2) after the first BatchNorm (absent in a spec file: none, as in
    /// `dcgan.py`, whose first map reaches the first convolution without a nonlinearity).
    #[serde(default)]
    pub first_leaky_relu: bool,
}

/// The discriminator: for each width `Ci`, Conv(k, stride 2, padding k/2) → LeakyReLU(0.2) →
/// Dropout2d(p) → BatchNorm2d(Ci, eps) except in the first block; then `Linear(C·d·d, 1)` and
/// a sigmoid (folded into the loss).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscriminatorSpec {
    /// Output channels of each block.
    pub channels: Vec<usize>,
    /// `Dropout2d`'s probability.
    pub dropout: f32,
    /// eps of the BatchNorms.
    pub norm_eps: f64,
    /// Kernel side of every convolution.
    pub kernel: usize,
}

/// A convolutional GAN: both networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvGanSpec {
    /// The generator.
    pub generator: GeneratorSpec,
    /// The discriminator.
    pub discriminator: DiscriminatorSpec,
}

/// Why a spec describes no network that trains and runs on the chip.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

impl GeneratorSpec {
    /// Upsampling blocks.
    pub fn blocks(&self) -> usize {
        self.channels.len().saturating_sub(1)
    }

    /// Side of the generated image.
    pub fn image_side(&self) -> usize {
        self.init_side << self.blocks()
    }

    /// Values of one generated image (`channels · side²`).
    pub fn image_len(&self) -> usize {
        self.image_channels * self.image_side() * self.image_side()
    }
}

impl ConvGanSpec {
    /// PyTorch-GAN `dcgan.py`'s networks, at its defaults (32x32, one channel, latent 100).
    pub fn dcgan() -> Self {
        Self {
            generator: GeneratorSpec {
                latent: 100,
                init_side: 8,
                channels: vec![128, 128, 64],
                first_norm_eps: 1e-5,
                norm_eps: 0.8,
                kernel: 3,
                image_channels: 1,
                upsampling: Upsampling::Nearest,
                first_leaky_relu: false,
            },
            discriminator: DiscriminatorSpec {
                channels: vec![16, 32, 64, 128],
                dropout: 0.25,
                norm_eps: 0.8,
                kernel: 3,
            },
        }
    }

    /// The compact digits GAN for a 256 KB chip (`--arch dcgan-256k`): `dcgan.py`'s pattern
    /// at 28x28 (first map 7x7) with two transposed-convolution blocks, generator widths 36,
    /// 32, 16 — an int8 blob of about 230 KiB, 2.9 M MACs per image — and a discriminator of
    /// two blocks, 32 and 64 wide. The variant table in docs/src/training/compact.md says why.
    pub fn dcgan_256k() -> Self {
        Self {
            generator: GeneratorSpec {
                latent: 100,
                init_side: 7,
                channels: vec![36, 32, 16],
                first_norm_eps: 1e-5,
                norm_eps: 0.8,
                kernel: 3,
                image_channels: 1,
                upsampling: Upsampling::Transposed,
                first_leaky_relu: false,
            },
            discriminator: DiscriminatorSpec {
                channels: vec![32, 64],
                dropout: 0.25,
                norm_eps: 0.8,
                kernel: 3,
            },
        }
    }

    /// Side of the discriminator's last feature map.
    pub fn discriminator_side(&self) -> usize {
        self.generator.image_side() >> self.discriminator.channels.len()
    }

    /// Checks that both networks are well formed: widths and sides at least one, an odd
    /// kernel, the image within the chip's 64x64, the discriminator's halvings within the image.
    pub fn check(&self) -> Result<(), SpecError> {
        let g = &self.generator;
        let d = &self.discriminator;
        let fail = |what: String| Err(SpecError(what));
        if g.latent != crate::model::LATENT_DIM {
            return fail(format!(
                "a latent of {}: the training loop draws {} values per image",
                g.latent,
                crate::model::LATENT_DIM
            ));
        }
        if g.init_side == 0 || g.image_channels == 0 {
            return fail("a generator with a zero side or image channels".into());
        }
        if g.channels.is_empty() || g.channels.contains(&0) {
            return fail(format!(
                "generator widths {:?}: need at least one, none zero",
                g.channels
            ));
        }
        if d.channels.is_empty() || d.channels.contains(&0) {
            return fail(format!(
                "discriminator widths {:?}: need at least one, none zero",
                d.channels
            ));
        }
        for kernel in [g.kernel, d.kernel] {
            if kernel % 2 == 0 || !(1..=7).contains(&kernel) {
                return fail(format!("a kernel of {kernel}: odd, 1 to 7"));
            }
        }
        if g.blocks() > 4 || g.image_side() > 64 || !matches!(g.image_channels, 1 | 3) {
            return fail(format!(
                "a {}x{}x{} image: the chip draws at most 64x64, gray or RGB",
                g.image_side(),
                g.image_side(),
                g.image_channels
            ));
        }
        if self.discriminator_side() == 0
            || self.discriminator_side() << d.channels.len() != g.image_side()
        {
            return fail(format!(
                "{} halvings of a {}-pixel side",
                d.channels.len(),
                g.image_side()
            ));
        }
        if !(0.0..1.0).contains(&d.dropout) {
            return fail(format!("a dropout of {}", d.dropout));
        }
        Ok(())
    }
}
