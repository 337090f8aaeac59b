//! The walk of tract's typed, decluttered graph from the latent input to the image: each node
//! on the chain is classified, linear work since the last activation is gathered (a dense
//! layer by probing, [`affine`]; a convolution by reading its op, [`conv`]) and an activation
//! closes a layer. A nearest upsampling waits for the convolution it folds into; a dense
//! segment that meets a convolution without an activation between them becomes a layer of its
//! own without activation.

mod affine;
mod conv;

use std::sync::Arc;

use mcugan_float_model::{Activation, FloatGenerator, FloatLayer};
use mcugan_shared::format::{MAX_LAYERS, MAX_WIDTH};
use mcugan_shared::ImageShape;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::nn::LeakyRelu;

use crate::error::Refusal;
use affine::{flat_f32, Affine, AffineStep};
use conv::{is_conv, upsample_factor, PendingConv};

/// The layers found, where tract computes each one's output, and the image's shape.
pub(crate) struct Walked {
    pub layers: Vec<FloatLayer>,
    /// Each layer's output, in order.
    pub layer_outlets: Vec<OutletId>,
    pub image: ImageShape,
}

/// What a node on the chain does.
enum Step {
    /// A linear op or a shift (see [`AffineStep`]).
    Affine(AffineStep),
    /// A `Conv` or `Deconv`.
    Conv,
    /// A nearest upsampling by this factor.
    Upsample(usize),
    /// Closes the layer.
    Activation(Activation),
}

fn classify(node: &TypedNode, slot: usize, consts: &[Option<Arc<Tensor>>]) -> Result<Step, String> {
    if let Some(ew) = node.op_as::<ElementWiseOp>() {
        if let Some(leaky) = ew.0.downcast_ref::<LeakyRelu>() {
            return Ok(Step::Activation(Activation::LeakyRelu(leaky.alpha)));
        }
        return match ew.0.name().as_str() {
            "Tanh" => Ok(Step::Activation(Activation::Tanh)),
            "Sigmoid" => Ok(Step::Activation(Activation::Sigmoid)),
            other => Err(format!(
                "element-wise {other} is not an activation the chip runs"
            )),
        };
    }
    if let Some(factor) = upsample_factor(node) {
        return factor.map(Step::Upsample).map_err(|r| r.problem);
    }
    if is_conv(node) {
        return Ok(Step::Conv);
    }
    if let Some(bin) = node.op_as::<TypedBinOp>() {
        let other = consts.iter().enumerate().find(|(i, _)| *i != slot);
        let Some(constant) = other.and_then(|(_, c)| c.as_ref()) else {
            return Err("both operands depend on the input (not a constant operand)".into());
        };
        let values = flat_f32(constant).map_err(|e| format!("{e:#}"))?;
        return match (bin.0.name(), slot) {
            ("Add", _) | ("Sub", 0) => Ok(Step::Affine(AffineStep::Shift { negate: false })),
            ("Sub", _) => Ok(Step::Affine(AffineStep::Shift { negate: true })),
            ("Mul", _) | ("Div", 0) => Ok(Step::Affine(AffineStep::Linear { bias: None })),
            ("Max", _) if values.iter().all(|&v| v == 0.0) => {
                Ok(Step::Activation(Activation::LeakyRelu(0.0)))
            }
            (name, _) => Err(format!(
                "{name} with a constant is not part of a layer the chip runs"
            )),
        };
    }
    match node.op.name().as_ref() {
        "EinSum" => {
            if consts
                .iter()
                .enumerate()
                .any(|(i, c)| i != slot && c.is_none())
            {
                Err("its weight is not a constant (an input or a computed tensor)".into())
            } else {
                Ok(Step::Affine(AffineStep::Linear { bias: None }))
            }
        }
        "AddAxis" | "RmAxis" | "Reshape" | "Identity" => Ok(Step::Affine(AffineStep::Shape)),
        "Resize" => Err(
            "a resize other than a nearest upsampling by an integer factor: the chip \
                         folds only that into the next Conv (nn.Upsample(scale_factor=k), mode \
                         'nearest', as PyTorch exports it)"
                .into(),
        ),
        other => Err(format!(
            "tract op {other} is not part of a generator the chip runs"
        )),
    }
}

