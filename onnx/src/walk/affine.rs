//! Dense layers, by probing: the affine map from a dense layer's input to the wire is kept as
//! one tensor per input feature (the image of a one-hot vector under the linear part) and one
//! for the offset. Every linear op on the wire (`EinSum`, `Mul`/`Div` by a constant, reshapes,
//! a convolution of a 1x1 input) is evaluated by tract itself on those tensors, an `Add`/`Sub`
//! of a constant moves the offset, and an activation closes the layer. A one-hot input makes
//! each product a single weight, so the weights come out exactly as stored; only folded
//! BatchNorm scales round once more in `f32`.

use std::sync::Arc;

use mcugan_float_model::{Activation, FloatLayer};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::EvalContext;

use crate::error::Refusal;

/// The affine map from the current layer's input to a wire: `lin[k]` is the wire's value for
/// the one-hot input `e_k` through the linear part, `offset` its value for input 0.
pub(super) struct Affine {
    lin: Vec<Tensor>,
    offset: Tensor,
    /// Whether a linear op or a shift has been applied (not only reshapes).
    changed: bool,
}

/// Runs `op` on `inputs`, the wire's tensor standing at `slot` and constants elsewhere.
pub(super) fn eval_with(
    op: &dyn TypedOp,
    consts: &[Option<Arc<Tensor>>],
    slot: usize,
    wire: &Tensor,
) -> TractResult<Tensor> {
    let inputs: TVec<TValue> = consts
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            _ if i == slot => wire.clone().into_tvalue(),
            Some(c) => (**c).clone().into_tvalue(),
            None => wire.clone().into_tvalue(),
        })
        .collect();
    let mut outputs = op.eval(&EvalContext::out_of_plan(), inputs)?;
    Ok(outputs.remove(0).into_tensor())
}

/// A tensor's values as `f32`, in its (row-major) order.
pub(super) fn flat_f32(tensor: &Tensor) -> TractResult<Vec<f32>> {
    Ok(tensor
        .cast_to::<f32>()?
        .try_as_plain_ram()?
        .as_slice::<f32>()?
        .to_vec())
}

/// How a node changes the affine map.
pub(super) enum AffineStep {
    /// Linear in the wire: applied to every part of the map. `bias`: the input slot of a
    /// bias the op adds (a convolution's), which the linear parts are evaluated without.
    Linear { bias: Option<usize> },
    /// Adds a constant: moves the offset only (`negate`: the wire is subtracted from it).
    Shift { negate: bool },
    /// Changes only the shape.
    Shape,
}

impl Affine {
    /// The identity on a wire of `shape` whose volume is the layer's input width.
    pub fn identity(shape: &[usize]) -> TractResult<Self> {
        let width: usize = shape.iter().product();
        let lin = (0..width)
            .map(|k| {
                let mut one_hot = vec![0f32; width];
                one_hot[k] = 1.0;
                Tensor::from_shape(shape, &one_hot)
            })
            .collect::<TractResult<Vec<_>>>()?;
        let offset = Tensor::from_shape(shape, &vec![0f32; width])?;
        Ok(Self {
            lin,
            offset,
            changed: false,
        })
    }

    /// Whether anything but reshapes was applied since [`Affine::identity`].
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Applies `node`'s `step` (its wire input at `slot`, constants in `consts`).
    pub fn apply(
        &mut self,
        node: &TypedNode,
        step: AffineStep,
        slot: usize,
        consts: &[Option<Arc<Tensor>>],
    ) -> Result<(), Refusal> {
        let fail = |e: TractError| Refusal::new(node, format!("{e:#}"));
        let op = node.op.as_ref();
        match step {
            AffineStep::Linear { bias } => {
                let unbiased: Vec<Option<Arc<Tensor>>> = match bias {
                    Some(at) => consts
                        .iter()
                        .enumerate()
                        .map(|(i, c)| match (i == at, c) {
                            (true, Some(c)) => Tensor::zero_dt(c.datum_type(), c.shape())
                                .map(|z| Some(Arc::new(z))),
                            _ => Ok(c.clone()),
                        })
                        .collect::<TractResult<_>>()
                        .map_err(fail)?,
                    None => consts.to_vec(),
                };
                self.lin = self
                    .lin
                    .iter()
                    .map(|t| eval_with(op, &unbiased, slot, t))
                    .collect::<TractResult<_>>()
                    .map_err(fail)?;
                self.offset = eval_with(op, consts, slot, &self.offset).map_err(fail)?;
                self.changed = true;
            }
            AffineStep::Shape => {
                self.lin = self
                    .lin
                    .iter()
                    .map(|t| eval_with(op, consts, slot, t))
                    .collect::<TractResult<_>>()
                    .map_err(fail)?;
                self.offset = eval_with(op, consts, slot, &self.offset).map_err(fail)?;
            }
            AffineStep::Shift { negate } => {
                let shifted = eval_with(op, consts, slot, &self.offset).map_err(fail)?;
                if shifted.shape() != self.offset.shape() {
                    return Err(Refusal::new(
                        node,
                        "its constant broadcasts the wire to another shape",
                    ));
                }
                self.offset = shifted;
                if negate {
                    for t in &mut self.lin {
                        let negated: Vec<f32> =
                            flat_f32(t).map_err(fail)?.iter().map(|v| -v).collect();
                        *t = Tensor::from_shape(t.shape(), &negated).map_err(fail)?;
                    }
                }
                self.changed = true;
            }
        }
        Ok(())
    }

    /// The dense layer the map makes, ended by `node`'s `activation`.
    pub fn close(&self, node: &TypedNode, activation: Activation) -> Result<FloatLayer, Refusal> {
        let fail = |e: TractError| Refusal::new(node, format!("{e:#}"));
        let offset = flat_f32(&self.offset).map_err(fail)?;
        let inputs = self.lin.len();
        let outputs = offset.len();
        let mut weight = vec![0f32; outputs * inputs];
        for (k, column) in self.lin.iter().enumerate() {
            let column = flat_f32(column).map_err(fail)?;
            for (o, &w) in column.iter().enumerate() {
                weight[o * inputs + k] = w;
            }
        }
        Ok(FloatLayer::dense(
            inputs, outputs, weight, offset, activation,
        ))
    }
}
