//! The blocked weight layouts, as facts both kernels and the format share: block sizes,
//! padding, how a layout stores its weights, and how a packed row pair's sums come apart. A
//! leaf: the format, the portable kernels and the DSP kernels all read it, and it reads none
//! of them.

use serde::{Deserialize, Serialize};

/// Output rows that one block of a blocked weight layout holds.
pub const ROW_BLOCK: usize = 4;
/// Input columns that one block of a blocked weight layout holds.
pub const COL_BLOCK: usize = 8;
/// The widest layer (inputs or outputs) a model may have: 4,096, a 64x64 image. Inference
/// needs two activation buffers of [`crate::format::Model::activation_width`] entries, which the firmware
/// sizes from the model it embeds (the shipped digits model: 1,024); the host's buffers hold
/// this many.
pub const MAX_WIDTH: usize = 4096;

/// `value` rounded up to a multiple of `block`.
pub const fn padded(value: usize, block: usize) -> usize {
    value.div_ceil(block) * block
}

/// How a layer's weights are stored. All are symmetric (zero point 0), one scale per output
/// channel (folded into the channel's requantization factor).
///
/// The blocked layouts are laid out offline in the order the Cortex-M DSP kernels read them
/// (`SXTB16` feeding `SMLAD`, four output rows per pass so each activation load serves four
/// rows); the portable kernels read the same bytes and give the same sums. Rows are padded with
/// zero weights to a multiple of [`ROW_BLOCK`], columns to a multiple of [`COL_BLOCK`]. Block
/// `(g, c)` covers rows `4g..4g+4` and columns `8c..8c+8`; blocks are stored row group by row
/// group, and inside one the four rows one after another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WeightFormat {
    /// One `i8` per weight, row-major `[outputs][inputs]`.
    I8RowMajor,
    /// One byte per weight, blocked, two rows interleaved: a block holds rows `(0,1)` then
    /// rows `(2,3)`, each pair as 4 words, one per column pair `(c, c+1)`, with the bytes
    /// `[u(r,c), w(r+1,c), u(r,c+1), w(r+1,c+1)]` where `u = w + 128` (unsigned) and the odd
    /// row's weight is a plain `i8`. Read as two signed halfwords, such a word is
    /// `u(r,·) + 256·w(r+1,·)`, so one `SMLAD` accumulates both rows at once and one `UXTB16`
    /// separates the even row: 3 instructions per 4 multiply-accumulates. The arithmetic
    /// wraps like the hardware's; the encoder only writes this layout when every odd row has
    /// `Σ|w| < 65536`, which keeps the shifted sum exact (see [`crate::kernels`]).
    I8Blocked,
    /// Two 4-bit weights per byte (values −8..=7), blocked; a row's 4 bytes in a block hold
    /// columns `(0,4) (2,6) (1,5) (3,7)` as `(low nibble, high nibble)`.
    I4Blocked,
}

impl WeightFormat {
    /// Bytes of the weight array of a layer with this shape.
    pub fn stored_len(self, inputs: usize, outputs: usize) -> usize {
        match self {
            WeightFormat::I8RowMajor => inputs * outputs,
            WeightFormat::I8Blocked => padded(outputs, ROW_BLOCK) * padded(inputs, COL_BLOCK),
            WeightFormat::I4Blocked => padded(outputs, ROW_BLOCK) * padded(inputs, COL_BLOCK) / 2,
        }
    }

    /// Bits per weight.
    pub fn bits(self) -> u32 {
        match self {
            WeightFormat::I8RowMajor | WeightFormat::I8Blocked => 8,
            WeightFormat::I4Blocked => 4,
        }
    }

    /// The smallest and largest weight the layout stores.
    pub fn range(self) -> (i8, i8) {
        match self {
            WeightFormat::I8RowMajor | WeightFormat::I8Blocked => (-127, 127),
            WeightFormat::I4Blocked => (-7, 7),
        }
    }
}

/// The row sums of a row pair from its raw accumulators: the even row is `Σ u·x − 128·Σ x`,
/// the odd row `(packed − even) / 256` (exact: the difference is 256 times an integer).
#[inline(always)]
pub fn pair_sums(even: i32, packed: i32, sum_x: i32) -> (i32, i32) {
    (
        even.wrapping_sub(sum_x.wrapping_mul(128)),
        packed.wrapping_sub(even) >> 8,
    )
}
