//! The compact model format and its validation.
//!
//! A model is one byte blob, meant to sit in flash and be used in place:
//!
//! ```text
//! ┌──────────────────────────┬───────────────────────────┬─────┬────────────────────┬────────┐
//! │ preamble (postcard)      │ header (postcard)         │ pad │ data section       │ check  │
//! │ magic "MCGN", version,   │ name, latent dim, image,  │ to  │ raw little-endian  │ sums,  │
//! │ total blob length        │ layers with array refs,   │ 16  │ arrays, 16-aligned │ 16 B   │
//! │                          │ class table (version 4+), │     │                    │        │
//! │                          │ conv layers (version 5)   │     │                    │        │
//! └──────────────────────────┴───────────────────────────┴─────┴────────────────────┴────────┘
//! ```
//!
//! postcard writes integers wider than a byte as varints, which cannot be indexed in place, so
//! the bulk arrays are not postcard: the header refers to them by offset and length inside the
//! data section, and they are read straight from the blob — weights in one of the layouts of
//! [`WeightFormat`], 12-byte per-channel records ([`ChannelParams`]), `u8` lookup tables and,
//! for a class-conditional model, its class table ([`ClassTable`]).
//!
//! The trailer is the [`WordSums`] of everything before it (versions 1 and 2: a CRC-32).
//!
//! [`Model::parse`] checks everything before any inference runs: magic, version, length, checksum,
//! the header, every array's bounds, alignment, length and overlap, the chain of layer shapes,
//! and every requantization parameter, so that [`crate::generate`] cannot fail or panic on a
//! model that parsed. It never panics on any input.

use heapless::Vec;
use serde::{Deserialize, Serialize};

pub use crate::conv::{ConvGeometry, ConvHeader, ConvProblem, TensorShape, MAX_TENSOR};
pub use crate::layout::{padded, WeightFormat, COL_BLOCK, MAX_WIDTH, ROW_BLOCK};
use crate::requant::Requant;

/// The four bytes every model blob starts with.
pub const MAGIC: [u8; 4] = *b"MCGN";
/// The newest format version this crate reads and writes. Version 2 added the blocked int8
/// and int4 weight layouts; version 3 replaced the CRC-32 trailer by [`WordSums`] (a boot
/// check 16 times cheaper on the chip); version 4 added the class table of a conditional
/// model; version 5 added layers of other kinds than dense (phased convolutions, see
/// [`crate::conv`]), hidden layers without an activation, and wider tensors. Blobs of versions
/// 1 (row-major int8 only) to 4 are still read, and the encoder writes each model in the
/// oldest version that holds it (an unconditional MLP as version 3, a conditional one as
/// version 4), so that such blobs stay byte for byte what they were.
pub const FORMAT_VERSION: u16 = 5;
/// The oldest format version that holds a class table.
pub const CLASS_TABLE_VERSION: u16 = 4;
/// The oldest format version that holds convolutional layers, hidden layers without an
/// activation, and dense layers wider than [`MAX_WIDTH`] outputs.
pub const LAYER_KINDS_VERSION: u16 = 5;
/// The most classes a conditional model may have.
pub const MAX_CLASSES: usize = 256;
/// The oldest format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// The most layers a model may have.
pub const MAX_LAYERS: usize = 8;
/// The most pixels (bytes: one per channel per pixel) an image may have: 64x64 RGB. It bounds
/// what the firmware's pixel buffer and the host's image buffers hold for one image.
pub const MAX_IMAGE_PIXELS: usize = 64 * 64 * 3;
/// The data section and every array in it start at a multiple of this many bytes from the start
/// of the blob.
pub const DATA_ALIGN: usize = 16;
/// Bytes of one per-channel record: bias, multiplier, shift, each a little-endian `i32`.
pub const CHANNEL_RECORD_LEN: usize = 12;
/// The largest tanh lookup table a model may carry.
pub const MAX_LUT_LEN: usize = 4096;
/// The largest accumulator bias a model may carry: keeps `bias + Σ w·x` inside `i32`.
pub const MAX_ABS_BIAS: i32 = 1 << 30;
/// Bytes of the CRC-32 trailer of format versions 1 and 2.
pub const CRC_LEN: usize = 4;

pub use crate::checksum::{Crc32, WordSums, CRC32, WORD_SUMS_LEN};

/// Bytes of the checksum trailer of a blob of format `version`: the CRC-32 of versions 1 and 2,
/// the [`WordSums`] of version 3.
pub const fn trailer_len(version: u16) -> usize {
    if version >= 3 {
        WORD_SUMS_LEN
    } else {
        CRC_LEN
    }
}

/// The first, fixed-meaning part of a blob; decoded before anything version-specific.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preamble {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// The format version; this crate reads [`FORMAT_VERSION`].
    pub version: u16,
    /// The length of the whole blob, trailer included.
    pub blob_len: u32,
}

