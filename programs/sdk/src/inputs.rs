//! The datasets a program takes: kinds, shapes and class counts, declared once with
//! [`inputs!`](crate::inputs!).
//!
//! ```
//! use chiron_sdk::inputs::Inputs;
//!
//! // Grayscale images of any size, 2 to 100 classes.
//! chiron_sdk::inputs!(Inputs::images().channels(1).classes(2, 100));
//! ```
//!
//! The declaration is public, like the program. The host shows it at registration, the
//! owner's client refuses a dataset the program does not take before anything is uploaded,
//! and the training enclave refuses it again before the program runs, so an owner never pays
//! for a job that could only fail. A program without a declaration takes any dataset.
//!
//! It is stored in the module as a custom section named [`SECTION`], in the fixed 36-byte
//! format version 1 that `chiron_proto::inputs` documents and parses. A declaration that
//! admits nothing fails at compile time.

/// Name of the WebAssembly custom section holding the declaration.
pub const SECTION: &str = "chiron.inputs";
/// Length of the encoded declaration.
pub const ENCODED_LEN: usize = 36;

const IMAGES: u8 = 1;
const TABLES: u8 = 2;

/// What a program takes, built in a `const` context (see [`inputs!`](crate::inputs!)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    kinds: u8,
    min_classes: u32,
    max_classes: u32,
    channels: u32,
    height: u32,
    width: u32,
    columns: u32,
}

impl Inputs {
    const fn of(kinds: u8) -> Self {
        Self {
            kinds,
            min_classes: 2,
            max_classes: 0,
            channels: 0,
            height: 0,
            width: 0,
            columns: 0,
        }
    }

    /// Images `[C, H, W]` of any size, and any number of classes.
    pub const fn images() -> Self {
        Self::of(IMAGES)
    }

    /// Tables `[columns]` of any width, and any number of classes.
    pub const fn tables() -> Self {
        Self::of(TABLES)
    }

    /// Images or tables.
    pub const fn images_or_tables() -> Self {
        Self::of(IMAGES | TABLES)
    }

    /// Images of exactly `channels` channels.
    pub const fn channels(mut self, channels: u32) -> Self {
        self.channels = channels;
        self
    }

    /// Images of exactly `height` × `width` pixels.
    pub const fn size(mut self, height: u32, width: u32) -> Self {
        self.height = height;
        self.width = width;
        self
    }

    /// Tables of exactly `columns` columns.
    pub const fn columns(mut self, columns: u32) -> Self {
        self.columns = columns;
        self
    }

    /// From `fewest` to `most` classes (`most` = 0: no limit).
    ///
    /// # Panics
    /// (At compile time, in a `const` context.) If `fewest` is below 2 or `most` below it.
    pub const fn classes(mut self, fewest: u32, most: u32) -> Self {
        assert!(fewest >= 2, "a dataset has at least 2 classes");
        assert!(
            most == 0 || most >= fewest,
            "the most classes must be at least the fewest"
        );
        self.min_classes = fewest;
        self.max_classes = most;
        self
    }

    /// The section's bytes (format version 1).
    pub const fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let magic = *b"CHIRONIN";
        let mut i = 0;
        while i < 8 {
            out[i] = magic[i];
            i += 1;
        }
        out[8] = 1;
        out[9] = self.kinds;
        let words = [
            self.min_classes,
            self.max_classes,
            self.channels,
            self.height,
            self.width,
            self.columns,
        ];
        let mut w = 0;
        while w < words.len() {
            let bytes = words[w].to_le_bytes();
            let mut b = 0;
            while b < 4 {
                out[12 + 4 * w + b] = bytes[b];
                b += 1;
            }
            w += 1;
        }
        out
    }
}

/// Declares the datasets the program takes (see [`inputs`](mod@crate::inputs)), once per program.
///
/// Like the entry points, the section exists on `wasm32` only. A module with two such
/// sections is refused at registration.
#[macro_export]
macro_rules! inputs {
    ($inputs:expr $(,)?) => {
        /// The datasets the program takes, read by the runtime from the module's custom section.
        #[cfg(target_arch = "wasm32")]
        #[used]
        #[unsafe(link_section = "chiron.inputs")]
        static CHIRON_INPUTS: [u8; $crate::inputs::ENCODED_LEN] = {
            const INPUTS: $crate::inputs::Inputs = $inputs;
            INPUTS.encode()
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same vector `chiron_proto::inputs`'s tests decode.
    const GOLDEN: [u8; ENCODED_LEN] = [
        b'C', b'H', b'I', b'R', b'O', b'N', b'I', b'N', 1, 1, 0, 0, //
        2, 0, 0, 0, 100, 0, 0, 0, //
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn encodes_the_format_the_runtime_reads() {
        const I: Inputs = Inputs::images().channels(1).classes(2, 100);
        assert_eq!(I.encode(), GOLDEN);
        let table = Inputs::tables().columns(4).encode();
        assert_eq!(table[9], TABLES);
        assert_eq!(&table[32..36], &[4, 0, 0, 0]);
    }
}
