//! The QEMU machines' board (`qemu-system-arm -machine M`, M from the machine table of
//! `mcugan-firmware-build`: the MPS2 AN385/AN386/AN500/AN505, the MPS3 AN547, the Netduino
//! Plus 2, the micro:bit). Nothing here depends on the machine but its RAM's start (from the
//! build script's `machine.rs`): semihosting and SysTick are the core's.
//!
//! - Seeds and the output path come from the semihosting command line (QEMU's `-append`):
//!   `out=PATH SEED|START..END ...`, each seed or range optionally followed by `:CLASS` (the
//!   class a conditional model draws them in; default `seed mod classes`). Without seeds it
//!   draws seeds 0..8 and writes no stream. With the `walk` feature,
//!   `walk=A..B:FRAMES[:CLASS[..CLASS]]` draws a latent walk instead (`mcugan_shared::Walk`):
//!   FRAMES images from seed A to seed B (both ends included), in one class or from one class
//!   to another.
//! - The image stream (`mcugan_shared::stream`) goes to `PATH` through semihosting.
//! - SysTick, clocked from the core, times the work. Under `-icount shift=0` QEMU advances
//!   virtual time by 1 ns per instruction, so ticks convert to instructions; the run measures
//!   that ratio itself with a calibration loop of known length.
//! - The stack below `main` is painted at start-up and scanned at the end for the peak use.

use core::ffi::CStr;
use core::ptr::{addr_of, read_volatile, write_volatile};

use heapless::Vec;
use mcugan_shared::stream::{
    class_record, image_record_header, layer_record, stat_record, stream_header, StatKey,
};
use mcugan_shared::ImageRequest;
#[cfg(feature = "walk")]
use mcugan_shared::Walk;
use semihosting::fs::File;
use semihosting::io::Write;

use mcugan_firmware_app::board::{CycleCounter, SysTickCycles};
use mcugan_firmware_app::{AppError, Board, SinkError, MAX_SEEDS};

/// Seeds drawn when the command line names none.
fn default_seeds() -> SeedRun {
    SeedRun {
        start: 0,
        count: 8,
        class: None,
    }
}
/// Bytes of the semihosting command line this board reads.
const CMDLINE_LEN: usize = 1024;
/// How far below the start-up stack pointer the stack is painted: room for a convolutional
/// model's activation arena (`dcgan.py`'s is 96 KiB), which lives on the stack.
const PAINTED_STACK: usize = 1024 * 1024;
const PAINT: u32 = 0xC0FF_EE11;
/// Iterations of the two-instruction calibration loop.
const CALIBRATION_LOOPS: u32 = 1_000_000;

extern "C" {
    static _stack_start: u32;
}

/// The board and what it holds for the run.
pub struct Mps2 {
    /// SysTick from the core clock, owned so that nothing else reconfigures it.
    ticks: SysTickCycles,
    stream: Option<File>,
    paint_bottom: usize,
}

/// What the command line asks the run to draw.
// One value, moved once into `main`: there is no heap to box the seed list into.
#[allow(clippy::large_enum_variant)]
pub enum Plan {
    /// These seeds, each run of them in its class (if any).
    Seeds(SeedRanges),
    /// The frames of a latent walk.
    #[cfg(feature = "walk")]
    Walk(Walk),
}

impl Mps2 {
    /// Takes the core peripherals, paints the stack, reads the command line; returns the board
    /// and what to draw (kept out of the board, so that the seed list is on the stack once).
    pub fn take() -> (Self, Plan) {
        let paint_bottom = paint_stack();
        let Some(core) = cortex_m::Peripherals::take() else {
            defmt::error!("core peripherals already taken");
            exit_failure()
        };
        let mut board = Mps2 {
            ticks: SysTickCycles::start(core.SYST),
            stream: None,
            paint_bottom,
        };
        let plan = board.read_command_line();
        if let Some(stream) = board.stream.as_mut() {
            if stream.write_all(&stream_header()).is_err() {
                defmt::error!("cannot write the image stream");
                exit_failure()
            }
        }
        board.calibrate();
        (board, plan)
    }

