//! Turning the owner's files into Chiron's record format.
//!
//! Each source format is one module implementing one trait, [`Format`]:
//!
//! - [`idx`]: **IDX** image/label file pairs, the format of MNIST and Fashion-MNIST
//!   ([`from_idx`], [`load_idx_inputs`]);
//! - [`csv`]: **CSV** tables with one label column and numeric feature columns, their column
//!   names on any line or on none (scikit-learn's bundled CSVs start with a line of counts)
//!   ([`from_csv`], [`load_csv_inputs`]);
//! - [`image_folder`]: **image folders**, `dir/<class>/<image>.png|jpg|jpeg`;
//! - [`cifar`]: **CIFAR-10 and CIFAR-100 binary batches**;
//! - [`numpy`]: **NumPy** `.npy` arrays and `.npz` archives.
//!
//! [`DataSource`] names one source in any of these formats, so that a command line maps its
//! flags onto one value and calls [`DataSource::load_training`], [`DataSource::load_labelled`]
//! or [`DataSource::load_unlabelled`].
//!
//! Training conversion produces a [`PlainDataset`]: the public [`DatasetHeader`] and the
//! plaintext body laid out as `chiron_proto::dataset` describes (all labels as `u32`
//! little-endian, then all features; training examples first, then validation examples). The
//! body is what the owner encrypts locally; it never leaves the machine in the clear.
//!
//! The owner also needs to turn *query* inputs into exactly the values the model was trained
//! on, and to read answers back as class names: [`LabelledInputs`] (their own held-out test
//! set, to measure the model) and [`Inputs`] (examples without labels, to predict) are flat
//! `[n, feature_len]` `f32` matrices encoded as the enclave decodes the body (pixels `/ 255`,
//! table columns standardised), using the [`PlainDataset::class_names`] and
//! [`PlainDataset::standardizer`] kept from conversion.
//!
//! Every file is read whole into memory, bounded by the largest body a dataset may have.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chiron_proto::dataset::{
    DatasetHeader, DatasetKind, ElementEncoding, HeaderError, MAX_CLASSES, MAX_PLAINTEXT_LEN,
};
use flate2::read::MultiGzDecoder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub mod arrays;
pub mod cifar;
pub mod csv;
pub mod idx;
pub mod image_folder;
pub mod numpy;

pub use self::cifar::{CifarFiles, CifarLabels};
pub use self::csv::{CsvFile, CsvHeader, from_csv, load_csv_inputs};
pub use self::idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, IdxFiles, from_idx, load_idx_inputs};
pub use self::image_folder::ImageFolder;
pub use self::numpy::{NpyFiles, NpzFile};

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest decompressed input file accepted (a sanity bound against runaway decompression).
const MAX_INPUT_LEN: u64 = MAX_PLAINTEXT_LEN;

/// How to cut the owner's examples into the training and validation splits.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertOptions {
    /// Fraction of the examples held out for validation, in `0.0..0.5`; rounded down to whole
    /// examples.
    pub valid_fraction: f32,
    /// Take only the first `N` examples of the file (before shuffling), e.g. for fast tests.
    pub limit: Option<usize>,
    /// Shuffle the examples with this seed before splitting; `None` keeps file order, so the
    /// validation split is the file's tail. Files sorted by class (Iris is) need a seed, or the
    /// validation split holds a single class. The order depends on `rand`'s `StdRng`, so it is
    /// reproducible for a given lock file, not promised across `rand` upgrades.
    pub shuffle_seed: Option<u64>,
}

impl Default for ConvertOptions {
    /// 10% validation, every example, shuffled with seed 0.
    fn default() -> Self {
        Self {
            valid_fraction: 0.1,
            limit: None,
            shuffle_seed: Some(0),
        }
    }
}

/// Per-column standardisation of tabular features, `(x - mean) / std`, fitted on the training
/// split only. Keep it with the job: query inputs must be transformed identically.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardizer {
    /// Names of the feature columns, in feature order (the CSV header's names, or `"0"`,
    /// `"1"`, ... for columns known only by position).
    pub columns: Vec<String>,
    /// Mean of each feature column over the training split.
    pub mean: Vec<f32>,
    /// Population standard deviation of each column over the training split; a constant
    /// column gets 1 so that it maps to 0.
    pub std: Vec<f32>,
}

