//! Cortex-M DSP-extension kernels for the blocked weight layouts (`feature = "dsp"` on a core
//! with `SMLAD`/`SXTB16`: Cortex-M4, M7, M33 with DSP).
//!
//! One call computes the four row sums of one row group. Activations are `i16`, widened once
//! per layer, so one 32-bit load holds two of them and `SMLAD` does two multiply-accumulates.
//! The weight layouts ([`crate::format::WeightFormat`]) were chosen so that:
//!
//! - int8: two rows are interleaved so that a word read as two signed halfwords is
//!   `u(r) + 256·w(r+1)` for two columns (`u = w + 128`): one `SMLAD` accumulates both rows,
//!   one `UXTB16` isolates the even row for a second `SMLAD`, and the odd row is recovered as
//!   the difference over 256 at the end: 2 `LDRD` + 2 × (2 `LDRD` + 4 `UXTB16` + 8 `SMLAD`)
//!   = 30 instructions per 32 MACs.
//! - int4: one `LDR` brings 8 weights of a row; masking with `0xF0F0F0F0` (after a 4-bit shift
//!   for the low nibbles) leaves each nibble in the top of its byte, i.e. 16× its value, so
//!   `SXTB16` sign-extends it for free; the sum is shifted back by 4 at the end (exact).
//!
//! The loops handle 16 columns per iteration (plus one 8-column block when the count is odd),
//! so the loop's compare-and-branch costs 2 instructions per 64 MACs.
#![allow(unsafe_code)]

use crate::layout::{pair_sums, WeightFormat, COL_BLOCK, MAX_WIDTH, ROW_BLOCK};

/// The assembler directive that enables the DSP instructions: Armv8-M Mainline (M33, M55)
/// has them as an option, and LLVM assembles module-level assembly for the target's base
/// architecture, so it is told the core (`.cpu cortex-m33`: v8-M Mainline with DSP; the M55's
/// Armv8.1-M runs that code too). Armv7E-M (M4, M7) has them anyway.
#[cfg(mcugan_armv8m)]
macro_rules! dsp_cpu {
    () => {
        ".cpu cortex-m33"
    };
}
#[cfg(not(mcugan_armv8m))]
macro_rules! dsp_cpu {
    () => {
        ""
    };
}

core::arch::global_asm!(
    ".syntax unified",
    ".thumb",
    dsp_cpu!(),
    // One row pair of an int8 block: 4 words against the activations in r8..r11; `u`
    // accumulates the even row's biased weights, `w` the packed halfwords.
    ".macro MCUGAN_PAIR_I8 u, w",
    "ldrd r0, r12, [r1], #8",
    "uxtb16 lr, r0",
    "smlad \\u, lr, r8, \\u",
    "smlad \\w, r0, r8, \\w",
    "uxtb16 lr, r12",
    "smlad \\u, lr, r9, \\u",
    "smlad \\w, r12, r9, \\w",
    "ldrd r0, r12, [r1], #8",
    "uxtb16 lr, r0",
    "smlad \\u, lr, r10, \\u",
    "smlad \\w, r0, r10, \\w",
    "uxtb16 lr, r12",
    "smlad \\u, lr, r11, \\u",
    "smlad \\w, r12, r11, \\w",
    ".endm",
    ".macro MCUGAN_BLOCK_I8",
    "ldrd r8, r9, [r2], #8",
    "ldrd r10, r11, [r2], #8",
    "MCUGAN_PAIR_I8 r4, r5",
    "MCUGAN_PAIR_I8 r6, r7",
    ".endm",
    // One row of an int4 block: 8 nibbles against the activations in r8..r11, sums ×16.
    ".macro MCUGAN_ROW_I4 acc",
    "ldr r0, [r1], #4",
    "and r12, r0, #0xF0F0F0F0",
    "lsl r0, r0, #4",
    "and r0, r0, #0xF0F0F0F0",
    "sxtb16 lr, r0",
    "smlad \\acc, lr, r8, \\acc",
    "sxtb16 r0, r0, ror #8",
    "smlad \\acc, r0, r9, \\acc",
    "sxtb16 lr, r12",
    "smlad \\acc, lr, r10, \\acc",
    "sxtb16 r12, r12, ror #8",
    "smlad \\acc, r12, r11, \\acc",
    ".endm",
    ".macro MCUGAN_BLOCK_I4",
    "ldrd r8, r9, [r2], #8",
    "ldrd r10, r11, [r2], #8",
    "MCUGAN_ROW_I4 r4",
    "MCUGAN_ROW_I4 r5",
    "MCUGAN_ROW_I4 r6",
    "MCUGAN_ROW_I4 r7",
    ".endm",
    // fn(sums: *mut [i32; 4], weights: *const u8, activations: *const i16, blocks: u32)
    // `blocks` ≥ 1 column blocks of 8; weights and activations 4-byte aligned.
    ".macro MCUGAN_GROUP_FN name, block",
    ".section .text.\\name,\"ax\",%progbits",
    ".global \\name",
    ".type \\name,%function",
    ".thumb_func",
    ".p2align 2",
    "\\name:",
    "push {{r0, r4-r11, lr}}",
    "movs r4, #0",
    "movs r5, #0",
    "movs r6, #0",
    "movs r7, #0",
    "lsls r12, r3, #31",
    "add r3, r2, r3, lsl #4",
    "beq 1f",
    "\\block",
    "1:",
    "cmp r2, r3",
    "beq 3f",
    "2:",
    "\\block",
    "\\block",
    "cmp r2, r3",
    "bne 2b",
    "3:",
    "pop {{r0}}",
    "stm r0, {{r4-r7}}",
    "pop {{r4-r11, pc}}",
    ".size \\name, . - \\name",
    ".endm",
    "MCUGAN_GROUP_FN mcugan_group_sums_i8, MCUGAN_BLOCK_I8",
    "MCUGAN_GROUP_FN mcugan_group_sums_i4x16, MCUGAN_BLOCK_I4",
    ".text",
);