    fn read_command_line(&mut self) -> Plan {
        let mut seeds = SeedRanges::new();
        #[cfg(feature = "walk")]
        let mut walk = None;
        let args = match semihosting::experimental::env::args::<CMDLINE_LEN>() {
            Ok(args) => args,
            Err(_) => {
                defmt::warn!("no semihosting command line; drawing the default seeds");
                seeds.extend([default_seeds()]);
                return Plan::Seeds(seeds);
            }
        };
        // The first argument is the kernel's file name.
        for arg in (&args).skip(1) {
            let Ok(arg) = arg else {
                defmt::error!("command line is not UTF-8");
                exit_failure()
            };
            if let Some(path) = arg.strip_prefix("out=") {
                self.stream = Some(open_stream(path));
            } else if let Some(text) = arg.strip_prefix("walk=") {
                #[cfg(not(feature = "walk"))]
                {
                    defmt::error!(
                        "'walk={=str}': this firmware was built without the walk mode (build it \
                         with --features walk)",
                        text
                    );
                    exit_failure()
                }
                #[cfg(feature = "walk")]
                match parse_walk(text) {
                    Some(asked) => walk = Some(asked),
                    None => {
                        defmt::error!(
                            "bad walk '{=str}': expected walk=A..B:FRAMES[:CLASS[..CLASS]]",
                            text
                        );
                        exit_failure()
                    }
                }
            } else if let Some((start, end, class)) = parse_seeds(arg) {
                let count = seeds.iter().map(|r| u64::from(r.count)).sum::<u64>() + end - start;
                // `count <= MAX_SEEDS` keeps each run's length in a u16 and start in a u32.
                let run = SeedRun {
                    start: start as u32,
                    count: (end - start) as u16,
                    class,
                };
                if count > MAX_SEEDS as u64 || seeds.push(run).is_err() {
                    defmt::error!("more than {=usize} seeds", MAX_SEEDS);
                    exit_failure()
                }
            } else {
                defmt::error!(
                    "bad argument '{=str}': expected out=PATH, SEED[:CLASS] or START..END[:CLASS]",
                    arg
                );
                exit_failure()
            }
        }
        #[cfg(feature = "walk")]
        if let Some(walk) = walk {
            return Plan::Walk(walk);
        }
        if seeds.is_empty() {
            seeds.extend([default_seeds()]);
        }
        Plan::Seeds(seeds)
    }

    /// Times a loop of known instruction count, so the host can turn ticks into instructions.
    fn calibrate(&mut self) {
        let ((), ticks) = self.measure(|| busy_loop(CALIBRATION_LOOPS));
        let stats = [
            (StatKey::CalibrationInstructions, 2 * CALIBRATION_LOOPS),
            (StatKey::CalibrationTicks, ticks),
        ];
        for (key, value) in stats {
            if self.emit_stat(key, value).is_err() {
                defmt::error!("cannot write the image stream");
                exit_failure()
            }
        }
    }

    /// Reports the peak stack use and leaves QEMU with the run's status.
    pub fn finish(mut self, outcome: Result<(), AppError>) -> ! {
        let peak = stack_peak(self.paint_bottom);
        defmt::info!("peak stack: {=u32} bytes", peak);
        let reported = self.emit_stat(StatKey::StackPeakBytes, peak);
        drop(self.stream.take());
        match (outcome, reported) {
            (Ok(()), Ok(())) => {
                defmt::info!("done");
                semihosting::process::exit(0)
            }
            (Err(err), _) => {
                defmt::error!("run failed: {}", err);
                exit_failure()
            }
            (Ok(()), Err(_)) => {
                defmt::error!("cannot write the image stream");
                exit_failure()
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match self.stream.as_mut() {
            Some(stream) => stream.write_all(bytes).map_err(|_| SinkError),
            None => Ok(()),
        }
    }
}

/// The seed ranges of the command line (a few bytes each, rather than a list of every seed),
/// each with the class asked for, if any.
pub type SeedRanges = Vec<SeedRun, 32>;

/// Consecutive seeds of the command line, and the class asked for them. Compact (12 bytes):
/// the list lives on the stack, whose peak the RAM budget counts.
#[derive(Clone, Copy, Debug)]
pub struct SeedRun {
    /// The first seed.
    pub start: u32,
    /// How many (at most `MAX_SEEDS` in all runs, so `start + count` stays within 2^32).
    pub count: u16,
    /// The class of a conditional model, if one is asked for.
    pub class: Option<u16>,
}

impl SeedRun {
    /// The `(seed, class)` pairs of the run.
    pub fn requests(self) -> impl Iterator<Item = (u32, Option<u16>)> {
        (0..u32::from(self.count)).map(move |i| (self.start.wrapping_add(i), self.class))
    }
}

impl Board for Mps2 {
    // SysTick is 24 bits wide: at most 2^24 ticks per measurement.
    const TIMER_BITS: u32 = SysTickCycles::BITS;

    #[inline(always)]
    fn now(&mut self) -> u32 {
        self.ticks.cycles()
    }

    fn emit_layer(&mut self, layer: u8, ticks: u32) -> Result<(), SinkError> {
        self.write(&layer_record(layer, ticks))
    }

    fn emit_image(
        &mut self,
        request: ImageRequest,
        ticks: u32,
        pixels: &[u8],
    ) -> Result<(), SinkError> {
        if let Some(class) = request.class {
            self.write(&class_record(class))?;
        }
        let header = image_record_header(request.seed, ticks, pixels.len()).ok_or(SinkError)?;
        self.write(&header)?;
        self.write(pixels)
    }

    fn emit_stat(&mut self, key: StatKey, value: u32) -> Result<(), SinkError> {
        self.write(&stat_record(key, value))
    }
}

/// `SEED` or `START..END` (end exclusive, up to 2^32) as a half-open range, and the class of
/// an optional `:CLASS` suffix (below 2^16).
fn parse_seeds(arg: &str) -> Option<(u64, u64, Option<u16>)> {
    // Byte-level parsing: `str::parse` and `split_once` would pull kilobytes of formatting
    // and searching code into a firmware whose runtime code is a budget.
    let bytes = arg.as_bytes();
    let (bytes, class) = match bytes.iter().position(|&b| b == b':') {
        Some(at) => {
            let class = parse_decimal(&bytes[at + 1..]).filter(|&c| c <= u64::from(u16::MAX))?;
            (&bytes[..at], Some(class as u16))
        }
        None => (bytes, None),
    };
    let (start, end) = parse_range(bytes)?;
    Some((start, end, class))
}

#[cfg(feature = "walk")]
/// `A..B:FRAMES[:CLASS[..CLASS]]`: a walk from seed A to seed B (both 32-bit) in FRAMES
/// frames (1 to 65,535), optionally in one class or from one class to another.
fn parse_walk(arg: &str) -> Option<Walk> {
    let mut parts = arg.as_bytes().split(|&b| b == b':');
    let seeds = parts.next()?;
    let frames =
        parse_decimal(parts.next()?).filter(|&f| (1..=u64::from(u16::MAX)).contains(&f))?;
    let (from_class, to_class) = match parts.next() {
        None => (None, None),
        Some(classes) => {
            let (a, b) = parse_pair(classes)?;
            let (a, b) = (u16::try_from(a).ok()?, u16::try_from(b).ok()?);
            (Some(a), Some(b))
        }
    };
    if parts.next().is_some() {
        return None;
    }
    let (from, to) = parse_pair(seeds)?;
    Some(Walk {
        from: ImageRequest {
            seed: u32::try_from(from).ok()?,
            class: from_class,
        },
        to: ImageRequest {
            seed: u32::try_from(to).ok()?,
            class: to_class,
        },
        frames: frames as u32,
    })
}

#[cfg(feature = "walk")]
/// `A..B` (or `A`, meaning `A..A`) as its two numbers, in any order.
fn parse_pair(bytes: &[u8]) -> Option<(u64, u64)> {
    match bytes.windows(2).position(|pair| pair == b"..") {
        Some(at) => Some((
            parse_decimal(&bytes[..at])?,
            parse_decimal(&bytes[at + 2..])?,
        )),
        None => parse_decimal(bytes).map(|v| (v, v)),
    }
}

/// `SEED` or `START..END` as a half-open range.
fn parse_range(bytes: &[u8]) -> Option<(u64, u64)> {
    match bytes.windows(2).position(|pair| pair == b"..") {
        Some(at) => {
            let start = parse_decimal(&bytes[..at]).filter(|&s| s <= u64::from(u32::MAX))?;
            let end = parse_decimal(&bytes[at + 2..])?;
            (start <= end && end <= 1 << 32).then_some((start, end))
        }
        None => {
            let seed = parse_decimal(bytes).filter(|&s| s <= u64::from(u32::MAX))?;
            Some((seed, seed + 1))
        }
    }
}

/// A non-empty run of decimal digits below 10^19.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        digit
            .is_ascii_digit()
            .then(|| value * 10 + u64::from(digit - b'0'))
    })
}

