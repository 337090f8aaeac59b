//! Convolutional layers, read from tract's `Conv` and `Deconv` ops (kernel, bias, strides,
//! padding), a `NearestUpsample` before a `Conv` folded into it, and the per-channel scales and
//! shifts after one (an inference-mode BatchNorm) folded into its weights and bias.

use std::sync::Arc;

use mcugan_float_model::{Activation, Conv2d, FloatLayer};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::nn::{DataFormat, NearestUpsample};

use super::affine::flat_f32;
use crate::error::Refusal;

/// A convolution read from the graph, with what followed it folded in, until its activation.
pub(super) struct PendingConv {
    conv: Conv2d,
    /// `[out][in][kh][kw]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// The channels, rows and columns of a `[1, C, H, W]` wire.
fn chw(node: &TypedNode, shape: &[usize], what: &str) -> Result<[usize; 3], Refusal> {
    match shape {
        [1, c, h, w] => Ok([*c, *h, *w]),
        other => Err(Refusal::new(
            node,
            format!("its {what} has the shape {other:?}, not [1, channels, rows, columns]"),
        )),
    }
}

/// Padding before the first row and column of a convolution of `kernel`, `stride` from
/// `input` to `output` (rows, columns).
fn padding_before(
    node: &TypedNode,
    spec: &PoolSpec,
    [input, output, kernel, stride]: [[usize; 2]; 4],
    transposed: bool,
) -> Result<[usize; 2], Refusal> {
    let same = |lower: bool| -> Result<[usize; 2], Refusal> {
        if transposed {
            return Err(Refusal::new(
                node,
                "auto_pad SAME on a ConvTranspose: export it with explicit pads",
            ));
        }
        let mut before = [0; 2];
        for axis in 0..2 {
            let total = ((output[axis].saturating_sub(1)) * stride[axis] + kernel[axis])
                .saturating_sub(input[axis]);
            before[axis] = if lower { total - total / 2 } else { total / 2 };
        }
        Ok(before)
    };
    match &spec.padding {
        PaddingSpec::Explicit(before, _) | PaddingSpec::ExplicitOnnxPool(before, _, _) => {
            match before.as_slice() {
                [y, x] => Ok([*y, *x]),
                other => Err(Refusal::new(node, format!("padding {other:?} is not 2-D"))),
            }
        }
        PaddingSpec::Valid => Ok([0, 0]),
        PaddingSpec::SameUpper => same(false),
        PaddingSpec::SameLower => same(true),
    }
}

/// The `[out][in][kh][kw]` weights of a kernel stored in `format`.
fn kernel_oihw(
    node: &TypedNode,
    kernel: &Tensor,
    format: &KernelFormat,
    [out, inp, kh, kw]: [usize; 4],
) -> Result<Vec<f32>, Refusal> {
    let shape = kernel.shape();
    let expected = match format {
        KernelFormat::OIHW => [out, inp, kh, kw],
        KernelFormat::HWIO => [kh, kw, inp, out],
        KernelFormat::OHWI => [out, kh, kw, inp],
    };
    if shape != expected {
        return Err(Refusal::new(
            node,
            format!("its kernel has the shape {shape:?}, expected {expected:?} ({format:?})"),
        ));
    }
    let values = flat_f32(kernel).map_err(|e| Refusal::new(node, format!("{e:#}")))?;
    let mut strides = [0usize; 4];
    let mut step = 1;
    for axis in (0..4).rev() {
        strides[axis] = step;
        step *= shape[axis];
    }
    let (o_axis, i_axis, h_axis) = (format.o_axis(shape), format.i_axis(shape), format.h_axis());
    let mut weight = Vec::with_capacity(out * inp * kh * kw);
    for o in 0..out {
        for i in 0..inp {
            for y in 0..kh {
                for x in 0..kw {
                    weight.push(
                        values[o * strides[o_axis]
                            + i * strides[i_axis]
                            + y * strides[h_axis]
                            + x * strides[h_axis + 1]],
                    );
                }
            }
        }
    }
    Ok(weight)
}

/// Whether `node` is a convolution (`Conv` or `Deconv`).
pub(super) fn is_conv(node: &TypedNode) -> bool {
    node.op_as::<Conv>().is_some() || node.op_as::<Deconv>().is_some()
}

impl PendingConv {
    /// Reads the convolution `node`, whose wire input has `input_shape` (before an upsampling
    /// by `upsample`) and whose kernel and bias are the constants in `consts`.
    pub fn read(
        model: &TypedModel,
        node: &TypedNode,
        consts: &[Option<Arc<Tensor>>],
        input_shape: &[usize],
        upsample: usize,
    ) -> Result<Self, Refusal> {
        let (spec, format, group, transposed) = if let Some(conv) = node.op_as::<Conv>() {
            if conv.q_params.is_some() {
                return Err(Refusal::new(
                    node,
                    "a quantized convolution: export it in float",
                ));
            }
            (&conv.pool_spec, &conv.kernel_fmt, conv.group, false)
        } else if let Some(deconv) = node.op_as::<Deconv>() {
            (&deconv.pool_spec, &deconv.kernel_format, deconv.group, true)
        } else {
            return Err(Refusal::new(node, "not a convolution"));
        };
        if upsample > 1 && transposed {
            return Err(Refusal::new(
                node,
                "a ConvTranspose after an upsampling: the chip folds upsampling only into a Conv",
            ));
        }
        if spec.data_format != DataFormat::NCHW {
            return Err(Refusal::new(
                node,
                format!(
                    "data format {:?}: the importer reads NCHW",
                    spec.data_format
                ),
            ));
        }
        if group != 1 {
            return Err(Refusal::new(
                node,
                format!("{group} groups: the chip runs convolutions of one group"),
            ));
        }
        let two = |v: Option<&TVec<usize>>, what: &str| -> Result<[usize; 2], Refusal> {
            match v.map(|v| v.as_slice()) {
                None => Ok([1, 1]),
                Some([y, x]) => Ok([*y, *x]),
                Some(other) => Err(Refusal::new(node, format!("{what} {other:?} are not 2-D"))),
            }
        };
        let kernel = two(Some(&spec.kernel_shape), "kernel dimensions")?;
        let stride = two(spec.strides.as_ref(), "strides")?;
        if two(spec.dilations.as_ref(), "dilations")? != [1, 1] {
            return Err(Refusal::new(
                node,
                "a dilated convolution: the chip runs dilation 1",
            ));
        }
        let [cin, ih, iw] = chw(node, input_shape, "input")?;
        let output = model
            .outlet_fact(OutletId::new(node.id, 0))
            .ok()
            .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
            .ok_or_else(|| Refusal::new(node, "its output has no fixed shape"))?;
        let [cout, oh, ow] = chw(node, &output, "output")?;
        let padding = padding_before(
            node,
            spec,
            [[ih * upsample, iw * upsample], [oh, ow], kernel, stride],
            transposed,
        )?;
        let kernel_tensor = consts
            .get(1)
            .cloned()
            .flatten()
            .ok_or_else(|| Refusal::new(node, "its weight is not a constant"))?;
        let weight = kernel_oihw(
            node,
            &kernel_tensor,
            format,
            [cout, cin, kernel[0], kernel[1]],
        )?;
        let bias = match consts.get(2) {
            None => vec![0.0; cout],
            Some(None) => return Err(Refusal::new(node, "its bias is not a constant")),
            Some(Some(bias)) => {
                let values = flat_f32(bias).map_err(|e| Refusal::new(node, format!("{e:#}")))?;
                match values.len() {
                    1 => vec![values[0]; cout],
                    n if n == cout => values,
                    n => {
                        return Err(Refusal::new(
                            node,
                            format!("a bias of {n} values for {cout} output channels"),
                        ))
                    }
                }
            }
        };
        let conv = Conv2d {
            transposed,
            in_channels: cin,
            out_channels: cout,
            input: [ih, iw],
            output: [oh, ow],
            kernel,
            stride,
            padding,
            upsample,
        };
        conv.check()
            .map_err(|e| Refusal::new(node, e.to_string()))?;
        Ok(Self { conv, weight, bias })
    }