/// Where an array lives: a byte range inside the data section.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayRef {
    /// Bytes from the start of the data section; a multiple of [`DATA_ALIGN`].
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// What a layer does with its requantized accumulators, as stored in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputStageHeader {
    /// LeakyReLU fused into requantization to int8: non-negative accumulators use the channel's
    /// factor, negative ones the factor times `negative_slope_q31 / 2^31`.
    LeakyRelu {
        /// The int8 zero point of the layer's output.
        zero_point: i8,
        /// LeakyReLU's negative slope in Q31.
        negative_slope_q31: i32,
    },
    /// Tanh and the mapping to pixels, through a `u8` lookup table of even length `2h`: the
    /// requantized accumulator `r` reads entry `clamp(r, −h, h − 1) + h`.
    TanhPixels {
        /// The lookup table.
        lut: ArrayRef,
    },
    /// No activation: the accumulator requantized to int8 (format version 5; e.g. a dense
    /// layer whose output a convolution reads, with only a BatchNorm between them).
    Linear {
        /// The int8 zero point of the layer's output.
        zero_point: i8,
    },
}

/// One dense layer as stored in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerHeader {
    /// Input width.
    pub inputs: u16,
    /// Output width.
    pub outputs: u16,
    /// Layout of the weight array.
    pub weight_format: WeightFormat,
    /// The weights.
    pub weights: ArrayRef,
    /// One [`CHANNEL_RECORD_LEN`]-byte record per output channel.
    pub channels: ArrayRef,
    /// The activation applied after requantization.
    pub output: OutputStageHeader,
}

/// The generated image's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ImageShape {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Channels per pixel (1 for grayscale).
    pub channels: u8,
}

impl ImageShape {
    /// Bytes of one image: one `u8` per channel per pixel. Computed in `u64`, where the product
    /// of the three stored widths (at most 2^40) cannot overflow on any target; a shape that
    /// [`Model::parse`] accepted has at most [`MAX_IMAGE_PIXELS`].
    pub fn pixel_count(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * u64::from(self.channels)
    }

    /// [`ImageShape::pixel_count`] when it is `1..=MAX_IMAGE_PIXELS`, the shapes a model may
    /// have; `None` for an empty or too large image.
    pub fn checked_pixel_count(&self) -> Option<usize> {
        let pixels = self.pixel_count();
        if (1..=MAX_IMAGE_PIXELS as u64).contains(&pixels) {
            // Bounded by MAX_IMAGE_PIXELS, so it fits any usize.
            Some(pixels as usize)
        } else {
            None
        }
    }
}

/// The model's header: everything but the bulk arrays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// A human-readable name, e.g. `mnist-digits`.
    pub name: &'a str,
    /// Length of the latent vector.
    pub latent_dim: u16,
    /// Shape of the generated image.
    pub image: ImageShape,
    /// The layers, first to last.
    pub layers: Vec<LayerHeader, MAX_LAYERS>,
    /// The class table of a conditional model (format version 4; absent before).
    pub classes: Option<ClassTableHeader>,
}

/// What a layer of format version 5 computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerShapeHeader {
    /// A dense layer: `outputs` rows of `inputs` weights.
    Dense {
        /// Input width, `1..=MAX_WIDTH`.
        inputs: u32,
        /// Output width, `1..=MAX_TENSOR`.
        outputs: u32,
    },
    /// A phased convolution (see [`crate::conv`]).
    Conv(ConvHeader),
}

/// One layer as format version 5 stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerHeaderV5 {
    /// What the layer computes.
    pub shape: LayerShapeHeader,
    /// Layout of the weight array (a convolution stores one matrix per phase, one after
    /// another).
    pub weight_format: WeightFormat,
    /// The weights.
    pub weights: ArrayRef,
    /// One [`CHANNEL_RECORD_LEN`]-byte record per output channel (a convolution: per phase
    /// and output channel, phase major).
    pub channels: ArrayRef,
    /// The activation applied after requantization.
    pub output: OutputStageHeader,
}

impl From<LayerHeader> for LayerHeaderV5 {
    fn from(old: LayerHeader) -> Self {
        Self {
            shape: LayerShapeHeader::Dense {
                inputs: u32::from(old.inputs),
                outputs: u32::from(old.outputs),
            },
            weight_format: old.weight_format,
            weights: old.weights,
            channels: old.channels,
            output: old.output,
        }
    }
}

/// The header of version 5: layers of several kinds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderV5<'a> {
    /// See [`Header::name`].
    pub name: &'a str,
    /// See [`Header::latent_dim`].
    pub latent_dim: u16,
    /// See [`Header::image`].
    pub image: ImageShape,
    /// The layers, first to last.
    pub layers: Vec<LayerHeaderV5, MAX_LAYERS>,
    /// See [`Header::classes`].
    pub classes: Option<ClassTableHeader>,
}

impl<'a> HeaderV5<'a> {
    /// A header of version 4 or older in this form; `None` when a layer uses what only
    /// version 5 holds (an output stage without an activation).
    fn from_old(old: Header<'a>) -> Option<Self> {
        let mut layers = Vec::new();
        for layer in old.layers {
            if matches!(layer.output, OutputStageHeader::Linear { .. }) {
                return None;
            }
            // Same capacity as the old header's.
            layers.push(LayerHeaderV5::from(layer)).ok()?;
        }
        Some(Self {
            name: old.name,
            latent_dim: old.latent_dim,
            image: old.image,
            layers,
            classes: old.classes,
        })
    }
}

