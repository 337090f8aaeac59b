//! Writing model blobs: the inverse of [`crate::format::Model::parse`], kept beside it so the
//! format is defined in one crate. Needs the `alloc` feature; the host's quantizer uses it.

use alloc::vec::Vec;

use crate::conv::{ConvGeometry, ConvHeader};
use crate::format::{padded, COL_BLOCK, MAX_WIDTH, ROW_BLOCK};
use crate::format::{
    trailer_len, ArrayRef, ClassTableHeader, Header, HeaderV3, HeaderV5, ImageShape, LayerHeader,
    LayerHeaderV5, LayerShapeHeader, OutputStageHeader, Preamble, WeightFormat, WordSums,
    CHANNEL_RECORD_LEN, CLASS_TABLE_VERSION, CRC32, DATA_ALIGN, LAYER_KINDS_VERSION, MAGIC,
    MAX_LAYERS, WORD_SUMS_LEN,
};
use crate::format::{ChannelRequant, FormatError, Model};

/// One layer to encode.
#[derive(Clone, Debug)]
pub struct LayerSpec<'a> {
    /// Input entries (a dense layer's width; a convolution's input tensor's volume).
    pub inputs: u32,
    /// Output entries.
    pub outputs: u32,
    /// A convolution's geometry; `None` for a dense layer.
    pub conv: Option<ConvHeader>,
    /// A dense layer's `inputs * outputs` weights, row-major `[outputs][inputs]`; a
    /// convolution's phases' matrices one after another, each row-major `[output
    /// channels][patch]` (see [`crate::conv`]). Inside `weight_format.range()`.
    pub weights: &'a [i8],
    /// How to store the weights.
    pub weight_format: WeightFormat,
    /// One entry per output channel (a convolution: per phase and output channel, phase
    /// major).
    pub channels: &'a [ChannelRequant],
    /// The output stage.
    pub output: OutputSpec<'a>,
}

/// A layer's output stage, to encode.
#[derive(Clone, Copy, Debug)]
pub enum OutputSpec<'a> {
    /// LeakyReLU into int8.
    LeakyRelu {
        /// Output zero point.
        zero_point: i8,
        /// Negative slope in Q31.
        negative_slope_q31: i32,
    },
    /// Tanh to pixels through a lookup table of even length.
    TanhPixels {
        /// The table.
        lut: &'a [u8],
    },
    /// No activation: requantized into int8 (format version 5).
    Linear {
        /// Output zero point.
        zero_point: i8,
    },
}

/// A whole model to encode.
#[derive(Clone, Debug)]
pub struct ModelSpec<'a> {
    /// Human-readable name.
    pub name: &'a str,
    /// Latent vector length.
    pub latent_dim: u16,
    /// Generated image shape.
    pub image: ImageShape,
    /// Layers, first to last.
    pub layers: &'a [LayerSpec<'a>],
    /// The class table of a conditional model (`None`: unconditional).
    pub classes: Option<ClassTableSpec<'a>>,
}

/// A conditional model's class table, to encode (see [`crate::format::ClassTableHeader`]).
#[derive(Clone, Copy, Debug)]
pub struct ClassTableSpec<'a> {
    /// Codes per class.
    pub width: u16,
    /// `classes * width` codes, row per class, at the latent's scale.
    pub codes: &'a [i8],
}

