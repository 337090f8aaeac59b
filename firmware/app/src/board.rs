//! What every real board shares: a cycle counter as the timer (the DWT's, or SysTick's on the
//! Armv6-M cores that have no DWT counter), images shown as defmt log art (and on a screen, if
//! the board has one), and the serve loop — validate the model once, then draw a new seed
//! whenever the board says so (a button press or a timer).

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
#[cfg(mcugan_dwt_cycles)]
use cortex_m::peripheral::{DCB, DWT};
use mcugan_shared::stream::StatKey;
use mcugan_shared::ImageRequest;

use crate::{draw, log_art, request_for, validate, Board, SinkError};

/// Somewhere to show an image besides the log.
pub trait Screen {
    /// Shows `pixels` (row-major, `width` per row, 0 = black).
    fn show(&mut self, pixels: &[u8], width: usize);
}

/// No screen: the log art is all there is.
impl Screen for () {
    fn show(&mut self, _pixels: &[u8], _width: usize) {}
}

/// A free-running counter of core clock cycles, counting up.
pub trait CycleCounter {
    /// Its width: it wraps at `2^BITS`.
    const BITS: u32;
    /// Its current value.
    fn cycles(&mut self) -> u32;
}

/// The DWT cycle counter (32 bits; every Cortex-M but the Armv6-M M0/M0+).
#[cfg(mcugan_dwt_cycles)]
pub struct DwtCycles(());

#[cfg(mcugan_dwt_cycles)]
impl DwtCycles {
    /// Starts the counter (which needs trace enabled in the DCB).
    pub fn start(dcb: &mut DCB, dwt: &mut DWT) -> Self {
        dcb.enable_trace();
        DWT::unlock();
        dwt.enable_cycle_counter();
        Self(())
    }
}

#[cfg(mcugan_dwt_cycles)]
impl CycleCounter for DwtCycles {
    const BITS: u32 = 32;
    #[inline(always)]
    fn cycles(&mut self) -> u32 {
        DWT::cycle_count()
    }
}

/// SysTick clocked by the core (24 bits, counting down; read here counting up): the cycle
/// counter of cores without a DWT one, such as the RP2040's Cortex-M0+.
pub struct SysTickCycles(SYST);

impl SysTickCycles {
    /// Starts SysTick free-running over its whole 24-bit range, from the core clock.
    pub fn start(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(0x00FF_FFFF);
        syst.clear_current();
        syst.enable_counter();
        Self(syst)
    }
}

impl CycleCounter for SysTickCycles {
    const BITS: u32 = 24;
    #[inline(always)]
    fn cycles(&mut self) -> u32 {
        0x00FF_FFFF - SYST::get_current()
    }
}

/// A board timed by a cycle counter, showing images as log art and on `screen`.
pub struct CycleCountedBoard<S: Screen, C: CycleCounter> {
    counter: C,
    core_hz: u32,
    image_width: usize,
    screen: S,
}

impl<S: Screen, C: CycleCounter> CycleCountedBoard<S, C> {
    /// A board whose core runs at `core_hz`, timed by `counter`.
    pub fn new(counter: C, core_hz: u32, screen: S) -> Self {
        Self {
            counter,
            core_hz,
            image_width: 28,
            screen,
        }
    }

    /// Cycles from `start` to `end`, across one wrap of the counter.
    fn cycles_between(start: u32, end: u32) -> u32 {
        let mask = if C::BITS >= 32 {
            u32::MAX
        } else {
            (1 << C::BITS) - 1
        };
        end.wrapping_sub(start) & mask
    }

    /// Microseconds in `cycles` (32-bit arithmetic: no 64-bit division in the firmware).
    pub fn micros(&self, cycles: u32) -> u32 {
        cycles / (self.core_hz / 1_000_000).max(1)
    }

    /// Busy-waits until `done()` or `timeout_ms` milliseconds (at most about 20 s at 180 MHz)
    /// have passed; returns whether `done()` ended the wait.
    pub fn wait_until(&mut self, timeout_ms: u32, mut done: impl FnMut() -> bool) -> bool {
        let limit = timeout_ms.saturating_mul(self.core_hz / 1000);
        let mut waited = 0u32;
        let mut last = self.counter.cycles();
        while waited < limit {
            if done() {
                return true;
            }
            let now = self.counter.cycles();
            waited = waited.saturating_add(Self::cycles_between(last, now));
            last = now;
        }
        false
    }
}