extern "C" {
    fn mcugan_group_sums_i8(sums: *mut [i32; 4], weights: *const u8, x: *const i16, blocks: u32);
    fn mcugan_group_sums_i4x16(sums: *mut [i32; 4], weights: *const u8, x: *const i16, blocks: u32);
}

/// Column blocks one call of the int8 kernel takes at most: 64 blocks, 512 columns. The odd row
/// of a pair is carried shifted left by 8 bits in an `i32`, which holds `256·S` for
/// `S = Σ w·x` in `[−2²³, 2²³)`. Over 512 columns of `w, x ∈ [−128, 127]`, `S` lies in
/// `[512·(−16,256), 512·16,384] = [−8,323,072, 2²³]`: only `S = 2²³` (every product `(−128)²`)
/// wraps, and it comes back as `−2²³`, which no true sum can be, so [`odd_sum`] maps it back.
/// Wider layers are summed in chunks; no weight needs checking at boot, whatever its value.
pub const I8_CHUNK_BLOCKS: u32 = 64;

/// The odd row's sum from the shifted accumulators of one chunk (see [`I8_CHUNK_BLOCKS`]).
#[inline(always)]
fn odd_sum(recovered: i32) -> i32 {
    if recovered == -(1 << 23) {
        1 << 23
    } else {
        recovered
    }
}

/// The most int8 chunks a layer has: [`MAX_WIDTH`] columns in chunks of
/// [`I8_CHUNK_BLOCKS`] blocks.
const MAX_I8_CHUNKS: usize = (MAX_WIDTH / COL_BLOCK).div_ceil(I8_CHUNK_BLOCKS as usize);

/// A blocked layer's row-group kernel, checked once per layer.
#[derive(Clone, Copy)]
pub struct GroupKernel<'a> {
    kernel: unsafe extern "C" fn(*mut [i32; 4], *const u8, *const i16, u32),
    int4: bool,
    /// `Σ x` over each int8 chunk's columns.
    chunk_sum_x: [i32; MAX_I8_CHUNKS],
    blocks: u32,
    group_len: usize,
    x: &'a [i16],
}

