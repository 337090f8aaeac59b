#!/usr/bin/env sh
# Cargo runner for the MPS2 AN386 under QEMU (the firmware workspace's default board): `cargo run
# --release` in firmware/ or here builds the firmware, then this runs it through the host's
# runner, which decodes the defmt log, checks the images against the host simulation and saves
# them as a PNG (firmware-digits.png in the repository root).
# Arguments: the ELF, then anything given after `--` (e.g. `-- --seeds 0..8`).
set -eu
elf=$(realpath "$1")
shift
here=$(dirname "$(realpath "$0")")
cd "$here/../../.."
model=${MCUGAN_MODEL:-models/mnist-digits/generator-int8.mcg}
exec cargo run --quiet --release -p mcugan -- qemu "$elf" --check "$model" --png firmware-digits.png "$@"
