//! Writes the memory layout of the QEMU machine named by `MCUGAN_QEMU_MACHINE` (default: the
//! MPS2 AN386) and embeds the model blob named by `MCUGAN_MODEL` (default: the shipped int8
//! digits model).

fn main() {
    mcugan_firmware_build::link_qemu_machine();
    mcugan_firmware_build::empty_device_x();
    mcugan_firmware_build::embed_model("../../../models/mnist-digits/generator-int8.mcg");
}