impl Standardizer {
    /// Number of feature columns.
    pub fn len(&self) -> usize {
        self.mean.len()
    }

    /// Whether there are no feature columns.
    pub fn is_empty(&self) -> bool {
        self.mean.is_empty()
    }

    /// Standardises one row of raw feature values in place. The row must hold [`Self::len`]
    /// values in column order; values past that are left alone.
    pub fn apply(&self, row: &mut [f32]) {
        debug_assert_eq!(
            row.len(),
            self.len(),
            "row width differs from the standardizer's"
        );
        for ((x, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
            *x = (*x - m) / s;
        }
    }

    /// Fits on the rows `rows[i * width..(i + 1) * width]` for `i` in `which`.
    fn fit(columns: Vec<String>, rows: &[f32], width: usize, which: &[usize]) -> Self {
        let n = which.len().max(1) as f64;
        let mut sum = vec![0f64; width];
        for &i in which {
            for (acc, &x) in sum.iter_mut().zip(&rows[i * width..(i + 1) * width]) {
                *acc += f64::from(x);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sq = vec![0f64; width];
        for &i in which {
            for ((acc, &x), m) in sq
                .iter_mut()
                .zip(&rows[i * width..(i + 1) * width])
                .zip(&mean)
            {
                let d = f64::from(x) - m;
                *acc += d * d;
            }
        }
        let std = sq
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt() as f32;
                if sd > 0.0 && sd.is_finite() { sd } else { 1.0 }
            })
            .collect();
        Self {
            columns,
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        }
    }
}

/// A converted dataset, ready to encrypt.
#[derive(Clone, Debug)]
pub struct PlainDataset {
    /// The public header (validated).
    pub header: DatasetHeader,
    /// The plaintext body, exactly `header.plaintext_len()` bytes.
    pub body: Vec<u8>,
    /// Name of each class index: the CSV label values or image folder names in sorted order,
    /// or `"0"`, `"1"`, ... for formats whose labels are numbers (IDX, CIFAR, NumPy). Keep it
    /// to read predictions back.
    pub class_names: Vec<String>,
    /// The feature standardisation applied to tabular data; `None` for images.
    pub standardizer: Option<Standardizer>,
}

/// Query inputs with their true labels: a flat `[n, feature_len]` matrix of `f32` values,
/// already encoded as the model sees them (pixels `/ 255`, table columns standardised).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledInputs {
    /// Shape of one example: `[channels, rows, cols]` for images, `[columns]` for tables.
    pub dims: Vec<u32>,
    /// `labels.len() × feature_len()` values, example after example.
    pub features: Vec<f32>,
    /// The true class index of each example.
    pub labels: Vec<u32>,
}

impl LabelledInputs {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per example.
    pub fn feature_len(&self) -> usize {
        feature_len(&self.dims)
    }

    /// Consecutive batches of at most `batch` examples (at least 1): each the `[m, feature_len]`
    /// values and the `m` labels.
    pub fn batches(&self, batch: usize) -> impl Iterator<Item = (&[f32], &[u32])> + '_ {
        let batch = batch.max(1);
        let width = self.feature_len().max(1);
        self.features
            .chunks(batch * width)
            .zip(self.labels.chunks(batch))
    }
}

/// Query inputs without labels, for prediction: a flat `[n, feature_len]` matrix of `f32`
/// values, already encoded as the model sees them (pixels `/ 255`, table columns standardised).
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs {
    /// Shape of one example: `[channels, rows, cols]` for images, `[columns]` for tables.
    pub dims: Vec<u32>,
    /// `len() × feature_len()` values, example after example.
    pub features: Vec<f32>,
}

impl Inputs {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.features.len() / self.feature_len().max(1)
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.features.is_empty()
    }

    /// Values per example.
    pub fn feature_len(&self) -> usize {
        feature_len(&self.dims)
    }

    /// Consecutive batches of at most `batch` examples (at least 1), each `[m, feature_len]`
    /// values.
    pub fn batches(&self, batch: usize) -> impl Iterator<Item = &[f32]> + '_ {
        let width = self.feature_len().max(1);
        self.features.chunks(batch.max(1) * width)
    }
}

