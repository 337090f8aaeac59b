//! Single-precision matrix products on the CPU with the `gemm` crate (the one candle's CPU
//! backend uses): row-major operands read through their steps, so a transpose costs nothing.
//! The fused training step and the phased convolution use them.

use gemm::Parallelism;

/// A row-major operand of [`matmul`]: its elements and the steps between rows and columns.
pub(crate) struct Operand<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) row_step: usize,
    pub(crate) col_step: usize,
}

impl<'a> Operand<'a> {
    /// `data` as a row-major matrix of `cols` columns.
    pub(crate) fn rows(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_step: cols,
            col_step: 1,
        }
    }

    /// The transpose of `data`, a row-major matrix of `cols` columns.
    pub(crate) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self {
            data,
            row_step: 1,
            col_step: cols,
        }
    }

    /// Whether a `rows × cols` matrix with these steps lies inside `data`.
    pub(crate) fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_step + (cols - 1) * self.col_step < self.data.len()
    }
}

/// `out[m×n] = a[m×k] · b[k×n]` with `out` row-major and `a`, `b` read through their steps.
pub(crate) fn matmul(
    par: Parallelism,
    out: &mut [f32],
    a: Operand,
    b: Operand,
    m: usize,
    n: usize,
    k: usize,
) {
    assert!(out.len() >= m * n && a.fits(m, k) && b.fits(k, n));
    // SAFETY: every element the sizes and steps reach lies inside its slice (checked above),
    // and `out` does not alias the operands (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            a.col_step as isize,
            a.row_step as isize,
            b.data.as_ptr(),
            b.col_step as isize,
            b.row_step as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `out[m×n] = a[m×k] · b[n×k]ᵀ`, all row-major.
pub(crate) fn matmul_a_bt(
    par: Parallelism,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let a = Operand::rows(a, k);
    let b = Operand::transposed(b, k);
    matmul(par, out, a, b, m, n, k);
}

/// `out[m×n] = a[m×k] · b[k×n]`, all row-major.
pub(crate) fn matmul_a_b(
    par: Parallelism,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    m: usize,
    n: usize,
    k: usize,
) {
    let a = Operand::rows(a, k);
    let b = Operand::rows(b, n);
    matmul(par, out, a, b, m, n, k);
}

/// `out[m×n] = a[k×m]ᵀ · b[k×n]`, all row-major: the weight gradient `dhᵀ x` over a batch of
/// `k` rows.
pub(crate) fn matmul_at_b(
    par: Parallelism,
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    k: usize,
    m: usize,
    n: usize,
) {
    let a = Operand::transposed(a, m);
    let b = Operand::rows(b, n);
    matmul(par, out, a, b, m, n, k);
}
