//! The emulated machines the QEMU firmware runs on: one table, read by the QEMU board's build
//! script (its memory layout) and by the host (how to build for a machine and how to run it).
//!
//! The memory maps are QEMU 7.2's, read from `info mtree` of each machine and checked by
//! running the firmware there; a machine with a real part's map (the STM32F405 of the Netduino
//! Plus 2, the nRF51822 of the micro:bit) uses that part's flash and RAM sizes.

/// A memory region: start address and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First address.
    pub origin: u32,
    /// Bytes.
    pub length: u32,
}

/// One QEMU machine and the core it emulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QemuMachine {
    /// QEMU's `-machine` name.
    pub name: &'static str,
    /// QEMU's `-cpu` name.
    pub cpu: &'static str,
    /// The core, as people call it.
    pub core: &'static str,
    /// The Rust target the firmware builds for.
    pub target: &'static str,
    /// rustc's `-C target-cpu` for it (turns on the core's extensions: DSP, MVE).
    pub target_cpu: &'static str,
    /// Where code, read-only data and the model live.
    pub flash: Region,
    /// Where the stack, statics and the activation arena live.
    pub ram: Region,
    /// Where the model blob lives when not in `flash` (a machine whose boot memory is small).
    pub model: Option<Region>,
    /// Whether the core has the DSP extension (`SMLAD`), which the DSP kernels need.
    pub dsp: bool,
    /// What the machine is, in a few words (the book's table).
    pub note: &'static str,
}

const MIB: u32 = 1024 * 1024;
const KIB: u32 = 1024;

/// Every machine the firmware runs on, the default first.
pub const MACHINES: &[QemuMachine] = &[
    QemuMachine {
        name: "mps2-an386",
        cpu: "cortex-m4",
        core: "Cortex-M4F",
        target: "thumbv7em-none-eabihf",
        target_cpu: "cortex-m4",
        flash: Region { origin: 0, length: 4 * MIB },
        ram: Region { origin: 0x2000_0000, length: 4 * MIB },
        model: None,
        dsp: true,
        note: "MPS2 AN386: 4 MB code SSRAM at 0, 4 MB data SSRAM at 0x2000_0000",
    },
    QemuMachine {
        name: "mps2-an385",
        cpu: "cortex-m3",
        core: "Cortex-M3",
        target: "thumbv7m-none-eabi",
        target_cpu: "cortex-m3",
        flash: Region { origin: 0, length: 4 * MIB },
        ram: Region { origin: 0x2000_0000, length: 4 * MIB },
        model: None,
        dsp: false,
        note: "MPS2 AN385: the AN386's map",
    },
    QemuMachine {
        name: "mps2-an500",
        cpu: "cortex-m7",
        core: "Cortex-M7",
        target: "thumbv7em-none-eabihf",
        target_cpu: "cortex-m7",
        flash: Region { origin: 0, length: 4 * MIB },
        ram: Region { origin: 0x2000_0000, length: 4 * MIB },
        model: None,
        dsp: true,
        note: "MPS2 AN500: the AN386's map",
    },
    QemuMachine {
        name: "mps2-an505",
        cpu: "cortex-m33",
        core: "Cortex-M33",
        target: "thumbv8m.main-none-eabihf",
        target_cpu: "cortex-m33",
        // The secure aliases (the core starts in the secure state): SSRAM1 at 0x1000_0000,
        // SSRAM2 and 3 (2 MB each, adjacent) at 0x3800_0000.
        flash: Region { origin: 0x1000_0000, length: 4 * MIB },
        ram: Region { origin: 0x3800_0000, length: 4 * MIB },
        model: None,
        dsp: true,
        note: "MPS2 AN505 (TrustZone, run secure): 4 MB SSRAM1 at 0x1000_0000, 4 MB SSRAM2+3 at 0x3800_0000",
    },
    QemuMachine {
        name: "mps3-an547",
        cpu: "cortex-m55",
        core: "Cortex-M55",
        target: "thumbv8m.main-none-eabihf",
        target_cpu: "cortex-m55",
        // The core boots from the 512 KB ITCM at 0, which holds the code; the model goes to
        // the 2 MB SRAM at 0x0100_0000 (the digits model is 1.5 MB); data in the 512 KB DTCM.
        flash: Region { origin: 0, length: 512 * KIB },
        ram: Region { origin: 0x2000_0000, length: 512 * KIB },
        model: Some(Region { origin: 0x0100_0000, length: 2 * MIB }),
        dsp: true,
        note: "MPS3 AN547 (SSE-300): code in the 512 KB ITCM at 0, the model in the 2 MB SRAM at 0x0100_0000, data in the 512 KB DTCM at 0x2000_0000",
    },
    QemuMachine {
        name: "netduinoplus2",
        cpu: "cortex-m4",
        core: "Cortex-M4F (STM32F405)",
        target: "thumbv7em-none-eabihf",
        target_cpu: "cortex-m4",
        // The STM32F405's 1 MB of flash and its 128 KB of contiguous SRAM (QEMU maps 192 KB;
        // the part has 112 + 16 KB there and 64 KB of core-coupled RAM elsewhere).
        flash: Region { origin: 0x0800_0000, length: MIB },
        ram: Region { origin: 0x2000_0000, length: 128 * KIB },
        model: None,
        dsp: true,
        note: "Netduino Plus 2: an STM32F405's 1 MB flash at 0x0800_0000 and 128 KB SRAM",
    },
    QemuMachine {
        name: "microbit",
        cpu: "cortex-m0",
        core: "Cortex-M0 (nRF51822)",
        target: "thumbv6m-none-eabi",
        target_cpu: "cortex-m0",
        flash: Region { origin: 0, length: 256 * KIB },
        ram: Region { origin: 0x2000_0000, length: 16 * KIB },
        model: None,
        dsp: false,
        note: "BBC micro:bit: an nRF51822's 256 KB flash and 16 KB RAM",
    },
];

