//! mcugan on the nRF52840-DK: validates the int4 model in flash, then draws a digit at boot and
//! another each time button 1 is pressed (or every 5 seconds), logging it as text art with its
//! cycle count over defmt/RTT — and on an SSD1306 OLED with the `display` feature.
//!
//! Everything but the pins lives in `mcugan-firmware-app`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_hal::digital::InputPin;
use mcugan_firmware_app::board::{halt, serve, Advance, CycleCountedBoard, DwtCycles};
use nrf52840_hal::{gpio, pac};
use panic_probe as _;

// `MODEL`: the blob named by MCUGAN_MODEL at build time (see build.rs).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// The core clock: the nRF52840 always runs its Cortex-M4F at 64 MHz.
const CORE_HZ: u32 = 64_000_000;
/// A new seed at least this often without a button press.
const AUTO_NEXT_MS: u32 = 5_000;

#[entry]
fn main() -> ! {
    let (Some(mut core), Some(device)) = (cortex_m::Peripherals::take(), pac::Peripherals::take())
    else {
        defmt::error!("peripherals already taken");
        halt()
    };
    let port0 = gpio::p0::Parts::new(device.P0);
    // Button 1 pulls P0.11 low.
    let mut button = port0.p0_11.into_pullup_input();

    #[cfg(feature = "display")]
    let screen = {
        use nrf52840_hal::twim::{self, Twim};
        let pins = twim::Pins {
            scl: port0.p0_27.into_floating_input().degrade(),
            sda: port0.p0_26.into_floating_input().degrade(),
        };
        let i2c = Twim::new(device.TWIM0, pins, twim::Frequency::K400);
        mcugan_firmware_app::display::Oled::new(i2c)
    };
    #[cfg(not(feature = "display"))]
    let screen = ();

    let mut board = CycleCountedBoard::new(
        DwtCycles::start(&mut core.DCB, &mut core.DWT),
        CORE_HZ,
        screen,
    );
    defmt::info!("nRF52840-DK: press button 1 for a new digit");
    serve::<_, _, ARENA_LEN, SCRATCH_LEN, IMAGE_PIXELS>(&MODEL.0, &mut board, |board| {
        // Wait for a press (or the timeout), then for the release: a press asks a
        // conditional model for the next class, the timeout for a new seed.
        if board.wait_until(AUTO_NEXT_MS, || button.is_low().unwrap_or(false)) {
            board.wait_until(AUTO_NEXT_MS, || button.is_high().unwrap_or(true));
            Advance::Class
        } else {
            Advance::Seed
        }
    })
}
