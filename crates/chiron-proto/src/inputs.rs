//! The inputs a program declares it takes: which kinds of dataset (images, tables), which
//! shapes and how many classes.
//!
//! A program stores the declaration in a WebAssembly custom section named [`SECTION`]
//! (the SDK's `inputs!` macro writes it). It is public, like the program: the host shows it
//! at registration, the owner's client refuses a dataset the program does not take before
//! anything is uploaded, and the training enclave refuses it again before the program runs.
//! A program without the section takes any dataset.
//!
//! # Encoding (format version 1)
//!
//! | offset | field | value |
//! |---|---|---|
//! | 0 | magic | `CHIRONIN` |
//! | 8 | format version | `1` |
//! | 9 | kinds | bit 0: images, bit 1: tables; at least one, no other bit |
//! | 10 | reserved | `0, 0` |
//! | 12 | fewest classes | u32 LE, at least 2 |
//! | 16 | most classes | u32 LE, `0` for no limit, else at least the fewest |
//! | 20 | image channels | u32 LE, `0` for any |
//! | 24 | image height | u32 LE, `0` for any |
//! | 28 | image width | u32 LE, `0` for any |
//! | 32 | table columns | u32 LE, `0` for any |
//!
//! Anything else (another length, magic or version, a reserved byte or kind bit set, a class
//! range that admits nothing) is refused at registration.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::dataset::{DatasetHeader, DatasetKind};

/// Name of the WebAssembly custom section holding the declaration.
pub const SECTION: &str = "chiron.inputs";
/// The section's first bytes.
pub const MAGIC: [u8; 8] = *b"CHIRONIN";
/// The encoding's format version.
pub const FORMAT_VERSION: u8 = 1;
/// Length of an encoded declaration.
pub const ENCODED_LEN: usize = 36;

const IMAGES: u8 = 1;
const TABLES: u8 = 2;

/// What a program takes. Built by [`InputSpec::decode`] (or the SDK's builder), so that every
/// value admits at least one dataset; in JSON it is its encoding in hex, checked the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InputSpec {
    images: bool,
    tables: bool,
    min_classes: u32,
    /// `None`: no limit.
    max_classes: Option<u32>,
    channels: Option<u32>,
    height: Option<u32>,
    width: Option<u32>,
    columns: Option<u32>,
}

/// Why a dataset is not one the program takes. The texts name public figures only: the
/// dataset's header and the program's declaration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputMismatch {
    /// Images to a program of tables, or the reverse.
    #[error("the program takes {takes} only, and this dataset holds {given}")]
    Kind {
        /// What it takes.
        takes: &'static str,
        /// What the dataset holds.
        given: &'static str,
    },
    /// Too few or too many classes.
    #[error("the program takes {takes} classes, and this dataset has {given}")]
    Classes {
        /// The range it takes.
        takes: String,
        /// The dataset's classes.
        given: u32,
    },
    /// Another shape of example.
    #[error("the program takes examples of shape {takes}, and this dataset's are {given:?}")]
    Shape {
        /// The shape it takes, `*` for any size.
        takes: String,
        /// The dataset's example shape.
        given: Vec<u32>,
    },
}

/// Why a declaration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputsError {
    /// The module's sections do not parse.
    #[error("the program is not a well-formed WebAssembly module ({0})")]
    Module(String),
    /// More than one declaration.
    #[error("the program has more than one `{SECTION}` section")]
    Duplicate,
    /// A payload of the wrong length.
    #[error("the `{SECTION}` section is {0} bytes, not {ENCODED_LEN}")]
    Length(usize),
    /// Not a declaration.
    #[error("the `{SECTION}` section does not start with its magic")]
    Magic,
    /// An unknown format version.
    #[error(
        "inputs format version {0} is not supported (this build reads version {FORMAT_VERSION})"
    )]
    Version(u8),
    /// A reserved byte or unknown kind bit is set.
    #[error("the inputs declaration's reserved bits are not zero")]
    Reserved,
    /// No kind of dataset.
    #[error("the inputs declaration takes neither images nor tables")]
    NoKind,
    /// A class range that admits nothing.
    #[error(
        "the inputs declaration's classes must be at least 2, and the most at least the fewest"
    )]
    Classes,
}

