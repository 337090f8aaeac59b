//! Driving the firmware: running its ELF under QEMU (the machine it was built for; the
//! `mps2-an386`, Cortex-M4F, for an ELF that does not say) with
//! deterministic instruction counting, decoding its defmt log, reading back the image stream,
//! and measuring the ELF's sections.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mcugan_shared::stream::{Record, RecordReader, StatKey};
use object::{Object, ObjectSection, ObjectSymbol};
use wait_timeout::ChildExt;

/// How to run QEMU.
#[derive(Clone, Debug)]
pub struct QemuOptions {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// The emulated board, for an ELF that does not name its machine.
    pub machine: String,
    /// The emulated core, for an ELF that does not name its machine.
    pub cpu: String,
    /// Wall-clock limit; the run is killed and reported as timed out past it.
    pub timeout: Duration,
}

impl QemuOptions {
    /// The default machine with a wall-clock limit of `seconds`.
    pub fn with_timeout(seconds: u64) -> Self {
        Self {
            timeout: Duration::from_secs(seconds),
            ..Self::default()
        }
    }
}

impl Default for QemuOptions {
    fn default() -> Self {
        Self {
            qemu: PathBuf::from("qemu-system-arm"),
            machine: "mps2-an386".into(),
            cpu: "cortex-m4".into(),
            timeout: Duration::from_secs(120),
        }
    }
}

/// One image the firmware drew.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrawnImage {
    /// Its seed.
    pub seed: u32,
    /// The class a conditional model drew it in (`None`: unconditional model).
    pub class: Option<u16>,
    /// SysTick ticks `generate` took.
    pub ticks: u32,
    /// The pixels.
    pub pixels: Vec<u8>,
}

/// The most seeds one firmware run takes: the length of the firmware's seed list
/// (`mcugan_firmware_app::MAX_SEEDS`).
pub const MAX_SEEDS_PER_RUN: usize = 256;
/// The most seed ranges (`A..B[:CLASS]`) the QEMU board's command line holds.
pub const MAX_SEED_RANGES_PER_RUN: usize = 32;

/// What a firmware run produced.
#[derive(Clone, Debug)]
pub struct FirmwareRun {
    /// QEMU's exit code (`None` if it was killed).
    pub exit_code: Option<i32>,
    /// Whether the run hit the time limit.
    pub timed_out: bool,
    /// The decoded defmt log, one line per frame.
    pub log: Vec<String>,
    /// The images, in order.
    pub images: Vec<DrawnImage>,
    /// The measurements the firmware reported.
    pub stats: BTreeMap<&'static str, u32>,
    /// Timer ticks per layer for the first image, in layer order.
    pub layer_ticks: Vec<u32>,
    /// Wall time of the run.
    pub wall: Duration,
    /// A problem reading the image stream, if any (a failed run may stop mid-record).
    pub stream_error: Option<String>,
}

impl FirmwareRun {
    /// How the run ended, in words: "exit status 1", "timed out", "killed by a signal".
    pub fn outcome(&self) -> String {
        match (self.timed_out, self.exit_code) {
            (true, _) => "timed out (see --timeout)".to_string(),
            (false, Some(0)) => "exit status 0".to_string(),
            (false, Some(code)) => format!("exit status {code}"),
            (false, None) => "killed by a signal".to_string(),
        }
    }

    /// Whether QEMU exited with status 0 in time.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// Instructions per SysTick tick, from the firmware's calibration loop.
    pub fn instructions_per_tick(&self) -> Option<f64> {
        let instructions = *self
            .stats
            .get(stat_name(StatKey::CalibrationInstructions))?;
        let ticks = *self.stats.get(stat_name(StatKey::CalibrationTicks))?;
        (ticks > 0).then(|| f64::from(instructions) / f64::from(ticks))
    }

    /// Mean instructions per generated image.
    pub fn instructions_per_image(&self) -> Option<f64> {
        let per_tick = self.instructions_per_tick()?;
        if self.images.is_empty() {
            return None;
        }
        let ticks: f64 = self.images.iter().map(|i| f64::from(i.ticks)).sum();
        Some(ticks / self.images.len() as f64 * per_tick)
    }
}

