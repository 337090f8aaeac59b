//! # mcugan-device-tools
//!
//! The host's side of the firmware: section sizes of a firmware ELF, running it under QEMU
//! (on the machine each firmware was built for) with deterministic instruction counting, and decoding what it sends back
//! (its defmt log and its image stream). Knows the model format only through
//! `mcugan-shared`, and nothing of training. Also building the QEMU firmware around a blob
//! ([`build`], the only module without the default `run` feature).

pub mod build;
#[cfg(feature = "run")]
pub mod elf;
#[cfg(feature = "run")]
pub mod firmware;