fn u32_at(bytes: &[u8; ENCODED_LEN], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn any(value: u32) -> Option<u32> {
    (value != 0).then_some(value)
}

impl InputSpec {
    /// Decodes a section's payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, InputsError> {
        let bytes: &[u8; ENCODED_LEN] = bytes
            .try_into()
            .map_err(|_| InputsError::Length(bytes.len()))?;
        if bytes[..8] != MAGIC {
            return Err(InputsError::Magic);
        }
        if bytes[8] != FORMAT_VERSION {
            return Err(InputsError::Version(bytes[8]));
        }
        let kinds = bytes[9];
        if kinds & !(IMAGES | TABLES) != 0 || bytes[10] != 0 || bytes[11] != 0 {
            return Err(InputsError::Reserved);
        }
        if kinds == 0 {
            return Err(InputsError::NoKind);
        }
        let min_classes = u32_at(bytes, 12);
        let max_classes = any(u32_at(bytes, 16));
        if min_classes < 2 || max_classes.is_some_and(|max| max < min_classes) {
            return Err(InputsError::Classes);
        }
        Ok(Self {
            images: kinds & IMAGES != 0,
            tables: kinds & TABLES != 0,
            min_classes,
            max_classes,
            channels: any(u32_at(bytes, 20)),
            height: any(u32_at(bytes, 24)),
            width: any(u32_at(bytes, 28)),
            columns: any(u32_at(bytes, 32)),
        })
    }

    /// Encodes it as the section's payload.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8] = FORMAT_VERSION;
        out[9] = (u8::from(self.images) * IMAGES) | (u8::from(self.tables) * TABLES);
        let words = [
            self.min_classes,
            self.max_classes.unwrap_or(0),
            self.channels.unwrap_or(0),
            self.height.unwrap_or(0),
            self.width.unwrap_or(0),
            self.columns.unwrap_or(0),
        ];
        for (i, word) in words.iter().enumerate() {
            out[12 + 4 * i..16 + 4 * i].copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// Whether the program takes a dataset with this public header, and if not, why.
    pub fn accepts(&self, header: &DatasetHeader) -> Result<(), InputMismatch> {
        let (takes_it, given) = match header.kind {
            DatasetKind::Image => (self.images, "images"),
            DatasetKind::Tabular => (self.tables, "a table"),
        };
        if !takes_it {
            return Err(InputMismatch::Kind {
                takes: if self.images { "images" } else { "tables" },
                given,
            });
        }
        let classes_fit = header.classes >= self.min_classes
            && self.max_classes.is_none_or(|max| header.classes <= max);
        if !classes_fit {
            return Err(InputMismatch::Classes {
                takes: match self.max_classes {
                    Some(max) => format!("{} to {max}", self.min_classes),
                    None => format!("at least {}", self.min_classes),
                },
                given: header.classes,
            });
        }
        let wanted: Vec<Option<u32>> = match header.kind {
            DatasetKind::Image => vec![self.channels, self.height, self.width],
            DatasetKind::Tabular => vec![self.columns],
        };
        let fits = wanted.len() == header.dims.len()
            && wanted
                .iter()
                .zip(&header.dims)
                .all(|(want, have)| want.is_none_or(|w| w == *have));
        if !fits {
            let parts: Vec<String> = wanted
                .iter()
                .map(|w| w.map_or_else(|| "*".to_owned(), |w| w.to_string()))
                .collect();
            return Err(InputMismatch::Shape {
                takes: format!("[{}]", parts.join(", ")),
                given: header.dims.clone(),
            });
        }
        Ok(())
    }
}

impl TryFrom<String> for InputSpec {
    type Error = InputsError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bytes = hex::decode(&text).map_err(|_| InputsError::Magic)?;
        Self::decode(&bytes)
    }
}

impl From<InputSpec> for String {
    fn from(spec: InputSpec) -> Self {
        hex::encode(spec.encode())
    }
}

