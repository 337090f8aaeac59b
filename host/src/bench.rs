//! The firmware benchmark: runs a firmware ELF under QEMU with instruction counting and
//! measures, per layer and in total, instructions, instructions per multiply-accumulate and
//! bytes of flash read, beside the build's flash and RAM budgets.
//!
//! QEMU does not model cycles; under `-icount shift=0` the firmware's SysTick counts executed
//! instructions (40 per tick, calibrated by the firmware itself), which is exact and
//! repeatable. Cycles on a real board differ (wait states, pipeline); the board builds print
//! DWT cycle counts for that.

use std::path::Path;

use anyhow::{bail, Context};
use mcugan_shared::{Layer, Model};
use serde::Serialize;

use mcugan_device_tools::firmware::{elf_sizes, run_qemu, ElfSizes, QemuOptions};
use mcugan_model_tools::simulate::simulate;

/// Runtime code (vector table, `.text`, `.rodata`, without the model) the firmware aims at.
pub const RUNTIME_CODE_GOAL: u64 = 16 * 1024;
/// RAM for activations and stack (and statics) the firmware aims at.
pub const RAM_GOAL: u64 = 8 * 1024;
/// Instructions per MAC the whole generator aims at on Cortex-M4.
pub const INSTRUCTIONS_PER_MAC_GOAL: f64 = 1.3;
/// CMSIS-NN's `arm_nn_vec_mat_mult_t_s8` DSP inner loop by its own code: 8 MACs with 3 loads,
/// 6 `SXTAB16` and 4 `SMLAD`, before loop overhead.
pub const CMSIS_NN_INSTRUCTIONS_PER_MAC: f64 = 13.0 / 8.0;

/// One layer's figures.
#[derive(Clone, Debug, Serialize)]
pub struct LayerBench {
    /// Layer index.
    pub layer: usize,
    /// Inputs and outputs (entries).
    pub shape: (usize, usize),
    /// What the layer computes, e.g. `dense 100→8192` or `conv 3x3 128x16x16→64x32x32`.
    pub kind: String,
    /// Bytes of flash the layer's weights and channel records take.
    pub flash_bytes: usize,
    /// Bytes of RAM the layer works in: its part of the activation arena and of the scratch
    /// row.
    pub ram_bytes: usize,
    /// Weight layout.
    pub weight_format: String,
    /// Multiply-accumulates.
    pub macs: usize,
    /// Instructions the layer took (dense, requantization and activation).
    pub instructions: u64,
    /// Bytes of the model the layer reads from flash.
    pub flash_bytes_read: usize,
}

/// A firmware benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct FirmwareBench {
    /// The ELF.
    pub elf: String,
    /// `DSP` or `portable`.
    pub kernels: String,
    /// The model's name.
    pub model: String,
    /// Model blob bytes.
    pub model_bytes: usize,
    /// Per layer.
    pub layers: Vec<LayerBench>,
    /// Multiply-accumulates per image.
    pub macs: usize,
    /// Mean instructions per image (the whole `generate`: latent, layers, widening).
    pub instructions_per_image: f64,
    /// Bytes of the model read per image.
    pub flash_bytes_read: usize,
    /// Section sizes.
    pub sizes: ElfSizes,
    /// Peak stack by painting, activation buffers included.
    pub stack_peak_bytes: u32,
    /// Instructions `Model::parse` took (the checksum over the whole blob included).
    pub validation_instructions: f64,
    /// Images drawn and checked against the host simulation.
    pub images_checked: usize,
}

impl FirmwareBench {
    /// Instructions per multiply-accumulate, whole image.
    pub fn instructions_per_mac(&self) -> f64 {
        self.instructions_per_image / self.macs as f64
    }

    /// Runtime code: flash without the model.
    pub fn runtime_code(&self) -> u64 {
        self.sizes.runtime_flash()
    }

    /// RAM: statics and the peak stack (which holds the activation buffers).
    pub fn ram(&self) -> u64 {
        self.sizes.static_ram() + u64::from(self.stack_peak_bytes)
    }

    /// The benchmark as Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### {} — {} kernels\n\n| layer | shape | weights | flash B | RAM B | MACs | instructions | instr/MAC | flash bytes read |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n",
            self.model, self.kernels
        );
        for l in &self.layers {
            out += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {} |\n",
                l.layer,
                l.kind,
                l.weight_format,
                l.flash_bytes,
                l.ram_bytes,
                l.macs,
                l.instructions,
                l.instructions as f64 / l.macs as f64,
                l.flash_bytes_read
            );
        }
        out += &format!(
            "| **image** | | | | | {} | {:.0} | **{:.3}** | {} |\n\n",
            self.macs,
            self.instructions_per_image,
            self.instructions_per_mac(),
            self.flash_bytes_read
        );
        out += &format!(
            "flash: runtime {} B (vector table {}, .text {}, .rodata {}; goal ≤ {}) + model {} B; \
             RAM: static {} B + peak stack {} B (activations included) = {} B (goal ≤ {}); \
             validation {:.2} M instructions; {} images equal the host simulation\n",
            self.runtime_code(),
            self.sizes.vector_table,
            self.sizes.text,
            self.sizes.rodata,
            RUNTIME_CODE_GOAL,
            self.sizes.model,
            self.sizes.static_ram(),
            self.stack_peak_bytes,
            self.ram(),
            RAM_GOAL,
            self.validation_instructions / 1e6,
            self.images_checked
        );
        out
    }
}

