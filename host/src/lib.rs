//! # mcugan (host)
//!
//! The workstation side of mcugan: data loading, training the reference MLP GAN with candle,
//! quantizing its generator (or one imported from ONNX) into the compact model format of
//! `mcugan-shared`, simulating the
//! microcontroller with the very code it runs, and driving the firmware under QEMU.

pub mod adam;
pub mod bench;
pub mod classifier;
pub mod cpu;
pub mod data;
pub mod device;
pub mod eval;
pub mod firmware;
pub mod fsutil;
pub mod fused;
pub mod gan;
pub mod generator_file;
pub mod image_files;
pub mod kernel_trainer;
pub mod overwrite;
pub mod picture;
pub mod progress;
pub mod quantize;
pub mod recipe;
pub mod report;
pub mod seeds;
pub mod simulate;
pub mod train;