    /// Folds `node`, a `Mul`/`Div`/`Add`/`Sub` of the wire (at `slot`) and a constant, into
    /// the weights and bias when the constant is one value per output channel (or one for
    /// all).
    pub fn fold(
        &mut self,
        node: &TypedNode,
        slot: usize,
        consts: &[Option<Arc<Tensor>>],
    ) -> Result<(), Refusal> {
        let per_channel = "between a convolution and its activation only per-channel scales and \
                           shifts (an inference BatchNorm) can be folded into it";
        let Some(bin) = node.op_as::<TypedBinOp>() else {
            return Err(Refusal::new(node, per_channel));
        };
        let Some(constant) = consts
            .iter()
            .enumerate()
            .find(|(i, _)| *i != slot)
            .and_then(|(_, c)| c.as_ref())
        else {
            return Err(Refusal::new(node, per_channel));
        };
        let cout = self.conv.out_channels;
        let shape = constant.shape();
        let volume: usize = shape.iter().product();
        // Broadcast against [1, C, H, W]: one value, or C values on the channel axis.
        let channel_axis = shape.len().checked_sub(3);
        let on_channels = volume == cout
            && channel_axis.is_some_and(|axis| {
                shape
                    .iter()
                    .enumerate()
                    .all(|(i, &d)| if i == axis { d == cout } else { d == 1 })
            });
        if volume != 1 && !on_channels {
            return Err(Refusal::new(
                node,
                format!(
                    "its constant of shape {shape:?} is not one value per channel; {per_channel}"
                ),
            ));
        }
        let values = flat_f32(constant).map_err(|e| Refusal::new(node, format!("{e:#}")))?;
        let value = |o: usize| values[if volume == 1 { 0 } else { o }];
        let row = self.conv.row_len();
        for o in 0..cout {
            let v = value(o);
            let weights = &mut self.weight[o * row..(o + 1) * row];
            let bias = &mut self.bias[o];
            match (bin.0.name(), slot) {
                ("Mul", _) => {
                    weights.iter_mut().for_each(|w| *w *= v);
                    *bias *= v;
                }
                ("Div", 0) => {
                    weights.iter_mut().for_each(|w| *w /= v);
                    *bias /= v;
                }
                ("Add", _) => *bias += v,
                ("Sub", 0) => *bias -= v,
                ("Sub", _) => {
                    weights.iter_mut().for_each(|w| *w = -*w);
                    *bias = v - *bias;
                }
                (name, _) => {
                    return Err(Refusal::new(
                        node,
                        format!("{name} with a constant is not part of a convolution layer"),
                    ))
                }
            }
        }
        Ok(())
    }

    /// The layer, ended by `activation`; refused when the chip cannot run its geometry.
    pub fn close(self, node: &TypedNode, activation: Activation) -> Result<FloatLayer, Refusal> {
        self.conv
            .check()
            .map_err(|e| Refusal::new(node, e.to_string()))?;
        Ok(FloatLayer::convolution(
            self.conv,
            self.weight,
            self.bias,
            activation,
        ))
    }
}

/// The integer factor of a nearest upsampling of `[1, C, H, W]` (the same along rows and
/// columns, 1 along batch and channels).
pub(super) fn upsample_factor(node: &TypedNode) -> Option<Result<usize, Refusal>> {
    let up = node.op_as::<NearestUpsample>()?;
    Some(match up.scales.as_slice() {
        [1, 1, y, x] if y == x && *y > 1 => Ok(*y),
        other => Err(Refusal::new(
            node,
            format!(
                "an upsampling by {other:?}: the chip folds the same integer factor along rows \
                 and columns into the next Conv"
            ),
        )),
    })
}
