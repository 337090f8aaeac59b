//! mcugan on the Raspberry Pi Pico: validates the int8 model in flash, then draws a digit at
//! boot and a new one every 5 seconds, logging it as text art with its cycle count over
//! defmt/RTT — and on an SSD1306 OLED with the `display` feature. The RP2040's Cortex-M0+ has
//! no DWT cycle counter, so SysTick times the work.
//!
//! Everything but the clocks and pins lives in `mcugan-firmware-app`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt_rtt as _;
use mcugan_firmware_app::board::{halt, serve, Advance, CycleCountedBoard, SysTickCycles};
use panic_probe as _;
use rp2040_hal::{self as hal, pac, Clock};

/// The second-stage bootloader for the Pico's W25Q080 flash, in the first 256 bytes.
#[link_section = ".boot2"]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

// `MODEL`: the blob named by MCUGAN_MODEL at build time (see build.rs).
include!(concat!(env!("OUT_DIR"), "/model.rs"));

/// The Pico's crystal.
const XTAL_HZ: u32 = 12_000_000;
/// A new seed this often.
const NEXT_MS: u32 = 5_000;

#[entry]
fn main() -> ! {
    let (Some(mut device), Some(core)) = (pac::Peripherals::take(), pac::CorePeripherals::take())
    else {
        defmt::error!("peripherals already taken");
        halt()
    };
    let mut watchdog = hal::Watchdog::new(device.WATCHDOG);
    // 125 MHz from the crystal through the system PLL.
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_HZ,
        device.XOSC,
        device.CLOCKS,
        device.PLL_SYS,
        device.PLL_USB,
        &mut device.RESETS,
        &mut watchdog,
    ) else {
        defmt::error!("the clocks did not start");
        halt()
    };
    let core_hz = clocks.system_clock.freq().to_Hz();

    #[cfg(feature = "display")]
    let screen = {
        use hal::fugit::RateExtU32;
        use hal::gpio::{FunctionI2C, Pin, PullUp};
        let sio = hal::Sio::new(device.SIO);
        let pins = hal::gpio::Pins::new(
            device.IO_BANK0,
            device.PADS_BANK0,
            sio.gpio_bank0,
            &mut device.RESETS,
        );
        let sda: Pin<_, FunctionI2C, PullUp> = pins.gpio4.reconfigure();
        let scl: Pin<_, FunctionI2C, PullUp> = pins.gpio5.reconfigure();
        let i2c = hal::I2C::i2c0(
            device.I2C0,
            sda,
            scl,
            400.kHz(),
            &mut device.RESETS,
            &clocks.system_clock,
        );
        mcugan_firmware_app::display::Oled::new(i2c)
    };
    #[cfg(not(feature = "display"))]
    let screen = ();

    let mut board = CycleCountedBoard::new(SysTickCycles::start(core.SYST), core_hz, screen);
    defmt::info!("Raspberry Pi Pico: a new digit every 5 seconds");
    serve::<_, _, ARENA_LEN, SCRATCH_LEN, IMAGE_PIXELS>(&MODEL.0, &mut board, |board| {
        board.wait_until(NEXT_MS, || false);
        Advance::Seed
    })
}
