//! Puts `memory.x` on the linker's path and embeds the model blob named by `MCUGAN_MODEL`
//! (default: the shipped int8 digits model, 1.5 MB, which fits the Pico's 2 MB flash).

fn main() {
    mcugan_firmware_build::link_memory_x("memory.x");
    mcugan_firmware_build::embed_model("../../../models/mnist-digits/generator-int8.mcg");
}
