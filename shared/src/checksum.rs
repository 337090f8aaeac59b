//! The checksums a model blob's trailer holds.
//!
//! The firmware checks the whole blob before it draws anything, so the checksum's cost is a
//! boot delay: the CRC-32 of format versions 1 and 2 costs about 15 instructions per byte on a
//! Cortex-M4 (23 M instructions for the 1.5 MB digits model, 14 images' worth). Version 3 uses
//! [`WordSums`] instead: a Fletcher-style pair of 64-bit sums over little-endian 32-bit words,
//! 3.5 instructions per word (under 1 per byte) with the DSP build's assembly, and at least as
//! strong against corruption (see [`WordSums`]). Host and chip run this same code.

/// CRC-32/ISO-HDLC (reflected polynomial `0xEDB88320`, initial value and final XOR all ones)
/// with a 16-entry nibble table: 64 bytes of flash instead of the usual 1 KiB table, at two
/// table steps per byte. The trailer of format versions 1 and 2.
#[derive(Clone, Copy, Debug)]
pub struct Crc32;

/// The CRC-32 checksum, as a value.
pub const CRC32: Crc32 = Crc32;

/// `CRC_NIBBLE_TABLE[n]`: the CRC register after shifting the nibble `n` through it.
const CRC_NIBBLE_TABLE: [u32; 16] = {
    let mut table = [0u32; 16];
    let mut n = 0;
    while n < 16 {
        let mut crc = n as u32;
        let mut bit = 0;
        while bit < 4 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[n] = crc;
        n += 1;
    }
    table
};

impl Crc32 {
    /// The checksum of `bytes`.
    pub fn checksum(&self, bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            crc = (crc >> 4) ^ CRC_NIBBLE_TABLE[(crc & 0xF) as usize];
            crc = (crc >> 4) ^ CRC_NIBBLE_TABLE[(crc & 0xF) as usize];
        }
        !crc
    }
}

/// The trailer of format version 3: two 64-bit sums over the bytes read as little-endian
/// 32-bit words `w₀ … wₙ₋₁` (the last one zero-padded):
///
/// - `sum = Σ wₖ` and
/// - `weighted = Σ (n − k)·wₖ`, computed as the running total of `sum` after each word.
///
/// `sum` never wraps for a blob the format allows (it stays below 2⁶² for 4 GiB), so a change
/// is missed only if the word differences `dₖ` satisfy `Σ dₖ = 0` and `Σ k·dₖ = 0`
/// exactly (mod 2⁶⁴ for `weighted`). Hence every change confined to at most two words, anywhere,
/// is caught (`d₁ = −d₂` would need `(k₂ − k₁)·d₁ = 0`, and `|(k₂ − k₁)·d₁| < 2⁶²`): every
/// flipped bit or byte, any two flipped bits, and every burst of up to 33 bits. CRC-32 catches
/// bursts of up to 32 bits and, at the length of the digits model, every 1- and 2-bit error.
/// Other corruption goes unseen with a chance of about 2⁻⁶⁴, against
/// CRC-32's 2⁻³². It is not a cryptographic check: it detects accidents, not forgery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WordSums {
    /// `Σ wₖ`.
    pub sum: u64,
    /// `Σ (n − k)·wₖ`.
    pub weighted: u64,
}

/// Bytes of a [`WordSums`] trailer: `sum` then `weighted`, each a little-endian `u64`.
pub const WORD_SUMS_LEN: usize = 16;

impl WordSums {
    /// The sums of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut sums = WordSums {
            sum: 0,
            weighted: 0,
        };
        // The DSP build's assembly takes the aligned whole groups of 8 words first.
        #[cfg(mcugan_dsp_kernels)]
        let rest = {
            let mut state = [sums.sum, sums.weighted];
            let rest = crate::dsp::word_sums_aligned(&mut state, bytes);
            [sums.sum, sums.weighted] = state;
            rest
        };
        #[cfg(not(mcugan_dsp_kernels))]
        let rest = bytes;
        let mut words = rest.chunks_exact(4);
        for word in &mut words {
            sums.add(u32::from_le_bytes([word[0], word[1], word[2], word[3]]));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            let mut last = [0u8; 4];
            last[..tail.len()].copy_from_slice(tail);
            sums.add(u32::from_le_bytes(last));
        }
        sums
    }

    #[inline(always)]
    fn add(&mut self, word: u32) {
        self.sum = self.sum.wrapping_add(u64::from(word));
        self.weighted = self.weighted.wrapping_add(self.sum);
    }

    /// The trailer bytes.
    pub fn to_bytes(self) -> [u8; WORD_SUMS_LEN] {
        let mut bytes = [0u8; WORD_SUMS_LEN];
        bytes[..8].copy_from_slice(&self.sum.to_le_bytes());
        bytes[8..].copy_from_slice(&self.weighted.to_le_bytes());
        bytes
    }

    /// Reads a trailer; `None` unless `bytes` is [`WORD_SUMS_LEN`] long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let sum = bytes.get(..8)?;
        let weighted = bytes.get(8..16)?;
        if bytes.len() != WORD_SUMS_LEN {
            return None;
        }
        let word = |b: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        Some(WordSums {
            sum: word(sum),
            weighted: word(weighted),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(CRC32.checksum(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn word_sums_by_hand() {
        // Words 1, 2, 3 (the last zero-padded): sum 6, weighted 3·1 + 2·2 + 1·3 = 10.
        let sums = WordSums::of(&[1, 0, 0, 0, 2, 0, 0, 0, 3]);
        assert_eq!(
            sums,
            WordSums {
                sum: 6,
                weighted: 10
            }
        );
        assert_eq!(WordSums::from_bytes(&sums.to_bytes()), Some(sums));
        assert_eq!(WordSums::from_bytes(&[0; 15]), None);
    }
}
