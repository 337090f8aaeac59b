//! Embeds the model blob named by `MCUGAN_MODEL` (default: the shipped int4 digits model,
//! 792 KB, which fits the nRF52840's 1 MB flash). The memory layout (1024K flash, 256K RAM,
//! no SoftDevice) is nrf52840-hal's `memory.x`.

fn main() {
    mcugan_firmware_build::embed_model_in("../../../models/mnist-digits/generator-int4.mcg", None);
}
