//! The image stream: how a device hands what it drew, and what it measured, to the host.
//!
//! Under QEMU the firmware writes this stream to a host file through semihosting; the host's
//! runner reads it back. Human-readable logs travel separately (defmt), so that the machine-
//! readable part never has to be parsed out of log text.
//!
//! ```text
//! stream  := "MCGI" version:u8 record*
//! record  := 'I' seed:u32 ticks:u32 len:u16 pixels[len]         an image and its timer ticks
//!          | 'S' key:u8 value:u32                                a measurement (see StatKey)
//!          | 'L' layer:u8 ticks:u32                              one layer's timer ticks
//!          | 'C' class:u16                                       the class of the next image
//! ```
//!
//! A conditional model's images are each preceded by a class record; an unconditional model's
//! stream has none, and is the same as before class records existed.
//! All integers little-endian.

/// The first four bytes of a stream.
pub const STREAM_MAGIC: [u8; 4] = *b"MCGI";
/// The stream version this crate reads and writes.
pub const STREAM_VERSION: u8 = 1;
/// Bytes of the stream header.
pub const STREAM_HEADER_LEN: usize = 5;
/// Bytes before an image record's pixels.
pub const IMAGE_RECORD_HEADER_LEN: usize = 11;
/// Bytes of a stat record.
pub const STAT_RECORD_LEN: usize = 6;
/// Bytes of a layer-timing record.
pub const LAYER_RECORD_LEN: usize = 6;
/// Bytes of a class record.
pub const CLASS_RECORD_LEN: usize = 3;

/// What a stat record measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum StatKey {
    /// Timer ticks that `Model::parse` took (CRC included).
    ValidationTicks = 1,
    /// Instructions the calibration loop executes.
    CalibrationInstructions = 2,
    /// Timer ticks the calibration loop took.
    CalibrationTicks = 3,
    /// Peak stack use in bytes, by stack painting.
    StackPeakBytes = 4,
    /// Bytes of the model blob.
    ModelBytes = 5,
}

impl StatKey {
    /// The key for a byte, if any.
    pub fn from_u8(byte: u8) -> Option<StatKey> {
        Some(match byte {
            1 => StatKey::ValidationTicks,
            2 => StatKey::CalibrationInstructions,
            3 => StatKey::CalibrationTicks,
            4 => StatKey::StackPeakBytes,
            5 => StatKey::ModelBytes,
            _ => return None,
        })
    }
}

/// The stream header.
pub fn stream_header() -> [u8; STREAM_HEADER_LEN] {
    let mut header = [0u8; STREAM_HEADER_LEN];
    header[..4].copy_from_slice(&STREAM_MAGIC);
    header[4] = STREAM_VERSION;
    header
}

/// The bytes that precede an image's pixels; write them, then the pixels.
/// Returns `None` for an image of more than `u16::MAX` bytes.
pub fn image_record_header(
    seed: u32,
    ticks: u32,
    pixel_count: usize,
) -> Option<[u8; IMAGE_RECORD_HEADER_LEN]> {
    let len = u16::try_from(pixel_count).ok()?;
    let mut header = [0u8; IMAGE_RECORD_HEADER_LEN];
    header[0] = b'I';
    header[1..5].copy_from_slice(&seed.to_le_bytes());
    header[5..9].copy_from_slice(&ticks.to_le_bytes());
    header[9..11].copy_from_slice(&len.to_le_bytes());
    Some(header)
}

/// A stat record.
pub fn stat_record(key: StatKey, value: u32) -> [u8; STAT_RECORD_LEN] {
    let mut record = [0u8; STAT_RECORD_LEN];
    record[0] = b'S';
    record[1] = key as u8;
    record[2..6].copy_from_slice(&value.to_le_bytes());
    record
}

/// A layer-timing record: the timer ticks layer `layer` took for one image.
pub fn layer_record(layer: u8, ticks: u32) -> [u8; LAYER_RECORD_LEN] {
    let mut record = [0u8; LAYER_RECORD_LEN];
    record[0] = b'L';
    record[1] = layer;
    record[2..6].copy_from_slice(&ticks.to_le_bytes());
    record
}

/// A class record: the next image was drawn in class `class`.
pub fn class_record(class: u16) -> [u8; CLASS_RECORD_LEN] {
    let [low, high] = class.to_le_bytes();
    [b'C', low, high]
}

/// One record read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// An image.
    Image {
        /// The seed it was drawn from.
        seed: u32,
        /// Timer ticks `generate` took.
        ticks: u32,
        /// The pixels.
        pixels: &'a [u8],
    },
    /// One layer's timer ticks (for the first image drawn).
    Layer {
        /// Layer index.
        layer: u8,
        /// Timer ticks.
        ticks: u32,
    },
    /// A measurement.
    Stat {
        /// What was measured.
        key: StatKey,
        /// The value.
        value: u32,
    },
    /// The class of the next image (conditional models).
    Class {
        /// The class.
        class: u16,
    },
}