/// The header of versions 1 to 3, which has no class table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderV3<'a> {
    /// See [`Header::name`].
    pub name: &'a str,
    /// See [`Header::latent_dim`].
    pub latent_dim: u16,
    /// See [`Header::image`].
    pub image: ImageShape,
    /// See [`Header::layers`].
    pub layers: Vec<LayerHeader, MAX_LAYERS>,
}

impl<'a> From<HeaderV3<'a>> for Header<'a> {
    fn from(old: HeaderV3<'a>) -> Self {
        Self {
            name: old.name,
            latent_dim: old.latent_dim,
            image: old.image,
            layers: old.layers,
            classes: None,
        }
    }
}

/// Where a conditional model keeps its class embedding: one row of `width` int8 codes per
/// class, at the latent's scale ([`crate::latent::LATENT_SCALE`]). The first layer's input is
/// `[class row, latent vector]` (`cgan.py`'s order), `width + latent_dim` codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassTableHeader {
    /// Classes the model draws, `1..=MAX_CLASSES`.
    pub classes: u16,
    /// Codes per class.
    pub width: u16,
    /// `classes * width` bytes (`i8` codes), row per class.
    pub table: ArrayRef,
}

/// A validated class table, borrowed from the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassTable<'a> {
    classes: usize,
    width: usize,
    bytes: &'a [u8],
}

impl<'a> ClassTable<'a> {
    /// Classes the model draws.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Codes per class.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The codes of `class` (as stored bytes; each is an `i8`), or `None` beyond the table.
    pub fn row(&self, class: usize) -> Option<&'a [u8]> {
        let start = class.checked_mul(self.width)?;
        self.bytes.get(start..start.checked_add(self.width)?)
    }

    /// The codes of `class` as `i8`, or `None` beyond the table.
    pub fn codes(&self, class: usize) -> Option<impl Iterator<Item = i8> + 'a> {
        Some(self.row(class)?.iter().map(|&b| b as i8))
    }
}

/// Which array of a layer an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ArrayKind {
    /// The weight array.
    Weights,
    /// The per-channel records.
    Channels,
    /// The tanh lookup table.
    Lut,
    /// The class table of a conditional model (reported as layer 0's).
    ClassTable,
}

