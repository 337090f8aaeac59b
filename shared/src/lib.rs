//! # mcugan-shared
//!
//! The part of mcugan that runs on both sides of the cable: the compact model format, its
//! validation, the latent sampler and the integer inference kernels. The host's simulation calls
//! exactly this code and the firmware links exactly this code, which is why a generated image is
//! bit-for-bit the same on the workstation and on the chip.
//!
//! The crate is `#![no_std]` and needs no allocator to read or run a model: [`Model::parse`]
//! borrows the blob (which lives in flash on a microcontroller) and inference works in two
//! buffers the caller lends ([`generate_in`]: stack buffers the firmware sizes from the model
//! it embeds; with the `alloc` feature, `generate` allocates them for each model). Writing
//! blobs (the host's quantizer) needs the `alloc` feature too.
//!
//! ```text
//!  seed ──► SplitMix64 ──► Gaussian CDF table ──► int8 latent z (scale 1/32)
//!  class ──► class table row (conditional models) ──┐
//!        ──► [int8/int4 dense or convolution + LeakyReLU or none] ──► ... ──► tanh LUT ──► u8 pixels
//! ```
//!
//! Features: `alloc` (encoding), `defmt` (firmware logs), `dsp` (Cortex-M DSP-extension
//! assembly for the blocked weight layouts; ignored on other targets, same bytes either way).
#![no_std]
// The only unsafe code is the FFI calls into the DSP assembly (`dsp`, behind its feature).
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod checksum;
pub mod conv;
#[cfg(mcugan_dsp_kernels)]
pub mod dsp;
#[cfg(feature = "alloc")]
pub mod encode;
pub mod format;
pub mod infer;
pub mod kernels;
pub mod latent;
pub mod layout;
pub mod requant;
pub mod stream;

pub use format::{FormatError, ImageShape, Layer, LayerOutput, Model};
#[cfg(feature = "alloc")]
pub use infer::{generate, generate_observed, generate_request, generate_walk_frame};
pub use infer::{
    generate_in, generate_walk_frame_in, generate_walk_frame_with, generate_with, ImageRequest,
    InferenceError, LayerObserver, Walk, Workspace,
};
pub use requant::Requant;