impl<'a> GroupKernel<'a> {
    /// The kernel for a layer whose weights are `weights` (in `format`) and whose padded
    /// inputs are `x`, or `None` when the slices do not suit the assembly (empty, misaligned,
    /// or of mismatched length); the caller then uses the portable kernel, which gives the
    /// same sums. `x_sum`, when given, is `Σ x` (a convolution's gather computes it on the
    /// way); it spares the sum over the inputs of a layer of one chunk.
    #[inline]
    pub fn new(
        format: WeightFormat,
        weights: &[u8],
        x: &'a [i16],
        x_sum: Option<i32>,
    ) -> Option<Self> {
        let blocks = x.len() / COL_BLOCK;
        let block_bytes = ROW_BLOCK * COL_BLOCK * format.bits() as usize / 8;
        let group_len = blocks * block_bytes;
        let suits = blocks > 0
            && blocks <= MAX_WIDTH / COL_BLOCK
            && x.len() == blocks * COL_BLOCK
            && weights.len().is_multiple_of(group_len)
            && (weights.as_ptr() as usize).is_multiple_of(4)
            && (x.as_ptr() as usize).is_multiple_of(4);
        if !suits {
            return None;
        }
        let kernel = match format {
            WeightFormat::I8Blocked => mcugan_group_sums_i8 as _,
            WeightFormat::I4Blocked => mcugan_group_sums_i4x16 as _,
            WeightFormat::I8RowMajor => return None,
        };
        let mut chunk_sum_x = [0i32; MAX_I8_CHUNKS];
        match x_sum {
            Some(sum) if blocks <= I8_CHUNK_BLOCKS as usize => chunk_sum_x[0] = sum,
            _ => {
                for (sum, chunk) in chunk_sum_x
                    .iter_mut()
                    .zip(x.chunks(I8_CHUNK_BLOCKS as usize * COL_BLOCK))
                {
                    *sum = chunk.iter().map(|&v| i32::from(v)).sum();
                }
            }
        }
        Some(Self {
            kernel,
            int4: format == WeightFormat::I4Blocked,
            chunk_sum_x,
            blocks: blocks as u32,
            group_len,
            x,
        })
    }

    /// Bytes of one row group.
    #[inline]
    pub fn group_len(&self) -> usize {
        self.group_len
    }

    /// The four row sums of `group`, one row group of the layer this kernel was made for
    /// (`group_len()` bytes; anything else gives zeros).
    #[inline]
    pub fn sums(&self, group: &[u8]) -> [i32; ROW_BLOCK] {
        let mut sums = [0i32; ROW_BLOCK];
        if group.len() != self.group_len {
            return sums;
        }
        if self.int4 {
            // SAFETY: `new` checked that `x` holds `blocks` column blocks and is 4-byte
            // aligned; `group` holds `blocks` blocks (checked above) and starts 4-byte aligned,
            // as every row group of a 4-byte-aligned weight array of whole groups does. The
            // kernel reads exactly those bytes, writes the four words of `sums`, and saves and
            // restores every callee-saved register it uses (AAPCS).
            unsafe { (self.kernel)(&mut sums, group.as_ptr(), self.x.as_ptr(), self.blocks) };
            // Every product was 16× the true one; the division is exact.
            for sum in &mut sums {
                *sum >>= 4;
            }
            return sums;
        }
        if self.blocks <= I8_CHUNK_BLOCKS {
            // SAFETY: as for int4 above.
            unsafe { (self.kernel)(&mut sums, group.as_ptr(), self.x.as_ptr(), self.blocks) };
            let sum_x = self.chunk_sum_x[0];
            let (s0, s1) = pair_sums(sums[0], sums[1], sum_x);
            let (s2, s3) = pair_sums(sums[2], sums[3], sum_x);
            return [s0, odd_sum(s1), s2, odd_sum(s3)];
        }
        let block_bytes = ROW_BLOCK * COL_BLOCK;
        let mut start = 0u32;
        let mut chunk = 0;
        while start < self.blocks {
            let n = (self.blocks - start).min(I8_CHUNK_BLOCKS);
            let sum_x = self.chunk_sum_x.get(chunk).copied().unwrap_or(0);
            let mut raw = [0i32; ROW_BLOCK];
            // SAFETY: as above, for the `n` blocks from block `start`: both offsets stay inside
            // `group` and `x` (`start + n <= blocks`) and keep their 4-byte alignment (a block
            // is 32 bytes of weights and 16 of activations).
            unsafe {
                (self.kernel)(
                    &mut raw,
                    group.as_ptr().add(start as usize * block_bytes),
                    self.x.as_ptr().add(start as usize * COL_BLOCK),
                    n,
                )
            };
            let (s0, s1) = pair_sums(raw[0], raw[1], sum_x);
            let (s2, s3) = pair_sums(raw[2], raw[3], sum_x);
            sums[0] = sums[0].wrapping_add(s0);
            sums[1] = sums[1].wrapping_add(odd_sum(s1));
            sums[2] = sums[2].wrapping_add(s2);
            sums[3] = sums[3].wrapping_add(odd_sum(s3));
            start += n;
            chunk += 1;
        }
        sums
    }
}