impl<S: Screen, C: CycleCounter> Board for CycleCountedBoard<S, C> {
    const TIMER_BITS: u32 = C::BITS;

    #[inline(always)]
    fn now(&mut self) -> u32 {
        self.counter.cycles()
    }

    fn emit_image(
        &mut self,
        request: ImageRequest,
        ticks: u32,
        pixels: &[u8],
    ) -> Result<(), SinkError> {
        log_art(pixels, self.image_width);
        if let Some(class) = request.class {
            defmt::println!("class {=u16}", class);
        }
        let micros = self.micros(ticks);
        defmt::println!(
            "seed {=u32}: {=u32} cycles = {=u32}.{=u32:03} ms at {=u32} MHz",
            request.seed,
            ticks,
            micros / 1000,
            micros % 1000,
            self.core_hz / 1_000_000
        );
        self.screen.show(pixels, self.image_width);
        Ok(())
    }

    fn emit_stat(&mut self, _key: StatKey, _value: u32) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Stops here for good, after the error was logged: no reset loop, no drawing.
pub fn halt() -> ! {
    defmt::error!("halted");
    loop {
        cortex_m::asm::wfi();
    }
}

/// What the next image of [`serve`] changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum Advance {
    /// The button was pressed: a conditional model's next class (0, 1, …, 9, 0, …) with the
    /// same latent vector; an unconditional model's next seed.
    Class,
    /// The timer ran out: the next seed (a new latent vector), in the same class.
    Seed,
}

/// Validates `blob` (halting with the error logged if it is invalid), then draws seed 0, 1,
/// 2, … — a new image each time `next()` returns (a button press or a timeout, see
/// [`Advance`]). A conditional model starts at class 0 and cycles through its classes on
/// presses. With the `display` feature, a new seed arrives on the screen as a latent walk
/// from the previous one ([`WALK_FRAMES`] frames). `A`, `R` and `P` size the RAM buffers, as
/// for [`crate::run`].
pub fn serve<S: Screen, C: CycleCounter, const A: usize, const R: usize, const P: usize>(
    blob: &[u8],
    board: &mut CycleCountedBoard<S, C>,
    mut next: impl FnMut(&mut CycleCountedBoard<S, C>) -> Advance,
) -> ! {
    let model = match validate(blob, board) {
        Ok(model) => model,
        Err(_) => halt(),
    };
    board.image_width = usize::from(model.image().width).max(1);
    let mut buffer = [0u8; P];
    let pixels = &mut buffer[..model.pixel_count().min(P)];
    let classes = model.classes().map_or(0, |c| c as u32);
    let (mut seed, mut class) = (0u32, 0u32);
    loop {
        let asked = (classes > 0).then_some(class as u16);
        if let Err(err) = draw::<A, R>(&model, request_for(&model, seed, asked), pixels, board) {
            defmt::error!("drawing failed: {}", err);
            halt();
        }
        match (next(board), classes) {
            (Advance::Class, 1..) => class = (class + 1) % classes,
            _ => {
                #[cfg(feature = "display")]
                animate_walk::<S, C, A, R>(&model, seed, asked, pixels, board);
                seed = seed.wrapping_add(1);
            }
        }
    }
}

/// Frames a screen shows on the way from one seed's image to the next (`display` feature).
#[cfg(feature = "display")]
pub const WALK_FRAMES: u32 = 8;

/// Shows the latent walk from `seed`'s image to the next seed's on the screen (the frames
/// between the two; the next image itself is drawn as usual): one digit morphs into the next.
#[cfg(feature = "display")]
fn animate_walk<S: Screen, C: CycleCounter, const A: usize, const R: usize>(
    model: &mcugan_shared::Model<'_>,
    seed: u32,
    class: Option<u16>,
    pixels: &mut [u8],
    board: &mut CycleCountedBoard<S, C>,
) {
    let walk = mcugan_shared::Walk {
        from: request_for(model, seed, class),
        to: request_for(model, seed.wrapping_add(1), class),
        frames: WALK_FRAMES,
    };
    for frame in 1..WALK_FRAMES - 1 {
        let drawn =
            mcugan_shared::generate_walk_frame_in::<A, R>(model, &walk, frame, pixels, &mut ());
        match drawn {
            Ok(()) => board.screen.show(pixels, board.image_width),
            Err(err) => {
                defmt::warn!("walk frame {=u32}: {}", frame, err);
                return;
            }
        }
    }
}
