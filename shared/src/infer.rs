//! Inference: one seed (and, for a conditional model, one class) in, one image out, in fixed
//! buffers.

use crate::format::{padded, LayerOutput, Model, COL_BLOCK};
use crate::kernels::{conv, dense_into, Outputs};
use crate::latent::{blend_code, gaussian_code, sample_latent, SplitMix64};

/// Why [`generate_in`] could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// The pixel buffer's length differs from the model's image size.
    #[error("pixel buffer holds {found} bytes, the model draws {expected}")]
    PixelBufferSize {
        /// The model's pixel count.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
    /// The activation arena is smaller than the model needs.
    #[error("an activation arena of {capacity} bytes, the model needs {needed}")]
    ActivationBuffers {
        /// [`Model::arena_len`].
        needed: usize,
        /// The arena's length.
        capacity: usize,
    },
    /// The scratch row is shorter than the model's widest input row or patch.
    #[error("a scratch row of {capacity} entries, the model needs {needed}")]
    ScratchBuffer {
        /// [`Model::scratch_len`].
        needed: usize,
        /// The scratch row's length.
        capacity: usize,
    },
    /// The scratch row does not start on a 4-byte boundary, which the DSP kernels' word loads
    /// need (only DSP builds check).
    #[error("the scratch row is not 4-byte aligned")]
    ScratchMisaligned,
    /// The latent vector's length differs from the model's latent dimension.
    #[error("latent vector has {found} codes, the model takes {expected}")]
    LatentSize {
        /// The model's latent dimension.
        expected: usize,
        /// The vector's length.
        found: usize,
    },
    /// The input vector's length differs from what the model's first layer takes.
    #[error("input vector has {found} codes, the model's first layer takes {expected}")]
    InputSize {
        /// [`Model::input_width`].
        expected: usize,
        /// The vector's length.
        found: usize,
    },
    /// A conditional model was asked for an image without a class.
    #[error("the model is conditional: ask for one of its {classes} classes")]
    ClassRequired {
        /// The model's classes.
        classes: usize,
    },
    /// An unconditional model was asked for a class.
    #[error("the model is unconditional: it draws no class")]
    NotConditional,
    /// A walk frame beyond the walk's frames, or a walk of more than [`MAX_WALK_FRAMES`].
    #[error("frame {frame} of a walk of {frames} frames (at most {MAX_WALK_FRAMES})")]
    FrameOutOfRange {
        /// The frame asked for.
        frame: u32,
        /// The walk's frames.
        frames: u32,
    },
    /// A class beyond the model's.
    #[error("class {class} is beyond the model's {classes} classes")]
    ClassOutOfRange {
        /// The class asked for.
        class: u16,
        /// The model's classes.
        classes: usize,
    },
}

/// The firmware's log says what went wrong in the words of the `Display` text (defmt keeps the
/// strings on the host, not in flash).
#[cfg(feature = "defmt")]
impl defmt::Format for InferenceError {
    fn format(&self, f: defmt::Formatter<'_>) {
        match *self {
            InferenceError::PixelBufferSize { expected, found } => defmt::write!(
                f,
                "pixel buffer holds {=usize} bytes, the model draws {=usize}",
                found,
                expected
            ),
            InferenceError::ActivationBuffers { needed, capacity } => defmt::write!(
                f,
                "an activation arena of {=usize} bytes, the model needs {=usize}",
                capacity,
                needed
            ),
            InferenceError::ScratchBuffer { needed, capacity } => defmt::write!(
                f,
                "a scratch row of {=usize} entries, the model needs {=usize}",
                capacity,
                needed
            ),
            InferenceError::ScratchMisaligned => {
                defmt::write!(f, "the scratch row is not 4-byte aligned")
            }
            InferenceError::LatentSize { expected, found } => defmt::write!(
                f,
                "latent vector has {=usize} codes, the model takes {=usize}",
                found,
                expected
            ),
            InferenceError::InputSize { expected, found } => defmt::write!(
                f,
                "input vector has {=usize} codes, the model's first layer takes {=usize}",
                found,
                expected
            ),
            InferenceError::ClassRequired { classes } => defmt::write!(
                f,
                "the model is conditional: ask for one of its {=usize} classes",
                classes
            ),
            InferenceError::NotConditional => {
                defmt::write!(f, "the model is unconditional: it draws no class")
            }
            InferenceError::FrameOutOfRange { frame, frames } => defmt::write!(
                f,
                "frame {=u32} of a walk of {=u32} frames (at most {=u32})",
                frame,
                frames,
                MAX_WALK_FRAMES
            ),
            InferenceError::ClassOutOfRange { class, classes } => defmt::write!(
                f,
                "class {=u16} is beyond the model's {=usize} classes",
                class,
                classes
            ),
        }
    }
}

