//! The board-agnostic mcugan firmware application: validate the model blob, draw seeds with the
//! shared integer kernels, time the work (per layer, too), and hand images to the board.
//!
//! A board supplies a free-running timer, an image sink and (for fixed runs) a seed list; it
//! stays thin. The QEMU board streams images to the host; real boards log them as defmt art and
//! optionally draw them on a display.
#![no_std]

use heapless::String;
use mcugan_shared::format::MAX_LAYERS;
use mcugan_shared::stream::StatKey;
use mcugan_shared::{
    generate_in, generate_walk_frame_in, FormatError, ImageRequest, InferenceError, LayerObserver,
    Model, Walk,
};

/// Wraps a value so that it is 16-byte aligned; every firmware keeps its model blob in one
/// (the `MODEL` static that `mcugan-firmware-build` generates).
#[repr(C, align(16))]
pub struct Aligned<B: ?Sized>(pub B);

/// The most seeds one fixed run draws.
pub const MAX_SEEDS: usize = 256;

/// What the application needs from a board.
pub trait Board {
    /// Width of the free-running timer in bits: [`Board::now`] wraps at `2^TIMER_BITS`.
    const TIMER_BITS: u32;
    /// The timer's current value, counting up.
    fn now(&mut self) -> u32;
    /// Hands over one image, what it was drawn for, and the timer ticks it took.
    fn emit_image(
        &mut self,
        request: ImageRequest,
        ticks: u32,
        pixels: &[u8],
    ) -> Result<(), SinkError>;
    /// Hands over one measurement.
    fn emit_stat(&mut self, key: StatKey, value: u32) -> Result<(), SinkError>;
    /// Hands over the ticks one layer took; boards without a host link ignore it.
    fn emit_layer(&mut self, _layer: u8, _ticks: u32) -> Result<(), SinkError> {
        Ok(())
    }

    /// Ticks from `start` to `end`, across one wrap of the timer.
    fn elapsed(start: u32, end: u32) -> u32 {
        let mask = if Self::TIMER_BITS >= 32 {
            u32::MAX
        } else {
            (1u32 << Self::TIMER_BITS) - 1
        };
        end.wrapping_sub(start) & mask
    }

    /// Runs `work` and returns its result with the ticks it took.
    fn measure<T>(&mut self, work: impl FnOnce() -> T) -> (T, u32) {
        let start = self.now();
        let result = work();
        let end = self.now();
        (result, Self::elapsed(start, end))
    }
}

/// The board could not deliver a result.
#[derive(Clone, Copy, Debug, defmt::Format)]
pub struct SinkError;

/// Why a run failed.
#[derive(Clone, Copy, Debug)]
pub enum AppError {
    /// The model blob is invalid.
    Model(FormatError),
    /// Inference refused to run.
    Inference(InferenceError),
    /// The board could not deliver a result.
    Sink(SinkError),
}

impl defmt::Format for AppError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match self {
            AppError::Model(err) => defmt::write!(f, "invalid model: {}", err),
            AppError::Inference(err) => defmt::write!(f, "cannot draw: {}", err),
            AppError::Sink(_) => defmt::write!(f, "the board could not deliver the image"),
        }
    }
}

impl From<SinkError> for AppError {
    fn from(err: SinkError) -> Self {
        AppError::Sink(err)
    }
}

/// Validates `blob` (magic, version, checksum, every array and parameter), logging the outcome.
pub fn validate<'a>(blob: &'a [u8], board: &mut impl Board) -> Result<Model<'a>, AppError> {
    defmt::info!(
        "mcugan firmware ({=str} kernels): model blob of {=usize} bytes",
        kernels(),
        blob.len()
    );
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
        "model '{=str}' valid ({=u32} ticks): {=usize} layers, {=usize} MACs per image; RAM for \
         inference: a {=usize}-byte arena and a {=usize}-byte scratch row",
        model.name(),
        ticks,
        model.layers().len(),
        model.macs(),
        model.arena_len(),
        2 * model.scratch_len()
    );
    if let Some(classes) = model.classes() {
        defmt::info!("conditional model of {=usize} classes", classes);
    }
    Ok(model)
}

/// What to draw for `seed`: in `class` when one is asked for, else (a conditional model) in
/// the seed's default class, `seed mod classes`, as the host's tools do.
pub fn request_for(model: &Model<'_>, seed: u32, class: Option<u16>) -> ImageRequest {
    match class {
        Some(class) => ImageRequest::class(seed, class),
        None => ImageRequest::default_for(seed, model.classes()),
    }
}

/// Which kernels this build runs the blocked layouts with.
pub const fn kernels() -> &'static str {
    if mcugan_shared::kernels::dsp_kernels() {
        "DSP"
    } else {
        "portable"
    }
}

/// Times each layer with the board's timer.
struct LayerTimer<'b, B: Board> {
    board: &'b mut B,
    started: u32,
    ticks: [u32; MAX_LAYERS],
}

impl<B: Board> LayerObserver for LayerTimer<'_, B> {
    #[inline(always)]
    fn layer_started(&mut self, _index: usize) {
        self.started = self.board.now();
    }

    #[inline(always)]
    fn layer_finished(&mut self, index: usize) {
        let end = self.board.now();
        if let Some(slot) = self.ticks.get_mut(index) {
            *slot = B::elapsed(self.started, end);
        }
    }
}