/// Why a blob is not a usable model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FormatError {
    /// The blob does not start with [`MAGIC`].
    #[error("not an mcugan model: bad magic bytes")]
    BadMagic,
    /// The preamble could not be decoded.
    #[error("malformed preamble")]
    MalformedPreamble,
    /// The blob was written for another format version.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the blob.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The blob is shorter than its preamble says.
    #[error("truncated blob: {actual} bytes, the preamble declares {declared}")]
    Truncated {
        /// Length from the preamble.
        declared: u32,
        /// Length of the slice given.
        actual: usize,
    },
    /// The blob is longer than its preamble says.
    #[error("trailing bytes: {actual} bytes, the preamble declares {declared}")]
    TrailingBytes {
        /// Length from the preamble.
        declared: u32,
        /// Length of the slice given.
        actual: usize,
    },
    /// The word sums (format version 3) do not match: the blob is corrupted.
    #[error(
        "checksum mismatch: stored sums {stored_sum:#x}/{stored_weighted:#x}, computed \
         {computed_sum:#x}/{computed_weighted:#x} (corrupted blob)"
    )]
    ChecksumMismatch {
        /// The trailer's `sum`.
        stored_sum: u64,
        /// The trailer's `weighted`.
        stored_weighted: u64,
        /// The bytes' `sum`.
        computed_sum: u64,
        /// The bytes' `weighted`.
        computed_weighted: u64,
    },
    /// The CRC-32 (format versions 1 and 2) does not match: the blob is corrupted.
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x} (corrupted blob)")]
    CrcMismatch {
        /// The CRC in the trailer.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// The header could not be decoded.
    #[error("malformed header")]
    MalformedHeader,
    /// The header lists no layer.
    #[error("the model has no layers")]
    NoLayers,
    /// An array lies outside the data section.
    #[error("layer {layer}: {array:?} array lies outside the data section")]
    ArrayOutOfBounds {
        /// Layer index.
        layer: u8,
        /// Which array.
        array: ArrayKind,
    },
    /// An array's offset is not a multiple of [`DATA_ALIGN`].
    #[error("layer {layer}: {array:?} array is not {DATA_ALIGN}-byte aligned")]
    ArrayMisaligned {
        /// Layer index.
        layer: u8,
        /// Which array.
        array: ArrayKind,
    },
    /// An array's length does not fit the layer's shape.
    #[error("layer {layer}: {array:?} array has {found} bytes, expected {expected}")]
    ArrayLength {
        /// Layer index.
        layer: u8,
        /// Which array.
        array: ArrayKind,
        /// Length the shape requires.
        expected: u32,
        /// Length in the header.
        found: u32,
    },
    /// Two arrays share bytes.
    #[error("layer {layer}: {array:?} array overlaps another array")]
    ArraysOverlap {
        /// Layer index.
        layer: u8,
        /// Which array.
        array: ArrayKind,
    },
    /// A layer's input width differs from what feeds it.
    #[error("layer {layer}: takes {found} inputs but is fed {expected}")]
    ShapeMismatch {
        /// Layer index.
        layer: u8,
        /// Width fed to the layer (latent dim or previous layer's outputs).
        expected: u32,
        /// Width the layer declares.
        found: u32,
    },
    /// The image is empty or has more than [`MAX_IMAGE_PIXELS`] pixels.
    #[error(
        "image {width}x{height}x{channels} has {pixels} pixels, outside 1..={MAX_IMAGE_PIXELS}"
    )]
    BadImageSize {
        /// Width from the header.
        width: u16,
        /// Height from the header.
        height: u16,
        /// Channels from the header.
        channels: u8,
        /// Their product, computed without overflow.
        pixels: u64,
    },
    /// The last layer's outputs differ from the image's pixel count.
    #[error("the last layer makes {found} outputs but the image has {expected} pixels")]
    ImageSizeMismatch {
        /// Pixels of the image shape.
        expected: u32,
        /// Outputs of the last layer.
        found: u32,
    },
    /// A layer is empty or wider than [`MAX_WIDTH`].
    #[error("layer {layer}: width {width} is outside 1..={MAX_WIDTH}")]
    BadWidth {
        /// Layer index.
        layer: u8,
        /// The offending width.
        width: u32,
    },
    /// Only the last layer may map to pixels, and it must.
    #[error("layer {layer}: unexpected output stage (hidden layers use LeakyReLU or none, the last one tanh pixels)")]
    BadOutputStage {
        /// Layer index.
        layer: u8,
    },
    /// A channel's requantization parameters or bias are out of range.
    #[error("layer {layer}, channel {channel}: bias or requantization factor out of range")]
    BadChannel {
        /// Layer index.
        layer: u8,
        /// Output channel.
        channel: u16,
    },
    /// A negative slope outside `[0, 1)`.
    #[error("layer {layer}: LeakyReLU slope out of range")]
    BadSlope {
        /// Layer index.
        layer: u8,
    },
    /// A convolution's geometry is out of bounds.
    #[error("layer {layer}: convolution geometry out of bounds ({problem:?})")]
    BadConv {
        /// Layer index.
        layer: u8,
        /// What is out of bounds.
        problem: ConvProblem,
    },
    /// A convolution's input tensor is not the tensor the layer before it makes.
    #[error("layer {layer}: its input tensor is not the previous layer's output tensor")]
    TensorMismatch {
        /// Layer index.
        layer: u8,
    },
    /// A class table with no class, too many, or rows of no code.
    #[error("class table of {classes} classes of {width} codes (1..={MAX_CLASSES} classes of 1 or more codes)")]
    BadClassTable {
        /// Classes in the header.
        classes: u16,
        /// Codes per class in the header.
        width: u16,
    },
}

/// One output channel's parameters: `acc = bias + Σ w·x`, then `requant.apply(acc)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRequant {
    /// The accumulator's starting value (the float bias, and the input zero point folded in).
    pub bias: i32,
    /// The factor from the accumulator to the output's quantized domain.
    pub requant: Requant,
}

/// A layer's per-channel records, read in place from the blob.
#[derive(Clone, Copy, Debug)]
pub struct ChannelParams<'a> {
    bytes: &'a [u8],
}

fn read_i32(bytes: &[u8], at: usize) -> i32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    i32::from_le_bytes(word)
}

impl<'a> ChannelParams<'a> {
    /// The number of channels.
    pub fn len(&self) -> usize {
        self.bytes.len() / CHANNEL_RECORD_LEN
    }

    /// Whether there are no channels.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The parameters of every channel, in order.
    pub fn iter(&self) -> impl Iterator<Item = ChannelRequant> + 'a {
        self.bytes
            .chunks_exact(CHANNEL_RECORD_LEN)
            .map(|record| ChannelRequant {
                bias: read_i32(record, 0),
                requant: Requant {
                    multiplier: read_i32(record, 4),
                    shift: read_i32(record, 8),
                },
            })
    }

    /// The raw records, [`CHANNEL_RECORD_LEN`] bytes each.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Records read from `bytes` (a whole number of [`CHANNEL_RECORD_LEN`]-byte records; a
    /// partial one at the end is ignored).
    pub(crate) fn from_bytes(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
}

impl ChannelRequant {
    /// Decodes one [`CHANNEL_RECORD_LEN`]-byte record.
    #[inline(always)]
    pub fn from_record(record: &[u8; CHANNEL_RECORD_LEN]) -> Self {
        let word = |at: usize| {
            i32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
        };
        ChannelRequant {
            bias: word(0),
            requant: Requant {
                multiplier: word(4),
                shift: word(8),
            },
        }
    }
}

