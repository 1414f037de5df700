//! AdamW under fixed pruning masks, and a learning-rate schedule.
//!
//! [`MaskedAdamW`] wraps candle-nn's AdamW (Loshchilov and Hutter, 2019, decoupled weight
//! decay): before each step the gradient of a masked parameter is multiplied by its mask, and
//! after it the parameter is, so an entry pruned to zero stays exactly zero whatever the
//! optimizer's state.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::encoder::Param;
use crate::TrainError;

/// AdamW whose masked parameters keep their zeros.
pub struct MaskedAdamW {
    opt: AdamW,
    masks: Vec<(Var, Tensor)>,
}

impl MaskedAdamW {
    /// An optimizer over `vars` (e.g. [`crate::TrainableBert::trainable_vars`] plus a task
    /// head's), holding at zero the masked entries of `masked` (the parameters whose masks
    /// apply; those not among `vars` are ignored).
    pub fn new<'a>(
        vars: Vec<Var>,
        masked: impl IntoIterator<Item = &'a Param>,
        params: ParamsAdamW,
    ) -> Result<MaskedAdamW, TrainError> {
        let masks = masked
            .into_iter()
            .filter(|p| vars.iter().any(|v| v.as_tensor().id() == p.var.as_tensor().id()))
            .filter_map(|p| p.mask.clone().map(|m| (p.var.clone(), m)))
            .collect();
        Ok(MaskedAdamW { opt: AdamW::new(vars, params)?, masks })
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.opt.learning_rate()
    }

    /// Set the learning rate (for a schedule).
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.opt.set_learning_rate(lr);
    }

    /// Multiply each masked parameter's gradient by its mask.
    pub fn mask_grads(&self, grads: &mut GradStore) -> Result<(), TrainError> {
        for (var, mask) in &self.masks {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), g.mul(mask)?);
            }
        }
        Ok(())
    }

    /// One step from `grads`: masked gradients, the AdamW update, masked parameters.
    pub fn step(&mut self, mut grads: GradStore) -> Result<(), TrainError> {
        self.step_shared(&mut grads)
    }

    /// [`Self::step`] on a gradient store shared with other optimizers (each updates its own
    /// variables; this one's masked gradients are left masked in `grads`).
    pub fn step_shared(&mut self, grads: &mut GradStore) -> Result<(), TrainError> {
        self.mask_grads(grads)?;
        self.opt.step(grads)?;
        for (var, mask) in &self.masks {
            var.set(&var.as_tensor().mul(mask)?)?;
        }
        Ok(())
    }

    /// Backpropagate `loss` (a scalar) and take one [`Self::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<(), TrainError> {
        let grads = loss.backward()?;
        self.step(grads)
    }
}

/// A learning rate that rises linearly from 0 to `peak` over `warmup` steps, then falls
/// linearly to `peak · final_fraction` at step `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The largest rate, reached at the end of the warmup.
    pub peak: f64,
    /// Steps of linear warmup.
    pub warmup: usize,
    /// Steps in all.
    pub total: usize,
    /// The rate at the last step as a fraction of the peak.
    pub final_fraction: f64,
}

impl LrSchedule {
    /// The rate for step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / (self.warmup + 1) as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let t = ((step - self.warmup) as f64 / span).min(1.0);
        self.peak * (1.0 - t * (1.0 - self.final_fraction))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = LrSchedule { peak: 1.0, warmup: 4, total: 14, final_fraction: 0.0 };
        assert!((s.at(0) - 0.2).abs() < 1e-12);
        assert!(s.at(3) < s.at(4));
        assert_eq!(s.at(4), 1.0);
        assert!((s.at(9) - 0.5).abs() < 1e-12);
        assert!(s.at(13) > 0.0 && s.at(13) < s.at(12));
        assert_eq!(s.at(100), 0.0);
    }
}
