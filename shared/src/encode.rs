//! Writing model blobs: the inverse of [`crate::format::Model::parse`], kept beside it so the
//! format is defined in one crate. Needs the `alloc` feature; the host's quantizer uses it.

use alloc::vec::Vec;

use crate::format::{
    ArrayRef, Header, ImageShape, LayerHeader, OutputStageHeader, Preamble, WeightFormat,
    CHANNEL_RECORD_LEN, CRC32, CRC_LEN, DATA_ALIGN, FORMAT_VERSION, MAGIC, MAX_LAYERS,
};
use crate::format::{ChannelRequant, FormatError, Model};

/// One layer to encode.
#[derive(Clone, Debug)]
pub struct LayerSpec<'a> {
    /// Input width.
    pub inputs: u16,
    /// Output width.
    pub outputs: u16,
    /// `inputs * outputs` weights, row-major `[outputs][inputs]`.
    pub weights: &'a [i8],
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
    let mut layers = heapless::Vec::<LayerHeader, MAX_LAYERS>::new();
    for layer in spec.layers {
        let weights = data.push(layer.weights.iter().map(|&w| w as u8))?;
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
            weight_format: WeightFormat::I8RowMajor,
            weights,
            channels,
            output,
        };
        layers
            .push(header)
            .map_err(|_| EncodeError::TooManyLayers(spec.layers.len()))?;
    }
    let header = Header {
        name: spec.name,
        latent_dim: spec.latent_dim,
        image: spec.image,
        layers,
    };
    let header_bytes = postcard::to_allocvec(&header).map_err(|_| EncodeError::Serialize)?;

    // The preamble holds the total length as a varint, whose own size moves the data section:
    // iterate to the fixed point (two rounds at most, as the varint grows monotonically).
    let mut blob_len = 0usize;
    let blob = loop {
        let preamble = Preamble {
            magic: MAGIC,
            version: FORMAT_VERSION,
            blob_len: u32::try_from(blob_len).map_err(|_| EncodeError::TooLarge)?,
        };
        let mut blob = postcard::to_allocvec(&preamble).map_err(|_| EncodeError::Serialize)?;
        blob.extend_from_slice(&header_bytes);
        while !blob.len().is_multiple_of(DATA_ALIGN) {
            blob.push(0);
        }
        blob.extend_from_slice(&data.bytes);
        let total = blob.len() + CRC_LEN;
        if total == blob_len {
            break blob;
        }
        blob_len = total;
    };
    let mut blob = blob;
    let crc = CRC32.checksum(&blob);
    blob.extend_from_slice(&crc.to_le_bytes());
    Model::parse(&blob)?;
    Ok(blob)
}

/// Recomputes the CRC trailer of `blob` in place, for tools and tests that edit a blob on
/// purpose. Does nothing to a blob shorter than the trailer.
pub fn reseal(blob: &mut [u8]) {
    if let Some(body_len) = blob.len().checked_sub(CRC_LEN) {
        let crc = CRC32.checksum(&blob[..body_len]);
        blob[body_len..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Rewrites the format version in the preamble of an encoded blob (and reseals it). For tests
/// and for migration tools; the version is the varint right after the magic, and this keeps its
/// encoded size, so it only handles versions below 128.
pub fn set_version(blob: &mut [u8], version: u8) -> bool {
    if version >= 0x80 || blob.len() <= MAGIC.len() || blob[MAGIC.len()] >= 0x80 {
        return false;
    }
    blob[MAGIC.len()] = version;
    reseal(blob);
    true
}