/// The output shape of `outlet`, when it is fixed.
fn shape_of(model: &TypedModel, outlet: OutletId) -> Option<Vec<usize>> {
    model
        .outlet_fact(outlet)
        .ok()?
        .shape
        .as_concrete()
        .map(|s| s.to_vec())
}

/// Which input of `node` is the chain's wire (`current`); `None` for a node off the chain
/// made of constants only. Refuses a second branch, a second wire into one node, and a
/// non-constant operand.
fn chain_slot(
    node: &TypedNode,
    current: OutletId,
    consts: &[Option<Arc<Tensor>>],
) -> Result<Option<usize>, Refusal> {
    let on_chain: Vec<usize> = node
        .inputs
        .iter()
        .enumerate()
        .filter(|(_, &i)| i == current)
        .map(|(slot, _)| slot)
        .collect();
    if on_chain.is_empty() {
        if consts.iter().all(Option::is_some) {
            return Ok(None);
        }
        return Err(Refusal::new(
            node,
            "is not on the single chain from the latent input to the image \
                 (a second branch or a non-constant operand)",
        ));
    }
    if on_chain.len() > 1
        || consts
            .iter()
            .enumerate()
            .any(|(i, c)| c.is_none() && !on_chain.contains(&i))
    {
        return Err(Refusal::new(
            node,
            "combines the chain with a non-constant tensor (a skip connection, a second \
                 input or a computed weight)",
        ));
    }
    Ok(Some(on_chain[0]))
}

/// The linear work gathered since the last layer closed.
enum Pending {
    /// None: the wire is the last layer's output (or the latent input).
    Nothing,
    /// A dense layer's affine map, by probing.
    Dense(Affine),
    /// A nearest upsampling of a wire of `shape`, waiting for its convolution.
    Upsample { factor: usize, shape: Vec<usize> },
    /// A convolution and what was folded into it.
    Conv(PendingConv),
}

/// The walk's state: the layers so far and the work since the last one.
struct Walk<'m> {
    model: &'m TypedModel,
    layers: Vec<FloatLayer>,
    layer_outlets: Vec<OutletId>,
    pending: Pending,
    /// The wire: the chain's current outlet.
    current: OutletId,
}

