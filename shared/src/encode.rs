//! Writing model blobs: the inverse of [`crate::format::Model::parse`], kept beside it so the
//! format is defined in one crate. Needs the `alloc` feature; the host's quantizer uses it.

use alloc::vec::Vec;

use crate::format::{padded, COL_BLOCK, ROW_BLOCK};
use crate::format::{
    trailer_len, ArrayRef, ClassTableHeader, Header, HeaderV3, ImageShape, LayerHeader,
    OutputStageHeader, Preamble, WeightFormat, WordSums, CHANNEL_RECORD_LEN, CLASS_TABLE_VERSION,
    CRC32, DATA_ALIGN, FORMAT_VERSION, MAGIC, MAX_LAYERS, WORD_SUMS_LEN,
};
use crate::format::{ChannelRequant, FormatError, Model};

/// One layer to encode.
#[derive(Clone, Debug)]
pub struct LayerSpec<'a> {
    /// Input width.
    pub inputs: u16,
    /// Output width.
    pub outputs: u16,
    /// `inputs * outputs` weights, row-major `[outputs][inputs]`, inside
    /// `weight_format.range()`.
    pub weights: &'a [i8],
    /// How to store the weights.
    pub weight_format: WeightFormat,
    /// One entry per output channel.
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
    let mut layers = heapless::Vec::<LayerHeader, MAX_LAYERS>::new();
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
        };
        let header = LayerHeader {
            inputs: layer.inputs,
            outputs: layer.outputs,
            weight_format: layer.weight_format,
            weights,
            channels,
            output,
        };
        layers
            .push(header)
            .map_err(|_| EncodeError::TooManyLayers(spec.layers.len()))?;
    }
    // An unconditional model is written as version 3, the oldest that holds it.
    let (version, header_bytes) = match classes {
        Some(_) => (
            FORMAT_VERSION,
            postcard::to_allocvec(&Header {
                name: spec.name,
                latent_dim: spec.latent_dim,
                image: spec.image,
                layers,
                classes,
            }),
        ),
        None => (
            CLASS_TABLE_VERSION - 1,
            postcard::to_allocvec(&HeaderV3 {
                name: spec.name,
                latent_dim: spec.latent_dim,
                image: spec.image,
                layers,
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

/// The stored bytes of a layer's weights in its format (see [`WeightFormat`]).
fn layout_weights(index: usize, layer: &LayerSpec<'_>) -> Result<Vec<u8>, EncodeError> {
    let (inputs, outputs) = (usize::from(layer.inputs), usize::from(layer.outputs));
    if layer.weights.len() != inputs * outputs {
        return Err(EncodeError::WeightCount {
            layer: index,
            expected: inputs * outputs,
            found: layer.weights.len(),
        });
    }
    let format = layer.weight_format;
    let (low, high) = format.range();
    if let Some(&value) = layer.weights.iter().find(|&&w| w < low || w > high) {
        return Err(EncodeError::WeightOutOfRange {
            layer: index,
            value,
            format,
        });
    }
    // The weight at (row, column), zero in the padding.
    let at = |row: usize, column: usize| -> i8 {
        if row < outputs && column < inputs {
            layer.weights[row * inputs + column]
        } else {
            0
        }
    };
    let rows = padded(outputs, ROW_BLOCK);
    let columns = padded(inputs, COL_BLOCK);
    let mut bytes = Vec::with_capacity(format.stored_len(inputs, outputs));
    match format {
        WeightFormat::I8RowMajor => bytes.extend(layer.weights.iter().map(|&w| w as u8)),
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