/// What a validated layer does after requantization.
#[derive(Clone, Copy, Debug)]
pub enum LayerOutput<'a> {
    /// LeakyReLU into int8; see [`OutputStageHeader::LeakyRelu`].
    LeakyRelu {
        /// The output zero point.
        zero_point: i8,
        /// The negative slope in Q31.
        negative_slope_q31: i32,
    },
    /// Tanh to pixels through the lookup table; see [`OutputStageHeader::TanhPixels`].
    TanhPixels {
        /// The table, of even length.
        lut: &'a [u8],
    },
    /// No activation: requantized into int8; see [`OutputStageHeader::Linear`].
    Linear {
        /// The output zero point.
        zero_point: i8,
    },
}

impl LayerOutput<'_> {
    /// The int8 code of a real zero in the layer's output (0 for pixels, which no layer
    /// reads).
    pub fn zero_point(&self) -> i8 {
        match *self {
            LayerOutput::LeakyRelu { zero_point, .. } | LayerOutput::Linear { zero_point } => {
                zero_point
            }
            LayerOutput::TanhPixels { .. } => 0,
        }
    }
}

/// A validated layer, its arrays borrowed from the blob.
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    /// Entries of the input (a dense layer's width, a convolution's input tensor),
    /// `1..=MAX_TENSOR`.
    pub inputs: usize,
    /// Entries of the output, `1..=MAX_TENSOR`.
    pub outputs: usize,
    /// A convolution's geometry; `None` for a dense layer.
    pub conv: Option<ConvGeometry>,
    /// How [`Layer::weights`] is laid out.
    pub weight_format: WeightFormat,
    /// The weights as stored (see [`WeightFormat`] for the layouts; a convolution's phases
    /// one after another).
    pub weights: &'a [u8],
    /// One record per output channel (a convolution: per phase and output channel).
    pub channels: ChannelParams<'a>,
    /// The output stage.
    pub output: LayerOutput<'a>,
}

impl Layer<'_> {
    /// Multiply-accumulates this layer does per image.
    pub fn macs(&self) -> usize {
        match &self.conv {
            Some(conv) => conv.macs(),
            None => self.inputs * self.outputs,
        }
    }

    /// Weights stored (a convolution: of every phase, after upsampling taps were summed).
    pub fn weight_count(&self) -> usize {
        match &self.conv {
            Some(conv) => conv
                .phases()
                .map(|(py, px)| conv.patch_len(py, px) * usize::from(conv.output.channels))
                .sum(),
            None => self.inputs * self.outputs,
        }
    }

    /// Output channels: a dense layer's outputs, a convolution's output tensor's channels.
    pub fn out_channels(&self) -> usize {
        match &self.conv {
            Some(conv) => usize::from(conv.output.channels),
            None => self.outputs,
        }
    }

    /// The widest row of weights: a dense layer's inputs, a convolution's widest patch.
    pub fn patch_len(&self) -> usize {
        match &self.conv {
            Some(conv) => conv.max_patch_len(),
            None => self.inputs,
        }
    }

    /// Bytes of the blob this layer reads per image: every weight byte and channel record
    /// once per output pixel that uses them (once for a dense layer), and one lookup-table
    /// entry per output.
    pub fn bytes_read(&self) -> usize {
        let lut = match self.output {
            LayerOutput::TanhPixels { .. } => self.outputs,
            _ => 0,
        };
        let Some(conv) = &self.conv else {
            return self.weights.len() + self.channels.len() * CHANNEL_RECORD_LEN + lut;
        };
        let out_channels = usize::from(conv.output.channels);
        let per_pixel: usize = conv
            .phases()
            .map(|(py, px)| {
                let (rows, cols) = conv.phase_grid(py, px);
                let matrix = self
                    .weight_format
                    .stored_len(conv.patch_len(py, px), out_channels);
                rows * cols * (matrix + out_channels * CHANNEL_RECORD_LEN)
            })
            .sum();
        per_pixel + lut
    }
}

/// A validated model, borrowing its arrays from the blob.
#[derive(Clone, Debug)]
pub struct Model<'a> {
    name: &'a str,
    latent_dim: usize,
    image: ImageShape,
    pixel_count: usize,
    layers: Vec<Layer<'a>, MAX_LAYERS>,
    classes: Option<ClassTable<'a>>,
    blob_len: usize,
    arena_len: usize,
    scratch_len: usize,
}

/// The byte ranges of arrays already seen, to detect overlaps.
struct Claimed {
    ranges: Vec<(u32, u32), { MAX_LAYERS * 3 + 1 }>,
}

impl Claimed {
    fn claim(&mut self, start: u32, end: u32) -> bool {
        if start == end {
            return true;
        }
        if self.ranges.iter().any(|&(s, e)| start < e && s < end) {
            return false;
        }
        // Capacity is 3 arrays per layer, MAX_LAYERS layers and the class table.
        self.ranges.push((start, end)).is_ok()
    }
}

fn align_up(value: usize, align: usize) -> Option<usize> {
    value.checked_add(align - 1).map(|v| v / align * align)
}

/// Checks the trailer `stored` of a blob of format `version` against the `body` before it.
fn check_trailer(version: u16, body: &[u8], stored: &[u8]) -> Result<(), FormatError> {
    if version >= 3 {
        let computed = WordSums::of(body);
        let stored = WordSums::from_bytes(stored).ok_or(FormatError::MalformedPreamble)?;
        if stored != computed {
            return Err(FormatError::ChecksumMismatch {
                stored_sum: stored.sum,
                stored_weighted: stored.weighted,
                computed_sum: computed.sum,
                computed_weighted: computed.weighted,
            });
        }
    } else {
        let stored = read_i32(stored, 0) as u32;
        let computed = CRC32.checksum(body);
        if stored != computed {
            return Err(FormatError::CrcMismatch { stored, computed });
        }
    }
    Ok(())
}

