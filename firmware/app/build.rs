//! Sets `mcugan_dwt_cycles` on cores whose DWT has a cycle counter (every Cortex-M but the
//! Armv6-M M0/M0+/M1): the real boards' timer. Stable Rust has no cfg for the architecture
//! version, so the target's name decides, once, here.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mcugan_dwt_cycles)");
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.starts_with("thumbv6m") {
        println!("cargo:rustc-cfg=mcugan_dwt_cycles");
    }
}
