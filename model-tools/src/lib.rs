//! # mcugan-model-tools
//!
//! What mcugan does with a model once it exists, without any training framework: reading and
//! writing data sets, quantizing a float generator into the chip's model blob, simulating the
//! chip on the host with the code the firmware runs, quality metrics, pictures and image
//! files. The training crate and the CLI build on it; it builds without candle.

pub mod data;
pub mod eval;
pub mod fsutil;
pub mod image_files;
pub mod picture;
pub mod progress;
pub mod quantize;
pub mod resize;
pub mod seeds;
pub mod simulate;