/// The name a stat is reported under.
pub fn stat_name(key: StatKey) -> &'static str {
    match key {
        StatKey::ValidationTicks => "validation_ticks",
        StatKey::CalibrationInstructions => "calibration_instructions",
        StatKey::CalibrationTicks => "calibration_ticks",
        StatKey::StackPeakBytes => "stack_peak_bytes",
        StatKey::ModelBytes => "model_bytes",
    }
}

/// Writes seeds for the firmware's command line, consecutive runs as `a..b`.
pub fn seeds_argument(seeds: &[u32]) -> Vec<String> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < seeds.len() {
        let start = seeds[i];
        let mut end = start;
        while i + 1 < seeds.len() && end.checked_add(1) == Some(seeds[i + 1]) {
            end = seeds[i + 1];
            i += 1;
        }
        if end > start {
            args.push(format!("{start}..{}", u64::from(end) + 1));
        } else {
            args.push(start.to_string());
        }
        i += 1;
    }
    args
}

/// Writes `(seed, class)` requests for the firmware's command line: consecutive seeds of one
/// class as `a..b`, each followed by `:class` when a class is asked for.
pub fn requests_argument(requests: &[(u32, Option<u16>)]) -> Vec<String> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < requests.len() {
        let start = i;
        while i + 1 < requests.len()
            && requests[i + 1].1 == requests[start].1
            && requests[i].0.checked_add(1) == Some(requests[i + 1].0)
        {
            i += 1;
        }
        let seeds: Vec<u32> = requests[start..=i].iter().map(|r| r.0).collect();
        let range = seeds_argument(&seeds).concat();
        args.push(match requests[start].1 {
            Some(class) => format!("{range}:{class}"),
            None => range,
        });
        i += 1;
    }
    args
}

/// Runs `elf` under QEMU, drawing `seeds` (a conditional model: each in its default class).
pub fn run_qemu(elf: &Path, seeds: &[u32], options: &QemuOptions) -> anyhow::Result<FirmwareRun> {
    let requests: Vec<(u32, Option<u16>)> = seeds.iter().map(|&s| (s, None)).collect();
    run_qemu_requests(elf, &requests, options)
}

/// The most frames of a walk the firmware draws.
pub const MAX_WALK_FRAMES: u32 = mcugan_shared::infer::MAX_WALK_FRAMES;

/// The firmware's command-line argument for `walk`: `walk=A..B:FRAMES[:CLASS..CLASS]`.
pub fn walk_argument(walk: &mcugan_shared::Walk) -> String {
    let mut arg = format!("walk={}..{}:{}", walk.from.seed, walk.to.seed, walk.frames);
    if let (Some(a), Some(b)) = (walk.from.class, walk.to.class) {
        arg.push_str(&format!(":{a}..{b}"));
    }
    arg
}

/// Runs `elf` under QEMU, drawing the frames of `walk` (the images come back in frame order,
/// each with its frame number as its seed).
pub fn run_qemu_walk(
    elf: &Path,
    walk: &mcugan_shared::Walk,
    options: &QemuOptions,
) -> anyhow::Result<FirmwareRun> {
    if walk.frames == 0 || walk.frames > MAX_WALK_FRAMES {
        anyhow::bail!(
            "a walk has 1 to {MAX_WALK_FRAMES} frames, not {}",
            walk.frames
        );
    }
    if walk.from.class.is_some() != walk.to.class.is_some() {
        anyhow::bail!("a walk has a class at both ends or at neither");
    }
    run_qemu_with(elf, vec![walk_argument(walk)], options)
}

/// Runs `elf` under QEMU, drawing each `(seed, class)` of `requests` (`class`: the class a
/// conditional model draws the seed in; `None`: the seed's default).
pub fn run_qemu_requests(
    elf: &Path,
    requests: &[(u32, Option<u16>)],
    options: &QemuOptions,
) -> anyhow::Result<FirmwareRun> {
    let seeds = requests;
    if seeds.is_empty() {
        anyhow::bail!("no seeds to draw");
    }
    if seeds.len() > MAX_SEEDS_PER_RUN {
        anyhow::bail!(
            "one firmware run draws at most {MAX_SEEDS_PER_RUN} seeds (the firmware's seed list); \
             {} were asked for",
            seeds.len()
        );
    }
    let ranges = requests_argument(requests);
    if ranges.len() > MAX_SEED_RANGES_PER_RUN {
        anyhow::bail!(
            "the requests make {} seed ranges; the firmware's command line holds \
             {MAX_SEED_RANGES_PER_RUN} (ask for runs of consecutive seeds in one class)",
            ranges.len()
        );
    }
    run_qemu_with(elf, ranges, options)
}

