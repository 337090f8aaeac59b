//! Convolutional layers: their geometry as the format stores it, its validation, and the
//! arithmetic the runtime and the encoder share.
//!
//! Every convolution the chip runs is stored in one form, a *phased convolution*, so that one
//! kernel serves them all and no zero is ever multiplied:
//!
//! - the output grid is split into `Py × Px` phases; phase `(py, px)` computes the output
//!   pixels `(Py·my + py, Px·mx + px)`;
//! - each phase has its own taps, a run of consecutive input row offsets `dy` and one of column
//!   offsets `dx`; the output pixel `(my, mx)` of the phase reads the input pixels
//!   `(sy·my + dy, sx·mx + dx)` (zero outside the input) for every pair of taps, all input
//!   channels of each;
//! - each phase has its own weight matrix, `C_out` rows of `taps_y · taps_x · C_in` columns in
//!   the order (tap row, tap column, input channel): a dense layer over the gathered patch.
//!
//! A plain `Conv` (stride `s`, padding `p`) is one phase with taps `−p..k−p` and input stride
//! `s`. A `ConvTranspose` of stride `s` is `s × s` phases of input stride 1, each with the
//! kernel taps that land on it, so the zeros a naive transposed convolution inserts are never
//! multiplied. A nearest upsample by `u` before a convolution is `u × u` phases whose taps are
//! the distinct input offsets the kernel reads through the upsample; kernel taps that read the
//! same input pixel are summed into one weight, so the upsampled tensor never exists and the
//! work falls to `(taps/u)²` of the kernel's. In all three the offsets a phase reads are
//! consecutive, so a phase stores only its first offset and their count. Tensors are stored
//! channels last (`H × W × C`).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::layout::MAX_WIDTH;

/// Most phases along one axis.
pub const MAX_PHASES: usize = 4;
/// Most taps along one axis of one phase (a 7x7 kernel).
pub const MAX_TAPS: usize = 7;
/// Largest input stride along one axis.
pub const MAX_STRIDE: u8 = 4;
/// Most entries (bytes, as int8) of one activation tensor: 256 KiB.
pub const MAX_TENSOR: usize = 1 << 18;

/// The shape of an activation tensor, stored channels last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorShape {
    /// Channels.
    pub channels: u16,
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
}

impl TensorShape {
    /// Entries of the tensor, computed without overflow on any target.
    pub fn volume(&self) -> u64 {
        u64::from(self.channels) * u64::from(self.height) * u64::from(self.width)
    }

    /// Pixels (rows times columns).
    pub fn pixels(&self) -> usize {
        usize::from(self.height) * usize::from(self.width)
    }
}

/// One phase's taps along one axis: the input offsets `first..first + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TapRun {
    /// The first input offset.
    pub first: i8,
    /// How many consecutive offsets, `1..=MAX_TAPS`.
    pub count: u8,
}

impl TapRun {
    /// The run of `count` offsets from `first`.
    pub const fn new(first: i8, count: u8) -> Self {
        Self { first, count }
    }
}

/// One axis' taps per phase, as the header stores them.
pub type PhaseTaps = Vec<TapRun, MAX_PHASES>;

/// A phased convolution's geometry as the header stores it (see the module comment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvHeader {
    /// The input tensor.
    pub input: TensorShape,
    /// The output tensor.
    pub output: TensorShape,
    /// Input rows and columns per step of a phase's output grid: `[sy, sx]`.
    pub stride: [u8; 2],
    /// For each row phase, the input row offsets of its taps.
    pub row_taps: PhaseTaps,
    /// For each column phase, the input column offsets of its taps.
    pub col_taps: PhaseTaps,
}

/// What is wrong with a convolution's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConvProblem {
    /// A tensor with no entry or more than [`MAX_TENSOR`].
    TensorSize,
    /// No phase along an axis, or a phase without taps.
    Phases,
    /// A stride of 0 or beyond [`MAX_STRIDE`].
    Stride,
    /// A phase's patch (taps times input channels) wider than [`MAX_WIDTH`].
    PatchWidth,
}