impl<'a> Model<'a> {
    /// Validates `blob` and borrows its arrays. Checks everything that [`crate::generate`]
    /// relies on, in the order magic, preamble, version, length, CRC, header, arrays, shapes,
    /// channel parameters. Never panics.
    #[inline(never)]
    pub fn parse(blob: &'a [u8]) -> Result<Model<'a>, FormatError> {
        if blob.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Err(FormatError::BadMagic);
        }
        let (preamble, after_preamble) = postcard::take_from_bytes::<Preamble>(blob)
            .map_err(|_| FormatError::MalformedPreamble)?;
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&preamble.version) {
            return Err(FormatError::UnsupportedVersion {
                found: preamble.version,
                supported: FORMAT_VERSION,
            });
        }
        let declared = preamble.blob_len;
        match (declared as usize).cmp(&blob.len()) {
            core::cmp::Ordering::Greater => {
                return Err(FormatError::Truncated {
                    declared,
                    actual: blob.len(),
                })
            }
            core::cmp::Ordering::Less => {
                return Err(FormatError::TrailingBytes {
                    declared,
                    actual: blob.len(),
                })
            }
            core::cmp::Ordering::Equal => {}
        }
        let trailer = trailer_len(preamble.version);
        let body_len = blob
            .len()
            .checked_sub(trailer)
            .ok_or(FormatError::MalformedPreamble)?;
        let (body, stored) = blob.split_at(body_len);
        check_trailer(preamble.version, body, stored)?;

        let after_header_len = {
            let body_after_preamble = after_preamble
                .get(..after_preamble.len().saturating_sub(trailer))
                .ok_or(FormatError::MalformedHeader)?;
            let (header, rest) = if preamble.version >= LAYER_KINDS_VERSION {
                postcard::take_from_bytes::<HeaderV5<'a>>(body_after_preamble)
                    .map_err(|_| FormatError::MalformedHeader)?
            } else {
                let (old, rest) = if preamble.version >= CLASS_TABLE_VERSION {
                    postcard::take_from_bytes::<Header<'a>>(body_after_preamble)
                } else {
                    postcard::take_from_bytes::<HeaderV3<'a>>(body_after_preamble)
                        .map(|(header, rest)| (header.into(), rest))
                }
                .map_err(|_| FormatError::MalformedHeader)?;
                let header = HeaderV5::from_old(old).ok_or(FormatError::MalformedHeader)?;
                (header, rest)
            };
            (header, rest.len())
        };
        let (header, rest_len) = after_header_len;
        let header_end = body_len - rest_len;
        let data_start = align_up(header_end, DATA_ALIGN).ok_or(FormatError::MalformedHeader)?;
        let data = body.get(data_start..).ok_or(FormatError::MalformedHeader)?;