/// Runs `elf` under QEMU with `arguments` after the stream's `out=` on its command line.
fn run_qemu_with(
    elf: &Path,
    arguments: Vec<String>,
    options: &QemuOptions,
) -> anyhow::Result<FirmwareRun> {
    let elf = &std::fs::canonicalize(elf).with_context(|| format!("finding {}", elf.display()))?;
    // An ELF QEMU cannot run is refused here, by name, not after QEMU's timeout.
    crate::elf::embedded_model(elf)?;
    let elf_bytes = crate::elf::read_bounded(elf, crate::elf::MAX_FILE_BYTES, "firmware ELF")?;
    let work = tempfile::tempdir().context("creating a temporary directory")?;
    let stream_path = work.path().join("images.bin");
    let mut append = vec![format!("out={}", stream_path.display())];
    append.extend(arguments);

    // The ELF names the machine it was built for; an ELF without the name runs on the
    // options' machine (the MPS2 AN386 unless asked otherwise).
    let (machine, cpu) = match crate::elf::built_for_machine(elf)? {
        Some(m) => (m.name.to_string(), m.cpu.to_string()),
        None => (options.machine.clone(), options.cpu.clone()),
    };
    let start = Instant::now();
    let mut child = Command::new(&options.qemu)
        .args(["-machine", &machine, "-cpu", &cpu])
        .args([
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .args(["-icount", "shift=0"])
        .arg("-kernel")
        .arg(elf)
        .arg("-append")
        .arg(append.join(" "))
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (install it with `apt-get install qemu-system-arm`)",
                options.qemu.display()
            )
        })?;
    let mut stdout = child.stdout.take().context("QEMU's stdout")?;
    let mut stderr = child.stderr.take().context("QEMU's stderr")?;
    let out_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        bytes
    });
    let (exit_code, timed_out) = match child.wait_timeout(options.timeout)? {
        Some(status) => (status.code(), false),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (None, true)
        }
    };
    let wall = start.elapsed();
    let out_bytes = out_reader.join().unwrap_or_default();
    let err_bytes = err_reader.join().unwrap_or_default();

    let mut log = decode_defmt(&elf_bytes, &out_bytes)?;
    for line in String::from_utf8_lossy(&err_bytes).lines() {
        log.push(format!("qemu: {line}"));
    }

    let mut run = FirmwareRun {
        exit_code,
        timed_out,
        log,
        images: Vec::new(),
        stats: BTreeMap::new(),
        layer_ticks: Vec::new(),
        wall,
        stream_error: None,
    };
    match std::fs::read(&stream_path) {
        Ok(bytes) => read_stream(&bytes, &mut run),
        Err(_) if !run.succeeded() => {}
        Err(err) => run.stream_error = Some(format!("no image stream: {err}")),
    }
    Ok(run)
}

fn read_stream(bytes: &[u8], run: &mut FirmwareRun) {
    let reader = match RecordReader::new(bytes) {
        Ok(reader) => reader,
        Err(err) => {
            run.stream_error = Some(err.to_string());
            return;
        }
    };
    let mut class = None;
    for record in reader {
        match record {
            Ok(Record::Class { class: next }) => class = Some(next),
            Ok(Record::Image {
                seed,
                ticks,
                pixels,
            }) => run.images.push(DrawnImage {
                seed,
                class: class.take(),
                ticks,
                pixels: pixels.to_vec(),
            }),
            Ok(Record::Stat { key, value }) => {
                run.stats.insert(stat_name(key), value);
            }
            Ok(Record::Layer { layer, ticks }) => {
                let layer = usize::from(layer);
                if run.layer_ticks.len() <= layer {
                    run.layer_ticks.resize(layer + 1, 0);
                }
                run.layer_ticks[layer] = ticks;
            }
            Err(err) => run.stream_error = Some(err.to_string()),
        }
    }
}