/// Why a model could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More than [`MAX_LAYERS`] layers.
    #[error("{0} layers, the format holds at most {MAX_LAYERS}")]
    TooManyLayers(usize),
    /// The encoded blob would exceed 4 GiB.
    #[error("the model is too large for the format")]
    TooLarge,
    /// postcard failed to serialise the header.
    #[error("header serialisation failed")]
    Serialize,
    /// A layer's weight slice does not hold `inputs * outputs` weights.
    #[error("layer {layer}: {found} weights given, the shape needs {expected}")]
    WeightCount {
        /// Layer index.
        layer: usize,
        /// `inputs * outputs`.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// A weight does not fit the chosen format (e.g. outside −7..=7 for int4).
    #[error("layer {layer}: weight {value} does not fit {format:?}")]
    WeightOutOfRange {
        /// Layer index.
        layer: usize,
        /// The weight.
        value: i8,
        /// The format.
        format: WeightFormat,
    },
    /// The class table's codes are not a whole number of rows of its width.
    #[error("a class table of {codes} codes in rows of {width}")]
    ClassTableShape {
        /// Codes given.
        codes: usize,
        /// Codes per class.
        width: u16,
    },
    /// A convolution's geometry the format cannot hold.
    #[error("layer {layer}: convolution geometry out of bounds ({problem:?})")]
    BadConv {
        /// Layer index.
        layer: usize,
        /// What is out of bounds.
        problem: crate::conv::ConvProblem,
    },
    /// A dense layer wider than the format holds.
    #[error("layer {layer}: {inputs} inputs, {outputs} outputs do not fit the format")]
    BadWidth {
        /// Layer index.
        layer: usize,
        /// Inputs.
        inputs: u32,
        /// Outputs.
        outputs: u32,
    },
    /// The encoded blob does not validate (the spec is inconsistent).
    #[error("the encoded model does not validate: {0}")]
    Invalid(#[from] FormatError),
}

struct DataSection {
    bytes: Vec<u8>,
}

impl DataSection {
    fn push(&mut self, payload: impl IntoIterator<Item = u8>) -> Result<ArrayRef, EncodeError> {
        while !self.bytes.len().is_multiple_of(DATA_ALIGN) {
            self.bytes.push(0);
        }
        let offset = self.bytes.len();
        self.bytes.extend(payload);
        let len = self.bytes.len() - offset;
        Ok(ArrayRef {
            offset: u32::try_from(offset).map_err(|_| EncodeError::TooLarge)?,
            len: u32::try_from(len).map_err(|_| EncodeError::TooLarge)?,
        })
    }
}

/// Encodes `spec` into a blob, then validates the result with [`Model::parse`] so that what
/// this returns is always a loadable model.
pub fn encode(spec: &ModelSpec<'_>) -> Result<Vec<u8>, EncodeError> {
    if spec.layers.len() > MAX_LAYERS {
        return Err(EncodeError::TooManyLayers(spec.layers.len()));
    }
    let mut data = DataSection { bytes: Vec::new() };
    let classes = match spec.classes {
        None => None,
        Some(table) => {
            let width = usize::from(table.width);
            if width == 0 || table.codes.is_empty() || !table.codes.len().is_multiple_of(width) {
                return Err(EncodeError::ClassTableShape {
                    codes: table.codes.len(),
                    width: table.width,
                });
            }
            let classes = u16::try_from(table.codes.len() / width).map_err(|_| {
                EncodeError::ClassTableShape {
                    codes: table.codes.len(),
                    width: table.width,
                }
            })?;
            Some(ClassTableHeader {
                classes,
                width: table.width,
                table: data.push(table.codes.iter().map(|&c| c as u8))?,
            })
        }
    };
    let mut layers = heapless::Vec::<LayerHeaderV5, MAX_LAYERS>::new();
    for (index, layer) in spec.layers.iter().enumerate() {
        let weights = data.push(layout_weights(index, layer)?)?;
        let mut records = Vec::with_capacity(layer.channels.len() * CHANNEL_RECORD_LEN);
        for c in layer.channels {
            records.extend_from_slice(&c.bias.to_le_bytes());
            records.extend_from_slice(&c.requant.multiplier.to_le_bytes());
            records.extend_from_slice(&c.requant.shift.to_le_bytes());
        }
        let channels = data.push(records)?;
        let output = match layer.output {
            OutputSpec::LeakyRelu {
                zero_point,
                negative_slope_q31,
            } => OutputStageHeader::LeakyRelu {
                zero_point,
                negative_slope_q31,
            },
            OutputSpec::TanhPixels { lut } => OutputStageHeader::TanhPixels {
                lut: data.push(lut.iter().copied())?,
            },
            OutputSpec::Linear { zero_point } => OutputStageHeader::Linear { zero_point },
        };
        let header = LayerHeaderV5 {
            shape: match &layer.conv {
                Some(conv) => LayerShapeHeader::Conv(conv.clone()),
                None => LayerShapeHeader::Dense {
                    inputs: layer.inputs,
                    outputs: layer.outputs,
                },
            },
            weight_format: layer.weight_format,
            weights,
            channels,
            output,
        };
        layers
            .push(header)
            .map_err(|_| EncodeError::TooManyLayers(spec.layers.len()))?;
    }
    // Each model in the oldest version that holds it: an unconditional MLP as version 3, a
    // conditional one as version 4, anything else as version 5.
    let old_layers: Option<heapless::Vec<LayerHeader, MAX_LAYERS>> =
        layers.iter().map(old_layer).collect();
    let (version, header_bytes) = match (old_layers, classes) {
        (Some(layers), None) => (
            CLASS_TABLE_VERSION - 1,
            postcard::to_allocvec(&HeaderV3 {
                name: spec.name,
                latent_dim: spec.latent_dim,
                image: spec.image,
                layers,
            }),
        ),
        (Some(layers), Some(_)) => (
            CLASS_TABLE_VERSION,
            postcard::to_allocvec(&Header {
                name: spec.name,
                latent_dim: spec.latent_dim,
                image: spec.image,
                layers,
                classes,
            }),
        ),
        (None, _) => (
            LAYER_KINDS_VERSION,
            postcard::to_allocvec(&HeaderV5 {
                name: spec.name,
                latent_dim: spec.latent_dim,
                image: spec.image,
                layers,
                classes,
            }),
        ),
    };
    let header_bytes = header_bytes.map_err(|_| EncodeError::Serialize)?;

    // The preamble holds the total length as a varint, whose own size moves the data section:
    // iterate to the fixed point (two rounds at most, as the varint grows monotonically).
    let mut blob_len = 0usize;
    let blob = loop {
        let preamble = Preamble {
            magic: MAGIC,
            version,
            blob_len: u32::try_from(blob_len).map_err(|_| EncodeError::TooLarge)?,
        };
        let mut blob = postcard::to_allocvec(&preamble).map_err(|_| EncodeError::Serialize)?;
        blob.extend_from_slice(&header_bytes);
        while !blob.len().is_multiple_of(DATA_ALIGN) {
            blob.push(0);
        }
        blob.extend_from_slice(&data.bytes);
        let total = blob.len() + WORD_SUMS_LEN;
        if total == blob_len {
            break blob;
        }
        blob_len = total;
    };
    let mut blob = blob;
    let sums = WordSums::of(&blob);
    blob.extend_from_slice(&sums.to_bytes());
    Model::parse(&blob)?;
    Ok(blob)
}

/// A layer of format version 5 in the form of versions 3 and 4, when it has one: a dense
/// layer of at most [`MAX_WIDTH`] inputs and outputs with an activation.
fn old_layer(layer: &LayerHeaderV5) -> Option<LayerHeader> {
    let LayerShapeHeader::Dense { inputs, outputs } = layer.shape else {
        return None;
    };
    let fits = |width: u32| width as usize <= MAX_WIDTH;
    if !fits(inputs) || !fits(outputs) || matches!(layer.output, OutputStageHeader::Linear { .. }) {
        return None;
    }
    Some(LayerHeader {
        inputs: inputs as u16,
        outputs: outputs as u16,
        weight_format: layer.weight_format,
        weights: layer.weights,
        channels: layer.channels,
        output: layer.output,
    })
}

/// The stored bytes of a layer's weights in its format (see [`WeightFormat`]): a dense
/// layer's matrix, or a convolution's phases' matrices one after another.
fn layout_weights(index: usize, layer: &LayerSpec<'_>) -> Result<Vec<u8>, EncodeError> {
    let format = layer.weight_format;
    let (low, high) = format.range();
    if let Some(&value) = layer.weights.iter().find(|&&w| w < low || w > high) {
        return Err(EncodeError::WeightOutOfRange {
            layer: index,
            value,
            format,
        });
    }
    let Some(conv) = &layer.conv else {
        let (inputs, outputs) = (layer.inputs as usize, layer.outputs as usize);
        if !(1..=MAX_WIDTH).contains(&inputs) || outputs == 0 {
            return Err(EncodeError::BadWidth {
                layer: index,
                inputs: layer.inputs,
                outputs: layer.outputs,
            });
        }
        return layout_matrix(index, layer.weights, inputs, outputs, format);
    };
    let geometry = ConvGeometry::validate(conv).map_err(|problem| EncodeError::BadConv {
        layer: index,
        problem,
    })?;
    let out_channels = usize::from(geometry.output.channels);
    let expected: usize = geometry
        .phases()
        .map(|(py, px)| geometry.patch_len(py, px) * out_channels)
        .sum();
    if layer.weights.len() != expected {
        return Err(EncodeError::WeightCount {
            layer: index,
            expected,
            found: layer.weights.len(),
        });
    }
    let mut bytes = Vec::new();
    let mut rest = layer.weights;
    for (py, px) in geometry.phases() {
        let patch = geometry.patch_len(py, px);
        let (matrix, others) = rest.split_at(patch * out_channels);
        rest = others;
        bytes.extend(layout_matrix(index, matrix, patch, out_channels, format)?);
    }
    Ok(bytes)
}

/// The stored bytes of one weight matrix, row-major `[outputs][inputs]` in `weights`.
fn layout_matrix(
    index: usize,
    weights: &[i8],
    inputs: usize,
    outputs: usize,
    format: WeightFormat,
) -> Result<Vec<u8>, EncodeError> {
    if weights.len() != inputs * outputs {
        return Err(EncodeError::WeightCount {
            layer: index,
            expected: inputs * outputs,
            found: weights.len(),
        });
    }
    // The weight at (row, column), zero in the padding.
    let at = |row: usize, column: usize| -> i8 {
        if row < outputs && column < inputs {
            weights[row * inputs + column]
        } else {
            0
        }
    };
    let rows = padded(outputs, ROW_BLOCK);
    let columns = padded(inputs, COL_BLOCK);
    let mut bytes = Vec::with_capacity(format.stored_len(inputs, outputs));
    match format {
        WeightFormat::I8RowMajor => bytes.extend(weights.iter().map(|&w| w as u8)),
        WeightFormat::I8Blocked => {
            for group in (0..rows).step_by(ROW_BLOCK) {
                for block in (0..columns).step_by(COL_BLOCK) {
                    for pair in [group, group + 2] {
                        for column in (block..block + COL_BLOCK).step_by(2) {
                            for c in [column, column + 1] {
                                bytes.push((i16::from(at(pair, c)) + 128) as u8);
                                bytes.push(at(pair + 1, c) as u8);
                            }
                        }
                    }
                }
            }
        }
        WeightFormat::I4Blocked => {
            let nibble = |w: i8| (w as u8) & 0x0F;
            for group in (0..rows).step_by(ROW_BLOCK) {
                for block in (0..columns).step_by(COL_BLOCK) {
                    for row in group..group + ROW_BLOCK {
                        for offset in [0, 2, 1, 3] {
                            let low = nibble(at(row, block + offset));
                            let high = nibble(at(row, block + 4 + offset));
                            bytes.push(low | high << 4);
                        }
                    }
                }
            }
        }
    }
    Ok(bytes)
}

/// Recomputes the checksum trailer of `blob` in place (the CRC-32 or the word sums, by the
/// version its preamble states), for tools and tests that edit a blob on purpose. Does nothing
/// to a blob whose preamble does not decode or that is shorter than its trailer.
pub fn reseal(blob: &mut [u8]) {
    let Ok((preamble, _)) = postcard::take_from_bytes::<Preamble>(blob) else {
        return;
    };
    let Some(body_len) = blob.len().checked_sub(trailer_len(preamble.version)) else {
        return;
    };
    let (body, trailer) = blob.split_at_mut(body_len);
    if preamble.version >= 3 {
        trailer.copy_from_slice(&WordSums::of(body).to_bytes());
    } else {
        trailer.copy_from_slice(&CRC32.checksum(body).to_le_bytes());
    }
}

/// Rewrites the format version of an encoded blob: the preamble's version and length, and the
/// trailer of the new version (CRC-32 below version 3, word sums from it), resealed. For tests
/// and for migrating blobs between versions 2 and 3, whose contents are the same. Returns
/// `false`, leaving `blob` as it was, when the preamble does not decode or would change size
/// (which would move the 16-aligned data section), or `version` is 128 or more.
pub fn set_version(blob: &mut Vec<u8>, version: u8) -> bool {
    let Ok((old, rest)) = postcard::take_from_bytes::<Preamble>(blob) else {
        return false;
    };
    let old_len = blob.len() - rest.len();
    let Some(body_len) = blob.len().checked_sub(trailer_len(old.version)) else {
        return false;
    };
    if version >= 0x80 || body_len < old_len {
        return false;
    }
    let new_version = u16::from(version);
    let Ok(blob_len) = u32::try_from(body_len + trailer_len(new_version)) else {
        return false;
    };
    let preamble = Preamble {
        magic: old.magic,
        version: new_version,
        blob_len,
    };
    let Ok(bytes) = postcard::to_allocvec(&preamble) else {
        return false;
    };
    if bytes.len() != old_len {
        return false;
    }
    blob.truncate(body_len);
    blob[..old_len].copy_from_slice(&bytes);
    blob.resize(body_len + trailer_len(new_version), 0);
    reseal(blob);
    true
}
