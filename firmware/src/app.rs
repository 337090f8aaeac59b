//! The board-agnostic application: validate the model, draw the requested seeds, hand each
//! image to the board, log what happened. A board supplies timing, seeds and an image sink.

use heapless::Vec;
use mcugan_shared::format::MAX_WIDTH;
use mcugan_shared::stream::StatKey;
use mcugan_shared::{generate, FormatError, InferenceError, Model};

/// The most seeds one run draws.
pub const MAX_SEEDS: usize = 256;

/// What the application needs from a board.
pub trait Board {
    /// Runs `work` and returns its result with the timer ticks it took.
    fn measure<T>(&mut self, work: impl FnOnce() -> T) -> (T, u32);
    /// The seeds to draw.
    fn seeds(&mut self) -> Vec<u32, MAX_SEEDS>;
    /// Hands over one image.
    fn emit_image(&mut self, seed: u32, ticks: u32, pixels: &[u8]) -> Result<(), SinkError>;
    /// Hands over one measurement.
    fn emit_stat(&mut self, key: StatKey, value: u32) -> Result<(), SinkError>;
}

/// The board could not deliver a result.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct SinkError;

/// Why a run failed.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub enum AppError {
    /// The model blob is invalid.
    Model(FormatError),
    /// Inference refused to run.
    Inference(InferenceError),
    /// The board could not deliver a result.
    Sink(SinkError),
}

impl From<SinkError> for AppError {
    fn from(err: SinkError) -> Self {
        AppError::Sink(err)
    }
}

/// Validates `blob` and draws every seed the board asks for.
pub fn run(blob: &[u8], board: &mut impl Board) -> Result<(), AppError> {
    defmt::info!("mcugan firmware: model blob of {=usize} bytes", blob.len());
    board.emit_stat(StatKey::ModelBytes, blob.len() as u32)?;
    let (parsed, ticks) = board.measure(|| Model::parse(blob));
    let model = match parsed {
        Ok(model) => model,
        Err(err) => {
            defmt::error!("invalid model: {}", err);
            return Err(AppError::Model(err));
        }
    };
    board.emit_stat(StatKey::ValidationTicks, ticks)?;
    defmt::info!(
        "model '{=str}' valid ({=u32} ticks): {=usize} layers, {=usize} MACs per image",
        model.name(),
        ticks,
        model.layers().len(),
        model.macs()
    );

    let mut buffer = [0u8; MAX_WIDTH];
    let pixels = &mut buffer[..model.pixel_count().min(MAX_WIDTH)];
    for seed in board.seeds() {
        let (drawn, ticks) = board.measure(|| generate(&model, seed, pixels));
        drawn.map_err(AppError::Inference)?;
        defmt::info!("seed {=u32}: drawn in {=u32} ticks", seed, ticks);
        board.emit_image(seed, ticks, pixels)?;
    }
    Ok(())
}
