//! mcugan firmware: validates the model blob in flash, draws an image for each seed with the
//! shared integer kernels, and reports what it drew and measured.
//!
//! The board-agnostic part is `mcugan-firmware-app`; [`board`] holds what is specific to the
//! QEMU machines (the MPS2 AN386, Cortex-M4F, by default; `MCUGAN_QEMU_MACHINE` picks another
//! at build time): semihosting for the image stream and the seed list, SysTick for timing,
//! stack painting for the peak stack.
#![no_std]
#![no_main]

mod board;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use defmt_semihosting as _;

/// The device interrupt vectors. The firmware enables no MPS2 interrupt, so the table holds a
/// single reserved entry instead of the 240 that cortex-m-rt would otherwise reserve (960 bytes
/// of flash); `device.x` (empty, from build.rs) names no handler.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
pub static __INTERRUPTS: [usize; 1] = [0];

// `RAM_START`, `RAM_END`, `MACHINE_NAME`: the machine the build script was asked for.
#[allow(dead_code)]
mod machine {
    include!(concat!(env!("OUT_DIR"), "/machine.rs"));
}

/// The machine's name in a section the host's runner reads (not loaded: no flash, no RAM), so
/// that `mcugan qemu FIRMWARE.elf` starts the right machine.
#[link_section = ".mcugan_machine"]
#[used]
static MACHINE: [u8; machine::MACHINE_NAME.len()] = {
    let mut bytes = [0u8; machine::MACHINE_NAME.len()];
    let mut i = 0;
    while i < bytes.len() {
        bytes[i] = machine::MACHINE_NAME[i];
        i += 1;
    }
    bytes
};

// `MODEL`: the blob named by MCUGAN_MODEL at build time (see build.rs), in the `.model` section;
// `ARENA_LEN`, `SCRATCH_LEN`, `IMAGE_PIXELS`: the RAM buffers it needs.
include!(concat!(env!("OUT_DIR"), "/model.rs"));

#[entry]
fn main() -> ! {
    let (mut board, plan) = board::Mps2::take();
    let outcome = match plan {
        #[cfg(feature = "walk")]
        board::Plan::Walk(walk) => {
            mcugan_firmware_app::run_walk::<ARENA_LEN, SCRATCH_LEN, IMAGE_PIXELS>(
                &MODEL.0, walk, &mut board,
            )
        }
        board::Plan::Seeds(seeds) => {
            mcugan_firmware_app::run::<ARENA_LEN, SCRATCH_LEN, IMAGE_PIXELS>(
                &MODEL.0,
                seeds.iter().flat_map(|run| run.requests()),
                &mut board,
            )
        }
    };
    board.finish(outcome)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    board::exit_failure()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    match info.location() {
        Some(at) => defmt::error!("panic at {=str}:{=u32}", at.file(), at.line()),
        None => defmt::error!("panic"),
    }
    board::exit_failure()
}
