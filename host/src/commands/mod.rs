//! One module per subcommand: each holds its clap arguments (`Args`) and its `run`.

pub mod bench_firmware;
pub mod check_onnx;
pub mod classifier;
pub mod common;
pub mod data;
pub mod eval;
pub mod inspect;
pub mod qemu;
pub mod quantize;
pub mod report;
pub mod simulate;
pub mod sizes;
pub mod train;
pub mod walk;

/// What every command may need beyond its own arguments: the global flags, and whether a
/// flag was given on the command line (not taken from its default).
pub struct Global<'a> {
    /// `--force`: replace what exists.
    pub force: bool,
    /// CPU threads the user chose (`--threads`, else `RAYON_NUM_THREADS`), if any.
    pub threads: Option<usize>,
    /// Whether the subcommand's argument with this clap id was given on the command line.
    pub given: &'a dyn Fn(&str) -> bool,
}