impl Walk<'_> {
    fn shape(&self, node: &TypedNode, outlet: OutletId) -> Result<Vec<usize>, Refusal> {
        shape_of(self.model, outlet).ok_or_else(|| Refusal::new(node, "a wire of no fixed shape"))
    }

    /// Adds `layer`, computed at `outlet`.
    fn push(
        &mut self,
        node: &TypedNode,
        layer: FloatLayer,
        outlet: OutletId,
    ) -> Result<(), Refusal> {
        if self.layers.len() == MAX_LAYERS {
            return Err(Refusal::new(
                node,
                format!("the model format holds at most {MAX_LAYERS} layers"),
            ));
        }
        self.layers.push(layer);
        self.layer_outlets.push(outlet);
        Ok(())
    }

    /// Closes what is pending as a layer without activation, ending at the wire: a dense
    /// segment or a convolution that meets a convolution or an upsampling directly (a
    /// reshape alone closes nothing).
    fn close_without_activation(&mut self, node: &TypedNode) -> Result<(), Refusal> {
        let layer = match std::mem::replace(&mut self.pending, Pending::Nothing) {
            Pending::Nothing => return Ok(()),
            Pending::Dense(affine) if !affine.changed() => return Ok(()),
            Pending::Dense(affine) => affine.close(node, Activation::Identity)?,
            Pending::Conv(conv) => conv.close(node, Activation::Identity)?,
            Pending::Upsample { .. } => {
                return Err(Refusal::new(
                    node,
                    "follows an upsampling: the chip folds an upsampling only into the Conv \
                     right after it",
                ))
            }
        };
        let outlet = self.current;
        self.push(node, layer, outlet)
    }

    /// One node of the chain, its wire input at `slot`.
    fn step(
        &mut self,
        node: &TypedNode,
        slot: usize,
        consts: &[Option<Arc<Tensor>>],
    ) -> Result<bool, Refusal> {
        let step = classify(node, slot, consts).map_err(|p| Refusal::new(node, p))?;
        let out = OutletId::new(node.id, 0);
        match step {
            Step::Activation(activation) => {
                let layer =
                    match std::mem::replace(&mut self.pending, Pending::Nothing) {
                        Pending::Dense(affine) => affine.close(node, activation)?,
                        Pending::Conv(conv) => conv.close(node, activation)?,
                        Pending::Nothing => {
                            return Err(Refusal::new(
                                node,
                                "an activation with no layer before it (a second activation in a \
                             row, or one on the latent input)",
                            ))
                        }
                        Pending::Upsample { .. } => return Err(Refusal::new(
                            node,
                            "follows an upsampling: the chip folds an upsampling only into the \
                             Conv right after it",
                        )),
                    };
                if let (Activation::LeakyRelu(slope), false) =
                    (activation, activation.makes_pixels())
                {
                    if !(0.0..1.0).contains(&slope) {
                        return Err(Refusal::new(
                            node,
                            format!("LeakyRelu alpha {slope} is outside [0, 1)"),
                        ));
                    }
                }
                self.push(node, layer, out)?;
                self.current = out;
                return Ok(activation.makes_pixels());
            }
            Step::Upsample(factor) => {
                self.close_without_activation(node)?;
                let shape = self.shape(node, self.current)?;
                self.pending = Pending::Upsample { factor, shape };
            }
            Step::Conv => {
                let input = self.shape(node, self.current)?;
                let vector_like = matches!(input.as_slice(), [1, _, 1, 1]);
                let pending = std::mem::replace(&mut self.pending, Pending::Nothing);
                match pending {
                    // A convolution of a 1x1 input (a DCGAN's first ConvTranspose on the
                    // latent vector) is a dense layer: probe it.
                    Pending::Nothing | Pending::Dense(_)
                        if vector_like && input.iter().product::<usize>() <= MAX_WIDTH =>
                    {
                        let mut affine = match pending {
                            Pending::Dense(affine) => affine,
                            _ => self.identity(node, &input)?,
                        };
                        affine.apply(node, AffineStep::Linear { bias: Some(2) }, slot, consts)?;
                        self.pending = Pending::Dense(affine);
                    }
                    Pending::Upsample { factor, shape } => {
                        let conv = PendingConv::read(self.model, node, consts, &shape, factor)?;
                        self.pending = Pending::Conv(conv);
                    }
                    other => {
                        self.pending = other;
                        self.close_without_activation(node)?;
                        let conv = PendingConv::read(self.model, node, consts, &input, 1)?;
                        self.pending = Pending::Conv(conv);
                    }
                }
            }
            Step::Affine(step) => {
                match &mut self.pending {
                    Pending::Conv(conv) => match step {
                        AffineStep::Shape => {
                            return Err(Refusal::new(
                                node,
                                "reshapes a convolution's output before its activation",
                            ))
                        }
                        _ => conv.fold(node, slot, consts)?,
                    },
                    Pending::Upsample { .. } => return Err(Refusal::new(
                        node,
                        "follows an upsampling: the chip folds an upsampling only into the Conv \
                         right after it",
                    )),
                    Pending::Dense(affine) => affine.apply(node, step, slot, consts)?,
                    Pending::Nothing => {
                        // Reshapes move nothing in memory: only linear work starts a layer.
                        if !matches!(step, AffineStep::Shape) {
                            let input = self.shape(node, self.current)?;
                            let mut affine = self.identity(node, &input)?;
                            affine.apply(node, step, slot, consts)?;
                            self.pending = Pending::Dense(affine);
                        }
                    }
                }
            }
        }
        self.current = out;
        Ok(false)
    }

    /// The identity map on a wire of `shape`, the input of a dense layer.
    fn identity(&self, node: &TypedNode, shape: &[usize]) -> Result<Affine, Refusal> {
        let width: usize = shape.iter().product();
        if width > MAX_WIDTH {
            return Err(Refusal::new(
                node,
                format!(
                    "makes a dense layer of {width} inputs; the chip's dense layers take at \
                     most {MAX_WIDTH} (a scale or shift outside a convolution is one too)"
                ),
            ));
        }
        Affine::identity(shape).map_err(|e| Refusal::new(node, format!("{e:#}")))
    }
}