/// A latent walk: `frames` images on the straight line from one request's input (latent codes
/// and, for a conditional model, class row) to another's, blended code by code with
/// [`blend_code`]. Frame 0 is `from`'s image and the last frame `to`'s, byte for byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Walk {
    /// Where the walk starts.
    pub from: ImageRequest,
    /// Where it ends (the same class as `from` for a walk between seeds only).
    pub to: ImageRequest,
    /// Images along the walk, both ends included (1 to [`MAX_WALK_FRAMES`]).
    pub frames: u32,
}

/// The most frames a [`Walk`] may have.
pub const MAX_WALK_FRAMES: u32 = u16::MAX as u32;

/// What to draw: the latent vector's seed and, for a conditional model, the class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ImageRequest {
    /// Seed of the latent vector ([`sample_latent`]).
    pub seed: u32,
    /// The class a conditional model draws; `None` for an unconditional model.
    pub class: Option<u16>,
}

impl ImageRequest {
    /// The image of `seed` from an unconditional model.
    pub fn seed(seed: u32) -> Self {
        Self { seed, class: None }
    }

    /// The image of `seed` from a model of `classes` classes (`None`: unconditional) when no
    /// class is asked for: a conditional model draws class `seed % classes`, so that any run
    /// of consecutive seeds covers the classes evenly. Every tool that draws many seeds
    /// (simulation, calibration, evaluation, the firmware's default) uses this.
    pub fn default_for(seed: u32, classes: Option<usize>) -> Self {
        match classes {
            Some(classes) if classes > 0 => Self {
                seed,
                class: Some((seed % classes as u32) as u16),
            },
            _ => Self::seed(seed),
        }
    }

    /// The image of `seed` in class `class` from a conditional model.
    pub fn class(seed: u32, class: u16) -> Self {
        Self {
            seed,
            class: Some(class),
        }
    }
}

/// Watches inference layer by layer; the firmware times each layer with it. `()` watches
/// nothing.
pub trait LayerObserver {
    /// Called right before layer `index` starts (after its inputs are ready).
    fn layer_started(&mut self, index: usize);
    /// Called right after layer `index` has written its outputs.
    fn layer_finished(&mut self, index: usize);
}

impl LayerObserver for () {
    #[inline(always)]
    fn layer_started(&mut self, _index: usize) {}
    #[inline(always)]
    fn layer_finished(&mut self, _index: usize) {}
}

/// The memory inference works in, lent by the caller: an int8 activation arena of at least
/// [`Model::arena_len`] bytes and an `i16` scratch row of at least [`Model::scratch_len`]
/// entries (4-byte aligned on DSP builds). The firmware sizes both from the model it embeds.
pub struct Workspace<'w> {
    /// The activation arena.
    pub arena: &'w mut [i8],
    /// The scratch row (a dense layer's widened inputs, a convolution's gathered patch).
    pub scratch: &'w mut [i16],
}

/// A scratch row of `N` entries, 8-byte aligned for the DSP kernels' double-word loads.
#[repr(C, align(8))]
struct Scratch<const N: usize>([i16; N]);

/// Draws `request` into `pixels` in two stack buffers: an arena of `A` bytes and a scratch
/// row of `S` entries (`A + 2·S` bytes), which must hold the model's [`Model::arena_len`]
/// and [`Model::scratch_len`] (a named error otherwise). The firmware picks `A` and `S` from
/// the model it embeds, so that its RAM fits that model.
///
/// Only this wrapper is generic; the inference loop takes slices and the observer as a trait
/// object, so that it is compiled once, in this crate, with this crate's optimisation
/// settings, whatever the caller's.
pub fn generate_in<const A: usize, const S: usize>(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    let mut arena = [0i8; A];
    let mut scratch = Scratch::<S>([0; S]);
    generate_with(
        model,
        request,
        pixels,
        Workspace {
            arena: &mut arena,
            scratch: &mut scratch.0,
        },
        observer,
    )
}

