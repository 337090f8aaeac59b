//! The latent sampler: the same seed gives the same int8 latent vector on the host and on the
//! chip, with integer arithmetic only.
//!
//! A SplitMix64 stream gives 32-bit uniforms; each uniform is mapped to an int8 code through a
//! table of the standard normal CDF at the code boundaries, so a code `k` is drawn with
//! probability `Φ((k + ½)/32) − Φ((k − ½)/32)`: a standard normal rounded to steps of
//! [`LATENT_SCALE`], with the tails beyond ±3.95 folded into the end codes ±127.

/// The real value of latent code 1: `z = code * LATENT_SCALE`.
pub const LATENT_SCALE: f32 = 1.0 / 32.0;

/// The SplitMix64 generator (Steele, Lea and Flood, 2014): tiny, fast on 32-bit cores, and good
/// enough to draw latent vectors.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits (the high half of [`SplitMix64::next_u64`]).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// Maps a 32-bit uniform to a latent code in `-127..=127`.
#[inline]
pub fn gaussian_code(uniform: u32) -> i8 {
    let above = GAUSS_CDF_Q32.partition_point(|&threshold| threshold <= uniform);
    // 0 <= above <= 254, so the code is in -127..=127.
    (above as i32 - 127) as i8
}

/// Fills `latent` with the codes drawn for `seed`.
pub fn sample_latent(seed: u32, latent: &mut [i8]) {
    let mut rng = SplitMix64::new(u64::from(seed));
    for code in latent.iter_mut() {
        *code = gaussian_code(rng.next_u32());
    }
}

/// One code of a straight walk from `a` to `b` in `steps` steps, at step `step`:
/// `(a·(steps − step) + b·step) / steps`, rounded half away from zero, in 32-bit integers (`a`
/// at step 0, `b` at step `steps` and beyond; `a` when `steps` is 0). The host and the chip
/// blend latent codes and class rows with it, so a walk's frames are the same bytes on both.
/// (`u16` steps keep the sum within `i32`, so the chip divides in one instruction.)
#[inline]
pub fn blend_code(a: i8, b: i8, step: u16, steps: u16) -> i8 {
    if steps == 0 {
        return a;
    }
    let step = i32::from(step.min(steps));
    let steps = i32::from(steps);
    // |sum| <= 128 · 65,535 < 2^31.
    let sum = i32::from(a) * (steps - step) + i32::from(b) * step;
    let half = steps / 2;
    let rounded = if sum >= 0 {
        (sum + half) / steps
    } else {
        -((-sum + half) / steps)
    };
    // A weighted mean of two i8 values lies between them.
    rounded as i8
}