        Self::validate(header, data, blob.len())
    }

    /// Checks every layer of `header` against the data and each other, and builds the model.
    ///
    /// One function on purpose, although long: it is the firmware's boot-time check, and
    /// splitting it (class table, output stage, image into functions of their own) made the
    /// firmware larger (by 192 bytes when it was measured) with `opt-level = "z"`, inlined or
    /// not.
    fn validate(
        header: HeaderV5<'a>,
        data: &'a [u8],
        blob_len: usize,
    ) -> Result<Model<'a>, FormatError> {
        if header.layers.is_empty() {
            return Err(FormatError::NoLayers);
        }
        let last = header.layers.len() - 1;
        let mut claimed = Claimed { ranges: Vec::new() };
        let mut layers = Vec::new();
        let mut fed = u32::from(header.latent_dim);
        check_width(0, fed)?;
        let classes = match header.classes {
            None => None,
            Some(table) => {
                let (count, width) = (usize::from(table.classes), usize::from(table.width));
                if !(1..=MAX_CLASSES).contains(&count) || width == 0 {
                    return Err(FormatError::BadClassTable {
                        classes: table.classes,
                        width: table.width,
                    });
                }
                fed += u32::from(table.width);
                check_width(0, fed)?;
                let bytes = resolve(
                    data,
                    &mut claimed,
                    0,
                    ArrayKind::ClassTable,
                    table.table,
                    (count * width) as u32,
                )?;
                Some(ClassTable {
                    classes: count,
                    width,
                    bytes,
                })
            }
        };
        // The tensor the previous layer made, when it was a convolution.
        let mut fed_tensor: Option<TensorShape> = None;
        let mut arena_len = fed as usize;
        let mut scratch_len = 0;

        for (index, stored) in header.layers.iter().enumerate() {
            let layer = index as u8;
            let is_last = index == last;
            let format = stored.weight_format;
            // Sizes in u64: a convolution's phases could add up beyond 32 bits.
            let (inputs, outputs, conv, weights_len, records) = match &stored.shape {
                LayerShapeHeader::Dense { inputs, outputs } => {
                    let (inputs, outputs) = (*inputs, *outputs);
                    check_width(layer, inputs)?;
                    if outputs == 0 || outputs as usize > MAX_TENSOR {
                        return Err(FormatError::BadWidth {
                            layer,
                            width: outputs,
                        });
                    }
                    let len = format.stored_len(inputs as usize, outputs as usize) as u64;
                    (inputs, outputs, None, len, u64::from(outputs))
                }
                LayerShapeHeader::Conv(stored) => {
                    let conv = ConvGeometry::validate(stored)
                        .map_err(|problem| FormatError::BadConv { layer, problem })?;
                    if fed_tensor.is_some_and(|tensor| tensor != conv.input) {
                        return Err(FormatError::TensorMismatch { layer });
                    }
                    let out_channels = usize::from(conv.output.channels);
                    let mut len = 0u64;
                    for (py, px) in conv.phases() {
                        len += format.stored_len(conv.patch_len(py, px), out_channels) as u64;
                    }
                    let phases = (conv.rows.phases() * conv.cols.phases()) as u64;
                    // Both volumes are at most MAX_TENSOR (validated).
                    let (inputs, outputs) = (conv.input.volume(), conv.output.volume());
                    let records = phases * out_channels as u64;
                    (inputs as u32, outputs as u32, Some(conv), len, records)
                }
            };
            if inputs != fed {
                return Err(FormatError::ShapeMismatch {
                    layer,
                    expected: fed,
                    found: inputs,
                });
            }
            fed = outputs;
            fed_tensor = conv.map(|conv| conv.output);
            let too_long = |array| FormatError::ArrayLength {
                layer,
                array,
                expected: u32::MAX,
                found: 0,
            };
            let weights_len =
                u32::try_from(weights_len).map_err(|_| too_long(ArrayKind::Weights))?;
            let records_len = u32::try_from(records * CHANNEL_RECORD_LEN as u64)
                .map_err(|_| too_long(ArrayKind::Channels))?;

            let weights = resolve(
                data,
                &mut claimed,
                layer,
                ArrayKind::Weights,
                stored.weights,
                weights_len,
            )?;
            check_dsp_alignment(layer, format, weights)?;
            // No weight is read here: every weight value is valid in its layout (the DSP
            // kernel sums wide layers in chunks, `dsp::I8_CHUNK_BLOCKS`, so the interleaved
            // int8 layout is exact for any weights), and the checksum has covered the bytes.
            let channel_bytes = resolve(
                data,
                &mut claimed,
                layer,
                ArrayKind::Channels,
                stored.channels,
                records_len,
            )?;
            let channels = ChannelParams {
                bytes: channel_bytes,
            };

            let output = match (stored.output, is_last) {
                (
                    OutputStageHeader::LeakyRelu {
                        zero_point,
                        negative_slope_q31,
                    },
                    false,
                ) => {
                    if negative_slope_q31 < 0 {
                        return Err(FormatError::BadSlope { layer });
                    }
                    LayerOutput::LeakyRelu {
                        zero_point,
                        negative_slope_q31,
                    }
                }
                (OutputStageHeader::Linear { zero_point }, false) => {
                    LayerOutput::Linear { zero_point }
                }
                (OutputStageHeader::TanhPixels { lut }, true) => {
                    let lut_len = lut.len as usize;
                    if !(2..=MAX_LUT_LEN).contains(&lut_len) || !lut_len.is_multiple_of(2) {
                        return Err(FormatError::ArrayLength {
                            layer,
                            array: ArrayKind::Lut,
                            expected: MAX_LUT_LEN as u32,
                            found: lut.len,
                        });
                    }
                    let lut = resolve(data, &mut claimed, layer, ArrayKind::Lut, lut, lut.len)?;
                    LayerOutput::TanhPixels { lut }
                }
                _ => return Err(FormatError::BadOutputStage { layer }),
            };

            for (channel, params) in channels.iter().enumerate() {
                let bias_ok = (-MAX_ABS_BIAS..=MAX_ABS_BIAS).contains(&params.bias);
                if !bias_ok || !params.requant.is_valid() {
                    return Err(FormatError::BadChannel {
                        layer,
                        channel: channel as u16,
                    });
                }
            }

            // Inference's buffers: a dense layer writes its outputs where its inputs were
            // (they are widened into the scratch first), a convolution beside them; the last
            // layer writes pixels, not activations.
            let (inputs, outputs) = (inputs as usize, outputs as usize);
            let kept = match (is_last, conv.is_some()) {
                (true, _) => inputs,
                (false, false) => inputs.max(outputs),
                (false, true) => inputs + outputs,
            };
            arena_len = arena_len.max(kept);
            let built = Layer {
                inputs,
                outputs,
                conv,
                weight_format: format,
                weights,
                channels,
                output,
            };
            scratch_len = scratch_len.max(padded(built.patch_len(), COL_BLOCK));
            // The header's own Vec has the same capacity, so this cannot fail.
            if layers.push(built).is_err() {
                return Err(FormatError::MalformedHeader);
            }
        }

        let image = header.image;
        let pixels = image
            .checked_pixel_count()
            .ok_or(FormatError::BadImageSize {
                width: image.width,
                height: image.height,
                channels: image.channels,
                pixels: image.pixel_count(),
            })?;
        let image_tensor = TensorShape {
            channels: u16::from(image.channels),
            height: image.height,
            width: image.width,
        };
        // Both are at most MAX_TENSOR, so they compare exactly in u32; a convolution must
        // draw the image's rows, columns and channels, not only as many values.
        if fed as usize != pixels || fed_tensor.is_some_and(|tensor| tensor != image_tensor) {
            return Err(FormatError::ImageSizeMismatch {
                expected: pixels as u32,
                found: fed,
            });
        }

        Ok(Model {
            name: header.name,
            latent_dim: usize::from(header.latent_dim),
            image,
            pixel_count: pixels,
            layers,
            classes,
            blob_len,
            arena_len,
            scratch_len,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Length of the latent vector.
    pub fn latent_dim(&self) -> usize {
        self.latent_dim
    }

    /// The class table of a conditional model; `None` for an unconditional one.
    pub fn class_table(&self) -> Option<ClassTable<'a>> {
        self.classes
    }

    /// Classes a conditional model draws; `None` for an unconditional one.
    pub fn classes(&self) -> Option<usize> {
        self.classes.map(|table| table.classes)
    }

    /// Codes the first layer takes: the class row (if any) and the latent vector.
    pub fn input_width(&self) -> usize {
        self.latent_dim + self.classes.map_or(0, |table| table.width)
    }

    /// Shape of a generated image.
    pub fn image(&self) -> ImageShape {
        self.image
    }

    /// Bytes (int8 entries) of the activation arena inference needs: the widest layer input
    /// or hidden output, or for a convolution its input and output side by side.
    pub fn arena_len(&self) -> usize {
        self.arena_len
    }

    /// `i16` entries of the scratch row inference needs: the widest dense input or
    /// convolution patch, rounded up to a whole column block.
    pub fn scratch_len(&self) -> usize {
        self.scratch_len
    }

    /// Bytes of one generated image, `1..=MAX_IMAGE_PIXELS`.
    pub fn pixel_count(&self) -> usize {
        self.pixel_count
    }

    /// The layers, first to last.
    pub fn layers(&self) -> &[Layer<'a>] {
        &self.layers
    }

    /// Multiply-accumulates per generated image.
    pub fn macs(&self) -> usize {
        self.layers.iter().map(Layer::macs).sum()
    }

    /// Bytes of the blob inference reads per image: weights, channel records, lookup tables.
    pub fn bytes_read_per_image(&self) -> usize {
        self.layers.iter().map(Layer::bytes_read).sum()
    }

    /// Number of weights and biases, and the class table's codes of a conditional model.
    pub fn parameter_count(&self) -> usize {
        let table = self.classes.map_or(0, |t| t.classes * t.width);
        self.layers
            .iter()
            .map(|l| l.weight_count() + l.out_channels())
            .sum::<usize>()
            + table
    }

    /// Length of the whole blob in bytes.
    pub fn blob_len(&self) -> usize {
        self.blob_len
    }
}

