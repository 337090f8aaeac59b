//! The per-batch loss log (`losses.csv`): losses read back from the engine in groups, checked
//! for divergence, and cut back to the checkpoint on resume.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use super::divergence::last_good;
use super::MAX_PLAUSIBLE_LOSS;
use crate::engine::TrainingStep;

/// Batches whose losses are read back together: reading a loss waits for the device, so on a
/// GPU they are read in groups (the log still has every batch).
pub(super) const LOSS_READ_INTERVAL: usize = 50;

/// The batches trained but not yet in the loss log, as `(epoch, batch, batches_done)`; their
/// losses wait in the engine until [`PendingLosses::flush`] reads them.
pub(super) struct PendingLosses {
    pub(super) rows: Vec<(usize, usize, u64)>,
}

impl PendingLosses {
    /// Reads the pending batches' losses from `step`, writes them to the log, and returns the
    /// last pair; a loss that is not finite is an error that names its batch.
    pub(super) fn flush(
        &mut self,
        step: &mut dyn TrainingStep,
        log: &mut impl Write,
        checkpoint: &Path,
    ) -> anyhow::Result<Option<(f32, f32)>> {
        if self.rows.is_empty() {
            return Ok(None);
        }
        let losses = step.take_losses()?;
        if losses.len() != self.rows.len() {
            bail!(
                "{} losses came back for {} batches",
                losses.len(),
                self.rows.len()
            );
        }
        for (&(epoch, batch, done), &(d, g)) in self.rows.iter().zip(&losses) {
            let diverged = if !d.is_finite() || !g.is_finite() {
                Some("is not finite")
            } else if d.abs() > MAX_PLAUSIBLE_LOSS || g.abs() > MAX_PLAUSIBLE_LOSS {
                Some("exploded")
            } else {
                None
            };
            if let Some(how) = diverged {
                log.flush()?;
                bail!(
                    "the loss {how} at epoch {}, batch {batch} (D {d}, G {g}): training diverged \
                     and was stopped; {}",
                    epoch + 1,
                    last_good(checkpoint)
                );
            }
            writeln!(log, "{epoch},{batch},{done},{d},{g}")?;
        }
        self.rows.clear();
        Ok(losses.last().copied())
    }
}

/// Opens the loss log: a fresh one, or on resume the old one cut back to the batches the
/// checkpoint holds, so a killed run leaves no rows that will be trained again.
pub(super) fn open_loss_log(path: &Path, resume_at: Option<u64>) -> anyhow::Result<fs::File> {
    const HEADER: &str = "epoch,batch,batches_done,d_loss,g_loss\n";
    let mut kept = String::from(HEADER);
    if let Some(done) = resume_at {
        if let Ok(old) = fs::read_to_string(path) {
            for line in old.lines().skip(1) {
                let row_done = line.split(',').nth(2).and_then(|v| v.parse::<u64>().ok());
                if matches!(row_done, Some(n) if n < done) {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
        }
    }
    mcugan_model_tools::fsutil::write_atomically(path, kept.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}
