//! AArch64 kernels: Advanced SIMD (NEON), and the dot-product extension (`sdot`).

use super::Kernels;

/// Whether the CPU has the dot-product extension.
pub(super) fn dotprod_detected() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Puts the NEON kernels into `k`.
pub(super) fn fill_neon(_k: &mut Kernels) {}

/// Puts the dot-product kernels into `k`.
pub(super) fn fill_dotprod(_k: &mut Kernels) {}
