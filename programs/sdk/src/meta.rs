//! A minimal encoding for model metadata: a sequence of little-endian `u32` words (an `f32`
//! is stored as its bits). Enough to describe an architecture; programs define the meaning
//! of each word.

/// Encodes `words` as little-endian bytes.
pub fn encode(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Decodes little-endian `u32` words; `None` if the length is not a multiple of 4.
pub fn decode(bytes: &[u8]) -> Option<Vec<u32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// A four-character tag as a word (`tag(b"cCNN")`), to mark whose metadata it is.
pub const fn tag(name: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let words = [tag(b"test"), 1, 0, u32::MAX, 0.5f32.to_bits()];
        assert_eq!(decode(&encode(&words)).as_deref(), Some(&words[..]));
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