fn open_stream(path: &str) -> File {
    let mut buffer: Vec<u8, 512> = Vec::new();
    let terminated = buffer.extend_from_slice(path.as_bytes()).is_ok() && buffer.push(0).is_ok();
    let Some(c_path) = terminated
        .then(|| CStr::from_bytes_with_nul(&buffer).ok())
        .flatten()
    else {
        defmt::error!("bad output path '{=str}'", path);
        exit_failure()
    };
    match File::create(c_path) {
        Ok(file) => file,
        Err(_) => {
            defmt::error!("cannot create '{=str}' on the host", path);
            exit_failure()
        }
    }
}

/// Exactly `2 * loops` instructions: `subs` and `bne` per iteration.
#[inline(never)]
fn busy_loop(loops: u32) {
    // SAFETY: a register-only loop; touches no memory.
    unsafe {
        core::arch::asm!(
            "1:",
            "subs {n}, {n}, #1",
            "bne 1b",
            n = inout(reg) loops => _,
            options(nomem, nostack),
        );
    }
}

/// Fills the stack below the caller's frame with a pattern; returns the lowest painted address.
#[inline(never)]
fn paint_stack() -> usize {
    let sp = cortex_m::register::msp::read() as usize;
    let top = (sp - 64) & !3;
    let bottom = top
        .saturating_sub(PAINTED_STACK)
        .max(crate::machine::RAM_START);
    let mut at = bottom;
    while at < top {
        // SAFETY: [bottom, top) lies below the live stack, in RAM that nothing else uses yet.
        unsafe { write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
    bottom
}

/// Bytes between the top of the stack and the deepest word that lost its paint.
fn stack_peak(paint_bottom: usize) -> u32 {
    // Only the address is taken: cortex-m-rt defines `_stack_start` as the top of the stack.
    let stack_top = addr_of!(_stack_start) as usize;
    let mut at = paint_bottom;
    // SAFETY: the scan stays inside the painted window, which is RAM.
    while at < stack_top && unsafe { read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    (stack_top - at) as u32
}

/// Ends the QEMU run with a failure status.
pub fn exit_failure() -> ! {
    semihosting::process::exit(1)
}
