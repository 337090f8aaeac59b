//! The figures a run reports, gathered from the artefacts themselves (blob, ELF, a firmware run
//! under QEMU, the float model, the training summary) — never typed in.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use mcugan_shared::Model;

use mcugan_device_tools::firmware::{self, ElfSizes, FirmwareRun, QemuOptions};
use mcugan_model_tools::quantize::FloatGenerator;
use mcugan_model_tools::simulate::{self, FloatVsInt8};
use mcugan_train::run::TrainSummary;

/// Facts about the model blob.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelFacts {
    /// The model's name.
    pub name: String,
    /// Bytes of the blob.
    pub blob_bytes: usize,
    /// Weights and biases.
    pub parameters: usize,
    /// Multiply-accumulates per image.
    pub macs: usize,
}

/// What the firmware run under QEMU showed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FirmwareFacts {
    /// Images drawn.
    pub images: usize,
    /// Whether every image equals the host simulation's, byte for byte.
    pub identical_to_host: bool,
    /// Instructions per SysTick tick (calibrated by the firmware).
    pub instructions_per_tick: f64,
    /// Mean instructions per image.
    pub instructions_per_image: f64,
    /// Instructions per multiply-accumulate.
    pub instructions_per_mac: f64,
    /// Instructions `Model::parse` took (the checksum over the whole blob included).
    pub validation_instructions: f64,
    /// Peak stack, bytes.
    pub stack_peak_bytes: u32,
}

/// Everything the demo reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The model.
    pub model: ModelFacts,
    /// The firmware's sections.
    pub elf: ElfSizes,
    /// The firmware run.
    pub firmware: FirmwareFacts,
    /// Float versus int8.
    pub float_vs_int8: FloatVsInt8,
    /// Training, when known.
    pub training: Option<TrainSummary>,
    /// The machine the figures were taken on.
    pub machine: String,
}

/// Inputs of [`build_report`].
pub struct ReportInputs<'a> {
    /// The float generator.
    pub float: &'a FloatGenerator,
    /// The int8 blob.
    pub blob: &'a [u8],
    /// The firmware built with that blob.
    pub elf: &'a Path,
    /// Seeds the firmware draws under QEMU.
    pub firmware_seeds: &'a [u32],
    /// Seeds for float-vs-int8.
    pub psnr_seeds: &'a [u32],
    /// The training summary, if any.
    pub training: Option<TrainSummary>,
    /// QEMU settings.
    pub qemu: &'a QemuOptions,
}

/// Runs what the report needs and gathers the figures. Returns the firmware run too, so
/// callers can draw its images.
pub fn build_report(inputs: &ReportInputs<'_>) -> anyhow::Result<(Report, FirmwareRun)> {
    let model = Model::parse(inputs.blob).context("invalid model blob")?;
    let model_facts = ModelFacts {
        name: model.name().to_string(),
        blob_bytes: inputs.blob.len(),
        parameters: model.parameter_count(),
        macs: model.macs(),
    };
    let elf = firmware::elf_sizes(inputs.elf)?;
    anyhow::ensure!(
        elf.model as usize >= inputs.blob.len(),
        "{} does not embed this model (its .model section has {} bytes, the blob {})",
        inputs.elf.display(),
        elf.model,
        inputs.blob.len()
    );
    let run = firmware::run_qemu(inputs.elf, inputs.firmware_seeds, inputs.qemu)?;
    if !run.succeeded() {
        anyhow::bail!(
            "the firmware failed under QEMU ({}):\n{}",
            run.outcome(),
            run.log.join("\n")
        );
    }
    let host = simulate::simulate(inputs.blob, inputs.firmware_seeds)?;
    let identical_to_host = run.images.len() == host.len()
        && run
            .images
            .iter()
            .zip(&host)
            .zip(inputs.firmware_seeds)
            .all(|((drawn, expected), &seed)| drawn.seed == seed && &drawn.pixels == expected);
    let per_tick = run
        .instructions_per_tick()
        .context("the firmware reported no calibration")?;
    let per_image = run
        .instructions_per_image()
        .context("the firmware drew no image")?;
    let firmware_facts = FirmwareFacts {
        images: run.images.len(),
        identical_to_host,
        instructions_per_tick: per_tick,
        instructions_per_image: per_image,
        instructions_per_mac: per_image / model_facts.macs as f64,
        validation_instructions: f64::from(
            run.stats
                .get(firmware::stat_name(
                    mcugan_shared::stream::StatKey::ValidationTicks,
                ))
                .copied()
                .unwrap_or(0),
        ) * per_tick,
        stack_peak_bytes: run
            .stats
            .get(firmware::stat_name(
                mcugan_shared::stream::StatKey::StackPeakBytes,
            ))
            .copied()
            .unwrap_or(0),
    };
    let float_vs_int8 = simulate::compare(inputs.float, inputs.blob, inputs.psnr_seeds)?;
    Ok((
        Report {
            model: model_facts,
            elf,
            firmware: firmware_facts,
            float_vs_int8,
            training: inputs.training.clone(),
            machine: machine_description(),
        },
        run,
    ))
}

