//! The losses of the reference scripts: `gan.py`'s binary cross-entropy (in its stable
//! with-logits form) and `cgan.py`'s mean squared error.

use candle_core::{Result, Tensor};

/// The mean squared error against a constant `target`: `cgan.py`'s `MSELoss` on a batch of
/// one kind (the generator's step: every fake should score 1).
pub fn mse(predictions: &Tensor, target: f64) -> Result<Tensor> {
    (predictions - target)?.sqr()?.mean_all()
}

/// The mean squared error against per-sample `targets` (same shape): the discriminator's
/// `(MSE(real, 1) + MSE(fake, 0)) / 2` over one batch of both halves.
pub fn mse_targets(predictions: &Tensor, targets: &Tensor) -> Result<Tensor> {
    (predictions - targets)?.sqr()?.mean_all()
}

/// Binary cross-entropy of `sigmoid(logits)` against a constant target (1 real, 0 fake),
/// averaged over the batch — PyTorch's `BCELoss()(Sigmoid(x), y)`, computed in the stable
/// form `softplus(x) − y·x` (the same value and gradient without the `log(0)` clamp).
pub fn bce_with_logits(logits: &Tensor, target: f64) -> Result<Tensor> {
    // softplus(x) = max(x, 0) + log(1 + exp(-|x|))
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (logits * target)?)?.mean_all()
}

/// Binary cross-entropy of `sigmoid(logits)` against per-sample `targets` (same shape),
/// averaged: the discriminator's loss on real and fake images in one batch.
pub fn bce_with_logit_targets(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let softplus = (logits.relu()? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus - (logits * targets)?)?.mean_all()
}