/// Decodes defmt frames with the ELF's table into text lines.
pub fn decode_defmt(elf: &[u8], frames: &[u8]) -> anyhow::Result<Vec<String>> {
    let Some(table) = defmt_decoder::Table::parse(elf).context("reading the ELF's defmt table")?
    else {
        bail!("the ELF has no defmt table");
    };
    let mut decoder = table.new_stream_decoder();
    decoder.received(frames);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(frame.display(false).to_string()),
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                lines.push("(malformed defmt frame)".into());
                if table.encoding().can_recover() {
                    continue;
                }
                break;
            }
        }
    }
    Ok(lines)
}

/// Sizes of an ELF's sections, in bytes.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ElfSizes {
    /// `.vector_table`.
    pub vector_table: u64,
    /// `.text`.
    pub text: u64,
    /// `.rodata` (runtime constants, without the model).
    pub rodata: u64,
    /// `.model`: the embedded model blob.
    pub model: u64,
    /// `.data` (in flash and in RAM).
    pub data: u64,
    /// `.bss`.
    pub bss: u64,
    /// `.uninit`.
    pub uninit: u64,
}

impl ElfSizes {
    /// Flash bytes: vector table, code, constants, model and the initial values of `.data`.
    pub fn flash(&self) -> u64 {
        self.vector_table + self.text + self.rodata + self.model + self.data
    }

    /// Flash bytes without the model.
    pub fn runtime_flash(&self) -> u64 {
        self.flash() - self.model
    }

    /// Static RAM bytes.
    pub fn static_ram(&self) -> u64 {
        self.data + self.bss + self.uninit
    }
}

/// Reads the section sizes of a firmware ELF.
pub fn elf_sizes(elf: &Path) -> anyhow::Result<ElfSizes> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(bytes.as_slice())
        .with_context(|| format!("{} is not an ELF file", elf.display()))?;
    let size = |name: &str| file.section_by_name(name).map_or(0, |s| s.size());
    let mut sizes = ElfSizes {
        vector_table: size(".vector_table"),
        text: size(".text"),
        rodata: size(".rodata"),
        model: size(".model"),
        data: size(".data"),
        bss: size(".bss"),
        uninit: size(".uninit"),
    };
    if sizes.model == 0 {
        // Boards whose memory.x comes from their HAL keep the blob in .rodata: count the
        // `MODEL` static as the model, not as runtime constants.
        let in_rodata = symbol_size(&file, "MODEL").unwrap_or(0).min(sizes.rodata);
        sizes.model = in_rodata;
        sizes.rodata -= in_rodata;
    }
    Ok(sizes)
}

/// The size of the first symbol whose demangled name ends in `::NAME` (or is `NAME`), if any.
fn symbol_size(file: &object::File<'_>, name: &str) -> Option<u64> {
    let suffix = format!("::{name}");
    file.symbols().find_map(|s| {
        let raw = s.name().ok()?;
        let demangled = rustc_demangle::demangle(raw).to_string();
        let bare = demangled
            .rsplit_once("::h")
            .map_or(demangled.as_str(), |(b, _)| b);
        (bare == name || bare.ends_with(&suffix)).then(|| s.size())
    })
}

/// The address of a symbol and of a section, if the ELF has them.
pub fn elf_symbol_and_section(
    elf: &Path,
    symbol: &str,
    section: &str,
) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(bytes.as_slice())?;
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(symbol))
        .map(|s| s.address());
    let section = file.section_by_name(section).map(|s| s.address());
    Ok((symbol, section))
}

/// Whether an ELF defines a symbol (used to check what a build embeds).
pub fn elf_has_symbol(elf: &Path, name: &str) -> anyhow::Result<bool> {
    let bytes = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(bytes.as_slice())?;
    Ok(file.symbols().any(|s| s.name() == Ok(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_compress_into_ranges() {
        assert_eq!(
            seeds_argument(&[0, 1, 2, 3, 7, 9, 10]),
            ["0..4", "7", "9..11"]
        );
        assert_eq!(
            seeds_argument(&[u32::MAX - 1, u32::MAX]),
            [format!("{}..4294967296", u32::MAX - 1)]
        );
        assert!(seeds_argument(&[]).is_empty());
        assert_eq!(
            requests_argument(&[
                (0, Some(3)),
                (1, Some(3)),
                (2, Some(4)),
                (3, None),
                (4, None)
            ]),
            ["0..2:3", "2:4", "3..5"]
        );
    }
}
