//! Inference: one seed (and, for a conditional model, one class) in, one image out, in fixed
//! buffers.

use crate::format::{padded, LayerOutput, Model, COL_BLOCK, MAX_WIDTH};
use crate::kernels::{dense, leaky_relu_requant, tanh_pixel};
use crate::latent::{blend_code, gaussian_code, sample_latent, SplitMix64};

/// Why [`generate`] could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InferenceError {
    /// The pixel buffer's length differs from the model's image size.
    #[error("pixel buffer holds {found} bytes, the model draws {expected}")]
    PixelBufferSize {
        /// The model's pixel count.
        expected: usize,
        /// The buffer's length.
        found: usize,
    },
    /// The activation buffers are narrower than the model's widest layer input.
    #[error("activation buffers of {capacity} entries, the model needs {needed}")]
    ActivationBuffers {
        /// [`Model::activation_width`].
        needed: usize,
        /// The smaller buffer's length.
        capacity: usize,
    },
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

/// Activations widened to `i16`, 8-byte aligned for the DSP kernels' double-word loads.
#[repr(C, align(8))]
struct WideActivations<const N: usize>([i16; N]);

/// The two activation buffers inference works in, of `N` entries each (3·N bytes).
struct Activations<const N: usize> {
    narrow: [i8; N],
    wide: WideActivations<N>,
}

impl<const N: usize> Activations<N> {
    const fn new() -> Self {
        Self {
            narrow: [0; N],
            wide: WideActivations([0; N]),
        }
    }
}

/// Draws the latent vector for `seed` and runs the model, writing one `u8` per pixel.
///
/// Works in stack buffers for the widest model the format holds ([`MAX_WIDTH`] entries, 12
/// KiB) and the borrowed model: no heap, no float. The host simulation calls this; the
/// firmware calls [`generate_in`] with buffers sized for its model.
pub fn generate(model: &Model<'_>, seed: u32, pixels: &mut [u8]) -> Result<(), InferenceError> {
    generate_in::<MAX_WIDTH>(model, ImageRequest::seed(seed), pixels, &mut ())
}

/// [`generate`] for any model: `request` names the class of a conditional one.
pub fn generate_request(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
) -> Result<(), InferenceError> {
    generate_in::<MAX_WIDTH>(model, request, pixels, &mut ())
}

/// [`generate`], telling `observer` when each layer starts and ends.
pub fn generate_observed(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    generate_in::<MAX_WIDTH>(model, request, pixels, observer)
}

/// [`generate_observed`] in two stack buffers of `N` entries (3·N bytes), which must hold
/// the model's [`Model::activation_width`] ([`InferenceError::ActivationBuffers`] otherwise).
/// The firmware picks `N` from the model it embeds, so that its RAM fits that model.
///
/// Only this wrapper is generic; the inference loop takes slices and the observer as a trait
/// object, so that it is compiled once, in this crate, with this crate's optimisation
/// settings, whatever the caller's.
pub fn generate_in<const N: usize>(
    model: &Model<'_>,
    request: ImageRequest,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
) -> Result<(), InferenceError> {
    let class = class_offset(model, request.class)?;
    let mut activations = Activations::<N>::new();
    run(
        model,
        pixels,
        observer,
        Input::Seed {
            seed: request.seed,
            class,
        },
        &mut activations.narrow,
        &mut activations.wide.0,
    )
}

/// Draws frame `frame` of `walk` (see [`Walk`]) in two stack buffers of `N` entries, as
/// [`generate_in`] does.
pub fn generate_walk_frame_in<const N: usize>(
    model: &Model<'_>,
    walk: &Walk,
    frame: u32,
    pixels: &mut [u8],
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
    let mut activations = Activations::<N>::new();
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
        &mut activations.narrow,
        &mut activations.wide.0,
    )
}