/// This machine in words: CPU model and core count.
pub fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn kib(bytes: u64) -> String {
    format!("{bytes} B ({:.1} KiB)", bytes as f64 / 1024.0)
}

impl Report {
    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.model;
        let e = &self.elf;
        let f = &self.firmware;
        let q = &self.float_vs_int8;
        let _ = writeln!(s, "# mcugan run report\n");
        let _ = writeln!(s, "Measured on: {}\n", self.machine);
        let _ = writeln!(s, "| figure | value |\n|---|---|");
        let _ = writeln!(
            s,
            "| model | `{}`: {} parameters, {} MACs per image |",
            m.name, m.parameters, m.macs
        );
        let _ = writeln!(
            s,
            "| int8 model blob (flash) | {} |",
            kib(m.blob_bytes as u64)
        );
        let _ = writeln!(s, "| firmware flash, total | {} |", kib(e.flash()));
        let _ = writeln!(
            s,
            "| firmware flash without the model | {} (.vector_table {} + .text {} + .rodata {} + .data {}) |",
            kib(e.runtime_flash()),
            e.vector_table,
            e.text,
            e.rodata,
            e.data
        );
        let _ = writeln!(
            s,
            "| static RAM (.data + .bss + .uninit) | {} |",
            kib(e.static_ram())
        );
        let _ = writeln!(
            s,
            "| peak stack (painted, under QEMU) | {} |",
            kib(u64::from(f.stack_peak_bytes))
        );
        let _ = writeln!(
            s,
            "| RAM, static + stack | {} |",
            kib(e.static_ram() + u64::from(f.stack_peak_bytes))
        );
        let _ = writeln!(
            s,
            "| instructions per image (QEMU, Cortex-M4, `-icount shift=0`) | {:.0} ({:.2} per MAC) |",
            f.instructions_per_image, f.instructions_per_mac
        );
        let _ = writeln!(
            s,
            "| instructions to validate the blob (checksum and layout checks) | {:.0} |",
            f.validation_instructions
        );
        let _ = writeln!(
            s,
            "| chip output = host simulation | {} ({} images, byte for byte) |",
            if f.identical_to_host { "yes" } else { "**NO**" },
            f.images
        );
        let _ = writeln!(
            s,
            "| float vs int8 PSNR | {:.2} dB over {} images (mean abs error {:.2}, max {:.0} gray levels) |",
            q.psnr_db, q.images, q.mean_abs_error, q.max_abs_error
        );
        if let Some(t) = &self.training {
            let _ = writeln!(
                s,
                "| training | {} epochs on {} images, {:.2} s per epoch, {:.0} images/s on {} |",
                t.epochs, t.images, t.mean_epoch_seconds, t.images_per_second, t.device
            );
        }
        s
    }
}