/// Walks the decluttered graph from its input to its output; see the module comment.
pub(crate) fn walk(model: &TypedModel) -> Result<Walked, Refusal> {
    let input = model
        .input_outlets()
        .ok()
        .and_then(|i| i.first().copied())
        .ok_or_else(|| Refusal::graph("input", "no input"))?;
    let output = model
        .output_outlets()
        .ok()
        .and_then(|o| o.first().copied())
        .ok_or_else(|| Refusal::graph("output", "no output"))?;
    let order = model
        .eval_order()
        .map_err(|e| Refusal::graph("graph", format!("{e:#}")))?;
    let mut walk = Walk {
        model,
        layers: Vec::new(),
        layer_outlets: Vec::new(),
        pending: Pending::Nothing,
        current: input,
    };
    let mut finished = false;
    for &id in &order {
        let node = model.node(id);
        if node.inputs.is_empty() {
            continue; // the source, and constants
        }
        let consts: Vec<Option<Arc<Tensor>>> = node
            .inputs
            .iter()
            .map(|&i| model.outlet_fact(i).ok().and_then(|f| f.konst.clone()))
            .collect();
        let Some(slot) = chain_slot(node, walk.current, &consts)? else {
            continue; // constant arithmetic that declutter left
        };
        if finished {
            let step = classify(node, slot, &consts).map_err(|p| Refusal::new(node, p))?;
            if !matches!(step, Step::Affine(AffineStep::Shape)) {
                return Err(Refusal::new(
                    node,
                    "follows a Tanh or Sigmoid: the chip applies those only to the last layer \
                     (hidden layers use LeakyRelu or Relu), and only reshapes may follow it",
                ));
            }
            walk.current = OutletId::new(id, 0);
            continue;
        }
        finished = walk.step(node, slot, &consts)?;
    }
    finish(model, &order, walk, output, finished)
}

/// Checks that the chain ends at the graph's output in a pixel activation, and reads the
/// image shape off the output.
fn finish(
    model: &TypedModel,
    order: &[usize],
    walk: Walk<'_>,
    output: OutletId,
    finished: bool,
) -> Result<Walked, Refusal> {
    let Some(last) = order.last().map(|&id| model.node(id)) else {
        return Err(Refusal::graph("graph", "the graph is empty"));
    };
    if walk.current != output {
        return Err(Refusal::new(
            last,
            "the graph's output is not the end of the chain",
        ));
    }
    if !finished {
        return Err(Refusal::new(
            last,
            "the graph does not end in Tanh or Sigmoid (the chip's pixel output)",
        ));
    }
    let shape = shape_of(model, output)
        .ok_or_else(|| Refusal::new(last, "the output has no fixed shape"))?;
    let pixels = walk.layers.last().map_or(0, |l| l.outputs);
    let image = image_shape(&shape, pixels).map_err(|p| Refusal::new(last, p))?;
    Ok(Walked {
        layers: walk.layers,
        layer_outlets: walk.layer_outlets,
        image,
    })
}

/// The image shape of an output of `shape` (batch first): `[1, C, H, W]` of one or three
/// channels, `[1, H, W]`, or a flat `[1, H*W]` of a square grayscale image.
fn image_shape(shape: &[usize], pixels: usize) -> Result<ImageShape, String> {
    let side = |v: usize| u16::try_from(v).map_err(|_| format!("an image side of {v} pixels"));
    let dims: Vec<usize> = shape.iter().copied().skip(1).collect();
    let (channels, height, width) = match dims.as_slice() {
        [c @ (1 | 3), h, w] => (*c, *h, *w),
        [h, w] => (1, *h, *w),
        [n] => {
            return FloatGenerator::square_image(*n).ok_or_else(|| {
                format!(
                    "a flat output of {n} values is not a square image; reshape it to \
                     [batch, channels, H, W] at export"
                )
            })
        }
        [c, _, _] => {
            return Err(format!(
                "an image of {c} channels; the chip draws grayscale (1) or RGB (3)"
            ))
        }
        _ => {
            return Err(format!(
                "output shape {shape:?} is not [batch, channels, H, W]"
            ))
        }
    };
    if channels * width * height != pixels {
        return Err(format!(
            "output shape {shape:?} holds {} values, the last layer makes {pixels}",
            channels * width * height
        ));
    }
    Ok(ImageShape {
        width: side(width)?,
        height: side(height)?,
        channels: channels as u8,
    })
}
