//! [`Rng`]: the runtime's seeded random stream.

use crate::sys;

/// Random numbers from the runtime's stream, seeded by the data owner: the same seed gives
/// the same shuffles and initial weights, in the sandbox or natively, so runs reproduce.
///
/// Every `Rng` draws from the one stream (parameters initialised by the runtime draw from
/// it too); the value holds no state of its own.
#[derive(Debug, Default)]
pub struct Rng {
    _private: (),
}

impl Rng {
    /// A handle on the runtime's stream.
    pub fn new() -> Rng {
        Rng { _private: () }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        // SAFETY: argument-free call.
        unsafe { sys::chiron_random_u64() }
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform float in `[0, 1)` (24 random bits).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// A uniform integer in `0..n`, without modulo bias.
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "below(0) has no value to return");
        let n = u64::from(n);
        // Reject the lowest `2^64 mod n` values, so that every residue is equally likely.
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            if x >= threshold {
                return (x % n) as u32;
            }
        }
    }

    /// Shuffles `items` in place (Fisher–Yates), every permutation equally likely.
    ///
    /// # Panics
    /// If `items` has more than `u32::MAX` elements.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let bound =
                u32::try_from(i + 1).unwrap_or_else(|_| panic!("too many items to shuffle"));
            let j = self.below(bound) as usize;
            items.swap(i, j);
        }
    }
}
