//! The CUDA toolchain from PyPI wheels: `cargo xtask cuda-check` and `cargo xtask gpu-bundle`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::setup::*;
use crate::util::*;

/// nvcc and the CUDA headers (PyPI wheels, CUDA 13.0): enough to compile the `cuda` feature.
pub(crate) const NVCC_PACKAGES: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.*",
    "nvidia-cuda-crt==13.0.*",
    "nvidia-nvvm==13.0.*",
    "nvidia-cuda-runtime==13.0.*",
    "nvidia-cuda-cccl==13.0.*",
];

/// The CUDA libraries the `cuda` build links against (PyPI wheels, CUDA 13.0).
pub(crate) const CUDA_LIBRARY_PACKAGES: &[&str] = &[
    "nvidia-cublas==13.0.*",
    "nvidia-cuda-nvrtc==13.0.*",
    "nvidia-curand<10.5",
];

/// The CUDA toolkit from PyPI wheels in a virtual environment, for cargo builds of the `cuda`
/// feature on a machine without a GPU.
pub(crate) struct CudaToolchain {
    /// The wheels' `nvidia/cu13` folder: `bin/nvcc`, `include/`, `lib/`.
    home: PathBuf,
    /// A folder of link-time libraries, when the toolchain can link.
    link: Option<PathBuf>,
}

impl CudaToolchain {
    /// nvcc and headers only (in `.venv-nvcc`): `cargo check` and `cargo clippy`, no linking.
    fn compiler(root: &Path) -> Result<Self> {
        let python = python_venv(root, ".venv-nvcc", "nvcc (CUDA 13.0)", NVCC_PACKAGES)?;
        Ok(Self {
            home: cu13_home(&python)?,
            link: None,
        })
    }

    /// nvcc and the libraries (in `.venv-cuda`), with a stub of the driver library: builds
    /// binaries that run on a GPU machine.
    fn with_libraries(root: &Path) -> Result<Self> {
        let packages: Vec<&str> = NVCC_PACKAGES
            .iter()
            .chain(CUDA_LIBRARY_PACKAGES)
            .copied()
            .collect();
        let python = python_venv(
            root,
            ".venv-cuda",
            "nvcc and the CUDA 13.0 libraries",
            &packages,
        )?;
        let home = cu13_home(&python)?;
        // Link-time libraries: the real ones from the wheels, and a stub libcuda (the driver,
        // which only the GPU machine has) built from cudarc's list of driver functions.
        let link = root.join("target/cuda-link");
        std::fs::create_dir_all(&link)?;
        let lib = home.join("lib");
        for (name, file) in [
            ("libcublas.so", "libcublas.so.13"),
            ("libcublasLt.so", "libcublasLt.so.13"),
            ("libcudart.so", "libcudart.so.13"),
            ("libnvrtc.so", "libnvrtc.so.13"),
            ("libcurand.so", "libcurand.so.10"),
        ] {
            let target = link.join(name);
            let _ = std::fs::remove_file(&target);
            std::os::unix::fs::symlink(lib.join(file), &target)?;
        }
        let stub = link.join("libcuda-stub.c");
        let mut source = String::new();
        for symbol in CUDA_DRIVER_SYMBOLS.lines().filter(|l| !l.is_empty()) {
            source += &format!("void {symbol}(void) {{}}\n");
        }
        std::fs::write(&stub, source)?;
        run(Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
            .arg(link.join("libcuda.so"))
            .arg(&stub))?;
        Ok(Self {
            home,
            link: Some(link),
        })
    }

    /// `cargo ARGS` with this toolchain, for the H100 (sm_90), into `target/cuda`.
    fn cargo(&self, root: &Path, args: &[&str]) -> Command {
        let mut command = cargo(args);
        command
            .env("CUDA_HOME", &self.home)
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.home.join("bin").display(),
                    env::var("PATH").unwrap_or_default()
                ),
            )
            .env("CUDA_COMPUTE_CAP", "90")
            .env("CARGO_TARGET_DIR", root.join("target/cuda"));
        if let Some(link) = &self.link {
            command.env("LIBRARY_PATH", link);
        }
        command
    }
}