/// [`generate_in`] in memory the caller lends.
pub fn generate_with(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
    workspace: Workspace<'_>,
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    let class = class_offset(model, request.class)?;
    run(
        model,
        pixels,
        observer,
        Input::Seed {
            seed: request.seed,
            class,
        },
        workspace,
    )
}

/// Draws frame `frame` of `walk` (see [`Walk`]) in two stack buffers of `A` and `S` entries,
/// as [`generate_in`] does.
pub fn generate_walk_frame_in<const A: usize, const S: usize>(
    model: &Model<'_>,
    walk: &Walk,
    frame: u32,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    let mut arena = [0i8; A];
    let mut scratch = Scratch::<S>([0; S]);
    generate_walk_frame_with(
        model,
        walk,
        frame,
        pixels,
        Workspace {
            arena: &mut arena,
            scratch: &mut scratch.0,
        },
        observer,
    )
}

/// [`generate_walk_frame_in`] in memory the caller lends.
pub fn generate_walk_frame_with(
    model: &Model<'_>,
    walk: &Walk,
    frame: u32,
    pixels: &mut [u8],
    workspace: Workspace<'_>,
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    if frame >= walk.frames || walk.frames > MAX_WALK_FRAMES {
        return Err(InferenceError::FrameOutOfRange {
            frame,
            frames: walk.frames,
        });
    }
    let from_class = class_offset(model, walk.from.class)?;
    let to_class = class_offset(model, walk.to.class)?;
    run(
        model,
        pixels,
        observer,
        Input::Walk {
            from: (walk.from.seed, from_class),
            to: (walk.to.seed, to_class),
            // Both fit: frame < frames <= MAX_WALK_FRAMES.
            step: frame as u16,
            steps: (walk.frames - 1) as u16,
        },
        workspace,
    )
}

/// Checks `class` against `model`: `Some(class)` for a conditional model, `None` otherwise.
fn class_offset(model: &Model<'_>, class: Option<u16>) -> Result<Option<usize>, InferenceError> {
    match (model.classes(), class) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(InferenceError::NotConditional),
        (Some(classes), None) => Err(InferenceError::ClassRequired { classes }),
        (Some(classes), Some(class)) if usize::from(class) >= classes => {
            Err(InferenceError::ClassOutOfRange { class, classes })
        }
        (Some(_), Some(class)) => Ok(Some(usize::from(class))),
    }
}

/// Heap-allocated inference for hosts: the same loop in buffers sized for each model.
#[cfg(feature = "alloc")]
mod hosted {
    use alloc::vec;

    use super::*;

    /// Runs `work` in a workspace sized for `model`.
    fn with_workspace<T>(model: &Model<'_>, work: impl FnOnce(Workspace<'_>) -> T) -> T {
        let mut arena = vec![0i8; model.arena_len()];
        let mut scratch = vec![0i16; model.scratch_len()];
        work(Workspace {
            arena: &mut arena,
            scratch: &mut scratch,
        })
    }

    /// Draws the latent vector for `seed` and runs the model, writing one `u8` per pixel: no
    /// float, the same bytes as the chip. The host simulation calls this; the firmware calls
    /// [`generate_in`] with buffers sized for its model.
    pub fn generate(model: &Model<'_>, seed: u32, pixels: &mut [u8]) -> Result<(), InferenceError> {
        generate_observed(model, ImageRequest::seed(seed), pixels, &mut ())
    }

    /// [`generate`] for any model: `request` names the class of a conditional one.
    pub fn generate_request(
        model: &Model<'_>,
        request: ImageRequest,
        pixels: &mut [u8],
    ) -> Result<(), InferenceError> {
        generate_observed(model, request, pixels, &mut ())
    }

    /// [`generate`], telling `observer` when each layer starts and ends.
    pub fn generate_observed(
        model: &Model<'_>,
        request: ImageRequest,
        pixels: &mut [u8],
        observer: &mut dyn LayerObserver,
    ) -> Result<(), InferenceError> {
        with_workspace(model, |workspace| {
            generate_with(model, request, pixels, workspace, observer)
        })
    }

    /// Draws frame `frame` of `walk` in buffers sized for the model.
    pub fn generate_walk_frame(
        model: &Model<'_>,
        walk: &Walk,
        frame: u32,
        pixels: &mut [u8],
    ) -> Result<(), InferenceError> {
        with_workspace(model, |workspace| {
            generate_walk_frame_with(model, walk, frame, pixels, workspace, &mut ())
        })
    }

    /// Runs the model on a given int8 latent vector (codes at
    /// [`crate::latent::LATENT_SCALE`]). [`generate`] is this after [`sample_latent`]; the
    /// host calls it directly to feed its own latent vectors.
    pub fn run_from_latent(
        model: &Model<'_>,
        latent: &[i8],
        pixels: &mut [u8],
    ) -> Result<(), InferenceError> {
        if latent.len() != model.latent_dim() {
            return Err(InferenceError::LatentSize {
                expected: model.latent_dim(),
                found: latent.len(),
            });
        }
        if let Some(classes) = model.classes() {
            return Err(InferenceError::ClassRequired { classes });
        }
        run_from_input(model, latent, pixels)
    }

    /// Runs the model on its whole first-layer input, given: for a conditional model the
    /// class row (codes at the latent's scale; a row of [`Model::class_table`] or a blend of
    /// rows, as a latent walk between classes makes) followed by the latent codes,
    /// [`Model::input_width`] codes in all.
    pub fn run_from_input(
        model: &Model<'_>,
        input: &[i8],
        pixels: &mut [u8],
    ) -> Result<(), InferenceError> {
        if input.len() != model.input_width() {
            return Err(InferenceError::InputSize {
                expected: model.input_width(),
                found: input.len(),
            });
        }
        with_workspace(model, |workspace| {
            run(model, pixels, &mut (), Input::Codes(input), workspace)
        })
    }
}

