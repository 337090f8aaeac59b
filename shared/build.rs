//! Decides, once, whether the crate uses the Cortex-M DSP assembly kernels: `mcugan_dsp_kernels`
//! is set when the `dsp` feature is on and the target's cores have the Armv7E-M DSP extension
//! (`SMLAD`, `SXTB16`): thumbv7em (Cortex-M4/M7) and thumbv8m.main (Cortex-M33/M35P/M55, where
//! the extension is present on the common parts). Stable Rust does not expose
//! `target_feature = "dsp"` as a cfg, so the target's name decides. The code tests this one
//! cfg, not the feature and the target each time.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mcugan_dsp_kernels)");
    println!("cargo::rustc-check-cfg=cfg(mcugan_armv8m)");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    let arm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "arm");
    let dsp_cores = target.starts_with("thumbv7em") || target.starts_with("thumbv8m.main");
    let dsp_feature = std::env::var_os("CARGO_FEATURE_DSP").is_some();
    if dsp_feature && arm && dsp_cores {
        println!("cargo:rustc-cfg=mcugan_dsp_kernels");
        if target.starts_with("thumbv8m.main") {
            // The assembly names the core so that the assembler takes the DSP instructions.
            println!("cargo:rustc-cfg=mcugan_armv8m");
        }
    }
}
