//! Fixed-point requantization: scaling an `i32` accumulator by a real factor with integer
//! arithmetic only, so that the same code runs on cores without an FPU and gives the same bytes
//! everywhere.
//!
//! A real factor `M > 0` is stored as a Q31 `multiplier` and a `shift`, with
//! `M = multiplier / 2^(31 + shift)`. [`Requant::apply`] computes `round(acc * M)` exactly, with
//! ties rounded up (towards +∞), through one 32x32→64-bit multiply (`SMULL` on Cortex-M).

/// Smallest `shift` a model may use (`M` up to 2^30).
pub const MIN_SHIFT: i32 = -30;
/// Largest `shift` a model may use (`M` down to 2^-62).
pub const MAX_SHIFT: i32 = 31;

/// A real scale factor in fixed point: `multiplier / 2^(31 + shift)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requant {
    /// Q31 mantissa; positive. The quantizer normalises it into `[2^30, 2^31)`.
    pub multiplier: i32,
    /// Binary exponent offset, in `MIN_SHIFT..=MAX_SHIFT`.
    pub shift: i32,
}

impl Requant {
    /// Whether this factor is one [`Requant::apply`] handles without overflow: a positive
    /// multiplier and a shift in range. The model validator rejects anything else.
    pub fn is_valid(self) -> bool {
        self.multiplier > 0 && (MIN_SHIFT..=MAX_SHIFT).contains(&self.shift)
    }

    /// `round(acc * multiplier / 2^(31 + shift))`, ties towards +∞, saturated to `i32`.
    ///
    /// Requires [`Requant::is_valid`]; an invalid factor gives a meaningless but non-panicking
    /// result.
    #[inline]
    pub fn apply(self, acc: i32) -> i32 {
        let total_shift = 31i32.wrapping_add(self.shift);
        if (33..=62).contains(&total_shift) {
            // The common case (factors below 2^-2), in 32-bit arithmetic on the high word of
            // the product (one SMULL): with q = ⌊p / 2^(s−1)⌋, ⌊(p + 2^(s−1)) / 2^s⌋ equals
            // ⌊(q + 1) / 2⌋, and |q| ≤ 2^30 for any i32 operands, so nothing overflows or
            // needs clamping.
            let high = ((i64::from(acc) * i64::from(self.multiplier)) >> 32) as i32;
            let q = high >> (total_shift - 33);
            return (q + 1) >> 1;
        }
        let total_shift = total_shift.clamp(1, 62) as u32;
        let product = i64::from(acc) * i64::from(self.multiplier);
        let rounded = (product + (1i64 << (total_shift - 1))) >> total_shift;
        rounded.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
    }

    /// This factor times a Q31 fraction `q31 / 2^31` (rounded, ties up), keeping the shift.
    /// Used for LeakyReLU's negative side: the same requantization, scaled by the slope.
    #[inline]
    pub fn scaled_by_q31(self, q31: i32) -> Requant {
        // For a valid factor (multiplier in [1, 2^31)) and a Q31 fraction in [0, 2^31) the
        // result is in [0, 2^31): the truncation below only ever touches invalid operands,
        // which the model validator rejects, and cannot panic.
        let product = i64::from(self.multiplier) * i64::from(q31);
        let multiplier = (product.wrapping_add(1i64 << 30) >> 31) as i32;
        Requant {
            multiplier,
            shift: self.shift,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// round(acc * m / 2^t) with ties up, in exact 128-bit arithmetic.
    fn exact(acc: i32, r: Requant) -> i32 {
        let t = 31 + r.shift;
        let num = i128::from(acc) * i128::from(r.multiplier);
        let den = 1i128 << t;
        // floor((num + den/2) / den), saturated to i32
        (num + den / 2)
            .div_euclid(den)
            .clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }

    #[test]
    fn rounds_ties_up_on_both_signs() {
        // M = 0.5: 3 * 0.5 = 1.5 -> 2; -3 * 0.5 = -1.5 -> -1; 1 * 0.5 -> 1; -1 * 0.5 -> 0.
        let half = Requant {
            multiplier: 1 << 30,
            shift: 0,
        };
        assert_eq!(half.apply(3), 2);
        assert_eq!(half.apply(-3), -1);
        assert_eq!(half.apply(1), 1);
        assert_eq!(half.apply(-1), 0);
        assert_eq!(half.apply(0), 0);
    }

    #[test]
    fn matches_exact_rational_rounding() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..100_000 {
            let r = Requant {
                multiplier: ((next() as u32) >> 1).max(1) as i32,
                shift: (next() % 40) as i32 - 8,
            };
            let acc = (next() as i32) >> (next() % 31);
            assert_eq!(r.apply(acc), exact(acc, r), "acc={acc} r={r:?}");
        }
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let big = Requant {
            multiplier: i32::MAX,
            shift: MIN_SHIFT,
        };
        assert_eq!(big.apply(i32::MAX), i32::MAX);
        assert_eq!(big.apply(i32::MIN), i32::MIN);
    }

    #[test]
    fn scaled_by_q31_scales_the_multiplier() {
        let r = Requant {
            multiplier: 1 << 30,
            shift: 3,
        };
        // 0.2 in Q31
        let slope = ((0.2f64 * (1u64 << 31) as f64) + 0.5) as i32;
        let s = r.scaled_by_q31(slope);
        assert_eq!(s.shift, 3);
        // (2^30 * slope) / 2^31 = slope / 2, rounded with ties up.
        assert_eq!(s.multiplier, (slope + 1) / 2);
    }
}
