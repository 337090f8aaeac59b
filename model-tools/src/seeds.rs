//! The seeds a command draws: `A..B` or `A,B,C`, checked before any work starts.
//!
//! A seed is a `u32` (the chip's latent sampler takes 32 bits), so a range ends at 2³² at most.
//! An empty set is an error, never "draw nothing" or "draw the default".

use std::ops::Range;

/// Why a seed list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeedError {
    /// Not `A..B` or `A,B,C` of numbers.
    #[error(
        "bad seeds '{text}': {why} (write A..B, end excluded, or A,B,C; seeds are 0..=4294967295)"
    )]
    Malformed {
        /// What was given.
        text: String,
        /// What is wrong.
        why: String,
    },
    /// The set holds no seed.
    #[error("the seeds '{0}' are an empty set: nothing to draw (A..B excludes B; 3..4 is seed 3)")]
    Empty(String),
    /// More seeds than the command can take.
    #[error("{count} seeds are more than {what} takes (at most {max})")]
    TooMany {
        /// Seeds given.
        count: u64,
        /// The command or output that limits them.
        what: String,
        /// Its limit.
        max: u64,
    },
}

/// A non-empty set of seeds, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seeds {
    /// `start..end`, `end` excluded, at most 2³².
    Range(Range<u64>),
    /// A list.
    List(Vec<u32>),
}

impl Seeds {
    /// Parses `A..B` (end excluded) or `A,B,C`.
    pub fn parse(text: &str) -> Result<Self, SeedError> {
        let text = text.trim();
        let malformed = |why: String| SeedError::Malformed {
            text: text.to_string(),
            why,
        };
        if let Some((a, b)) = text.split_once("..") {
            let number = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|e| malformed(format!("'{}': {e}", s.trim())))
            };
            let (a, b) = (number(a)?, number(b)?);
            if a > u64::from(u32::MAX) || b > 1 << 32 {
                return Err(malformed("a seed is a 32-bit number".into()));
            }
            if a >= b {
                return Err(SeedError::Empty(text.to_string()));
            }
            return Ok(Seeds::Range(a..b));
        }
        if text.is_empty() {
            return Err(SeedError::Empty(text.to_string()));
        }
        let list = text
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|e| malformed(format!("'{}': {e}", s.trim())))
            })
            .collect::<Result<Vec<u32>, _>>()?;
        Ok(Seeds::List(list))
    }

    /// How many seeds.
    pub fn len(&self) -> u64 {
        match self {
            Seeds::Range(r) => r.end - r.start,
            Seeds::List(l) => l.len() as u64,
        }
    }

    /// Never true: an empty set does not parse.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The seeds in order, without holding them.
    pub fn iter(&self) -> Box<dyn Iterator<Item = u32> + '_> {
        match self {
            // The range ends at 2³², so every value fits.
            Seeds::Range(r) => Box::new(r.clone().map(|s| s as u32)),
            Seeds::List(l) => Box::new(l.iter().copied()),
        }
    }

    /// The seeds as a list, refused beyond `max` (named by `what`) so that a huge range is not
    /// held in memory by a command that needs a list.
    pub fn to_vec_at_most(&self, max: u64, what: &str) -> Result<Vec<u32>, SeedError> {
        if self.len() > max {
            return Err(SeedError::TooMany {
                count: self.len(),
                what: what.to_string(),
                max,
            });
        }
        Ok(self.iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_lists() {
        assert_eq!(
            Seeds::parse("0..3").unwrap().iter().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(
            Seeds::parse(" 5, 7,9").unwrap().iter().collect::<Vec<_>>(),
            [5, 7, 9]
        );
        let top = Seeds::parse("4294967295..4294967296").unwrap();
        assert_eq!(top.iter().collect::<Vec<_>>(), [u32::MAX]);
    }

    #[test]
    fn empty_and_malformed_sets_are_errors() {
        assert!(matches!(Seeds::parse("3..3"), Err(SeedError::Empty(_))));
        assert!(matches!(Seeds::parse("5..2"), Err(SeedError::Empty(_))));
        assert!(matches!(Seeds::parse(""), Err(SeedError::Empty(_))));
        for bad in ["a..b", "0..4294967297", "1,,2", "-1", "4294967296"] {
            assert!(
                matches!(Seeds::parse(bad), Err(SeedError::Malformed { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_list_is_bounded() {
        let seeds = Seeds::parse("0..10000000").unwrap();
        assert_eq!(seeds.len(), 10_000_000);
        let err = seeds.to_vec_at_most(256, "one QEMU run").unwrap_err();
        assert!(err.to_string().contains("at most 256"), "{err}");
    }
}