/// Draws `request` into `pixels` and hands the image to the board; returns the ticks it took.
/// Inference works in two stack buffers: an activation arena of `A` bytes and a scratch row of
/// `R` entries (the embedded model's `ARENA_LEN` and `SCRATCH_LEN`, generated by
/// `mcugan-firmware-build`).
pub fn draw<const A: usize, const R: usize>(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
    board: &mut impl Board,
) -> Result<u32, AppError> {
    let (drawn, ticks) = board.measure(|| generate_in::<A, R>(model, request, pixels, &mut ()));
    if let Err(err) = drawn {
        defmt::error!("seed {=u32}: {}", request.seed, err);
        return Err(AppError::Inference(err));
    }
    match request.class {
        Some(class) => defmt::info!(
            "seed {=u32} class {=u16}: drawn in {=u32} ticks",
            request.seed,
            class,
            ticks
        ),
        None => defmt::info!("seed {=u32}: drawn in {=u32} ticks", request.seed, ticks),
    }
    board.emit_image(request, ticks, pixels)?;
    Ok(ticks)
}

/// Draws `seed` once more with every layer timed and reports each layer's ticks
/// ([`Board::emit_layer`]). The timer reads add a few instructions per layer.
pub fn time_layers<const A: usize, const R: usize>(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
    board: &mut impl Board,
) -> Result<(), AppError> {
    let mut timer = LayerTimer {
        board: &mut *board,
        started: 0,
        ticks: [0; MAX_LAYERS],
    };
    generate_in::<A, R>(model, request, pixels, &mut timer).map_err(AppError::Inference)?;
    let layer_ticks = timer.ticks;
    for (layer, &ticks) in layer_ticks.iter().take(model.layers().len()).enumerate() {
        defmt::info!("layer {=usize}: {=u32} ticks", layer, ticks);
        board.emit_layer(layer as u8, ticks)?;
    }
    Ok(())
}

/// Validates `blob` and draws every `(seed, class)` in `seeds` (`class`: see [`request_for`]):
/// the whole-image timing of each, then one more pass of the first with per-layer timing. `A`,
/// `R` and `P` size the RAM buffers: arena bytes, scratch entries and image bytes, the
/// embedded model's `ARENA_LEN`, `SCRATCH_LEN` and `IMAGE_PIXELS` (a model larger than them
/// fails with a named error, not a panic).
pub fn run<const A: usize, const R: usize, const P: usize>(
    blob: &[u8],
    seeds: impl IntoIterator<Item = (u32, Option<u16>)>,
    board: &mut impl Board,
) -> Result<(), AppError> {
    let model = validate(blob, board)?;
    let mut buffer = [0u8; P];
    let pixels = &mut buffer[..model.pixel_count().min(P)];
    let mut first = None;
    for (seed, class) in seeds {
        let request = request_for(&model, seed, class);
        first.get_or_insert(request);
        draw::<A, R>(&model, request, pixels, board)?;
    }
    if let Some(first) = first {
        time_layers::<A, R>(&model, first, pixels, board)?;
    }
    Ok(())
}

/// Validates `blob` and draws the frames of `walk` one after another (see [`Walk`]); each
/// goes to the board as an image whose request holds the frame number as its seed. `A`, `R`
/// and `P` size the RAM buffers, as for [`run`].
// Not inlined: its buffers must not add to the seed path's frame (the RAM budget counts the
// stack's peak).
#[inline(never)]
pub fn run_walk<const A: usize, const R: usize, const P: usize>(
    blob: &[u8],
    walk: Walk,
    board: &mut impl Board,
) -> Result<(), AppError> {
    let model = validate(blob, board)?;
    // Ends without a class: a conditional model's default class of each seed.
    let walk = Walk {
        from: request_for(&model, walk.from.seed, walk.from.class),
        to: request_for(&model, walk.to.seed, walk.to.class),
        frames: walk.frames,
    };
    let mut buffer = [0u8; P];
    let pixels = &mut buffer[..model.pixel_count().min(P)];
    for frame in 0..walk.frames {
        let (drawn, ticks) =
            board.measure(|| generate_walk_frame_in::<A, R>(&model, &walk, frame, pixels, &mut ()));
        if let Err(err) = drawn {
            defmt::error!("walk frame {=u32}: {}", frame, err);
            return Err(AppError::Inference(err));
        }
        defmt::info!(
            "walk frame {=u32} of {=u32}: drawn in {=u32} ticks",
            frame,
            walk.frames,
            ticks
        );
        board.emit_image(ImageRequest::seed(frame), ticks, pixels)?;
    }
    Ok(())
}

pub mod board;
#[cfg(feature = "display")]
pub mod display;

/// Logs a grayscale image as text art over defmt, one line per pixel row, darkest to lightest
/// as ` .:-=+*#%@`.
pub fn log_art(pixels: &[u8], width: usize) {
    const RAMP: &[u8; 10] = b" .:-=+*#%@";
    if width == 0 {
        return;
    }
    for row in pixels.chunks(width) {
        let mut line: String<64> = String::new();
        for &p in row.iter().take(64) {
            let level = usize::from(p) * (RAMP.len() - 1) / 255;
            // Capacity is checked by `take(64)`.
            let _ = line.push(char::from(RAMP[level]));
        }
        defmt::println!("{=str}", line.as_str());
    }
}