/// On builds with the DSP kernels, blocked weights must start on a 4-byte boundary in memory
/// (the assembly's word loads need it). A blob in flash is 16-byte aligned by the firmware;
/// elsewhere this never fails.
#[inline]
fn check_dsp_alignment(layer: u8, format: WeightFormat, weights: &[u8]) -> Result<(), FormatError> {
    let blocked = matches!(format, WeightFormat::I8Blocked | WeightFormat::I4Blocked);
    let dsp = cfg!(mcugan_dsp_kernels);
    if dsp && blocked && !(weights.as_ptr() as usize).is_multiple_of(4) {
        return Err(FormatError::ArrayMisaligned {
            layer,
            array: ArrayKind::Weights,
        });
    }
    Ok(())
}

fn check_width(layer: u8, width: u32) -> Result<(), FormatError> {
    if width == 0 || width as usize > MAX_WIDTH {
        return Err(FormatError::BadWidth { layer, width });
    }
    Ok(())
}

fn resolve<'a>(
    data: &'a [u8],
    claimed: &mut Claimed,
    layer: u8,
    array: ArrayKind,
    at: ArrayRef,
    expected_len: u32,
) -> Result<&'a [u8], FormatError> {
    if at.len != expected_len {
        return Err(FormatError::ArrayLength {
            layer,
            array,
            expected: expected_len,
            found: at.len,
        });
    }
    if !(at.offset as usize).is_multiple_of(DATA_ALIGN) {
        return Err(FormatError::ArrayMisaligned { layer, array });
    }
    let end = at
        .offset
        .checked_add(at.len)
        .ok_or(FormatError::ArrayOutOfBounds { layer, array })?;
    let bytes = data
        .get(at.offset as usize..end as usize)
        .ok_or(FormatError::ArrayOutOfBounds { layer, array })?;
    if !claimed.claim(at.offset, end) {
        return Err(FormatError::ArraysOverlap { layer, array });
    }
    Ok(bytes)
}
