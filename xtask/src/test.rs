//! `cargo xtask test`: formatting, lints, and every test (firmware under QEMU included). CI runs it.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Result;

use crate::cuda::*;
use crate::firmware::*;
use crate::setup::*;
use crate::util::*;

/// A 32-bit host target: the shared crate's size arithmetic runs there as on the chip, but
/// with the dev profile's overflow checks, so a product that wraps on 32 bits panics a test.
pub(crate) const HOST_32_BIT_TARGET: &str = "i686-unknown-linux-gnu";

/// Runs the shared crate's tests for [`HOST_32_BIT_TARGET`], installing the target (rustup)
/// and the 32-bit C runtime to link against (apt `gcc-multilib`) when missing.
pub(crate) fn shared_tests_32_bit(root: &Path) -> Result<()> {
    rustup_target(root, HOST_32_BIT_TARGET)?;
    let multilib = Command::new("dpkg")
        .args(["-s", "gcc-multilib"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !multilib {
        apt_install(root, &["gcc-multilib"])?;
    }
    run(cargo(&[
        "test",
        "-p",
        "mcugan-shared",
        "--target",
        HOST_32_BIT_TARGET,
    ]))
}

pub(crate) fn test(root: &Path) -> Result<()> {
    let started = Instant::now();
    setup(root, true)?;
    step("formatting");
    run(cargo(&["fmt", "--all", "--check"]))?;
    run(cargo(&["fmt", "--all", "--check"]).current_dir(root.join("firmware")))?;
    step("lints (host workspace)");
    run(cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("lints and the ONNX refusal of the host CLI without ONNX import (the demo's build)");
    run(cargo(&[
        "clippy",
        "-p",
        "mcugan",
        "--no-default-features",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo(&[
        "test",
        "-p",
        "mcugan",
        "--no-default-features",
        "--test",
        "without_onnx",
    ]))?;
    step("lints (firmware)");
    run(cargo(&["clippy", "--release", "--", "-D", "warnings"]).current_dir(root.join("firmware")))?;
    for (dir, _, _) in BOARDS {
        run(cargo(&[
            "clippy",
            "--release",
            "--features",
            "display",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(root.join("firmware/boards").join(dir)))?;
    }
    step(
        "real boards build (Nucleo-F429ZI int8, nRF52840-DK int4, Pico and Pico 2 int8; with \
         and without display)",
    );
    build_boards(root, &[])?;
    build_boards(root, &["display"])?;
    cuda_check(root)?;
    step("shared builds without std for the chip");
    run(cargo(&[
        "build",
        "-p",
        "mcugan-shared",
        "--features",
        "defmt",
        "--target",
        FIRMWARE_TARGET,
    ]))?;
    step("shared's tests on a 32-bit target (i686, overflow checks on)");
    shared_tests_32_bit(root)?;
    step("tests (host, shared, and the firmware under QEMU)");
    run(cargo(&["test", "--workspace"]).env("MCUGAN_REQUIRE_DATASETS", "1"))?;
    eprintln!(
        "\nall checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
