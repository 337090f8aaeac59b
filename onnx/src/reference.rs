//! The imported graph as the float reference: tract runs it, returning every layer's output,
//! so that calibration and the float-vs-int8 comparisons measure against the model itself.

use std::sync::Arc;

use mcugan_float_model::{FloatReference, ReferenceError};
use tract_onnx::prelude::*;

/// The ONNX graph run by tract, returning every layer's activation output.
pub(crate) struct TractReference {
    pub plan: Arc<TypedRunnableModel>,
    /// The latent input's shape for one image (`[1, Z]` or `[1, Z, 1, 1]`).
    pub input_shape: Vec<usize>,
    pub source: String,
}

impl TractReference {
    fn latent_dim(&self) -> usize {
        self.input_shape.iter().product()
    }
}

impl FloatReference for TractReference {
    fn describe(&self) -> String {
        format!("the ONNX graph {} run by tract-onnx", self.source)
    }

    fn forward_all(&self, z: &[f32]) -> Result<Vec<Vec<f32>>, ReferenceError> {
        let fail = |e: TractError| ReferenceError(format!("{}: tract: {e:#}", self.source));
        if z.len() != self.latent_dim() {
            return Err(ReferenceError(format!(
                "{}: latent vector of {} values, the graph takes {}",
                self.source,
                z.len(),
                self.latent_dim()
            )));
        }
        let input = Tensor::from_shape(&self.input_shape, z).map_err(fail)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(fail)?;
        outputs
            .iter()
            .map(|value| {
                value
                    .try_as_plain_ram()
                    .and_then(|plain| plain.as_slice::<f32>().map(<[f32]>::to_vec))
                    .map_err(fail)
            })
            .collect()
    }
}