core::arch::global_asm!(
    ".syntax unified",
    ".thumb",
    dsp_cpu!(),
    // mcugan_widen_sum(dst: *mut i16, src: *const i8, quads: u32, sum: i32) -> i32: widens
    // `quads` x 4 int8 values to i16 (any alignment: LDR and STR take unaligned addresses on
    // the M4/M7/M33) and returns `sum` plus their sum. Per 4 values: one load, two SXTB16, two
    // PKH to restore the order, two stores, two SMLAD against 0x00010001 for the sum.
    ".section .text.mcugan_widen_sum,\"ax\",%progbits",
    ".global mcugan_widen_sum",
    ".type mcugan_widen_sum,%function",
    ".thumb_func",
    "mcugan_widen_sum:",
    "push {{r4-r8, lr}}",
    "mov r8, #0x00010001",
    "cbz r2, 2f",
    "1:",
    "ldr r4, [r1], #4",
    "sxtb16 r5, r4",
    "sxtb16 r6, r4, ror #8",
    "pkhbt r7, r5, r6, lsl #16",
    "pkhtb r4, r6, r5, asr #16",
    "str r7, [r0], #4",
    "str r4, [r0], #4",
    "smlad r3, r5, r8, r3",
    "smlad r3, r6, r8, r3",
    "subs r2, r2, #1",
    "bne 1b",
    "2:",
    "mov r0, r3",
    "pop {{r4-r8, pc}}",
    ".size mcugan_widen_sum, . - mcugan_widen_sum",
    // mcugan_dot_i8(a: *const u8, b: *const i8, quads: u32, acc: i32) -> i32: `acc` plus the
    // dot product of `quads` x 4 int8 pairs (any alignment). Per 4 products: two loads, four
    // SXTB16 (even and odd bytes of each word) and two SMLAD, which pair even with even and
    // odd with odd, so the order of the products does not matter.
    ".section .text.mcugan_dot_i8,\"ax\",%progbits",
    ".global mcugan_dot_i8",
    ".type mcugan_dot_i8,%function",
    ".thumb_func",
    "mcugan_dot_i8:",
    "push {{r4-r7, lr}}",
    "cbz r2, 2f",
    "1:",
    "ldr r4, [r0], #4",
    "ldr r5, [r1], #4",
    "sxtb16 r6, r4",
    "sxtb16 r7, r5",
    "smlad r3, r6, r7, r3",
    "sxtb16 r6, r4, ror #8",
    "sxtb16 r7, r5, ror #8",
    "smlad r3, r6, r7, r3",
    "subs r2, r2, #1",
    "bne 1b",
    "2:",
    "mov r0, r3",
    "pop {{r4-r7, pc}}",
    ".size mcugan_dot_i8, . - mcugan_dot_i8",
    // mcugan_word_sums(state: *mut [u64; 2], words: *const u32, groups: u32): the running sums
    // of `checksum::WordSums` over `groups` x 8 words. Per word one `UMLAL` (sum += w·1, 64
    // bits) and `ADDS`/`ADC` (weighted += sum); two `LDM`s and the loop's compare-and-branch
    // per 8 words: 3.5 instructions per word.
    // Four words: load them, then for each `sum += w` (64 bits) and `weighted += sum`.
    ".macro MCUGAN_WORD w",
    "umlal r6, r7, \\w, r10",
    "adds r8, r8, r6",
    "adc r9, r9, r7",
    ".endm",
    ".macro MCUGAN_WORDS4",
    "ldm r1!, {{r3, r4, r5, r11}}",
    "MCUGAN_WORD r3",
    "MCUGAN_WORD r4",
    "MCUGAN_WORD r5",
    "MCUGAN_WORD r11",
    ".endm",
    ".section .text.mcugan_word_sums,\"ax\",%progbits",
    ".global mcugan_word_sums",
    ".type mcugan_word_sums,%function",
    ".thumb_func",
    "mcugan_word_sums:",
    "push {{r4-r11, lr}}",
    "ldrd r6, r7, [r0]",
    "ldrd r8, r9, [r0, #8]",
    "mov r10, #1",
    "add r2, r1, r2, lsl #5",
    "cmp r1, r2",
    "beq 2f",
    "1:",
    "MCUGAN_WORDS4",
    "MCUGAN_WORDS4",
    "cmp r1, r2",
    "bne 1b",
    "2:",
    "strd r6, r7, [r0]",
    "strd r8, r9, [r0, #8]",
    "pop {{r4-r11, pc}}",
    ".size mcugan_word_sums, . - mcugan_word_sums",
    ".text",
);

