//! mcugan on the Nucleo-F429ZI: runs the core at 180 MHz from the ST-LINK's 8 MHz clock,
//! validates the int8 model in flash, then draws a digit at boot and another each time the
//! blue user button is pressed (or every 5 seconds), logging it as text art with its cycle
//! count over defmt/RTT — and on an SSD1306 OLED with the `display` feature.
//!
//! Everything but the clocks and pins lives in `mcugan-firmware-app`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use mcugan_firmware_app::board::{halt, serve, Advance, CycleCountedBoard, DwtCycles};
use panic_probe as _;
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;

// `MODEL`: the blob named by MCUGAN_MODEL at build time (see build.rs), in `.model`.
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// A new seed at least this often without a button press.
const AUTO_NEXT_MS: u32 = 5_000;

#[entry]
fn main() -> ! {
    let (Some(mut core), Some(device)) = (cortex_m::Peripherals::take(), pac::Peripherals::take())
    else {
        defmt::error!("peripherals already taken");
        halt()
    };
    // The ST-LINK feeds an 8 MHz clock to the HSE input (bypass mode).
    let mut rcc = device.RCC.freeze(
        Config::hse(8.MHz())
            .bypass_hse_oscillator()
            .sysclk(180.MHz()),
    );
    let core_hz = rcc.clocks.sysclk().raw();
    // The blue user button B1 drives PC13 high when pressed.
    let gpioc = device.GPIOC.split(&mut rcc);
    let button = gpioc.pc13.into_pull_down_input();

    #[cfg(feature = "display")]
    let screen = {
        let gpiob = device.GPIOB.split(&mut rcc);
        let scl = gpiob.pb8.internal_pull_up(true);
        let sda = gpiob.pb9.internal_pull_up(true);
        let i2c = device.I2C1.i2c((scl, sda), 400.kHz(), &mut rcc);
        mcugan_firmware_app::display::Oled::new(i2c)
    };
    #[cfg(not(feature = "display"))]
    let screen = ();

    let mut board = CycleCountedBoard::new(
        DwtCycles::start(&mut core.DCB, &mut core.DWT),
        core_hz,
        screen,
    );
    defmt::info!(
        "Nucleo-F429ZI at {=u32} MHz: press the user button for a new digit",
        core_hz / 1_000_000
    );
    serve::<_, _, ARENA_LEN, SCRATCH_LEN, IMAGE_PIXELS>(&MODEL.0, &mut board, |board| {
        // Wait for a press (or the timeout), then for the release: a press asks a
        // conditional model for the next class, the timeout for a new seed.
        if board.wait_until(AUTO_NEXT_MS, || button.is_high()) {
            board.wait_until(AUTO_NEXT_MS, || button.is_low());
            Advance::Class
        } else {
            Advance::Seed
        }
    })
}
