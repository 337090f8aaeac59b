//! Builds the kernel trainer's kernels (`src/engine/kernels/kernels.h`): always for the CPU
//! emulator the tests run, and with the `cuda` feature as PTX for the GPU, with nvcc.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = PathBuf::from("src/engine/kernels");
    for file in ["kernels.h", "kernels.cu", "emulator.c"] {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    cc::Build::new()
        .file(dir.join("emulator.c"))
        .flag_if_supported("-ffp-contract=off")
        .flag_if_supported("-std=c11")
        .opt_level(2)
        .warnings(true)
        .compile("mcugan_kernel_emulator");

    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        build_ptx(&dir);
    }
}

/// Compiles `kernels.cu` to PTX in `OUT_DIR` with nvcc (`$NVCC`, `$CUDA_HOME/bin/nvcc` or the
/// one on `PATH`) for compute capability `$CUDA_COMPUTE_CAP` (default 75, which newer GPUs
/// also run).
fn build_ptx(dir: &std::path::Path) {
    for var in ["NVCC", "CUDA_HOME", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let nvcc = env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| env::var_os("CUDA_HOME").map(|home| PathBuf::from(home).join("bin/nvcc")))
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let cap = env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("kernels.ptx");
    let status = Command::new(&nvcc)
        .arg("--ptx")
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .arg("-O3")
        .arg("-o")
        .arg(&out)
        .arg(dir.join("kernels.cu"))
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{} failed ({status}) on kernels.cu", nvcc.display()),
        Err(err) => panic!(
            "the cuda feature needs nvcc to build its kernels; running {} failed: {err} \
             (set CUDA_HOME or NVCC, see docs/src/training/gpu.md)",
            nvcc.display()
        ),
    }
}