impl From<LabelledInputs> for Inputs {
    /// The same examples without their labels.
    fn from(inputs: LabelledInputs) -> Self {
        Self {
            dims: inputs.dims,
            features: inputs.features,
        }
    }
}

fn feature_len(dims: &[u32]) -> usize {
    dims.iter().map(|&d| d as usize).product()
}

/// Refuses query inputs whose examples have another shape than the model's training
/// examples (`header`, from the job's ticket), before any query is spent: inputs of another
/// shape would be refused by the enclave or, worse, answered.
pub fn check_query_dims(dims: &[u32], header: &DatasetHeader) -> Result<(), ConvertError> {
    if dims != header.dims.as_slice() {
        return Err(ConvertError::QueryShape {
            dims: dims.to_vec(),
            kind: header.kind,
            trained: header.dims.clone(),
        });
    }
    Ok(())
}

/// One source format: reads the owner's training set and query inputs from files of that
/// format. A new format is one module implementing this trait, plus a [`DataSource`] variant.
pub trait Format {
    /// Converts the training set: the examples (the first `opts.limit` of them), split and
    /// laid out as the body the owner encrypts.
    fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError>;

    /// Reads query inputs with their true labels, the first `limit` of them, encoded as the
    /// training conversion encoded its examples. `class_names` and `standardizer` are what
    /// that conversion kept ([`PlainDataset::class_names`], [`PlainDataset::standardizer`]):
    /// labels are mapped to the training classes, and a label outside them is an error.
    fn load_labelled(
        &self,
        class_names: &[String],
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError>;

    /// Reads query inputs without labels (any labels the source has are ignored), the first
    /// `limit` of them, encoded as the training conversion encoded its examples.
    fn load_unlabelled(
        &self,
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError>;
}

/// The owner's data in one of the understood formats: what a command line's flags describe.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// An IDX image file and, for training and evaluation, its label file.
    Idx(IdxFiles),
    /// A CSV table.
    Csv(CsvFile),
    /// A folder of images, one subfolder per class.
    ImageFolder(ImageFolder),
    /// CIFAR-10 or CIFAR-100 binary batch files.
    Cifar(CifarFiles),
    /// A NumPy `.npy` features array and, for training and evaluation, a labels array.
    Npy(NpyFiles),
    /// A NumPy `.npz` archive holding a features array and a labels array.
    Npz(NpzFile),
}

impl DataSource {
    /// The format's reader.
    pub fn format(&self) -> &dyn Format {
        match self {
            Self::Idx(f) => f,
            Self::Csv(f) => f,
            Self::ImageFolder(f) => f,
            Self::Cifar(f) => f,
            Self::Npy(f) => f,
            Self::Npz(f) => f,
        }
    }

    /// Converts the training set ([`Format::load_training`]).
    pub fn load_training(&self, opts: &ConvertOptions) -> Result<PlainDataset, ConvertError> {
        self.format().load_training(opts)
    }