/// What a layer computes, in a few words: `dense 100→8192`, or a convolution's input and
/// output tensors (channels x rows x columns) with its phases and widest patch.
pub fn layer_shape(layer: &Layer<'_>) -> String {
    match &layer.conv {
        None => format!("dense {}→{}", layer.inputs, layer.outputs),
        Some(conv) => {
            let shape = |t: &mcugan_shared::conv::TensorShape| {
                format!("{}x{}x{}", t.channels, t.height, t.width)
            };
            format!(
                "conv {}→{} ({} phases, patch ≤ {})",
                shape(&conv.input),
                shape(&conv.output),
                conv.rows.phases() * conv.cols.phases(),
                conv.max_patch_len()
            )
        }
    }
}

/// Bytes of RAM `layer` works in: the arena it needs (a dense layer's inputs or outputs,
/// whichever is more; a convolution's input and output side by side; the last layer's
/// input) and its scratch row (`i16`).
pub fn layer_ram(layer: &Layer<'_>, last: bool) -> usize {
    let arena = match (last, layer.conv.is_some()) {
        (true, _) => layer.inputs,
        (false, false) => layer.inputs.max(layer.outputs),
        (false, true) => layer.inputs + layer.outputs,
    };
    arena + 2 * mcugan_shared::format::padded(layer.patch_len(), mcugan_shared::format::COL_BLOCK)
}

/// Runs `elf` (built around `blob_path`) on `seeds` and measures it; fails if an image differs
/// from the host simulation.
pub fn bench_firmware(
    elf: &Path,
    blob_path: &Path,
    seeds: &[u32],
    options: &QemuOptions,
) -> anyhow::Result<FirmwareBench> {
    let blob = mcugan_device_tools::elf::read_bounded(
        blob_path,
        mcugan_device_tools::elf::MAX_FILE_BYTES,
        "model blob",
    )?;
    let model = Model::parse(&blob)
        .map_err(|e| anyhow::anyhow!("{}: invalid model: {e}", blob_path.display()))?;
    mcugan_device_tools::elf::check_embeds(elf, &blob, blob_path)?;
    let run = run_qemu(elf, seeds, options)?;
    if !run.succeeded() {
        bail!(
            "the firmware failed ({}):\n{}",
            run.outcome(),
            run.log.join("\n")
        );
    }
    let expected = simulate(&blob, seeds)?;
    for (drawn, want) in run.images.iter().zip(&expected) {
        if &drawn.pixels != want {
            bail!(
                "seed {}: the firmware's image differs from the host simulation",
                drawn.seed
            );
        }
    }
    let per_tick = run
        .instructions_per_tick()
        .context("the firmware reported no calibration")?;
    let instructions_per_image = run
        .instructions_per_image()
        .context("the firmware drew no image")?;
    let layers: Vec<LayerBench> = model
        .layers()
        .iter()
        .enumerate()
        .map(|(i, layer)| LayerBench {
            layer: i,
            shape: (layer.inputs, layer.outputs),
            kind: layer_shape(layer),
            flash_bytes: layer.weights.len() + layer.channels.bytes().len(),
            ram_bytes: layer_ram(layer, i + 1 == model.layers().len()),
            weight_format: format!("{:?}", layer.weight_format),
            macs: layer.macs(),
            instructions: run
                .layer_ticks
                .get(i)
                .map_or(0, |&t| (f64::from(t) * per_tick).round() as u64),
            flash_bytes_read: layer.bytes_read(),
        })
        .collect();
    let kernels = if run.log.iter().any(|l| l.contains("DSP kernels")) {
        "DSP"
    } else {
        "portable"
    };
    Ok(FirmwareBench {
        elf: elf.display().to_string(),
        kernels: kernels.into(),
        model: model.name().into(),
        model_bytes: blob.len(),
        macs: model.macs(),
        flash_bytes_read: model.bytes_read_per_image(),
        layers,
        instructions_per_image,
        sizes: elf_sizes(elf)?,
        stack_peak_bytes: run.stats.get("stack_peak_bytes").copied().unwrap_or(0),
        validation_instructions: f64::from(run.stats.get("validation_ticks").copied().unwrap_or(0))
            * per_tick,
        images_checked: run.images.len(),
    })
}