/// The machine called `name`.
pub fn machine(name: &str) -> Option<&'static QemuMachine> {
    MACHINES.iter().find(|m| m.name == name)
}

/// The default machine: the MPS2 AN386 (Cortex-M4F).
pub fn default_machine() -> &'static QemuMachine {
    &MACHINES[0]
}

/// Room the runtime takes beside the model in the model's memory (about 30 KB; a margin).
pub const RUNTIME_ROOM: u64 = 64 * 1024;

impl QemuMachine {
    /// Whether a model blob of `blob_len` bytes fits the machine's model memory beside the
    /// runtime ([`RUNTIME_ROOM`]).
    pub fn holds_model(&self, blob_len: u64) -> bool {
        blob_len + RUNTIME_ROOM <= u64::from(self.model.unwrap_or(self.flash).length)
    }

    /// The linker's `MEMORY` and the model's section for this machine, as `memory.x`.
    pub fn memory_x(&self) -> String {
        let (model_region, model_memory) = match self.model {
            Some(m) => (
                "MODEL",
                format!(
                    "  MODEL : ORIGIN = {:#010x}, LENGTH = {}\n",
                    m.origin, m.length
                ),
            ),
            None => ("FLASH", String::new()),
        };
        format!(
            "/* {note} (generated from mcugan-firmware-build's machine table) */\n\
             MEMORY\n{{\n  FLASH : ORIGIN = {fo:#010x}, LENGTH = {fl}\n  RAM   : ORIGIN = {ro:#010x}, LENGTH = {rl}\n{model_memory}}}\n\n\
             /* The model blob in its own output section, so that flash reports tell it from the\n   runtime's .rodata. */\n\
             SECTIONS\n{{\n  .model : ALIGN(16)\n  {{\n    KEEP(*(.model .model.*));\n  }} > {model_region}\n}} INSERT AFTER .rodata;\n\n\
             /* The machine the firmware was built for, for the host's runner (not loaded). */\n\
             SECTIONS\n{{\n  .mcugan_machine (INFO) :\n  {{\n    KEEP(*(.mcugan_machine));\n  }}\n}}\n",
            note = self.note,
            fo = self.flash.origin,
            fl = self.flash.length,
            ro = self.ram.origin,
            rl = self.ram.length,
        )
    }
}