    /// Reads labelled query inputs ([`Format::load_labelled`]).
    pub fn load_labelled(
        &self,
        class_names: &[String],
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<LabelledInputs, ConvertError> {
        self.format()
            .load_labelled(class_names, standardizer, limit)
    }

    /// Reads unlabelled query inputs ([`Format::load_unlabelled`]).
    pub fn load_unlabelled(
        &self,
        standardizer: Option<&Standardizer>,
        limit: Option<usize>,
    ) -> Result<Inputs, ConvertError> {
        self.format().load_unlabelled(standardizer, limit)
    }
}

/// Why the owner's files could not be converted.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The options are out of range.
    #[error("validation fraction {0} is outside 0.0..0.5")]
    ValidFraction(f32),
    /// A file could not be read or decompressed.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file decompresses to more than the accepted size.
    #[error("{}: larger than the {MAX_INPUT_LEN}-byte limit", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// Training or evaluation needs labels, and the source names none.
    #[error("{}: no labels: {what}", path.display())]
    NoLabels {
        /// The features file.
        path: PathBuf,
        /// Where the labels should come from.
        what: &'static str,
    },
    /// An IDX file starts with the wrong magic number.
    #[error(
        "{}: not an IDX {what} file: magic number is {found:#010x}, expected {expected:#010x}{hint}",
        path.display()
    )]
    IdxMagic {
        /// The file.
        path: PathBuf,
        /// `"images"` or `"labels"`.
        what: &'static str,
        /// The magic number expected.
        expected: u32,
        /// The magic number found.
        found: u32,
        /// Extra advice (e.g. that the two files look swapped), or empty.
        hint: &'static str,
    },
    /// An IDX file is shorter or longer than its header says.
    #[error(
        "{}: IDX file holds {actual} bytes but its header {dims:?} describes {expected} (truncated or corrupt)",
        path.display()
    )]
    IdxLength {
        /// The file.
        path: PathBuf,
        /// The dimensions its header declares.
        dims: Vec<u32>,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes present (after decompression).
        actual: u64,
    },
    /// An IDX image file with a zero or oversized dimension.
    #[error("{}: image dimensions {dims:?} are not usable", path.display())]
    IdxShape {
        /// The file.
        path: PathBuf,
        /// The dimensions its header declares.
        dims: Vec<u32>,
    },
    /// The features and label files hold different numbers of examples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(), labels_path.display()
    )]
    CountMismatch {
        /// The image (or features) file.
        images_path: PathBuf,
        /// Its example count.
        images: u64,
        /// The label file.
        labels_path: PathBuf,
        /// Its example count.
        labels: u64,
    },
    /// Fewer than two classes among the examples taken.
    #[error("{}: the examples hold {classes} class(es); at least 2 are needed", path.display())]
    TooFewClasses {
        /// The label file or table.
        path: PathBuf,
        /// Classes found.
        classes: usize,
    },
    /// Class indices below the largest label never occur: a corrupt or mistyped label
    /// would otherwise silently add classes.
    #[error(
        "{}: labels run to {max}, but {} of the classes 0 to {max} never occur ({}): a \
         corrupt label? Every class index up to the largest must occur at least once",
        path.display(),
        missing.len(),
        list_some(missing)
    )]
    LabelGaps {
        /// The label file.
        path: PathBuf,
        /// The largest label.
        max: u32,
        /// The class indices that never occur.
        missing: Vec<u32>,
    },
    /// A query label is a class index the model was not trained on.
    #[error(
        "{}: example {example} has label {label}, but the model knows {classes} classes \
         (0 to {}): are these the inputs of another dataset?",
        path.display(),
        classes.saturating_sub(1)
    )]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// 0-based index of the example.
        example: usize,
        /// The label.
        label: u64,
        /// The training class count.
        classes: usize,
    },
    /// More examples than a header can count.
    #[error("{}: {count} examples is more than a dataset may hold", path.display())]
    TooManyExamples {
        /// The file.
        path: PathBuf,
        /// Examples found.
        count: usize,
    },
    /// No examples at all.
    #[error("{}: no examples", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The CSV parser failed (unreadable file, bad UTF-8, a broken quote).
    #[error("{}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The parser's error, with its position.
        source: ::csv::Error,
    },
    /// The CSV header line has another field count than the first row after it: the column
    /// names are not on that line, or there is no header line at all.
    #[error(
        "{}: line {header_line}, taken as the header row, has {header_fields} fields but line \
         {line} has {fields}. If the column names are on another line, give \
         --csv-header-row N (lines counted from 0; the lines before it are skipped); if no line \
         names the columns, give --csv-no-header (columns are then named 0, 1, ... by position), \
         with --csv-header-row N to skip lines 0 to N that hold no data (scikit-learn's bundled \
         CSVs start with a line of counts and class names: --csv-no-header --csv-header-row 0)",
        path.display()
    )]
    HeaderWidth {
        /// The file.
        path: PathBuf,
        /// 1-based line of the header row.
        header_line: u64,
        /// Its field count.
        header_fields: usize,
        /// 1-based line of the first row after it.
        line: u64,
        /// That row's field count.
        fields: usize,
    },
    /// A CSV row has another field count than the rows before it.
    #[error("{}: line {line} has {fields} fields, but the rows before it have {expected}", path.display())]
    RaggedRow {
        /// The file.
        path: PathBuf,
        /// 1-based line of the row.
        line: u64,
        /// Its field count.
        fields: usize,
        /// The field count of the rows before it.
        expected: usize,
    },
    /// A column the conversion needs is not among the CSV's column names.
    #[error(
        "{}: no column named {column:?} among the columns {available:?}{hint}",
        path.display()
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The header row's names.
        available: Vec<String>,
        /// How the column names were found, and what to do if that is wrong, or empty.
        hint: String,
    },
    /// Two columns share a name.
    #[error(
        "{}: column name {column:?} appears more than once in the header row{hint}",
        path.display()
    )]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        column: String,
        /// How the column names were found, and what to do if that is wrong, or empty.
        hint: String,
    },
    /// The line taken for column names is scikit-learn's line of counts and class names.
    #[error(
        "{}: line {line} looks like scikit-learn's line of counts and class names ({examples} \
         examples of {features} features, classes {classes:?}), not column names: give \
         --csv-no-header --csv-header-row {} to skip it; the columns are then named by \
         position, 0 to {features}, the last one ({features}) holding the class index",
        path.display(),
        line.saturating_sub(1)
    )]
    CountLine {
        /// The file.
        path: PathBuf,
        /// 1-based line of the count line.
        line: u64,
        /// The example count it declares.
        examples: u64,
        /// The feature count it declares.
        features: u64,
        /// The class names it lists.
        classes: Vec<String>,
    },
    /// A query table has a column the training table did not.
    #[error(
        "{}: column {column:?} was not a feature of the training table {expected:?}",
        path.display()
    )]
    UnexpectedColumn {
        /// The file.
        path: PathBuf,
        /// The extra column.
        column: String,
        /// The training table's feature columns.
        expected: Vec<String>,
    },
    /// A table has only the label column.
    #[error("{}: no feature columns besides the label column", path.display())]
    NoFeatures {
        /// The file.
        path: PathBuf,
    },
    /// A feature cell is not a finite number.
    #[error("{}: line {line}, column {column:?}: {value:?} is not a finite number", path.display())]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// 1-based line in the file (the header row is line 1).
        line: u64,
        /// The column's name.
        column: String,
        /// The cell's text.
        value: String,
    },
    /// A label cell is empty.
    #[error("{}: line {line}: the label is empty", path.display())]
    EmptyLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line in the file.
        line: u64,
    },
    /// A query label is not one of the training classes.
    #[error("{}: line {line}: label {value:?} is not one of the classes {classes:?}", path.display())]
    UnknownLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line in the file.
        line: u64,
        /// The label's text.
        value: String,
        /// The training classes.
        classes: Vec<String>,
    },
    /// Query features have another width than the training features.
    #[error(
        "{}: examples have {found} features, but the model was trained on {expected}",
        path.display()
    )]
    WidthMismatch {
        /// The file.
        path: PathBuf,
        /// Features per example in the file.
        found: usize,
        /// Features per example in training.
        expected: usize,
    },
    /// An image file does not decode.
    #[error("{}: cannot decode the image: {source}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// Images of an image folder differ in size.
    #[error(
        "{}: the image is {width}×{height} pixels, but {} is {first_width}×{first_height}: all \
         images must have one size (resize or remove the odd ones)",
        path.display(),
        first.display()
    )]
    ImageSize {
        /// The first image whose size differs.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The first image read, whose size the others must have.
        first: PathBuf,
        /// Its width.
        first_width: u32,
        /// Its height.
        first_height: u32,
    },
    /// A folder holds no images where some are needed.
    #[error(
        "{}: no .png, .jpg or .jpeg images {what}",
        path.display()
    )]
    NoImages {
        /// The folder.
        path: PathBuf,
        /// Where they were looked for.
        what: &'static str,
    },
    /// A file or folder name is not valid UTF-8, so it cannot name a class.
    #[error("{}: the name is not valid UTF-8; rename it", path.display())]
    NotUtf8Name {
        /// The file or folder.
        path: PathBuf,
    },
    /// A query folder's class is not one of the training classes.
    #[error("{}: folder {class:?} is not one of the classes {classes:?}", path.display())]
    UnknownClassFolder {
        /// The folder.
        path: PathBuf,
        /// The folder's name.
        class: String,
        /// The training classes.
        classes: Vec<String>,
    },
    /// A CIFAR file is not a whole number of records.
    #[error(
        "{}: {len} bytes is {records} whole records of {record_len} bytes and {} bytes more: a \
         truncated file? (a {variant} record is {record_len} bytes{hint})",
        path.display(),
        len % record_len
    )]
    CifarLength {
        /// The file.
        path: PathBuf,
        /// The file's length.
        len: u64,
        /// The record length of the variant read.
        record_len: u64,
        /// Whole records in the file.
        records: u64,
        /// The variant read (`"CIFAR-10"` or `"CIFAR-100"`).
        variant: &'static str,
        /// Advice on the other variant, or empty.
        hint: &'static str,
    },
    /// A CIFAR record's label is out of the variant's range.
    #[error(
        "{}: record {record} has label {label}, but {variant} labels are below {classes}: not a \
         {variant} file, or the wrong CIFAR variant chosen?",
        path.display()
    )]
    CifarLabel {
        /// The file.
        path: PathBuf,
        /// 0-based index of the record in its file.
        record: u64,
        /// The label byte.
        label: u8,
        /// The variant read (`"CIFAR-10"`, `"CIFAR-100 fine"`, `"CIFAR-100 coarse"`).
        variant: &'static str,
        /// Its class count.
        classes: u32,
    },
    /// A `.npy` file is malformed.
    #[error("{}: not a valid .npy file: {reason}", path.display())]
    Npy {
        /// The file (or `archive.npz:key.npy`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Query inputs of another shape than the model's training examples.
    #[error(
        "these inputs are examples of shape {dims:?}, but the model was trained on {kind:?} \
         data of shape {trained:?}: give the same kind of data as for training; no query was \
         sent"
    )]
    QueryShape {
        /// The shape of one input.
        dims: Vec<u32>,
        /// The kind of data the model was trained on.
        kind: DatasetKind,
        /// The shape of one training example.
        trained: Vec<u32>,
    },
    /// A `.npy` array has a type or layout that cannot be used here.
    #[error("{}: the {what} array cannot be used: {reason}", path.display())]
    NpyUnsupported {
        /// The file (or `archive.npz:key.npy`).
        path: PathBuf,
        /// `"features"` or `"labels"`.
        what: &'static str,
        /// What is wrong, and how to save it instead.
        reason: String,
    },
    /// A `.npz` archive lacks an array.
    #[error("{}: no array {key:?} (the archive holds {available:?}){hint}", path.display())]
    NpzKey {
        /// The archive.
        path: PathBuf,
        /// The array looked for (one of them, when several names are tried).
        key: String,
        /// The arrays the archive holds.
        available: Vec<String>,
        /// Which option names the array, or empty.
        hint: &'static str,
    },
    /// A `.npz` archive is not a readable zip file.
    #[error("{}: not a readable .npz (zip) archive: {source}", path.display())]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The zip reader's error.
        source: zip::result::ZipError,
    },
    /// The resulting header is out of Chiron's limits.
    #[error("{}: {source}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        source: HeaderError,
    },
}