impl std::fmt::Display for InputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dim = |d: Option<u32>| d.map_or_else(|| "*".to_owned(), |d| d.to_string());
        let mut kinds = Vec::new();
        if self.images {
            kinds.push(format!(
                "images [{}, {}, {}]",
                dim(self.channels),
                dim(self.height),
                dim(self.width)
            ));
        }
        if self.tables {
            kinds.push(format!("tables [{}]", dim(self.columns)));
        }
        let classes = match self.max_classes {
            Some(max) => format!("{} to {max} classes", self.min_classes),
            None => format!("at least {} classes", self.min_classes),
        };
        write!(f, "{}; {classes}", kinds.join(" or "))
    }
}

/// Reads a program's inputs declaration: `None` when it has none (it takes any dataset).
pub fn read_inputs(wasm: &[u8]) -> Result<Option<InputSpec>, InputsError> {
    match crate::section::find_once(wasm, SECTION) {
        Ok(found) => found.map(InputSpec::decode).transpose(),
        Err(crate::section::SectionError::Module(e)) => Err(InputsError::Module(e)),
        Err(crate::section::SectionError::Duplicate) => Err(InputsError::Duplicate),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dataset::ElementEncoding;

    /// Grayscale 28×28 images, 10 to 100 classes: the example CNN's declaration, as the SDK
    /// encodes it (the SDK's tests check the same bytes).
    pub(crate) const GOLDEN: [u8; ENCODED_LEN] = [
        b'C', b'H', b'I', b'R', b'O', b'N', b'I', b'N', 1, 1, 0, 0, //
        2, 0, 0, 0, 100, 0, 0, 0, //
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn header(kind: DatasetKind, dims: &[u32], classes: u32) -> DatasetHeader {
        DatasetHeader {
            kind,
            dims: dims.to_vec(),
            encoding: ElementEncoding::F32,
            classes,
            train_count: 10,
            valid_count: 0,
        }
    }

    #[test]
    fn a_declaration_round_trips_and_says_what_it_takes() {
        let spec = InputSpec::decode(&GOLDEN).expect("decodes");
        assert_eq!(spec.encode(), GOLDEN);
        assert_eq!(spec.to_string(), "images [1, *, *]; 2 to 100 classes");
        assert!(
            spec.accepts(&header(DatasetKind::Image, &[1, 28, 28], 10))
                .is_ok()
        );
        assert!(
            spec.accepts(&header(DatasetKind::Image, &[1, 32, 40], 2))
                .is_ok()
        );
    }

    #[test]
    fn datasets_the_program_does_not_take_are_named() {
        let spec = InputSpec::decode(&GOLDEN).expect("decodes");
        let table = spec.accepts(&header(DatasetKind::Tabular, &[4], 3));
        assert_eq!(
            table.map_err(|e| e.to_string()),
            Err("the program takes images only, and this dataset holds a table".to_owned())
        );
        let colour = spec.accepts(&header(DatasetKind::Image, &[3, 32, 32], 10));
        assert!(
            matches!(colour, Err(InputMismatch::Shape { .. })),
            "{colour:?}"
        );
        let many = spec.accepts(&header(DatasetKind::Image, &[1, 28, 28], 101));
        assert!(matches!(
            many,
            Err(InputMismatch::Classes { given: 101, .. })
        ));
    }

    #[test]
    fn malformed_declarations_are_refused() {
        let mut bad = GOLDEN;
        bad[9] = 0;
        assert_eq!(InputSpec::decode(&bad), Err(InputsError::NoKind));
        let mut bad = GOLDEN;
        bad[9] = 4;
        assert_eq!(InputSpec::decode(&bad), Err(InputsError::Reserved));
        let mut bad = GOLDEN;
        bad[12] = 1;
        assert_eq!(InputSpec::decode(&bad), Err(InputsError::Classes));
        let mut bad = GOLDEN;
        bad[16] = 1;
        assert_eq!(InputSpec::decode(&bad), Err(InputsError::Classes));
        assert_eq!(
            InputSpec::decode(&GOLDEN[..35]),
            Err(InputsError::Length(35))
        );
        let mut bad = GOLDEN;
        bad[8] = 2;
        assert_eq!(InputSpec::decode(&bad), Err(InputsError::Version(2)));
    }
}
