//! # mcugan (host)
//!
//! The workstation CLI's own pieces: loading any float generator a command takes (checkpoint
//! or ONNX), the model report, the firmware benchmark, and the rules for overwriting outputs.
//! Training lives in `mcugan-train`, the model tools in `mcugan-model-tools`, the firmware
//! tools in `mcugan-device-tools`.

pub mod bench;
pub mod contained;
pub mod generator_file;
pub mod overwrite;
pub mod report;
