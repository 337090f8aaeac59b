//! Puts `memory.x` on the linker's path and embeds the model blob named by `MCUGAN_MODEL`
//! (default: the shipped int8 digits model).

fn main() {
    mcugan_firmware_build::link_memory_x("memory.x");
    mcugan_firmware_build::empty_device_x();
    mcugan_firmware_build::embed_model("../../../models/mnist-digits/generator-int8.mcg");
}
