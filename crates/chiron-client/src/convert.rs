//! Turning the owner's files into Chiron's record format.
//!
//! Two sources are understood:
//!
//! - **IDX** image/label file pairs, the format of MNIST and Fashion-MNIST, gzip-compressed or
//!   raw (gzip is recognised by its magic bytes, not by the file name): [`from_idx`];
//! - **CSV** tables with a header row, one label column (strings or integers) and numeric
//!   feature columns: [`from_csv`].
//!
//! Both produce a [`PlainDataset`]: the public [`DatasetHeader`] and the plaintext body laid out
//! as `chiron_proto::dataset` describes (all labels as `u32` little-endian, then all features;
//! training examples first, then validation examples). The body is what the owner encrypts
//! locally; it never leaves the machine in the clear.
//!
//! The owner also needs to turn *query* inputs (their own held-out test set) into exactly the
//! values the model was trained on, and to read answers back as class names:
//! [`load_idx_inputs`] and [`load_csv_inputs`] give [`LabelledInputs`] (a flat `[n, feature_len]`
//! `f32` matrix plus true labels), using the [`PlainDataset::class_names`] and
//! [`PlainDataset::standardizer`] kept from conversion.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use chiron_proto::dataset::{
    DatasetHeader, DatasetKind, ElementEncoding, HeaderError, MAX_PLAINTEXT_LEN,
};
use flate2::read::MultiGzDecoder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// IDX magic of an image file: unsigned bytes, three dimensions `[count, rows, cols]`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of a label file: unsigned bytes, one dimension `[count]`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

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
    /// Names of the feature columns, in feature order (the CSV header's names).
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
    /// Name of each class index: the CSV label values in sorted order, or `"0"`, `"1"`, ... for
    /// IDX files. Keep it to read predictions back.
    pub class_names: Vec<String>,
    /// The feature standardisation applied to tabular data; `None` for images.
    pub standardizer: Option<Standardizer>,
}

/// Query inputs with their true labels: a flat `[n, feature_len]` matrix of `f32` values,
/// already encoded as the model sees them (pixels `/ 255`, table columns standardised).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledInputs {
    /// Shape of one example: `[1, rows, cols]` for images, `[columns]` for tables.
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
        self.dims.iter().map(|&d| d as usize).product()
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
    /// The image and label files hold different numbers of examples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels",
        images_path.display(), labels_path.display()
    )]
    CountMismatch {
        /// The image file.
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
    /// The CSV parser failed (unreadable file, rows of unequal length, bad UTF-8).
    #[error("{}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The parser's error, with its position.
        source: csv::Error,
    },
    /// A column the conversion needs is not in the CSV header row.
    #[error(
        "{}: no column named {column:?} in the header row {available:?} (the first row must name the columns)",
        path.display()
    )]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column looked for.
        column: String,
        /// The header row's names.
        available: Vec<String>,
    },
    /// Two columns share a name.
    #[error("{}: column name {column:?} appears more than once in the header row", path.display())]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        column: String,
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
// IDX

/// One parsed IDX file: its dimensions and the bytes after the header.
struct Idx {
    dims: Vec<u32>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl Idx {
    fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
    }
}

