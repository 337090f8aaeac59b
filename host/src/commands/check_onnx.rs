//! `mcugan check-onnx` (hidden): the child process in which the other commands import an ONNX
//! file first (see `mcugan::contained`). Exits 0 when the file imports, 2 with the reason on
//! stderr when it is refused; a crash inside tract ends it on a signal, which the parent names.

use std::path::PathBuf;

use anyhow::Result;

/// The command line of `mcugan check-onnx`.
#[derive(clap::Args)]
pub struct Args {
    /// The ONNX file.
    pub path: PathBuf,
}

/// Runs `mcugan check-onnx`.
pub fn run(args: Args) -> Result<()> {
    // The parent reports what happened; a panic's own message would only repeat it.
    std::panic::set_hook(Box::new(|_| {}));
    match mcugan::generator_file::load_float_generator(&args.path) {
        Ok(_) => Ok(()),
        Err(e) => {
            eprintln!("{e:#}");
            std::process::exit(mcugan::contained::REFUSED);
        }
    }
}