/// Why a stream could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StreamError {
    /// Missing or wrong magic/version.
    #[error("not an mcugan image stream (bad header)")]
    BadHeader,
    /// A record is cut short (the device stopped mid-write).
    #[error("record at byte {offset} is truncated")]
    Truncated {
        /// Where the record starts.
        offset: usize,
    },
    /// An unknown record tag or stat key.
    #[error("unknown record at byte {offset}")]
    UnknownRecord {
        /// Where the record starts.
        offset: usize,
    },
}

/// Iterates over the records of a stream.
#[derive(Clone, Debug)]
pub struct RecordReader<'a> {
    bytes: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> RecordReader<'a> {
    /// Checks the header and returns a reader positioned at the first record.
    pub fn new(bytes: &'a [u8]) -> Result<Self, StreamError> {
        if bytes.get(..STREAM_HEADER_LEN) != Some(&stream_header()[..]) {
            return Err(StreamError::BadHeader);
        }
        Ok(Self {
            bytes,
            offset: STREAM_HEADER_LEN,
            failed: false,
        })
    }

    fn u32_at(&self, at: usize) -> Option<u32> {
        let word = self.bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
    }

    fn next_record(&mut self) -> Result<Record<'a>, StreamError> {
        let offset = self.offset;
        let truncated = StreamError::Truncated { offset };
        let tag = *self.bytes.get(offset).ok_or(truncated)?;
        match tag {
            b'I' => {
                let seed = self.u32_at(offset + 1).ok_or(truncated)?;
                let ticks = self.u32_at(offset + 5).ok_or(truncated)?;
                let len = self.bytes.get(offset + 9..offset + 11).ok_or(truncated)?;
                let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
                let start = offset + IMAGE_RECORD_HEADER_LEN;
                let pixels = self.bytes.get(start..start + len).ok_or(truncated)?;
                self.offset = start + len;
                Ok(Record::Image {
                    seed,
                    ticks,
                    pixels,
                })
            }
            b'S' => {
                let key = *self.bytes.get(offset + 1).ok_or(truncated)?;
                let key = StatKey::from_u8(key).ok_or(StreamError::UnknownRecord { offset })?;
                let value = self.u32_at(offset + 2).ok_or(truncated)?;
                self.offset = offset + STAT_RECORD_LEN;
                Ok(Record::Stat { key, value })
            }
            b'C' => {
                let class = self.bytes.get(offset + 1..offset + 3).ok_or(truncated)?;
                self.offset = offset + CLASS_RECORD_LEN;
                Ok(Record::Class {
                    class: u16::from_le_bytes([class[0], class[1]]),
                })
            }
            b'L' => {
                let layer = *self.bytes.get(offset + 1).ok_or(truncated)?;
                let ticks = self.u32_at(offset + 2).ok_or(truncated)?;
                self.offset = offset + LAYER_RECORD_LEN;
                Ok(Record::Layer { layer, ticks })
            }
            _ => Err(StreamError::UnknownRecord { offset }),
        }
    }
}

impl<'a> Iterator for RecordReader<'a> {
    type Item = Result<Record<'a>, StreamError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.bytes.len() {
            return None;
        }
        let record = self.next_record();
        self.failed = record.is_err();
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn sample_stream() -> Vec<u8> {
        let mut s = stream_header().to_vec();
        s.extend_from_slice(&image_record_header(7, 1234, 3).unwrap());
        s.extend_from_slice(&[1, 2, 3]);
        s.extend_from_slice(&stat_record(StatKey::StackPeakBytes, 2048));
        s.extend_from_slice(&layer_record(3, 99));
        s.extend_from_slice(&class_record(513));
        s
    }

    #[test]
    fn round_trips() {
        let stream = sample_stream();
        let records: Vec<_> = RecordReader::new(&stream).unwrap().collect();
        assert_eq!(
            records,
            [
                Ok(Record::Image {
                    seed: 7,
                    ticks: 1234,
                    pixels: &[1, 2, 3]
                }),
                Ok(Record::Stat {
                    key: StatKey::StackPeakBytes,
                    value: 2048
                }),
                Ok(Record::Layer {
                    layer: 3,
                    ticks: 99
                }),
                Ok(Record::Class { class: 513 })
            ]
        );
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let stream = sample_stream();
        let cut = &stream[..stream.len() - 2];
        let last = RecordReader::new(cut).unwrap().last().unwrap();
        assert!(matches!(last, Err(StreamError::Truncated { .. })));
        let mut garbage = stream.clone();
        garbage.push(b'Z');
        let last = RecordReader::new(&garbage).unwrap().last().unwrap();
        assert_eq!(
            last,
            Err(StreamError::UnknownRecord {
                offset: stream.len()
            })
        );
        assert_eq!(
            RecordReader::new(b"MCG").err(),
            Some(StreamError::BadHeader)
        );
    }
}