#[cfg(feature = "alloc")]
pub use hosted::*;

/// Where the first layer's input comes from.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// The latent vector drawn from a seed, after the class row of `class` if there is one.
    Seed { seed: u32, class: Option<usize> },
    /// Given whole: class row (if any) and latent codes.
    #[cfg_attr(not(feature = "alloc"), allow(dead_code))]
    Codes(&'a [i8]),
    /// Step `step` of `steps` from one `(seed, class)` input to another.
    Walk {
        from: (u32, Option<usize>),
        to: (u32, Option<usize>),
        step: u16,
        steps: u16,
    },
}

/// Copies `narrow` into the front of `wide` and zeroes the rest up to the next column block.
#[inline]
fn widen(narrow: &[i8], wide: &mut [i16]) {
    for (w, &n) in wide.iter_mut().zip(narrow) {
        *w = i16::from(n);
    }
    let padded_end = padded(narrow.len(), COL_BLOCK).min(wide.len());
    if let Some(tail) = wide.get_mut(narrow.len()..padded_end) {
        tail.fill(0);
    }
}

/// Checks the workspace against `model` and returns the parts of it the model uses.
fn fitted<'w>(
    model: &Model<'_>,
    workspace: Workspace<'w>,
) -> Result<(&'w mut [i8], &'w mut [i16]), InferenceError> {
    let arena = workspace.arena;
    let scratch = workspace.scratch;
    let (arena_len, scratch_len) = (model.arena_len(), model.scratch_len());
    let arena_capacity = arena.len();
    let Some(arena) = arena.get_mut(..arena_len) else {
        return Err(InferenceError::ActivationBuffers {
            needed: arena_len,
            capacity: arena_capacity,
        });
    };
    let capacity = scratch.len();
    let Some(scratch) = scratch.get_mut(..scratch_len) else {
        return Err(InferenceError::ScratchBuffer {
            needed: scratch_len,
            capacity,
        });
    };
    if cfg!(mcugan_dsp_kernels) && !(scratch.as_ptr() as usize).is_multiple_of(4) {
        return Err(InferenceError::ScratchMisaligned);
    }
    Ok((arena, scratch))
}

/// Writes the first layer's input that `input` stands for into `codes`.
fn write_input(model: &Model<'_>, input: Input<'_>, codes: &mut [i8]) {
    match input {
        Input::Seed { seed, class } => {
            // The class row first, then the latent vector: `cgan.py`'s order.
            let row = match (model.class_table(), class) {
                (Some(table), Some(class)) => table.row(class),
                _ => None,
            };
            let row = row.unwrap_or(&[]);
            let split = row.len().min(codes.len());
            let (front, latent) = codes.split_at_mut(split);
            for (slot, &code) in front.iter_mut().zip(row) {
                *slot = code as i8;
            }
            sample_latent(seed, latent);
        }
        Input::Codes(given) => {
            for (slot, &code) in codes.iter_mut().zip(given.iter()) {
                *slot = code;
            }
        }
        Input::Walk {
            from,
            to,
            step,
            steps,
        } => {
            let row = |class: Option<usize>| match (model.class_table(), class) {
                (Some(table), Some(class)) => table.row(class).unwrap_or(&[]),
                _ => &[],
            };
            let (row_from, row_to) = (row(from.1), row(to.1));
            let split = row_from.len().min(codes.len());
            let (front, latent) = codes.split_at_mut(split);
            for ((slot, &a), &b) in front.iter_mut().zip(row_from).zip(row_to) {
                *slot = blend_code(a as i8, b as i8, step, steps);
            }
            // The start's codes in place, then the end's drawn one by one: no second buffer.
            sample_latent(from.0, latent);
            let mut rng = SplitMix64::new(u64::from(to.0));
            for slot in latent.iter_mut() {
                *slot = blend_code(*slot, gaussian_code(rng.next_u32()), step, steps);
            }
        }
    }
}