/// The `nvidia/cu13` folder of the virtual environment whose interpreter is `python`.
pub(crate) fn cu13_home(python: &Path) -> Result<PathBuf> {
    let output = Command::new(python)
        .args(["-c", "import site; print(site.getsitepackages()[0])"])
        .output()?;
    if !output.status.success() {
        bail!("{} could not name its site-packages", python.display());
    }
    let home = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()).join("nvidia/cu13");
    if !home.join("bin/nvcc").is_file() {
        bail!("no nvcc in {} (the nvidia-cuda-nvcc wheel)", home.display());
    }
    Ok(home)
}

/// The CUDA build, made here (no GPU needed) and packed with the data for a GPU machine.
pub(crate) fn gpu_bundle(root: &Path) -> Result<()> {
    let toolchain = CudaToolchain::with_libraries(root)?;
    let cuda_cargo = |args: &[&str]| toolchain.cargo(root, args);
    step("building mcugan with --features cuda (sm_90; the first build compiles candle's kernels)");
    run(cuda_cargo(&[
        "build",
        "--release",
        "-p",
        "mcugan",
        "--features",
        "cuda",
    ]))?;
    step("building the training crate's unit tests with --features cuda (the GPU checks of the kernel trainer)");
    let output = cuda_cargo(&[
        "test",
        "--release",
        "-p",
        "mcugan-train",
        "--features",
        "cuda",
        "--lib",
        "--no-run",
    ])
    .output()?;
    let log = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!("building the CUDA unit tests failed:\n{log}");
    }
    let tests = log
        .lines()
        .find_map(|line| {
            let rest = line.split_once("Executable unittests src/lib.rs (")?.1;
            rest.strip_suffix(')')
        })
        .context("cargo did not name the unit-test executable")?;
    let tests = root.join(tests);
    let bundle = root.join("target-gpu");
    std::fs::create_dir_all(&bundle)?;
    step("packing target-gpu/ (binary xz-compressed, IDX files gzip-compressed)");
    let binary = bundle.join("mcugan");
    std::fs::copy(root.join("target/cuda/release/mcugan"), &binary)?;
    run(Command::new("strip").arg(&binary))?;
    run(Command::new("xz").args(["-f", "-6"]).arg(&binary))?;
    let test_binary = bundle.join("mcugan-tests");
    std::fs::copy(&tests, &test_binary)?;
    run(Command::new("strip").arg(&test_binary))?;
    run(Command::new("xz").args(["-f", "-6"]).arg(&test_binary))?;
    for (name, dir) in [
        ("mnist-digits", root.join("data/mnist-digits")),
        ("fashion-mnist", PathBuf::from(FASHION_MNIST_DIR)),
    ] {
        let target = bundle.join(name);
        std::fs::create_dir_all(&target)?;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let file = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file.contains("-ubyte") {
                continue;
            }
            if file.ends_with(".gz") {
                std::fs::copy(&path, target.join(&file))?;
            } else {
                let gz = std::fs::File::create(target.join(format!("{file}.gz")))?;
                run(Command::new("gzip").arg("-c").arg(&path).stdout(gz))?;
            }
        }
    }
    eprintln!(
        "\n{} is ready: carry it and run bench/gpu-run.sh there",
        bundle.display()
    );
    Ok(())
}

/// The CUDA driver functions cudarc may call, for the link-time stub of libcuda.
pub(crate) const CUDA_DRIVER_SYMBOLS: &str = include_str!("cuda-driver-symbols.txt");

/// Compiles and lints the host with `--features cuda` (nvcc from PyPI wheels; no GPU needed).
pub(crate) fn cuda_check(root: &Path) -> Result<()> {
    step("the cuda feature compiles and lints clean (nvcc from PyPI wheels; no GPU needed)");
    run(CudaToolchain::compiler(root)?.cargo(
        root,
        &[
            "clippy",
            "-p",
            "mcugan",
            "-p",
            "mcugan-train",
            "--features",
            "mcugan/cuda,mcugan-train/cuda",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ))?;
    Ok(())
}
