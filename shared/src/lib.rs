//! # mcugan-shared
//!
//! The part of mcugan that runs on both sides of the cable: the compact model format, its
//! validation, the latent sampler and the integer inference kernels. The host's simulation calls
//! exactly this code and the firmware links exactly this code, which is why a generated image is
//! bit-for-bit the same on the workstation and on the chip.
//!
//! The crate is `#![no_std]` and needs no allocator to read or run a model: [`Model::parse`]
//! borrows the blob (which lives in flash on a microcontroller) and inference works in two
//! fixed stack buffers ([`generate_in`]: the firmware sizes them from the model it embeds;
//! [`generate`] uses [`format::MAX_WIDTH`]). Writing blobs (the host's quantizer) needs the
//! `alloc` feature.
//!
//! ```text
//!  seed ──► SplitMix64 ──► Gaussian CDF table ──► int8 latent z (scale 1/32)
//!  class ──► class table row (conditional models) ──┐
//!        ──► [int8/int4 dense + LeakyReLU] x4 ──► int8/int4 dense ──► tanh LUT ──► u8 pixels
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
pub use infer::{
    generate, generate_in, generate_observed, generate_request, generate_walk_frame,
    generate_walk_frame_in, ImageRequest, InferenceError, LayerObserver, Walk,
};
pub use requant::Requant;