/// Runs the layers on the input `input` stands for, in `workspace`.
///
/// The arena holds the current tensor at its start or at its end. A dense layer widens its
/// input into the scratch row and writes its outputs where the input was; a convolution reads
/// its input at one end and writes its output at the other (the arena holds both, see
/// [`Model::arena_len`]); the last layer writes pixels.
#[inline(never)]
fn run(
    model: &Model<'_>,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
    input: Input<'_>,
    workspace: Workspace<'_>,
) -> Result<(), InferenceError> {
    if pixels.len() != model.pixel_count() {
        return Err(InferenceError::PixelBufferSize {
            expected: model.pixel_count(),
            found: pixels.len(),
        });
    }
    let (arena, scratch) = fitted(model, workspace)?;
    let total = arena.len();
    let mut len = model.input_width().min(total);
    write_input(model, input, &mut arena[..len]);
    let mut at_end = false;
    // The int8 code of a real zero in the current tensor (the latent's is 0).
    let mut zero_point = 0i8;

    for (index, layer) in model.layers().iter().enumerate() {
        observer.layer_started(index);
        let outputs = layer.outputs.min(total);
        let start = if at_end { total - len } else { 0 };
        match &layer.conv {
            None => {
                // The previous layer's int8 outputs become this layer's i16 inputs.
                widen(&arena[start..start + len], scratch);
                let out_start = if at_end { total - outputs } else { 0 };
                let out = &mut arena[out_start..out_start + outputs];
                run_dense(layer, scratch, out, pixels);
            }
            Some(geometry) => {
                // Input and output at opposite ends; the model's arena holds both.
                let (input, output) = if at_end {
                    let (output, input) = arena.split_at_mut(start);
                    let fits = outputs.min(output.len());
                    (&*input, &mut output[..fits])
                } else {
                    let (input, output) = arena.split_at_mut(len);
                    let free = output.len();
                    (&*input, &mut output[free.saturating_sub(outputs)..])
                };
                let mut outputs = outputs_of(layer, output, pixels);
                conv(geometry, layer, input, zero_point, scratch, &mut outputs);
                at_end = !at_end;
            }
        }
        len = outputs;
        zero_point = layer.output.zero_point();
        observer.layer_finished(index);
    }
    Ok(())
}

/// Where `layer`'s outputs go: `out` for a hidden layer, `pixels` for the last.
fn outputs_of<'o, 'a>(
    layer: &crate::format::Layer<'a>,
    out: &'o mut [i8],
    pixels: &'o mut [u8],
) -> Outputs<'o, 'a> {
    match layer.output {
        LayerOutput::LeakyRelu {
            zero_point,
            negative_slope_q31,
        } => Outputs::Hidden {
            out,
            zero_point,
            negative_slope_q31: Some(negative_slope_q31),
        },
        LayerOutput::Linear { zero_point } => Outputs::Hidden {
            out,
            zero_point,
            negative_slope_q31: None,
        },
        LayerOutput::TanhPixels { lut } => Outputs::Pixels { pixels, lut },
    }
}

/// One dense layer over the widened inputs in `scratch`: hidden outputs into `out`, the last
/// layer's into `pixels`.
#[inline(always)]
fn run_dense(layer: &crate::format::Layer<'_>, scratch: &[i16], out: &mut [i8], pixels: &mut [u8]) {
    let mut outputs = outputs_of(layer, out, pixels);
    dense_into(
        layer.weight_format,
        layer.weights,
        layer.channels,
        layer.inputs,
        scratch,
        None,
        &mut outputs,
        0,
    );
}
