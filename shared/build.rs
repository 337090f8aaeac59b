//! Detects targets whose cores have the Armv7E-M DSP extension (`SMLAD`, `SXTB16`):
//! thumbv7em (Cortex-M4/M7) and thumbv8m.main (Cortex-M33/M35P/M55, where the extension is
//! present on the common parts). Stable Rust does not expose `target_feature = "dsp"` as a cfg,
//! so this sets `mcugan_dsp_target` instead; the `dsp` feature uses the assembly kernels only
//! there.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mcugan_dsp_target)");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main") {
        println!("cargo:rustc-cfg=mcugan_dsp_target");
    }
}
