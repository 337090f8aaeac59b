//! An SSD1306 128x64 OLED over embedded-hal 1.0 I2C as a [`Screen`]: the image at twice its
//! size, gray levels as a 4x4 ordered dither.

use embedded_hal::i2c::I2c;
use ssd1306::mode::BufferedGraphicsMode;
use ssd1306::prelude::*;
use ssd1306::{I2CDisplayInterface, Ssd1306};

use crate::board::Screen;

/// Bayer 4x4 thresholds, scaled to 0..255.
const BAYER: [[u8; 4]; 4] = [
    [8, 136, 40, 168],
    [200, 72, 232, 104],
    [56, 184, 24, 152],
    [248, 120, 216, 88],
];

/// The display.
pub struct Oled<I: I2c> {
    display: Ssd1306<I2CInterface<I>, DisplaySize128x64, BufferedGraphicsMode<DisplaySize128x64>>,
}

impl<I: I2c> Oled<I> {
    /// Initialises the display at I2C address 0x3C; `None` (logged) if it does not answer.
    pub fn new(i2c: I) -> Option<Self> {
        let interface = I2CDisplayInterface::new(i2c);
        let mut display = Ssd1306::new(interface, DisplaySize128x64, DisplayRotation::Rotate0)
            .into_buffered_graphics_mode();
        if display.init().is_err() {
            defmt::warn!("no SSD1306 display answers at 0x3C; logging images only");
            return None;
        }
        Some(Self { display })
    }
}

impl<I: I2c> Screen for Oled<I> {
    fn show(&mut self, pixels: &[u8], width: usize) {
        self.display.clear_buffer();
        let scale = 2;
        let height = pixels.len() / width.max(1);
        let left = (128usize.saturating_sub(width * scale)) / 2;
        let top = (64usize.saturating_sub(height * scale)) / 2;
        for (i, &p) in pixels.iter().enumerate() {
            let (x, y) = (i % width, i / width);
            for dy in 0..scale {
                for dx in 0..scale {
                    let (px, py) = (left + x * scale + dx, top + y * scale + dy);
                    let on = p > BAYER[py % 4][px % 4];
                    self.display.set_pixel(px as u32, py as u32, on);
                }
            }
        }
        if self.display.flush().is_err() {
            defmt::warn!("display write failed");
        }
    }
}

/// No display found: show nothing.
impl<I: I2c> Screen for Option<Oled<I>> {
    fn show(&mut self, pixels: &[u8], width: usize) {
        if let Some(oled) = self {
            oled.show(pixels, width);
        }
    }
}