/// [`generate_walk_frame_in`] in buffers for the widest model the format holds.
pub fn generate_walk_frame(
    model: &Model<'_>,
    walk: &Walk,
    frame: u32,
    pixels: &mut [u8],
) -> Result<(), InferenceError> {
    generate_walk_frame_in::<MAX_WIDTH>(model, walk, frame, pixels, &mut ())
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

/// Where the first layer's input comes from.
#[derive(Clone, Copy)]
enum Input<'a> {
    /// The latent vector drawn from a seed, after the class row of `class` if there is one.
    Seed { seed: u32, class: Option<usize> },
    /// Given whole: class row (if any) and latent codes.
    Codes(&'a [i8]),
    /// Step `step` of `steps` from one `(seed, class)` input to another.
    Walk {
        from: (u32, Option<usize>),
        to: (u32, Option<usize>),
        step: u16,
        steps: u16,
    },
}

/// Runs the model on a given int8 latent vector (codes at [`crate::latent::LATENT_SCALE`]).
/// [`generate`] is this after [`sample_latent`]; the host calls it directly to feed its own
/// latent vectors.
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

/// Runs the model on its whole first-layer input, given: for a conditional model the class
/// row (codes at the latent's scale; a row of [`Model::class_table`] or a blend of rows, as a
/// latent walk between classes makes) followed by the latent codes, [`Model::input_width`]
/// codes in all.
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
    let mut activations = Activations::<MAX_WIDTH>::new();
    run(
        model,
        pixels,
        &mut (),
        Input::Codes(input),
        &mut activations.narrow,
        &mut activations.wide.0,
    )
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

/// Runs the layers on the input `input` stands for, in the buffers `narrow` and `wide`
/// (`wide` 8-byte aligned for the DSP kernels).
#[inline(never)]
fn run(
    model: &Model<'_>,
    pixels: &mut [u8],
    observer: &mut dyn LayerObserver,
    input: Input<'_>,
    narrow: &mut [i8],
    wide: &mut [i16],
) -> Result<(), InferenceError> {
    if pixels.len() != model.pixel_count() {
        return Err(InferenceError::PixelBufferSize {
            expected: model.pixel_count(),
            found: pixels.len(),
        });
    }
    let capacity = narrow.len().min(wide.len());
    if model.activation_width() > capacity {
        return Err(InferenceError::ActivationBuffers {
            needed: model.activation_width(),
            capacity,
        });
    }
    let mut width = model.input_width().min(capacity);
    match input {
        Input::Seed { seed, class } => {
            // The class row first, then the latent vector: `cgan.py`'s order.
            let row = match (model.class_table(), class) {
                (Some(table), Some(class)) => table.row(class),
                _ => None,
            };
            let row = row.unwrap_or(&[]);
            let split = row.len().min(width);
            let (front, latent) = narrow[..width].split_at_mut(split);
            for (slot, &code) in front.iter_mut().zip(row) {
                *slot = code as i8;
            }
            sample_latent(seed, latent);
        }
        Input::Codes(codes) => {
            for (slot, &code) in narrow[..width].iter_mut().zip(codes.iter()) {
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
            let split = row_from.len().min(width);
            let (front, latent) = narrow[..width].split_at_mut(split);
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

    for (index, layer) in model.layers().iter().enumerate() {
        // The previous layer's int8 outputs become this layer's i16 inputs.
        widen(&narrow[..width], wide);
        observer.layer_started(index);
        let inputs = &wide[..];
        match layer.output {
            LayerOutput::LeakyRelu {
                zero_point,
                negative_slope_q31,
            } => {
                let mut out = narrow.iter_mut();
                dense(
                    layer.weight_format,
                    layer.weights,
                    layer.channels,
                    layer.inputs,
                    inputs,
                    |params, acc| {
                        if let Some(slot) = out.next() {
                            *slot = leaky_relu_requant(acc, params, negative_slope_q31, zero_point);
                        }
                    },
                );
                width = layer.outputs.min(capacity);
            }
            LayerOutput::TanhPixels { lut } => {
                let mut out = pixels.iter_mut();
                dense(
                    layer.weight_format,
                    layer.weights,
                    layer.channels,
                    layer.inputs,
                    inputs,
                    |params, acc| {
                        if let Some(slot) = out.next() {
                            *slot = tanh_pixel(acc, params, lut);
                        }
                    },
                );
            }
        }
        observer.layer_finished(index);
    }
    Ok(())
}