/// Reads a whole file, decompressing it if it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>, ConvertError> {
    let io = |source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut raw = Vec::new();
    (&mut file)
        .take(MAX_INPUT_LEN + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    let bytes = if raw.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        MultiGzDecoder::new(raw.as_slice())
            .take(MAX_INPUT_LEN + 1)
            .read_to_end(&mut out)
            .map_err(io)?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > MAX_INPUT_LEN {
        return Err(ConvertError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads an IDX file of unsigned bytes with the given magic and checks its exact length.
fn read_idx(path: &Path, magic: u32, what: &'static str) -> Result<Idx, ConvertError> {
    let bytes = read_maybe_gzip(path)?;
    let short = |dims: Vec<u32>, expected: u64| ConvertError::IdxLength {
        path: path.to_path_buf(),
        dims,
        expected,
        actual: bytes.len() as u64,
    };
    let rank = (magic & 0xff) as usize;
    let header_len = 4 + 4 * rank;
    let Some(found) = be_u32(&bytes, 0) else {
        return Err(short(Vec::new(), header_len as u64));
    };
    if found != magic {
        let other = if magic == IDX_IMAGES_MAGIC {
            IDX_LABELS_MAGIC
        } else {
            IDX_IMAGES_MAGIC
        };
        return Err(ConvertError::IdxMagic {
            path: path.to_path_buf(),
            what,
            expected: magic,
            found,
            hint: if found == other {
                " (are the image and label files swapped?)"
            } else {
                ""
            },
        });
    }
    let dims: Option<Vec<u32>> = (0..rank).map(|i| be_u32(&bytes, 4 + 4 * i)).collect();
    let Some(dims) = dims else {
        return Err(short(Vec::new(), header_len as u64));
    };
    let data_len = dims
        .iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(u64::from(d)));
    let expected = data_len.saturating_add(header_len as u64);
    if bytes.len() as u64 != expected {
        return Err(short(dims, expected));
    }
    Ok(Idx {
        dims,
        bytes,
        data_start: header_len,
    })
}

/// Reads and cross-checks an image/label IDX pair, keeping the first `limit` examples.
/// Returns the images, the labels and the example count taken.
fn read_idx_pair(
    images: &Path,
    labels: &Path,
    limit: Option<usize>,
) -> Result<(Idx, Vec<u32>, usize), ConvertError> {
    let img = read_idx(images, IDX_IMAGES_MAGIC, "images")?;
    let lab = read_idx(labels, IDX_LABELS_MAGIC, "labels")?;
    let (count, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
    if rows == 0
        || cols == 0
        || rows > chiron_proto::dataset::MAX_DIM
        || cols > chiron_proto::dataset::MAX_DIM
    {
        return Err(ConvertError::IdxShape {
            path: images.to_path_buf(),
            dims: img.dims.clone(),
        });
    }
    if count != lab.dims[0] {
        return Err(ConvertError::CountMismatch {
            images_path: images.to_path_buf(),
            images: u64::from(count),
            labels_path: labels.to_path_buf(),
            labels: u64::from(lab.dims[0]),
        });
    }
    let n = limit.map_or(count as usize, |l| l.min(count as usize));
    if n == 0 {
        return Err(ConvertError::Empty {
            path: images.to_path_buf(),
        });
    }
    let labels_taken = lab.data()[..n].iter().map(|&l| u32::from(l)).collect();
    Ok((img, labels_taken, n))
}

/// The first few of `values`, for a message.
fn list_some(values: &[u32]) -> String {
    let shown: Vec<String> = values.iter().take(5).map(u32::to_string).collect();
    let more = if values.len() > 5 { ", …" } else { "" };
    format!("{}{more}", shown.join(", "))
}

/// Converts an MNIST-style IDX image/label pair (each gzip-compressed or raw).
///
/// The images file must have magic `0x00000803` (unsigned bytes, `[count, rows, cols]`), the
/// labels file `0x00000801` (unsigned bytes, `[count]`); the counts must agree and each file
/// must be exactly as long as its header says. The result is an [`DatasetKind::Image`] dataset
/// of dims `[1, rows, cols]`, [`ElementEncoding::U8Unit`], with `max label + 1` classes, each
/// of which must occur.
pub fn from_idx(
    images: &Path,
    labels: &Path,
    opts: &ConvertOptions,
) -> Result<PlainDataset, ConvertError> {
    check_options(opts)?;
    let (img, label_values, n) = read_idx_pair(images, labels, opts.limit)?;
    let classes = label_values.iter().max().map_or(0, |&m| m as usize + 1);
    if classes < 2 {
        return Err(ConvertError::TooFewClasses {
            path: labels.to_path_buf(),
            classes,
        });
    }
    let mut seen = vec![false; classes];
    for &label in &label_values {
        seen[label as usize] = true;
    }
    let missing: Vec<u32> = (0..classes as u32).filter(|&c| !seen[c as usize]).collect();
    if !missing.is_empty() {
        return Err(ConvertError::LabelGaps {
            path: labels.to_path_buf(),
            max: classes as u32 - 1,
            missing,
        });
    }
    let (rows, cols) = (img.dims[1], img.dims[2]);
    let (order, train_count) = split(n, opts);
    let header = make_header(
        images,
        DatasetKind::Image,
        vec![1, rows, cols],
        ElementEncoding::U8Unit,
        classes,
        n,
        train_count,
    )?;
    let feature_len = header.feature_len();
    let pixels = img.data();
    let mut body = body_with_labels(&header, &label_values, &order);
    for &i in &order {
        body.extend_from_slice(&pixels[i * feature_len..(i + 1) * feature_len]);
    }
    Ok(PlainDataset {
        header,
        body,
        class_names: (0..classes).map(|c| c.to_string()).collect(),
        standardizer: None,
    })
}

/// Reads an owner's held-out IDX image/label pair (e.g. `t10k-*`) as query inputs: pixels
/// scaled to `0.0..=1.0` (`/ 255`, as the enclave decodes [`ElementEncoding::U8Unit`]), dims
/// `[1, rows, cols]`, the first `limit` examples.
pub fn load_idx_inputs(
    images: &Path,
    labels: &Path,
    limit: Option<usize>,
) -> Result<LabelledInputs, ConvertError> {
    let (img, labels, n) = read_idx_pair(images, labels, limit)?;
    let (rows, cols) = (img.dims[1], img.dims[2]);
    let len = n * rows as usize * cols as usize;
    let features = img.data()[..len]
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Ok(LabelledInputs {
        dims: vec![1, rows, cols],
        features,
        labels,
    })
}

// ---------------------------------------------------------------------------------------------
// CSV

/// A parsed table: feature columns by name, raw values, label texts and their line numbers.
struct Table {
    feature_names: Vec<String>,
    values: Vec<f32>,
    labels: Vec<String>,
    lines: Vec<u64>,
}

/// Reads a CSV table with a header row. `features` picks the feature columns by name (in that
/// order), or, when `None`, every column but the label in file order.
fn read_table(
    path: &Path,
    label_column: &str,
    features: Option<&[String]>,
    limit: Option<usize>,
) -> Result<Table, ConvertError> {
    let csv_err = |source| ConvertError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(csv_err)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut seen = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        if seen.insert(name.as_str(), i).is_some() {
            return Err(ConvertError::DuplicateColumn {
                path: path.to_path_buf(),
                column: name.clone(),
            });
        }
    }
    let missing = |column: &str| ConvertError::MissingColumn {
        path: path.to_path_buf(),
        column: column.to_owned(),
        available: header.clone(),
    };
    let label_at = *seen
        .get(label_column)
        .ok_or_else(|| missing(label_column))?;
    let picked: Vec<usize> = match features {
        None => (0..header.len()).filter(|&i| i != label_at).collect(),
        Some(names) => {
            let mut picked = Vec::with_capacity(names.len());
            for name in names {
                picked.push(*seen.get(name.as_str()).ok_or_else(|| missing(name))?);
            }
            if let Some(extra) = (0..header.len()).find(|i| *i != label_at && !picked.contains(i)) {
                return Err(ConvertError::UnexpectedColumn {
                    path: path.to_path_buf(),
                    column: header[extra].clone(),
                    expected: names.to_vec(),
                });
            }
            picked
        }
    };
    if picked.is_empty() {
        return Err(ConvertError::NoFeatures {
            path: path.to_path_buf(),
        });
    }
    let mut table = Table {
        feature_names: picked.iter().map(|&i| header[i].clone()).collect(),
        values: Vec::new(),
        labels: Vec::new(),
        lines: Vec::new(),
    };
    let mut record = csv::StringRecord::new();
    let mut index = 0u64;
    while limit.is_none_or(|l| table.labels.len() < l) {
        if !reader.read_record(&mut record).map_err(csv_err)? {
            break;
        }
        index += 1;
        let line = record.position().map_or(index + 1, csv::Position::line);
        let cell = |i: usize| record.get(i).unwrap_or("");
        let label = cell(label_at);
        if label.is_empty() {
            return Err(ConvertError::EmptyLabel {
                path: path.to_path_buf(),
                line,
            });
        }
        for &i in &picked {
            let text = cell(i);
            match text.parse::<f32>() {
                Ok(x) if x.is_finite() => table.values.push(x),
                _ => {
                    return Err(ConvertError::NotNumeric {
                        path: path.to_path_buf(),
                        line,
                        column: header[i].clone(),
                        value: text.to_owned(),
                    });
                }
            }
        }
        table.labels.push(label.to_owned());
        table.lines.push(line);
    }
    if table.labels.is_empty() {
        return Err(ConvertError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(table)
}

/// The distinct label values in class order: numerically if all are integers, else by text.
fn class_names_of(labels: &[String]) -> Vec<String> {
    let distinct: Vec<&String> = labels
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let as_ints: Option<BTreeMap<i128, &String>> = distinct
        .iter()
        .map(|s| s.parse::<i128>().ok().map(|v| (v, *s)))
        .collect();
    match as_ints {
        // Distinct texts can parse to one integer ("1", "01"); then fall back to text order.
        Some(ints) if ints.len() == distinct.len() => ints.into_values().cloned().collect(),
        _ => distinct.into_iter().cloned().collect(),
    }
}

/// Converts a CSV table with a header row.
///
/// `label_column` names the class column; its values (strings or integers) become class
/// indices in sorted order (numeric order when all are integers), returned as
/// [`PlainDataset::class_names`]. Every other column must hold finite numbers. The result is a
/// [`DatasetKind::Tabular`] dataset of [`ElementEncoding::F32`] values standardised per column
/// with the training split's mean and standard deviation, returned as
/// [`PlainDataset::standardizer`].
pub fn from_csv(
    path: &Path,
    label_column: &str,
    opts: &ConvertOptions,
) -> Result<PlainDataset, ConvertError> {
    check_options(opts)?;
    let table = read_table(path, label_column, None, opts.limit)?;
    let class_names = class_names_of(&table.labels);
    if class_names.len() < 2 {
        return Err(ConvertError::TooFewClasses {
            path: path.to_path_buf(),
            classes: class_names.len(),
        });
    }
    let index: HashMap<&str, u32> = class_names
        .iter()
        .zip(0u32..)
        .map(|(name, i)| (name.as_str(), i))
        .collect();
    let labels: Vec<u32> = table
        .labels
        .iter()
        .map(|l| index.get(l.as_str()).copied().unwrap_or(0))
        .collect();
    let n = labels.len();
    let width = table.feature_names.len();
    let (order, train_count) = split(n, opts);
    let header = make_header(
        path,
        DatasetKind::Tabular,
        vec![u32::try_from(width).unwrap_or(u32::MAX)],
        ElementEncoding::F32,
        class_names.len(),
        n,
        train_count,
    )?;
    let standardizer = Standardizer::fit(
        table.feature_names,
        &table.values,
        width,
        &order[..train_count],
    );
    let mut body = body_with_labels(&header, &labels, &order);
    let mut row = vec![0f32; width];
    for &i in &order {
        row.copy_from_slice(&table.values[i * width..(i + 1) * width]);
        standardizer.apply(&mut row);
        for x in &row {
            body.extend_from_slice(&x.to_le_bytes());
        }
    }
    Ok(PlainDataset {
        header,
        body,
        class_names,
        standardizer: Some(standardizer),
    })
}

/// Reads an owner's held-out CSV table as query inputs, the first `limit` rows.
///
/// Labels are mapped with the training `class_names` (an unknown label is an error). With a
/// `standardizer`, the feature columns are picked by its column names (so their order in the
/// file may differ, but no other column may appear) and standardised; without one, every
/// column but the label is a feature, in file order, unchanged.
pub fn load_csv_inputs(
    path: &Path,
    label_column: &str,
    class_names: &[String],
    standardizer: Option<&Standardizer>,
    limit: Option<usize>,
) -> Result<LabelledInputs, ConvertError> {
    let table = read_table(
        path,
        label_column,
        standardizer.map(|s| s.columns.as_slice()),
        limit,
    )?;
    let index: HashMap<&str, u32> = class_names
        .iter()
        .zip(0u32..)
        .map(|(name, i)| (name.as_str(), i))
        .collect();
    let mut labels = Vec::with_capacity(table.labels.len());
    for (label, &line) in table.labels.iter().zip(&table.lines) {
        let Some(&class) = index.get(label.as_str()) else {
            return Err(ConvertError::UnknownLabel {
                path: path.to_path_buf(),
                line,
                value: label.clone(),
                classes: class_names.to_vec(),
            });
        };
        labels.push(class);
    }
    let width = table.feature_names.len();
    let mut features = table.values;
    if let Some(s) = standardizer {
        for row in features.chunks_exact_mut(width) {
            s.apply(row);
        }
    }
    Ok(LabelledInputs {
        dims: vec![u32::try_from(width).unwrap_or(u32::MAX)],
        features,
        labels,
    })
}

// ---------------------------------------------------------------------------------------------
// Shared

fn check_options(opts: &ConvertOptions) -> Result<(), ConvertError> {
    if (0.0..0.5).contains(&opts.valid_fraction) {
        Ok(())
    } else {
        Err(ConvertError::ValidFraction(opts.valid_fraction))
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const FASHION: &str = "/usr/share/datasets/fashion-mnist";

    fn fashion_test_files() -> (PathBuf, PathBuf) {
        let dir = Path::new(FASHION);
        (
            dir.join("t10k-images-idx3-ubyte.gz"),
            dir.join("t10k-labels-idx1-ubyte.gz"),
        )
    }

    fn iris_csv() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iris.csv")
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "chiron-convert-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
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

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn gunzip(path: &Path) -> Vec<u8> {
        read_maybe_gzip(path).unwrap()
    }

    fn no_split() -> ConvertOptions {
        ConvertOptions {
            valid_fraction: 0.0,
            limit: None,
            shuffle_seed: None,
        }
    }

    fn body_labels(data: &PlainDataset) -> Vec<u32> {
        let n = data.header.total_count() as usize;
        data.body[..n * 4]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn body_f32(data: &PlainDataset) -> Vec<f32> {
        let n = data.header.total_count() as usize;
        data.body[n * 4..]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn converts_real_fashion_mnist_test_images() {
        let (images, labels) = fashion_test_files();
        let opts = ConvertOptions {
            valid_fraction: 0.1,
            limit: Some(1000),
            shuffle_seed: None,
        };
        let data = from_idx(&images, &labels, &opts).unwrap();
        let h = &data.header;
        assert_eq!(h.kind, DatasetKind::Image);
        assert_eq!(h.dims, vec![1, 28, 28]);
        assert_eq!(h.encoding, ElementEncoding::U8Unit);
        assert_eq!(h.classes, 10);
        assert_eq!((h.train_count, h.valid_count), (900, 100));
        assert_eq!(data.body.len(), 1000 * 4 + 1000 * 784);
        assert_eq!(data.body.len() as u64, h.plaintext_len().unwrap());
        assert_eq!(
            data.class_names,
            (0..10).map(|c| c.to_string()).collect::<Vec<_>>()
        );
        assert!(data.standardizer.is_none());

        // File order is kept without a seed: the known first labels of the t10k set.
        let labels_in_body = body_labels(&data);
        assert_eq!(labels_in_body[..10], [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
        let mut histogram = [0usize; 10];
        for &l in &labels_in_body {
            histogram[l as usize] += 1;
        }
        assert!(
            histogram.iter().all(|&c| (70..=130).contains(&c)),
            "{histogram:?}"
        );

        // The pixels are the query loader's values, unscaled.
        let inputs = load_idx_inputs(&images, &labels, Some(1000)).unwrap();
        let pixels = &data.body[4000..];
        assert!(
            pixels
                .iter()
                .zip(&inputs.features)
                .all(|(&p, &f)| (f32::from(p) / 255.0 - f).abs() < 1e-7)
        );
        assert_eq!(inputs.labels, labels_in_body);
    }

    #[test]
    fn shuffling_is_seeded_and_keeps_images_with_their_labels() {
        let (images, labels) = fashion_test_files();
        let opts = ConvertOptions {
            valid_fraction: 0.2,
            limit: Some(300),
            shuffle_seed: Some(7),
        };
        let a = from_idx(&images, &labels, &opts).unwrap();
        let b = from_idx(&images, &labels, &opts).unwrap();
        assert_eq!(a.body, b.body);
        assert_eq!((a.header.train_count, a.header.valid_count), (240, 60));
        let plain = from_idx(
            &images,
            &labels,
            &ConvertOptions {
                shuffle_seed: None,
                ..opts
            },
        )
        .unwrap();
        assert_ne!(a.body, plain.body);

        let inputs = load_idx_inputs(&images, &labels, Some(300)).unwrap();
        let rows: Vec<(u32, Vec<u8>)> = inputs
            .features
            .chunks_exact(784)
            .zip(&inputs.labels)
            .map(|(r, &l)| (l, r.iter().map(|&f| (f * 255.0).round() as u8).collect()))
            .collect();
        let mut shuffled: Vec<(u32, Vec<u8>)> = body_labels(&a)
            .into_iter()
            .zip(a.body[1200..].chunks_exact(784).map(<[u8]>::to_vec))
            .collect();
        let mut original = rows.clone();
        assert_ne!(shuffled, original);
        shuffled.sort();
        original.sort();
        assert_eq!(shuffled, original);
    }

    #[test]
    fn loads_the_whole_real_test_set_as_query_inputs() {
        let (images, labels) = fashion_test_files();
        let inputs = load_idx_inputs(&images, &labels, None).unwrap();
        assert_eq!(inputs.len(), 10_000);
        assert_eq!(inputs.dims, vec![1, 28, 28]);
        assert_eq!(inputs.feature_len(), 784);
        assert_eq!(inputs.features.len(), 10_000 * 784);
        assert!(inputs.features.iter().all(|x| (0.0..=1.0).contains(x)));
        assert!(inputs.labels.iter().all(|&l| l < 10));
        let batches: Vec<_> = inputs.batches(3000).collect();
        assert_eq!(batches.len(), 4);
        assert_eq!(batches[3].0.len(), 1000 * 784);
        assert_eq!(batches[3].1.len(), 1000);
    }

    #[test]
    fn raw_and_gzip_idx_files_read_the_same() {
        let dir = Scratch::new();
        let img = idx(
            IDX_IMAGES_MAGIC,
            &[3, 2, 2],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        );
        let lab = idx(IDX_LABELS_MAGIC, &[3], &[0, 2, 1]);
        let raw = from_idx(&dir.write("i", &img), &dir.write("l", &lab), &no_split()).unwrap();
        let gz = from_idx(
            &dir.write("i.gz", &gzip(&img)),
            &dir.write("l.gz", &gzip(&lab)),
            &no_split(),
        )
        .unwrap();
        assert_eq!(raw.body, gz.body);
        assert_eq!(raw.header, gz.header);
        assert_eq!(raw.header.classes, 3);
        let mut expected = Vec::new();
        for l in [0u32, 2, 1] {
            expected.extend_from_slice(&l.to_le_bytes());
        }
        expected.extend(0..12u8);
        assert_eq!(raw.body, expected);
    }

    #[test]
    fn truncated_or_padded_idx_files_are_refused_by_name() {
        let dir = Scratch::new();
        let (images, labels) = fashion_test_files();
        let mut raw = gunzip(&labels);
        raw.pop();
        let cut = dir.write("cut-labels", &raw);
        let err = from_idx(&images, &cut, &no_split()).unwrap_err();
        assert!(
            matches!(
                &err,
                ConvertError::IdxLength {
                    expected: 10_008,
                    actual: 10_007,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("cut-labels") && text.contains("truncated"),
            "{text}"
        );

        raw.extend_from_slice(&[0, 0]);
        let long = dir.write("long-labels", &raw);
        let err = load_idx_inputs(&images, &long, Some(5)).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdxLength { actual: 10_009, .. }),
            "{err}"
        );

        // A gzip stream cut short is an I/O error naming the file.
        let compressed = std::fs::read(&labels).unwrap();
        let cut_gz = dir.write("cut.gz", &compressed[..compressed.len() / 2]);
        let err = from_idx(&images, &cut_gz, &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Io { .. }), "{err}");
        assert!(err.to_string().contains("cut.gz"), "{err}");

        // Shorter than the header itself.
        let tiny = dir.write("tiny", &[0, 0, 8]);
        let err = from_idx(&tiny, &labels, &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdxLength { actual: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_magic_is_refused_and_swapped_files_are_spotted() {
        let (images, labels) = fashion_test_files();
        let err = from_idx(&labels, &images, &no_split()).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::IdxMagic {
                    found: IDX_LABELS_MAGIC,
                    expected: IDX_IMAGES_MAGIC,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("t10k-labels-idx1-ubyte.gz") && text.contains("swapped"),
            "{text}"
        );

        let dir = Scratch::new();
        let floats = dir.write("floats", &idx(0x0000_0D03, &[1, 1, 1], &[0; 4]));
        let err = from_idx(&floats, &labels, &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::IdxMagic { found: 0x0d03, .. }),
            "{err}"
        );
        assert!(!err.to_string().contains("swapped"), "{err}");
    }

    #[test]
    fn count_mismatch_and_single_class_are_refused() {
        let dir = Scratch::new();
        let img = dir.write("i", &idx(IDX_IMAGES_MAGIC, &[3, 1, 2], &[0; 6]));
        let lab4 = dir.write("l4", &idx(IDX_LABELS_MAGIC, &[4], &[0, 1, 0, 1]));
        let err = from_idx(&img, &lab4, &no_split()).unwrap_err();
        assert!(
            matches!(
                err,
                ConvertError::CountMismatch {
                    images: 3,
                    labels: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("3 images") && err.to_string().contains("4 labels"));

        let one = dir.write("l1", &idx(IDX_LABELS_MAGIC, &[3], &[0, 0, 0]));
        let err = from_idx(&img, &one, &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::TooFewClasses { classes: 1, .. }),
            "{err}"
        );

        // A label of 57 among classes 0 and 1 would make 58 classes, 55 of them empty.
        let typo = dir.write("typo", &idx(IDX_LABELS_MAGIC, &[3], &[0, 1, 57]));
        let err = from_idx(&img, &typo, &no_split()).unwrap_err();
        assert!(
            matches!(&err, ConvertError::LabelGaps { max: 57, missing, .. } if missing.len() == 55),
            "{err}"
        );
        assert!(
            err.to_string().contains(
                "labels run to 57, but 55 of the classes 0 to 57 never occur (2, 3, 4, 5, 6, …)"
            ),
            "{err}"
        );

        let flat = dir.write("flat", &idx(IDX_IMAGES_MAGIC, &[3, 0, 2], &[]));
        let lab3 = dir.write("l3", &idx(IDX_LABELS_MAGIC, &[3], &[0, 1, 0]));
        let err = from_idx(&flat, &lab3, &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::IdxShape { .. }), "{err}");

        let err = from_idx(
            &img,
            &lab3,
            &ConvertOptions {
                limit: Some(0),
                ..no_split()
            },
        )
        .unwrap_err();
        assert!(matches!(err, ConvertError::Empty { .. }), "{err}");
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let (images, labels) = fashion_test_files();
        for f in [0.5, -0.1, f32::NAN] {
            let opts = ConvertOptions {
                valid_fraction: f,
                ..no_split()
            };
            assert!(matches!(
                from_idx(&images, &labels, &opts),
                Err(ConvertError::ValidFraction(_))
            ));
            assert!(matches!(
                from_csv(&iris_csv(), "species", &opts),
                Err(ConvertError::ValidFraction(_))
            ));
        }
    }

    #[test]
    fn converts_the_real_iris_table() {
        let opts = ConvertOptions {
            valid_fraction: 0.2,
            limit: None,
            shuffle_seed: Some(1),
        };
        let data = from_csv(&iris_csv(), "species", &opts).unwrap();
        let h = &data.header;
        assert_eq!(h.kind, DatasetKind::Tabular);
        assert_eq!(h.dims, vec![4]);
        assert_eq!(h.encoding, ElementEncoding::F32);
        assert_eq!(h.classes, 3);
        assert_eq!((h.train_count, h.valid_count), (120, 30));
        assert_eq!(data.body.len(), 150 * 4 + 150 * 4 * 4);
        assert_eq!(data.body.len() as u64, h.plaintext_len().unwrap());
        assert_eq!(data.class_names, ["setosa", "versicolor", "virginica"]);

        let labels = body_labels(&data);
        for class in 0..3 {
            assert_eq!(labels.iter().filter(|&&l| l == class).count(), 50);
        }
        // Shuffled: the validation split is not a single class.
        assert!(labels[120..].iter().any(|&l| l != labels[120]));

        let s = data.standardizer.as_ref().unwrap();
        assert_eq!(
            s.columns,
            ["sepal_length", "sepal_width", "petal_length", "petal_width"]
        );
        // Near the whole table's published means (5.84, 3.05, 3.76, 1.20) and SDs.
        for ((m, sd), (pm, psd)) in
            s.mean
                .iter()
                .zip(&s.std)
                .zip([(5.84, 0.83), (3.05, 0.43), (3.76, 1.76), (1.20, 0.76)])
        {
            assert!((m - pm).abs() < 0.2 && (sd - psd).abs() < 0.15, "{m} {sd}");
        }
        // The training split is standardised exactly; validation only approximately.
        let features = body_f32(&data);
        for c in 0..4 {
            let col: Vec<f64> = features[..120 * 4]
                .iter()
                .skip(c)
                .step_by(4)
                .map(|&x| f64::from(x))
                .collect();
            let mean = col.iter().sum::<f64>() / 120.0;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 120.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
                "column {c}: {mean} {var}"
            );
        }

        // Query inputs from the same file are the same rows, transformed the same way.
        let inputs =
            load_csv_inputs(&iris_csv(), "species", &data.class_names, Some(s), None).unwrap();
        assert_eq!(inputs.dims, vec![4]);
        assert_eq!(inputs.len(), 150);
        assert_eq!(inputs.labels[..50], [0; 50]);
        assert_eq!(inputs.labels[100..], [2; 50]);
        let key = |l: u32, r: &[f32]| (l, r.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        let mut from_body: Vec<_> = labels
            .iter()
            .zip(features.chunks_exact(4))
            .map(|(&l, r)| key(l, r))
            .collect();
        let mut from_inputs: Vec<_> = inputs
            .labels
            .iter()
            .zip(inputs.features.chunks_exact(4))
            .map(|(&l, r)| key(l, r))
            .collect();
        from_body.sort();
        from_inputs.sort();
        assert_eq!(from_body, from_inputs);

        let first =
            load_csv_inputs(&iris_csv(), "species", &data.class_names, Some(s), Some(10)).unwrap();
        assert_eq!(first.features[..], inputs.features[..40]);
    }

    #[test]
    fn integer_labels_sort_numerically_and_constant_columns_survive() {
        let dir = Scratch::new();
        let path = dir.write(
            "t.csv",
            b"x,k,label\n1.5,7,10\n2.5,7,9\n-1,7,2\n4e0,7,10\n 3 ,7, 9\n",
        );
        let data = from_csv(&path, "label", &no_split()).unwrap();
        assert_eq!(data.class_names, ["2", "9", "10"]);
        assert_eq!(body_labels(&data), [2, 1, 0, 2, 1]);
        let s = data.standardizer.unwrap();
        assert_eq!(s.columns, ["x", "k"]);
        assert_eq!(s.std[1], 1.0);
        assert!((s.mean[0] - 2.0).abs() < 1e-6);
        let mut row = [2.0, 7.0];
        s.apply(&mut row);
        assert_eq!(row, [0.0, 0.0]);
    }

    #[test]
    fn bad_csv_cells_are_named_by_line_and_column() {
        let dir = Scratch::new();
        let text = std::fs::read_to_string(iris_csv()).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines[37] = "5.0,3.2,1.2,abc,setosa";
        let bad = dir.write("bad.csv", lines.join("\n").as_bytes());
        let err = from_csv(&bad, "species", &no_split()).unwrap_err();
        match &err {
            ConvertError::NotNumeric {
                line,
                column,
                value,
                ..
            } => {
                assert_eq!(
                    (*line, column.as_str(), value.as_str()),
                    (38, "petal_width", "abc")
                );
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("bad.csv") && text.contains("line 38"),
            "{text}"
        );

        for cell in ["nan", "inf", "", "1e40"] {
            let path = dir.write("c.csv", format!("a,y\n1,p\n{cell},q\n").as_bytes());
            let err = from_csv(&path, "y", &no_split()).unwrap_err();
            assert!(
                matches!(err, ConvertError::NotNumeric { line: 3, .. }),
                "{cell}: {err}"
            );
        }

        let ragged = dir.write("r.csv", b"a,b,y\n1,2,p\n1,q\n");
        let err = from_csv(&ragged, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Csv { .. }), "{err}");

        let empty_label = dir.write("e.csv", b"a,y\n1,p\n2,\n");
        let err = from_csv(&empty_label, "y", &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::EmptyLabel { line: 3, .. }),
            "{err}"
        );

        let dup = dir.write("d.csv", b"a,a,y\n1,2,p\n");
        let err = from_csv(&dup, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::DuplicateColumn { .. }), "{err}");

        let header_only = dir.write("h.csv", b"a,y\n");
        let err = from_csv(&header_only, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Empty { .. }), "{err}");

        let one_class = dir.write("o.csv", b"a,y\n1,p\n2,p\n");
        let err = from_csv(&one_class, "y", &no_split()).unwrap_err();
        assert!(
            matches!(err, ConvertError::TooFewClasses { classes: 1, .. }),
            "{err}"
        );

        let label_only = dir.write("lo.csv", b"y\np\nq\n");
        let err = from_csv(&label_only, "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::NoFeatures { .. }), "{err}");
    }

    #[test]
    fn a_missing_label_column_lists_the_header() {
        let err = from_csv(&iris_csv(), "class", &no_split()).unwrap_err();
        match &err {
            ConvertError::MissingColumn {
                column, available, ..
            } => {
                assert_eq!(column, "class");
                assert_eq!(available.len(), 5);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("species"), "{err}");

        // scikit-learn's copy has no header row: its first row is counts and class names.
        let dir = Scratch::new();
        let headerless = dir.write(
            "sk.csv",
            b"150,4,setosa,versicolor,virginica\n5.1,3.5,1.4,0.2,0\n",
        );
        let err = from_csv(&headerless, "species", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::MissingColumn { .. }), "{err}");
        assert!(
            err.to_string().contains("first row must name the columns"),
            "{err}"
        );

        let err = from_csv(&dir.0.join("absent.csv"), "y", &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Csv { .. }), "{err}");
        assert!(err.to_string().contains("absent.csv"), "{err}");
        let err = from_idx(&dir.0.join("absent"), &dir.0.join("absent"), &no_split()).unwrap_err();
        assert!(matches!(err, ConvertError::Io { .. }), "{err}");
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn query_tables_are_matched_to_the_training_columns() {
        let dir = Scratch::new();
        let train = dir.write("train.csv", b"a,b,y\n0,10,p\n2,30,q\n");
        let data = from_csv(&train, "y", &no_split()).unwrap();
        let s = data.standardizer.as_ref().unwrap();

        // Columns in another order are picked by name.
        let query = dir.write("q.csv", b"y,b,a\nq,30,2\np,20,1\n");
        let inputs = load_csv_inputs(&query, "y", &data.class_names, Some(s), None).unwrap();
        assert_eq!(inputs.labels, [1, 0]);
        assert_eq!(inputs.features, [1.0, 1.0, 0.0, 0.0]);

        // Without a standardizer: every other column, raw.
        let raw = load_csv_inputs(&query, "y", &data.class_names, None, None).unwrap();
        assert_eq!(raw.features, [30.0, 2.0, 20.0, 1.0]);

        let unknown = dir.write("u.csv", b"a,b,y\n1,2,r\n");
        let err = load_csv_inputs(&unknown, "y", &data.class_names, Some(s), None).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnknownLabel { line: 2, .. }),
            "{err}"
        );

        let extra = dir.write("x.csv", b"a,b,c,y\n1,2,3,p\n");
        let err = load_csv_inputs(&extra, "y", &data.class_names, Some(s), None).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnexpectedColumn { .. }),
            "{err}"
        );

        let lacking = dir.write("m.csv", b"a,y\n1,p\n");
        let err = load_csv_inputs(&lacking, "y", &data.class_names, Some(s), None).unwrap_err();
        assert!(matches!(err, ConvertError::MissingColumn { .. }), "{err}");
    }
}