extern "C" {
    fn mcugan_word_sums(state: *mut [u64; 2], words: *const u32, groups: u32);
    fn mcugan_widen_sum(dst: *mut i16, src: *const i8, quads: u32, sum: i32) -> i32;
    fn mcugan_dot_i8(a: *const u8, b: *const i8, quads: u32, acc: i32) -> i32;
}

/// `Σ a·b` over int8 weights (as stored bytes) and int8 activations: the assembly for whole
/// groups of four, the rest one by one.
#[inline]
pub fn dot_i8_i8(a: &[u8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let quads = n / 4;
    let mut acc = 0;
    if quads > 0 {
        // SAFETY: both slices hold at least `4 * quads` values, which the assembly reads (any
        // alignment) and nothing else; it saves what it uses of the callee-saved registers.
        acc = unsafe { mcugan_dot_i8(a.as_ptr(), b.as_ptr(), quads as u32, 0) };
    }
    for (&w, &x) in a[4 * quads..n].iter().zip(&b[4 * quads..n]) {
        acc += i32::from(w as i8) * i32::from(x);
    }
    acc
}

/// Writes `src` widened into `dst` (the shorter's length) and returns their sum: the
/// assembly for whole groups of four, the rest one by one.
#[inline]
pub fn widen_sum(dst: &mut [i16], src: &[i8]) -> i32 {
    let n = dst.len().min(src.len());
    let quads = n / 4;
    let mut sum = 0;
    if quads > 0 {
        // SAFETY: both slices hold at least `4 * quads` values; the assembly reads and writes
        // exactly those (any alignment) and saves what it uses of the callee-saved registers.
        sum = unsafe { mcugan_widen_sum(dst.as_mut_ptr(), src.as_ptr(), quads as u32, 0) };
    }
    for (d, &s) in dst[4 * quads..n].iter_mut().zip(&src[4 * quads..n]) {
        *d = i16::from(s);
        sum += i32::from(s);
    }
    sum
}

/// Adds to the checksum's running `(sum, weighted)` (`crate::checksum::WordSums`) the words of
/// the longest prefix of `bytes` that the assembly reads (whole groups of 8 words from a
/// 4-aligned start) and returns the bytes left for the portable loop; all of `bytes` when its
/// start is not 4-aligned.
pub fn word_sums_aligned<'b>(state: &mut [u64; 2], bytes: &'b [u8]) -> &'b [u8] {
    const GROUP: usize = 32;
    if !(bytes.as_ptr() as usize).is_multiple_of(4) {
        return bytes;
    }
    let groups = bytes.len() / GROUP;
    let Ok(count) = u32::try_from(groups) else {
        return bytes;
    };
    if count == 0 {
        return bytes;
    }
    // SAFETY: `bytes` is 4-aligned and holds `groups * 32` bytes, which the assembly reads as
    // words and nothing else; it writes only `state`.
    unsafe { mcugan_word_sums(state, bytes.as_ptr().cast(), count) };
    &bytes[groups * GROUP..]
}