/// One axis' taps per phase, validated, in a fixed array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taps {
    phases: u8,
    runs: [TapRun; MAX_PHASES],
}

impl Taps {
    fn from_header(stored: &PhaseTaps) -> Result<Self, ConvProblem> {
        let mut taps = Taps {
            phases: stored.len() as u8,
            runs: [TapRun::new(0, 0); MAX_PHASES],
        };
        if stored.is_empty() {
            return Err(ConvProblem::Phases);
        }
        for (slot, run) in taps.runs.iter_mut().zip(stored) {
            if !(1..=MAX_TAPS).contains(&usize::from(run.count)) {
                return Err(ConvProblem::Phases);
            }
            *slot = *run;
        }
        Ok(taps)
    }

    /// Phases along this axis.
    pub fn phases(&self) -> usize {
        usize::from(self.phases)
    }

    /// The taps of `phase` (no taps beyond the phases).
    pub fn of(&self, phase: usize) -> TapRun {
        self.runs.get(phase).copied().unwrap_or(TapRun::new(0, 0))
    }

    /// Taps of `phase`.
    pub fn count(&self, phase: usize) -> usize {
        usize::from(self.of(phase).count)
    }
}

/// A validated phased convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// The input tensor.
    pub input: TensorShape,
    /// The output tensor.
    pub output: TensorShape,
    /// Input rows and columns per step of a phase's output grid.
    pub stride: [u8; 2],
    /// Row taps per row phase.
    pub rows: Taps,
    /// Column taps per column phase.
    pub cols: Taps,
}

/// Outputs of a phase along an axis of `size` outputs split into `phases`.
fn phase_len(size: u16, phases: usize, phase: usize) -> usize {
    usize::from(size).saturating_sub(phase).div_ceil(phases)
}

impl ConvGeometry {
    /// Validates a stored geometry: tensors of `1..=MAX_TENSOR` entries, phases and taps
    /// within bounds, strides `1..=MAX_STRIDE`, every patch at most [`MAX_WIDTH`] wide.
    pub fn validate(stored: &ConvHeader) -> Result<Self, ConvProblem> {
        for tensor in [stored.input, stored.output] {
            if !(1..=MAX_TENSOR as u64).contains(&tensor.volume()) {
                return Err(ConvProblem::TensorSize);
            }
        }
        if stored
            .stride
            .iter()
            .any(|&s| !(1..=MAX_STRIDE).contains(&s))
        {
            return Err(ConvProblem::Stride);
        }
        let geometry = ConvGeometry {
            input: stored.input,
            output: stored.output,
            stride: stored.stride,
            rows: Taps::from_header(&stored.row_taps)?,
            cols: Taps::from_header(&stored.col_taps)?,
        };
        if geometry.max_patch_len() > MAX_WIDTH {
            return Err(ConvProblem::PatchWidth);
        }
        Ok(geometry)
    }

    /// The phases, row phase major: `(py, px)`.
    pub fn phases(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let cols = self.cols.phases();
        (0..self.rows.phases() * cols).map(move |p| (p / cols, p % cols))
    }

    /// Columns of phase `(py, px)`'s weight matrix: its taps times the input channels.
    pub fn patch_len(&self, py: usize, px: usize) -> usize {
        self.rows.count(py) * self.cols.count(px) * usize::from(self.input.channels)
    }

    /// The widest patch of any phase.
    pub fn max_patch_len(&self) -> usize {
        self.phases()
            .map(|(py, px)| self.patch_len(py, px))
            .max()
            .unwrap_or(0)
    }

    /// Output pixels of phase `(py, px)`: rows by columns.
    pub fn phase_grid(&self, py: usize, px: usize) -> (usize, usize) {
        (
            phase_len(self.output.height, self.rows.phases(), py),
            phase_len(self.output.width, self.cols.phases(), px),
        )
    }

    /// Multiply-accumulates per image.
    pub fn macs(&self) -> usize {
        let out_channels = usize::from(self.output.channels);
        self.phases()
            .map(|(py, px)| {
                let (rows, cols) = self.phase_grid(py, px);
                rows * cols * self.patch_len(py, px) * out_channels
            })
            .sum()
    }
}