// ---------------------------------------------------------------------------------------------
// Shared reading

/// Reads a whole file, decompressing it if it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, ConvertError> {
    let io = |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let raw = read_capped(path, file)?;
    if raw.starts_with(&GZIP_MAGIC) {
        read_capped(path, MultiGzDecoder::new(raw.as_slice()))
    } else {
        Ok(raw)
    }
}

/// Reads `reader` to its end, refusing more than [`MAX_INPUT_LEN`] bytes.
fn read_capped(path: &Path, reader: impl Read) -> Result<Vec<u8>, ConvertError> {
    let mut out = Vec::new();
    reader
        .take(MAX_INPUT_LEN + 1)
        .read_to_end(&mut out)
        .map_err(|source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > MAX_INPUT_LEN {
        return Err(ConvertError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Shared conversion

/// The first few of `values`, for a message.
fn list_some(values: &[u32]) -> String {
    let shown: Vec<String> = values.iter().take(5).map(u32::to_string).collect();
    let more = if values.len() > 5 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

fn check_options(opts: &ConvertOptions) -> Result<(), ConvertError> {
    if (0.0..0.5).contains(&opts.valid_fraction) {
        Ok(())
    } else {
        Err(ConvertError::ValidFraction(opts.valid_fraction))
    }
}

/// The class count of numeric labels: `max + 1`, with at least two classes and every index
/// up to the largest present (a gap is most likely a corrupt label).
fn numeric_classes(path: &Path, labels: &[u32]) -> Result<usize, ConvertError> {
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    // Refused before the table of seen classes below is sized by an untrusted label.
    if classes > MAX_CLASSES as usize {
        return Err(ConvertError::Header {
            path: path.to_path_buf(),
            source: HeaderError::Classes(u32::try_from(classes).unwrap_or(u32::MAX)),
        });
    }
    if classes < 2 {
        return Err(ConvertError::TooFewClasses {
            path: path.to_path_buf(),
            classes,
        });
    }
    let mut seen = vec![false; classes];
    for &label in labels {
        seen[label as usize] = true;
    }
    let missing: Vec<u32> = (0..classes as u32).filter(|&c| !seen[c as usize]).collect();
    if !missing.is_empty() {
        return Err(ConvertError::LabelGaps {
            path: path.to_path_buf(),
            max: classes as u32 - 1,
            missing,
        });
    }
    Ok(classes)
}

/// `"0"`, `"1"`, ... for `classes` numeric classes.
fn numeric_class_names(classes: usize) -> Vec<String> {
    (0..classes).map(|c| c.to_string()).collect()
}

/// Checks query labels against the training class count.
fn check_query_labels(
    path: &Path,
    labels: &[u32],
    class_names: &[String],
) -> Result<(), ConvertError> {
    match labels.iter().position(|&l| l as usize >= class_names.len()) {
        Some(example) => Err(ConvertError::LabelOutOfRange {
            path: path.to_path_buf(),
            example,
            label: u64::from(labels[example]),
            classes: class_names.len(),
        }),
        None => Ok(()),
    }
}

/// The order examples go into the body, and how many of them (the first) are for training.
fn split(n: usize, opts: &ConvertOptions) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = opts.shuffle_seed {
        order.shuffle(&mut StdRng::seed_from_u64(seed));
    }
    // valid_fraction < 0.5, so at least half (and, for n ≥ 1, at least one) example trains.
    let valid = ((n as f64) * f64::from(opts.valid_fraction)).floor() as usize;
    (order, n - valid.min(n))
}

fn make_header(
    path: &Path,
    kind: DatasetKind,
    dims: Vec<u32>,
    encoding: ElementEncoding,
    classes: usize,
    n: usize,
    train_count: usize,
) -> Result<DatasetHeader, ConvertError> {
    let too_many = || ConvertError::TooManyExamples {
        path: path.to_path_buf(),
        count: n,
    };
    let header = DatasetHeader {
        kind,
        dims,
        encoding,
        classes: u32::try_from(classes).unwrap_or(u32::MAX),
        train_count: u32::try_from(train_count).map_err(|_| too_many())?,
        valid_count: u32::try_from(n - train_count).map_err(|_| too_many())?,
    };
    header.validate().map_err(|source| ConvertError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(header)
}

/// A body buffer of the header's full length, holding the labels in `order`.
fn body_with_labels(header: &DatasetHeader, labels: &[u32], order: &[usize]) -> Vec<u8> {
    // The header was validated, so its length is bounded by MAX_PLAINTEXT_LEN.
    let len = header.plaintext_len().map_or(0, |l| l as usize);
    let mut body = Vec::with_capacity(len);
    for &i in order {
        body.extend_from_slice(&labels[i].to_le_bytes());
    }
    body
}

/// Feature values as a format decoded them, example after example.
enum Values {
    /// Pixels, stored as [`ElementEncoding::U8Unit`].
    U8(Vec<u8>),
    /// Anything else, stored as [`ElementEncoding::F32`].
    F32(Vec<f32>),
}

/// Examples a format decoded, in file order, before the split.
struct Examples {
    kind: DatasetKind,
    /// Shape of one example.
    dims: Vec<u32>,
    values: Values,
    /// One label per example.
    labels: Vec<u32>,
}

impl Examples {
    /// Lays the examples out as a training body. Tabular examples are standardised with the
    /// training split's statistics, their columns named `columns`.
    fn into_dataset(
        self,
        path: &Path,
        class_names: Vec<String>,
        columns: Option<Vec<String>>,
        opts: &ConvertOptions,
    ) -> Result<PlainDataset, ConvertError> {
        let n = self.labels.len();
        if n == 0 {
            return Err(ConvertError::Empty {
                path: path.to_path_buf(),
            });
        }
        let encoding = match self.values {
            Values::U8(_) => ElementEncoding::U8Unit,
            Values::F32(_) => ElementEncoding::F32,
        };
        let (order, train_count) = split(n, opts);
        let header = make_header(
            path,
            self.kind,
            self.dims,
            encoding,
            class_names.len(),
            n,
            train_count,
        )?;
        let width = header.feature_len();
        let mut body = body_with_labels(&header, &self.labels, &order);
        let mut standardizer = None;
        match self.values {
            Values::U8(pixels) => {
                for &i in &order {
                    body.extend_from_slice(&pixels[i * width..(i + 1) * width]);
                }
            }
            Values::F32(values) => {
                let fitted = (self.kind == DatasetKind::Tabular).then(|| {
                    let names =
                        columns.unwrap_or_else(|| (0..width).map(|c| c.to_string()).collect());
                    Standardizer::fit(names, &values, width, &order[..train_count])
                });
                let mut row = vec![0f32; width];
                for &i in &order {
                    row.copy_from_slice(&values[i * width..(i + 1) * width]);
                    if let Some(s) = &fitted {
                        s.apply(&mut row);
                    }
                    for x in &row {
                        body.extend_from_slice(&x.to_le_bytes());
                    }
                }
                standardizer = fitted;
            }
        }
        Ok(PlainDataset {
            header,
            body,
            class_names,
            standardizer,
        })
    }
}

/// Pixels scaled to `0.0..=1.0`, as the enclave decodes [`ElementEncoding::U8Unit`].
fn scaled_pixels(pixels: &[u8]) -> Vec<f32> {
    pixels.iter().map(|&p| f32::from(p) / 255.0).collect()
}

/// Encodes query feature values as the enclave decodes the body: pixels `/ 255`; tabular
/// rows standardised when a standardizer is given, which must have the rows' width.
fn query_values(
    path: &Path,
    kind: DatasetKind,
    dims: &[u32],
    values: Values,
    standardizer: Option<&Standardizer>,
) -> Result<Vec<f32>, ConvertError> {
    match values {
        Values::U8(pixels) => Ok(scaled_pixels(&pixels)),
        Values::F32(mut values) => {
            if let (DatasetKind::Tabular, Some(s)) = (kind, standardizer) {
                let width = feature_len(dims);
                if width != s.len() {
                    return Err(ConvertError::WidthMismatch {
                        path: path.to_path_buf(),
                        found: width,
                        expected: s.len(),
                    });
                }
                for row in values.chunks_exact_mut(width.max(1)) {
                    s.apply(row);
                }
            }
            Ok(values)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_support {
    //! Helpers the format modules' unit tests share.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::{ConvertOptions, PlainDataset};

    const FASHION: &str = "/usr/share/datasets/fashion-mnist";

    /// The Fashion-MNIST test set installed by the set-up.
    pub fn fashion_test_files() -> (PathBuf, PathBuf) {
        let dir = Path::new(FASHION);
        (
            dir.join("t10k-images-idx3-ubyte.gz"),
            dir.join("t10k-labels-idx1-ubyte.gz"),
        )
    }

    /// The Iris table shipped with the client's tests.
    pub fn iris_csv() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iris.csv")
    }

    /// A scratch directory removed on drop.
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "chiron-convert-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Every example, file order, no validation split.
    pub fn no_split() -> ConvertOptions {
        ConvertOptions {
            valid_fraction: 0.0,
            limit: None,
            shuffle_seed: None,
        }
    }

    /// The labels of a body.
    pub fn body_labels(data: &PlainDataset) -> Vec<u32> {
        let n = data.header.total_count() as usize;
        data.body[..n * 4]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    /// The features of a body of `f32` values.
    pub fn body_f32(data: &PlainDataset) -> Vec<f32> {
        let n = data.header.total_count() as usize;
        data.body[n * 4..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}