/// `GAUSS_CDF_Q32[j] = round(Φ((j − 126.5) / 32) · 2^32)`: the probability, in Q32, that a
/// standard normal falls below the boundary between codes `j − 127` and `j − 126`.
/// Checked against `erfc` by this module's tests.
pub static GAUSS_CDF_Q32: [u32; 254] = [
    165651, 188683, 214719, 244120, 277290, 314674, 356768, 404118, 457328, 517066, 584066, 659139,
    743175, 837152, 942144, 1059328, 1189990, 1335539, 1497514, 1677592, 1877601, 2099530, 2345541,
    2617982, 2919396, 3252540, 3620394, 4026180, 4473370, 4965709, 5507226, 6102253, 6755437,
    7471765, 8256572, 9115567, 10054845, 11080907, 12200676, 13421519, 14751260, 16198199,
    17771127, 19479347, 21332685, 23341506, 25516730, 27869841, 30412903, 33158566, 36120079,
    39311292, 42746665, 46441270, 50410789, 54671518, 59240354, 64134798, 69372937, 74973434,
    80955511, 87338932, 94143973, 101391402, 109102446, 117298753, 126002359, 135235641, 145021275,
    155382181, 166341470, 177922387, 190148249, 203042375, 216628019, 230928298, 245966111,
    261764063, 278344379, 295728821, 313938596, 332994273, 352915683, 373721831, 395430801,
    418059660, 441624367, 466139673, 491619034, 518074515, 545516701, 573954610, 603395609,
    633845333, 665307604, 697784365, 731275607, 765779313, 801291395, 837805651, 875313718,
    913805041, 953266842, 993684104, 1035039559, 1077313684, 1120484711, 1164528638, 1209419260,
    1255128198, 1301624942, 1348876908, 1396849496, 1445506159, 1494808486, 1544716286, 1595187688,
    1646179238, 1697646017, 1749541754, 1801818950, 1854429013, 1907322386, 1960448693, 2013756880,
    2067195362, 2120712174, 2174255122, 2227771934, 2281210416, 2334518603, 2387644910, 2440538283,
    2493148346, 2545425542, 2597321279, 2648788058, 2699779608, 2750251010, 2800158810, 2849461137,
    2898117800, 2946090388, 2993342354, 3039839098, 3085548036, 3130438658, 3174482585, 3217653612,
    3259927737, 3301283192, 3341700454, 3381162255, 3419653578, 3457161645, 3493675901, 3529187983,
    3563691689, 3597182931, 3629659692, 3661121963, 3691571687, 3721012686, 3749450595, 3776892781,
    3803348262, 3828827623, 3853342929, 3876907636, 3899536495, 3921245465, 3942051613, 3961973023,
    3981028700, 3999238475, 4016622917, 4033203233, 4049001185, 4064038998, 4078339277, 4091924921,
    4104819047, 4117044909, 4128625826, 4139585115, 4149946021, 4159731655, 4168964937, 4177668543,
    4185864850, 4193575894, 4200823323, 4207628364, 4214011785, 4219993862, 4225594359, 4230832498,
    4235726942, 4240295778, 4244556507, 4248526026, 4252220631, 4255656004, 4258847217, 4261808730,
    4264554393, 4267097455, 4269450566, 4271625790, 4273634611, 4275487949, 4277196169, 4278769097,
    4280216036, 4281545777, 4282766620, 4283886389, 4284912451, 4285851729, 4286710724, 4287495531,
    4288211859, 4288865043, 4289460070, 4290001587, 4290493926, 4290941116, 4291346902, 4291714756,
    4292047900, 4292349314, 4292621755, 4292867766, 4293089695, 4293289704, 4293469782, 4293631757,
    4293777306, 4293907968, 4294025152, 4294130144, 4294224121, 4294308157, 4294383230, 4294450230,
    4294509968, 4294563178, 4294610528, 4294652622, 4294690006, 4294723176, 4294752577, 4294778613,
    4294801645,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_table() -> [u32; 254] {
        let mut table = [0u32; 254];
        for (j, slot) in table.iter_mut().enumerate() {
            let boundary = (j as f64 - 126.5) / 32.0;
            let phi = 0.5 * libm::erfc(-boundary / core::f64::consts::SQRT_2);
            *slot = libm::round(phi * 4_294_967_296.0) as u32;
        }
        table
    }

    #[test]
    fn table_matches_the_normal_cdf() {
        let expected = expected_table();
        if expected != GAUSS_CDF_Q32 {
            extern crate std;
            std::println!("regenerated table:");
            for chunk in expected.chunks(6) {
                let line: std::vec::Vec<std::string::String> =
                    chunk.iter().map(|v| std::format!("{v}")).collect();
                std::println!("    {},", line.join(", "));
            }
            panic!("GAUSS_CDF_Q32 does not match the normal CDF");
        }
    }

    #[test]
    fn blends_run_from_one_code_to_the_other() {
        assert_eq!(blend_code(-127, 127, 0, 4), -127);
        assert_eq!(blend_code(-127, 127, 4, 4), 127);
        assert_eq!(blend_code(-127, 127, 2, 4), 0);
        // 10 + (20 - 10) / 4 = 12.5 rounds away from zero; so does -12.5.
        assert_eq!(blend_code(10, 20, 1, 4), 13);
        assert_eq!(blend_code(-10, -20, 1, 4), -13);
        assert_eq!(blend_code(5, 9, 0, 0), 5);
        assert_eq!(blend_code(-128, 127, 7, 7), 127);
        for (a, b) in [(-128i8, 127i8), (3, -3), (0, 1)] {
            for step in 0..=9 {
                let c = blend_code(a, b, step, 9);
                assert!(c >= a.min(b) && c <= a.max(b));
            }
        }
    }

    #[test]
    fn table_is_strictly_increasing() {
        assert!(GAUSS_CDF_Q32.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn codes_cover_the_full_range() {
        assert_eq!(gaussian_code(0), -127);
        assert_eq!(gaussian_code(u32::MAX), 127);
        assert_eq!(gaussian_code(1 << 31), 0);
    }

    #[test]
    fn samples_look_standard_normal() {
        let mut latent = [0i8; 100];
        let (mut sum, mut sum_sq, mut n) = (0f64, 0f64, 0f64);
        for seed in 0..200 {
            sample_latent(seed, &mut latent);
            for &c in &latent {
                let z = f64::from(c) * f64::from(LATENT_SCALE);
                sum += z;
                sum_sq += z * z;
                n += 1.0;
            }
        }
        let mean = sum / n;
        let var = sum_sq / n - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }

    #[test]
    fn same_seed_same_latent_other_seed_other_latent() {
        let (mut a, mut b, mut c) = ([0i8; 100], [0i8; 100], [0i8; 100]);
        sample_latent(7, &mut a);
        sample_latent(7, &mut b);
        sample_latent(8, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn splitmix_matches_the_published_stream() {
        // First outputs for seed 1234567 from the reference implementation (Vigna's splitmix64.c).
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }
}
